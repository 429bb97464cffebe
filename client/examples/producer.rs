//! Sends a few messages round-robin over a topic's queues, one of them
//! without waiting for its ack, then prints the acks.
//!
//! Run a broker (`cargo run --release --bin brookd`), then:
//! `cargo run -p brook-client --example producer`

use brook_client::{Connection, Message, Producer};

#[tokio::main]
async fn main() -> Result<(), brook_client::ClientError> {
    let addr = std::env::var("BROOK_ADDR").unwrap_or_else(|_| "127.0.0.1:10911".into());
    Connection::connect(&addr).await?.create_topic("example-orders", 4).await?;
    let producer = Producer::connect(&addr).await?;
    for i in 0..5 {
        let msg = Message::new("example-orders", format!("order #{i} placed"))
            .with_key(format!("order-{i}"))
            .with_tags("created");
        let ack = producer.send(msg).await?;
        println!("sent order #{i}: id {} queue {} offset {}", ack.msg_id, ack.queue, ack.queue_offset);
    }
    let pending = producer.send_async(Message::new("example-orders", "sent without waiting"));
    let batch = (0..3).map(|i| Message::new("example-orders", format!("batch item {i}"))).collect();
    let acks = producer.send_batch(batch).await?;
    println!("batch of {} stored in queue {}", acks.len(), acks[0].queue);
    let ack = pending.await.map_err(|e| brook_client::ClientError::Connection(e.to_string()))??;
    println!("async send acknowledged at offset {}", ack.queue_offset);
    Ok(())
}
