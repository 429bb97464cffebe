//! `brookctl send`: one message, one per line of standard input (pipelined,
//! acks in input order), delayed, ordered by a sharding key, or
//! transactional.

use crate::output::print_ack;
use crate::target::Target;
use brook_client::{ClientError, Message, Producer, StoredMessage, TransactionProducer, TxnOutcome};
use clap::ValueEnum;
use futures::stream::{FuturesOrdered, StreamExt};
use serde_json::json;
use std::io::BufRead;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(clap::Args)]
pub(crate) struct SendArgs {
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

/// How `send --txn` ends the transaction.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TxnMode {
    /// Commit right away.
    Commit,
    /// Roll back right away.
    Rollback,
    /// Leave it unknown; answer the broker's check with commit.
    CheckCommit,
    /// Leave it unknown; answer the broker's check with rollback.
    CheckRollback,
}

pub(crate) fn message(args: &SendArgs, body: String) -> Message {
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

/// Sends `msg`, by sharding key if given. The send takes its place in the
/// producer's order now, when this is called, not when the answer is
/// awaited: lines of standard input are stored in input order.
pub(crate) fn send_one(
    producer: &Producer,
    ordered_by: Option<&str>,
    msg: Message,
) -> futures::future::BoxFuture<'static, Result<brook_client::SendAck, ClientError>> {
    match ordered_by {
        Some(key) => Box::pin(producer.send_ordered(msg, key)),
        None => Box::pin(producer.send(msg)),
    }
}

pub(crate) async fn run(target: &Target, args: SendArgs) -> Result<(), ClientError> {
    if let Some(mode) = args.txn {
        return send_txn(target, &args, mode).await;
    }
    let producer = Producer::connect(target.endpoint()).await?;
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
                    in_flight.push_back(send_one(&producer, args.ordered_by.as_deref(), message(&args, line)));
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

/// `send --txn`: a half message, then commit or rollback now, or stay
/// connected and answer the broker's check as told.
pub(crate) async fn send_txn(target: &Target, args: &SendArgs, mode: TxnMode) -> Result<(), ClientError> {
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
    let producer = TransactionProducer::new(target.endpoint(), &args.producer_group, executor, checker).await?;
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
    let conn = target.storing(&ack.msg_id.to_string()).await?;
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
