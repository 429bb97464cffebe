//! How a push consumer behaves ([`PushConfig`]): its group, subscriptions,
//! start point, concurrency, retries and timings. Both the coordinator
//! (`push`) and the per-queue workers (`worker`) read it.

use crate::consumer::events::{ConsumerEvent, EventHook};
use brook_proto::request::{ConsumeMode, StartFrom, Subscription};
use std::time::Duration;

/// How a push consumer behaves.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Consumer group.
    pub group: String,
    /// Member id, unique in the group (keep it stable for broadcasting,
    /// whose offsets are per member). Default: derived from the process id
    /// and a counter.
    pub member: String,
    /// Topics and tag filters.
    pub subscriptions: Vec<Subscription>,
    /// Clustering (default) or broadcasting.
    pub mode: ConsumeMode,
    /// Where a group without committed offsets starts. Default: latest.
    pub start: StartFrom,
    /// Orderly consumption. Default: false.
    pub orderly: bool,
    /// Concurrent mode: most messages in the listener at once. Default 64.
    pub max_in_flight: usize,
    /// Messages per pull. Default: 32.
    pub pull_batch: u32,
    /// Longest long poll. Default: 15 s.
    pub long_poll: Duration,
    /// Heartbeat period. Default: 30 s (RocketMQ's).
    pub heartbeat_interval: Duration,
    /// How long the broker keeps this member without heartbeats; zero uses
    /// the broker's `groups.session_timeout_ms`. Default: zero.
    pub session_timeout: Duration,
    /// How often offsets are committed (also on every revocation and at
    /// shutdown). Default: 1 s.
    pub commit_interval: Duration,
    /// Wait before a message answered "later" is tried again. Default 1 s.
    pub suspend: Duration,
    /// Orderly mode: how often queue locks are renewed. Default: 20 s.
    pub lock_renew: Duration,
    /// Retries before a failing message goes to the group's dead-letter
    /// topic; `None` leaves it to the broker (16). Orderly consumers retry
    /// in place, every `suspend`, as many times.
    pub max_reconsume_times: Option<u32>,
    /// Delay before each retry (the last repeats); empty uses the broker's
    /// delay levels (retry n at level 3 + n: 10 s, 30 s, 1 min, …).
    pub retry_backoff: Vec<Duration>,
    /// A listener still busy after this long counts as failed: the message
    /// is handed back for a retry. Default: 15 min.
    pub consume_timeout: Duration,
    /// Report every consumed message to the broker's trace (messages sent
    /// with tracing are reported either way). Default: false.
    pub trace: bool,
    /// Gets the consumer's events (messages skipped by retention, …);
    /// `None` prints them to standard error. Default: `None`.
    pub on_event: Option<EventHook>,
    /// Name servers to find the topics' brokers through, instead of the
    /// broker address given to `start`.
    pub namesrv: Option<Vec<String>>,
    /// How often the subscribed topics' routes are asked for again
    /// (RocketMQ's `pollNameServerInterval`, 30 s); also half a second
    /// after a broker stops answering heartbeats.
    pub route_refresh: Duration,
}

static MEMBER_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl PushConfig {
    /// A config for `group` with RocketMQ-like defaults and no
    /// subscriptions yet.
    pub fn new(group: &str) -> Self {
        let seq = MEMBER_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            group: group.to_string(),
            member: format!("{}-{}-{seq}", hostname(), std::process::id()),
            subscriptions: Vec::new(),
            mode: ConsumeMode::Clustering,
            start: StartFrom::Latest,
            orderly: false,
            max_in_flight: 64,
            pull_batch: 32,
            long_poll: Duration::from_secs(15),
            heartbeat_interval: Duration::from_secs(30),
            session_timeout: Duration::ZERO,
            commit_interval: Duration::from_secs(1),
            suspend: Duration::from_secs(1),
            lock_renew: Duration::from_secs(20),
            max_reconsume_times: None,
            retry_backoff: Vec::new(),
            consume_timeout: Duration::from_secs(15 * 60),
            trace: false,
            on_event: None,
            namesrv: None,
            route_refresh: Duration::from_secs(30),
        }
    }

    /// Adds a subscription (`tags`: `*`, `TagA || TagB`, or `None`).
    #[must_use]
    pub fn subscribe(mut self, topic: &str, tags: Option<&str>) -> Self {
        self.subscriptions.push(Subscription { topic: topic.to_string(), tags: tags.map(str::to_string), sql: None });
        self
    }

    /// Adds a subscription filtered by message properties (RocketMQ's SQL92
    /// subset, e.g. `region = 'eu' AND amount > 100`), evaluated on the
    /// broker.
    #[must_use]
    pub fn subscribe_sql(mut self, topic: &str, sql: &str) -> Self {
        self.subscriptions.push(Subscription { topic: topic.to_string(), tags: None, sql: Some(sql.to_string()) });
        self
    }

    /// Sets the member id.
    #[must_use]
    pub fn member(mut self, member: &str) -> Self {
        self.member = member.to_string();
        self
    }

    /// Orderly consumption.
    #[must_use]
    pub fn orderly(mut self, orderly: bool) -> Self {
        self.orderly = orderly;
        self
    }

    /// Clustering or broadcasting.
    #[must_use]
    pub fn mode(mut self, mode: ConsumeMode) -> Self {
        self.mode = mode;
        self
    }

    /// Start policy.
    #[must_use]
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    /// Retry policy: at most `max` retries, waiting `backoff[n]` before
    /// retry n (the last repeats; empty: the broker's delay levels).
    #[must_use]
    pub fn retry(mut self, max: u32, backoff: Vec<Duration>) -> Self {
        self.max_reconsume_times = Some(max);
        self.retry_backoff = backoff;
        self
    }

    /// Calls `hook` with each event the consumer reports (see
    /// [`ConsumerEvent`]) instead of printing it.
    #[must_use]
    pub fn on_event(mut self, hook: impl Fn(&ConsumerEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(EventHook(std::sync::Arc::new(hook)));
        self
    }

    /// Finds the subscribed topics' brokers through these name servers and
    /// joins the group on each of them (whatever address `start` is given).
    #[must_use]
    pub fn namesrv<I, S>(mut self, addrs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.namesrv = Some(addrs.into_iter().map(Into::into).collect());
        self
    }

    /// How often routes are asked for again.
    #[must_use]
    pub fn route_refresh(mut self, every: Duration) -> Self {
        self.route_refresh = every;
        self
    }

    /// Heartbeat period and the session timeout asked of the broker.
    #[must_use]
    pub fn heartbeat(mut self, interval: Duration, session_timeout: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.session_timeout = session_timeout;
        self
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "host".into())
}
