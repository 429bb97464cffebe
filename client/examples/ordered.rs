//! Strict order per sharding key: each order's events (created, paid,
//! shipped) are sent with the order id as sharding key, so they land in one
//! queue; an orderly consumer then sees them in exactly that order.
//!
//! `cargo run -p brook-client --example ordered`

use brook_client::{Connection, ConsumeResult, Message, Producer, PushConfig, PushConsumer, StartFrom, StoredMessage};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), brook_client::ClientError> {
    let addr = std::env::var("BROOK_ADDR").unwrap_or_else(|_| "127.0.0.1:10911".into());
    Connection::connect(&addr).await?.create_topic("example-order-events", 4).await?;
    let producer = Producer::connect(&addr).await?;
    for order in 0..3 {
        for step in ["created", "paid", "shipped"] {
            let key = format!("order-{order}");
            let msg = Message::new("example-order-events", format!("{key} {step}")).with_key(key.clone());
            let ack = producer.send_ordered(msg, &key).await?;
            println!("sent {key} {step} -> queue {}", ack.queue);
        }
    }
    let config = PushConfig::new("example-ordered")
        .subscribe("example-order-events", None)
        .orderly(true)
        .start_from(StartFrom::Earliest);
    let consumer = PushConsumer::start(&addr, config, |m: StoredMessage| async move {
        println!("queue {} offset {}: {}", m.queue, m.queue_offset, String::from_utf8_lossy(&m.message.body));
        ConsumeResult::Success
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    consumer.shutdown().await;
    Ok(())
}
