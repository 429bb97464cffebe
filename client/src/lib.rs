//! The Rust client for brook.
//!
//! # Layout
//! - [`connection`]: one multiplexed connection — many requests in flight,
//!   answers matched by id, notices from the broker.
//! - [`session`]: a connection that reconnects with backoff.
//! - [`router`]: where brokers are — one named directly, or a cluster's
//!   name servers — and each topic's queues across the cluster.
//! - [`producer`]: round-robin, ordered (sharding key), async, one-way and
//!   batch sends, with retries where they cannot reorder.
//! - [`consumer`]: the pull consumer (caller-owned offsets, long polling)
//!   and the push consumer (group member; concurrent or orderly).
//! - [`transaction`]: the transactional producer (half message, local
//!   transaction, commit or rollback, answers to the broker's checks).
//! - [`error`]: the client's error type.
//!
//! ```no_run
//! # async fn demo() -> Result<(), brook_client::ClientError> {
//! use brook_client::{Message, Producer};
//! let producer = Producer::connect("127.0.0.1:10911").await?;
//! let ack = producer.send(Message::new("orders", b"hi".to_vec())).await?;
//! println!("stored as {} in queue {} at offset {}", ack.msg_id, ack.queue, ack.queue_offset);
//! # Ok(()) }
//! ```

pub mod connection;
pub mod consumer;
mod dispatcher;
pub mod error;
mod faults;
mod lane;
mod outbox;
pub mod producer;
mod requests;
pub mod router;
pub mod session;
pub mod transaction;

pub use brook_proto::request::{
    ConsumeMode, GroupInfo, PullResult, QueueOffset, QueueRef, QueueStats, ResetTo, SendAck, StartFrom, Subscription,
    TopicInfo, TxnOutcome, TxnReport,
};
pub use brook_proto::response::BrokerStatus;
pub use brook_proto::{ErrorCode, Message, MessageId, StoredMessage, WireError};
pub use connection::Connection;
pub use consumer::config::PushConfig;
pub use consumer::events::ConsumerEvent;
pub use consumer::pull::{PullConsumer, PullRequest};
pub use consumer::push::PushConsumer;
pub use consumer::ConsumeResult;
pub use error::ClientError;
pub use producer::{Producer, ProducerConfig};
pub use router::{Endpoint, QueueSlot, Router, TopicView};
pub use session::{Backoff, Session};
pub use transaction::TransactionProducer;
