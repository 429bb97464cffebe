//! `brookctl`: the admin and test CLI for brook — topics, sends (delayed and
//! transactional too), consumes (with failures on purpose), consumer groups,
//! dead letters, transactions, the broker's status, the cluster. With
//! `--namesrv` every request goes to the broker that owns it. Every failure
//! exits non-zero with a message on stderr.

mod broker;
mod cluster;
mod consume;
mod dlq;
mod group;
mod msg;
mod output;
mod send;
mod target;
mod topic;
mod txn;

use broker::BrokerCommand;
use brook_client::ClientError;
use clap::{Parser, Subcommand};
use cluster::ClusterCommand;
use consume::ConsumeArgs;
use dlq::DlqCommand;
use group::GroupCommand;
use msg::MsgCommand;
use send::SendArgs;
use target::Target;
use topic::TopicCommand;
use txn::TxnCommand;

#[derive(Parser)]
#[command(name = "brookctl", version, about = "Administer and try out a brook broker")]
struct Cli {
    /// Broker address.
    #[arg(long, global = true, default_value = "127.0.0.1:10911", env = "BROOK_ADDR")]
    addr: String,
    /// Name servers (comma-separated): route each request to the broker
    /// that owns it instead of using `--addr`.
    #[arg(long, global = true, env = "BROOK_NAMESRV")]
    namesrv: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The broker itself: status (writable, disk, log).
    Broker {
        #[command(subcommand)]
        command: BrokerCommand,
    },
    /// The cluster's brokers, as the name servers know them.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Topics: create, list, describe, route, delete.
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

/// Milliseconds since the epoch, or an RFC 3339 time.
pub(crate) fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{text:?} is neither ms since the epoch nor RFC 3339: {e}"))
}

#[tokio::main]
async fn main() {
    // Output piped into `head` ends quietly, as other command-line tools do,
    // instead of panicking on the closed pipe.
    // SAFETY: restores the default disposition of SIGPIPE before any thread
    // of ours writes.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("brookctl: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), ClientError> {
    let target = Target::new(cli.addr, cli.namesrv);
    match cli.command {
        Command::Broker { command } => broker::run(&target, command).await,
        Command::Cluster { command } => cluster::run(&target, command).await,
        Command::Topic { command } => topic::run(&target, command).await,
        Command::Send(args) => send::run(&target, args).await,
        Command::Consume(args) => consume::run(&target, args).await,
        Command::Group { command } => group::run(&target, command).await,
        Command::Dlq { command } => dlq::run(&target, command).await,
        Command::Txn { command } => txn::run(&target, command).await,
        Command::Msg { command } => msg::run(&target, command).await,
    }
}
