//! `brookctl`: the admin and test CLI for brook — topics, sends (delayed and
//! transactional too), consumes (with failures on purpose), consumer groups,
//! dead letters, transactions. Every failure exits non-zero with a message on stderr.

use base64::Engine;
use brook::clock::now_ms;
use brook_client::{
    ClientError, Connection, ConsumeResult, Message, Producer, PushConfig, PushConsumer, ResetTo, StartFrom,
    StoredMessage, TransactionProducer, TxnOutcome,
};
use clap::{Parser, Subcommand, ValueEnum};
use futures::stream::{FuturesOrdered, StreamExt};
use serde_json::json;
use std::io::BufRead;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

#[derive(Parser)]
#[command(name = "brookctl", version, about = "Administer and try out a brook broker")]
struct Cli {
    /// Broker address.
    #[arg(long, global = true, default_value = "127.0.0.1:10911", env = "BROOK_ADDR")]
    addr: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Topics: create, list, describe, delete.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// Send a message (or one per line of standard input).
    Send(SendArgs),
    /// Consume as a member of a consumer group.
    Consume(ConsumeArgs),
    /// Consumer groups: list, describe.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Find messages: by id, by key, by time.
    Msg {
        #[command(subcommand)]
        command: MsgCommand,
    },
    /// Transactions: list pending half messages and counts.
    Txn {
        #[command(subcommand)]
        command: TxnCommand,
    },
    /// A group's dead-letter queue: list, resend.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Subcommand)]
enum MsgCommand {
    /// A message by id.
    Get {
        /// Message id.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Messages of a topic with a key, newest first.
    ByKey {
        /// Topic.
        topic: String,
        /// Key.
        key: String,
        /// Stored at or after (ms since the epoch or RFC 3339).
        #[arg(long, value_parser = parse_time)]
        from: Option<i64>,
        /// Stored at or before (ms since the epoch or RFC 3339).
        #[arg(long, value_parser = parse_time)]
        to: Option<i64>,
        /// Most messages.
        #[arg(long, default_value_t = 64)]
        max: u32,
        /// One JSON object per message.
        #[arg(long)]
        json: bool,
    },
    /// The trace timeline of a message (sent with tracing on).
    Trace {
        /// Message id.
        id: String,
        /// One JSON object per event.
        #[arg(long)]
        json: bool,
    },
    /// Per queue, the first offset stored at or after a time.
    At {
        /// Topic.
        topic: String,
        /// Time (ms since the epoch or RFC 3339).
        #[arg(long, value_parser = parse_time)]
        time: i64,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// Milliseconds since the epoch, or an RFC 3339 time.
fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{text:?} is neither ms since the epoch nor RFC 3339: {e}"))
}

#[derive(Subcommand)]
enum TxnCommand {
    /// Pending half messages (age, checks, producer group) and counts.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// How `send --txn` ends the transaction.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TxnMode {
    /// Commit right away.
    Commit,
    /// Roll back right away.
    Rollback,
    /// Leave it unknown; answer the broker's check with commit.
    CheckCommit,
    /// Leave it unknown; answer the broker's check with rollback.
    CheckRollback,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List the messages in a group's dead-letter queue.
    List {
        /// Group name.
        group: String,
        /// One JSON object per message.
        #[arg(long)]
        json: bool,
    },
    /// Send a dead letter back to the topic it was first sent to.
    Resend {
        /// Group name.
        group: String,
        /// Message id, as `dlq list` shows it.
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
enum TopicCommand {
    /// Create a topic, or grow its queue count.
    Create {
        /// Topic name.
        name: String,
        /// Number of queues.
        #[arg(long, default_value_t = 4)]
        queues: u32,
    },
    /// List topics.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show a topic's queues and their offset ranges.
    Describe {
        /// Topic name.
        name: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Delete a topic.
    Delete {
        /// Topic name.
        name: String,
    },
}

#[derive(Subcommand)]
enum GroupCommand {
    /// List consumer groups.
    List,
    /// Show members, assignment, committed offsets and lag.
    Describe {
        /// Group name.
        group: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Move a group's committed offsets on a topic (replay or skip); live
    /// members resume from the new offsets.
    Reset {
        /// Group name.
        group: String,
        /// Topic.
        topic: String,
        /// The first message stored at or after this time (ms or RFC 3339).
        #[arg(long, value_parser = parse_time, group = "target")]
        to_time: Option<i64>,
        /// The oldest retained message.
        #[arg(long, group = "target")]
        to_earliest: bool,
        /// The end of each queue.
        #[arg(long, group = "target")]
        to_latest: bool,
        /// QUEUE:OFFSET (repeatable).
        #[arg(long, group = "target")]
        to_offset: Vec<String>,
    },
}

#[derive(clap::Args)]
struct SendArgs {
    /// Topic.
    topic: String,
    /// Message body (omit with --stdin).
    body: Option<String>,
    /// Business key (repeatable).
    #[arg(long)]
    key: Vec<String>,
    /// Tag.
    #[arg(long)]
    tags: Option<String>,
    /// Sharding key: every message with it goes to one queue, in order.
    #[arg(long)]
    ordered_by: Option<String>,
    /// Read one message per line from standard input (sent pipelined).
    #[arg(long)]
    stdin: bool,
    /// Print one JSON object per acknowledgement.
    #[arg(long)]
    json: bool,
    /// Deliver after delay level L (1-based; the broker's `delay_levels`).
    #[arg(long, conflicts_with_all = ["delay_ms", "deliver_at"])]
    delay_level: Option<u32>,
    /// Deliver MS milliseconds after the broker stores it.
    #[arg(long, conflicts_with = "deliver_at")]
    delay_ms: Option<u64>,
    /// Deliver at this time, ms since the epoch.
    #[arg(long)]
    deliver_at: Option<i64>,
    /// Send as a transactional message and end it this way.
    #[arg(long, value_enum, conflicts_with_all = ["stdin", "ordered_by", "delay_level", "delay_ms", "deliver_at"])]
    txn: Option<TxnMode>,
    /// Producer group of a transactional send.
    #[arg(long, default_value = "brookctl")]
    producer_group: String,
    /// With --txn check-*: how long to stay connected waiting for the check.
    #[arg(long, default_value_t = 60_000)]
    wait_check_ms: u64,
    /// Trace the message (see `msg trace`).
    #[arg(long)]
    trace: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum From {
    Earliest,
    Latest,
}

#[derive(clap::Args)]
struct ConsumeArgs {
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

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("brookctl: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), ClientError> {
    match cli.command {
        Command::Topic { command } => topic(&cli.addr, command).await,
        Command::Send(args) => send(&cli.addr, args).await,
        Command::Consume(args) => consume(&cli.addr, args).await,
        Command::Group { command } => group(&cli.addr, command).await,
        Command::Dlq { command } => dlq(&cli.addr, command).await,
        Command::Txn { command } => txn(&cli.addr, command).await,
        Command::Msg { command } => msg(&cli.addr, command).await,
    }
}

async fn topic(addr: &str, command: TopicCommand) -> Result<(), ClientError> {
    let conn = Connection::connect_as(addr, "brookctl").await?;
    match command {
        TopicCommand::Create { name, queues } => {
            let info = conn.create_topic(&name, queues).await?;
            println!("topic {} has {} queues", info.name, info.queues);
        }
        TopicCommand::List { json } => {
            for t in conn.list_topics().await? {
                if json {
                    println!("{}", json!({ "topic": t.name, "queues": t.queues }));
                } else {
                    println!("{}\t{}", t.name, t.queues);
                }
            }
        }
        TopicCommand::Describe { name, json } => {
            let info = conn.describe_topic(&name).await?;
            if json {
                let queues: Vec<_> = info
                    .queue_stats
                    .iter()
                    .map(|q| json!({ "queue": q.queue, "min_offset": q.min_offset, "max_offset": q.max_offset }))
                    .collect();
                println!("{}", json!({ "topic": info.name, "queues": queues }));
            } else {
                println!("topic {} ({} queues)", info.name, info.queues);
                println!("queue\tmin_offset\tmax_offset");
                for q in info.queue_stats {
                    println!("{}\t{}\t{}", q.queue, q.min_offset, q.max_offset);
                }
            }
        }
        TopicCommand::Delete { name } => {
            conn.delete_topic(&name).await?;
            println!("topic {name} deleted");
        }
    }
    Ok(())
}

fn message(args: &SendArgs, body: String) -> Message {
    let mut msg = Message::new(args.topic.as_str(), body.into_bytes());
    msg.tags.clone_from(&args.tags);
    msg.keys.clone_from(&args.key);
    if args.trace {
        msg.properties.insert(brook_proto::system::PROP_TRACE.into(), "true".into());
    }
    if let Some(level) = args.delay_level {
        msg = msg.with_delay_level(level);
    }
    if let Some(ms) = args.delay_ms {
        msg = msg.with_delay_ms(ms);
    }
    if let Some(at) = args.deliver_at {
        msg = msg.with_deliver_at(at);
    }
    msg
}

fn print_ack(json: bool, ack: &brook_client::SendAck) {
    if json {
        let mut obj = json!({ "id": ack.msg_id, "queue": ack.queue, "offset": ack.queue_offset });
        if let Some(at) = ack.deliver_at {
            obj["deliver_at"] = json!(at);
        }
        println!("{obj}");
    } else {
        let due = ack.deliver_at.map(|at| format!(" deliver_at={at}")).unwrap_or_default();
        println!("sent id={} queue={} offset={}{due}", ack.msg_id, ack.queue, ack.queue_offset);
    }
}

async fn send_one(
    producer: &Producer,
    ordered_by: Option<&str>,
    msg: Message,
) -> Result<brook_client::SendAck, ClientError> {
    match ordered_by {
        Some(key) => producer.send_ordered(msg, key).await,
        None => producer.send(msg).await,
    }
}

async fn send(addr: &str, args: SendArgs) -> Result<(), ClientError> {
    if let Some(mode) = args.txn {
        return send_txn(addr, &args, mode).await;
    }
    let producer = Producer::connect(addr).await?;
    if !args.stdin {
        let body = args.body.clone().ok_or_else(|| ClientError::InvalidArgument("give a BODY or --stdin".into()))?;
        let ack = send_one(&producer, args.ordered_by.as_deref(), message(&args, body)).await?;
        print_ack(args.json, &ack);
        return Ok(());
    }
    // Pipelined: up to WINDOW sends in flight, acks printed in input order.
    const WINDOW: usize = 256;
    let (tx, mut rx) = mpsc::channel::<String>(WINDOW);
    let reader = std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut in_flight = FuturesOrdered::new();
    let mut input_done = false;
    loop {
        tokio::select! {
            line = rx.recv(), if !input_done && in_flight.len() < WINDOW => match line {
                Some(line) => {
                    let (producer, msg, key) = (producer.clone(), message(&args, line), args.ordered_by.clone());
                    in_flight.push_back(async move { send_one(&producer, key.as_deref(), msg).await });
                }
                None => input_done = true,
            },
            Some(result) = in_flight.next(), if !in_flight.is_empty() => print_ack(args.json, &result?),
            else => break,
        }
    }
    let _ = reader.join();
    Ok(())
}

fn print_message(json: bool, m: &StoredMessage, result: &str) {
    let body = std::str::from_utf8(&m.message.body);
    if json {
        let mut obj = json!({
            "id": m.msg_id,
            "topic": m.message.topic,
            "queue": m.queue,
            "offset": m.queue_offset,
            "log_offset": m.log_offset,
            "key": m.message.keys.first(),
            "keys": m.message.keys,
            "tags": m.message.tags,
            "properties": m.message.properties,
            "born_ts": m.message.born_ts,
            "store_ts": m.store_ts,
            "recv_ts": now_ms(),
            "reconsume": m.reconsume_times,
            "result": result,
        });
        match body {
            Ok(text) => obj["body"] = json!(text),
            Err(_) => obj["body_b64"] = json!(base64::engine::general_purpose::STANDARD.encode(&m.message.body)),
        }
        println!("{obj}");
    } else {
        let text = body.map_or_else(|_| format!("<{} bytes>", m.message.body.len()), str::to_string);
        let retry = if m.reconsume_times > 0 { format!(" retry {}", m.reconsume_times) } else { String::new() };
        let later = if result == "later" { " (later)" } else { "" };
        println!("[{} q{} @{}{retry}] {}{later}", m.msg_id, m.queue, m.queue_offset, text);
    }
}

async fn consume(addr: &str, args: ConsumeArgs) -> Result<(), ClientError> {
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
            .map(|s| brook::config::parse_duration_ms(s).map(Duration::from_millis))
            .collect::<Result<_, _>>()
            .map_err(ClientError::InvalidArgument)?;
    }
    let (tx, mut rx) = mpsc::channel::<(StoredMessage, oneshot::Sender<bool>)>(1);
    let consumer = PushConsumer::start(addr, config, move |m| {
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

async fn group(addr: &str, command: GroupCommand) -> Result<(), ClientError> {
    let conn = Connection::connect_as(addr, "brookctl").await?;
    match command {
        GroupCommand::List => {
            for g in conn.list_groups().await? {
                println!("{g}");
            }
        }
        GroupCommand::Reset { group, topic, to_time, to_earliest, to_latest, to_offset } => {
            let to = match (to_time, to_earliest, to_latest) {
                (Some(t), _, _) => ResetTo::Time(t),
                (_, true, _) => ResetTo::Earliest,
                (_, _, true) => ResetTo::Latest,
                _ if !to_offset.is_empty() => ResetTo::Offsets(
                    to_offset
                        .iter()
                        .map(|qo| {
                            qo.split_once(':').and_then(|(q, o)| Some((q.parse().ok()?, o.parse().ok()?))).ok_or_else(
                                || ClientError::InvalidArgument(format!("--to-offset {qo:?}: use QUEUE:OFFSET")),
                            )
                        })
                        .collect::<Result<_, _>>()?,
                ),
                _ => {
                    return Err(ClientError::InvalidArgument(
                        "give --to-time, --to-earliest, --to-latest or --to-offset".into(),
                    ))
                }
            };
            for o in conn.reset_offsets(&group, &topic, to).await? {
                println!("{}\t{}\t{}", o.topic, o.queue, o.offset);
            }
        }
        GroupCommand::Describe { group, json } => {
            let info = conn.describe_group(&group).await?;
            if json {
                let members: Vec<_> = info
                    .members
                    .iter()
                    .map(|m| {
                        let queues: Vec<String> = m.queues.iter().map(|q| format!("{}:{}", q.topic, q.queue)).collect();
                        json!({ "member": m.member, "client": m.client, "idle_ms": m.idle_ms, "queues": queues })
                    })
                    .collect();
                let offsets: Vec<_> = info
                    .offsets
                    .iter()
                    .map(|o| {
                        json!({ "topic": o.topic, "queue": o.queue, "member": o.member,
                        "committed": o.committed, "max_offset": o.max_offset, "lag": o.lag })
                    })
                    .collect();
                println!(
                    "{}",
                    json!({ "group": info.group, "mode": format!("{:?}", info.mode), "generation": info.generation,
                        "members": members, "offsets": offsets, "dlq_messages": info.dlq_messages })
                );
            } else {
                println!(
                    "group {} ({:?}, generation {}, {} dead letters)",
                    info.group, info.mode, info.generation, info.dlq_messages
                );
                println!("members:");
                for m in &info.members {
                    let queues: Vec<String> = m.queues.iter().map(|q| format!("{}:{}", q.topic, q.queue)).collect();
                    println!("  {} (client {}, idle {} ms): {}", m.member, m.client, m.idle_ms, queues.join(" "));
                }
                println!("topic\tqueue\tmember\tcommitted\tmax_offset\tlag");
                for o in &info.offsets {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        o.topic,
                        o.queue,
                        o.member.as_deref().unwrap_or("-"),
                        o.committed,
                        o.max_offset,
                        o.lag
                    );
                }
            }
        }
    }
    Ok(())
}

async fn dlq(addr: &str, command: DlqCommand) -> Result<(), ClientError> {
    let conn = Connection::connect_as(addr, "brookctl").await?;
    match command {
        DlqCommand::List { group, json } => {
            for m in conn.dlq_list(&group).await? {
                if json {
                    print_message(true, &m, "dead");
                } else {
                    let body = std::str::from_utf8(&m.message.body)
                        .map_or_else(|_| format!("<{} bytes>", m.message.body.len()), str::to_string);
                    println!(
                        "{}\ttopic={}\tretries={}\tstored={}\t{}",
                        m.msg_id,
                        m.origin_topic(),
                        m.reconsume_times,
                        m.store_ts,
                        body
                    );
                }
            }
        }
        DlqCommand::Resend { group, id } => {
            let ack = conn.dlq_resend(&group, &id).await?;
            println!("resent id={} queue={} offset={}", ack.msg_id, ack.queue, ack.queue_offset);
        }
    }
    Ok(())
}

/// `send --txn`: a half message, then commit or rollback now, or stay
/// connected and answer the broker's check as told.
async fn send_txn(addr: &str, args: &SendArgs, mode: TxnMode) -> Result<(), ClientError> {
    let body = args.body.clone().ok_or_else(|| ClientError::InvalidArgument("give a BODY".into()))?;
    let (checked_tx, mut checked_rx) = mpsc::unbounded_channel::<TxnOutcome>();
    let executor = move |_: &Message, _: &brook_client::SendAck| match mode {
        TxnMode::Commit => TxnOutcome::Commit,
        TxnMode::Rollback => TxnOutcome::Rollback,
        TxnMode::CheckCommit | TxnMode::CheckRollback => TxnOutcome::Unknown,
    };
    let checker = move |_: &StoredMessage| {
        let outcome = if mode == TxnMode::CheckRollback { TxnOutcome::Rollback } else { TxnOutcome::Commit };
        let _ = checked_tx.send(outcome);
        outcome
    };
    let producer = TransactionProducer::new(addr, &args.producer_group, executor, checker).await?;
    let (ack, outcome) = producer.send(message(args, body)).await?;
    let word = |o: TxnOutcome| format!("{o:?}").to_lowercase();
    if args.json {
        println!(
            "{}",
            json!({ "id": ack.msg_id, "queue": ack.queue, "offset": ack.queue_offset, "outcome": word(outcome) })
        );
    } else {
        println!("half sent id={} queue={} → {}", ack.msg_id, ack.queue, word(outcome));
    }
    if outcome != TxnOutcome::Unknown {
        return Ok(());
    }
    let wait = Duration::from_millis(args.wait_check_ms);
    let answered = tokio::time::timeout(wait, checked_rx.recv())
        .await
        .map_err(|_| ClientError::Connection(format!("no check from the broker within {} ms", args.wait_check_ms)))?
        .ok_or_else(|| ClientError::Connection("check listener stopped".into()))?;
    // The answer goes out on its own task: wait until the broker has it.
    let conn = Connection::connect_as(addr, "brookctl").await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = ack.msg_id.to_string();
    while conn.list_transactions().await?.pending.iter().any(|p| p.msg_id == id) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if args.json {
        println!("{}", json!({ "id": ack.msg_id, "checked": word(answered) }));
    } else {
        println!("checked id={} → {}", ack.msg_id, word(answered));
    }
    producer.close();
    Ok(())
}

async fn txn(addr: &str, command: TxnCommand) -> Result<(), ClientError> {
    let conn = Connection::connect_as(addr, "brookctl").await?;
    match command {
        TxnCommand::List { json } => {
            let report = conn.list_transactions().await?;
            if json {
                let pending: Vec<_> = report
                    .pending
                    .iter()
                    .map(|p| {
                        json!({ "id": p.msg_id, "topic": p.topic, "producer_group": p.producer_group,
                        "age_ms": p.age_ms, "checks": p.checks })
                    })
                    .collect();
                println!(
                    "{}",
                    json!({ "pending": pending, "committed": report.committed, "rolled_back": report.rolled_back,
                        "checked": report.checked, "expired": report.expired })
                );
            } else {
                println!(
                    "committed {}  rolled back {}  checked {}  expired {}  pending {}",
                    report.committed,
                    report.rolled_back,
                    report.checked,
                    report.expired,
                    report.pending.len()
                );
                println!("id\ttopic\tproducer_group\tage_ms\tchecks");
                for p in &report.pending {
                    println!("{}\t{}\t{}\t{}\t{}", p.msg_id, p.topic, p.producer_group, p.age_ms, p.checks);
                }
            }
        }
    }
    Ok(())
}

async fn msg(addr: &str, command: MsgCommand) -> Result<(), ClientError> {
    let conn = Connection::connect_as(addr, "brookctl").await?;
    match command {
        MsgCommand::Get { id, json } => print_found(json, &conn.get_message(&id).await?),
        MsgCommand::ByKey { topic, key, from, to, max, json } => {
            let found = conn.query_by_key(&topic, &key, from.unwrap_or(0), to.unwrap_or(i64::MAX), max).await?;
            for m in &found {
                print_found(json, m);
            }
        }
        MsgCommand::Trace { id, json } => {
            let records = conn.query_by_key(brook_proto::system::TRACE_TOPIC, &id, 0, i64::MAX, 1024).await?;
            let rank = |e: &str| ["sent", "stored", "delivered", "consumed", "retry"].iter().position(|x| *x == e);
            let mut events: Vec<serde_json::Value> =
                records.iter().filter_map(|r| serde_json::from_slice(&r.message.body).ok()).collect();
            events.sort_by_key(|e| (e["time"].as_i64().unwrap_or(0), rank(e["event"].as_str().unwrap_or(""))));
            if events.is_empty() {
                return Err(ClientError::InvalidArgument(format!("no trace for {id} (was it sent with tracing on?)")));
            }
            for e in &events {
                if json {
                    println!("{e}");
                } else {
                    let mut detail: Vec<String> = e
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(k, _)| !["event", "time", "msg_id"].contains(&k.as_str()))
                        .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                        .collect();
                    detail.sort();
                    println!("{}\t{:<9}\t{}", e["time"], e["event"].as_str().unwrap_or("?"), detail.join(" "));
                }
            }
        }
        MsgCommand::At { topic, time, json } => {
            for o in conn.offsets_at_time(&topic, time).await? {
                if json {
                    println!("{}", json!({ "topic": o.topic, "queue": o.queue, "offset": o.offset }));
                } else {
                    println!("{}\t{}\t{}", o.topic, o.queue, o.offset);
                }
            }
        }
    }
    Ok(())
}

/// A found message: JSON with every field, or a readable block.
fn print_found(json: bool, m: &StoredMessage) {
    if json {
        print_message(true, m, "found");
        return;
    }
    let body = std::str::from_utf8(&m.message.body)
        .map_or_else(|_| format!("<{} bytes>", m.message.body.len()), str::to_string);
    println!("id          {}", m.msg_id);
    println!("topic       {} queue {} offset {}", m.message.topic, m.queue, m.queue_offset);
    println!("log offset  {}", m.log_offset);
    println!("born / stored  {} / {}", m.message.born_ts, m.store_ts);
    println!("tags        {}", m.message.tags.as_deref().unwrap_or("-"));
    println!("keys        {}", m.message.keys.join(" "));
    for (k, v) in &m.message.properties {
        println!("property    {k} = {v}");
    }
    println!("body        {body}");
    println!();
}
