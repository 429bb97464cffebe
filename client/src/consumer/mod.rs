//! Consumers.
//!
//! - [`pull`]: the caller owns offsets and asks for messages (with long
//!   polling).
//! - [`push`]: a group member; the broker assigns its queues, and a listener
//!   is called per message (concurrently) or per queue in order (orderly).
//! - [`events`]: what a push consumer reports besides messages.

pub mod config;
mod coordinator;
pub mod events;
mod held;
mod orderly;
pub mod pull;
pub mod push;
mod worker;

/// What a listener says about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeResult {
    /// Done; the offset may move past it.
    Success,
    /// Not now; deliver it again later.
    Later,
}
