//! The plain configuration the owner of a log hands it.

pub use runnel_types::FlushPolicy;

use crate::LogError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment is sealed and a new one started once it would grow past
    /// this. At most 2 GiB, because positions in the index are 32-bit.
    pub segment_max_bytes: u64,
    /// A segment is sealed once an incoming batch is this much younger than
    /// the segment's first batch (by record timestamps).
    pub segment_max_age_ms: Option<u64>,
    /// Bytes of batches between two entries of the sparse indexes.
    pub index_interval_bytes: u64,
    /// Largest batch accepted by append or trusted by a scan.
    pub max_batch_bytes: usize,
    /// Sealed segments whose newest record is older than this are deleted.
    pub retention_time_ms: Option<u64>,
    /// Oldest sealed segments are deleted while the log is larger than this.
    pub retention_bytes: Option<u64>,
    pub flush: FlushPolicy,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_max_bytes: 1 << 30,
            segment_max_age_ms: Some(7 * 24 * 3_600_000),
            index_interval_bytes: 4096,
            max_batch_bytes: 8 << 20,
            retention_time_ms: Some(7 * 24 * 3_600_000),
            retention_bytes: None,
            flush: FlushPolicy::Always,
        }
    }
}

impl LogConfig {
    pub(crate) fn validate(&self) -> Result<(), LogError> {
        let invalid = |reason: String| Err(LogError::InvalidConfig(reason));
        if self.segment_max_bytes == 0 || self.segment_max_bytes > 1 << 31 {
            return invalid(format!(
                "segment_max_bytes is {}; it must be between 1 byte and 2 GiB",
                self.segment_max_bytes
            ));
        }
        if self.max_batch_bytes as u64 > self.segment_max_bytes {
            return invalid(format!(
                "max_batch_bytes ({}) must not exceed segment_max_bytes ({})",
                self.max_batch_bytes, self.segment_max_bytes
            ));
        }
        if self.index_interval_bytes == 0 {
            return invalid("index_interval_bytes must be at least 1".to_string());
        }
        Ok(())
    }
}
