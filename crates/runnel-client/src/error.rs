//! The client's two error types: [`ClientError`] for calls (connect,
//! admin, profiles, consuming) and [`ProduceError`] for the delivery of
//! one produced record. Every message says what to do next.
//!
//! Both are `Clone`: one failed batch fails each of its records with the
//! same error, and one lost stream may be reported to several waiters.

use std::path::PathBuf;
use std::time::Duration;

use runnel_api::{ApiError, ErrorCode};
use runnel_metadata::PartitionKey;
use runnel_transport::TransportError;
use runnel_types::{Offset, PartitionId, TopicName};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The first connection to the SC failed.
    #[error(
        "cannot reach the cluster at {addr}; is it running? start a local one with `runnel cluster start` ({reason})"
    )]
    Unreachable { addr: String, reason: String },
    /// The SC went away after the client had connected. Retriable: the
    /// client reconnects by itself.
    #[error(
        "the cluster at {addr} is not answering right now ({reason}); the client reconnects by itself, retry shortly"
    )]
    ScUnavailable { addr: String, reason: String },
    /// The SPU leading a partition could not be reached. Retriable.
    #[error(
        "cannot reach SPU {addr}, the leader of {partition} ({reason}); retry shortly, and check `runnel spu list` if it lasts"
    )]
    SpuUnavailable {
        partition: PartitionKey,
        addr: String,
        reason: String,
    },
    /// The partition has no online leader right now. Retriable.
    #[error(
        "partition {0} has no online leader right now; retry shortly, and check `runnel spu list` if it lasts"
    )]
    NoLeader(PartitionKey),
    /// The server answered with an error; its message says what to do.
    #[error("{0}")]
    Api(ApiError),
    #[error(
        "the peer at {peer} broke the protocol ({reason}); client and server may be of incompatible versions"
    )]
    Protocol { peer: String, reason: String },
    #[error(
        "no cluster profile; start a local cluster with `runnel cluster start` or add one with `runnel profile add NAME ADDRESS`"
    )]
    NoProfile,
    #[error("unknown profile '{name}'; known profiles: {known}")]
    UnknownProfile { name: String, known: String },
    #[error(
        "profile '{0}' already exists; switch to it with `runnel profile switch {0}` or delete it first"
    )]
    ProfileExists(String),
    #[error("a profile name may not be empty")]
    EmptyProfileName,
    #[error(
        "cannot find the Runnel home directory: neither RUNNEL_HOME nor HOME is set; set RUNNEL_HOME to a directory"
    )]
    NoHome,
    #[error("cannot {action} {path}: {reason}")]
    ConfigIo {
        action: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "{path} is not a valid profile file ({reason}); fix it or delete it and add the profiles again"
    )]
    ConfigInvalid { path: PathBuf, reason: String },
    #[error("topic '{0}' does not exist; create it with `runnel topic create {0}`")]
    TopicNotFound(TopicName),
    #[error(
        "topic '{topic}' has {count} partitions (0 to {last}); there is no partition {partition}",
        last = count.saturating_sub(1)
    )]
    PartitionOutOfRange {
        topic: TopicName,
        partition: PartitionId,
        count: u32,
    },
    #[error("the cluster metadata did not reach the awaited state within {0:?}")]
    MetadataTimeout(Duration),
    /// A fetched batch failed its checks (CRC, framing); none of its
    /// records were delivered.
    #[error(
        "corrupt record batch in {partition} at offset {offset}: {reason}; none of its records were delivered: report this to the cluster operator"
    )]
    CorruptBatch {
        partition: PartitionKey,
        offset: Offset,
        reason: String,
    },
    #[error(
        "offset {requested} is outside partition {partition}, which holds offsets {log_start} to {high_watermark} (exclusive); start at the beginning, the end, or an offset in that range"
    )]
    OffsetOutOfRange {
        partition: PartitionKey,
        requested: Offset,
        log_start: Offset,
        high_watermark: Offset,
    },
    #[error(
        "a record of {size} bytes exceeds the producer's limit of {limit} bytes; split it or raise ProducerConfig::max_buffered_bytes"
    )]
    RecordTooLarge { size: usize, limit: usize },
    /// The client's background work stopped (its runtime is shutting
    /// down).
    #[error("the client is shut down; create a new one")]
    Closed,
}

impl ClientError {
    /// Whether the same call may succeed if made again later.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. }
            | ClientError::ScUnavailable { .. }
            | ClientError::SpuUnavailable { .. }
            | ClientError::NoLeader(_) => true,
            ClientError::Api(error) => error.code.is_retriable(),
            _ => false,
        }
    }

    /// The error of a call to the SC at `addr`.
    pub(crate) fn from_sc(addr: &str, error: TransportError) -> ClientError {
        match error {
            TransportError::Api(error) => ClientError::Api(error),
            TransportError::Protocol(_)
            | TransportError::Wire(_)
            | TransportError::FrameTooLarge { .. } => ClientError::Protocol {
                peer: addr.to_string(),
                reason: error.to_string(),
            },
            TransportError::Connect { .. }
            | TransportError::Closed
            | TransportError::Timeout(_)
            | TransportError::Io(_) => ClientError::ScUnavailable {
                addr: addr.to_string(),
                reason: error.to_string(),
            },
        }
    }

    /// The error of a call about `partition` to the SPU at `addr`.
    pub(crate) fn from_spu(
        partition: &PartitionKey,
        addr: &str,
        error: TransportError,
    ) -> ClientError {
        match error {
            TransportError::Api(error) => ClientError::Api(error),
            TransportError::Protocol(_)
            | TransportError::Wire(_)
            | TransportError::FrameTooLarge { .. } => ClientError::Protocol {
                peer: addr.to_string(),
                reason: error.to_string(),
            },
            TransportError::Connect { .. }
            | TransportError::Closed
            | TransportError::Timeout(_)
            | TransportError::Io(_) => ClientError::SpuUnavailable {
                partition: partition.clone(),
                addr: addr.to_string(),
                reason: error.to_string(),
            },
        }
    }

    /// Whether a data-path call (produce, fetch, list offsets) about a
    /// partition of a topic that still exists may succeed on the leader
    /// the metadata names next. Besides the retriable codes, an SPU that
    /// does not host the partition (yet, or any more) is waited out: the
    /// topic was just created, or its leader moved.
    pub(crate) fn is_retriable_on_data_path(&self) -> bool {
        match self {
            ClientError::Api(error) => {
                error.code.is_retriable() || error.code == ErrorCode::PARTITION_NOT_FOUND
            }
            other => other.is_retriable(),
        }
    }
}

/// Why a produced record was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProduceError {
    /// The leader refused the batch for a reason retrying cannot fix.
    #[error("partition {partition} refused the record: {error}")]
    Rejected {
        partition: PartitionKey,
        error: ApiError,
    },
    /// Talking to the leader failed for a reason retrying cannot fix.
    #[error("sending to partition {partition} failed: {reason}")]
    Failed {
        partition: PartitionKey,
        reason: String,
    },
    #[error("gave up delivering to partition {partition} after {attempts} attempts: {last_error}")]
    RetriesExhausted {
        partition: PartitionKey,
        attempts: u32,
        last_error: String,
    },
    #[error(
        "no acknowledgement from partition {partition} within the delivery timeout of {timeout:?} ({attempts} attempts; last: {last_error}); check that its leader SPU is running (`runnel spu list`)"
    )]
    DeliveryTimeout {
        partition: PartitionKey,
        timeout: Duration,
        attempts: u32,
        last_error: String,
    },
    #[error("topic '{0}' was deleted while records for it were being sent")]
    TopicDeleted(TopicName),
    #[error("the record batch for partition {partition} cannot be encoded: {reason}")]
    Encode {
        partition: PartitionKey,
        reason: String,
    },
    /// The producer's background work stopped before the record's batch
    /// was sent (its runtime is shutting down).
    #[error(
        "the producer stopped before the record was sent; create a new producer and send it again"
    )]
    Closed,
}
