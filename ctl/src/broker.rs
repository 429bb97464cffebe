//! `brookctl broker`: the broker's own state — writable or why not, disk,
//! log range, replication.

use crate::output::when;
use crate::target::Target;
use brook_client::{BrokerStatus, ClientError};
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand)]
pub(crate) enum BrokerCommand {
    /// Whether the broker takes writes (or why not, since when), its disk
    /// and its log (with --namesrv: every master's).
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Asks the controller to make another member of a replica set its
    /// master (planned maintenance): the one given, or the best live
    /// in-sync member but the current master.
    Elect {
        /// The replica set (broker name).
        #[arg(long)]
        broker: String,
        /// The member to make master (its persistent id).
        #[arg(long)]
        id: Option<u64>,
    },
}

pub(crate) async fn run(target: &Target, command: BrokerCommand) -> Result<(), ClientError> {
    match command {
        BrokerCommand::Status { json } => {
            for (_, conn) in target.masters().await? {
                let status = conn.broker_status().await?;
                if json {
                    println!("{}", as_json(&status));
                } else {
                    print_status(&status);
                }
            }
        }
        BrokerCommand::Elect { broker, id } => {
            let request =
                brook_proto::controller::ControllerRequest::Elect { broker_name: broker.clone(), broker_id: id };
            match target.controller(request).await? {
                brook_proto::controller::ControllerResponse::Set(set) => println!(
                    "{broker}: master {} in epoch {} (in-sync {:?}); it takes over within a heartbeat",
                    set.master.map_or_else(|| "none".to_string(), |m| m.to_string()),
                    set.master_epoch,
                    set.in_sync
                ),
                other => return Err(ClientError::Protocol(format!("unexpected answer {other:?}"))),
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
    if status.broker_name.is_empty() {
        println!("broker {} (brookd {})", status.addr, status.version);
    } else {
        println!(
            "broker {} id {} of cluster {} at {} (brookd {})",
            status.broker_name, status.broker_id, status.cluster, status.addr, status.version
        );
    }
    println!("state: {}", state_line(status));
    println!("disk: {:.1}% used, {} MiB free", status.disk_used_ratio * 100.0, status.disk_free_bytes / (1024 * 1024));
    println!("log: offsets {}..{}", status.log_range.0, status.log_range.1);
    println!("topics: {}", status.topics);
    println!("traffic: {:.1} msgs/s in, {:.1} msgs/s out", status.msgs_in_per_s, status.msgs_out_per_s);
    println!("uptime: {} s", status.uptime_ms / 1000);
    let r = &status.replica;
    match r.role.as_str() {
        "slave" => println!(
            "replication: slave of {} ({}), epoch {}, end {}, lag {} bytes, confirmed {}",
            if r.ha_addr.is_empty() { "an unknown master" } else { &r.ha_addr },
            if r.connected { "connected" } else { "disconnected" },
            r.epoch,
            r.end,
            r.lag_bytes,
            r.confirmed
        ),
        _ => {
            println!(
                "replication: master ({}) at {}, epoch {}, end {}, confirmed {}",
                r.mode, r.ha_addr, r.epoch, r.end, r.confirmed
            );
            for s in &r.slaves {
                println!(
                    "  slave {} from {}: acked {}, lag {} bytes, {}, {}",
                    s.broker_id,
                    s.addr,
                    s.acked,
                    s.lag_bytes,
                    if s.in_sync { "in sync" } else { "not in sync" },
                    if s.connected { "connected" } else { "disconnected" }
                );
            }
        }
    }
}

fn as_json(status: &BrokerStatus) -> serde_json::Value {
    json!({
        "addr": status.addr,
        "cluster": status.cluster,
        "broker_name": status.broker_name,
        "broker_id": status.broker_id,
        "msgs_in_per_s": status.msgs_in_per_s,
        "msgs_out_per_s": status.msgs_out_per_s,
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
        "replica": replica_json(&status.replica),
    })
}

/// A broker's replication as JSON (shared with `cluster list`).
pub(crate) fn replica_json(r: &brook_proto::route::ReplicaStatus) -> serde_json::Value {
    json!({
        "role": r.role,
        "mode": r.mode,
        "epoch": r.epoch,
        "end": r.end,
        "confirmed": r.confirmed,
        "lag_bytes": r.lag_bytes,
        "ha_addr": r.ha_addr,
        "connected": r.connected,
        "slaves": r.slaves.iter().map(|s| json!({
            "broker_id": s.broker_id, "addr": s.addr, "acked": s.acked, "lag_bytes": s.lag_bytes,
            "in_sync": s.in_sync, "connected": s.connected,
        })).collect::<Vec<_>>(),
    })
}
