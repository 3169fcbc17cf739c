//! Prints every record of a topic that exists now, then exits.
//!
//! ```text
//! cargo run -p runnel-client --example consume -- TOPIC [SC_ADDRESS]
//! ```
//!
//! Without an address it uses the `local` profile (the cluster
//! `runnel cluster start` runs).

use runnel_client::{ConsumerConfig, Profiles, RunnelClient, StartFrom, runnel_home};
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
        .ok_or("usage: consume TOPIC [SC_ADDRESS]")?
        .parse()?;
    let sc_addr = match args.next() {
        Some(addr) => addr,
        None => Profiles::load(&runnel_home()?)?.get("local")?.sc_addr,
    };
    let client = RunnelClient::connect(&sc_addr).await?;
    let config = ConsumerConfig {
        start: StartFrom::Beginning,
        stop_at_end: true,
        ..ConsumerConfig::default()
    };
    let mut consumer = client.consumer(&topic, config).await?;
    while let Some(record) = consumer.next().await {
        let record = record?;
        let key = record.key.as_deref().map(String::from_utf8_lossy);
        println!(
            "partition {} offset {} key {:?}: {}",
            record.partition,
            record.offset,
            key,
            String::from_utf8_lossy(&record.value)
        );
    }
    Ok(())
}
