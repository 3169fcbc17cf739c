//! `runnel debug …`: offline tools on partition directories and segment
//! files.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use runnel_log::inspect::{self, MAX_INSPECT_BATCH_BYTES, VerifyReport};
use runnel_log::scan::{Offsets, Scanner};
use runnel_log::{FlushPolicy, Log, LogConfig};
use runnel_types::{ByteSize, LeaderEpoch, Offset};
use runnel_wire::batch::{BatchBuilder, BatchHeader, DecodeLimits};
use runnel_wire::{Compression, RecordBatch};
use serde_json::{Value, json};

use crate::Output;

use crate::CommandResult;

/// Exit status when the data has a fault (2 is for bad usage and I/O
/// errors, as clap uses it).
const EXIT_FAULT: u8 = 1;

pub fn verify_log(path: &Path, output: Output) -> CommandResult {
    let report = inspect::verify(path)?;
    match output {
        Output::Json => println!("{}", verify_json(&report)),
        Output::Text => print_verify_text(&report),
    }
    Ok(match report.fault {
        None => ExitCode::SUCCESS,
        Some(_) => ExitCode::from(EXIT_FAULT),
    })
}

fn print_verify_text(report: &VerifyReport) {
    let range = match (report.first_offset, report.next_offset) {
        (Some(first), Some(next)) => format!("offsets {first} to {} inclusive", next.0 - 1),
        _ => "no batches".to_string(),
    };
    let checked = format!(
        "{} segments, {} batches, {} records, {} bytes, {range}",
        report.segments, report.batches, report.records, report.bytes
    );
    match &report.fault {
        None => {
            println!("ok: {checked}");
            for path in &report.missing_indexes {
                println!(
                    "note: {} has no index files; they are rebuilt when the log opens",
                    path.display()
                );
            }
        }
        Some(fault) => {
            println!(
                "fault: {} at byte {} (offset {}): {}",
                fault.file.display(),
                fault.position,
                fault.offset,
                fault.reason
            );
            println!("checked before the fault: {checked}");
        }
    }
}

fn verify_json(report: &VerifyReport) -> Value {
    json!({
        "ok": report.fault.is_none(),
        "segments": report.segments,
        "batches": report.batches,
        "records": report.records,
        "bytes": report.bytes,
        "first_offset": report.first_offset.map(|offset| offset.0),
        "next_offset": report.next_offset.map(|offset| offset.0),
        "missing_indexes": report.missing_indexes.iter().map(|path| path.display().to_string()).collect::<Vec<_>>(),
        "fault": report.fault.as_ref().map(|fault| json!({
            "file": fault.file.display().to_string(),
            "position": fault.position,
            "offset": fault.offset.0,
            "reason": fault.reason,
        })),
    })
}

pub fn dump_log(path: &Path, records: bool, output: Output) -> CommandResult {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let limits = DecodeLimits {
        max_decompressed_bytes: MAX_INSPECT_BATCH_BYTES,
    };
    let mut expected = None::<Offset>;
    for file_path in inspect::segment_files(path)? {
        let file = File::open(&file_path)?;
        let file_len = file.metadata()?.len();
        let start = expected
            .or(inspect::base_offset_of(&file_path))
            .unwrap_or(Offset(i64::MIN));
        let mut scanner = Scanner::new(
            &file,
            file_len,
            0,
            start,
            MAX_INSPECT_BATCH_BYTES,
            Offsets::Increasing,
        );
        loop {
            let (position, header) = match scanner.next_batch() {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(fault) => {
                    out.flush()?;
                    eprintln!(
                        "fault: {} at byte {} (offset {}): {}",
                        file_path.display(),
                        fault.position,
                        fault.offset,
                        fault.kind
                    );
                    return Ok(ExitCode::from(EXIT_FAULT));
                }
            };
            if !records {
                writeln!(out, "{}", batch_line(&file_path, position, &header, output))?;
                continue;
            }
            let batch = match RecordBatch::decode(scanner.batch_bytes(), limits) {
                Ok((batch, _)) => batch,
                Err(error) => {
                    out.flush()?;
                    eprintln!(
                        "fault: {} at byte {position} (offset {}): records do not decode: {error}",
                        file_path.display(),
                        header.base_offset
                    );
                    return Ok(ExitCode::from(EXIT_FAULT));
                }
            };
            for record in &batch.records {
                writeln!(out, "{}", record_line(&batch, record, output))?;
            }
        }
        expected = Some(scanner.next_offset());
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn batch_line(file: &Path, position: u64, header: &BatchHeader, output: Output) -> String {
    let compression = header.compression().map_or("unknown", Compression::name);
    match output {
        Output::Json => json!({
            "file": file.display().to_string(),
            "position": position,
            "base_offset": header.base_offset,
            "last_offset": header.last_offset().0,
            "size": header.total_len(),
            "records": header.record_count,
            "leader_epoch": header.partition_leader_epoch,
            "crc": header.crc,
            "compression": compression,
            "base_timestamp": header.base_timestamp,
            "max_timestamp": header.max_timestamp,
            "log_append_time": header.is_log_append_time(),
            "producer_id": header.producer_id,
            "producer_epoch": header.producer_epoch,
            "base_sequence": header.base_sequence,
            "transactional": header.is_transactional(),
            "control": header.is_control(),
        })
        .to_string(),
        Output::Text => format!(
            "offset {}..{} position {position} size {} records {} epoch {} crc {:#010x} {compression} max_timestamp {} producer {}/{}/{}{}{}",
            header.base_offset,
            header.last_offset(),
            header.total_len(),
            header.record_count,
            header.partition_leader_epoch,
            header.crc,
            header.max_timestamp,
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            if header.is_transactional() {
                " transactional"
            } else {
                ""
            },
            if header.is_control() { " control" } else { "" },
        ),
    }
}

fn record_line(batch: &RecordBatch, record: &runnel_wire::Record, output: Output) -> String {
    let offset = batch.header.base_offset + i64::from(record.offset_delta);
    let timestamp = batch.timestamp_of(record);
    match output {
        Output::Json => json!({
            "offset": offset,
            "timestamp": timestamp,
            "key": bytes_json(record.key.as_deref()),
            "value": bytes_json(record.value.as_deref()),
            "headers": record.headers.iter().map(|header| json!({
                "key": bytes_json(Some(&header.key)),
                "value": bytes_json(header.value.as_deref()),
            })).collect::<Vec<_>>(),
        })
        .to_string(),
        Output::Text => format!(
            "offset {offset} timestamp {timestamp} key {} value {}",
            bytes_text(record.key.as_deref()),
            bytes_text(record.value.as_deref())
        ),
    }
}

/// A string for UTF-8 bytes, `{"hex": …}` for anything else, null for null.
fn bytes_json(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None => Value::Null,
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => Value::String(text.to_string()),
            Err(_) => json!({ "hex": hex(bytes) }),
        },
    }
}

fn bytes_text(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "null".to_string(),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => format!("{text:?}"),
            Err(_) => format!("0x{}", hex(bytes)),
        },
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

pub fn write_log(
    path: &Path,
    batch_records: usize,
    compression: Compression,
    segment_size: ByteSize,
) -> CommandResult {
    if batch_records == 0 {
        return Err("--batch-records must be at least 1".into());
    }
    let defaults = LogConfig::default();
    let config = LogConfig {
        segment_max_bytes: segment_size.as_u64(),
        max_batch_bytes: defaults.max_batch_bytes.min(segment_size.as_u64() as usize),
        flush: FlushPolicy::Always,
        ..defaults
    };
    let (log, recovery) = Log::open(path, config)?;
    if let Some(fault) = &recovery.truncated {
        eprintln!(
            "recovered: cut {} bytes at offset {} ({})",
            recovery.bytes_truncated, fault.offset, fault.kind
        );
    }
    // Writes continue in the log's latest epoch, as its leader would.
    let epoch = log
        .epochs()
        .last()
        .map_or(LeaderEpoch(0), |(epoch, _)| *epoch);
    let mut lines = io::stdin().lock().lines();
    let (mut records, mut batches) = (0u64, 0u64);
    let mut first = None::<Offset>;
    loop {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
        let mut builder = BatchBuilder::new(compression);
        for line in lines.by_ref().take(batch_records) {
            builder.push(now_ms, None, Some(line?.into_bytes()), Vec::new());
        }
        if builder.is_empty() {
            break;
        }
        records += builder.len() as u64;
        let mut bytes = builder.build().encode()?;
        let info = log.append_as_leader(&mut bytes, epoch, now_ms)?;
        first.get_or_insert(info.first_offset);
        batches += 1;
    }
    let log_end = log.log_end_offset();
    log.close()?;
    match first {
        Some(first) => println!(
            "appended {records} records in {batches} batches at offsets {first} to {}; the log ends at {log_end}",
            log_end.0 - 1
        ),
        None => println!("no input; the log ends at {log_end}"),
    }
    Ok(ExitCode::SUCCESS)
}
