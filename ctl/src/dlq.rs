//! `brookctl dlq`: a group's dead letters, listed and resent.

use crate::output::print_message;
use crate::target::Target;
use brook_client::ClientError;
use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum DlqCommand {
    /// List the messages in a group's dead-letter queue.
    List {
        /// Group name.
        group: String,
        /// One JSON object per message.
        #[arg(long)]
        json: bool,
    },
    /// Send a dead letter back to the topic it was first sent to.
    Resend {
        /// Group name.
        group: String,
        /// Message id, as `dlq list` shows it.
        #[arg(long)]
        id: String,
    },
}

pub(crate) async fn run(target: &Target, command: DlqCommand) -> Result<(), ClientError> {
    match command {
        DlqCommand::List { group, json } => {
            let mut dead = Vec::new();
            for (_, conn) in target.masters().await? {
                dead.extend(conn.dlq_list(&group).await?);
            }
            for m in dead {
                if json {
                    print_message(true, &m, "dead");
                } else {
                    let body = std::str::from_utf8(&m.message.body)
                        .map_or_else(|_| format!("<{} bytes>", m.message.body.len()), str::to_string);
                    println!(
                        "{}\ttopic={}\tretries={}\tstored={}\t{}",
                        m.msg_id,
                        m.origin_topic(),
                        m.reconsume_times,
                        m.store_ts,
                        body
                    );
                }
            }
        }
        DlqCommand::Resend { group, id } => {
            let ack = target.storing(&id).await?.dlq_resend(&group, &id).await?;
            println!("resent id={} queue={} offset={}", ack.msg_id, ack.queue, ack.queue_offset);
        }
    }
    Ok(())
}
