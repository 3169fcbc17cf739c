//! Cluster metadata as plain data: what the user asked for (spec) and what
//! is true now (status), for topics, partitions and SPUs.
//!
//! No I/O and no behaviour beyond small derivations: the SC persists and
//! reconciles these objects, the SPU and clients receive them as a stream
//! (full snapshot, then deltas) and keep a [`MetadataView`].

mod view;

use std::fmt;

use runnel_types::{
    ByteSize, Duration, FlushPolicy, LeaderEpoch, Offset, PartitionId, SpuId, TopicName,
};
use runnel_wire::Compression;
use serde::{Deserialize, Serialize};

pub use view::MetadataView;

/// Largest partition count of one topic: bounds placement work and the
/// size of metadata messages.
pub const MAX_PARTITIONS: u32 = 10_000;
/// Largest replication factor accepted in a spec.
pub const MAX_REPLICATION_FACTOR: u16 = 16;

/// Settings of a topic that its partition logs follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Records older than this are deleted (by sealed segment); `None`
    /// keeps them forever.
    pub retention_time: Option<Duration>,
    /// Oldest segments are deleted while a partition is larger than this.
    pub max_partition_size: Option<ByteSize>,
    pub segment_size: ByteSize,
    /// Codec the producers of this topic use unless they choose one.
    pub compression: Compression,
    pub flush: FlushPolicy,
    /// Replicas that must be in sync for an `acks=all` produce to be
    /// accepted; `None` means min(2, replication factor).
    #[serde(default)]
    pub min_in_sync_replicas: Option<u16>,
    /// Whether a replica outside the ISR may be elected leader when no
    /// in-sync replica is online (losing the records it lacks).
    #[serde(default)]
    pub unclean_election: bool,
}

impl TopicConfig {
    /// The in-sync replicas an `acks=all` produce needs, for a partition
    /// of `replication_factor` replicas.
    pub fn min_in_sync(&self, replication_factor: usize) -> usize {
        match self.min_in_sync_replicas {
            Some(min) => usize::from(min),
            None => replication_factor.min(2),
        }
    }
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            retention_time: Some(Duration::from_millis(7 * 24 * 3_600_000)),
            max_partition_size: None,
            segment_size: ByteSize(1 << 30),
            compression: Compression::None,
            flush: FlushPolicy::Always,
            min_in_sync_replicas: None,
            unclean_election: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    pub name: TopicName,
    pub partitions: u32,
    pub replication_factor: u16,
    pub config: TopicConfig,
}

/// Where a topic is on its way to being served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicState {
    /// Every partition has a replica set and a leader.
    Provisioned,
    /// Not all partitions could be placed yet; the reason says what is
    /// missing (for example "3 replicas requested but 2 SPUs are online").
    Pending { reason: String },
    /// Being removed from every SPU.
    Deleting,
}

impl fmt::Display for TopicState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicState::Provisioned => f.write_str("provisioned"),
            TopicState::Pending { reason } => write!(f, "pending: {reason}"),
            TopicState::Deleting => f.write_str("deleting"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    pub spec: TopicSpec,
    /// This incarnation of the topic, assigned by the SC when it is
    /// created and never given to another: a topic deleted and created
    /// again under the same name has a new id, so an SPU can tell the old
    /// data on its disk from the new topic's.
    pub topic_id: u64,
    pub state: TopicState,
}

/// A partition's identity: topic and index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionKey {
    pub topic: TopicName,
    pub partition: PartitionId,
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Placement of a partition, owned by the SC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSpec {
    pub key: PartitionKey,
    /// SPUs holding a replica; the first is the preferred leader. Never
    /// two replicas on one SPU.
    pub replicas: Vec<SpuId>,
}

/// What one replica reported in its SPU's last heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub spu: SpuId,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
    pub high_watermark: Offset,
    pub size_bytes: u64,
    /// The replica's log is damaged, refuses writes after a failure, or
    /// did not open: it may not lead or count as in sync until it is
    /// repaired.
    #[serde(default)]
    pub damaged: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// `None` while no replica can lead (its SPUs are offline).
    pub leader: Option<SpuId>,
    /// Bumped on every leader change; stamped in every batch the leader
    /// appends.
    pub leader_epoch: LeaderEpoch,
    /// Replicas in sync with the leader.
    pub in_sync_replicas: Vec<SpuId>,
    /// The latest report of each replica.
    pub replicas: Vec<ReplicaStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub spec: PartitionSpec,
    pub status: PartitionStatus,
}

impl Partition {
    /// The leader's last report.
    pub fn leader_status(&self) -> Option<&ReplicaStatus> {
        let leader = self.status.leader?;
        self.status
            .replicas
            .iter()
            .find(|replica| replica.spu == leader)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpuSpec {
    pub id: SpuId,
    /// Address clients connect to (produce, consume).
    pub public_addr: String,
    /// Address peers connect to (replication).
    pub private_addr: String,
    pub rack: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spu {
    pub spec: SpuSpec,
    /// Connected to the SC and heartbeating within the session timeout.
    pub online: bool,
}

/// One object of any kind, as it travels in snapshots and deltas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Object {
    Topic(Topic),
    Partition(Partition),
    Spu(Spu),
}

/// The identity of an object, for deletions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectKey {
    Topic(TopicName),
    Partition(PartitionKey),
    Spu(SpuId),
}

/// A change to the metadata, numbered by the SC's store version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Upsert(Object),
    Delete(ObjectKey),
}

/// One message of a metadata watch: first a snapshot, then deltas, each
/// with the version it brings the receiver to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataUpdate {
    Snapshot { version: u64, objects: Vec<Object> },
    Delta { version: u64, changes: Vec<Change> },
}

/// A replica the SC asks an SPU to hold, with what it needs to serve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaAssignment {
    pub key: PartitionKey,
    /// The [`Topic::topic_id`] of the partition's topic: a replica
    /// directory written for another id is an older topic's data.
    pub topic_id: u64,
    pub config: TopicConfig,
    pub replicas: Vec<SpuId>,
    pub leader: Option<SpuId>,
    pub leader_epoch: LeaderEpoch,
    /// The ISR as the SC last committed it.
    pub in_sync_replicas: Vec<SpuId>,
    /// The leader's private (peer) address, where followers replicate
    /// from; `None` without a leader.
    pub leader_addr: Option<String>,
}

/// One message of an SPU's assignment stream: the full set first, then
/// changes. A removed replica's data is deleted by the SPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignmentUpdate {
    /// Every replica of the SPU. `cluster_id` names the SC's store: an SPU
    /// whose data belongs to another cluster refuses the snapshot rather
    /// than delete replicas this SC does not know.
    Snapshot {
        cluster_id: String,
        replicas: Vec<ReplicaAssignment>,
    },
    Upsert(ReplicaAssignment),
    Remove(PartitionKey),
    /// What the SPU needs to authorize its clients, whole: sent after the
    /// snapshot and after every change, when the cluster runs with
    /// security on. Until the first one arrives the SPU refuses its
    /// clients everything (deny by default).
    Security(SecurityState),
}

/// The authorization state the SC hands every SPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityState {
    /// Principals allowed everything, whatever the policy says.
    pub superusers: Vec<String>,
    pub policy: runnel_auth::Policy,
    /// Serial numbers (lower-case hex) of revoked certificates that have
    /// not expired yet.
    pub revoked: Vec<String>,
}

impl SecurityState {
    pub fn is_superuser(&self, principal: &str) -> bool {
        self.superusers
            .iter()
            .any(|superuser| superuser == principal)
    }

    /// Whether `principal` may do `action` on `resource`: superusers may do
    /// everything; node identities nothing here, whatever roles name them,
    /// since nodes use the private apis only; anyone else as the policy
    /// says, deny by default.
    pub fn decide(
        &self,
        principal: &str,
        action: runnel_auth::Action,
        resource: &runnel_auth::Resource,
    ) -> Result<(), runnel_auth::Denied> {
        if self.is_superuser(principal) {
            return Ok(());
        }
        if runnel_auth::is_node_identity(principal) {
            return Err(runnel_auth::Denied {
                principal: principal.to_owned(),
                action,
                resource: resource.clone(),
            });
        }
        self.policy.check(principal, action, resource)
    }
}
