//! The client's two error types: [`ClientError`] for calls (connect,
//! admin, profiles, consuming) and [`ProduceError`] for the delivery of
//! one produced record. Every message says what to do next.
//!
//! Both are `Clone`: one failed batch fails each of its records with the
//! same error, and one lost stream may be reported to several waiters.

use std::path::PathBuf;
use std::time::Duration;

use runnel_api::ApiError;
use runnel_metadata::PartitionKey;
use runnel_transport::TransportError;
use runnel_types::{ByteSize, Offset, PartitionId, SpuId, TopicName};

use crate::producer::MAX_BATCH_BYTES;

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
    /// The SC closed a new plaintext connection without answering: what
    /// a TLS listener does to a client not speaking TLS. Retriable, as an
    /// SC shutting down does the same.
    #[error(
        "the cluster at {addr} closed the connection without answering; if it runs with TLS, give the profile its TLS files (`runnel profile add NAME ADDRESS --tls-ca FILE --tls-cert FILE --tls-key FILE`) or log in (`runnel login`)"
    )]
    ClosedUnanswered { addr: String },
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
    /// The server refused this client's TLS certificate (missing,
    /// revoked, expired, from another CA, or not a usable principal).
    #[error(
        "{addr} refused this client: {reason}; get a new certificate with `runnel login`, or check the profile's TLS files"
    )]
    Refused { addr: String, reason: String },
    /// The TLS handshake failed on this side: the server's certificate did
    /// not verify, or the server does not speak TLS.
    #[error(
        "the TLS handshake with {addr} failed ({reason}); check that the profile's CA certificate is the cluster's, and that the server's certificate names the host dialled (or set the profile's TLS domain)"
    )]
    TlsHandshake { addr: String, reason: String },
    /// A TLS file of a profile cannot be read.
    #[error(
        "cannot read the {what} {path}: {reason}; fix the profile's TLS settings with `runnel profile add`, or get new files with `runnel login`"
    )]
    TlsFile {
        /// `CA certificate`, `certificate` or `private key`.
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// A TLS setting of a profile was read but cannot be used.
    #[error(
        "the {setting} cannot be used for TLS: {reason}; fix the profile's TLS settings with `runnel profile add`, or get new files with `runnel login`"
    )]
    TlsUnusable {
        /// The setting at fault and its file, as `CA certificate /x/ca.pem`.
        setting: String,
        reason: String,
    },
    /// `runnel login` could not produce a usable identity.
    #[error("login failed: {0}")]
    Login(String),
    /// The CA certificate given to `runnel login` cannot be used.
    #[error("the CA certificate given cannot be used for TLS: {0}")]
    LoginCa(String),
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
    /// Not in the metadata of a TLS client, which lists only the topics
    /// its principal may describe.
    #[error(
        "topic '{0}' does not exist, or this client may not see it (it needs describe on topic:{0}); check the name, or ask an admin for a role (`runnel role bind`)"
    )]
    TopicNotVisible(TopicName),
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
    /// A fetched batch failed its checks (CRC, framing, offsets); none
    /// of its records were delivered and the partition's stream stopped.
    #[error(
        "corrupt record batch in partition {partition} at offset {offset}: {reason}; none of its records were delivered; run `runnel debug verify-log` on the replica directory of {partition} on its leader, SPU {leader}, and report this to the cluster operator"
    )]
    CorruptBatch {
        partition: PartitionKey,
        /// The offset the consumer expected the batch to hold.
        offset: Offset,
        /// The SPU that sent the batch.
        leader: SpuId,
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
    /// A record too large for any batch the SPU accepts.
    #[error(
        "record of {size} bytes exceeds the {limit} batch limit (the largest batch an SPU accepts, header included); split it into smaller records",
        limit = ByteSize(MAX_BATCH_BYTES as u64)
    )]
    RecordTooLarge { size: usize },
    /// A record larger than the producer's whole buffer: it could never
    /// get room.
    #[error(
        "record of {size} bytes exceeds the producer's buffer of {limit} bytes; raise ProducerConfig::max_buffered_bytes or split the record"
    )]
    RecordExceedsBuffer { size: usize, limit: usize },
    /// A setting of a producer or consumer configuration is out of range.
    #[error("invalid {setting} {value}: it must be {allowed}")]
    InvalidConfig {
        /// The setting, as `ProducerConfig::batch_size`.
        setting: &'static str,
        value: String,
        allowed: String,
    },
    /// A consumer could not find a leader to read a partition from
    /// within [`crate::ConsumerConfig::start_timeout`].
    #[error("partition {partition} {problem}")]
    NoReachableLeader {
        partition: PartitionKey,
        /// The leader the metadata names, if any.
        leader: Option<SpuId>,
        /// What is wrong and what to do, as "has no online leader (SPU 3
        /// is offline); start it with `runnel cluster start`".
        problem: String,
    },
    /// An idempotent producer could not be created: the SC gave it no
    /// producer id.
    #[error(
        "cannot create an idempotent producer: the SC gave no producer id ({reason}); retry, or set ProducerConfig::idempotent to false to produce without one (a retried batch may then be stored twice)"
    )]
    NoProducerId {
        /// Whether asking again later may succeed (the SC was away).
        retriable: bool,
        reason: String,
    },
    /// The topic was deleted while it was being read.
    #[error("topic '{0}' was deleted while it was being read")]
    TopicDeleted(TopicName),
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
            | ClientError::ClosedUnanswered { .. }
            | ClientError::SpuUnavailable { .. }
            | ClientError::NoLeader(_) => true,
            ClientError::Api(error) => error.code.is_retriable(),
            ClientError::NoProducerId { retriable, .. } => *retriable,
            _ => false,
        }
    }

    /// The error of the first connection to the SC at `addr`: a server
    /// that cannot be reached may not be running.
    pub(crate) fn from_first_connect(addr: &str, error: TransportError) -> ClientError {
        let error = match error {
            TransportError::Connect { source, .. } if !is_tls_failure(&source) => {
                return ClientError::Unreachable {
                    addr: addr.to_string(),
                    reason: source.to_string(),
                };
            }
            other => ClientError::from_sc(addr, other),
        };
        match error {
            ClientError::ScUnavailable { addr, reason } => {
                ClientError::Unreachable { addr, reason }
            }
            other => other,
        }
    }

    /// The error of a call to the SC at `addr`.
    pub(crate) fn from_sc(addr: &str, error: TransportError) -> ClientError {
        ClientError::from_transport(addr, error, |reason| ClientError::ScUnavailable {
            addr: addr.to_string(),
            reason,
        })
    }

    /// The error of a call about `partition` to the SPU at `addr`.
    pub(crate) fn from_spu(
        partition: &PartitionKey,
        addr: &str,
        error: TransportError,
    ) -> ClientError {
        ClientError::from_transport(addr, error, |reason| ClientError::SpuUnavailable {
            partition: partition.clone(),
            addr: addr.to_string(),
            reason,
        })
    }

    /// Sorts a transport error: the server's answer, a peer that broke the
    /// protocol, or a peer that could not be reached (`unavailable`).
    fn from_transport(
        addr: &str,
        error: TransportError,
        unavailable: impl FnOnce(String) -> ClientError,
    ) -> ClientError {
        match error {
            TransportError::Api(error) => ClientError::Api(error),
            TransportError::Refused(reason) => ClientError::Refused {
                addr: addr.to_string(),
                reason,
            },
            TransportError::Connect { ref source, .. } if is_tls_failure(source) => {
                ClientError::TlsHandshake {
                    addr: addr.to_string(),
                    reason: source.to_string(),
                }
            }
            TransportError::Protocol(_)
            | TransportError::Wire(_)
            | TransportError::FrameTooLarge { .. } => ClientError::Protocol {
                peer: addr.to_string(),
                reason: error.to_string(),
            },
            TransportError::Connect { .. }
            | TransportError::Closed
            | TransportError::Timeout(_)
            | TransportError::Io(_) => unavailable(error.to_string()),
        }
    }
}

/// Whether a failed connection attempt failed in the TLS handshake rather
/// than in reaching the server: rustls reports what it refuses (the
/// server's certificate, a peer not speaking TLS) as invalid data, which
/// retrying does not change.
fn is_tls_failure(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::InvalidData
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
        "no acknowledgement from partition {partition} within the delivery timeout of {timeout:?} ({attempts} attempts; last: {last_error}); the records are not stored; check that its leader SPU is running (`runnel spu list`)"
    )]
    DeliveryTimeout {
        partition: PartitionKey,
        timeout: Duration,
        attempts: u32,
        last_error: String,
    },
    /// The request carrying the record's batch was sent, and then no
    /// answer came: it timed out or the connection closed. The leader may
    /// or may not have stored the batch. The batches queued behind it
    /// failed with [`ProduceError::NotSentAfterUnknownOutcome`].
    #[error(
        "outcome unknown: the request to SPU {spu} for partition {partition} was sent, then {cause}; the records may or may not be stored; resend them if duplicates are acceptable"
    )]
    OutcomeUnknown {
        partition: PartitionKey,
        spu: SpuId,
        /// What happened after sending, as "the delivery timeout of 30s
        /// ran out".
        cause: String,
    },
    /// The record was never sent: an earlier batch of its partition has
    /// an unknown outcome, and sending this one could have stored it
    /// before a resend of the earlier one.
    #[error(
        "not sent, to keep order: an earlier batch for partition {partition} has an unknown outcome (the request to SPU {spu} was sent, then {cause}); this record is not stored: resend it, after the earlier ones to keep their order"
    )]
    NotSentAfterUnknownOutcome {
        partition: PartitionKey,
        spu: SpuId,
        cause: String,
    },
    /// The record was never sent: the leader refused an earlier batch of
    /// its partition as out of the producer's sequence (a gap, or an
    /// older producer epoch), and this one would not have fit either.
    #[error(
        "not sent, to keep order: partition {partition} refused an earlier batch of this producer ({error}); this record is not stored: resend it, after the earlier ones to keep their order"
    )]
    NotSentAfterSequenceError {
        partition: PartitionKey,
        error: ApiError,
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
