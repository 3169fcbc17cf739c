//! The SC's durable metadata store: topics, partition placements and
//! leadership, SPU specs and the metadata version, in one redb file.
//!
//! Every change is a [`Batch`] of [`Mutation`]s applied in one write
//! transaction together with the new version, so after a crash the store
//! holds either all of a change or none of it. Values are `serde_json`
//! bytes: readable with any redb tool and tolerant of added fields.
//!
//! The store checks each batch against what it already holds (a partition
//! needs its topic, a deletion needs its row, a topic is deleted only
//! after its partitions, versions only grow) and refuses an inconsistent
//! one whole, so a bug in the controller's memory cannot corrupt the disk.
//! The same checks run again on [`Store::load`].
//!
//! The store also holds the cluster id: random, made once when the store
//! is created, and sent to every SPU so that an SPU never takes orders
//! (deletions above all) from the SC of another cluster, or from one that
//! lost its store and started over.
//!
//! It also hands out producer ids: a counter bumped in a transaction of
//! its own before an id is given, so no id is given twice, across
//! restarts and crashes too.
//!
//! Not stored: whether an SPU is online and the replica reports of
//! heartbeats. Both are rebuilt from live connections after a restart.
//!
//! `security`: users, the authorization policy, issued and revoked
//! certificates, in tables of their own.

mod security;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use runnel_metadata::{PartitionKey, PartitionSpec, SpuSpec, Topic};
use runnel_types::{LeaderEpoch, SpuId, TopicName};
use serde::{Deserialize, Serialize};

pub use self::security::{
    HashedPassword, IssuedRecord, LoadedSecurity, NOT_AFTER_UNKNOWN, SecurityMutation,
    canonical_serial,
};

/// Topic name → [`Topic`] (spec and state).
const TOPICS: TableDefinition<&str, &[u8]> = TableDefinition::new("topics");
/// (topic name, partition index) → [`PartitionRecord`].
const PARTITIONS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("partitions");
/// SPU id → [`SpuSpec`].
const SPUS: TableDefinition<u32, &[u8]> = TableDefinition::new("spus");
/// Named counters: [`VERSION_KEY`] and [`PRODUCER_ID_KEY`].
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// The metadata version of the last committed change.
const VERSION_KEY: &str = "metadata_version";
/// The next producer id to give; absent before the first.
const PRODUCER_ID_KEY: &str = "next_producer_id";
/// Named identities; today only [`CLUSTER_ID_KEY`].
const IDENTITY: TableDefinition<&str, &str> = TableDefinition::new("identity");
/// The cluster id, made when the store is created.
const CLUSTER_ID_KEY: &str = "cluster_id";
/// Random bytes in a cluster id (hex-encoded, twice as many characters).
const CLUSTER_ID_BYTES: usize = 16;

/// What the store keeps of a partition: its placement and leadership. The
/// replica reports of a [`runnel_metadata::PartitionStatus`] are live
/// data and are not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub spec: PartitionSpec,
    pub leader: Option<SpuId>,
    pub leader_epoch: LeaderEpoch,
    pub in_sync_replicas: Vec<SpuId>,
}

/// One change to one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    PutTopic(Topic),
    DeleteTopic(TopicName),
    PutPartition(PartitionRecord),
    DeletePartition(PartitionKey),
    PutSpu(SpuSpec),
    DeleteSpu(SpuId),
}

/// Mutations committed together, with the version they bring the store to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub version: u64,
    pub mutations: Vec<Mutation>,
}

/// Everything the store holds, as read at startup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    pub version: u64,
    /// In name order.
    pub topics: Vec<Topic>,
    /// In (topic, partition) order.
    pub partitions: Vec<PartitionRecord>,
    /// In id order.
    pub spus: Vec<SpuSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the metadata store {path} is open in another process; is another SC running with this data directory?"
    )]
    InUse { path: PathBuf },
    #[error("cannot open the metadata store {path}: {source}; check the file and its permissions")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("metadata store error: {0}")]
    Database(#[from] redb::Error),
    #[error("the metadata store holds an undecodable {table} entry {key}: {reason}")]
    Corrupt {
        table: &'static str,
        key: String,
        reason: String,
    },
    /// A batch that would leave the store inconsistent; nothing of it was
    /// written.
    #[error("refused an inconsistent metadata change: {0}")]
    Inconsistent(String),
    #[error(
        "every producer id of this cluster has been given out; idempotent producers need a new cluster"
    )]
    ProducerIdsExhausted,
    #[error(
        "cannot make a cluster id for a new metadata store: reading {source_path} failed: {source}; the SC needs a working random source"
    )]
    Random {
        source_path: &'static str,
        source: std::io::Error,
    },
}

impl From<redb::TransactionError> for StoreError {
    fn from(error: redb::TransactionError) -> Self {
        StoreError::Database(error.into())
    }
}

impl From<redb::TableError> for StoreError {
    fn from(error: redb::TableError) -> Self {
        StoreError::Database(error.into())
    }
}

impl From<redb::StorageError> for StoreError {
    fn from(error: redb::StorageError) -> Self {
        StoreError::Database(error.into())
    }
}

impl From<redb::CommitError> for StoreError {
    fn from(error: redb::CommitError) -> Self {
        StoreError::Database(error.into())
    }
}

/// The metadata store. Its methods do blocking I/O (fsync on commit):
/// async callers run them on a blocking thread.
#[derive(Debug)]
pub struct Store {
    database: Database,
    cluster_id: String,
}

impl Store {
    /// Opens the store at `path`, creating it if it does not exist.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let database = Database::create(path).map_err(|source| match source {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                path: path.to_path_buf(),
            },
            source => StoreError::Open {
                path: path.to_path_buf(),
                source,
            },
        })?;
        Store::with_database(database)
    }

    /// Opens a store kept by `backend`: lets tests fail the disk on
    /// purpose.
    #[cfg(test)]
    pub fn open_backend(backend: impl redb::StorageBackend) -> Result<Store, StoreError> {
        let database = Database::builder()
            .create_with_backend(backend)
            .map_err(|source| StoreError::Open {
                path: PathBuf::from("<backend>"),
                source,
            })?;
        Store::with_database(database)
    }

    fn with_database(database: Database) -> Result<Store, StoreError> {
        // Creating the tables up front lets every read find them.
        let transaction = database.begin_write()?;
        transaction.open_table(TOPICS)?;
        transaction.open_table(PARTITIONS)?;
        transaction.open_table(SPUS)?;
        transaction.open_table(COUNTERS)?;
        security::create_tables(&transaction)?;
        let cluster_id = {
            let mut identity = transaction.open_table(IDENTITY)?;
            let stored = identity
                .get(CLUSTER_ID_KEY)?
                .map(|guard| guard.value().to_string());
            match stored {
                Some(cluster_id) => cluster_id,
                None => {
                    let cluster_id = new_cluster_id()?;
                    identity.insert(CLUSTER_ID_KEY, cluster_id.as_str())?;
                    cluster_id
                }
            }
        };
        transaction.commit()?;
        Ok(Store {
            database,
            cluster_id,
        })
    }

    /// The id of the cluster this store describes: the same for the life
    /// of the store file.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Reads everything, checking that it is consistent.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let transaction = self.database.begin_read()?;
        let version = transaction
            .open_table(COUNTERS)?
            .get(VERSION_KEY)?
            .map_or(0, |guard| guard.value());

        let mut topics = Vec::new();
        for entry in transaction.open_table(TOPICS)?.iter()? {
            let (key, value) = entry?;
            let topic: Topic = decode("topics", key.value(), value.value())?;
            if topic.spec.name.as_str() != key.value() {
                return Err(corrupt(
                    "topics",
                    key.value(),
                    format!("the entry names topic '{}'", topic.spec.name),
                ));
            }
            if let Some(problem) = topic_id_problem(&topic, version) {
                return Err(corrupt("topics", key.value(), problem));
            }
            topics.push(topic);
        }
        let names: BTreeSet<&str> = topics
            .iter()
            .map(|topic| topic.spec.name.as_str())
            .collect();

        let mut partitions = Vec::new();
        for entry in transaction.open_table(PARTITIONS)?.iter()? {
            let (key, value) = entry?;
            let (topic, index) = key.value();
            let label = format!("{topic}-{index}");
            let record: PartitionRecord = decode("partitions", &label, value.value())?;
            if record.spec.key.topic.as_str() != topic || record.spec.key.partition.0 != index {
                return Err(corrupt(
                    "partitions",
                    &label,
                    format!("the entry names partition {}", record.spec.key),
                ));
            }
            if !names.contains(topic) {
                return Err(corrupt(
                    "partitions",
                    &label,
                    format!("its topic '{topic}' is not stored"),
                ));
            }
            if let Some(problem) = partition_problem(&record) {
                return Err(corrupt("partitions", &label, problem));
            }
            partitions.push(record);
        }

        let mut spus = Vec::new();
        for entry in transaction.open_table(SPUS)?.iter()? {
            let (key, value) = entry?;
            let spec: SpuSpec = decode("spus", &key.value().to_string(), value.value())?;
            if spec.id.0 != key.value() {
                return Err(corrupt(
                    "spus",
                    &key.value().to_string(),
                    format!("the entry names SPU {}", spec.id),
                ));
            }
            spus.push(spec);
        }
        Ok(Loaded {
            version,
            topics,
            partitions,
            spus,
        })
    }

    /// Applies `batch` in one durable transaction: all of it or, on any
    /// error, none of it.
    pub fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        let transaction = self.database.begin_write()?;
        {
            let mut counters = transaction.open_table(COUNTERS)?;
            let current = counters.get(VERSION_KEY)?.map_or(0, |guard| guard.value());
            if batch.version <= current {
                return Err(StoreError::Inconsistent(format!(
                    "version {} does not follow the stored version {current}",
                    batch.version
                )));
            }
            counters.insert(VERSION_KEY, batch.version)?;

            let mut topics = transaction.open_table(TOPICS)?;
            let mut partitions = transaction.open_table(PARTITIONS)?;
            let mut spus = transaction.open_table(SPUS)?;
            for mutation in &batch.mutations {
                match mutation {
                    Mutation::PutTopic(topic) => {
                        if let Some(problem) = topic_id_problem(topic, batch.version) {
                            return Err(StoreError::Inconsistent(problem));
                        }
                        topics.insert(topic.spec.name.as_str(), encode(topic).as_slice())?;
                    }
                    Mutation::DeleteTopic(name) => {
                        let first = (name.as_str(), 0);
                        let last = (name.as_str(), u32::MAX);
                        if partitions.range(first..=last)?.next().is_some() {
                            return Err(StoreError::Inconsistent(format!(
                                "topic '{name}' is deleted while it still has partitions"
                            )));
                        }
                        if topics.remove(name.as_str())?.is_none() {
                            return Err(StoreError::Inconsistent(format!(
                                "topic '{name}' is deleted but not stored"
                            )));
                        }
                    }
                    Mutation::PutPartition(record) => {
                        let key = &record.spec.key;
                        if topics.get(key.topic.as_str())?.is_none() {
                            return Err(StoreError::Inconsistent(format!(
                                "partition {key} is stored before its topic"
                            )));
                        }
                        if let Some(problem) = partition_problem(record) {
                            return Err(StoreError::Inconsistent(problem));
                        }
                        let label = key.to_string();
                        let previous = partitions
                            .get((key.topic.as_str(), key.partition.0))?
                            .map(|guard| {
                                decode::<PartitionRecord>("partitions", &label, guard.value())
                            })
                            .transpose()?;
                        if let Some(problem) =
                            previous.and_then(|previous| succession_problem(&previous, record))
                        {
                            return Err(StoreError::Inconsistent(problem));
                        }
                        partitions.insert(
                            (key.topic.as_str(), key.partition.0),
                            encode(record).as_slice(),
                        )?;
                    }
                    Mutation::DeletePartition(key) => {
                        if partitions
                            .remove((key.topic.as_str(), key.partition.0))?
                            .is_none()
                        {
                            return Err(StoreError::Inconsistent(format!(
                                "partition {key} is deleted but not stored"
                            )));
                        }
                    }
                    Mutation::PutSpu(spec) => {
                        spus.insert(spec.id.0, encode(spec).as_slice())?;
                    }
                    Mutation::DeleteSpu(id) => {
                        if spus.remove(id.0)?.is_none() {
                            return Err(StoreError::Inconsistent(format!(
                                "SPU {id} is deleted but not stored"
                            )));
                        }
                    }
                }
            }
        }
        // Returning early above drops the transaction, which aborts it.
        transaction.commit()?;
        Ok(())
    }

    /// Gives the next producer id, in one durable transaction of its own:
    /// once it returns, no later call (after a crash or restart too)
    /// returns the same id.
    pub fn next_producer_id(&self) -> Result<i64, StoreError> {
        let transaction = self.database.begin_write()?;
        let id = {
            let mut counters = transaction.open_table(COUNTERS)?;
            let id = counters
                .get(PRODUCER_ID_KEY)?
                .map_or(0, |guard| guard.value());
            let producer_id = i64::try_from(id)
                .ok()
                .filter(|&id| id < i64::MAX)
                .ok_or(StoreError::ProducerIdsExhausted)?;
            counters.insert(PRODUCER_ID_KEY, id + 1)?;
            producer_id
        };
        transaction.commit()?;
        Ok(id)
    }
}

/// What is wrong with a partition record on its own: replicas, ISR and
/// leader must agree (the ISR is never empty, see `election`).
fn partition_problem(record: &PartitionRecord) -> Option<String> {
    let key = &record.spec.key;
    let replicas = &record.spec.replicas;
    let in_sync = &record.in_sync_replicas;
    let distinct = |list: &[SpuId]| list.iter().collect::<BTreeSet<_>>().len() == list.len();
    if replicas.is_empty() || !distinct(replicas) {
        return Some(format!(
            "partition {key} has replicas {replicas:?}: they must be distinct and at least one"
        ));
    }
    if in_sync.is_empty() || !distinct(in_sync) {
        return Some(format!(
            "partition {key} has ISR {in_sync:?}: it must be distinct SPUs and never empty"
        ));
    }
    if let Some(stranger) = in_sync.iter().find(|spu| !replicas.contains(spu)) {
        return Some(format!(
            "partition {key} has SPU {stranger} in its ISR but not among its replicas {replicas:?}"
        ));
    }
    if let Some(leader) = record.leader
        && !in_sync.contains(&leader)
    {
        return Some(format!(
            "partition {key} is led by SPU {leader}, which is not in its ISR {in_sync:?}"
        ));
    }
    (record.leader_epoch.0 < 0).then(|| {
        format!(
            "partition {key} has the negative leader epoch {}",
            record.leader_epoch
        )
    })
}

/// What is wrong with `next` replacing `previous`: epochs never go back,
/// and a change of leader always comes with a new epoch, so a deposed
/// leader is fenced.
fn succession_problem(previous: &PartitionRecord, next: &PartitionRecord) -> Option<String> {
    let key = &next.spec.key;
    if next.leader_epoch < previous.leader_epoch {
        return Some(format!(
            "partition {key}'s leader epoch would go back from {} to {}",
            previous.leader_epoch, next.leader_epoch
        ));
    }
    (next.leader != previous.leader && next.leader_epoch == previous.leader_epoch).then(|| {
        format!(
            "partition {key}'s leader would change from {:?} to {:?} within epoch {}",
            previous.leader, next.leader, next.leader_epoch
        )
    })
}

/// What is wrong with `topic`'s id in a store at `version`: an id is the
/// version the topic was created at, so it is positive and not beyond the
/// version.
fn topic_id_problem(topic: &Topic, version: u64) -> Option<String> {
    let id = topic.topic_id;
    (id == 0 || id > version).then(|| {
        format!(
            "topic '{}' has id {id}, which is not a version from 1 to {version}",
            topic.spec.name
        )
    })
}

/// A fresh random cluster id, hex-encoded.
fn new_cluster_id() -> Result<String, StoreError> {
    const SOURCE: &str = "/dev/urandom";
    let mut bytes = [0u8; CLUSTER_ID_BYTES];
    std::fs::File::open(SOURCE)
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(|source| StoreError::Random {
            source_path: SOURCE,
            source,
        })?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("metadata objects always serialize to JSON")
}

fn decode<T: for<'de> Deserialize<'de>>(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| corrupt(table, key, error.to_string()))
}

fn corrupt(table: &'static str, key: &str, reason: String) -> StoreError {
    StoreError::Corrupt {
        table,
        key: key.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use redb::StorageBackend;
    use runnel_metadata::{TopicConfig, TopicSpec, TopicState};
    use runnel_types::PartitionId;

    use super::*;

    fn topic(name: &str, partitions: u32, topic_id: u64) -> Topic {
        Topic {
            spec: TopicSpec {
                name: TopicName::new(name).expect("valid test name"),
                partitions,
                replication_factor: 1,
                config: TopicConfig::default(),
            },
            topic_id,
            state: TopicState::Provisioned,
        }
    }

    fn partition(name: &str, index: u32, spu: u32) -> PartitionRecord {
        PartitionRecord {
            spec: PartitionSpec {
                key: PartitionKey {
                    topic: TopicName::new(name).expect("valid test name"),
                    partition: PartitionId(index),
                },
                replicas: vec![SpuId(spu)],
            },
            leader: Some(SpuId(spu)),
            leader_epoch: LeaderEpoch(0),
            in_sync_replicas: vec![SpuId(spu)],
        }
    }

    /// Partition 0 of `name` on SPUs 1 and 2 with this leader and ISR, at
    /// epoch 0.
    fn replicated(name: &str, leader: Option<u32>, in_sync: &[u32]) -> PartitionRecord {
        PartitionRecord {
            spec: PartitionSpec {
                replicas: vec![SpuId(1), SpuId(2)],
                ..partition(name, 0, 1).spec
            },
            leader: leader.map(SpuId),
            leader_epoch: LeaderEpoch(0),
            in_sync_replicas: in_sync.iter().copied().map(SpuId).collect(),
        }
    }

    fn spu(id: u32) -> SpuSpec {
        SpuSpec {
            id: SpuId(id),
            public_addr: format!("127.0.0.1:{}", 9000 + id),
            private_addr: format!("127.0.0.1:{}", 9100 + id),
            rack: None,
        }
    }

    fn topic_with_partitions(version: u64, name: &str, count: u32) -> Batch {
        let mut mutations = vec![Mutation::PutTopic(topic(name, count, version))];
        mutations.extend((0..count).map(|index| Mutation::PutPartition(partition(name, index, 1))));
        Batch { version, mutations }
    }

    #[test]
    fn reopen_keeps_every_committed_change() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("metadata.redb");
        {
            let store = Store::open(&path).expect("open");
            assert_eq!(store.load().expect("load"), Loaded::default());
            store
                .apply(&Batch {
                    version: 1,
                    mutations: vec![Mutation::PutSpu(spu(1)), Mutation::PutSpu(spu(2))],
                })
                .expect("spus");
            store
                .apply(&topic_with_partitions(2, "orders", 2))
                .expect("orders");
            store
                .apply(&topic_with_partitions(3, "audit", 1))
                .expect("audit");
            store
                .apply(&Batch {
                    version: 4,
                    mutations: vec![
                        Mutation::DeletePartition(partition("audit", 0, 1).spec.key),
                        Mutation::DeleteTopic(TopicName::new("audit").expect("valid")),
                        Mutation::DeleteSpu(SpuId(2)),
                    ],
                })
                .expect("deletes");
        }
        let store = Store::open(&path).expect("reopen");
        let loaded = store.load().expect("load");
        assert_eq!(
            loaded,
            Loaded {
                version: 4,
                topics: vec![topic("orders", 2, 2)],
                partitions: vec![partition("orders", 0, 1), partition("orders", 1, 1)],
                spus: vec![spu(1)],
            }
        );
    }

    #[test]
    fn the_cluster_id_is_made_once_per_store() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("metadata.redb");
        let first = Store::open(&path).expect("open").cluster_id().to_string();
        assert_eq!(first.len(), 2 * CLUSTER_ID_BYTES, "{first}");
        assert!(
            first.bytes().all(|byte| byte.is_ascii_hexdigit()),
            "{first}"
        );
        let reopened = Store::open(&path).expect("reopen");
        assert_eq!(reopened.cluster_id(), first);

        let other = tempfile::tempdir().expect("temp dir");
        let another = Store::open(&other.path().join("metadata.redb")).expect("open");
        assert_ne!(
            another.cluster_id(),
            first,
            "each new store is a new cluster"
        );
    }

    #[test]
    fn a_store_in_use_is_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("metadata.redb");
        let _first = Store::open(&path).expect("open");
        let error = Store::open(&path).expect_err("second open");
        assert!(matches!(error, StoreError::InUse { .. }), "{error}");
        assert!(error.to_string().contains("another SC"), "{error}");
    }

    /// Each batch is refused whole; the store keeps what it had.
    #[test]
    fn an_inconsistent_batch_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("metadata.redb");
        let store = Store::open(&path).expect("open");
        let mut orders = topic_with_partitions(1, "orders", 1);
        orders.mutations[1] = Mutation::PutPartition(PartitionRecord {
            leader_epoch: LeaderEpoch(3),
            ..replicated("orders", Some(1), &[1, 2])
        });
        store.apply(&orders).expect("orders");
        let before = store.load().expect("load");
        let put = |record: PartitionRecord| Batch {
            version: 2,
            mutations: vec![Mutation::PutPartition(record)],
        };

        let refused = [
            // The ISR never names a stranger, is never empty, and holds
            // the leader.
            put(replicated("orders", Some(1), &[1, 3])),
            put(replicated("orders", None, &[])),
            put(replicated("orders", Some(2), &[1])),
            // Replicas are distinct.
            put(PartitionRecord {
                spec: PartitionSpec {
                    replicas: vec![SpuId(1), SpuId(1)],
                    ..replicated("orders", None, &[1]).spec
                },
                ..replicated("orders", None, &[1])
            }),
            // Epochs never go back; a new leader needs a new epoch.
            put(PartitionRecord {
                leader_epoch: LeaderEpoch(2),
                ..replicated("orders", Some(1), &[1])
            }),
            put(PartitionRecord {
                leader_epoch: LeaderEpoch(3),
                ..replicated("orders", Some(2), &[1, 2])
            }),
            // Adds a topic, then deletes one that does not exist.
            Batch {
                version: 2,
                mutations: vec![
                    Mutation::PutTopic(topic("fresh", 1, 2)),
                    Mutation::PutPartition(partition("fresh", 0, 1)),
                    Mutation::DeleteTopic(TopicName::new("missing").expect("valid")),
                ],
            },
            // A partition without its topic.
            Batch {
                version: 2,
                mutations: vec![
                    Mutation::PutSpu(spu(7)),
                    Mutation::PutPartition(partition("ghost", 0, 1)),
                ],
            },
            // A topic deleted before its partitions.
            Batch {
                version: 2,
                mutations: vec![Mutation::DeleteTopic(
                    TopicName::new("orders").expect("valid"),
                )],
            },
            // A version that does not grow.
            Batch {
                version: 1,
                mutations: vec![Mutation::PutSpu(spu(8))],
            },
            Batch {
                version: 2,
                mutations: vec![Mutation::PutSpu(spu(9)), Mutation::DeleteSpu(SpuId(3))],
            },
            // Topic ids are versions at creation: never 0, never ahead.
            Batch {
                version: 2,
                mutations: vec![Mutation::PutTopic(topic("zero", 1, 0))],
            },
            Batch {
                version: 2,
                mutations: vec![Mutation::PutTopic(topic("ahead", 1, 3))],
            },
        ];
        for batch in &refused {
            let error = store.apply(batch).expect_err("refused");
            assert!(matches!(error, StoreError::Inconsistent(_)), "{error}");
            assert_eq!(store.load().expect("load"), before, "{batch:?}");
        }
        drop(store);
        assert_eq!(
            Store::open(&path).expect("reopen").load().expect("load"),
            before
        );
    }

    #[test]
    fn a_partition_accepts_the_changes_elections_make() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("metadata.redb")).expect("open");
        let mut orders = topic_with_partitions(1, "orders", 1);
        orders.mutations[1] = Mutation::PutPartition(replicated("orders", Some(1), &[1, 2]));
        store.apply(&orders).expect("orders");
        let changes = [
            // The ISR shrinks, same epoch.
            replicated("orders", Some(1), &[1]),
            // The leader fails: no leader, next epoch, ISR kept.
            PartitionRecord {
                leader_epoch: LeaderEpoch(1),
                ..replicated("orders", None, &[1])
            },
            // Unclean election.
            PartitionRecord {
                leader_epoch: LeaderEpoch(2),
                ..replicated("orders", Some(2), &[2])
            },
        ];
        for (version, record) in (2..).zip(changes) {
            store
                .apply(&Batch {
                    version,
                    mutations: vec![Mutation::PutPartition(record.clone())],
                })
                .expect("accepted");
            assert_eq!(store.load().expect("load").partitions, vec![record]);
        }
    }

    #[test]
    fn producer_ids_are_never_given_twice() {
        let disk = FaultyDisk::default();
        let store = Store::open_backend(disk.clone()).expect("open");
        assert_eq!(store.next_producer_id().expect("id"), 0);
        assert_eq!(store.next_producer_id().expect("id"), 1);
        drop(store);
        // Given ids were durable before they were given.
        disk.crash();
        let store = Store::open_backend(disk.clone()).expect("reopen");
        assert_eq!(store.next_producer_id().expect("id"), 2);

        disk.fail_sync.store(true, Ordering::SeqCst);
        store.next_producer_id().expect_err("fsync fails");
        drop(store);
        disk.crash();
        disk.fail_sync.store(false, Ordering::SeqCst);
        let store = Store::open_backend(disk.clone()).expect("reopen");
        // The id whose commit failed was never given: reusing it is safe.
        assert_eq!(store.next_producer_id().expect("id"), 3);
        assert_eq!(
            store.load().expect("load").version,
            0,
            "producer ids are no metadata change"
        );
    }

    /// A disk in memory that outlives a database: written bytes become
    /// durable on a successful fsync, and a crash keeps only durable ones.
    /// Its fsync can be made to fail.
    #[derive(Debug, Clone, Default)]
    struct FaultyDisk {
        written: Arc<Mutex<Vec<u8>>>,
        durable: Arc<Mutex<Vec<u8>>>,
        fail_sync: Arc<AtomicBool>,
    }

    impl FaultyDisk {
        /// Loses everything not made durable, as a power failure would.
        fn crash(&self) {
            let durable = self.durable.lock().expect("disk lock").clone();
            *self.written.lock().expect("disk lock") = durable;
        }
    }

    impl StorageBackend for FaultyDisk {
        fn len(&self) -> Result<u64, io::Error> {
            Ok(self.written.lock().expect("disk lock").len() as u64)
        }

        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
            let bytes = self.written.lock().expect("disk lock");
            let start = offset as usize;
            let source = bytes
                .get(start..start + out.len())
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past end"))?;
            out.copy_from_slice(source);
            Ok(())
        }

        fn set_len(&self, len: u64) -> Result<(), io::Error> {
            self.written
                .lock()
                .expect("disk lock")
                .resize(len as usize, 0);
            Ok(())
        }

        fn sync_data(&self) -> Result<(), io::Error> {
            if self.fail_sync.load(Ordering::SeqCst) {
                return Err(io::Error::other("injected fsync failure"));
            }
            let written = self.written.lock().expect("disk lock").clone();
            *self.durable.lock().expect("disk lock") = written;
            Ok(())
        }

        fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
            let mut bytes = self.written.lock().expect("disk lock");
            let start = offset as usize;
            if bytes.len() < start + data.len() {
                bytes.resize(start + data.len(), 0);
            }
            bytes[start..start + data.len()].copy_from_slice(data);
            Ok(())
        }
    }

    /// A commit whose fsync fails is reported, and after a crash none of
    /// it is there.
    #[test]
    fn a_failed_commit_is_lost_whole_after_a_crash() {
        let disk = FaultyDisk::default();
        let store = Store::open_backend(disk.clone()).expect("open");
        store
            .apply(&topic_with_partitions(1, "orders", 2))
            .expect("orders");
        let before = store.load().expect("load");

        disk.fail_sync.store(true, Ordering::SeqCst);
        let error = store
            .apply(&topic_with_partitions(2, "audit", 3))
            .expect_err("fsync fails");
        assert!(matches!(error, StoreError::Database(_)), "{error}");
        drop(store);
        disk.crash();

        disk.fail_sync.store(false, Ordering::SeqCst);
        let store = Store::open_backend(disk.clone()).expect("reopen");
        assert_eq!(store.load().expect("load"), before);
        store
            .apply(&topic_with_partitions(2, "audit", 1))
            .expect("the store works again");
    }
}
