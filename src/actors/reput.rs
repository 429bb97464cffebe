//! Messages the broker writes itself — delayed messages coming due, retries,
//! dead letters, resends — go through the same queue actors as a producer's,
//! so they get offsets, acknowledgement and visibility by the same rules.

use crate::actors::queue::{Produce, QueueSpec, StoreReply, Stored};
use crate::actors::Registry;
use crate::delay::DelayPolicy;
use crate::error::{Error, Result};
use crate::store::commitlog::{AppendBatch, LogReader};
use crate::store::consume_queue::CqEntry;
use crate::store::index::key_hash;
use crate::store::record::{self, DecodedRecord, RecordSource};
use crate::store::topics::TopicTable;
use brook_proto::system::PROP_ORIGIN_LOG_OFFSET;
use brook_proto::Message;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Records bound for one queue, encoded and ready for its actor, with the
/// tag and key hashes its consume queue and the key index need.
pub struct Encoded {
    /// The queue's spec: where the records go.
    spec: Arc<QueueSpec>,
    /// The queue's number (records carry it).
    queue: u32,
    batch: AppendBatch,
    tag_hashes: Vec<u64>,
    key_hashes: Vec<(u32, u64)>,
}

impl Encoded {
    /// An empty batch with room for `records` records of `bytes` in all:
    /// one allocation rather than a regrowth every few records.
    fn with_capacity(spec: Arc<QueueSpec>, queue: u32, bytes: usize, records: usize) -> Self {
        let mut batch = AppendBatch::default();
        batch.buf.reserve(bytes);
        batch.starts.reserve(records);
        Self { spec, queue, batch, tag_hashes: Vec::with_capacity(records), key_hashes: Vec::new() }
    }

    /// Appends one message's record with its tag code.
    pub fn push(&mut self, msg: &impl RecordSource, code: u64) -> Result<()> {
        let start = self.batch.buf.len();
        record::encode_with_code(&mut self.batch.buf, msg, self.queue, 0, code)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let index = self.batch.starts.len() as u32;
        self.batch.starts.push(start);
        self.tag_hashes.push(code);
        let topic = msg.topic();
        self.key_hashes.extend(msg.keys().map(|k| (index, key_hash(topic, k))));
        Ok(())
    }

    fn into_produce(self, reply: StoreReply) -> Produce {
        Produce { batch: self.batch, tag_hashes: self.tag_hashes, key_hashes: self.key_hashes, reply }
    }
}

/// Messages bound for one queue, with their encoded size.
pub struct Batch {
    /// The topic (which the caller made sure exists).
    pub topic: String,
    /// The queue.
    pub queue: u32,
    /// The messages, each with its tag code.
    pub items: Vec<(Message, u64)>,
    /// Their encoded size.
    pub bytes: usize,
}

impl Batch {
    /// A batch whose size is measured here (sends measure every message
    /// while checking it and build theirs directly).
    pub fn measured(topic: String, queue: u32, items: Vec<(Message, u64)>) -> Self {
        let bytes = items.iter().map(|(msg, _)| record::encoded_len(msg)).sum();
        Self { topic, queue, items, bytes }
    }
}

/// A topic and queue.
type Destination = (String, u32);

/// Writes broker-made messages.
#[derive(Clone)]
pub struct Reput {
    registry: Arc<Registry>,
    topics: Arc<TopicTable>,
    reader: LogReader,
    logger: slog::Logger,
}

impl Reput {
    /// A writer over the broker's queues.
    pub fn new(registry: Arc<Registry>, topics: Arc<TopicTable>, reader: LogReader, logger: slog::Logger) -> Self {
        Self { registry, topics, reader, logger }
    }

    /// The topic table.
    pub fn topics(&self) -> &Arc<TopicTable> {
        &self.topics
    }

    /// Stores messages in `topic`/`queue` (which the caller made sure
    /// exists), each with its tag code, in order.
    pub async fn store(&self, topic: &str, queue: u32, items: Vec<(Message, u64)>) -> Result<Vec<Stored>> {
        let batch = Batch::measured(topic.to_string(), queue, items);
        self.store_many(vec![batch]).await.pop().unwrap_or(Err(Error::ShuttingDown))
    }

    /// Stores several batches, each in its queue, handed to the queues
    /// together and in list order; one result per batch.
    pub async fn store_many(&self, batches: Vec<Batch>) -> Vec<Result<Vec<Stored>>> {
        let encoded = batches
            .into_iter()
            .map(|Batch { topic, queue, items, bytes }| {
                let mut encoded = self.encoder(&topic, queue, bytes, items.len());
                for (msg, code) in &items {
                    encoded.push(msg, *code)?;
                }
                Ok(encoded)
            })
            .collect();
        self.store_encoded(encoded).await
    }

    /// An empty batch for `topic`/`queue` (which the caller made sure
    /// exists) with room for `records` records of `bytes` in all.
    pub fn encoder(&self, topic: &str, queue: u32, bytes: usize, records: usize) -> Encoded {
        Encoded::with_capacity(self.registry.queue_spec(topic, queue), queue, bytes, records)
    }

    /// [`Reput::store_many`] for batches already encoded (or refused while
    /// encoding: those keep their error).
    pub async fn store_encoded(&self, batches: Vec<Result<Encoded>>) -> Vec<Result<Vec<Stored>>> {
        let mut appends = Vec::with_capacity(batches.len());
        let mut answers = Vec::with_capacity(batches.len());
        for encoded in batches {
            match encoded {
                Ok(encoded) => {
                    let (reply, answer) = oneshot::channel();
                    appends.push((encoded.spec.clone(), encoded.into_produce(reply)));
                    answers.push(Ok(answer));
                }
                Err(e) => answers.push(Err(e)),
            }
        }
        if !appends.is_empty() {
            self.registry.produce_all(appends);
        }
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            // A queue actor that stops (shutdown, topic deleted) drops the
            // reply unanswered.
            results.push(match answer {
                Ok(answer) => answer.await.unwrap_or(Err(Error::ShuttingDown)),
                Err(e) => Err(e),
            });
        }
        results
    }

    /// Creates `topic` with one queue unless it exists (retry and
    /// dead-letter topics).
    pub fn ensure_topic(&self, topic: &str) -> Result<()> {
        if self.topics.get(topic).is_none() {
            self.topics.create(topic, 1)?;
            slog::info!(self.logger, "system topic created"; "topic" => topic);
        }
        Ok(())
    }

    /// Reads records on the blocking pool.
    pub async fn read(&self, at: Vec<(u64, Option<u32>)>) -> Result<Vec<Result<DecodedRecord>>> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            at.into_iter()
                .map(|(offset, size)| match size {
                    Some(size) => reader.read(offset, size),
                    None => reader.read_at(offset),
                })
                .collect()
        })
        .await
        .map_err(|e| Error::Busy(e.to_string()))
    }

    /// Delivers parked messages that came due to their real topics, keeping
    /// their order per destination queue. A record that cannot be read (cut
    /// by retention, say) or whose topic is gone is logged and skipped; an
    /// error storing is returned so the caller retries the whole batch.
    pub async fn deliver(&self, entries: &[CqEntry]) -> Result<()> {
        let records = self.read(entries.iter().map(|e| (e.log_offset, Some(e.size))).collect()).await?;
        let mut by_queue: Vec<(Destination, Vec<(Message, u64)>)> = Vec::new();
        for (entry, rec) in entries.iter().zip(records) {
            let mut msg = match rec {
                Ok(rec) => rec.message,
                Err(e) => {
                    slog::error!(self.logger, "delayed message unreadable, skipped";
                        "log_offset" => entry.log_offset, "error" => %e);
                    continue;
                }
            };
            let Some((topic, queue)) = DelayPolicy::unpark(&mut msg) else {
                slog::error!(self.logger, "delayed message without a destination, skipped"; "log_offset" => entry.log_offset);
                continue;
            };
            let Some(queues) = self.topics.get(&topic).map(|t| t.queues) else {
                slog::warn!(self.logger, "delayed message's topic is gone, dropped";
                    "topic" => &topic, "log_offset" => entry.log_offset);
                continue;
            };
            msg.properties.entry(PROP_ORIGIN_LOG_OFFSET.into()).or_insert_with(|| entry.log_offset.to_string());
            let code = record::tag_hash(msg.tags.as_deref());
            let key = (topic, queue.min(queues.saturating_sub(1)));
            match by_queue.iter_mut().find(|(k, _)| *k == key) {
                Some((_, items)) => items.push((msg, code)),
                None => by_queue.push((key, vec![(msg, code)])),
            }
        }
        let batches =
            by_queue.into_iter().map(|((topic, queue), items)| Batch::measured(topic, queue, items)).collect();
        for result in self.store_many(batches).await {
            result?;
        }
        Ok(())
    }
}
