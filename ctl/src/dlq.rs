//! `brookctl dlq`: a group's dead letters, listed and resent.

use crate::output::print_message;
use brook_client::{ClientError, Connection};
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

pub(crate) async fn run(addr: &str, command: DlqCommand) -> Result<(), ClientError> {
    let conn = Connection::connect_as(addr, "brookctl").await?;
    match command {
        DlqCommand::List { group, json } => {
            for m in conn.dlq_list(&group).await? {
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
            let ack = conn.dlq_resend(&group, &id).await?;
            println!("resent id={} queue={} offset={}", ack.msg_id, ack.queue, ack.queue_offset);
        }
    }
    Ok(())
}
