//! The appender: every write into queues starts here. Records are encoded
//! off the writer ([`Encoded`], a part per queue), handed to the queues'
//! thread in one push ([`Appender::submit`], through the fanout), and their
//! placements come back through an [`AppendWait`]. A connection's sends and
//! the broker's own writes — delayed messages coming due, retries, dead
//! letters, resends, transaction records — take the same path, so they get
//! offsets, acknowledgement and visibility by the same rules.

use crate::actors::queue::fanout::{Part, Placements, PlacementsCall, PlacementsTo, Produce};
use crate::actors::queue::idempotence::PartProducer;
use crate::actors::queue::{Placed, QueueSpec};
use crate::actors::queue_registry::QueueRegistry;
use crate::delay::DelayPolicy;
use crate::error::{Error, Result};
use crate::store::commitlog::{AppendBatch, LogReader};
use crate::store::consume_queue::CqEntry;
use crate::store::index::key_hash;
use crate::store::record::{self, DecodedRecord, RecordMeta, RecordSource};
use crate::store::topics::TopicTable;
use brook_proto::system::PROP_ORIGIN_LOG_OFFSET;
use brook_proto::{Message, ProducerSeq};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Records for one or more queues encoded into one buffer, part by part
/// (a part per queue), with the tag and key hashes their consume queues and
/// the key index need: what one [`Produce`] carries.
#[derive(Default)]
pub struct Encoded {
    batch: AppendBatch,
    tag_hashes: Vec<u64>,
    key_hashes: Vec<(u32, u64)>,
    parts: Vec<Part>,
    /// The queue number of the open (last) part: its records carry it.
    queue: u32,
}

impl Encoded {
    /// Room for `records` records of `bytes` in all, in `parts` parts: one
    /// allocation each rather than a regrowth every few records.
    pub fn with_capacity(bytes: usize, records: usize, parts: usize) -> Self {
        let mut batch = AppendBatch::default();
        batch.buf.reserve(bytes);
        batch.starts.reserve(records);
        Self { batch, tag_hashes: Vec::with_capacity(records), parts: Vec::with_capacity(parts), ..Self::default() }
    }

    /// Opens the next part: records for `spec`'s queue, number `queue`.
    pub fn begin(&mut self, spec: Arc<QueueSpec>, queue: u32) {
        self.begin_as(spec, queue, None);
    }

    /// [`Encoded::begin`] for one idempotent producer's send: its records
    /// carry the producer's id, epoch and their sequence numbers, and the
    /// part is judged by them before it is admitted.
    pub fn begin_as(&mut self, spec: Arc<QueueSpec>, queue: u32, producer: Option<PartProducer>) {
        self.parts.push(Part { spec, records: 0, producer });
        self.queue = queue;
    }

    /// Appends one message's record with its tag code to the open part.
    pub fn push(&mut self, msg: &impl RecordSource, code: u64) -> Result<()> {
        let Some(part) = self.parts.last_mut() else {
            return Err(Error::InvalidArgument("a record needs a part to go to".into()));
        };
        let start = self.batch.buf.len();
        let producer = match &part.producer {
            Some(p) => Some(ProducerSeq {
                sequence: p.seq.of(part.records).ok_or_else(|| {
                    Error::InvalidArgument("the sequence number passes 2^32: start a new epoch".into())
                })?,
                ..p.seq
            }),
            None => None,
        };
        let meta = RecordMeta { queue_id: self.queue, flags: 0, tag_code: code, producer };
        if let Err(e) = record::encode_record(&mut self.batch.buf, msg, meta) {
            self.batch.buf.truncate(start);
            return Err(Error::InvalidArgument(e.to_string()));
        }
        let index = self.batch.starts.len() as u32;
        self.batch.starts.push(start);
        self.tag_hashes.push(code);
        part.records += 1;
        let topic = msg.topic();
        self.key_hashes.extend(msg.keys().map(|k| (index, key_hash(topic, k))));
        Ok(())
    }

    /// Drops the open part and its records (one of them could not be
    /// encoded: that part fails alone).
    pub fn abandon(&mut self) {
        let Some(part) = self.parts.pop() else {
            return;
        };
        let first = self.batch.starts.len() - part.records;
        let bytes = self.batch.starts.get(first).copied().unwrap_or(self.batch.buf.len());
        self.batch.buf.truncate(bytes);
        self.batch.starts.truncate(first);
        self.tag_hashes.truncate(first);
        while self.key_hashes.last().is_some_and(|&(index, _)| index as usize >= first) {
            self.key_hashes.pop();
        }
    }

    /// Parts opened (and not abandoned).
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    fn into_produce(self, reply: PlacementsTo) -> Produce {
        Produce {
            batch: self.batch,
            tag_hashes: self.tag_hashes,
            key_hashes: self.key_hashes,
            parts: self.parts,
            reply,
        }
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
pub struct Appender {
    registry: Arc<QueueRegistry>,
    topics: Arc<TopicTable>,
    reader: LogReader,
    logger: slog::Logger,
}

impl Appender {
    /// A writer over the broker's queues.
    pub fn new(registry: Arc<QueueRegistry>, topics: Arc<TopicTable>, reader: LogReader, logger: slog::Logger) -> Self {
        Self { registry, topics, reader, logger }
    }

    /// The topic table.
    pub fn topics(&self) -> &Arc<TopicTable> {
        &self.topics
    }

    /// Stores messages in `topic`/`queue` (which the caller made sure
    /// exists), each with its tag code, in order.
    pub async fn append(&self, topic: &str, queue: u32, items: Vec<(Message, u64)>) -> Result<Vec<Placed>> {
        let batch = Batch::measured(topic.to_string(), queue, items);
        self.append_many(vec![batch]).await.pop().unwrap_or(Err(Error::ShuttingDown))
    }

    /// Stores several batches, each in its queue, handed to the queues
    /// together and in list order; one result per batch.
    pub async fn append_many(&self, batches: Vec<Batch>) -> Vec<Result<Vec<Placed>>> {
        let bytes = batches.iter().map(|b| b.bytes).sum();
        let records = batches.iter().map(|b| b.items.len()).sum();
        let mut encoded = Encoded::with_capacity(bytes, records, batches.len());
        // Each batch's part index, or why it could not be encoded.
        let mut parts = Vec::with_capacity(batches.len());
        for Batch { topic, queue, items, .. } in batches {
            encoded.begin(self.queue_spec(&topic, queue), queue);
            match items.iter().try_for_each(|(msg, code)| encoded.push(msg, *code)) {
                Ok(()) => parts.push(Ok(encoded.parts() - 1)),
                Err(e) => {
                    encoded.abandon();
                    parts.push(Err(e));
                }
            }
        }
        let Placements { stored, outcomes } = self.append_encoded(encoded).await;
        let mut outcomes = outcomes.into_iter();
        parts
            .into_iter()
            .map(|part| {
                part?;
                let range = outcomes.next().unwrap_or(Err(Error::ShuttingDown))?;
                Ok(stored.get(range).unwrap_or(&[]).to_vec())
            })
            .collect()
    }

    /// The spec of `topic`/`queue` (which the caller made sure exists), to
    /// open a part of an [`Encoded`] for it.
    pub fn queue_spec(&self, topic: &str, queue: u32) -> Arc<QueueSpec> {
        self.registry.queue_spec(topic, queue)
    }

    /// Stores every part of `encoded` and waits for the answer.
    pub async fn append_encoded(&self, encoded: Encoded) -> Placements {
        self.submit(encoded).wait().await
    }

    /// Hands every part of `encoded` to the queues now; the answer comes
    /// through the returned wait. What is handed over in one order is
    /// stored in that order, whoever waits first.
    pub fn submit(&self, encoded: Encoded) -> AppendWait {
        let parts = encoded.parts();
        if parts == 0 {
            return AppendWait { parts, answer: None };
        }
        let (reply, answer) = oneshot::channel();
        self.registry.produce_all(encoded.into_produce(PlacementsTo::Channel(reply)));
        AppendWait { parts, answer: Some(answer) }
    }

    /// [`Appender::submit`] with the answer handed to `then` wherever it is
    /// ready (the writer's thread, most often) instead of awaited: `then`
    /// must not block.
    pub fn submit_then(&self, encoded: Encoded, then: impl FnOnce(Placements) + Send + 'static) {
        let parts = encoded.parts();
        if parts == 0 {
            return then(Placements::default());
        }
        let call = PlacementsCall::new(parts, then);
        self.registry.produce_all(encoded.into_produce(PlacementsTo::Call(call)));
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
        for result in self.append_many(batches).await {
            result?;
        }
        Ok(())
    }
}

/// The answer to an [`Encoded`] handed to the queues.
pub struct AppendWait {
    parts: usize,
    answer: Option<oneshot::Receiver<Placements>>,
}

impl AppendWait {
    /// Where the records ended up.
    pub async fn wait(self) -> Placements {
        match self.answer {
            // The queues' thread drops the reply unanswered only when it stops.
            Some(answer) => answer.await.unwrap_or_else(|_| Placements::shutting_down(self.parts)),
            None => Placements::default(),
        }
    }
}
