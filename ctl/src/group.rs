//! `brookctl group`: list, describe (members, assignment, lag), reset
//! offsets (backtrack).

use crate::output::print_group;
use crate::parse_time;
use crate::target::{tagged, Target};
use brook_client::{ClientError, ErrorCode, ResetTo};
use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum GroupCommand {
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
        /// With --namesrv: only the queues of this replica set (needed
        /// with --to-offset when the topic spans several).
        #[arg(long)]
        broker: Option<String>,
    },
}

pub(crate) async fn run(target: &Target, command: GroupCommand) -> Result<(), ClientError> {
    let mut masters = target.masters().await?;
    match command {
        GroupCommand::List => {
            let mut groups = std::collections::BTreeSet::new();
            for (_, conn) in &masters {
                groups.extend(conn.list_groups().await?);
            }
            for g in groups {
                println!("{g}");
            }
        }
        GroupCommand::Reset { group, topic, to_time, to_earliest, to_latest, to_offset, broker } => {
            if let Some(name) = &broker {
                masters.retain(|(b, _)| b == name);
                if masters.is_empty() {
                    return Err(ClientError::InvalidArgument(format!("no master of replica set {name}")));
                }
            }
            if !to_offset.is_empty() && masters.len() > 1 {
                return Err(ClientError::InvalidArgument(
                    "--to-offset names queues of one replica set: add --broker".into(),
                ));
            }
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
            let mut reset = 0;
            for (broker, conn) in &masters {
                let offsets = match conn.reset_offsets(&group, &topic, to.clone()).await {
                    Ok(offsets) => offsets,
                    Err(e) if masters.len() > 1 && e.code() == Some(ErrorCode::TopicNotFound) => continue,
                    Err(e) => return Err(e),
                };
                reset += 1;
                for o in offsets {
                    println!("{}", tagged(broker, format!("{}\t{}\t{}", o.topic, o.queue, o.offset)));
                }
            }
            if reset == 0 {
                return Err(ClientError::InvalidArgument(format!("topic {topic} is on no broker")));
            }
        }
        GroupCommand::Describe { group, json } => {
            let mut parts = Vec::new();
            for (broker, conn) in masters {
                match conn.describe_group(&group).await {
                    Ok(info) => parts.push((broker, info)),
                    Err(e) if target.is_cluster() && e.code() == Some(ErrorCode::GroupNotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            if parts.is_empty() {
                return Err(ClientError::InvalidArgument(format!("group {group} is on no broker")));
            }
            print_group(json, &parts);
        }
    }
    Ok(())
}
