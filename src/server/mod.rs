//! The network edge: the accept loop ([`listener`], which also picks the
//! thread a connection is served on), one handler per
//! connection ([`connection`]) with its sends gathered and handed on
//! ([`send_group`]) and its answers written ([`outbox`]), the routing of each request
//! ([`dispatch`]) to its handler ([`handlers`]), what those share
//! ([`context`]), and a connection's socket as the writer's thread writes
//! a lone send's answer into it ([`wire`]). Nothing here holds broker
//! state; errors are mapped to wire codes here and nowhere else.

pub mod connection;
pub mod context;
pub mod dispatch;
pub mod handlers;
pub mod listener;
pub mod outbox;
pub mod send_group;
pub mod wire;

pub use context::{BrokerCore, ConnInfo};
