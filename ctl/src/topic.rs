//! `brookctl topic`: create (or grow), list, describe, route, delete. With
//! `--namesrv`, create goes to every master of a cluster (or one named
//! replica set), list and describe merge every master's answer.

use crate::target::{tagged, Target};
use brook_client::{ClientError, ErrorCode};
use brook_proto::route::{PERM_READ, PERM_WRITE};
use clap::Subcommand;
use serde_json::json;
use std::collections::BTreeMap;

#[derive(Subcommand)]
pub(crate) enum TopicCommand {
    /// Create a topic, or grow its queue count.
    Create {
        /// Topic name.
        name: String,
        /// Number of queues (on each broker).
        #[arg(long, default_value_t = 4)]
        queues: u32,
        /// With --namesrv: on every master of this cluster.
        #[arg(long, conflicts_with = "broker")]
        cluster: Option<String>,
        /// With --namesrv: on the master of this replica set only.
        #[arg(long)]
        broker: Option<String>,
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
    /// Show a topic's route: per replica set, its addresses and queues.
    Route {
        /// Topic name.
        name: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Delete a topic (on every master holding it).
    Delete {
        /// Topic name.
        name: String,
    },
}

pub(crate) async fn run(target: &Target, command: TopicCommand) -> Result<(), ClientError> {
    match command {
        TopicCommand::Create { name, queues, cluster, broker } => create(target, &name, queues, cluster, broker).await,
        TopicCommand::List { json } => list(target, json).await,
        TopicCommand::Describe { name, json } => describe(target, &name, json).await,
        TopicCommand::Route { name, json } => route(target, &name, json).await,
        TopicCommand::Delete { name } => {
            let mut deleted = 0;
            for (_, conn) in target.masters().await? {
                match conn.delete_topic(&name).await {
                    Ok(()) => deleted += 1,
                    Err(e) if target.is_cluster() && e.code() == Some(ErrorCode::TopicNotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            if deleted == 0 {
                return Err(ClientError::InvalidArgument(format!("topic {name} is on no broker")));
            }
            println!("topic {name} deleted");
            Ok(())
        }
    }
}

async fn create(
    target: &Target,
    name: &str,
    queues: u32,
    cluster: Option<String>,
    broker: Option<String>,
) -> Result<(), ClientError> {
    if !target.is_cluster() {
        if cluster.is_some() || broker.is_some() {
            return Err(ClientError::InvalidArgument("--cluster and --broker need --namesrv".into()));
        }
        let (_, conn) = target.masters().await?.remove(0);
        let info = conn.create_topic(name, queues).await?;
        println!("topic {} has {} queues", info.name, info.queues);
        return Ok(());
    }
    let known = target.cluster().await?;
    let chosen: Vec<_> = known
        .iter()
        .filter(|b| b.broker_id == brook_proto::route::MASTER_ID)
        .filter(|b| cluster.as_ref().is_none_or(|c| *c == b.cluster))
        .filter(|b| broker.as_ref().is_none_or(|n| *n == b.broker_name))
        .collect();
    if chosen.is_empty() {
        let which = broker.map(|b| format!("replica set {b}")).or(cluster.map(|c| format!("cluster {c}")));
        return Err(ClientError::InvalidArgument(format!(
            "no master registered for {}",
            which.unwrap_or_else(|| "any cluster".into())
        )));
    }
    for b in chosen {
        let conn = brook_client::Connection::connect_as(&b.addr, "brookctl")
            .await
            .map_err(|e| ClientError::Unavailable { broker: b.broker_name.clone(), cause: e.to_string() })?;
        let info = conn.create_topic(name, queues).await?;
        println!("topic {} has {} queues on {} ({})", info.name, info.queues, b.broker_name, b.addr);
    }
    Ok(())
}

async fn list(target: &Target, json: bool) -> Result<(), ClientError> {
    // Topic → (queues summed over brokers, the brokers holding it).
    let mut topics: BTreeMap<String, (u32, Vec<String>)> = BTreeMap::new();
    for (broker, conn) in target.masters().await? {
        for t in conn.list_topics().await? {
            let entry = topics.entry(t.name).or_default();
            entry.0 += t.queues;
            entry.1.push(broker.clone());
        }
    }
    for (name, (queues, brokers)) in topics {
        if json && target.is_cluster() {
            println!("{}", json!({ "topic": name, "queues": queues, "brokers": brokers }));
        } else if json {
            println!("{}", json!({ "topic": name, "queues": queues }));
        } else if target.is_cluster() {
            println!("{name}\t{queues}\t{}", brokers.join(","));
        } else {
            println!("{name}\t{queues}");
        }
    }
    Ok(())
}

async fn describe(target: &Target, name: &str, json: bool) -> Result<(), ClientError> {
    let mut found = Vec::new();
    for (broker, conn) in target.masters().await? {
        match conn.describe_topic(name).await {
            Ok(info) => found.push((broker, info)),
            Err(e) if target.is_cluster() && e.code() == Some(ErrorCode::TopicNotFound) => {}
            Err(e) => return Err(e),
        }
    }
    if found.is_empty() {
        return Err(ClientError::InvalidArgument(format!("topic {name} is on no broker")));
    }
    let total: u32 = found.iter().map(|(_, info)| info.queues).sum();
    if json {
        let queues: Vec<_> = found
            .iter()
            .flat_map(|(broker, info)| {
                info.queue_stats.iter().map(move |q| {
                    let mut obj = json!({ "queue": q.queue, "min_offset": q.min_offset, "max_offset": q.max_offset });
                    if !broker.is_empty() {
                        obj["broker"] = json!(broker);
                    }
                    obj
                })
            })
            .collect();
        println!("{}", json!({ "topic": name, "queues": queues }));
        return Ok(());
    }
    println!("topic {name} ({total} queues)");
    let header = if target.is_cluster() { "broker\t" } else { "" };
    println!("{header}queue\tmin_offset\tmax_offset");
    for (broker, info) in &found {
        for q in &info.queue_stats {
            println!("{}", tagged(broker, format!("{}\t{}\t{}", q.queue, q.min_offset, q.max_offset)));
        }
    }
    Ok(())
}

async fn route(target: &Target, name: &str, json: bool) -> Result<(), ClientError> {
    if !target.is_cluster() {
        return Err(ClientError::InvalidArgument("topic route needs --namesrv (or BROOK_NAMESRV)".into()));
    }
    let route = target.router().await?.route(name).await?;
    let perm = |p: u8| {
        format!("{}{}", if p & PERM_READ != 0 { "r" } else { "-" }, if p & PERM_WRITE != 0 { "w" } else { "-" })
    };
    for q in &route.queues {
        let addrs = route.broker(&q.broker_name).map(|b| b.addrs.clone()).unwrap_or_default();
        if json {
            let by_id: BTreeMap<String, &String> = addrs.iter().map(|(id, a)| (id.to_string(), a)).collect();
            println!(
                "{}",
                json!({ "topic": route.topic, "broker_name": q.broker_name, "addrs": by_id,
                    "write_queues": q.write_queues, "read_queues": q.read_queues, "perm": perm(q.perm) })
            );
        } else {
            let addrs: Vec<String> = addrs.iter().map(|(id, a)| format!("{id}={a}")).collect();
            let addrs = if addrs.is_empty() { "-(not registered)".to_string() } else { addrs.join(",") };
            println!(
                "{}\t{}\twrite={}\tread={}\t{}",
                q.broker_name,
                addrs,
                q.write_queues,
                q.read_queues,
                perm(q.perm)
            );
        }
    }
    Ok(())
}
