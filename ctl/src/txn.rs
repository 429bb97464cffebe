//! `brookctl txn`: pending half messages and transaction counts (summed
//! over every master with `--namesrv`).

use crate::target::Target;
use brook_client::ClientError;
use brook_proto::txn::TxnReport;
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

pub(crate) async fn run(target: &Target, command: TxnCommand) -> Result<(), ClientError> {
    match command {
        TxnCommand::List { json } => {
            let mut report = TxnReport::default();
            for (_, conn) in target.masters().await? {
                let part = conn.list_transactions().await?;
                report.committed += part.committed;
                report.rolled_back += part.rolled_back;
                report.checked += part.checked;
                report.expired += part.expired;
                report.pending.extend(part.pending);
            }
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
