//! Alipay moves 10,000 to Yu'e Bao: the debit is a local database
//! transaction and the credit a message; both happen or neither. The half
//! message is stored first (invisible), the local transaction runs, and the
//! message is committed or rolled back. The transfer with an unknown outcome
//! is settled later when the broker asks the checker, which looks at the
//! (here: in-memory) ledger.
//!
//! Run a broker (`cargo run --release --bin brookd`), then:
//! `cargo run -p brook-client --example transaction`

use brook_client::{Connection, Message, SendAck, StoredMessage, TransactionProducer, TxnOutcome};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), brook_client::ClientError> {
    let addr = std::env::var("BROOK_ADDR").unwrap_or_else(|_| "127.0.0.1:10911".into());
    Connection::connect(&addr).await?.create_topic("example-transfers", 2).await?;
    // The "database": transfer id → debited?
    let ledger: Arc<Mutex<HashMap<String, bool>>> = Arc::default();
    let executor = {
        let ledger = ledger.clone();
        move |msg: &Message, _: &SendAck| {
            let id = msg.keys.first().cloned().unwrap_or_default();
            let body = String::from_utf8_lossy(&msg.body).to_string();
            match body.as_str() {
                // The debit fails: nothing is delivered.
                b if b.contains("insufficient") => TxnOutcome::Rollback,
                // The debit commits, but the process "cannot tell" yet.
                b if b.contains("slow") => {
                    ledger.lock().map(|mut l| l.insert(id, true)).ok();
                    TxnOutcome::Unknown
                }
                _ => {
                    ledger.lock().map(|mut l| l.insert(id, true)).ok();
                    TxnOutcome::Commit
                }
            }
        }
    };
    let checker = {
        let ledger = ledger.clone();
        move |msg: &StoredMessage| {
            let id = msg.message.keys.first().cloned().unwrap_or_default();
            let debited = ledger.lock().map(|l| l.get(&id).copied().unwrap_or(false)).unwrap_or(false);
            println!("broker asked about {id}: debited = {debited}");
            if debited {
                TxnOutcome::Commit
            } else {
                TxnOutcome::Rollback
            }
        }
    };
    let producer = TransactionProducer::new(&addr, "example-bank", executor, checker).await?;
    for (id, body) in
        [("t1", "credit 10000 to yuebao"), ("t2", "credit 500: insufficient funds"), ("t3", "credit 42, slow")]
    {
        let msg = Message::new("example-transfers", body).with_key(id);
        // A short wait before the broker checks the unknown one.
        let (ack, outcome) = producer.send_with_timeout(msg, Some(Duration::from_secs(1))).await?;
        println!("{id}: half {} → {outcome:?}", ack.msg_id);
    }
    // Stay connected long enough to answer the check of t3.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let report = Connection::connect(&addr).await?.list_transactions().await?;
    println!(
        "committed {}, rolled back {}, checked {}, pending {}",
        report.committed,
        report.rolled_back,
        report.checked,
        report.pending.len()
    );
    producer.close();
    Ok(())
}
