//! `brookctl consume`: a push consumer in a group, printing each message,
//! optionally failing on purpose to show retries.

use crate::output::print_message;
use crate::target::Target;
use brook_client::{ClientError, ConsumeResult, PushConfig, PushConsumer, StartFrom, StoredMessage};
use brook_proto::time::{now_ms, parse_duration_ms};
use clap::ValueEnum;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum From {
    Earliest,
    Latest,
}

#[derive(clap::Args)]
pub(crate) struct ConsumeArgs {
    /// Topic.
    topic: String,
    /// Consumer group.
    #[arg(long)]
    group: String,
    /// Where a group without committed offsets starts.
    #[arg(long, value_enum, default_value = "latest")]
    from: From,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long without reaching --count (default: wait forever).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Tag expression: `*`, `TagA`, `TagA || TagB`.
    #[arg(long)]
    tags: Option<String>,
    /// Property filter (SQL92 subset), e.g. "region = 'eu' AND amount > 100".
    #[arg(long)]
    sql: Option<String>,
    /// One JSON object per message.
    #[arg(long)]
    json: bool,
    /// Answer "later" this many times for each message before succeeding
    /// (to watch a retry chain); every delivery is printed.
    #[arg(long, default_value_t = 0)]
    fail_times: u32,
    /// Retries before the broker dead-letters a message (default: the
    /// broker's `max_reconsume_times`).
    #[arg(long)]
    max_reconsume_times: Option<u32>,
    /// Back-off before each retry, e.g. "100ms 1s 5s" (the last repeats;
    /// default: the broker's delay levels from level 3).
    #[arg(long)]
    retry_backoff: Option<String>,
    /// Hold each message this long before answering.
    #[arg(long, default_value_t = 0)]
    hold_ms: u64,
    /// Consume each queue in order, holding its lock.
    #[arg(long)]
    orderly: bool,
    /// Orderly: wait before retrying a failed message in place.
    #[arg(long, default_value_t = 1000)]
    suspend_ms: u64,
    /// Report every consumed message to the trace.
    #[arg(long)]
    trace: bool,
}

pub(crate) async fn run(target: &Target, args: ConsumeArgs) -> Result<(), ClientError> {
    let mut config = PushConfig::new(&args.group)
        .member(&format!("brookctl-{}-{}", std::process::id(), now_ms()))
        .start_from(match args.from {
            From::Earliest => StartFrom::Earliest,
            From::Latest => StartFrom::Latest,
        });
    // One message at a time, so --count stops exactly: nothing past the
    // last printed message is committed.
    config.subscriptions.push(brook_client::Subscription {
        topic: args.topic.clone(),
        tags: args.tags.clone(),
        sql: args.sql.clone(),
    });
    config.max_in_flight = 1;
    config.heartbeat_interval = Duration::from_secs(5);
    config.orderly = args.orderly;
    config.trace = args.trace;
    config.suspend = Duration::from_millis(args.suspend_ms);
    config.max_reconsume_times = args.max_reconsume_times;
    if let Some(list) = &args.retry_backoff {
        config.retry_backoff = list
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .map(|s| parse_duration_ms(s).map(Duration::from_millis))
            .collect::<Result<_, _>>()
            .map_err(ClientError::InvalidArgument)?;
    }
    let (tx, mut rx) = mpsc::channel::<(StoredMessage, oneshot::Sender<bool>)>(1);
    let consumer = PushConsumer::start(target.endpoint(), config, move |m| {
        let tx = tx.clone();
        async move {
            let (done, printed) = oneshot::channel();
            if tx.send((m, done)).await.is_err() {
                return ConsumeResult::Later;
            }
            match printed.await {
                Ok(true) => ConsumeResult::Success,
                _ => ConsumeResult::Later,
            }
        }
    })
    .await?;
    let deadline = args.timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut seen = 0u64;
    let mut failures: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    while args.count.is_none_or(|c| seen < c) {
        let next = match deadline {
            Some(at) => match tokio::time::timeout_at(at.into(), rx.recv()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => rx.recv().await,
        };
        let Some((msg, done)) = next else { break };
        if args.hold_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.hold_ms)).await;
        }
        let failed = failures.entry(msg.msg_id.clone()).or_insert(0);
        if *failed < args.fail_times {
            *failed += 1;
            print_message(args.json, &msg, "later");
            let _ = done.send(false);
            continue;
        }
        print_message(args.json, &msg, "success");
        seen += 1;
        let _ = done.send(true);
    }
    drop(rx);
    consumer.shutdown().await;
    Ok(())
}
