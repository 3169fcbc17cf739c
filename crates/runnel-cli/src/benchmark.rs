//! `runnel benchmark produce|consume`: throughput and latency against a
//! running cluster, through the same client library users have.

use std::process::ExitCode;
use std::time::Instant;

use bytes::Bytes;
use clap::{Args, Subcommand};
use runnel_client::{ConsumerConfig, ProducerConfig, RunnelClient, StartFrom};
use runnel_metadata::{TopicConfig, TopicSpec};
use runnel_types::{ByteSize, Duration, FlushPolicy, TopicName};
use runnel_wire::Compression;
use serde_json::json;

use crate::{CommandResult, Output};

/// Acknowledgements awaited at once by the latency collector.
const MAX_IN_FLIGHT_RECORDS: usize = 200_000;

#[derive(Debug, Subcommand)]
pub enum BenchmarkCommand {
    /// Produce records as fast as the cluster takes them.
    Produce(BenchArgs),
    /// Produce a data set, then read it back from the beginning.
    Consume(BenchArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Bytes of each record's value.
    #[arg(long, default_value = "1000B")]
    record_size: ByteSize,
    /// Bytes of values to send in all.
    #[arg(long, default_value = "256MiB")]
    total_bytes: ByteSize,
    /// Largest batch.
    #[arg(long, default_value = "1MiB")]
    batch_size: ByteSize,
    /// How long a batch waits for more records.
    #[arg(long, default_value = "5ms")]
    linger: Duration,
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// The topic's flush policy: always, interval=MS or os.
    #[arg(long, default_value = "always")]
    flush: FlushPolicy,
    /// Keep the benchmark topic afterwards.
    #[arg(long)]
    keep: bool,
    #[arg(short = 'O', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub async fn run(profile: Option<String>, command: BenchmarkCommand) -> CommandResult {
    let client = crate::admin::connect(profile).await?;
    let (args, consume) = match command {
        BenchmarkCommand::Produce(args) => (args, false),
        BenchmarkCommand::Consume(args) => (args, true),
    };
    let topic = TopicName::new(format!("benchmark-{}", std::process::id()))?;
    client
        .admin()
        .create_topic(TopicSpec {
            name: topic.clone(),
            partitions: args.partitions,
            replication_factor: 1,
            config: TopicConfig {
                flush: args.flush,
                compression: args.compression,
                retention_time: None,
                ..TopicConfig::default()
            },
        })
        .await?;
    client
        .wait_for_metadata(
            |view| {
                view.partitions_of(&topic)
                    .filter(|p| view.leader_address(&p.spec.key).is_some())
                    .count()
                    == args.partitions as usize
            },
            std::time::Duration::from_secs(30),
        )
        .await?;
    let result = measure(&client, &topic, &args, consume).await;
    if !args.keep {
        client.admin().delete_topic(&topic).await?;
    }
    let report = result?;
    match args.output {
        Output::Json => println!("{report}"),
        Output::Text => {
            for (name, value) in report.as_object().expect("a JSON object") {
                println!("{name:>24}: {value}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn measure(
    client: &RunnelClient,
    topic: &TopicName,
    args: &BenchArgs,
    consume: bool,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let record_size = args.record_size.as_u64().max(1) as usize;
    let records = (args.total_bytes.as_u64() as usize / record_size).max(1);
    let producer = client
        .producer(
            topic,
            ProducerConfig {
                batch_size: args.batch_size.as_u64() as usize,
                linger: args.linger.to_std(),
                compression: Some(args.compression),
                ..ProducerConfig::default()
            },
        )
        .await?;
    let value = Bytes::from(vec![b'r'; record_size]);
    let (acks_tx, mut acks) = tokio::sync::mpsc::channel(MAX_IN_FLIGHT_RECORDS);
    let collector = tokio::spawn(async move {
        let mut latencies_us = Vec::new();
        while let Some((sent, delivery)) = acks.recv().await {
            let delivery: runnel_client::DeliveryFuture = delivery;
            delivery.await?;
            latencies_us.push(Instant::elapsed(&sent).as_micros() as u64);
        }
        Ok::<_, runnel_client::ProduceError>(latencies_us)
    });
    let started = Instant::now();
    for _ in 0..records {
        let delivery = producer.send(None, value.clone()).await?;
        if acks_tx.send((Instant::now(), delivery)).await.is_err() {
            break;
        }
    }
    drop(acks_tx);
    producer.flush().await?;
    let mut latencies_us = collector.await??;
    let produce_seconds = started.elapsed().as_secs_f64();
    let bytes = (records * record_size) as f64;
    latencies_us.sort_unstable();
    let percentile = |p: f64| {
        let at = ((latencies_us.len() as f64 * p).ceil() as usize).clamp(1, latencies_us.len());
        latencies_us[at - 1] as f64 / 1000.0
    };
    let mut report = json!({
        "records": records,
        "record_size": record_size,
        "produce_seconds": produce_seconds,
        "produce_records_per_second": records as f64 / produce_seconds,
        "produce_mb_per_second": bytes / produce_seconds / 1e6,
        "ack_latency_ms_p50": percentile(0.50),
        "ack_latency_ms_p99": percentile(0.99),
        "ack_latency_ms_max": percentile(1.0),
    });
    if consume {
        let started = Instant::now();
        let mut consumer = client
            .consumer(
                topic,
                ConsumerConfig {
                    start: StartFrom::Beginning,
                    stop_at_end: true,
                    ..ConsumerConfig::default()
                },
            )
            .await?;
        let mut consumed = 0usize;
        while let Some(record) = consumer.next().await {
            record?;
            consumed += 1;
        }
        if consumed != records {
            return Err(format!("consumed {consumed} records of {records} produced").into());
        }
        let seconds = started.elapsed().as_secs_f64();
        report["consume_seconds"] = json!(seconds);
        report["consume_records_per_second"] = json!(records as f64 / seconds);
        report["consume_mb_per_second"] = json!(bytes / seconds / 1e6);
    }
    Ok(report)
}
