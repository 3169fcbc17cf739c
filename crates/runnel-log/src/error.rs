//! Errors of the partition log. Environment failures (I/O, full disk,
//! corrupt files) are values; broken invariants of our own are panics.

use std::path::PathBuf;

use runnel_types::{LeaderEpoch, Offset};
use runnel_wire::WireError;

use crate::scan::FaultKind;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "offset {requested} is out of range: the log holds offsets {log_start} to {log_end} (exclusive)"
    )]
    OffsetOutOfRange {
        requested: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    #[error("invalid batch at position {position} of the appended bytes: {source}")]
    InvalidBatch {
        position: usize,
        #[source]
        source: WireError,
    },
    #[error("batch of {size} bytes exceeds the limit of {limit} bytes (max_batch_bytes)")]
    BatchTooLarge { size: usize, limit: usize },
    #[error(
        "batch header says {record_count} records but its last offset delta is {last_offset_delta}"
    )]
    InconsistentBatch {
        record_count: i32,
        last_offset_delta: i32,
    },
    #[error("the append covers {offsets} offsets; at most 2^31 fit in one segment")]
    OffsetSpan { offsets: i64 },
    #[error(
        "the log was truncated below offset {offset} before the append was durable; it is not acknowledged, retry it"
    )]
    TruncatedBeforeDurable { offset: Offset },
    #[error(
        "replicated batch starts at offset {base_offset} but must start at {log_end}, where the log ends"
    )]
    NonContiguousBatch {
        base_offset: Offset,
        log_end: Offset,
    },
    #[error(
        "leader epoch {found} is older than the log's latest epoch {latest}; a deposed leader's write is refused"
    )]
    EpochRegression {
        found: LeaderEpoch,
        latest: LeaderEpoch,
    },
    #[error(
        "corrupt data in {path} at byte {position} (offset {offset}): {fault}; the replica must be repaired from a peer"
    )]
    Corrupt {
        path: PathBuf,
        position: u64,
        offset: Offset,
        fault: FaultKind,
    },
    #[error("checkpoint {path} is corrupt: {reason}")]
    CorruptCheckpoint { path: PathBuf, reason: String },
    #[error(
        "the log at {0} failed an earlier write and could not restore itself; reopen it to recover"
    )]
    Failed(PathBuf),
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
}

impl LogError {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io {
            context,
            path,
            source,
        }
    }
}
