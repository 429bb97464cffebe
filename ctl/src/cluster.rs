//! `brookctl cluster`: the brokers the name servers know, with their role
//! and traffic, and the controller (its voters and leader, each replica
//! set's master, epoch and in-sync set) when the name servers run one.

use crate::target::Target;
use brook_client::ClientError;
use brook_proto::controller::{ControllerInfo, ControllerRequest, ControllerResponse};
use brook_proto::route::MASTER_ID;
use brook_proto::route::{ClusterBroker, ReplicaStatus};
use clap::Subcommand;
use serde_json::json;
use std::time::Duration;

/// How long one broker may take to tell its replication state.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

async fn live_replica(addr: &str) -> Option<ReplicaStatus> {
    let asked = async { brook_client::Connection::connect(addr).await.ok()?.broker_status().await.ok() };
    tokio::time::timeout(STATUS_TIMEOUT, asked).await.ok().flatten().map(|s| s.replica)
}

/// Whether broker `i` is in its replica set's in-sync set: a master
/// always; a slave when its master counts it.
fn in_sync(brokers: &[ClusterBroker], replicas: &[ReplicaStatus], i: usize) -> bool {
    let b = &brokers[i];
    if b.broker_id == MASTER_ID {
        return true;
    }
    brokers
        .iter()
        .zip(replicas)
        .find(|(m, _)| m.cluster == b.cluster && m.broker_name == b.broker_name && m.broker_id == MASTER_ID)
        .is_some_and(|(_, r)| r.slaves.iter().any(|s| s.broker_id == b.broker_id && s.in_sync))
}

#[derive(Subcommand)]
pub(crate) enum ClusterCommand {
    /// Every registered broker: cluster, name, id, role, address, version,
    /// messages in and out per second, and its replication: epoch, log
    /// end, lag in bytes, in-sync membership.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(target: &Target, command: ClusterCommand) -> Result<(), ClientError> {
    if !target.is_cluster() {
        return Err(ClientError::InvalidArgument("cluster commands need --namesrv (or BROOK_NAMESRV)".into()));
    }
    match command {
        ClusterCommand::List { json } => {
            let mut brokers = target.cluster().await?;
            brokers.sort_by(|a, b| {
                (&a.cluster, &a.broker_name, a.broker_id).cmp(&(&b.cluster, &b.broker_name, b.broker_id))
            });
            // Each broker's replication as it is now (its registration's
            // when it does not answer).
            let mut replicas = Vec::with_capacity(brokers.len());
            for b in &brokers {
                replicas.push(live_replica(&b.addr).await.unwrap_or_else(|| b.replica.clone()));
            }
            if !json {
                println!(
                    "cluster\tbroker_name\tbroker_id\trole\taddr\tversion\tin_per_s\tout_per_s\tepoch\tend\tlag_bytes\tin_sync"
                );
            }
            for (i, b) in brokers.iter().enumerate() {
                let role = if b.broker_id == MASTER_ID { "master" } else { "slave" };
                let replica = &replicas[i];
                let in_sync = in_sync(&brokers, &replicas, i);
                if json {
                    println!(
                        "{}",
                        json!({ "cluster": b.cluster, "broker_name": b.broker_name, "broker_id": b.broker_id,
                            "role": role, "addr": b.addr, "version": b.version, "topics": b.topics,
                            "msgs_in_per_s": b.msgs_in_per_s, "msgs_out_per_s": b.msgs_out_per_s,
                            "last_seen_ms": b.last_seen_ms, "epoch": replica.epoch, "end": replica.end,
                            "lag_bytes": replica.lag_bytes, "in_sync": in_sync,
                            "replica": crate::broker::replica_json(replica) })
                    );
                } else {
                    println!(
                        "{}\t{}\t{}\t{role}\t{}\t{}\t{:.1}\t{:.1}\t{}\t{}\t{}\t{}",
                        b.cluster,
                        b.broker_name,
                        b.broker_id,
                        b.addr,
                        b.version,
                        b.msgs_in_per_s,
                        b.msgs_out_per_s,
                        replica.epoch,
                        replica.end,
                        replica.lag_bytes,
                        if in_sync { "yes" } else { "no" }
                    );
                }
            }
            print_controller(target, json).await;
        }
    }
    Ok(())
}

/// The controller's part of `cluster list`: nothing when the name servers
/// run none.
async fn print_controller(target: &Target, json: bool) {
    let info = match target.controller(ControllerRequest::Info).await {
        Ok(ControllerResponse::Info(info)) => info,
        Ok(_) => return,
        Err(e) if e.to_string().contains("runs no controller") => return,
        Err(e) => {
            eprintln!("controller: {e}");
            return;
        }
    };
    if json {
        println!("{}", json!({ "controller": controller_json(&info) }));
        return;
    }
    let ids = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    println!();
    match info.leader {
        Some(leader) => println!("controller: leader {leader} (asked voter {})", info.answered_by),
        None => println!("controller: no leader (asked voter {}): failover is stopped", info.answered_by),
    }
    println!("voter	peer_addr	leader");
    for m in &info.members {
        println!("{}	{}	{}", m.id, m.peer_addr, if info.leader == Some(m.id) { "yes" } else { "no" });
    }
    println!("replica_set	master	master_epoch	in_sync	in_sync_epoch	alive	members");
    for set in &info.sets {
        let members: Vec<String> = set.members.iter().map(|(id, addr)| format!("{id}={addr}")).collect();
        println!(
            "{}	{}	{}	{}	{}	{}	{}",
            set.broker_name,
            set.master.map_or_else(|| "none".to_string(), |m| m.to_string()),
            set.master_epoch,
            ids(&set.in_sync),
            set.in_sync_epoch,
            ids(&set.alive),
            members.join(",")
        );
    }
}

fn controller_json(info: &ControllerInfo) -> serde_json::Value {
    json!({
        "leader": info.leader,
        "answered_by": info.answered_by,
        "members": info.members.iter().map(|m| json!({ "id": m.id, "peer_addr": m.peer_addr })).collect::<Vec<_>>(),
        "sets": info.sets.iter().map(|s| json!({
            "cluster": s.cluster, "broker_name": s.broker_name, "master": s.master,
            "master_epoch": s.master_epoch, "in_sync": s.in_sync, "in_sync_epoch": s.in_sync_epoch,
            "alive": s.alive, "members": s.members, "master_ha_addr": s.master_ha_addr,
        })).collect::<Vec<_>>(),
    })
}
