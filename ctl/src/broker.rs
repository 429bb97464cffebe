//! `brookctl broker`: the broker's own state — writable or why not, disk,
//! log range.

use crate::output::when;
use brook_client::{BrokerStatus, ClientError, Connection};
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand)]
pub(crate) enum BrokerCommand {
    /// Whether the broker takes writes (or why not, since when), its disk
    /// and its log.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(addr: &str, command: BrokerCommand) -> Result<(), ClientError> {
    let conn = Connection::connect_as(addr, "brookctl").await?;
    match command {
        BrokerCommand::Status { json } => {
            let status = conn.broker_status().await?;
            if json {
                println!("{}", as_json(&status));
            } else {
                print_status(&status);
            }
        }
    }
    Ok(())
}

/// The one-line state: what an operator checks first.
fn state_line(status: &BrokerStatus) -> String {
    match (&status.poisoned, status.disk_full_since_ms) {
        (Some(why), _) => format!("writes refused until restart: {why}"),
        (None, Some(since)) => format!("disk full, writes refused since {}", when(since)),
        (None, None) => "writable".to_string(),
    }
}

fn print_status(status: &BrokerStatus) {
    println!("broker {} (brookd {})", status.addr, status.version);
    println!("state: {}", state_line(status));
    println!("disk: {:.1}% used, {} MiB free", status.disk_used_ratio * 100.0, status.disk_free_bytes / (1024 * 1024));
    println!("log: offsets {}..{}", status.log_range.0, status.log_range.1);
    println!("topics: {}", status.topics);
    println!("uptime: {} s", status.uptime_ms / 1000);
}

fn as_json(status: &BrokerStatus) -> serde_json::Value {
    json!({
        "addr": status.addr,
        "version": status.version,
        "writable": status.writable,
        "state": state_line(status),
        "disk_full_since_ms": status.disk_full_since_ms,
        "poisoned": status.poisoned,
        "disk_free_bytes": status.disk_free_bytes,
        "disk_used_ratio": status.disk_used_ratio,
        "log_min_offset": status.log_range.0,
        "log_max_offset": status.log_range.1,
        "topics": status.topics,
        "uptime_ms": status.uptime_ms,
    })
}
