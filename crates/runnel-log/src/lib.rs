//! The partition log: the ordered, immutable record of one replica.
//!
//! A log is a directory of segments (`<base offset>.log`, Kafka RecordBatch
//! v2 bytes back to back) with sparse offset and time indexes, plus atomic
//! checkpoint files for the recovery point, the log start offset, the
//! leader-epoch cache and the high watermark. `docs/log-format.md` describes
//! every byte.
//!
//! This crate knows nothing about networks, replication or the controller,
//! and reads no clock: its owner passes the time in and drives flushing and
//! retention.

mod checkpoint;
mod config;
mod epoch;
mod error;
mod index;
pub mod inspect;
mod log;
pub mod scan;
mod segment;

pub use config::{FlushPolicy, LogConfig};
pub use epoch::EpochCache;
pub use error::LogError;
pub use log::{AppendInfo, FileSlice, Log, LogStats, RecoveryReport, RetentionOutcome};
