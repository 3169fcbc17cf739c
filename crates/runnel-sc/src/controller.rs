//! The controller: the current metadata in memory, every change to it, and
//! who is told about each change.
//!
//! One lock ([`State`]) orders every change. A change is first committed to
//! the [`Store`] (one transaction, with the next metadata version), then
//! applied in memory, then announced while the lock is still held: as a
//! [`Delta`] on the broadcast change feed for watchers, and as
//! [`AssignmentUpdate`]s in the outbox of each connected SPU it concerns.
//! Announcing under the lock is what lets a new watcher or SPU take a
//! snapshot and then receive exactly the changes after it.
//!
//! Live data is kept apart from stored data: whether an SPU is online (it
//! has a [`Session`]) and the replica reports of heartbeats are in memory
//! only, so after a restart every SPU is offline until it connects again.
//!
//! Leadership follows liveness (the rules are in `election`): an SPU whose
//! session ends has failed, and right after, under the same lock, its
//! partitions get new leaders and it leaves their ISRs. After a restart
//! the SC knows of no session, so an SPU that has not connected since is
//! not taken for failed until a session timeout has passed since the
//! start: until then it may still be leading and just reconnecting. A
//! liveness check every quarter session timeout applies the rules again
//! (which also retries an election whose commit failed) and moves
//! leadership back to preferred replicas that are online and in sync.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use runnel_api::{AlterIsrRequest, ApiError, ElectionResult, ErrorCode, ProducerIdentity, Reply};
use runnel_metadata::{
    AssignmentUpdate, Change, MAX_PARTITIONS, MAX_REPLICATION_FACTOR, MetadataUpdate, Object,
    ObjectKey, Partition, PartitionKey, PartitionSpec, PartitionStatus, ReplicaAssignment,
    ReplicaStatus, Spu, SpuSpec, Topic, TopicSpec, TopicState,
};
use runnel_types::{ByteSize, LeaderEpoch, PartitionId, SpuId, TopicName};
use tokio::sync::{Mutex, Notify, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::election::{self, Decision, Liveness, Outcome};
use crate::placement::{self, SpuLoad};
use crate::store::{Batch, Loaded, Mutation, PartitionRecord, Store};

/// Deltas kept for watchers; a watcher further behind gets a new snapshot.
const CHANGE_FEED_CAPACITY: usize = 1024;
/// Assignment updates queued for one SPU; past this the SPU gets a new
/// snapshot instead, so a stalled SPU costs bounded memory.
const MAX_QUEUED_ASSIGNMENTS: usize = 4096;
/// Smallest and largest segment size a topic may ask for.
const SEGMENT_SIZE_MIN: u64 = ByteSize::KIB;
const SEGMENT_SIZE_MAX: u64 = 2 * ByteSize::GIB;
/// Longest SPU address or rack name accepted from a peer.
const MAX_SPU_FIELD_LEN: usize = 255;

/// The changes of one committed version, as watchers receive them.
#[derive(Debug)]
pub struct Delta {
    pub version: u64,
    pub changes: Vec<Change>,
}

/// The metadata and the connected SPUs, behind the controller's lock.
#[derive(Debug)]
struct State {
    /// Taken on shutdown, so the store file is closed when `run` returns.
    store: Option<Arc<Store>>,
    version: u64,
    topics: BTreeMap<TopicName, Topic>,
    partitions: BTreeMap<PartitionKey, PartitionRecord>,
    spus: BTreeMap<SpuId, SpuSpec>,
    /// The connected SPUs: an SPU is online exactly while it has one.
    sessions: BTreeMap<SpuId, Arc<Session>>,
    /// The last heartbeat's report of each replica, by SPU.
    reports: BTreeMap<SpuId, BTreeMap<PartitionKey, ReplicaStatus>>,
    /// SPUs that opened a session since this SC started: offline, they
    /// have failed; the others may still be reconnecting after the start.
    connected_since_start: BTreeSet<SpuId>,
}

/// A change to the set of connected SPUs, applied with a commit.
enum SessionChange {
    Open(Arc<Session>),
    Close(Arc<Session>),
}

/// What is waiting to be sent to one SPU.
#[derive(Debug)]
enum Outbox {
    /// The SPU needs the full set of its assignments: at connect, or after
    /// its queue overflowed.
    Resync,
    Updates(VecDeque<AssignmentUpdate>),
}

/// One SpuConnect stream of an SPU, from connect until it ends.
#[derive(Debug)]
pub struct Session {
    pub spu: SpuId,
    /// Tells this session from an SPU's earlier or later ones.
    number: u64,
    outbox: StdMutex<Outbox>,
    wake: Notify,
    ended: CancellationToken,
    /// Why the SC ended the session, sent to the SPU as the stream's end.
    end_reason: StdMutex<Option<ApiError>>,
    last_seen: StdMutex<Instant>,
}

impl Session {
    fn push(&self, update: AssignmentUpdate) {
        {
            let mut outbox = self.outbox.lock().expect("outbox lock");
            match &mut *outbox {
                Outbox::Resync => {}
                Outbox::Updates(queue) if queue.len() >= MAX_QUEUED_ASSIGNMENTS => {
                    *outbox = Outbox::Resync;
                }
                Outbox::Updates(queue) => queue.push_back(update),
            }
        }
        self.wake.notify_one();
    }

    /// Ends the session; the SPU receives `reason` as the end of its stream.
    fn end(&self, reason: ApiError) {
        self.end_reason
            .lock()
            .expect("end reason lock")
            .get_or_insert(reason);
        self.ended.cancel();
    }

    /// Resolves when the SC has ended this session (replaced, timed out,
    /// shutting down).
    pub async fn ended(&self) {
        self.ended.cancelled().await
    }

    /// Why the session ended, once it has.
    pub fn end_reason(&self) -> ApiError {
        self.end_reason
            .lock()
            .expect("end reason lock")
            .clone()
            .unwrap_or_else(shutting_down)
    }

    fn touch(&self) {
        *self.last_seen.lock().expect("last seen lock") = Instant::now();
    }

    fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(*self.last_seen.lock().expect("last seen lock"))
    }
}

#[derive(Debug)]
pub struct Controller {
    /// The store's cluster id, sent with every assignment snapshot.
    cluster_id: String,
    state: Mutex<State>,
    changes: broadcast::Sender<Arc<Delta>>,
    session_timeout: Duration,
    /// When this SC started; SPUs not connected a session timeout later
    /// have failed.
    started: Instant,
    shutdown: CancellationToken,
    next_session_number: AtomicU64,
}

impl Controller {
    /// A controller over `store`, holding what it loaded.
    pub fn new(
        store: Arc<Store>,
        loaded: Loaded,
        session_timeout: Duration,
        shutdown: CancellationToken,
    ) -> Controller {
        let (changes, _) = broadcast::channel(CHANGE_FEED_CAPACITY);
        let cluster_id = store.cluster_id().to_string();
        let state = State {
            store: Some(store),
            version: loaded.version,
            topics: loaded
                .topics
                .into_iter()
                .map(|topic| (topic.spec.name.clone(), topic))
                .collect(),
            partitions: loaded
                .partitions
                .into_iter()
                .map(|record| (record.spec.key.clone(), record))
                .collect(),
            spus: loaded
                .spus
                .into_iter()
                .map(|spec| (spec.id, spec))
                .collect(),
            sessions: BTreeMap::new(),
            reports: BTreeMap::new(),
            connected_since_start: BTreeSet::new(),
        };
        Controller {
            cluster_id,
            state: Mutex::new(state),
            changes,
            session_timeout,
            started: Instant::now(),
            shutdown,
            next_session_number: AtomicU64::new(1),
        }
    }

    /// Ends every session and closes the store. Later changes fail with
    /// [`ErrorCode::SHUTTING_DOWN`].
    pub async fn close(&self) {
        let mut state = self.state.lock().await;
        for session in state.sessions.values() {
            session.end(shutting_down());
        }
        state.store = None;
    }

    // ---- topics ----

    pub async fn create_topic(&self, spec: TopicSpec) -> Reply<()> {
        validate_topic(&spec)?;
        let mut state = self.state.lock().await;
        if state.topics.contains_key(&spec.name) {
            return Err(ApiError::new(
                ErrorCode::TOPIC_EXISTS,
                format!(
                    "topic '{name}' already exists; delete it first with `runnel topic delete {name}`",
                    name = spec.name
                ),
            ));
        }
        let name = spec.name.clone();
        // The version this change commits as: versions never repeat, so
        // neither do topic ids, across deletions and restarts.
        let topic_id = state.version + 1;
        let mutations = state.provision(spec, topic_id);
        self.commit(&mut state, mutations, None).await?;
        match &state.topics[&name].state {
            TopicState::Pending { reason } => {
                info!(topic = %name, %reason, "topic created, pending")
            }
            state => info!(topic = %name, %state, "topic created"),
        }
        Ok(())
    }

    pub async fn delete_topic(&self, name: TopicName) -> Reply<()> {
        let mut state = self.state.lock().await;
        if !state.topics.contains_key(&name) {
            return Err(topic_not_found(&name));
        }
        let mut mutations: Vec<Mutation> = state
            .partitions_of(&name)
            .map(|record| Mutation::DeletePartition(record.spec.key.clone()))
            .collect();
        mutations.push(Mutation::DeleteTopic(name.clone()));
        self.commit(&mut state, mutations, None).await?;
        info!(topic = %name, "topic deleted");
        Ok(())
    }

    /// The named topics in the order asked, or every topic by name.
    pub async fn list_topics(&self, names: Vec<TopicName>) -> Reply<Vec<Topic>> {
        let state = self.state.lock().await;
        if names.is_empty() {
            return Ok(state.topics.values().cloned().collect());
        }
        names
            .iter()
            .map(|name| {
                state
                    .topics
                    .get(name)
                    .cloned()
                    .ok_or_else(|| topic_not_found(name))
            })
            .collect()
    }

    /// Partitions in (topic, partition) order, with the replica reports of
    /// the latest heartbeats.
    pub async fn list_partitions(&self, topic: Option<TopicName>) -> Reply<Vec<Partition>> {
        let state = self.state.lock().await;
        let records: Vec<&PartitionRecord> = match &topic {
            Some(name) => {
                if !state.topics.contains_key(name) {
                    return Err(topic_not_found(name));
                }
                state.partitions_of(name).collect()
            }
            None => state.partitions.values().collect(),
        };
        Ok(records
            .into_iter()
            .map(|record| partition_object(record, state.reports_of(record)))
            .collect())
    }

    // ---- SPUs ----

    pub async fn list_spus(&self) -> Vec<Spu> {
        let state = self.state.lock().await;
        state
            .spus
            .keys()
            .filter_map(|id| state.spu_object(*id))
            .collect()
    }

    pub async fn register_spu(&self, spec: SpuSpec) -> Reply<()> {
        validate_spu(&spec)?;
        let mut state = self.state.lock().await;
        let current = state.spus.get(&spec.id);
        if current == Some(&spec) {
            return Ok(());
        }
        // Addresses of a running SPU are what it listens on; only the SPU
        // itself can change them, by reconnecting.
        if let Some(current) = current
            && state.sessions.contains_key(&spec.id)
            && (current.public_addr != spec.public_addr
                || current.private_addr != spec.private_addr)
        {
            return Err(ApiError::new(
                ErrorCode::SPU_IN_USE,
                format!(
                    "SPU {id} is online at {public} (private {private}); stop it before changing its addresses",
                    id = spec.id,
                    public = current.public_addr,
                    private = current.private_addr,
                ),
            ));
        }
        let id = spec.id;
        self.commit(&mut state, vec![Mutation::PutSpu(spec)], None)
            .await?;
        info!(spu = %id, "SPU registered");
        Ok(())
    }

    pub async fn unregister_spu(&self, id: SpuId) -> Reply<()> {
        let mut state = self.state.lock().await;
        if !state.spus.contains_key(&id) {
            return Err(ApiError::new(
                ErrorCode::SPU_NOT_FOUND,
                format!("SPU {id} is not registered; list SPUs with `runnel spu list`"),
            ));
        }
        if state.sessions.contains_key(&id) {
            return Err(ApiError::new(
                ErrorCode::SPU_IN_USE,
                format!("SPU {id} is online; stop it before unregistering it"),
            ));
        }
        let held: Vec<&PartitionRecord> = state
            .partitions
            .values()
            .filter(|record| record.spec.replicas.contains(&id))
            .collect();
        if !held.is_empty() {
            let topics: BTreeSet<&str> = held
                .iter()
                .map(|record| record.spec.key.topic.as_str())
                .collect();
            let topics: Vec<&str> = topics.into_iter().collect();
            return Err(ApiError::new(
                ErrorCode::SPU_IN_USE,
                format!(
                    "SPU {id} holds {count} replica(s) of topic(s) {list}; delete those topics before unregistering it",
                    count = held.len(),
                    list = topics.join(", "),
                ),
            ));
        }
        self.commit(&mut state, vec![Mutation::DeleteSpu(id)], None)
            .await?;
        info!(spu = %id, "SPU unregistered");
        Ok(())
    }

    // ---- SPU sessions ----

    /// Registers (or updates) the SPU, marks it online and opens its
    /// session; a session it already had is ended. Partitions without a
    /// leader that it may lead get it as leader, and pending topics are
    /// placed if they now can be.
    pub async fn connect_spu(&self, spec: SpuSpec) -> Reply<Arc<Session>> {
        validate_spu(&spec)?;
        let session = Arc::new(Session {
            spu: spec.id,
            number: self.next_session_number.fetch_add(1, Ordering::Relaxed),
            outbox: StdMutex::new(Outbox::Resync),
            wake: Notify::new(),
            ended: self.shutdown.child_token(),
            end_reason: StdMutex::new(None),
            last_seen: StdMutex::new(Instant::now()),
        });
        let mut state = self.state.lock().await;
        // A second connection means the SPU restarted (or lost its first
        // one unseen): whatever it led, it leads no more with the state it
        // had, so it fails over like any SPU gone offline before it comes
        // back.
        if let Some(previous) = state.sessions.get(&spec.id).cloned() {
            previous.end(ApiError::new(
                ErrorCode::SPU_IN_USE,
                format!(
                    "SPU {} connected again on another connection; this session is replaced",
                    spec.id
                ),
            ));
            self.close_session(&mut state, &previous, "connected again")
                .await;
        }
        let mut mutations = if state.spus.get(&spec.id) == Some(&spec) {
            Vec::new()
        } else {
            vec![Mutation::PutSpu(spec.clone())]
        };
        // A new session may be a restarted process (after an SC restart
        // the SC cannot tell), which may have lost what it wrote but had
        // not synced while its followers hold it: whatever the SPU still
        // leads, it leads from a new epoch, committed with its session, so
        // followers cut by epoch against what it has now and one epoch
        // never has two histories.
        mutations.extend(
            state
                .partitions
                .values()
                .filter(|record| record.leader == Some(spec.id))
                .map(|record| {
                    Mutation::PutPartition(PartitionRecord {
                        leader_epoch: election::next_epoch(record.leader_epoch),
                        ..record.clone()
                    })
                }),
        );
        self.commit(
            &mut state,
            mutations,
            Some(SessionChange::Open(Arc::clone(&session))),
        )
        .await?;
        info!(spu = %spec.id, public_addr = %spec.public_addr, private_addr = %spec.private_addr, "SPU online");
        self.reconcile(&mut state).await;
        self.place_pending(&mut state).await;
        Ok(session)
    }

    /// Marks the session's SPU offline, unless a newer session replaced it.
    pub async fn disconnect(&self, session: &Arc<Session>, why: &str) {
        let mut state = self.state.lock().await;
        self.close_session(&mut state, session, why).await;
    }

    async fn close_session(&self, state: &mut State, session: &Arc<Session>, why: &str) {
        let current = state
            .sessions
            .get(&session.spu)
            .is_some_and(|current| current.number == session.number);
        if !current {
            return;
        }
        // A change without mutations is applied even when the store fails
        // to record its version (see `commit`), so this cannot leave the
        // SPU online.
        let _ = self
            .commit(
                state,
                Vec::new(),
                Some(SessionChange::Close(Arc::clone(session))),
            )
            .await;
        info!(spu = %session.spu, reason = why, "SPU offline");
        self.reconcile(state).await;
    }

    /// The next assignment updates for `session`'s SPU; waits until there
    /// are some. The first call returns the full set.
    pub async fn next_assignments(&self, session: &Session) -> Vec<AssignmentUpdate> {
        loop {
            let taken = {
                let mut outbox = session.outbox.lock().expect("outbox lock");
                match &mut *outbox {
                    Outbox::Resync => None,
                    Outbox::Updates(queue) => Some(std::mem::take(queue)),
                }
            };
            match taken {
                None => return vec![self.resync(session).await],
                Some(queue) if !queue.is_empty() => return queue.into(),
                Some(_) => session.wake.notified().await,
            }
        }
    }

    /// The full set of `session`'s assignments. Taken under the state lock
    /// together with emptying its outbox, so no update is lost or doubled.
    async fn resync(&self, session: &Session) -> AssignmentUpdate {
        let state = self.state.lock().await;
        *session.outbox.lock().expect("outbox lock") = Outbox::Updates(VecDeque::new());
        let replicas = state
            .partitions
            .values()
            .filter(|record| record.spec.replicas.contains(&session.spu))
            .map(|record| state.assignment(record))
            .collect();
        AssignmentUpdate::Snapshot {
            cluster_id: self.cluster_id.clone(),
            replicas,
        }
    }

    /// Records a connected SPU's replica reports and keeps it online.
    pub async fn heartbeat(
        &self,
        spu: SpuId,
        replicas: Vec<(TopicName, PartitionId, ReplicaStatus)>,
    ) -> Reply<()> {
        let mut state = self.state.lock().await;
        let Some(session) = state.sessions.get(&spu) else {
            return Err(ApiError::new(
                ErrorCode::SPU_NOT_FOUND,
                format!(
                    "SPU {spu} is not connected to this SC; open the SpuConnect stream before sending heartbeats"
                ),
            ));
        };
        session.touch();
        // Reports of replicas the SPU does not hold (a deleted topic, a
        // late heartbeat) are dropped.
        let reports: BTreeMap<PartitionKey, ReplicaStatus> = replicas
            .into_iter()
            .map(|(topic, partition, status)| (PartitionKey { topic, partition }, status))
            .filter(|(key, _)| {
                state
                    .partitions
                    .get(key)
                    .is_some_and(|record| record.spec.replicas.contains(&spu))
            })
            .map(|(key, status)| (key, ReplicaStatus { spu, ..status }))
            .collect();
        state.reports.insert(spu, reports);
        Ok(())
    }

    /// Until shutdown, every quarter session timeout: marks SPUs silent
    /// past the session timeout offline, applies the election rules to
    /// every partition, and moves leadership back to preferred replicas.
    pub async fn check_liveness(&self) {
        let period = (self.session_timeout / 4).max(Duration::from_millis(10));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let mut state = self.state.lock().await;
            let now = Instant::now();
            let silent: Vec<Arc<Session>> = state
                .sessions
                .values()
                .filter(|session| session.silent_for(now) > self.session_timeout)
                .cloned()
                .collect();
            for session in silent {
                let timeout = self.session_timeout;
                session.end(ApiError::new(
                    ErrorCode::TIMEOUT,
                    format!(
                        "no heartbeat from SPU {} within {timeout:?}; the SC marked it offline, connect again",
                        session.spu
                    ),
                ));
                self.close_session(
                    &mut state,
                    &session,
                    "no heartbeat within the session timeout",
                )
                .await;
            }
            self.reconcile(&mut state).await;
            self.elect_preferred_leaders(&mut state).await;
        }
    }

    // ---- leadership and producers ----

    /// A leader's ISR change, committed and pushed to the replicas if the
    /// leader proposes it from the current epoch and ISR (see
    /// [`election::alter_isr`]). Returns the ISR committed.
    pub async fn alter_isr(&self, request: AlterIsrRequest) -> Reply<Vec<SpuId>> {
        let mut state = self.state.lock().await;
        let Some(record) = state.partitions.get(&request.key) else {
            return Err(ApiError::new(
                ErrorCode::PARTITION_NOT_FOUND,
                format!(
                    "partition {} does not exist (its topic was deleted?); stop serving it",
                    request.key
                ),
            ));
        };
        let online = state.online();
        let next = election::alter_isr(record, &request, &online)?;
        if next.in_sync_replicas == record.in_sync_replicas {
            return Ok(next.in_sync_replicas);
        }
        let previous = spu_list(&record.in_sync_replicas);
        let in_sync = next.in_sync_replicas.clone();
        self.commit(&mut state, vec![Mutation::PutPartition(next)], None)
            .await?;
        info!(
            partition = %request.key,
            leader = %request.spu,
            leader_epoch = %request.leader_epoch,
            old_isr = %previous,
            new_isr = %spu_list(&in_sync),
            "ISR changed",
        );
        Ok(in_sync)
    }

    /// Moves leadership to the preferred replica of one partition, of one
    /// topic's partitions, or of every partition, where it is online and
    /// in sync; one result per partition, in (topic, partition) order.
    pub async fn elect_preferred(
        &self,
        topic: Option<TopicName>,
        partition: Option<PartitionId>,
    ) -> Reply<Vec<ElectionResult>> {
        let mut state = self.state.lock().await;
        let keys: Vec<PartitionKey> = match (topic, partition) {
            (None, None) => state.partitions.keys().cloned().collect(),
            (None, Some(partition)) => {
                return Err(ApiError::new(
                    ErrorCode::MALFORMED_REQUEST,
                    format!("partition {partition} is named without its topic; name the topic too"),
                ));
            }
            (Some(topic), partition) => {
                if !state.topics.contains_key(&topic) {
                    return Err(topic_not_found(&topic));
                }
                let keys = state
                    .partitions_of(&topic)
                    .map(|record| record.spec.key.clone());
                match partition {
                    None => keys.collect(),
                    Some(partition) => {
                        let key = PartitionKey { topic, partition };
                        if !state.partitions.contains_key(&key) {
                            return Err(partition_not_found(&state, &key));
                        }
                        vec![key]
                    }
                }
            }
        };
        let online = state.online();
        let mut results = Vec::with_capacity(keys.len());
        let mut moves = Vec::new();
        for key in keys {
            let record = &state.partitions[&key];
            let (leader, leader_epoch, error) = match election::preferred(record, &online) {
                Ok(None) => (record.leader, record.leader_epoch, None),
                Ok(Some(next)) => {
                    let elected = (next.leader, next.leader_epoch, None);
                    moves.push((record.leader, next));
                    elected
                }
                Err(why) => (
                    record.leader,
                    record.leader_epoch,
                    Some(ApiError::new(ErrorCode::ELECTION_NOT_POSSIBLE, why)),
                ),
            };
            results.push(ElectionResult {
                key,
                leader,
                leader_epoch,
                error,
            });
        }
        self.commit_preferred(&mut state, moves).await?;
        Ok(results)
    }

    /// A producer id never given before by this cluster, at epoch 0.
    pub async fn init_producer_id(&self) -> Reply<ProducerIdentity> {
        // Under the lock, as commits are: the store file is closed only
        // once no write is running.
        let state = self.state.lock().await;
        let store = state
            .store
            .as_ref()
            .map(Arc::clone)
            .ok_or_else(shutting_down)?;
        let given = tokio::task::spawn_blocking(move || store.next_producer_id()).await;
        match given {
            Ok(Ok(producer_id)) => {
                debug!(producer_id, "producer id given");
                Ok(ProducerIdentity {
                    producer_id,
                    producer_epoch: 0,
                })
            }
            Ok(Err(store_error)) => {
                error!(%store_error, "no producer id given");
                Err(ApiError::new(
                    ErrorCode::STORAGE,
                    format!("the SC could not give a producer id: {store_error}"),
                ))
            }
            Err(join_error) => {
                error!(%join_error, "producer id task failed");
                Err(ApiError::new(
                    ErrorCode::UNKNOWN,
                    "the SC failed to give a producer id; see the SC log",
                ))
            }
        }
    }

    // ---- watchers ----

    /// A snapshot of everything and the feed of the changes after it.
    pub async fn watch(&self) -> (MetadataUpdate, broadcast::Receiver<Arc<Delta>>) {
        let state = self.state.lock().await;
        let receiver = self.changes.subscribe();
        let mut objects =
            Vec::with_capacity(state.topics.len() + state.partitions.len() + state.spus.len());
        objects.extend(state.topics.values().cloned().map(Object::Topic));
        objects.extend(
            state
                .partitions
                .values()
                .map(|record| Object::Partition(partition_object(record, Vec::new()))),
        );
        objects.extend(
            state
                .spus
                .keys()
                .filter_map(|id| state.spu_object(*id))
                .map(Object::Spu),
        );
        let snapshot = MetadataUpdate::Snapshot {
            version: state.version,
            objects,
        };
        (snapshot, receiver)
    }

    // ---- changes ----

    /// Places every pending topic that the online SPUs can now hold, one
    /// commit per topic.
    async fn place_pending(&self, state: &mut State) {
        let pending: Vec<(TopicSpec, u64)> = state
            .topics
            .values()
            .filter(|topic| matches!(topic.state, TopicState::Pending { .. }))
            .map(|topic| (topic.spec.clone(), topic.topic_id))
            .collect();
        for (spec, topic_id) in pending {
            let name = spec.name.clone();
            let mutations = state.provision(spec, topic_id);
            let placed = mutations.iter().any(|mutation| {
                matches!(mutation, Mutation::PutTopic(topic) if topic.state == TopicState::Provisioned)
            });
            if !placed {
                continue;
            }
            match self.commit(state, mutations, None).await {
                Ok(()) => info!(topic = %name, "pending topic placed"),
                Err(error) => warn!(topic = %name, %error, "could not place a pending topic"),
            }
        }
    }

    /// Which SPUs are online, and which of the offline ones have failed:
    /// those that connected since the start, and, once a session timeout
    /// has passed since the start, every one.
    fn liveness(&self, state: &State) -> Liveness {
        let grace_over = self.started.elapsed() > self.session_timeout;
        let failed = state
            .spus
            .keys()
            .copied()
            .filter(|spu| {
                !state.sessions.contains_key(spu)
                    && (grace_over || state.connected_since_start.contains(spu))
            })
            .collect();
        Liveness {
            online: state.online(),
            failed,
        }
    }

    /// Applies the election rules to every partition and commits what
    /// they change, in one commit. A failed commit is retried by the next
    /// liveness check, which finds the same changes to make.
    async fn reconcile(&self, state: &mut State) {
        // A stopping SC ends every session itself: no SPU has failed.
        if self.shutdown.is_cancelled() {
            return;
        }
        let liveness = self.liveness(state);
        let outcomes: Vec<(Option<SpuId>, Outcome)> = state
            .partitions
            .values()
            .filter_map(|record| {
                let unclean_election = state
                    .topics
                    .get(&record.spec.key.topic)
                    .is_some_and(|topic| topic.spec.config.unclean_election);
                let damaged: BTreeSet<SpuId> = record
                    .spec
                    .replicas
                    .iter()
                    .copied()
                    .filter(|spu| {
                        state
                            .reports
                            .get(spu)
                            .and_then(|reports| reports.get(&record.spec.key))
                            .is_some_and(|report| report.damaged)
                    })
                    .collect();
                election::reconcile(record, unclean_election, &liveness, &damaged)
                    .map(|outcome| (record.leader, outcome))
            })
            .collect();
        if outcomes.is_empty() {
            return;
        }
        let mutations = outcomes
            .iter()
            .map(|(_, outcome)| Mutation::PutPartition(outcome.record.clone()))
            .collect();
        if let Err(error) = self.commit(state, mutations, None).await {
            warn!(%error, partitions = outcomes.len(), "elections not committed; the next liveness check retries");
            return;
        }
        for (previous, Outcome { record, decision }) in outcomes {
            let partition = &record.spec.key;
            let old_leader = previous.map(|spu| spu.0);
            let new_leader = record.leader.map(|spu| spu.0);
            let leader_epoch = record.leader_epoch.0;
            let isr = spu_list(&record.in_sync_replicas);
            match decision {
                Decision::Elected => {
                    info!(%partition, old_leader, new_leader, leader_epoch, %isr, "leader elected");
                }
                Decision::ElectedUnclean => warn!(
                    %partition, old_leader, new_leader, leader_epoch, %isr,
                    "leader elected outside the ISR (unclean election, allowed by the topic): \
                     records that only the failed in-sync replicas held are lost",
                ),
                Decision::Leaderless => warn!(
                    %partition, old_leader, leader_epoch, %isr,
                    "no in-sync replica is online: the partition has no leader until one returns",
                ),
                Decision::IsrShrunk => {
                    info!(%partition, leader = new_leader, leader_epoch, %isr, "failed replicas left the ISR");
                }
            }
        }
    }

    /// Moves leadership back to every preferred replica that is online, in
    /// sync and not leading, in one commit.
    async fn elect_preferred_leaders(&self, state: &mut State) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let online = state.online();
        let moves: Vec<(Option<SpuId>, PartitionRecord)> = state
            .partitions
            .values()
            .filter_map(|record| {
                let next = election::preferred(record, &online).ok()??;
                Some((record.leader, next))
            })
            .collect();
        if let Err(error) = self.commit_preferred(state, moves).await {
            warn!(%error, "preferred leaders not committed; the next liveness check retries");
        }
    }

    /// Commits preferred-leader elections (a previous leader and the new
    /// record each) and logs them.
    async fn commit_preferred(
        &self,
        state: &mut State,
        moves: Vec<(Option<SpuId>, PartitionRecord)>,
    ) -> Result<(), ApiError> {
        if moves.is_empty() {
            return Ok(());
        }
        let mutations = moves
            .iter()
            .map(|(_, record)| Mutation::PutPartition(record.clone()))
            .collect();
        self.commit(state, mutations, None).await?;
        for (previous, record) in moves {
            info!(
                partition = %record.spec.key,
                old_leader = previous.map(|spu| spu.0),
                new_leader = record.leader.map(|spu| spu.0),
                leader_epoch = record.leader_epoch.0,
                "leadership moved back to the preferred replica",
            );
        }
        Ok(())
    }

    /// Commits `mutations` as the next version, applies them and
    /// `session` in memory, and announces the result.
    ///
    /// A change without mutations (an SPU going online or offline) is
    /// applied even if the store fails to record its version: whether an
    /// SPU is connected is a fact, not a decision, and the store only
    /// needs its version to never fall behind the ones announced, which
    /// the next successful commit restores.
    async fn commit(
        &self,
        state: &mut State,
        mutations: Vec<Mutation>,
        session: Option<SessionChange>,
    ) -> Result<(), ApiError> {
        let version = state.version + 1;
        let batch = Batch { version, mutations };
        let batch = match &state.store {
            None if batch.mutations.is_empty() => batch,
            None => return Err(shutting_down()),
            Some(store) => {
                let store = Arc::clone(store);
                let written = tokio::task::spawn_blocking(move || {
                    let result = store.apply(&batch);
                    (batch, result)
                })
                .await;
                match written {
                    Ok((batch, Ok(()))) => batch,
                    Ok((batch, Err(store_error))) if batch.mutations.is_empty() => {
                        warn!(%store_error, version, "metadata version not recorded");
                        batch
                    }
                    Ok((_, Err(store_error))) => {
                        error!(%store_error, "metadata change not committed");
                        return Err(ApiError::new(
                            ErrorCode::STORAGE,
                            format!("the SC could not commit the change: {store_error}"),
                        ));
                    }
                    Err(join_error) => {
                        error!(%join_error, "metadata commit task failed");
                        return Err(ApiError::new(
                            ErrorCode::UNKNOWN,
                            "the SC's metadata commit failed; see the SC log",
                        ));
                    }
                }
            }
        };
        let mut changes = Vec::with_capacity(batch.mutations.len() + 1);
        let mut assignments: Vec<(SpuId, AssignmentUpdate)> = Vec::new();
        let mut changed_spus = BTreeSet::new();
        for mutation in batch.mutations {
            state.apply(mutation, &mut changes, &mut assignments, &mut changed_spus);
        }
        match session {
            Some(SessionChange::Open(session)) => {
                changed_spus.insert(session.spu);
                state.connected_since_start.insert(session.spu);
                // `connect_spu` closed any session the SPU had before.
                state.sessions.insert(session.spu, session);
            }
            Some(SessionChange::Close(session)) => {
                changed_spus.insert(session.spu);
                state.sessions.remove(&session.spu);
                state.reports.remove(&session.spu);
            }
            None => {}
        }
        changes.extend(
            changed_spus
                .into_iter()
                .filter_map(|id| state.spu_object(id))
                .map(|spu| Change::Upsert(Object::Spu(spu))),
        );
        state.version = version;
        // No receiver is fine: nobody is watching.
        let _ = self.changes.send(Arc::new(Delta { version, changes }));
        for (spu, update) in assignments {
            if let Some(session) = state.sessions.get(&spu) {
                session.push(update);
            }
        }
        Ok(())
    }
}

impl State {
    /// The mutations that create the topic of `spec` (id `topic_id`):
    /// placed on the online SPUs, or pending with the reason it cannot be
    /// yet.
    fn provision(&self, spec: TopicSpec, topic_id: u64) -> Vec<Mutation> {
        let mut loads: BTreeMap<SpuId, SpuLoad> = self
            .sessions
            .keys()
            .map(|&id| {
                let load = SpuLoad {
                    id,
                    replicas: 0,
                    leaders: 0,
                };
                (id, load)
            })
            .collect();
        for record in self.partitions.values() {
            for (position, spu) in record.spec.replicas.iter().enumerate() {
                if let Some(load) = loads.get_mut(spu) {
                    load.replicas += 1;
                    if position == 0 {
                        load.leaders += 1;
                    }
                }
            }
        }
        let online: Vec<SpuLoad> = loads.into_values().collect();
        match placement::place(spec.partitions, spec.replication_factor, &online) {
            Err(not_enough) => vec![Mutation::PutTopic(Topic {
                spec,
                topic_id,
                state: TopicState::Pending {
                    reason: not_enough.to_string(),
                },
            })],
            Ok(placements) => {
                let mut mutations = Vec::with_capacity(placements.len() + 1);
                let name = spec.name.clone();
                mutations.push(Mutation::PutTopic(Topic {
                    spec,
                    topic_id,
                    state: TopicState::Provisioned,
                }));
                for (index, replicas) in (0u32..).zip(placements) {
                    mutations.push(Mutation::PutPartition(PartitionRecord {
                        spec: PartitionSpec {
                            key: PartitionKey {
                                topic: name.clone(),
                                partition: PartitionId(index),
                            },
                            replicas: replicas.clone(),
                        },
                        leader: replicas.first().copied(),
                        leader_epoch: LeaderEpoch(0),
                        in_sync_replicas: replicas,
                    }));
                }
                mutations
            }
        }
    }

    /// Applies one committed mutation in memory and collects what to
    /// announce: watch changes, and assignment updates for SPUs.
    fn apply(
        &mut self,
        mutation: Mutation,
        changes: &mut Vec<Change>,
        assignments: &mut Vec<(SpuId, AssignmentUpdate)>,
        changed_spus: &mut BTreeSet<SpuId>,
    ) {
        match mutation {
            Mutation::PutTopic(topic) => {
                changes.push(Change::Upsert(Object::Topic(topic.clone())));
                self.topics.insert(topic.spec.name.clone(), topic);
            }
            Mutation::DeleteTopic(name) => {
                self.topics.remove(&name);
                changes.push(Change::Delete(ObjectKey::Topic(name)));
            }
            Mutation::PutPartition(record) => {
                let key = record.spec.key.clone();
                if let Some(previous) = self.partitions.get(&key) {
                    for spu in &previous.spec.replicas {
                        if !record.spec.replicas.contains(spu) {
                            assignments.push((*spu, AssignmentUpdate::Remove(key.clone())));
                        }
                    }
                }
                let assignment = self.assignment(&record);
                for spu in &record.spec.replicas {
                    assignments.push((*spu, AssignmentUpdate::Upsert(assignment.clone())));
                }
                changes.push(Change::Upsert(Object::Partition(partition_object(
                    &record,
                    Vec::new(),
                ))));
                self.partitions.insert(key, record);
            }
            Mutation::DeletePartition(key) => {
                if let Some(removed) = self.partitions.remove(&key) {
                    for spu in &removed.spec.replicas {
                        assignments.push((*spu, AssignmentUpdate::Remove(key.clone())));
                        if let Some(reports) = self.reports.get_mut(spu) {
                            reports.remove(&key);
                        }
                    }
                }
                changes.push(Change::Delete(ObjectKey::Partition(key)));
            }
            Mutation::PutSpu(spec) => {
                changed_spus.insert(spec.id);
                self.spus.insert(spec.id, spec);
            }
            Mutation::DeleteSpu(id) => {
                self.spus.remove(&id);
                changes.push(Change::Delete(ObjectKey::Spu(id)));
            }
        }
    }

    fn partitions_of<'a>(
        &'a self,
        topic: &TopicName,
    ) -> impl Iterator<Item = &'a PartitionRecord> + use<'a> {
        let first = PartitionKey {
            topic: topic.clone(),
            partition: PartitionId(0),
        };
        let last = PartitionKey {
            topic: topic.clone(),
            partition: PartitionId(u32::MAX),
        };
        self.partitions
            .range(first..=last)
            .map(|(_, record)| record)
    }

    /// What an SPU needs to serve its replica of `record`'s partition.
    fn assignment(&self, record: &PartitionRecord) -> ReplicaAssignment {
        let topic = self
            .topics
            .get(&record.spec.key.topic)
            .expect("a partition's topic is present: the store checks it on every write");
        ReplicaAssignment {
            key: record.spec.key.clone(),
            topic_id: topic.topic_id,
            config: topic.spec.config.clone(),
            replicas: record.spec.replicas.clone(),
            leader: record.leader,
            leader_epoch: record.leader_epoch,
            in_sync_replicas: record.in_sync_replicas.clone(),
            leader_addr: record
                .leader
                .and_then(|leader| self.spus.get(&leader))
                .map(|spec| spec.private_addr.clone()),
        }
    }

    /// The latest reports of `record`'s replicas, in replica order.
    fn reports_of(&self, record: &PartitionRecord) -> Vec<ReplicaStatus> {
        record
            .spec
            .replicas
            .iter()
            .filter_map(|spu| self.reports.get(spu)?.get(&record.spec.key).copied())
            .collect()
    }

    /// The SPUs with a session.
    fn online(&self) -> BTreeSet<SpuId> {
        self.sessions.keys().copied().collect()
    }

    fn spu_object(&self, id: SpuId) -> Option<Spu> {
        Some(Spu {
            spec: self.spus.get(&id)?.clone(),
            online: self.sessions.contains_key(&id),
        })
    }
}

fn partition_object(record: &PartitionRecord, reports: Vec<ReplicaStatus>) -> Partition {
    Partition {
        spec: record.spec.clone(),
        status: PartitionStatus {
            leader: record.leader,
            leader_epoch: record.leader_epoch,
            in_sync_replicas: record.in_sync_replicas.clone(),
            replicas: reports,
        },
    }
}

fn validate_topic(spec: &TopicSpec) -> Result<(), ApiError> {
    if !(1..=MAX_PARTITIONS).contains(&spec.partitions) {
        return Err(ApiError::new(
            ErrorCode::INVALID_CONFIG,
            format!(
                "a topic needs 1 to {MAX_PARTITIONS} partitions, not {}",
                spec.partitions
            ),
        ));
    }
    if spec.replication_factor == 0 {
        return Err(ApiError::new(
            ErrorCode::INVALID_CONFIG,
            "replication factor 0 keeps no copy of the data; use --replicas 1",
        ));
    }
    if spec.replication_factor > MAX_REPLICATION_FACTOR {
        return Err(ApiError::new(
            ErrorCode::INVALID_CONFIG,
            format!(
                "replication factor {} is above the largest supported, {MAX_REPLICATION_FACTOR}; \
                 choose --replicas 1 to {MAX_REPLICATION_FACTOR}",
                spec.replication_factor
            ),
        ));
    }
    if let Some(min) = spec.config.min_in_sync_replicas
        && !(1..=spec.replication_factor).contains(&min)
    {
        return Err(ApiError::new(
            ErrorCode::INVALID_CONFIG,
            format!(
                "min in-sync replicas {min} is outside 1 to {rf}, the replication factor \
                 (above it no acks=all produce could ever be accepted); choose \
                 --min-in-sync-replicas 1 to {rf}",
                rf = spec.replication_factor
            ),
        ));
    }
    let segment_size = spec.config.segment_size;
    if !(SEGMENT_SIZE_MIN..=SEGMENT_SIZE_MAX).contains(&segment_size.as_u64()) {
        return Err(ApiError::new(
            ErrorCode::INVALID_CONFIG,
            format!(
                "segment size {segment_size} is outside {} to {}; choose a size in that range",
                ByteSize(SEGMENT_SIZE_MIN),
                ByteSize(SEGMENT_SIZE_MAX),
            ),
        ));
    }
    Ok(())
}

fn validate_spu(spec: &SpuSpec) -> Result<(), ApiError> {
    let fields = [
        ("public address", Some(&spec.public_addr)),
        ("private address", Some(&spec.private_addr)),
        ("rack", spec.rack.as_ref()),
    ];
    for (field, value) in fields {
        let Some(value) = value else { continue };
        if value.is_empty() || value.len() > MAX_SPU_FIELD_LEN {
            return Err(ApiError::new(
                ErrorCode::INVALID_CONFIG,
                format!(
                    "SPU {}'s {field} must be 1 to {MAX_SPU_FIELD_LEN} bytes long, not {}",
                    spec.id,
                    value.len()
                ),
            ));
        }
    }
    Ok(())
}

fn partition_not_found(state: &State, key: &PartitionKey) -> ApiError {
    let count = state.partitions_of(&key.topic).count();
    let held = match count {
        0 => "no partitions yet (it is pending)".to_string(),
        1 => "only partition 0".to_string(),
        count => format!("partitions 0 to {}", count - 1),
    };
    ApiError::new(
        ErrorCode::PARTITION_NOT_FOUND,
        format!(
            "topic '{}' has no partition {}: it has {held}",
            key.topic, key.partition
        ),
    )
}

/// SPU ids as logs show them: `1,2,3`.
fn spu_list(spus: &[SpuId]) -> String {
    spus.iter()
        .map(|spu| spu.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn topic_not_found(name: &TopicName) -> ApiError {
    ApiError::new(
        ErrorCode::TOPIC_NOT_FOUND,
        format!("topic '{name}' does not exist; list topics with `runnel topic list`"),
    )
}

/// The answer to requests and streams cut short by the SC stopping.
pub fn shutting_down() -> ApiError {
    ApiError::new(
        ErrorCode::SHUTTING_DOWN,
        "the SC is shutting down; retry once it is back",
    )
}
