//! The Rust client for brook.
//!
//! # Layout
//! - [`connection`]: one multiplexed connection — many requests in flight,
//!   answers matched by id.
//! - [`error`]: the client's error type.
//!
//! ```no_run
//! # async fn demo() -> Result<(), brook_client::ClientError> {
//! use brook_client::{Connection, Message};
//! let conn = Connection::connect("127.0.0.1:10911").await?;
//! conn.create_topic("orders", 4).await?;
//! let acks = conn.send("orders", 0, vec![Message::new("orders", b"hi".to_vec())]).await?;
//! println!("stored as {}", acks[0].msg_id);
//! # Ok(()) }
//! ```

pub mod connection;
pub mod error;

pub use brook_proto::request::{PullResult, QueueStats, SendAck, TopicInfo};
pub use brook_proto::{ErrorCode, Message, MessageId, StoredMessage, WireError};
pub use connection::Connection;
pub use error::ClientError;
