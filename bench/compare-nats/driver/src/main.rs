//! The NATS JetStream side of `bench/compare-nats/run.sh`.
//!
//! Three subcommands, each printing one JSON object on stdout:
//!
//! - `produce`: (re)creates a file-storage, 1-replica stream and publishes
//!   `--count` records of `--record-size` bytes with up to `--batch`
//!   publishes awaiting their JetStream PubAck at once. Time runs from the
//!   first publish to the last PubAck.
//! - `consume`: reads the stream back from the first message with an
//!   ephemeral pull consumer (no acks) or an ordered push consumer, until
//!   `--count` messages have arrived. Time runs from creating the consumer
//!   to the last message, as `runnel benchmark consume` does. The stream is
//!   deleted afterwards unless `--keep`.
//! - `e2e`: (re)creates the stream, starts an ordered push consumer at the
//!   end of it, then publishes at a paced rate for `--duration-seconds`.
//!   Each payload starts with its send time (nanoseconds since the Unix
//!   epoch, big-endian u64), taken just before the publish; the consumer
//!   records now - stamp for every message. Pacing and the histogram follow
//!   `runnel benchmark e2e`: record i is due at start + i * size / rate,
//!   latencies in microseconds from 1 µs to 1 h with 3 significant digits,
//!   every message counted (no warm-up is dropped).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer, stream};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error + Send + Sync>;

const LATENCY_MAX_US: u64 = 3_600_000_000;
const STAMP_LEN: usize = 8;

const USAGE: &str = "\
usage:
  nats-bench-driver produce --url URL --stream NAME --subject SUBJ --record-size N --count N [--batch N]
  nats-bench-driver consume --url URL --stream NAME --count N [--consumer pull|ordered] [--pull-batch N] [--keep]
  nats-bench-driver e2e --url URL --rate-bytes-per-second N --record-size N --duration-seconds S
                        [--stream NAME] [--subject SUBJ] [--batch N] [--keep]

Defaults: --url nats://127.0.0.1:4222, --stream bench, --subject bench.data,
--record-size 1000, --batch 1024 publishes in flight, --consumer pull,
--pull-batch 1000 messages per pull request.";

#[derive(Debug)]
struct Opts {
    url: String,
    stream: String,
    subject: String,
    record_size: usize,
    count: u64,
    batch: usize,
    consumer: String,
    pull_batch: usize,
    rate: f64,
    duration: f64,
    keep: bool,
}

fn parse(args: &[String]) -> Result<Opts, Error> {
    let mut opts = Opts {
        url: "nats://127.0.0.1:4222".into(),
        stream: "bench".into(),
        subject: "bench.data".into(),
        record_size: 1000,
        count: 0,
        batch: 1024,
        consumer: "pull".into(),
        pull_batch: 1000,
        rate: 0.0,
        duration: 0.0,
        keep: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--keep" {
            opts.keep = true;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--url" => opts.url = value.clone(),
            "--stream" => opts.stream = value.clone(),
            "--subject" => opts.subject = value.clone(),
            "--record-size" => opts.record_size = value.parse()?,
            "--count" => opts.count = value.parse()?,
            "--batch" => opts.batch = value.parse()?,
            "--consumer" => opts.consumer = value.clone(),
            "--pull-batch" => opts.pull_batch = value.parse()?,
            "--rate-bytes-per-second" => opts.rate = value.parse()?,
            "--duration-seconds" => opts.duration = value.parse()?,
            _ => return Err(format!("unknown option {flag}\n{USAGE}").into()),
        }
    }
    if opts.batch == 0 || opts.pull_batch == 0 {
        return Err("--batch and --pull-batch must be at least 1".into());
    }
    Ok(opts)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let result = match parse(&args[1..]) {
        Err(error) => Err(error),
        Ok(opts) => match command.as_str() {
            "produce" => produce(&opts).await,
            "consume" => consume(&opts).await,
            "e2e" => e2e(&opts).await,
            _ => Err(format!("unknown subcommand {command}\n{USAGE}").into()),
        },
    };
    match result {
        Ok(report) => println!("{report}"),
        Err(error) => {
            eprintln!("nats-bench-driver {command}: {error}");
            std::process::exit(1);
        }
    }
}

async fn connect(opts: &Opts) -> Result<(async_nats::Client, jetstream::Context), Error> {
    let client = async_nats::ConnectOptions::new()
        // Room for a fast consumer's backlog and a pipelined producer.
        .subscription_capacity(1 << 20)
        .client_capacity(1 << 16)
        .connect(&opts.url)
        .await?;
    let context = jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(30))
        // At most --batch publishes await their PubAck at once; the next
        // publish waits for a permit.
        .max_ack_inflight(opts.batch)
        .backpressure_on_inflight(true)
        .build(client.clone());
    Ok((client, context))
}

/// Deletes the stream if it is there, then creates it empty: file storage,
/// one replica, no limits.
async fn fresh_stream(context: &jetstream::Context, opts: &Opts) -> Result<(), Error> {
    let _ = context.delete_stream(&opts.stream).await;
    context
        .create_stream(stream::Config {
            name: opts.stream.clone(),
            subjects: vec![opts.subject.clone()],
            storage: stream::StorageType::File,
            num_replicas: 1,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_bytes: -1,
            max_messages: -1,
            max_messages_per_subject: -1,
            max_message_size: -1,
            ..Default::default()
        })
        .await?;
    Ok(())
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

fn record_us(histogram: &mut Histogram<u64>, latency: Duration) {
    histogram.saturating_record((latency.as_micros() as u64).max(1));
}

fn add_percentiles(report: &mut Value, name: &str, latencies: &Histogram<u64>) {
    if latencies.is_empty() {
        return;
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    for (label, quantile) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99_9", 0.999)] {
        report[format!("{name}_{label}")] = json!(ms(latencies.value_at_quantile(quantile)));
    }
    report[format!("{name}_max")] = json!(ms(latencies.max()));
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

type PendingAck = (Instant, jetstream::context::PublishAckFuture);

/// Awaits every PubAck in publish order as it arrives, recording the time
/// from the publish call to the ack. The context's ack semaphore (the
/// `--batch` window) bounds how many are outstanding: a `PublishAckFuture`
/// holds its permit until it is awaited here.
fn ack_collector() -> (
    tokio::sync::mpsc::UnboundedSender<PendingAck>,
    tokio::task::JoinHandle<Result<Histogram<u64>, Error>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PendingAck>();
    let task = tokio::spawn(async move {
        let mut acks = histogram();
        while let Some((sent, ack)) = rx.recv().await {
            ack.await?;
            record_us(&mut acks, sent.elapsed());
        }
        Ok(acks)
    });
    (tx, task)
}

async fn produce(opts: &Opts) -> Result<Value, Error> {
    if opts.count == 0 {
        return Err("--count must be at least 1".into());
    }
    let (client, context) = connect(opts).await?;
    fresh_stream(&context, opts).await?;
    let payload = Bytes::from(vec![b'r'; opts.record_size]);
    let subject = async_nats::Subject::from(opts.subject.as_str());
    let (pending, collector) = ack_collector();
    let started = Instant::now();
    for _ in 0..opts.count {
        let sent = Instant::now();
        let ack = context.publish(subject.clone(), payload.clone()).await?;
        pending
            .send((sent, ack))
            .map_err(|_| "the ack collector stopped")?;
    }
    drop(pending);
    let acks = collector.await??;
    let seconds = started.elapsed().as_secs_f64();
    let bytes = opts.count as f64 * opts.record_size as f64;
    let info = context
        .get_stream(&opts.stream)
        .await?
        .info()
        .await?
        .clone();
    if info.state.messages != opts.count {
        return Err(format!(
            "the stream holds {} messages, {} were acknowledged",
            info.state.messages, opts.count
        )
        .into());
    }
    let mut report = json!({
        "system": "nats-jetstream",
        "mode": "produce",
        "records": opts.count,
        "record_size": opts.record_size,
        "in_flight": opts.batch,
        "seconds": seconds,
        "records_per_second": opts.count as f64 / seconds,
        "mb_per_second": bytes / seconds / 1e6,
        "stream_bytes": info.state.bytes,
    });
    add_percentiles(&mut report, "ack_latency_ms", &acks);
    client.flush().await?;
    Ok(report)
}

async fn consume(opts: &Opts) -> Result<Value, Error> {
    if opts.count == 0 {
        return Err("--count must be at least 1".into());
    }
    let (client, context) = connect(opts).await?;
    let stream = context.get_stream(&opts.stream).await?;
    let started = Instant::now();
    let mut received = 0u64;
    let mut bytes = 0u64;
    match opts.consumer.as_str() {
        "pull" => {
            let consumer: consumer::PullConsumer = stream
                .create_consumer(consumer::pull::Config {
                    deliver_policy: consumer::DeliverPolicy::All,
                    ack_policy: consumer::AckPolicy::None,
                    inactive_threshold: Duration::from_secs(60),
                    ..Default::default()
                })
                .await?;
            let mut messages = consumer
                .stream()
                .max_messages_per_batch(opts.pull_batch)
                .messages()
                .await?;
            while received < opts.count {
                let message = messages
                    .next()
                    .await
                    .ok_or("the pull consumer ended early")??;
                bytes += message.payload.len() as u64;
                received += 1;
            }
        }
        "ordered" => {
            let consumer = stream
                .create_consumer(consumer::push::OrderedConfig {
                    deliver_subject: client.new_inbox(),
                    deliver_policy: consumer::DeliverPolicy::All,
                    ..Default::default()
                })
                .await?;
            let mut messages = consumer.messages().await?;
            while received < opts.count {
                let message = messages
                    .next()
                    .await
                    .ok_or("the ordered consumer ended early")??;
                bytes += message.payload.len() as u64;
                received += 1;
            }
        }
        other => return Err(format!("--consumer {other}: use pull or ordered").into()),
    }
    let seconds = started.elapsed().as_secs_f64();
    if !opts.keep {
        context.delete_stream(&opts.stream).await?;
    }
    Ok(json!({
        "system": "nats-jetstream",
        "mode": "consume",
        "consumer": opts.consumer,
        "records": received,
        "seconds": seconds,
        "records_per_second": received as f64 / seconds,
        "mb_per_second": bytes as f64 / seconds / 1e6,
    }))
}

async fn e2e(opts: &Opts) -> Result<Value, Error> {
    if opts.rate <= 0.0 || opts.duration <= 0.0 {
        return Err("--rate-bytes-per-second and --duration-seconds must be positive".into());
    }
    if opts.record_size < STAMP_LEN {
        return Err(format!("--record-size must be at least {STAMP_LEN}").into());
    }
    let (client, context) = connect(opts).await?;
    fresh_stream(&context, opts).await?;
    let stream = context.get_stream(&opts.stream).await?;
    let consumer = stream
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    // The publisher tells the subscriber how many messages to expect once
    // it is done.
    let (total_tx, mut total_rx) = tokio::sync::watch::channel(None::<u64>);
    // Debugging aid: NATS_DRIVER_TRACE=FILE writes "send_ns latency_us" for
    // every message, to see when the slow ones happen.
    let trace_path = std::env::var_os("NATS_DRIVER_TRACE");
    let subscriber = tokio::spawn(async move {
        let mut latencies = histogram();
        let mut received = 0u64;
        let mut trace = Vec::new();
        loop {
            if total_rx
                .borrow_and_update()
                .is_some_and(|total| received >= total)
            {
                if let Some(path) = trace_path {
                    let text: String = trace
                        .iter()
                        .map(|(sent, us)| format!("{sent} {us}\n"))
                        .collect();
                    std::fs::write(path, text)?;
                }
                return Ok::<_, Error>((latencies, received));
            }
            let message = tokio::select! {
                message = messages.next() => message,
                changed = total_rx.changed() => {
                    changed.map_err(|_| "the publisher ended early")?;
                    continue;
                }
            };
            let message = message.ok_or("the ordered consumer ended early")??;
            let now = now_ns();
            if message.payload.len() >= STAMP_LEN {
                let stamp =
                    u64::from_be_bytes(message.payload[..STAMP_LEN].try_into().expect("8 bytes"));
                let latency = Duration::from_nanos(now.saturating_sub(stamp));
                record_us(&mut latencies, latency);
                if trace_path.is_some() {
                    trace.push((stamp, latency.as_micros() as u64));
                }
            }
            received += 1;
        }
    });

    let subject = async_nats::Subject::from(opts.subject.as_str());
    let filler = vec![b'r'; opts.record_size];
    let (pending, collector) = ack_collector();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(opts.duration);
    let mut sent = 0u64;
    loop {
        let due =
            started + Duration::from_secs_f64((sent * opts.record_size as u64) as f64 / opts.rate);
        if due >= deadline || Instant::now() >= deadline {
            break;
        }
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let mut value = BytesMut::from(&filler[..]);
        value[..STAMP_LEN].copy_from_slice(&now_ns().to_be_bytes());
        let handed = Instant::now();
        let ack = context.publish(subject.clone(), value.freeze()).await?;
        pending
            .send((handed, ack))
            .map_err(|_| "the ack collector stopped")?;
        sent += 1;
    }
    drop(pending);
    let acks = collector.await??;
    let produce_seconds = started.elapsed().as_secs_f64();
    total_tx.send_replace(Some(sent));
    let (latencies, received) = tokio::time::timeout(Duration::from_secs(120), subscriber)
        .await
        .map_err(|_| "the subscriber did not receive every message within 120 s")???;
    if !opts.keep {
        context.delete_stream(&opts.stream).await?;
    }
    let bytes = sent as f64 * opts.record_size as f64;
    let mut report = json!({
        "system": "nats-jetstream",
        "mode": "e2e",
        "records": sent,
        "received": received,
        "record_size": opts.record_size,
        "target_mb_per_second": opts.rate / 1e6,
        "produce_seconds": produce_seconds,
        "produce_mb_per_second": bytes / produce_seconds / 1e6,
    });
    add_percentiles(&mut report, "e2e_latency_ms", &latencies);
    add_percentiles(&mut report, "ack_latency_ms", &acks);
    Ok(report)
}
