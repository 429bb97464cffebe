//! Transactions on the wire: outcomes and the checker's report.

use serde::{Deserialize, Serialize};

/// A transaction's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxnOutcome {
    /// Deliver the message.
    Commit,
    /// Never deliver it.
    Rollback,
    /// Not known yet; the broker will ask again.
    Unknown,
}

/// A half message waiting for its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTxn {
    /// The half message's id.
    pub msg_id: String,
    /// Where it goes on commit.
    pub topic: String,
    /// Its producer group.
    pub producer_group: String,
    /// Time since it was stored, ms.
    pub age_ms: u64,
    /// Checks asked so far.
    pub checks: u32,
}

/// Transactions as `ListTransactions` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnReport {
    /// Half messages waiting for an outcome, oldest first.
    pub pending: Vec<PendingTxn>,
    /// Committed (delivered) so far.
    pub committed: u64,
    /// Rolled back so far.
    pub rolled_back: u64,
    /// Checks asked so far.
    pub checked: u64,
    /// Given up after `transaction_check_max` checks.
    pub expired: u64,
}
