//! `runnel produce`: lines from standard input or a file become records.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use runnel_client::{Acks, DeliveryFuture, MAX_BATCH_BYTES, ProducerConfig};
use runnel_types::{ByteSize, Duration, PartitionId, TopicName};
use runnel_wire::Compression;
use serde_json::json;

use crate::{CommandResult, Output};

/// Deliveries awaited at once; reading pauses beyond this, which bounds
/// memory however large the input is.
const MAX_PENDING_DELIVERIES: usize = 100_000;
/// Files larger than this show a progress bar.
const PROGRESS_MIN_BYTES: u64 = 16 << 20;

#[derive(Debug, Args)]
pub struct ProduceArgs {
    topic: TopicName,
    /// Read records from this file instead of standard input.
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Send every record to this partition instead of by key.
    #[arg(long)]
    partition: Option<u32>,
    /// Codec for the batches (default: the topic's).
    #[arg(long)]
    compression: Option<Compression>,
    /// How long a batch waits for more records (e.g. 5ms).
    #[arg(long)]
    linger: Option<Duration>,
    /// Largest batch (e.g. 16KiB, 1MiB).
    #[arg(long)]
    batch_size: Option<ByteSize>,
    /// When a batch counts as delivered: all (every in-sync replica has
    /// it), leader (the leader stored it under the topic's flush policy)
    /// or none (the leader wrote it).
    #[arg(long, default_value = "all")]
    acks: Acks,
    /// `json` prints {"partition":P,"offset":O} per acknowledged record.
    #[arg(short = 'O', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub async fn run(profile: Option<String>, args: ProduceArgs) -> CommandResult {
    let client = crate::admin::connect(profile).await?;
    let mut config = ProducerConfig {
        compression: args.compression,
        acks: args.acks,
        ..ProducerConfig::default()
    };
    if let Some(linger) = args.linger {
        config.linger = linger.to_std();
    }
    if let Some(size) = args.batch_size {
        config.batch_size = size.as_u64() as usize;
    }
    let producer = client.producer(&args.topic, config).await?;

    let (input, progress): (Box<dyn Read + Send>, ProgressBar) = match &args.file {
        Some(path) => {
            let file = File::open(path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            let size = file.metadata()?.len();
            let progress = if size >= PROGRESS_MIN_BYTES {
                let bar = ProgressBar::new(size);
                bar.set_style(ProgressStyle::with_template(
                    "{bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
                )?);
                bar
            } else {
                ProgressBar::hidden()
            };
            (Box::new(file), progress)
        }
        None => (Box::new(io::stdin()), ProgressBar::hidden()),
    };

    // Reading is blocking; a thread feeds lines to this task.
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
    let reader = std::thread::spawn(move || -> io::Result<()> {
        let mut input = BufReader::with_capacity(1 << 20, input);
        for number in 1.. {
            let mut line = Vec::new();
            // A line is read only up to the largest record (and its line
            // end), so input without newlines cannot fill the memory.
            let limit = MAX_BATCH_BYTES as u64 + 2;
            if (&mut input).take(limit).read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            if line.len() as u64 == limit && line.last() != Some(&b'\n') {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "line {number} exceeds the largest record ({} MiB); split it",
                        MAX_BATCH_BYTES >> 20
                    ),
                ));
            }
            progress.inc(line.len() as u64);
            if line.last() == Some(&b'\n') {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
            }
            if lines_tx.blocking_send(line).is_err() {
                return Ok(());
            }
        }
        Ok(())
    });

    let mut pending: VecDeque<DeliveryFuture> = VecDeque::new();
    let mut stdout = io::stdout().lock();
    let mut delivered = 0u64;
    while let Some(line) = lines.recv().await {
        let (key, value) = split(line, args.key_separator.as_deref());
        let delivery = match args.partition {
            Some(partition) => producer.send_to(PartitionId(partition), key, value).await?,
            None => producer.send(key, value).await?,
        };
        pending.push_back(delivery);
        if pending.len() >= MAX_PENDING_DELIVERIES {
            let delivery = pending.pop_front().expect("the queue is not empty");
            report(delivery, args.output, &mut stdout).await?;
            delivered += 1;
        }
    }
    reader.join().map_err(|_| "the input reader panicked")??;
    producer.flush().await?;
    while let Some(delivery) = pending.pop_front() {
        report(delivery, args.output, &mut stdout).await?;
        delivered += 1;
    }
    if args.output == Output::Text && args.file.is_some() {
        eprintln!("{delivered} records sent to '{}'", args.topic);
    }
    Ok(ExitCode::SUCCESS)
}

fn split(line: Vec<u8>, separator: Option<&str>) -> (Option<Bytes>, Bytes) {
    let Some(separator) = separator.map(str::as_bytes).filter(|sep| !sep.is_empty()) else {
        return (None, Bytes::from(line));
    };
    match line
        .windows(separator.len())
        .position(|window| window == separator)
    {
        Some(at) => {
            let line = Bytes::from(line);
            (Some(line.slice(..at)), line.slice(at + separator.len()..))
        }
        None => (None, Bytes::from(line)),
    }
}

async fn report(
    delivery: DeliveryFuture,
    output: Output,
    stdout: &mut impl Write,
) -> Result<(), Box<dyn std::error::Error>> {
    let metadata = delivery.await?;
    if output == Output::Json {
        writeln!(
            stdout,
            "{}",
            json!({"partition": metadata.partition.0, "offset": metadata.offset.0})
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_first_separator() {
        let split = |line: &str, sep| {
            let (key, value) = split(line.as_bytes().to_vec(), sep);
            (key.map(|key| key.to_vec()), value.to_vec())
        };
        assert_eq!(
            split("k=v=w", Some("=")),
            (Some(b"k".to_vec()), b"v=w".to_vec())
        );
        assert_eq!(
            split("no separator", Some("=")),
            (None, b"no separator".to_vec())
        );
        assert_eq!(
            split("a::b", Some("::")),
            (Some(b"a".to_vec()), b"b".to_vec())
        );
        assert_eq!(split("k=v", None), (None, b"k=v".to_vec()));
    }
}
