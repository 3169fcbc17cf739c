//! The plain configuration the owner of a log hands it.

use std::fmt;
use std::str::FromStr;

use crate::LogError;

/// When appended bytes are forced to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// fsync before an append returns; concurrent appenders share one fsync
    /// (group commit). Nothing acknowledged is lost in a power failure.
    #[default]
    Always,
    /// fsync at most `interval_ms` after an append, on the next append or
    /// [`crate::Log::tick`]. A power failure loses up to that window.
    Interval { interval_ms: u64 },
    /// Never fsync on the append path; the page cache writes back. A process
    /// crash loses nothing, a power failure loses what was not written back.
    Os,
}

impl FromStr for FlushPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FlushPolicy::Always),
            "os" => Ok(FlushPolicy::Os),
            _ => s
                .strip_prefix("interval=")
                .and_then(|millis| millis.parse().ok())
                .filter(|&interval_ms| interval_ms > 0)
                .map(|interval_ms| FlushPolicy::Interval { interval_ms })
                .ok_or_else(|| {
                    format!("unknown flush policy {s:?}; use always, interval=<milliseconds> or os")
                }),
        }
    }
}

impl fmt::Display for FlushPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlushPolicy::Always => f.write_str("always"),
            FlushPolicy::Interval { interval_ms } => write!(f, "interval={interval_ms}"),
            FlushPolicy::Os => f.write_str("os"),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_policies_parse() {
        assert_eq!("always".parse(), Ok(FlushPolicy::Always));
        assert_eq!("os".parse(), Ok(FlushPolicy::Os));
        assert_eq!(
            "interval=250".parse(),
            Ok(FlushPolicy::Interval { interval_ms: 250 })
        );
        assert!("interval=0".parse::<FlushPolicy>().is_err());
        assert!("sometimes".parse::<FlushPolicy>().is_err());
        for policy in [
            FlushPolicy::Always,
            FlushPolicy::Os,
            FlushPolicy::Interval { interval_ms: 5 },
        ] {
            assert_eq!(policy.to_string().parse(), Ok(policy));
        }
    }
}
