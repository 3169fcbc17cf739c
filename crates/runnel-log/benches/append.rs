//! Append throughput of the partition log, measured beside a raw-file
//! baseline in the same run.
//!
//! Every data point appends pre-encoded batches of 1 KiB records to a fresh
//! log under one flush policy from 1 or more threads sharing an `Arc<Log>`,
//! then writes exactly the same bytes, the same number of times, with plain
//! sequential `write` calls into a fresh file with the matching fsync
//! cadence. The ratio of the two is the log's cost over the file system.
//! `docs/benchmarks.md` explains the table and holds the reference figures.
//!
//! A plain `harness = false` binary:
//! `cargo bench -p runnel-log --bench append -- --help`.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use runnel_log::{FlushPolicy, Log, LogConfig};
use runnel_types::LeaderEpoch;
use runnel_wire::Compression;
use runnel_wire::batch::BatchBuilder;

const RECORD_VALUE_BYTES: usize = 1024;
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// The cadence of the raw baseline that group commit is judged against.
const RAW_SYNC_BYTES: u64 = MIB as u64;
/// Environment variable read as extra arguments. `cargo bench -p runnel-log
/// -- --quick` would hand `--quick` to the library's libtest harness too,
/// which rejects it; `RUNNEL_LOG_BENCH=--quick cargo bench -p runnel-log`
/// reaches only this binary.
const ARGS_ENV: &str = "RUNNEL_LOG_BENCH";

const HELP: &str = "\
Append throughput of runnel-log beside a raw write baseline.

usage: cargo bench -p runnel-log --bench append -- [options]
       RUNNEL_LOG_BENCH=\"[options]\" cargo bench -p runnel-log
       (without --bench append, cargo also hands the options to the library's
       test harness, which rejects them; the variable reaches only this one)

  --quick               smoke run for CI: one pass, tiny totals, a few seconds
  --runs N              passes over every data point; the last table holds
                        the median of each cell (default 3, quick 1)
  --policy LIST         flush policies, comma-separated
                        (default always,interval=100,os)
  --batch LIST          batch sizes: 16k,256k,1m (default all three)
  --appenders LIST      concurrent appender threads (default 1,4)
  --seconds S           time limit per data point (default 1, quick 0.1)
  --max-mib M           byte limit per data point (default 1024, quick 8)
  --fresh-copy          copy a pristine batch into the append buffer before
                        every append, inside the timed loop
  --help                this text

Without --bench on the command line (cargo test --benches), runs as --quick.
";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::var(ARGS_ENV)
        .map(|value| value.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    args.extend(std::env::args().skip(1));
    // Test runners that enumerate tests first (cargo nextest) find none.
    if args.iter().any(|arg| arg == "--list") {
        return ExitCode::SUCCESS;
    }
    let options = match Options::parse(&args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{HELP}");
            return ExitCode::FAILURE;
        }
    };
    let scratch = scratch_root();
    print!("{}", describe_machine(&scratch));
    println!("{}", options.describe());
    run(&options, &scratch);
    ExitCode::SUCCESS
}

/// What to measure, from the command line.
#[derive(Debug, Clone)]
struct Options {
    policies: Vec<FlushPolicy>,
    batch_sizes: Vec<usize>,
    appenders: Vec<usize>,
    runs: usize,
    time_limit: Duration,
    max_bytes: u64,
    fresh_copy: bool,
    quick: bool,
}

impl Options {
    /// `None` when help was asked for.
    fn parse(args: &[String]) -> Result<Option<Options>, String> {
        // cargo passes --bench to bench targets; `cargo test --benches`
        // runs them without it, and a test run must stay short.
        let quick =
            args.iter().any(|arg| arg == "--quick") || !args.iter().any(|arg| arg == "--bench");
        let mut options = Options {
            policies: vec![
                FlushPolicy::Always,
                FlushPolicy::Interval { interval_ms: 100 },
                FlushPolicy::Os,
            ],
            batch_sizes: vec![16 * KIB, 256 * KIB, MIB],
            appenders: vec![1, 4],
            runs: if quick { 1 } else { 3 },
            time_limit: Duration::from_secs_f64(if quick { 0.1 } else { 1.0 }),
            max_bytes: if quick { 8 << 20 } else { 1 << 30 },
            fresh_copy: false,
            quick,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--bench" | "--quick" => {}
                "--help" | "-h" => return Ok(None),
                "--fresh-copy" => options.fresh_copy = true,
                "--runs" => options.runs = parse_count(&value("--runs")?, "--runs")?,
                "--policy" => {
                    options.policies = parse_list(&value("--policy")?, |item| item.parse())?;
                }
                "--batch" => options.batch_sizes = parse_list(&value("--batch")?, parse_size)?,
                "--appenders" => {
                    options.appenders = parse_list(&value("--appenders")?, |item| {
                        parse_count(item, "--appenders")
                    })?;
                }
                "--seconds" => {
                    let text = value("--seconds")?;
                    let seconds: f64 = text
                        .parse()
                        .ok()
                        .filter(|seconds: &f64| seconds.is_finite() && *seconds > 0.0)
                        .ok_or_else(|| format!("--seconds {text:?}: give a positive number"))?;
                    options.time_limit = Duration::from_secs_f64(seconds);
                }
                "--max-mib" => {
                    let mib = parse_count(&value("--max-mib")?, "--max-mib")?;
                    options.max_bytes = mib as u64 * MIB as u64;
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(Some(options))
    }

    fn describe(&self) -> String {
        format!(
            "mode: {}, {} pass(es), at most {} MiB or {:.1} s per data point{}{}\n",
            if self.quick { "quick" } else { "full" },
            self.runs,
            self.max_bytes >> 20,
            self.time_limit.as_secs_f64(),
            if self.fresh_copy {
                ", fresh copy of the batch before every append"
            } else {
                ", append buffer reused"
            },
            if self.quick {
                "\nquick: a smoke test of the code; its figures measure nothing"
            } else {
                ""
            },
        )
    }
}

fn parse_list<T>(text: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    let items = text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(parse)
        .collect::<Result<Vec<T>, String>>()?;
    if items.is_empty() {
        return Err(format!("empty list {text:?}"));
    }
    Ok(items)
}

fn parse_count(text: &str, name: &str) -> Result<usize, String> {
    text.parse()
        .ok()
        .filter(|&count| count > 0)
        .ok_or_else(|| format!("{name} {text:?}: give a whole number of at least 1"))
}

/// `16k`, `256k`, `1m` or a plain number of bytes; at least one record.
fn parse_size(text: &str) -> Result<usize, String> {
    let lower = text.to_ascii_lowercase();
    let (digits, unit) = match lower.strip_suffix('k') {
        Some(digits) => (digits, KIB),
        None => match lower.strip_suffix('m') {
            Some(digits) => (digits, MIB),
            None => (lower.as_str(), 1),
        },
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|count| count.checked_mul(unit))
        .filter(|&bytes| (RECORD_VALUE_BYTES..=8 * MIB).contains(&bytes))
        .ok_or_else(|| format!("batch size {text:?}: give e.g. 16k, 256k or 1m (1k to 8m)"))
}

/// One line of the table: what was measured and what it took.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    policy: FlushPolicy,
    batch_size: usize,
    appenders: usize,
}

impl Point {
    /// The raw cadence the log is compared with: the same fsync rhythm, or
    /// for group commit with several appenders, the reference of
    /// one fsync per MiB.
    fn cadence(&self) -> Cadence {
        match self.policy {
            FlushPolicy::Os => Cadence::Never,
            FlushPolicy::Interval { interval_ms } => Cadence::EveryMillis(interval_ms),
            FlushPolicy::Always if self.appenders == 1 => Cadence::EveryBatch,
            FlushPolicy::Always => Cadence::EveryBytes(RAW_SYNC_BYTES),
        }
    }
}

/// When the raw baseline calls `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cadence {
    Never,
    EveryBatch,
    EveryBytes(u64),
    EveryMillis(u64),
}

impl Cadence {
    fn describe(&self) -> String {
        match self {
            Cadence::Never => "write".to_string(),
            Cadence::EveryBatch => "write+fdatasync/batch".to_string(),
            Cadence::EveryBytes(bytes) => format!("write+fdatasync/{}MiB", bytes >> 20),
            Cadence::EveryMillis(millis) => format!("write+fdatasync/{millis}ms"),
        }
    }
}

/// The figures of one data point in one pass.
#[derive(Debug, Clone, Copy)]
struct Sample {
    batch_bytes: usize,
    batches: u64,
    log_seconds: f64,
    raw_seconds: f64,
    fsyncs: u64,
    raw_fsyncs: u64,
}

impl Sample {
    fn bytes(&self) -> f64 {
        self.batches as f64 * self.batch_bytes as f64
    }

    fn log_mb_per_second(&self) -> f64 {
        self.bytes() / self.log_seconds / 1e6
    }

    fn raw_mb_per_second(&self) -> f64 {
        self.bytes() / self.raw_seconds / 1e6
    }

    fn ratio(&self) -> f64 {
        self.raw_seconds / self.log_seconds
    }
}

fn run(options: &Options, scratch: &Path) {
    let mut points = Vec::new();
    for &policy in &options.policies {
        for &batch_size in &options.batch_sizes {
            for &appenders in &options.appenders {
                points.push(Point {
                    policy,
                    batch_size,
                    appenders,
                });
            }
        }
    }
    let batches: Vec<(usize, Vec<u8>)> = options
        .batch_sizes
        .iter()
        .map(|&size| (size, producer_batch(size / RECORD_VALUE_BYTES)))
        .collect();
    for (size, bytes) in &batches {
        println!(
            "batch {}: {} records of {} B, {} B encoded",
            size_label(*size),
            size / RECORD_VALUE_BYTES,
            RECORD_VALUE_BYTES,
            bytes.len()
        );
    }
    println!();

    let started = Instant::now();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); points.len()];
    for pass in 1..=options.runs {
        println!("pass {pass} of {}", options.runs);
        println!("{}", table_header());
        for (point, point_samples) in points.iter().zip(&mut samples) {
            let batch = &batches
                .iter()
                .find(|(size, _)| *size == point.batch_size)
                .expect("a batch per size")
                .1;
            let sample = measure(options, scratch, point, batch);
            println!("{}", table_row(point, &[sample]));
            point_samples.push(sample);
        }
        println!();
    }
    if options.runs > 1 {
        println!(
            "median of {} passes (ratio: median of per-pass ratios)",
            options.runs
        );
        println!("{}", table_header());
        for (point, point_samples) in points.iter().zip(&samples) {
            println!("{}", table_row(point, point_samples));
        }
        println!();
    }
    println!(
        "MB = 10^6 bytes. ratio = log MB/s / raw MB/s. Took {:.1} s.",
        started.elapsed().as_secs_f64()
    );
}

/// Writes and deletes a file the way the data point will, untimed, so that
/// the log, measured first, does not pay alone for bringing memory into the
/// page cache. Without it the first of two identical raw runs came out 6 to
/// 19 % slower than the second on the reference VM (which reports free
/// pages to its host); a warm-up from a zeroed buffer did not remove that.
fn warm_up(dir: &Path, batch: &[u8], count: u64) {
    let path = dir.join("warm-up");
    run_raw(&path, batch, count, Cadence::Never);
    fs::remove_file(&path).expect("removing the warm-up file");
    settle(dir);
}

/// Commits the file system journal holding the deletions just made in
/// `dir`, untimed. On a file system mounted with `discard` the freed blocks
/// are discarded at that commit, which would otherwise land in the next
/// measurement's first fsync.
fn settle(dir: &Path) {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .expect("syncing the scratch directory");
}

/// Measures one data point: the log first, bounded by time and bytes, then
/// the raw baseline writing exactly what the log wrote.
fn measure(options: &Options, scratch: &Path, point: &Point, batch: &[u8]) -> Sample {
    let dir = tempfile::Builder::new()
        .prefix("append-")
        .tempdir_in(scratch)
        .expect("creating a scratch directory for the data point");
    let quota = options.max_bytes / batch.len() as u64;
    warm_up(dir.path(), batch, quota);
    let per_appender = (quota / point.appenders as u64).max(1);
    let log_run = run_log(
        &dir.path().join("log"),
        point,
        batch,
        per_appender,
        options.time_limit,
        options.fresh_copy,
    );
    // The log's files go before the baseline starts, so neither run pays
    // for the other's dirty pages or freed blocks.
    fs::remove_dir_all(dir.path().join("log")).expect("removing the log");
    settle(dir.path());
    let raw_path = dir.path().join("raw");
    let raw_run = run_raw(&raw_path, batch, log_run.batches, point.cadence());
    fs::remove_file(&raw_path).expect("removing the raw file");
    settle(dir.path());
    Sample {
        batch_bytes: batch.len(),
        batches: log_run.batches,
        log_seconds: log_run.seconds,
        raw_seconds: raw_run.seconds,
        fsyncs: log_run.fsyncs,
        raw_fsyncs: raw_run.fsyncs,
    }
}

#[derive(Debug)]
struct Run {
    batches: u64,
    seconds: f64,
    fsyncs: u64,
}

/// Appends `batch` from `point.appenders` threads, each until it has
/// appended `per_appender` batches or `time_limit` has passed.
fn run_log(
    dir: &Path,
    point: &Point,
    batch: &[u8],
    per_appender: u64,
    time_limit: Duration,
    fresh_copy: bool,
) -> Run {
    let config = LogConfig {
        flush: point.policy,
        ..LogConfig::default()
    };
    let (log, _) = Log::open(dir, config).expect("opening the log");
    let log = Arc::new(log);
    let start_line = Arc::new(Barrier::new(point.appenders + 1));
    let appenders: Vec<_> = (0..point.appenders)
        .map(|_| {
            let log = Arc::clone(&log);
            let start_line = Arc::clone(&start_line);
            let pristine = batch.to_vec();
            thread::spawn(move || {
                // append_as_leader rewrites only the base offset and the
                // leader epoch, both outside the CRC, so the same buffer is
                // a valid producer batch again for the next append.
                let mut buffer = pristine.clone();
                start_line.wait();
                let deadline = Instant::now() + time_limit;
                let mut appended = 0;
                while appended < per_appender && Instant::now() < deadline {
                    if fresh_copy {
                        buffer.copy_from_slice(&pristine);
                    }
                    log.append_as_leader(&mut buffer, LeaderEpoch(1), now_ms())
                        .expect("append");
                    appended += 1;
                }
                appended
            })
        })
        .collect();
    start_line.wait();
    let start = Instant::now();
    let appended: u64 = appenders
        .into_iter()
        .map(|appender| appender.join().expect("appender thread"))
        .sum();
    let seconds = start.elapsed().as_secs_f64();
    let stats = log.stats();
    let batches = stats
        .batches_appended
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(batches, appended, "the log counted every append");
    Run {
        batches,
        seconds,
        fsyncs: stats.fsyncs.load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// Writes `batch` `count` times to a new file with `write`, calling
/// `fdatasync` as `cadence` says. With a byte or batch cadence the tail is
/// synced too, as the log's `always` leaves nothing unsynced.
fn run_raw(path: &Path, batch: &[u8], count: u64, cadence: Cadence) -> Run {
    let mut file = File::create(path).expect("creating the raw file");
    let mut fsyncs = 0;
    let start = Instant::now();
    let mut last_sync = start;
    let mut unsynced_bytes = 0u64;
    for _ in 0..count {
        // Like the log's tick, the interval runs from the clock reading
        // taken before the write that triggered the previous sync, so the
        // time a sync takes counts towards the next interval.
        let written_at = match cadence {
            Cadence::EveryMillis(_) => Instant::now(),
            _ => start,
        };
        file.write_all(batch).expect("raw write");
        unsynced_bytes += batch.len() as u64;
        let due = match cadence {
            Cadence::Never => false,
            Cadence::EveryBatch => true,
            Cadence::EveryBytes(bytes) => unsynced_bytes >= bytes,
            Cadence::EveryMillis(millis) => {
                written_at.duration_since(last_sync) >= Duration::from_millis(millis)
            }
        };
        if due {
            file.sync_data().expect("raw fdatasync");
            fsyncs += 1;
            unsynced_bytes = 0;
            last_sync = written_at;
        }
    }
    if matches!(cadence, Cadence::EveryBatch | Cadence::EveryBytes(_)) && unsynced_bytes > 0 {
        file.sync_data().expect("raw fdatasync");
        fsyncs += 1;
    }
    Run {
        batches: count,
        seconds: start.elapsed().as_secs_f64(),
        fsyncs,
    }
}

/// A producer batch of `records` records with 1 KiB values, no keys, as the
/// wire would deliver it.
fn producer_batch(records: usize) -> Vec<u8> {
    let timestamp = now_ms();
    let mut builder = BatchBuilder::new(Compression::None);
    for index in 0..records {
        let value = (0..RECORD_VALUE_BYTES)
            .map(|byte| (index * 31 + byte * 7) as u8)
            .collect();
        builder.push(timestamp, None, Some(value), Vec::new());
    }
    builder
        .build()
        .encode()
        .expect("a batch of 1 KiB records encodes")
}

/// Wall-clock milliseconds, read afresh for every append as a broker would.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as i64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

fn table_header() -> String {
    format!(
        "{:<12} {:>6} {:>9} {:>9} {:>9} {:>6} {:>8} {:>7} {:>13}  {}",
        "policy",
        "batch",
        "appenders",
        "MB/s",
        "raw MB/s",
        "ratio",
        "batches",
        "fsyncs",
        "batches/fsync",
        "raw baseline (fsyncs)"
    )
}

/// One table line: the sample itself, or the median of several.
fn table_row(point: &Point, samples: &[Sample]) -> String {
    let of = |figure: fn(&Sample) -> f64| median(samples.iter().map(figure).collect());
    let fsyncs = of(|sample| sample.fsyncs as f64);
    let batches = of(|sample| sample.batches as f64);
    let per_fsync = if samples.iter().all(|sample| sample.fsyncs > 0) {
        format!(
            "{:.1}",
            of(|sample| sample.batches as f64 / sample.fsyncs as f64)
        )
    } else {
        "-".to_string()
    };
    format!(
        "{:<12} {:>6} {:>9} {:>9.1} {:>9.1} {:>6.2} {:>8.0} {:>7.0} {:>13}  {} ({:.0})",
        point.policy.to_string(),
        size_label(point.batch_size),
        point.appenders,
        of(Sample::log_mb_per_second),
        of(Sample::raw_mb_per_second),
        of(Sample::ratio),
        batches,
        fsyncs,
        per_fsync,
        point.cadence().describe(),
        of(|sample| sample.raw_fsyncs as f64),
    )
}

fn size_label(bytes: usize) -> String {
    if bytes.is_multiple_of(MIB) {
        format!("{}MiB", bytes / MIB)
    } else if bytes.is_multiple_of(KIB) {
        format!("{}KiB", bytes / KIB)
    } else {
        format!("{bytes}B")
    }
}

/// Where data points put their files: under cargo's target directory, so
/// they land on the file system the project builds on.
fn scratch_root() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("runnel-log-bench");
    fs::create_dir_all(&root).expect("creating the bench scratch directory");
    root
}

/// CPU, memory, kernel, and the file system the scratch directory is on,
/// read from /proc; unknown fields say so instead of failing.
fn describe_machine(scratch: &Path) -> String {
    let read = |path: &str| fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim());
    let cpus = thread::available_parallelism().map_or(0, |count| count.get());
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or("unknown".to_string(), |kib| {
            format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0))
        });
    let kernel = read("/proc/sys/kernel/osrelease");
    let load = read("/proc/loadavg");
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let scratch = fs::canonicalize(scratch).unwrap_or_else(|_| scratch.to_path_buf());
    // The mount whose mount point is the longest prefix of the directory.
    let mounts = read("/proc/mounts");
    let mount = mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [device, mount_point, fs_type, mount_options, ..] => {
                    Some((*device, *mount_point, *fs_type, *mount_options))
                }
                _ => None,
            }
        })
        .filter(|(_, mount_point, _, _)| scratch.starts_with(mount_point))
        .max_by_key(|(_, mount_point, _, _)| mount_point.len());
    let file_system = mount.map_or("unknown".to_string(), |(device, point, fs_type, opts)| {
        format!("{fs_type} on {device} mounted at {point} ({opts})")
    });
    format!(
        "runnel-log append benchmark\n\
         cpu: {cpus} x {cpu_model}\n\
         memory: {memory}\n\
         kernel: Linux {}\n\
         scratch: {}\n\
         file system: {file_system}\n\
         load average at start: {}\n",
        kernel.trim(),
        scratch.display(),
        load.join(" "),
    )
}
