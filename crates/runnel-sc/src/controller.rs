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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use runnel_api::{ApiError, ErrorCode, Reply};
use runnel_metadata::{
    AssignmentUpdate, Change, MAX_PARTITIONS, MetadataUpdate, Object, ObjectKey, Partition,
    PartitionKey, PartitionSpec, PartitionStatus, ReplicaAssignment, ReplicaStatus, Spu, SpuSpec,
    Topic, TopicSpec, TopicState,
};
use runnel_types::{ByteSize, LeaderEpoch, PartitionId, SpuId, TopicName};
use tokio::sync::{Mutex, Notify, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

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
    shutdown: CancellationToken,
    next_session_number: AtomicU64,
}

impl Controller {
    /// A controller over `store`, holding what it loaded.
    pub fn new(
        store: Store,
        loaded: Loaded,
        session_timeout: Duration,
        shutdown: CancellationToken,
    ) -> Controller {
        let (changes, _) = broadcast::channel(CHANGE_FEED_CAPACITY);
        let cluster_id = store.cluster_id().to_string();
        let state = State {
            store: Some(Arc::new(store)),
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
        };
        Controller {
            cluster_id,
            state: Mutex::new(state),
            changes,
            session_timeout,
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
    /// session; a session it already had is ended. Pending topics are
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
        let mutations = if state.spus.get(&spec.id) == Some(&spec) {
            Vec::new()
        } else {
            vec![Mutation::PutSpu(spec.clone())]
        };
        self.commit(
            &mut state,
            mutations,
            Some(SessionChange::Open(Arc::clone(&session))),
        )
        .await?;
        info!(spu = %spec.id, public_addr = %spec.public_addr, private_addr = %spec.private_addr, "SPU online");
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

    /// Marks SPUs silent past the session timeout offline, until shutdown.
    pub async fn expire_silent_spus(&self) {
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
                if let Some(replaced) = state.sessions.insert(session.spu, session) {
                    replaced.end(ApiError::new(
                        ErrorCode::SPU_IN_USE,
                        format!(
                            "SPU {} connected again on another connection; this session is replaced",
                            replaced.spu
                        ),
                    ));
                }
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
