//! Shared helpers: batches, logs in temporary directories, file surgery.

use std::path::{Path, PathBuf};

use runnel_log::{Log, LogConfig};
use runnel_types::{LeaderEpoch, Offset};
use runnel_wire::batch::BatchBuilder;
use runnel_wire::{Compression, RecordBatch};

/// A producer batch of `records` records of `value_len` bytes, all with
/// timestamp `timestamp`.
pub fn batch(records: usize, value_len: usize, timestamp: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for index in 0..records {
        let value = vec![(index % 251) as u8; value_len];
        builder.push(
            timestamp,
            Some(format!("k{index}").into_bytes()),
            Some(value),
            Vec::new(),
        );
    }
    builder.build().encode().expect("encodable")
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_max_bytes: 4096,
        segment_max_age_ms: None,
        index_interval_bytes: 512,
        max_batch_bytes: 4096,
        retention_time_ms: None,
        retention_bytes: None,
        ..LogConfig::default()
    }
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temporary directory")
}

pub fn open(dir: &Path, config: &LogConfig) -> Log {
    Log::open(dir, config.clone()).expect("log opens").0
}

/// Appends a batch as leader at epoch 1 and returns its first offset.
pub fn append(log: &Log, records: usize, value_len: usize, timestamp: i64) -> Offset {
    let mut bytes = batch(records, value_len, timestamp);
    log.append_as_leader(&mut bytes, LeaderEpoch(1), timestamp)
        .expect("append")
        .first_offset
}

/// Every batch of the log, from its start, decoded.
pub fn read_all(log: &Log) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    let mut offset = log.log_start_offset();
    while let Some((slice, bytes)) = log.read_verified(offset, 1 << 20).expect("read") {
        let mut at = 0;
        while at < bytes.len() {
            let (batch, used) =
                RecordBatch::decode(&bytes[at..], Default::default()).expect("decodes");
            batches.push(batch);
            at += used;
        }
        offset = slice.next_offset;
    }
    batches
}

pub fn segment_logs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    files.sort();
    files
}

/// Copies every file of `from` into `to` (a fresh directory).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create");
    for entry in std::fs::read_dir(from).expect("dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}
