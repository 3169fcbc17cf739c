//! Sends a few keyed records and prints where each was stored.
//!
//! ```text
//! cargo run -p runnel-client --example produce -- TOPIC [SC_ADDRESS]
//! ```
//!
//! Without an address it uses the `local` profile (the cluster
//! `runnel cluster start` runs). The topic must exist:
//! `runnel topic create TOPIC`.

use bytes::Bytes;
use runnel_client::{ProducerConfig, Profiles, RunnelClient, runnel_home};
use runnel_types::TopicName;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let topic: TopicName = args
        .next()
        .ok_or("usage: produce TOPIC [SC_ADDRESS]")?
        .parse()?;
    let sc_addr = match args.next() {
        Some(addr) => addr,
        None => Profiles::load(&runnel_home()?)?.get("local")?.sc_addr,
    };
    let client = RunnelClient::connect(&sc_addr).await?;
    let producer = client.producer(&topic, ProducerConfig::default()).await?;
    let mut deliveries = Vec::new();
    for index in 0..10 {
        let key = Bytes::from(format!("user-{}", index % 3));
        let value = Bytes::from(format!("event {index}"));
        deliveries.push(producer.send(Some(key), value).await?);
    }
    producer.flush().await?;
    for (index, delivery) in deliveries.into_iter().enumerate() {
        let stored = delivery.await?;
        println!(
            "event {index}: partition {} offset {}",
            stored.partition, stored.offset
        );
    }
    Ok(())
}
