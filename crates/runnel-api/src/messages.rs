//! The message structs of every api, grouped by listener.

use runnel_metadata::{
    AssignmentUpdate, MetadataUpdate, Partition, ReplicaStatus, Spu, SpuSpec, Topic, TopicSpec,
};
use runnel_types::{Offset, PartitionId, SpuId, TopicName};
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

// ---- SPU public: data ----

/// Appends record batches (the frame's tail: whole RecordBatch v2
/// batches, one after another) to one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceRequest {
    pub topic: TopicName,
    pub partition: PartitionId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceResponse {
    /// Offset of the first record appended.
    pub base_offset: Offset,
    /// Log end offset after the append.
    pub log_end_offset: Offset,
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
