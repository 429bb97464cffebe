//! `brookctl topic`: create (or grow), list, describe, delete.

use brook_client::{ClientError, Connection};
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand)]
pub(crate) enum TopicCommand {
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

pub(crate) async fn run(addr: &str, command: TopicCommand) -> Result<(), ClientError> {
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
