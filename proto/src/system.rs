//! Reserved names: the system topics the broker keeps for delayed delivery,
//! retries and dead letters, and the message properties it uses to carry a
//! message's real destination and retry history. Names follow RocketMQ's
//! where RocketMQ has one, so users recognise them.

/// Delay-level FIFOs: queue `L - 1` holds the messages sent with level `L`.
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
/// Messages waiting for an exact delivery time (the timer wheel's source).
pub const TIMER_TOPIC: &str = "BROOK_SYS_TIMER";
/// The broker's own metadata as log records (topics, group offsets, delay
/// progress), so that a slave holds it at the same point of the log.
pub const META_TOPIC: &str = "BROOK_SYS_META";
/// Transactional half messages, waiting for their producer's outcome.
pub const TRANS_HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// Outcomes of half messages (op records).
pub const TRANS_OP_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
/// Half messages whose outcome was never learned, checked the maximum
/// number of times. Never delivered.
pub const TRANS_CHECK_MAX_TOPIC: &str = "TRANS_CHECK_MAX_TIME_TOPIC";
/// Message traces: one record per event of a traced message, keyed by its
/// id.
pub const TRACE_TOPIC: &str = "RMQ_SYS_TRACE_TOPIC";
/// Prefix of a group's retry topic.
pub const RETRY_PREFIX: &str = "%RETRY%";
/// Prefix of a group's dead-letter topic.
pub const DLQ_PREFIX: &str = "%DLQ%";

/// Property: delay level (1-based) a producer asks for.
pub const PROP_DELAY_LEVEL: &str = "DELAY";
/// Property: exact delivery time a producer asks for, ms since the epoch.
pub const PROP_DELIVER_AT: &str = "TIMER_DELIVER_MS";
/// Property: delay in ms a producer asks for (relative to its arrival).
pub const PROP_DELAY_MS: &str = "TIMER_DELAY_MS";
/// Property: the topic a delayed message goes to when due.
pub const PROP_REAL_TOPIC: &str = "REAL_TOPIC";
/// Property: the queue a delayed message goes to when due.
pub const PROP_REAL_QUEUE: &str = "REAL_QID";
/// Property: the topic a retried or dead-lettered message was first sent to.
pub const PROP_RETRY_TOPIC: &str = "RETRY_TOPIC";
/// Property: the queue a retried or dead-lettered message was first sent to.
pub const PROP_ORIGIN_QUEUE: &str = "ORIGIN_QID";
/// Property: how many times the message was handed back for a retry.
pub const PROP_RECONSUME_TIMES: &str = "RECONSUME_TIME";
/// Property: the message is a transactional half message (`true`).
pub const PROP_TRANSACTION: &str = "TRAN_MSG";
/// Property: the producer group of a transactional message.
pub const PROP_PRODUCER_GROUP: &str = "PGROUP";
/// Property: the client id of the producer that sent a half message.
pub const PROP_PRODUCER_CLIENT: &str = "TRAN_PRODUCER_CLIENT";
/// Property: how long (ms) the broker waits for a half message's outcome
/// before asking the producer group (overrides `transaction_timeout`).
pub const PROP_TRANSACTION_TIMEOUT_MS: &str = "CHECK_IMMUNITY_TIME_MS";
/// Property: how many times a half message was checked.
pub const PROP_TRANSACTION_CHECKS: &str = "TRANSACTION_CHECK_TIMES";
/// Property: the message is traced (`true`).
pub const PROP_TRACE: &str = "TRACE_ON";
/// Property: log offset of the first copy of a message; its id is derived
/// from it, so delayed, retried and dead-lettered copies keep the id the
/// producer was given.
pub const PROP_ORIGIN_LOG_OFFSET: &str = "ORIGIN_LOG_OFFSET";

/// The retry topic of `group`.
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_PREFIX}{group}")
}

/// The dead-letter topic of `group`.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_PREFIX}{group}")
}

/// Whether producers may not send to `topic` directly: the broker writes
/// these itself.
pub fn is_reserved_topic(topic: &str) -> bool {
    topic == SCHEDULE_TOPIC
        || topic.starts_with("BROOK_SYS_")
        || topic.starts_with("RMQ_SYS_")
        || topic.starts_with(RETRY_PREFIX)
        || topic.starts_with(DLQ_PREFIX)
        || topic == TRANS_CHECK_MAX_TOPIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_topics_are_reserved_and_user_topics_are_not() {
        for t in
            [SCHEDULE_TOPIC, TIMER_TOPIC, "%RETRY%g", "%DLQ%g", TRANS_HALF_TOPIC, TRANS_OP_TOPIC, TRANS_CHECK_MAX_TOPIC]
        {
            assert!(is_reserved_topic(t), "{t}");
        }
        for t in ["orders", "SCHEDULE", "RETRY%x", "BROOK_orders"] {
            assert!(!is_reserved_topic(t), "{t}");
        }
        assert_eq!(retry_topic("g1"), "%RETRY%g1");
        assert_eq!(dlq_topic("g1"), "%DLQ%g1");
    }
}
