//! Joins consumer group `example-group` and prints what arrives on
//! `example-orders` (start the producer example to feed it). Ctrl-C leaves
//! the group cleanly, committing what was consumed.
//!
//! `cargo run -p brook-client --example consumer`

use brook_client::{Connection, ConsumeResult, PushConfig, PushConsumer, StartFrom, StoredMessage};

#[tokio::main]
async fn main() -> Result<(), brook_client::ClientError> {
    let addr = std::env::var("BROOK_ADDR").unwrap_or_else(|_| "127.0.0.1:10911".into());
    Connection::connect(&addr).await?.create_topic("example-orders", 4).await?;
    let config = PushConfig::new("example-group").subscribe("example-orders", None).start_from(StartFrom::Earliest);
    let consumer = PushConsumer::start(&addr, config, |m: StoredMessage| async move {
        println!(
            "queue {} offset {}: {} (keys {:?}, tag {:?})",
            m.queue,
            m.queue_offset,
            String::from_utf8_lossy(&m.message.body),
            m.message.keys,
            m.message.tags
        );
        ConsumeResult::Success
    })
    .await?;
    println!("consuming as {}; Ctrl-C to stop", consumer.member());
    let _ = tokio::signal::ctrl_c().await;
    consumer.shutdown().await;
    Ok(())
}
