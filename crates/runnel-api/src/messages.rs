//! The message structs of every api, grouped by listener.

use runnel_metadata::PartitionKey;
use runnel_metadata::{
    AssignmentUpdate, MetadataUpdate, Partition, ReplicaStatus, Spu, SpuSpec, Topic, TopicSpec,
};
use runnel_types::{LeaderEpoch, Offset, PartitionId, SpuId, TopicName};
use serde::{Deserialize, Serialize};

use crate::{ApiError, ApiKey, Request};

/// A unary answer.
pub type Reply<T> = Result<T, ApiError>;

// ---- every listener ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiVersionsRequest {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiVersion {
    pub api_key: u16,
    pub min_version: u16,
    pub max_version: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiVersionsResponse {
    pub versions: Vec<ApiVersion>,
}

impl Request for ApiVersionsRequest {
    const API_KEY: ApiKey = ApiKey::ApiVersions;
    type Response = Reply<ApiVersionsResponse>;
}

// ---- SC public: administration and metadata ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopicRequest {
    pub spec: TopicSpec,
}

impl Request for CreateTopicRequest {
    const API_KEY: ApiKey = ApiKey::CreateTopic;
    type Response = Reply<()>;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTopicRequest {
    pub name: TopicName,
}

impl Request for DeleteTopicRequest {
    const API_KEY: ApiKey = ApiKey::DeleteTopic;
    type Response = Reply<()>;
}

/// Lists the named topics, or every topic when `names` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTopicsRequest {
    pub names: Vec<TopicName>,
}

impl Request for ListTopicsRequest {
    const API_KEY: ApiKey = ApiKey::ListTopics;
    type Response = Reply<Vec<Topic>>;
}

/// Lists the partitions of one topic, or of every topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPartitionsRequest {
    pub topic: Option<TopicName>,
}

impl Request for ListPartitionsRequest {
    const API_KEY: ApiKey = ApiKey::ListPartitions;
    type Response = Reply<Vec<Partition>>;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSpusRequest {}

impl Request for ListSpusRequest {
    const API_KEY: ApiKey = ApiKey::ListSpus;
    type Response = Reply<Vec<Spu>>;
}

/// Declares an SPU ahead of its first connection (or changes its
/// addresses while it is offline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterSpuRequest {
    pub spec: SpuSpec,
}

impl Request for RegisterSpuRequest {
    const API_KEY: ApiKey = ApiKey::RegisterSpu;
    type Response = Reply<()>;
}

/// Removes an offline SPU that holds no replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnregisterSpuRequest {
    pub id: SpuId,
}

impl Request for UnregisterSpuRequest {
    const API_KEY: ApiKey = ApiKey::UnregisterSpu;
    type Response = Reply<()>;
}

/// Streams the whole metadata, then every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchMetadataRequest {}

impl Request for WatchMetadataRequest {
    const API_KEY: ApiKey = ApiKey::WatchMetadata;
    type Response = MetadataUpdate;
    const STREAMING: bool = true;
}

/// Asks for a producer id for an idempotent producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitProducerIdRequest {}

/// A producer id, never given out twice by a cluster, and its epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

impl Request for InitProducerIdRequest {
    const API_KEY: ApiKey = ApiKey::InitProducerId;
    type Response = Reply<ProducerIdentity>;
}

/// Moves leadership back to the preferred replica (the first of the
/// replica list) where it is online and in sync: of one partition, of one
/// topic's partitions, or of every partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectPreferredRequest {
    pub topic: Option<TopicName>,
    pub partition: Option<PartitionId>,
}

/// What an election did for one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionResult {
    pub key: PartitionKey,
    /// The leader after the election.
    pub leader: Option<SpuId>,
    pub leader_epoch: LeaderEpoch,
    /// `None` when the preferred replica leads now; otherwise why not.
    pub error: Option<ApiError>,
}

impl Request for ElectPreferredRequest {
    const API_KEY: ApiKey = ApiKey::ElectPreferred;
    type Response = Reply<Vec<ElectionResult>>;
}

// ---- SC private: SPUs ----

/// An SPU announces itself and receives its replica assignments as a
/// stream for as long as the connection lasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpuConnectRequest {
    pub spec: SpuSpec,
}

impl Request for SpuConnectRequest {
    const API_KEY: ApiKey = ApiKey::SpuConnect;
    type Response = AssignmentUpdate;
    const STREAMING: bool = true;
}

/// Sent by a connected SPU every heartbeat interval, with the state of
/// each replica it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpuHeartbeatRequest {
    pub id: SpuId,
    pub replicas: Vec<(TopicName, PartitionId, ReplicaStatus)>,
}

impl Request for SpuHeartbeatRequest {
    const API_KEY: ApiKey = ApiKey::SpuHeartbeat;
    type Response = Reply<()>;
}

/// A leader asks the SC to change a partition's ISR. Accepted only from
/// the current leader with the current epoch, and only if `current_isr`
/// is the ISR the SC holds (so two proposals never cross).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterIsrRequest {
    pub spu: SpuId,
    pub key: PartitionKey,
    pub leader_epoch: LeaderEpoch,
    pub current_isr: Vec<SpuId>,
    pub new_isr: Vec<SpuId>,
}

impl Request for AlterIsrRequest {
    /// The ISR the SC committed.
    type Response = Reply<Vec<SpuId>>;
    const API_KEY: ApiKey = ApiKey::AlterIsr;
}

// ---- SPU public: data ----

/// When a produce is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Acks {
    /// Once the high watermark has passed the records and the ISR holds
    /// at least the topic's minimum: every in-sync replica has them.
    #[default]
    All,
    /// Once the leader has appended them under the topic's flush policy.
    Leader,
    /// Once the leader has written them, without waiting for a flush or
    /// for any replica.
    None,
}

/// Appends record batches (the frame's tail: whole RecordBatch v2
/// batches, one after another) to one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceRequest {
    pub topic: TopicName,
    pub partition: PartitionId,
    pub acks: Acks,
    /// How long the leader may wait for replicas under `acks=all` before
    /// answering with a retriable timeout.
    pub timeout_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceResponse {
    /// Offset of the first record appended.
    pub base_offset: Offset,
    /// Log end offset after the append.
    pub log_end_offset: Offset,
}

impl Acks {
    pub fn as_str(self) -> &'static str {
        match self {
            Acks::All => "all",
            Acks::Leader => "leader",
            Acks::None => "none",
        }
    }
}

impl std::fmt::Display for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Acks {
    type Err = String;

    fn from_str(text: &str) -> Result<Acks, String> {
        match text {
            "all" => Ok(Acks::All),
            "leader" => Ok(Acks::Leader),
            "none" => Ok(Acks::None),
            other => Err(format!(
                "unknown acks level '{other}'; use all, leader or none"
            )),
        }
    }
}

impl Request for ProduceRequest {
    const API_KEY: ApiKey = ApiKey::Produce;
    type Response = Reply<ProduceResponse>;
}

/// Streams a partition from `offset` on: everything there is, then each
/// new batch as soon as it is appended. One item per credit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamFetchRequest {
    pub topic: TopicName,
    pub partition: PartitionId,
    pub offset: Offset,
    /// Largest tail of one item; an item always holds at least one whole
    /// batch.
    pub max_bytes: u32,
}

/// One item of a fetch stream: positions, then whole batches (the frame's
/// tail) starting at or before `first_offset`... `next_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchItem {
    /// Base offset of the first batch in the tail (it may hold records
    /// before the requested offset; the consumer skips them).
    pub first_offset: Offset,
    /// Offset after the last batch in the tail; where the next item starts.
    pub next_offset: Offset,
    pub log_start_offset: Offset,
    /// Offset after the last record that is committed.
    pub high_watermark: Offset,
}

impl Request for StreamFetchRequest {
    const API_KEY: ApiKey = ApiKey::StreamFetch;
    type Response = FetchItem;
    const STREAMING: bool = true;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OffsetQuery {
    /// The first offset still held.
    Start,
    /// The offset the next record will get.
    End,
    /// The first offset whose batch holds a record at or after this time
    /// (milliseconds since the epoch), or the end if there is none.
    Timestamp(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOffsetsRequest {
    pub topic: TopicName,
    pub partition: PartitionId,
    pub query: OffsetQuery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOffsetsResponse {
    pub offset: Offset,
    pub log_start_offset: Offset,
    pub high_watermark: Offset,
}

impl Request for ListOffsetsRequest {
    const API_KEY: ApiKey = ApiKey::ListOffsets;
    type Response = Reply<ListOffsetsResponse>;
}

// ---- SPU private: replication ----

/// Where a follower wants one partition from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPartition {
    pub key: PartitionKey,
    /// The epoch the follower takes the leader to have.
    pub leader_epoch: LeaderEpoch,
    /// The follower's log end: the first offset it lacks.
    pub offset: Offset,
}

/// The one replication stream from a follower SPU to a leader SPU: the
/// leader pushes batches of every listed partition as they are appended.
/// A follower whose set of partitions changes opens a new stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSyncRequest {
    pub follower: SpuId,
    pub partitions: Vec<SyncPartition>,
}

/// One item of a replication stream, about `partitions[index]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncItem {
    pub index: u32,
    pub kind: SyncKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncKind {
    /// Whole batches (the frame's tail) from `first_offset` to
    /// `next_offset`, offsets and epochs as the leader stored them.
    Records {
        first_offset: Offset,
        next_offset: Offset,
        log_start_offset: Offset,
        high_watermark: Offset,
    },
    /// The high watermark moved with no new records for this follower.
    HighWatermark {
        log_start_offset: Offset,
        high_watermark: Offset,
    },
    /// The leader no longer holds the requested offset (retention
    /// deleted it): the follower starts over, empty, at `log_start_offset`.
    StartOver { log_start_offset: Offset },
    /// The leader stopped serving this partition to the follower (wrong
    /// epoch, not the leader any more, removed); the follower finds the
    /// new leader through the SC.
    Stopped(ApiError),
}

impl Request for ReplicaSyncRequest {
    const API_KEY: ApiKey = ApiKey::ReplicaSync;
    type Response = SyncItem;
    const STREAMING: bool = true;
}

/// A follower's log end on one partition, after an append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaPosition {
    pub key: PartitionKey,
    pub leader_epoch: LeaderEpoch,
    /// Records below this are on the follower's disk (durable under
    /// `flush always`).
    pub log_end_offset: Offset,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaPositionsRequest {
    pub follower: SpuId,
    pub positions: Vec<ReplicaPosition>,
}

impl Request for ReplicaPositionsRequest {
    const API_KEY: ApiKey = ApiKey::ReplicaPositions;
    type Response = Reply<()>;
}

/// A follower that starts following `leader_epoch` asks where `epoch`
/// (its own latest) ends in the leader's log, to cut its divergent
/// suffix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchEpochEndRequest {
    pub key: PartitionKey,
    pub leader_epoch: LeaderEpoch,
    pub epoch: LeaderEpoch,
}

/// The largest epoch ≤ the asked one that the leader's log knows, and
/// the offset where it ends; `None` when the leader knows no epoch that
/// old (the follower keeps nothing below the leader's log start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochEnd {
    pub epoch_end: Option<(LeaderEpoch, Offset)>,
    pub log_start_offset: Offset,
}

impl Request for FetchEpochEndRequest {
    const API_KEY: ApiKey = ApiKey::FetchEpochEnd;
    type Response = Reply<EpochEnd>;
}
