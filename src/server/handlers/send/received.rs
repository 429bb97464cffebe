//! A message of a send request on its way to the log: read in place from
//! its frame, or owned because the broker rewrites it.

use crate::actors::appender::Encoded;
use crate::error::Error;
use crate::store::record;
use brook_proto::{Message, MessageRef, WireError};

/// A message on its way to the log: read in place from its frame, or owned
/// because the broker rewrites it (delays, transactions, tracing).
pub(super) enum Received<'a> {
    InPlace(MessageRef<'a>),
    Owned(Message),
}

impl<'a> Received<'a> {
    pub(super) fn encode(&self, into: &mut Encoded, code: u64) -> crate::error::Result<()> {
        match self {
            Received::InPlace(m) => into.push(m, code),
            Received::Owned(m) => into.push(m, code),
        }
    }

    pub(super) fn checked_len(&self) -> Result<usize, record::EncodeError> {
        match self {
            Received::InPlace(m) => record::checked_len(m),
            Received::Owned(m) => record::checked_len(m),
        }
    }

    /// Makes the message name the request's topic (an empty name means it),
    /// or refuses one that names another: a batch goes to one topic.
    pub(super) fn claim_topic<'b>(&mut self, topic: &'b str) -> Result<(), WireError>
    where
        'b: 'a,
    {
        let named = match self {
            Received::InPlace(m) if m.topic.is_empty() => topic,
            Received::InPlace(m) => m.topic,
            Received::Owned(m) if m.topic.is_empty() => {
                m.topic = topic.to_string();
                topic
            }
            Received::Owned(m) => &m.topic,
        };
        if named != topic {
            return Err(Error::InvalidArgument(format!(
                "a batch goes to one topic: {topic:?}, but a message names {named:?}"
            ))
            .into());
        }
        if let Received::InPlace(m) = self {
            m.topic = topic;
        }
        Ok(())
    }

    pub(super) fn body_len(&self) -> usize {
        match self {
            Received::InPlace(m) => m.body.len(),
            Received::Owned(m) => m.body.len(),
        }
    }
}
