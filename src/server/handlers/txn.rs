//! Transactional requests: producers register their group (so the broker
//! can ask them about overdue halves on their own connection), end
//! transactions, and list them. The state lives in the TxnCheckerActor.

use crate::actors::txn_checker::{End, Report};
use crate::error::Error;
use crate::server::context::{BrokerCore, ConnInfo};
use crate::server::handlers::Reply;
use brook_proto::names::validate_name;
use brook_proto::request::TxnOutcome;
use brook_proto::system::{
    PROP_PRODUCER_CLIENT, PROP_PRODUCER_GROUP, PROP_REAL_QUEUE, PROP_REAL_TOPIC, PROP_TRANSACTION,
    PROP_TRANSACTION_TIMEOUT_MS, TRANS_HALF_TOPIC,
};
use brook_proto::{Message, MessageId, Response};

/// Whether a message is a transactional half.
pub fn is_half(msg: &Message) -> bool {
    msg.flag(PROP_TRANSACTION)
}

/// Checks a half message and rewrites it to wait in the half topic for its
/// outcome; says where it waits.
pub fn park_half(msg: &mut Message, topic: &str, queue: u32, conn: &ConnInfo) -> Result<(&'static str, u32), Error> {
    let group = msg
        .properties
        .get(PROP_PRODUCER_GROUP)
        .ok_or_else(|| Error::InvalidArgument(format!("a transactional message names its {PROP_PRODUCER_GROUP}")))?;
    validate_name("producer group", group).map_err(Error::InvalidName)?;
    if let Some(t) = msg.properties.get(PROP_TRANSACTION_TIMEOUT_MS) {
        t.parse::<u64>()
            .map_err(|_| Error::InvalidArgument(format!("{PROP_TRANSACTION_TIMEOUT_MS} {t:?} is not a number")))?;
    }
    msg.properties.insert(PROP_PRODUCER_CLIENT.into(), conn.client.client_id.clone());
    msg.properties.insert(PROP_REAL_TOPIC.into(), topic.to_string());
    msg.properties.insert(PROP_REAL_QUEUE.into(), queue.to_string());
    msg.topic = TRANS_HALF_TOPIC.to_string();
    Ok((TRANS_HALF_TOPIC, 0))
}

/// A connection joins a producer group.
pub fn register(core: &BrokerCore, conn: &ConnInfo, group: &str) -> Reply {
    validate_name("producer group", group).map_err(Error::InvalidName)?;
    core.producers.register(group, conn.client.clone());
    Ok(Response::Done)
}

/// Ends a half message.
pub async fn end(core: &BrokerCore, group: &str, msg_id: &str, outcome: TxnOutcome) -> Reply {
    validate_name("producer group", group).map_err(Error::InvalidName)?;
    let id: MessageId = msg_id.parse().map_err(|e| Error::InvalidArgument(format!("message id {msg_id:?}: {e}")))?;
    let end = End { group: group.to_string(), log_offset: id.log_offset, outcome };
    core.txn.send(end).await.map_err(Error::from)??;
    Ok(Response::Done)
}

/// Pending halves and counts.
pub async fn list(core: &BrokerCore) -> Reply {
    Ok(Response::Transactions(core.txn.send(Report).await.map_err(Error::from)?))
}
