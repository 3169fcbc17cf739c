//! A fake SC and a fake SPU on loopback, built on `runnel_transport`, so
//! the client is tested end to end without the server crates.
//!
//! - The fake SC serves `WatchMetadata` (a snapshot, then a delta per
//!   change), the admin apis over an in-memory store, and producer ids;
//!   it can be stopped and started again on the same address.
//! - The fake SPU leads every partition the SC places on it. It keeps
//!   produced batches in memory, stamping base offsets into them as a
//!   leader does, and pushes them to fetch streams as they arrive. Like
//!   the real one it answers `PARTITION_NOT_READY` for a partition it
//!   does not host (yet, or any more) and ends the fetch streams of a
//!   removed replica with `PARTITION_NOT_FOUND`. It answers a retry of a
//!   stored batch of an idempotent producer (same producer id, epoch and
//!   sequence numbers) with the offset it was stored at, as a leader
//!   does, and keeps every batch it received for tests to decode. Tests
//!   can make it refuse produces (`NOT_LEADER` or a given code), hold a
//!   produce until released, leave produces unanswered, corrupt a stored
//!   batch or rewrite its base offset.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use runnel_api::{
    ApiError, ApiKey, CreateTopicRequest, DeleteTopicRequest, ErrorCode, FetchItem,
    InitProducerIdRequest, ListOffsetsRequest, ListOffsetsResponse, ListPartitionsRequest,
    ListTopicsRequest, OffsetQuery, ProduceRequest, ProduceResponse, ProducerIdentity, Reply,
    StreamFetchRequest,
};
use runnel_client::RunnelClient;
use runnel_metadata::{
    Change, MetadataUpdate, Object, ObjectKey, Partition, PartitionKey, PartitionSpec,
    PartitionStatus, Spu, SpuSpec, Topic, TopicConfig, TopicSpec, TopicState,
};
use runnel_transport::{
    CancellationToken, Handler, IncomingRequest, Responder, StreamSender, TransportConfig, serve,
};
use runnel_types::{LeaderEpoch, Offset, PartitionId, SpuId, TopicName};
use runnel_wire::batch::{BatchHeader, NO_PRODUCER_ID, peek_total_len, set_base_offset};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

/// Upper bound of every wait in these tests. Reaching it is a failure (a
/// hang), never a measurement.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not happen within {WAIT:?}"),
    }
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName::new(name).expect("valid topic name")
}

/// The id of the one fake SPU.
pub const SPU: SpuId = SpuId(1);

/// An SC and an SPU serving on loopback.
pub struct FakeCluster {
    pub sc_addr: String,
    pub sc: Arc<FakeSc>,
    pub spu: Arc<FakeSpu>,
    spu_addr: String,
    sc_shutdown: Mutex<CancellationToken>,
    spu_shutdown: Mutex<CancellationToken>,
}

impl FakeCluster {
    pub async fn start() -> FakeCluster {
        let spu_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind SPU");
        let spu_addr = spu_listener.local_addr().expect("SPU address").to_string();
        let spu = Arc::new(FakeSpu::default());
        let spu_shutdown = CancellationToken::new();
        tokio::spawn(serve(
            spu_listener,
            Arc::clone(&spu),
            TransportConfig::default(),
            spu_shutdown.clone(),
        ));

        let sc_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind SC");
        let sc_addr = sc_listener.local_addr().expect("SC address").to_string();
        let sc = Arc::new(FakeSc::new(spu_addr.clone()));
        let sc_shutdown = CancellationToken::new();
        tokio::spawn(serve(
            sc_listener,
            Arc::clone(&sc),
            TransportConfig::default(),
            sc_shutdown.clone(),
        ));
        FakeCluster {
            sc_addr,
            sc,
            spu,
            spu_addr,
            sc_shutdown: Mutex::new(sc_shutdown),
            spu_shutdown: Mutex::new(spu_shutdown),
        }
    }

    pub async fn client(&self) -> RunnelClient {
        bounded("connecting", RunnelClient::connect(&self.sc_addr))
            .await
            .expect("connect to the fake SC")
    }

    /// A topic created directly in the SC's store, once `client` sees it.
    pub async fn create_topic(
        &self,
        client: &RunnelClient,
        name: &str,
        partitions: u32,
    ) -> TopicName {
        let topic = topic_name(name);
        self.sc
            .create(TopicSpec {
                name: topic.clone(),
                partitions,
                replication_factor: 1,
                config: TopicConfig::default(),
            })
            .expect("new topic");
        bounded(
            "the new topic in the client's metadata",
            client.wait_for_metadata(|view| view.topics.contains_key(&topic), WAIT),
        )
        .await
        .expect("topic visible");
        topic
    }

    /// Stops the SC: its listener and every connection close.
    pub fn stop_sc(&self) {
        self.sc_shutdown.lock().expect("lock").cancel();
    }

    /// Serves the SC again on its old address, with its old store.
    pub async fn restart_sc(&self) {
        let listener = rebind(&self.sc_addr).await;
        let shutdown = CancellationToken::new();
        *self.sc_shutdown.lock().expect("lock") = shutdown.clone();
        tokio::spawn(serve(
            listener,
            Arc::clone(&self.sc),
            TransportConfig::default(),
            shutdown,
        ));
    }

    /// Stops the SPU and serves it again on its old address with its old
    /// data: every connection to it closes.
    pub async fn restart_spu(&self) {
        self.spu_shutdown.lock().expect("lock").cancel();
        let listener = rebind(&self.spu_addr).await;
        let shutdown = CancellationToken::new();
        *self.spu_shutdown.lock().expect("lock") = shutdown.clone();
        tokio::spawn(serve(
            listener,
            Arc::clone(&self.spu),
            TransportConfig::default(),
            shutdown,
        ));
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.sc_shutdown.lock().expect("lock").cancel();
        self.spu_shutdown.lock().expect("lock").cancel();
    }
}

/// Listens on `addr` again once the stopped server there has let go of
/// it (its accept task ends shortly after its token is cancelled).
async fn rebind(addr: &str) -> TcpListener {
    bounded("the address to be free again", async {
        loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => return listener,
                Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err(error) => panic!("cannot listen on {addr}: {error}"),
            }
        }
    })
    .await
}

/// An unused loopback address: nothing listens there.
pub async fn unused_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address").to_string()
}

// ---- the fake SC ----

#[derive(Debug)]
pub struct FakeSc {
    store: Mutex<Store>,
    /// Deltas, for the watch streams.
    deltas: broadcast::Sender<MetadataUpdate>,
    /// Metadata watch streams being served.
    pub watchers: watch::Sender<u32>,
    /// The last producer id given; ids count up from 1000.
    last_producer_id: AtomicI64,
}

#[derive(Debug, Default)]
struct Store {
    version: u64,
    topics: BTreeMap<TopicName, Topic>,
    partitions: BTreeMap<PartitionKey, Partition>,
    spus: BTreeMap<SpuId, Spu>,
}

impl FakeSc {
    fn new(spu_addr: String) -> FakeSc {
        let mut store = Store::default();
        store.spus.insert(
            SPU,
            Spu {
                spec: SpuSpec {
                    id: SPU,
                    public_addr: spu_addr,
                    private_addr: "127.0.0.1:1".into(),
                    rack: None,
                },
                online: true,
            },
        );
        FakeSc {
            store: Mutex::new(store),
            deltas: broadcast::channel(1024).0,
            watchers: watch::Sender::new(0),
            last_producer_id: AtomicI64::new(999),
        }
    }

    /// The producer ids given so far, in order.
    pub fn producer_ids_given(&self) -> Vec<i64> {
        (1000..=self.last_producer_id.load(Ordering::SeqCst)).collect()
    }

    /// Applies `changes` to the store and sends them as one delta.
    fn change(&self, store: &mut Store, changes: Vec<Change>) {
        store.version += 1;
        for change in &changes {
            match change {
                Change::Upsert(Object::Topic(topic)) => {
                    store.topics.insert(topic.spec.name.clone(), topic.clone());
                }
                Change::Upsert(Object::Partition(partition)) => {
                    store
                        .partitions
                        .insert(partition.spec.key.clone(), partition.clone());
                }
                Change::Upsert(Object::Spu(spu)) => {
                    store.spus.insert(spu.spec.id, spu.clone());
                }
                Change::Delete(ObjectKey::Topic(name)) => {
                    store.topics.remove(name);
                }
                Change::Delete(ObjectKey::Partition(key)) => {
                    store.partitions.remove(key);
                }
                Change::Delete(ObjectKey::Spu(id)) => {
                    store.spus.remove(id);
                }
            }
        }
        let _ = self.deltas.send(MetadataUpdate::Delta {
            version: store.version,
            changes,
        });
    }

    pub fn create(&self, spec: TopicSpec) -> Result<(), ApiError> {
        let mut store = self.store.lock().expect("store lock");
        if store.topics.contains_key(&spec.name) {
            return Err(ApiError::new(
                ErrorCode::TOPIC_EXISTS,
                format!("topic '{}' already exists", spec.name),
            ));
        }
        let mut changes = Vec::new();
        for partition in 0..spec.partitions {
            changes.push(Change::Upsert(Object::Partition(Partition {
                spec: PartitionSpec {
                    key: PartitionKey {
                        topic: spec.name.clone(),
                        partition: PartitionId(partition),
                    },
                    replicas: vec![SPU],
                },
                status: PartitionStatus {
                    leader: Some(SPU),
                    leader_epoch: LeaderEpoch(1),
                    in_sync_replicas: vec![SPU],
                    replicas: Vec::new(),
                },
            })));
        }
        changes.push(Change::Upsert(Object::Topic(Topic {
            spec,
            topic_id: store.version + 1,
            state: TopicState::Provisioned,
        })));
        self.change(&mut store, changes);
        Ok(())
    }

    fn delete(&self, name: &TopicName) -> Result<(), ApiError> {
        let mut store = self.store.lock().expect("store lock");
        let Some(topic) = store.topics.get(name) else {
            return Err(ApiError::new(
                ErrorCode::TOPIC_NOT_FOUND,
                format!("topic '{name}' does not exist"),
            ));
        };
        let mut changes: Vec<Change> = (0..topic.spec.partitions)
            .map(|partition| {
                Change::Delete(ObjectKey::Partition(PartitionKey {
                    topic: name.clone(),
                    partition: PartitionId(partition),
                }))
            })
            .collect();
        changes.push(Change::Delete(ObjectKey::Topic(name.clone())));
        self.change(&mut store, changes);
        Ok(())
    }

    /// Marks the SPU online or offline, as the SC does on heartbeats.
    pub fn set_spu_online(&self, online: bool) {
        let mut store = self.store.lock().expect("store lock");
        let mut spu = store.spus[&SPU].clone();
        spu.online = online;
        self.change(&mut store, vec![Change::Upsert(Object::Spu(spu))]);
    }

    async fn watch(&self, responder: Responder) {
        let (snapshot_version, snapshot, mut deltas) = {
            let store = self.store.lock().expect("store lock");
            let objects = store
                .topics
                .values()
                .cloned()
                .map(Object::Topic)
                .chain(store.partitions.values().cloned().map(Object::Partition))
                .chain(store.spus.values().cloned().map(Object::Spu))
                .collect();
            (
                store.version,
                MetadataUpdate::Snapshot {
                    version: store.version,
                    objects,
                },
                // Subscribed under the lock: no change is missed or doubled.
                self.deltas.subscribe(),
            )
        };
        let mut stream = responder.into_stream();
        self.watchers.send_modify(|count| *count += 1);
        self.follow(&mut stream, snapshot, snapshot_version, &mut deltas)
            .await;
        self.watchers.send_modify(|count| *count -= 1);
    }

    async fn follow(
        &self,
        stream: &mut StreamSender,
        snapshot: MetadataUpdate,
        snapshot_version: u64,
        deltas: &mut broadcast::Receiver<MetadataUpdate>,
    ) {
        if stream.send(&snapshot).await.is_err() {
            return;
        }
        loop {
            let delta = tokio::select! {
                _ = stream.cancelled() => return,
                delta = deltas.recv() => delta,
            };
            let Ok(delta) = delta else { return };
            if matches!(delta, MetadataUpdate::Delta { version, .. } if version <= snapshot_version)
            {
                continue;
            }
            if stream.send(&delta).await.is_err() {
                return;
            }
        }
    }
}

impl Handler for FakeSc {
    async fn handle(&self, request: IncomingRequest, responder: Responder) {
        let api = ApiKey::from_u16(request.header.api_key);
        match api {
            Some(ApiKey::WatchMetadata) => self.watch(responder).await,
            Some(ApiKey::CreateTopic) => {
                let reply = match request.decode::<CreateTopicRequest>() {
                    Ok(create) => self.create(create.spec),
                    Err(error) => Err(malformed(error)),
                };
                responder.reply(&reply).await
            }
            Some(ApiKey::DeleteTopic) => {
                let reply = match request.decode::<DeleteTopicRequest>() {
                    Ok(delete) => self.delete(&delete.name),
                    Err(error) => Err(malformed(error)),
                };
                responder.reply(&reply).await
            }
            Some(ApiKey::ListTopics) => {
                let reply: Reply<Vec<Topic>> = match request.decode::<ListTopicsRequest>() {
                    Ok(list) => {
                        let store = self.store.lock().expect("store lock");
                        Ok(store
                            .topics
                            .values()
                            .filter(|topic| {
                                list.names.is_empty() || list.names.contains(&topic.spec.name)
                            })
                            .cloned()
                            .collect())
                    }
                    Err(error) => Err(malformed(error)),
                };
                responder.reply(&reply).await
            }
            Some(ApiKey::ListPartitions) => {
                let reply: Reply<Vec<Partition>> = match request.decode::<ListPartitionsRequest>() {
                    Ok(list) => {
                        let store = self.store.lock().expect("store lock");
                        Ok(store
                            .partitions
                            .values()
                            .filter(|partition| {
                                list.topic
                                    .as_ref()
                                    .is_none_or(|topic| &partition.spec.key.topic == topic)
                            })
                            .cloned()
                            .collect())
                    }
                    Err(error) => Err(malformed(error)),
                };
                responder.reply(&reply).await
            }
            Some(ApiKey::InitProducerId) => {
                let reply: Reply<ProducerIdentity> = match request.decode::<InitProducerIdRequest>()
                {
                    Ok(_) => Ok(ProducerIdentity {
                        producer_id: self.last_producer_id.fetch_add(1, Ordering::SeqCst) + 1,
                        producer_epoch: 0,
                    }),
                    Err(error) => Err(malformed(error)),
                };
                responder.reply(&reply).await
            }
            Some(ApiKey::ListSpus) => {
                let spus: Reply<Vec<Spu>> = Ok(self
                    .store
                    .lock()
                    .expect("store lock")
                    .spus
                    .values()
                    .cloned()
                    .collect());
                responder.reply(&spus).await
            }
            _ => responder.reply(&unsupported()).await,
        }
    }
}

fn malformed(error: runnel_wire::WireError) -> ApiError {
    ApiError::new(ErrorCode::MALFORMED_REQUEST, error.to_string())
}

fn unsupported() -> Reply<()> {
    Err(ApiError::new(
        ErrorCode::UNSUPPORTED_API,
        "not served by this fake",
    ))
}

// ---- the fake SPU ----

#[derive(Debug, Default)]
pub struct FakeSpu {
    logs: Mutex<HashMap<PartitionKey, Vec<StoredBatch>>>,
    /// Partitions it does not host: answered with `PARTITION_NOT_READY`.
    unhosted: Mutex<HashSet<PartitionKey>>,
    /// Bumped on every append and removal, to wake fetch streams.
    appended: watch::Sender<u64>,
    /// Produce requests to refuse with `refusal` before serving again.
    refuse_produces: AtomicU32,
    /// The error code refused produces get; `NOT_LEADER` unless set.
    refusal: Mutex<Option<ErrorCode>>,
    /// Produce requests to store and then never answer.
    unanswered_produces: AtomicU32,
    /// Produce requests to hold, unserved, until released.
    held_produces: AtomicU32,
    /// Held produce requests released so far.
    released_produces: watch::Sender<u32>,
    /// Produce requests received, refused ones included.
    produce_requests: watch::Sender<u32>,
    /// The record batches of every produce request, as received, with
    /// their partition.
    received: Mutex<Vec<(PartitionId, Bytes)>>,
    /// Fetch streams opened so far.
    pub fetch_streams: watch::Sender<u32>,
}

#[derive(Debug, Clone)]
struct StoredBatch {
    base_offset: i64,
    next_offset: i64,
    bytes: Bytes,
}

impl FakeSpu {
    /// Refuses the next `count` produce requests with `NOT_LEADER`.
    pub fn refuse_next_produces(&self, count: u32) {
        self.refuse_next_produces_with(count, ErrorCode::NOT_LEADER);
    }

    /// Refuses the next `count` produce requests with `code`.
    pub fn refuse_next_produces_with(&self, count: u32, code: ErrorCode) {
        *self.refusal.lock().expect("refusal lock") = Some(code);
        self.refuse_produces.store(count, Ordering::SeqCst);
    }

    /// Holds the next produce request, unserved (and so unanswered),
    /// until [`FakeSpu::release_held_produce`].
    pub fn hold_next_produce(&self) {
        self.released_produces.send_replace(0);
        self.held_produces.store(1, Ordering::SeqCst);
    }

    pub fn release_held_produce(&self) {
        self.released_produces
            .send_modify(|released| *released += 1);
    }

    /// Every record batch received in a produce request (refused,
    /// duplicate and unanswered ones included), in order, with the bytes
    /// the client sent and the partition it was sent to.
    pub fn received_batches(&self) -> Vec<(PartitionId, Bytes)> {
        self.received.lock().expect("received lock").clone()
    }

    /// Stores the next `count` produced batches and never answers their
    /// requests (until the client gives up on them).
    pub fn leave_next_produces_unanswered(&self, count: u32) {
        self.unanswered_produces.store(count, Ordering::SeqCst);
    }

    pub fn produce_requests(&self) -> u32 {
        *self.produce_requests.borrow()
    }

    /// Waits until `count` produce requests have been received.
    pub async fn wait_for_produce_requests(&self, count: u32) {
        let mut requests = self.produce_requests.subscribe();
        bounded(
            "produce requests at the SPU",
            requests.wait_for(|received| *received >= count),
        )
        .await
        .expect("the SPU lives");
    }

    /// Hosts `key` or not: requests about a partition it does not host
    /// are answered with `PARTITION_NOT_READY`.
    pub fn set_hosted(&self, key: &PartitionKey, hosted: bool) {
        let mut unhosted = self.unhosted.lock().expect("unhosted lock");
        if hosted {
            unhosted.remove(key);
        } else {
            unhosted.insert(key.clone());
        }
    }

    /// Removes the replica of `key`, as when its topic is deleted: its
    /// data goes, its fetch streams end with `PARTITION_NOT_FOUND`, and
    /// later requests are answered with `PARTITION_NOT_READY`.
    pub fn remove_replica(&self, key: &PartitionKey) {
        self.set_hosted(key, false);
        self.logs.lock().expect("logs lock").remove(key);
        self.appended.send_modify(|count| *count += 1);
    }

    fn not_ready(&self, key: &PartitionKey) -> Result<(), ApiError> {
        if self.unhosted.lock().expect("unhosted lock").contains(key) {
            return Err(ApiError::new(
                ErrorCode::PARTITION_NOT_READY,
                format!("SPU {SPU} does not host {key}"),
            ));
        }
        Ok(())
    }

    /// Writes `new_base` as the base offset of the stored batch holding
    /// `offset`, leaving the SPU's own record of where it is alone: the
    /// CRC does not cover the base offset, so only its reader can tell.
    pub fn rewrite_base_offset(&self, key: &PartitionKey, offset: i64, new_base: i64) {
        let mut logs = self.logs.lock().expect("logs lock");
        let batch = logs
            .get_mut(key)
            .and_then(|batches| {
                batches
                    .iter_mut()
                    .find(|batch| batch.base_offset <= offset && offset < batch.next_offset)
            })
            .expect("a stored batch holds the offset");
        let mut bytes = batch.bytes.to_vec();
        set_base_offset(&mut bytes, Offset(new_base));
        batch.bytes = Bytes::from(bytes);
    }

    /// Flips a byte inside the records of the stored batch holding
    /// `offset`, so its CRC no longer matches.
    pub fn corrupt(&self, key: &PartitionKey, offset: i64) {
        let mut logs = self.logs.lock().expect("logs lock");
        let batch = logs
            .get_mut(key)
            .and_then(|batches| {
                batches
                    .iter_mut()
                    .find(|batch| batch.base_offset <= offset && offset < batch.next_offset)
            })
            .expect("a stored batch holds the offset");
        let mut bytes = batch.bytes.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        batch.bytes = Bytes::from(bytes);
    }

    fn log_end(batches: &[StoredBatch]) -> i64 {
        batches.last().map_or(0, |batch| batch.next_offset)
    }

    fn produce(&self, request: &IncomingRequest) -> Reply<ProduceResponse> {
        let (produce, tail) = request
            .decode_with_tail::<ProduceRequest>()
            .map_err(malformed)?;
        self.received
            .lock()
            .expect("received lock")
            .push((produce.partition, tail.clone()));
        self.not_ready(&PartitionKey {
            topic: produce.topic.clone(),
            partition: produce.partition,
        })?;
        let refused = self
            .refuse_produces
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if refused {
            let code = self
                .refusal
                .lock()
                .expect("refusal lock")
                .unwrap_or(ErrorCode::NOT_LEADER);
            return Err(ApiError::new(
                code,
                format!("{} (injected by the test)", code.name()),
            ));
        }
        let key = PartitionKey {
            topic: produce.topic,
            partition: produce.partition,
        };
        let mut logs = self.logs.lock().expect("logs lock");
        let batches = logs.entry(key).or_default();
        let base_offset = Self::log_end(batches);
        let mut position = 0;
        while position < tail.len() {
            let invalid = |reason: String| ApiError::new(ErrorCode::INVALID_RECORDS, reason);
            let length = peek_total_len(&tail[position..])
                .ok_or_else(|| invalid("truncated batch".into()))?
                .map_err(|error| invalid(error.to_string()))?;
            let mut bytes = tail
                .get(position..position + length)
                .ok_or_else(|| invalid("truncated batch".into()))?
                .to_vec();
            let header = BatchHeader::parse(&bytes).map_err(|error| invalid(error.to_string()))?;
            if let Some(stored) = Self::stored_duplicate(batches, &header) {
                // One batch per request from the client: its offset.
                return Ok(ProduceResponse {
                    base_offset: Offset(stored),
                    log_end_offset: Offset(Self::log_end(batches)),
                });
            }
            let base = Self::log_end(batches);
            set_base_offset(&mut bytes, Offset(base));
            batches.push(StoredBatch {
                base_offset: base,
                next_offset: base + i64::from(header.last_offset_delta) + 1,
                bytes: Bytes::from(bytes),
            });
            position += length;
        }
        let log_end_offset = Offset(Self::log_end(batches));
        drop(logs);
        self.appended.send_modify(|count| *count += 1);
        Ok(ProduceResponse {
            base_offset: Offset(base_offset),
            log_end_offset,
        })
    }

    /// The base offset of the stored batch that `header` repeats: same
    /// producer id and epoch, same sequence numbers.
    fn stored_duplicate(batches: &[StoredBatch], header: &BatchHeader) -> Option<i64> {
        if header.producer_id == NO_PRODUCER_ID {
            return None;
        }
        batches.iter().find_map(|batch| {
            let stored = BatchHeader::parse(&batch.bytes).expect("stored batches parse");
            let same = stored.producer_id == header.producer_id
                && stored.producer_epoch == header.producer_epoch
                && stored.base_sequence == header.base_sequence
                && stored.record_count == header.record_count;
            same.then_some(batch.base_offset)
        })
    }

    fn list_offsets(&self, request: &IncomingRequest) -> Reply<ListOffsetsResponse> {
        let list = request.decode::<ListOffsetsRequest>().map_err(malformed)?;
        let key = PartitionKey {
            topic: list.topic,
            partition: list.partition,
        };
        self.not_ready(&key)?;
        let logs = self.logs.lock().expect("logs lock");
        let end = Offset(logs.get(&key).map_or(0, |batches| Self::log_end(batches)));
        let offset = match list.query {
            OffsetQuery::Start | OffsetQuery::Timestamp(_) => Offset::ZERO,
            OffsetQuery::End => end,
        };
        Ok(ListOffsetsResponse {
            offset,
            log_start_offset: Offset::ZERO,
            high_watermark: end,
        })
    }

    /// Batches from `offset` on, at most `max_bytes` unless one batch is
    /// larger; with the positions of the item.
    fn read(
        &self,
        key: &PartitionKey,
        offset: i64,
        max_bytes: usize,
    ) -> Option<(FetchItem, Bytes)> {
        let logs = self.logs.lock().expect("logs lock");
        let batches = logs.get(key)?;
        let mut selected = batches
            .iter()
            .filter(|batch| batch.next_offset > offset)
            .peekable();
        let first_offset = selected.peek()?.base_offset;
        let mut tail = Vec::new();
        let mut next_offset = first_offset;
        for batch in selected {
            if !tail.is_empty() && tail.len() + batch.bytes.len() > max_bytes {
                break;
            }
            tail.extend_from_slice(&batch.bytes);
            next_offset = batch.next_offset;
        }
        let item = FetchItem {
            first_offset: Offset(first_offset),
            next_offset: Offset(next_offset),
            log_start_offset: Offset::ZERO,
            high_watermark: Offset(Self::log_end(batches)),
        };
        Some((item, Bytes::from(tail)))
    }

    async fn stream_fetch(&self, request: &IncomingRequest, responder: Responder) {
        let fetch = match request.decode::<StreamFetchRequest>() {
            Ok(fetch) => fetch,
            Err(error) => return responder.reply(&Err::<(), _>(malformed(error))).await,
        };
        let key = PartitionKey {
            topic: fetch.topic,
            partition: fetch.partition,
        };
        let mut appended = self.appended.subscribe();
        let stream = responder.into_stream();
        if let Err(error) = self.not_ready(&key) {
            return stream.end(Err(error)).await;
        }
        self.fetch_streams.send_modify(|count| *count += 1);
        let mut stream = stream;
        let mut offset = fetch.offset.0;
        loop {
            appended.borrow_and_update();
            if self.not_ready(&key).is_err() {
                let removed = ApiError::new(
                    ErrorCode::PARTITION_NOT_FOUND,
                    format!("the replica of {key} was removed from SPU {SPU}"),
                );
                return stream.end(Err(removed)).await;
            }
            match self.read(&key, offset, fetch.max_bytes as usize) {
                Some((item, tail)) => {
                    offset = item.next_offset.0;
                    if stream.send_with_tail(&item, tail).await.is_err() {
                        return;
                    }
                }
                None => {
                    tokio::select! {
                        _ = stream.cancelled() => return,
                        changed = appended.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Handler for FakeSpu {
    async fn handle(&self, request: IncomingRequest, responder: Responder) {
        match ApiKey::from_u16(request.header.api_key) {
            Some(ApiKey::Produce) => {
                self.produce_requests.send_modify(|count| *count += 1);
                let held = self
                    .held_produces
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                        left.checked_sub(1)
                    })
                    .is_ok();
                if held {
                    let mut released = self.released_produces.subscribe();
                    bounded(
                        "the held produce to be released",
                        released.wait_for(|released| *released > 0),
                    )
                    .await
                    .expect("the SPU lives");
                }
                let reply = self.produce(&request);
                let unanswered = self
                    .unanswered_produces
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                        left.checked_sub(1)
                    })
                    .is_ok();
                if unanswered {
                    // Stored (or refused), and no answer: the client's
                    // timeout or a closed connection ends the wait.
                    tokio::select! {
                        _ = responder.cancelled() => {}
                        _ = tokio::time::sleep(WAIT) => {}
                    }
                    return;
                }
                responder.reply(&reply).await
            }
            Some(ApiKey::ListOffsets) => responder.reply(&self.list_offsets(&request)).await,
            Some(ApiKey::StreamFetch) => self.stream_fetch(&request, responder).await,
            _ => responder.reply(&unsupported()).await,
        }
    }
}
