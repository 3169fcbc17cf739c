//! Errors that stop an SPU from starting, and how log errors become the
//! error codes clients see.

use std::path::PathBuf;

use runnel_api::{ApiError, ErrorCode};
use runnel_log::LogError;
use runnel_metadata::PartitionKey;

/// Why [`crate::run`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpuError {
    #[error(
        "cannot listen for {listener} connections on {addr}: {source}; another process (another cluster?) may hold that port: stop it or choose another --base-port"
    )]
    Bind {
        listener: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot create the data directory {path}: {source}; check its permissions or choose another data directory"
    )]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid SPU configuration: {0}")]
    InvalidConfig(String),
    #[error(
        "cannot set up TLS for {what}: {source}; check the SPU's CA, certificate and key files (PEM, the certificate issued to spu:<id> by the cluster CA)"
    )]
    Tls {
        what: &'static str,
        #[source]
        source: runnel_transport::TlsError,
    },
}

/// The answer to a client whose request on `key` failed in the log.
pub(crate) fn log_error_to_api(key: &PartitionKey, error: &LogError) -> ApiError {
    let (code, advice) = match error {
        LogError::InvalidBatch { .. }
        | LogError::InconsistentBatch { .. }
        | LogError::OffsetSpan { .. } => (
            ErrorCode::INVALID_RECORDS,
            "send whole, well-formed RecordBatch v2 batches",
        ),
        LogError::BatchTooLarge { .. } => (
            ErrorCode::RECORDS_TOO_LARGE,
            "split the records into smaller batches",
        ),
        LogError::OffsetOutOfRange { .. } => (
            ErrorCode::OFFSET_OUT_OF_RANGE,
            "start from an offset in that range (ListOffsets gives the start and the end)",
        ),
        LogError::EpochRegression { .. } => (
            ErrorCode::NOT_LEADER,
            "this SPU lost leadership; refresh metadata and retry on the new leader",
        ),
        LogError::Corrupt { .. } | LogError::CorruptCheckpoint { .. } => (
            ErrorCode::CORRUPT_DATA,
            "the replica must be repaired; report this to the cluster operator",
        ),
        LogError::TruncatedBeforeDurable { .. } => (ErrorCode::STORAGE, "retry the request"),
        LogError::Io { .. }
        | LogError::Failed(_)
        | LogError::InvalidConfig(_)
        | LogError::NonContiguousBatch { .. } => (
            ErrorCode::STORAGE,
            "the SPU's disk needs attention; see the SPU's log",
        ),
    };
    ApiError::new(code, format!("partition {key}: {error}; {advice}"))
}

/// A request body that does not decode.
pub(crate) fn malformed(api: &str, error: runnel_wire::WireError) -> ApiError {
    ApiError::new(
        ErrorCode::MALFORMED_REQUEST,
        format!(
            "cannot decode the {api} request: {error}; the sender may speak another protocol version than this SPU"
        ),
    )
}

/// The answer when a blocking log task did not finish (it panicked, or the
/// runtime is shutting down).
pub(crate) fn task_failed(
    key: &PartitionKey,
    what: &str,
    error: &tokio::task::JoinError,
) -> ApiError {
    ApiError::new(
        ErrorCode::STORAGE,
        format!(
            "partition {key}: the {what} did not complete ({error}); retry, and see the SPU's log if it persists"
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use runnel_types::{Offset, PartitionId, TopicName};
    use runnel_wire::WireError;

    use super::*;

    #[test]
    fn log_errors_map_to_client_codes() {
        let key = PartitionKey {
            topic: TopicName::new("orders").expect("valid name"),
            partition: PartitionId(3),
        };
        let cases = [
            (
                LogError::InvalidBatch {
                    position: 0,
                    source: WireError::BadMagic(1),
                },
                ErrorCode::INVALID_RECORDS,
            ),
            (
                LogError::BatchTooLarge { size: 10, limit: 5 },
                ErrorCode::RECORDS_TOO_LARGE,
            ),
            (
                LogError::OffsetOutOfRange {
                    requested: Offset(9),
                    log_start: Offset(0),
                    log_end: Offset(4),
                },
                ErrorCode::OFFSET_OUT_OF_RANGE,
            ),
            (
                LogError::Failed(PathBuf::from("/data/orders-3")),
                ErrorCode::STORAGE,
            ),
        ];
        for (error, code) in cases {
            let api = log_error_to_api(&key, &error);
            assert_eq!(api.code, code, "{error}");
            assert!(
                api.message.starts_with("partition orders-3: "),
                "{}",
                api.message
            );
            assert!(api.message.contains(&error.to_string()), "{}", api.message);
        }
    }
}
