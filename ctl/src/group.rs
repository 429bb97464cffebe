//! `brookctl group`: list, describe (members, assignment, lag), reset
//! offsets (backtrack).

use crate::output::print_group;
use crate::parse_time;
use brook_client::{ClientError, Connection, ResetTo};
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
    },
}

pub(crate) async fn run(addr: &str, command: GroupCommand) -> Result<(), ClientError> {
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
        GroupCommand::Describe { group, json } => print_group(json, &conn.describe_group(&group).await?),
    }
    Ok(())
}
