//! `/metrics`: what the broker counts ([`crate::metrics`]) and what it is
//! asked for at scrape time (topics, groups and their lag, transactions,
//! storage), encoded by the official Prometheus client. Names and labels
//! are RocketMQ's exporter's where one exists (its common labels `cluster`,
//! `node_type`, `node_id` on every series), brook's own are `brook_*`.

use crate::metrics::histogram::Histogram;
use crate::server::context::BrokerCore;
use crate::server::handlers::{groups, pull, topics, txn};
use brook_proto::consumer::GroupInfo;
use brook_proto::system::{is_reserved_topic, DLQ_PREFIX, RETRY_PREFIX};
use brook_proto::txn::TxnReport;
use brook_proto::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One series' labels.
type Labels = Vec<(&'static str, String)>;

/// What a scrape asks the broker for before encoding.
#[derive(Debug, Default)]
struct Asked {
    topics: usize,
    groups: Vec<GroupInfo>,
    /// (group, topic) → ms since the oldest message not yet consumed was
    /// stored.
    lag_ms: BTreeMap<(String, String), i64>,
    txn: TxnReport,
    storage_bytes: u64,
}

/// The page, in the OpenMetrics text format.
pub async fn render(core: &Arc<BrokerCore>, backend: &'static str) -> Result<String, fmt::Error> {
    let asked = ask(core).await;
    let identity = &core.identity;
    let common = [
        ("cluster", identity.cluster.clone()),
        ("node_type", "broker".to_string()),
        ("node_id", identity.broker_name.clone()),
    ];
    let mut registry = Registry::with_labels(common.into_iter().map(|(k, v)| (Cow::Borrowed(k), Cow::Owned(v))));
    registry.register_collector(Box::new(Scrape { core: core.clone(), asked, backend }));
    let mut page = String::new();
    prometheus_client::encoding::text::encode(&mut page, &registry)?;
    Ok(page)
}

async fn ask(core: &BrokerCore) -> Asked {
    let mut asked = Asked::default();
    if let Ok(Response::Topics(list)) = topics::list(core) {
        asked.topics = list.len();
    }
    if let Ok(Response::Groups(names)) = groups::list(core) {
        for name in names {
            if let Ok(Response::Group(info)) = groups::describe(core, &name).await {
                asked.groups.push(info);
            }
        }
    }
    let now = brook_proto::time::now_ms();
    for info in &asked.groups {
        for o in info.offsets.iter().filter(|o| o.lag > 0) {
            if let Some(stored) = pull::stored_at(core, &o.topic, o.queue, o.committed).await {
                let age = asked.lag_ms.entry((info.group.clone(), o.topic.clone())).or_default();
                *age = (*age).max(now.saturating_sub(stored));
            }
        }
    }
    if let Ok(Response::Transactions(report)) = txn::list(core).await {
        asked.txn = report;
    }
    asked.storage_bytes = std::fs::read_dir(core.paths.commitlog())
        .map(|dir| dir.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0);
    asked
}

struct Scrape {
    core: Arc<BrokerCore>,
    asked: Asked,
    backend: &'static str,
}

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrape").field("asked", &self.asked).finish_non_exhaustive()
    }
}

fn is_system(topic: &str) -> String {
    (is_reserved_topic(topic) || topic.starts_with(RETRY_PREFIX) || topic.starts_with(DLQ_PREFIX)).to_string()
}

/// A family of series of one kind.
fn family<T>(
    encoder: &mut DescriptorEncoder,
    (name, help, kind): (&str, &str, MetricType),
    series: impl IntoIterator<Item = (Labels, T)>,
    mut write: impl FnMut(&mut prometheus_client::encoding::MetricEncoder, &T) -> fmt::Result,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        let mut one = metric.encode_family(&labels)?;
        write(&mut one, &value)?;
    }
    Ok(())
}

fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    family(encoder, (name, help, MetricType::Counter), series, |m, v| m.encode_counter::<NoLabelSet, _, u64>(v, None))
}

fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, i64)>,
) -> fmt::Result {
    family(encoder, (name, help, MetricType::Gauge), series, |m, v| m.encode_gauge(v))
}

fn histogram(encoder: &mut DescriptorEncoder, name: &str, help: &str, h: &Histogram) -> fmt::Result {
    histograms(encoder, name, help, [(Labels::new(), h)])
}

fn histograms<'h>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, &'h Histogram)>,
) -> fmt::Result {
    family(encoder, (name, help, MetricType::Histogram), series, |m, h| {
        let (sum, count, buckets) = h.snapshot();
        m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    })
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        self.traffic(&mut e)?;
        self.consumers(&mut e)?;
        self.transactions(&mut e)?;
        self.storage(&mut e)?;
        self.requests(&mut e)?;
        self.brook(&mut e)
    }
}

impl Scrape {
    /// Messages and bytes in and out, message sizes.
    fn traffic(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let metrics = &self.core.metrics;
        let stored = metrics.all_stored();
        let rows_in = |bytes: bool| {
            stored.iter().flat_map(move |(topic, counts)| {
                counts.by_type().into_iter().map(move |(kind, messages, body)| {
                    let labels = vec![
                        ("topic", topic.clone()),
                        ("message_type", kind.label().to_string()),
                        ("is_system", is_system(topic)),
                    ];
                    (labels, if bytes { body } else { messages })
                })
            })
        };
        counters(e, "rocketmq_messages_in", "Messages stored, by topic and type.", rows_in(false))?;
        counters(e, "rocketmq_throughput_in", "Body bytes stored, by topic and type.", rows_in(true))?;
        histogram(e, "rocketmq_message_size", "Sizes of messages received for storage, bytes.", &metrics.message_size)?;
        let delivered = metrics.all_delivered();
        let rows_out = |bytes: bool| {
            delivered.iter().flat_map(move |(topic, counts)| {
                counts.by_type().into_iter().map(move |(_, messages, record_bytes)| {
                    // Pulls do not name their group on the wire.
                    let labels = vec![
                        ("topic", topic.clone()),
                        ("consumer_group", String::new()),
                        ("is_system", is_system(topic)),
                    ];
                    (labels, if bytes { record_bytes } else { messages })
                })
            })
        };
        counters(e, "rocketmq_messages_out", "Messages delivered to consumers, by topic.", rows_out(false))?;
        counters(e, "rocketmq_throughput_out", "Record bytes delivered to consumers, by topic.", rows_out(true))
    }

    /// Topics, groups, lag, members, dead letters.
    fn consumers(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let asked = &self.asked;
        gauges(e, "rocketmq_topic_number", "Topics.", [(Labels::new(), asked.topics as i64)])?;
        gauges(e, "rocketmq_consumer_group_number", "Consumer groups.", [(Labels::new(), asked.groups.len() as i64)])?;
        // (group, topic) → lag summed over the queues.
        let mut lag: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for info in &asked.groups {
            for o in &info.offsets {
                *lag.entry((&info.group, &o.topic)).or_default() += o.lag;
            }
        }
        let rows = lag.into_iter().map(|((group, topic), lag)| {
            let labels = vec![
                ("consumer_group", group.to_string()),
                ("topic", topic.to_string()),
                ("is_retry", topic.starts_with(RETRY_PREFIX).to_string()),
                ("is_system", is_system(topic)),
            ];
            (labels, lag as i64)
        });
        gauges(e, "rocketmq_consumer_lag_messages", "Messages stored and not yet committed by the group.", rows)?;
        // Pulled but not committed (in flight), and stored but not pulled
        // (ready), by what each member's client pulled of its queues.
        let mut flight: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
        for info in &asked.groups {
            for o in &info.offsets {
                let client = o
                    .member
                    .as_ref()
                    .and_then(|m| info.members.iter().find(|x| &x.member == m))
                    .map(|m| m.client.as_str());
                let pulled = client.and_then(|c| self.core.metrics.pulled_to(c, &o.topic, o.queue));
                let pulled = pulled.unwrap_or(o.committed).clamp(o.committed, o.max_offset.max(o.committed));
                let entry = flight.entry((&info.group, &o.topic)).or_default();
                entry.0 += pulled - o.committed;
                entry.1 += o.max_offset.saturating_sub(pulled);
            }
        }
        let lag_labels = |group: &str, topic: &str| {
            vec![
                ("consumer_group", group.to_string()),
                ("topic", topic.to_string()),
                ("is_retry", topic.starts_with(RETRY_PREFIX).to_string()),
                ("is_system", is_system(topic)),
            ]
        };
        let inflight = flight.iter().map(|((g, t), (n, _))| (lag_labels(g, t), *n as i64));
        gauges(e, "rocketmq_consumer_inflight_messages", "Messages pulled by the group, not yet committed.", inflight)?;
        let ready = flight.iter().map(|((g, t), (_, n))| (lag_labels(g, t), *n as i64));
        gauges(e, "rocketmq_consumer_ready_messages", "Messages stored, not yet pulled by the group.", ready)?;
        let ages = asked.lag_ms.iter().map(|((group, topic), ms)| {
            let labels = vec![
                ("consumer_group", group.clone()),
                ("topic", topic.clone()),
                ("is_retry", topic.starts_with(RETRY_PREFIX).to_string()),
                ("is_system", is_system(topic)),
            ];
            (labels, *ms)
        });
        gauges(e, "rocketmq_consumer_lag_latency", "Age of the oldest message the group has not consumed, ms.", ages)?;
        let members = asked.groups.iter().map(|info| {
            let mode = format!("{:?}", info.mode).to_lowercase();
            let labels = vec![
                ("consumer_group", info.group.clone()),
                ("language", "rust".to_string()),
                ("consume_mode", mode),
                ("protocol_type", "brook".to_string()),
                ("is_system", "false".to_string()),
            ];
            (labels, info.members.len() as i64)
        });
        gauges(e, "rocketmq_consumer_connections", "Live members of each consumer group.", members)?;
        let producers = self.core.metrics.producer_connections.load(Ordering::Relaxed);
        let labels = vec![
            ("language", "rust".to_string()),
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("protocol_type", "brook".to_string()),
        ];
        gauges(e, "rocketmq_producer_connections", "Open connections that have sent messages.", [(labels, producers)])?;
        let dead = self.core.metrics.all_dead_lettered().into_iter().map(|((group, topic), n)| {
            let system = is_system(&topic);
            (vec![("consumer_group", group), ("topic", topic), ("is_system", system)], n)
        });
        counters(e, "rocketmq_send_to_dlq_messages", "Messages moved to a dead-letter queue.", dead)
    }

    /// Half messages and outcomes.
    fn transactions(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let txn = &self.asked.txn;
        let mut half: BTreeMap<&str, i64> = BTreeMap::new();
        for p in &txn.pending {
            *half.entry(&p.topic).or_default() += 1;
        }
        let rows = half.into_iter().map(|(topic, n)| (vec![("topic", topic.to_string())], n));
        gauges(e, "rocketmq_half_messages", "Half messages waiting for their outcome, by topic.", rows)?;
        counters(e, "rocketmq_commit_messages", "Transactions committed.", [(Labels::new(), txn.committed)])?;
        counters(e, "rocketmq_rollback_messages", "Transactions rolled back.", [(Labels::new(), txn.rolled_back)])
    }

    /// The log on disk and how much of it is not yet fdatasynced.
    fn storage(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let stats = &self.core.writer_stats;
        let behind = stats.write_pos().saturating_sub(stats.synced_pos.load(Ordering::Relaxed));
        let medium = || vec![("storage_type", "local".to_string()), ("storage_medium", "disk".to_string())];
        gauges(
            e,
            "rocketmq_storage_size",
            "Bytes of commit log on disk.",
            [(medium(), self.asked.storage_bytes as i64)],
        )?;
        gauges(
            e,
            "rocketmq_storage_flush_behind_bytes",
            "Bytes written, not yet fdatasynced.",
            [(medium(), behind as i64)],
        )?;
        // Consume queues and the key index are built as records are stored;
        // what a crash would make recovery dispatch again is the log above
        // the last checkpoint's durable point.
        let dispatch = stats.write_pos().saturating_sub(self.core.reader.segments().replay_from());
        gauges(
            e,
            "rocketmq_storage_dispatch_behind_bytes",
            "Log bytes whose consume-queue entries are not yet durable (replayed by a crash recovery).",
            [(medium(), dispatch as i64)],
        )
    }

    /// Request latencies by wire code (`docs/PROTOCOL.md`) and outcome.
    fn requests(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let series = self.core.metrics.all_rpc().map(|(code, ok, h)| {
            let labels = vec![
                ("protocol_type", "brook".to_string()),
                ("request_code", code.to_string()),
                ("is_long_polling", (code == brook_proto::Request::PULL_CODE).to_string()),
                ("result", if ok { "success" } else { "failure" }.to_string()),
            ];
            (labels, h)
        });
        histograms(e, "rocketmq_rpc_latency", "Request latencies, ms, from receipt to answer.", series)?;
        let metrics = &self.core.metrics;
        let total = |n: &std::sync::atomic::AtomicU64| [(Labels::new(), n.load(Ordering::Relaxed))];
        counters(
            e,
            "rocketmq_timer_enqueue",
            "Exact-time messages taken into the timer wheel.",
            total(&metrics.timers_enqueued),
        )?;
        counters(
            e,
            "rocketmq_timer_dequeue",
            "Exact-time messages the timer wheel delivered.",
            total(&metrics.timers_dequeued),
        )?;
        let open = self.core.metrics.connections.load(Ordering::Relaxed);
        gauges(e, "brook_connections", "Client connections open.", [(Labels::new(), open)])?;
        let on_writer = self.core.metrics.writer_connections.load(Ordering::Relaxed);
        gauges(
            e,
            "brook_writer_thread_connections",
            "Client connections served on the log writer's thread.",
            [(Labels::new(), on_writer)],
        )
    }

    /// brook's own: the writer and the pulls.
    fn brook(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let stats = &self.core.writer_stats;
        histogram(e, "brook_fdatasync_latency_us", "Commit-log fdatasync times, µs.", &stats.fsync_us)?;
        histogram(e, "brook_group_commit_records", "Records per group commit.", &stats.group_records)?;
        let total = |n: &std::sync::atomic::AtomicU64| [(Labels::new(), n.load(Ordering::Relaxed))];
        counters(e, "brook_group_commits", "Group commits written.", total(&stats.groups))?;
        counters(e, "brook_records_written", "Records written to the commit log.", total(&stats.records))?;
        let depth = stats.queued.load(Ordering::Relaxed);
        gauges(e, "brook_writer_queue_depth", "Appends waiting for the writer.", [(Labels::new(), depth as i64)])?;
        let waiting = self.core.metrics.long_polls.load(Ordering::Relaxed);
        gauges(
            e,
            "brook_pulls_waiting",
            "Pulls waiting at their queue (long polls parked).",
            [(Labels::new(), waiting)],
        )?;
        let writable = i64::from(stats.poisoned().is_none() && stats.disk_full_since().is_none());
        gauges(e, "brook_writable", "1 while the broker takes writes.", [(Labels::new(), writable)])?;
        gauges(
            e,
            "brook_io_backend",
            "The writer backend in use (1).",
            [(vec![("backend", self.backend.to_string())], 1)],
        )
    }
}
