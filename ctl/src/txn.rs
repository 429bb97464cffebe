//! `brookctl txn`: pending half messages and transaction counts.

use brook_client::{ClientError, Connection};
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand)]
pub(crate) enum TxnCommand {
    /// Pending half messages (age, checks, producer group) and counts.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(addr: &str, command: TxnCommand) -> Result<(), ClientError> {
    let conn = Connection::connect_as(addr, "brookctl").await?;
    match command {
        TxnCommand::List { json } => {
            let report = conn.list_transactions().await?;
            if json {
                let pending: Vec<_> = report
                    .pending
                    .iter()
                    .map(|p| {
                        json!({ "id": p.msg_id, "topic": p.topic, "producer_group": p.producer_group,
                        "age_ms": p.age_ms, "checks": p.checks })
                    })
                    .collect();
                println!(
                    "{}",
                    json!({ "pending": pending, "committed": report.committed, "rolled_back": report.rolled_back,
                        "checked": report.checked, "expired": report.expired })
                );
            } else {
                println!(
                    "committed {}  rolled back {}  checked {}  expired {}  pending {}",
                    report.committed,
                    report.rolled_back,
                    report.checked,
                    report.expired,
                    report.pending.len()
                );
                println!("id\ttopic\tproducer_group\tage_ms\tchecks");
                for p in &report.pending {
                    println!("{}\t{}\t{}\t{}\t{}", p.msg_id, p.topic, p.producer_group, p.age_ms, p.checks);
                }
            }
        }
    }
    Ok(())
}
