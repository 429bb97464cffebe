//! `brookctl cluster`: the brokers the name servers know, with their role
//! and traffic.

use crate::target::Target;
use brook_client::ClientError;
use brook_proto::route::MASTER_ID;
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand)]
pub(crate) enum ClusterCommand {
    /// Every registered broker: cluster, name, id, role, address, version,
    /// messages in and out per second.
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
            if !json {
                println!("cluster\tbroker_name\tbroker_id\trole\taddr\tversion\tin_per_s\tout_per_s");
            }
            for b in brokers {
                let role = if b.broker_id == MASTER_ID { "master" } else { "slave" };
                if json {
                    println!(
                        "{}",
                        json!({ "cluster": b.cluster, "broker_name": b.broker_name, "broker_id": b.broker_id,
                            "role": role, "addr": b.addr, "version": b.version, "topics": b.topics,
                            "msgs_in_per_s": b.msgs_in_per_s, "msgs_out_per_s": b.msgs_out_per_s,
                            "last_seen_ms": b.last_seen_ms })
                    );
                } else {
                    println!(
                        "{}\t{}\t{}\t{role}\t{}\t{}\t{:.1}\t{:.1}",
                        b.cluster, b.broker_name, b.broker_id, b.addr, b.version, b.msgs_in_per_s, b.msgs_out_per_s
                    );
                }
            }
        }
    }
    Ok(())
}
