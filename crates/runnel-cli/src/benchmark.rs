//! `runnel benchmark produce|consume|e2e`: throughput and latency against
//! a running cluster, through the same client library users have.
//!
//! - `produce`: producers send `--total-bytes` (or for `--duration`) as
//!   fast as acknowledged, or at `--rate-limit`; latency is from `send` to
//!   the delivery result.
//! - `consume`: the data set is produced first, then consumers read it
//!   from the beginning (the partitions split between them).
//! - `e2e`: consumers wait at the end while producers send; latency is
//!   from the moment a record is handed to the producer (a clock stamped
//!   in its first 8 bytes) to its delivery to a consumer.
//!
//! With the local cluster (`runnel cluster start`), the server processes'
//! CPU time during the run and their peak resident memory are read from
//! `/proc` and reported per GB moved.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use runnel_client::{
    Acks, ConsumerConfig, ProducerConfig, ProducerRecord, RunnelClient, StartFrom, runnel_home,
};
use runnel_metadata::{TopicConfig, TopicSpec};
use runnel_types::{ByteSize, Duration, FlushPolicy, PartitionId, TopicName};
use runnel_wire::Compression;
use serde_json::{Value, json};

use crate::{CommandResult, Output};

/// Deliveries each producer awaits at once (split over the partitions);
/// sending pauses beyond this.
const MAX_PENDING_DELIVERIES: usize = 100_000;
/// Bytes at the start of each value that carry its send time.
const STAMP_LEN: usize = 8;
/// Latencies are recorded from 1 µs to 1 hour with 3 significant digits.
const LATENCY_MAX_US: u64 = 3_600_000_000;

#[derive(Debug, Subcommand)]
pub enum BenchmarkCommand {
    /// Produce records as fast as the cluster takes them (or at a rate).
    Produce(BenchArgs),
    /// Produce a data set, then read it back from the beginning.
    Consume(BenchArgs),
    /// Produce and consume at once; latency from send to delivery.
    E2e(BenchArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Replicas of each partition.
    #[arg(long, default_value_t = 1)]
    replication: u16,
    /// Producer tasks, each with its own producer.
    #[arg(long, default_value_t = 1)]
    producers: u32,
    /// Consumers; the partitions are split between them.
    #[arg(long, default_value_t = 1)]
    consumers: u32,
    /// Bytes of each record's value.
    #[arg(long, default_value = "1000B")]
    record_size: ByteSize,
    /// Bytes of values to send in all (default 256MiB unless --duration).
    #[arg(long, conflicts_with = "duration")]
    total_bytes: Option<ByteSize>,
    /// Send for this long instead of a number of bytes.
    #[arg(long)]
    duration: Option<Duration>,
    /// Bytes of values per second, all producers together (e.g. 100MB).
    #[arg(long)]
    rate_limit: Option<ByteSize>,
    /// Give each record a key (its number), so records spread by key hash
    /// instead of round robin.
    #[arg(long)]
    keyed: bool,
    /// Largest batch.
    #[arg(long, default_value = "1MiB")]
    batch_size: ByteSize,
    /// How long a batch waits for more records.
    #[arg(long, default_value = "5ms")]
    linger: Duration,
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// When a batch counts as delivered: all, leader or none.
    #[arg(long, default_value = "all")]
    acks: Acks,
    /// The topic's flush policy: always, interval=MS or os.
    #[arg(long, default_value = "always")]
    flush: FlushPolicy,
    /// Keep the benchmark topic afterwards.
    #[arg(long)]
    keep: bool,
    #[arg(short = 'O', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Produce,
    Consume,
    EndToEnd,
}

pub async fn run(profile: Option<String>, command: BenchmarkCommand) -> CommandResult {
    let (args, mode) = match command {
        BenchmarkCommand::Produce(args) => (args, Mode::Produce),
        BenchmarkCommand::Consume(args) => (args, Mode::Consume),
        BenchmarkCommand::E2e(args) => (args, Mode::EndToEnd),
    };
    if args.producers == 0 || args.consumers == 0 || args.partitions == 0 {
        return Err("--producers, --consumers and --partitions must be at least 1".into());
    }
    if mode != Mode::Produce && args.consumers > args.partitions {
        return Err(format!(
            "{} consumers need at least as many partitions; use --partitions {}",
            args.consumers, args.consumers
        )
        .into());
    }
    if mode == Mode::EndToEnd && (args.record_size.as_u64() as usize) < STAMP_LEN {
        return Err(format!(
            "e2e records carry an {STAMP_LEN}-byte clock; use --record-size 8B or more"
        )
        .into());
    }
    let client = crate::admin::connect(profile).await?;
    let topic = TopicName::new(format!("benchmark-{}", std::process::id()))?;
    client
        .admin()
        .create_topic(TopicSpec {
            name: topic.clone(),
            partitions: args.partitions,
            replication_factor: args.replication,
            config: TopicConfig {
                flush: args.flush,
                compression: args.compression,
                retention_time: None,
                ..TopicConfig::default()
            },
        })
        .await?;
    let ready = client
        .wait_for_metadata(
            |view| {
                view.partitions_of(&topic)
                    .filter(|partition| view.leader_address(&partition.spec.key).is_some())
                    .count()
                    == args.partitions as usize
            },
            std::time::Duration::from_secs(30),
        )
        .await;
    let result = match ready {
        Ok(_) => measure(&client, &topic, &args, mode).await,
        Err(error) => Err(error.into()),
    };
    if !args.keep {
        client.admin().delete_topic(&topic).await?;
    }
    let report = result?;
    match args.output {
        Output::Json => println!("{report}"),
        Output::Text => {
            for (name, value) in report.as_object().expect("a JSON object") {
                println!("{name:>32}: {value}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What producers and consumers share while a run lasts.
#[derive(Debug)]
struct Run {
    /// Clock of the send stamps in e2e values.
    epoch: Instant,
    record_size: usize,
    /// Records every producer together should send; `u64::MAX` when
    /// sending for a duration.
    records_wanted: u64,
    /// Records handed to producers so far.
    records_sent: AtomicU64,
    progress: ProgressBar,
}

async fn measure(
    client: &RunnelClient,
    topic: &TopicName,
    args: &BenchArgs,
    mode: Mode,
) -> Result<Value, Box<dyn std::error::Error>> {
    let record_size = args.record_size.as_u64().max(1) as usize;
    let records_wanted = match (args.duration, args.total_bytes) {
        (Some(_), _) => u64::MAX,
        (None, total) => {
            (total.unwrap_or(ByteSize(256 << 20)).as_u64() / record_size as u64).max(1)
        }
    };
    let server = ServerUsage::sample();
    let progress = if records_wanted == u64::MAX {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::new(records_wanted)
    };
    progress.set_style(ProgressStyle::with_template(
        "{spinner} {msg} {pos}/{len} records {per_sec} eta {eta}",
    )?);
    let run = Arc::new(Run {
        epoch: Instant::now(),
        record_size,
        records_wanted,
        records_sent: AtomicU64::new(0),
        progress,
    });

    let mut report = json!({
        "mode": match mode { Mode::Produce => "produce", Mode::Consume => "consume", Mode::EndToEnd => "e2e" },
        "partitions": args.partitions,
        "producers": args.producers,
        "consumers": if mode == Mode::Produce { 0 } else { args.consumers },
        "record_size": record_size,
        "batch_size": args.batch_size.as_u64(),
        "compression": args.compression.name(),
        "flush": args.flush.to_string(),
        "acks": args.acks.as_str(),
        "replication": args.replication,
    });

    let consumers = if mode == Mode::EndToEnd {
        Some(start_consumers(client, topic, args, StartFrom::End, Arc::clone(&run)).await?)
    } else {
        None
    };
    run.progress.set_message("producing");
    let started = Instant::now();
    let acks = produce(client, topic, args, mode, Arc::clone(&run)).await?;
    let produce_seconds = started.elapsed().as_secs_f64();
    let records = run.records_sent.load(Ordering::Relaxed);
    let bytes = records as f64 * record_size as f64;
    report["records"] = json!(records);
    report["produce_seconds"] = json!(produce_seconds);
    report["produce_records_per_second"] = json!(records as f64 / produce_seconds);
    report["produce_mb_per_second"] = json!(bytes / produce_seconds / 1e6);
    add_percentiles(&mut report, "ack_latency_ms", &acks);

    let mut moved = bytes;
    match (mode, consumers) {
        (Mode::EndToEnd, Some(consumers)) => {
            run.progress.set_message("draining");
            let latencies = finish_consumers(client, topic, args, consumers).await?;
            add_percentiles(&mut report, "e2e_latency_ms", &latencies);
            moved += bytes;
        }
        (Mode::Consume, _) => {
            run.progress.set_message("consuming");
            run.progress.set_position(0);
            let started = Instant::now();
            let consumers =
                start_consumers(client, topic, args, StartFrom::Beginning, Arc::clone(&run))
                    .await?;
            finish_consumers(client, topic, args, consumers).await?;
            let seconds = started.elapsed().as_secs_f64();
            report["consume_seconds"] = json!(seconds);
            report["consume_records_per_second"] = json!(records as f64 / seconds);
            report["consume_mb_per_second"] = json!(bytes / seconds / 1e6);
            moved += bytes;
        }
        _ => {}
    }
    run.progress.finish_and_clear();
    if let Some(before) = server {
        before.report(&mut report, moved);
    }
    Ok(report)
}

/// Runs the producers; returns their acknowledgement latencies (µs).
async fn produce(
    client: &RunnelClient,
    topic: &TopicName,
    args: &BenchArgs,
    mode: Mode,
    run: Arc<Run>,
) -> Result<Histogram<u64>, Box<dyn std::error::Error>> {
    let config = ProducerConfig {
        batch_size: args.batch_size.as_u64() as usize,
        linger: args.linger.to_std(),
        compression: Some(args.compression),
        acks: args.acks,
        ..ProducerConfig::default()
    };
    let rate_per_producer = args
        .rate_limit
        .map(|rate| rate.as_u64() as f64 / f64::from(args.producers));
    let deadline = args
        .duration
        .map(|duration| Instant::now() + duration.to_std());
    let partitions = args.partitions;
    // Only e2e needs each record stamped (a copy per record); otherwise
    // every record shares one value.
    let stamped = mode == Mode::EndToEnd;
    let mut tasks = Vec::new();
    for producer_index in 0..args.producers {
        let producer = client.producer(topic, config.clone()).await?;
        let run = Arc::clone(&run);
        let keyed = args.keyed;
        tasks.push(tokio::spawn(async move {
            // A partition's deliveries complete in send order, so one
            // collector per partition awaiting them in order measures each
            // exactly.
            let mut collectors = Vec::new();
            let mut queues = Vec::new();
            for _ in 0..partitions {
                let (queue, mut deliveries) =
                    tokio::sync::mpsc::channel::<(Instant, runnel_client::DeliveryFuture)>(
                        (MAX_PENDING_DELIVERIES / partitions as usize).max(1),
                    );
                queues.push(queue);
                collectors.push(tokio::spawn(async move {
                    let mut latencies = histogram();
                    while let Some((handed, delivery)) = deliveries.recv().await {
                        delivery.await?;
                        record_latency(&mut latencies, handed.elapsed());
                    }
                    Ok::<_, runnel_client::ProduceError>(latencies)
                }));
            }
            let filler = Bytes::from(vec![b'r'; run.record_size]);
            let started = Instant::now();
            let mut sent_here = 0u64;
            loop {
                let number = run.records_sent.fetch_add(1, Ordering::Relaxed);
                let out_of_time = deadline.is_some_and(|deadline| Instant::now() >= deadline);
                if number >= run.records_wanted || out_of_time {
                    run.records_sent.fetch_sub(1, Ordering::Relaxed);
                    break;
                }
                if let Some(rate) = rate_per_producer {
                    let due = started
                        + std::time::Duration::from_secs_f64(
                            (sent_here * run.record_size as u64) as f64 / rate,
                        );
                    tokio::time::sleep_until(due.into()).await;
                }
                let value = if stamped {
                    let mut value = filler.to_vec();
                    let stamp = run.epoch.elapsed().as_nanos() as u64;
                    value[..STAMP_LEN].copy_from_slice(&stamp.to_be_bytes());
                    Bytes::from(value)
                } else {
                    filler.clone()
                };
                // Partitions chosen here as the producer would (key hash,
                // or round robin offset per producer), to know which
                // collector awaits the delivery.
                let key = keyed.then(|| Bytes::from(number.to_string()));
                let partition = match &key {
                    Some(key) => runnel_client::key_partition(key, partitions),
                    None => PartitionId(
                        ((sent_here + u64::from(producer_index)) % u64::from(partitions)) as u32,
                    ),
                };
                let record = ProducerRecord {
                    key,
                    value,
                    partition: Some(partition),
                    ..ProducerRecord::default()
                };
                let handed = Instant::now();
                let delivery = producer.send_record(record).await?;
                if queues[partition.0 as usize]
                    .send((handed, delivery))
                    .await
                    .is_err()
                {
                    break;
                }
                sent_here += 1;
                run.progress.inc(1);
            }
            producer.flush().await?;
            drop(queues);
            let mut latencies = histogram();
            for collector in collectors {
                latencies.add(collector.await??)?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(latencies)
        }));
    }
    let mut all = histogram();
    for task in tasks {
        let latencies = task.await?.map_err(|error| error.to_string())?;
        all.add(latencies)?;
    }
    Ok(all)
}

type ConsumerTask = tokio::task::JoinHandle<Result<Histogram<u64>, String>>;

/// Where each partition ends once the producers are done; `None` while
/// they are still sending.
type Ends = Option<BTreeMap<PartitionId, i64>>;

/// Consumers reading the partitions split between them.
struct Consumers {
    tasks: Vec<ConsumerTask>,
    ends: tokio::sync::watch::Sender<Ends>,
}

/// Starts the consumers. From the beginning they stop by themselves at the
/// end of what is there; from the end (e2e) they stop once they reach the
/// ends [`finish_consumers`] gives them, measuring each record's latency.
async fn start_consumers(
    client: &RunnelClient,
    topic: &TopicName,
    args: &BenchArgs,
    start: StartFrom,
    run: Arc<Run>,
) -> Result<Consumers, Box<dyn std::error::Error>> {
    let (ends, _) = tokio::sync::watch::channel(None);
    let stamped = start == StartFrom::End;
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for index in 0..args.consumers {
        let partitions: Vec<PartitionId> = (index..args.partitions)
            .step_by(args.consumers as usize)
            .map(PartitionId)
            .collect();
        let mut consumer = client
            .consumer(
                topic,
                ConsumerConfig {
                    partitions: Some(partitions.clone()),
                    start,
                    stop_at_end: !stamped,
                    ..ConsumerConfig::default()
                },
            )
            .await?;
        let mut ends = ends.subscribe();
        let run = Arc::clone(&run);
        let received = Arc::clone(&received);
        tasks.push(tokio::spawn(async move {
            let mut latencies = histogram();
            // The topic is new: every partition starts at offset 0.
            let mut positions: BTreeMap<PartitionId, i64> =
                partitions.iter().map(|&partition| (partition, 0)).collect();
            loop {
                let reached = ends.borrow_and_update().as_ref().is_some_and(
                    |ends: &BTreeMap<PartitionId, i64>| {
                        positions.iter().all(|(partition, position)| {
                            ends.get(partition).is_none_or(|end| position >= end)
                        })
                    },
                );
                if reached {
                    return Ok(latencies);
                }
                // Records as they arrive together: the work per record is
                // only what the benchmark measures.
                let batch = tokio::select! {
                    batch = consumer.next_batch() => batch,
                    changed = ends.changed() => {
                        changed.map_err(|_| "the benchmark ended early".to_string())?;
                        continue;
                    }
                };
                let Some(batch) = batch else {
                    // A stop-at-end consumer has read everything.
                    return Ok(latencies);
                };
                let batch = batch.map_err(|error| error.to_string())?;
                let Some(last) = batch.last() else {
                    continue;
                };
                positions.insert(last.partition, last.offset.0 + 1);
                if stamped {
                    let now = run.epoch.elapsed().as_nanos() as u64;
                    for record in batch
                        .iter()
                        .filter(|record| record.value.len() >= STAMP_LEN)
                    {
                        let stamp = u64::from_be_bytes(
                            record.value[..STAMP_LEN].try_into().expect("eight bytes"),
                        );
                        record_latency(
                            &mut latencies,
                            std::time::Duration::from_nanos(now.saturating_sub(stamp)),
                        );
                    }
                } else {
                    let count = batch.len() as u64;
                    run.progress
                        .set_position(received.fetch_add(count, Ordering::Relaxed) + count);
                }
            }
        }));
    }
    Ok(Consumers { tasks, ends })
}

/// Tells the consumers where the partitions end now that the producers
/// are done, and waits for them.
async fn finish_consumers(
    client: &RunnelClient,
    topic: &TopicName,
    args: &BenchArgs,
    consumers: Consumers,
) -> Result<Histogram<u64>, Box<dyn std::error::Error>> {
    let mut ends = BTreeMap::new();
    for partition in (0..args.partitions).map(PartitionId) {
        let end = client
            .list_offset(topic, partition, runnel_client::OffsetQuery::End)
            .await?;
        ends.insert(partition, end.offset.0);
    }
    consumers.ends.send_replace(Some(ends));
    let mut all = histogram();
    for task in consumers.tasks {
        all.add(task.await??)?;
    }
    Ok(all)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

fn record_latency(histogram: &mut Histogram<u64>, latency: std::time::Duration) {
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

/// CPU time of the local cluster's processes at the start of a run.
#[derive(Debug)]
struct ServerUsage {
    /// Process name, pid, CPU seconds so far.
    processes: Vec<(String, i32, f64)>,
}

impl ServerUsage {
    /// `None` unless the local cluster's pid files are there.
    fn sample() -> Option<ServerUsage> {
        let run_dir: PathBuf = runnel_home().ok()?.join("local").join("run");
        let mut processes = Vec::new();
        for entry in fs::read_dir(run_dir).ok()?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = name.strip_suffix(".pid") else {
                continue;
            };
            let Some(pid) = fs::read_to_string(entry.path())
                .ok()
                .and_then(|text| text.trim().parse().ok())
            else {
                continue;
            };
            if let Some(cpu) = cpu_seconds(pid) {
                processes.push((name.to_string(), pid, cpu));
            }
        }
        processes.sort_by(|a, b| a.0.cmp(&b.0));
        (!processes.is_empty()).then_some(ServerUsage { processes })
    }

    fn report(&self, report: &mut Value, bytes_moved: f64) {
        let mut total = 0.0;
        for (name, pid, before) in &self.processes {
            let Some(after) = cpu_seconds(*pid) else {
                continue;
            };
            total += after - before;
            report[format!("server_{name}_cpu_seconds")] = json!(after - before);
            if let Some(peak) = peak_rss_mib(*pid) {
                report[format!("server_{name}_peak_rss_mib")] = json!(peak);
            }
        }
        report["server_cpu_seconds"] = json!(total);
        report["server_cpu_seconds_per_gb"] = json!(total / (bytes_moved / 1e9));
    }
}

/// User and system CPU seconds of a process, from `/proc/PID/stat`.
fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15 (1-based).
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    Some((user + system) as f64 / ticks)
}

/// The largest resident set a process has had, from `/proc/PID/status`.
fn peak_rss_mib(pid: i32) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
