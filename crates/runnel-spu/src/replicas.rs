//! The set of replicas this SPU holds, kept equal to what the SC assigns:
//! opened, re-led, removed (their data deleted) as assignment updates
//! arrive, and kept within retention and their flush interval in the
//! background.
//!
//! The SC is authoritative within its own cluster: a replica directory
//! it does not assign is deleted when a snapshot arrives, which is how a
//! topic deleted while this SPU was down loses its data here too. A
//! snapshot from another cluster's SC is refused before anything is
//! touched, and a replica directory created for an older topic of the
//! same name is deleted before the new topic uses it (see `identity`).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runnel_log::{Log, RecoveryReport};
use runnel_metadata::{AssignmentUpdate, PartitionKey, ReplicaAssignment, ReplicaStatus};
use runnel_transport::TransportConfig;
use runnel_types::{FlushPolicy, Offset, PartitionId, SpuId, TopicName};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::follower::Followers;
use crate::identity::{self, CLUSTER_ID_FILE, ClusterCheck, ClusterRefusal, Incarnation};
use crate::now_ms;
use crate::replica::{IsrProposal, Leadership, Replica, ReplicaContext};

/// The longest an `interval` flush may wait past its due time for the
/// timer that drives it.
const MAX_FLUSH_TICK: Duration = Duration::from_millis(100);

/// Leader ticks between two healing passes.
const HEAL_EVERY_TICKS: u64 = 8;

/// What this SPU knows of a partition.
#[derive(Debug)]
pub(crate) enum Lookup {
    Ready(Arc<Replica>),
    /// Assigned, but its log failed to open; the reason says why.
    Failed(String),
    /// Not assigned to this SPU (or being removed).
    Missing,
}

#[derive(Debug)]
enum Slot {
    Ready(Arc<Replica>),
    /// Its log failed to open; opened again by the next healing pass.
    Failed {
        reason: String,
        assignment: Box<ReplicaAssignment>,
    },
}

#[derive(Debug)]
pub(crate) struct Replicas {
    spu: SpuId,
    data_dir: PathBuf,
    context: ReplicaContext,
    /// The replication streams this SPU runs as a follower.
    followers: Followers,
    /// Held while an assignment update or a healing pass runs: one at a
    /// time, so a replica is never opened again with a stale assignment.
    changing: tokio::sync::Mutex<()>,
    /// Held only for map operations, never across an await or disk I/O.
    slots: Mutex<BTreeMap<PartitionKey, Slot>>,
    shutdown: CancellationToken,
}

impl Replicas {
    pub fn new(
        context: ReplicaContext,
        data_dir: PathBuf,
        transport: TransportConfig,
        shutdown: CancellationToken,
    ) -> Replicas {
        Replicas {
            spu: context.me,
            data_dir,
            followers: Followers::new(context.me, transport, shutdown.clone()),
            changing: tokio::sync::Mutex::new(()),
            context,
            slots: Mutex::default(),
            shutdown,
        }
    }

    /// Where ISR proposals of this SPU's replicas are queued.
    pub fn proposal_sender(&self) -> tokio::sync::mpsc::UnboundedSender<IsrProposal> {
        self.context.proposals.clone()
    }

    /// How many replicas this SPU is assigned, opened or not.
    pub fn held(&self) -> usize {
        self.lock().len()
    }

    pub fn lookup(&self, key: &PartitionKey) -> Lookup {
        match self.lock().get(key) {
            Some(Slot::Ready(replica)) if !replica.is_removed() => {
                Lookup::Ready(Arc::clone(replica))
            }
            Some(Slot::Failed { reason, .. }) => Lookup::Failed(reason.clone()),
            Some(Slot::Ready(_)) | None => Lookup::Missing,
        }
    }

    /// The state of every replica served, for the heartbeat. Blocking (it
    /// reads each log under its lock).
    /// A replica whose log did not open is reported damaged and empty, so
    /// the SC neither elects it nor counts it in sync.
    pub fn statuses(&self) -> Vec<(TopicName, PartitionId, ReplicaStatus)> {
        let failed: Vec<PartitionKey> = self
            .lock()
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Failed { .. }))
            .map(|(key, _)| key.clone())
            .collect();
        let unopened = failed.into_iter().map(|key| {
            let status = ReplicaStatus {
                spu: self.spu,
                log_start_offset: Offset::ZERO,
                log_end_offset: Offset::ZERO,
                high_watermark: Offset::ZERO,
                size_bytes: 0,
                damaged: true,
            };
            (key.topic, key.partition, status)
        });
        self.ready()
            .iter()
            .map(|replica| {
                let key = replica.key();
                (key.topic.clone(), key.partition, replica.status(self.spu))
            })
            .chain(unopened)
            .collect()
    }

    /// Applies one message of the SC's assignment stream. Updates are
    /// applied one at a time, in order. A snapshot from the SC of another
    /// cluster is refused whole: nothing is opened or deleted.
    pub async fn apply(&self, update: AssignmentUpdate) -> Result<(), ClusterRefusal> {
        let _changing = self.changing.lock().await;
        match update {
            AssignmentUpdate::Snapshot {
                cluster_id,
                replicas,
            } => {
                self.claim_cluster(cluster_id).await?;
                self.apply_snapshot(replicas).await;
            }
            AssignmentUpdate::Upsert(assignment) => self.upsert(assignment).await,
            AssignmentUpdate::Remove(key) => self.remove(&key).await,
            // Not about replicas: the SC session hands it to the
            // authorizer and never here.
            AssignmentUpdate::Security(_) => return Ok(()),
        }
        self.followers.follow(self.ready());
        Ok(())
    }

    /// Checks that this SPU's data belongs to `cluster_id`, making it so
    /// on the first session of an SPU whose data belongs to no cluster.
    async fn claim_cluster(&self, cluster_id: String) -> Result<(), ClusterRefusal> {
        let data_dir = self.data_dir.clone();
        let offered = cluster_id.clone();
        let claimed =
            tokio::task::spawn_blocking(move || identity::claim_cluster(&data_dir, &offered)).await;
        match claimed {
            Ok(Ok(ClusterCheck::Same)) => Ok(()),
            Ok(Ok(ClusterCheck::Adopted)) => {
                info!(
                    %cluster_id,
                    data_dir = %self.data_dir.display(),
                    "this SPU's data now belongs to the SC's cluster"
                );
                Ok(())
            }
            Ok(Err(refusal)) => Err(refusal),
            Err(error) => Err(ClusterRefusal::Io {
                path: self.data_dir.join(CLUSTER_ID_FILE),
                source: io::Error::other(format!("the check did not complete: {error}")),
            }),
        }
    }

    async fn apply_snapshot(&self, assignments: Vec<ReplicaAssignment>) {
        let assigned: BTreeSet<PartitionKey> = assignments
            .iter()
            .map(|assignment| assignment.key.clone())
            .collect();
        let unassigned: Vec<PartitionKey> = self
            .lock()
            .keys()
            .filter(|key| !assigned.contains(key))
            .cloned()
            .collect();
        for key in unassigned {
            self.remove(&key).await;
        }
        let data_dir = self.data_dir.clone();
        let keep = assigned.clone();
        match tokio::task::spawn_blocking(move || delete_unassigned_dirs(&data_dir, &keep)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(
                data_dir = %self.data_dir.display(),
                %error,
                "cannot list the data directory to delete unassigned replicas"
            ),
            Err(error) => warn!(%error, "deleting unassigned replicas did not complete"),
        }
        for assignment in assignments {
            self.upsert(assignment).await;
        }
        info!(
            replicas = assigned.len(),
            "applied the SC's assignment snapshot"
        );
    }

    /// Opens a newly assigned replica, retries one that failed to open,
    /// records a new leader of one already open, or replaces one that
    /// belongs to an older topic of the same name.
    async fn upsert(&self, assignment: ReplicaAssignment) {
        let key = assignment.key.clone();
        let leadership = Leadership::of(&assignment);
        let existing = match self.lock().get(&key) {
            Some(Slot::Ready(replica)) => Some(Arc::clone(replica)),
            Some(Slot::Failed { .. }) | None => None,
        };
        if let Some(replica) = existing {
            if replica.topic_id() == assignment.topic_id {
                if replica.config() != &assignment.config {
                    warn!(
                        partition = %key,
                        "the topic configuration changed; this replica keeps its current settings until the SPU restarts"
                    );
                }
                if replica.leadership() != leadership {
                    let assigning = Arc::clone(&replica);
                    let assigned = tokio::task::spawn_blocking(move || {
                        assigning.assign(&assignment, now_ms())
                    })
                    .await;
                    if let Err(error) = assigned {
                        error!(partition = %key, %error, "taking the assigned role did not complete");
                    }
                }
                return;
            }
            warn!(
                partition = %key,
                old_topic_id = replica.topic_id(),
                topic_id = assignment.topic_id,
                "the topic was deleted and created again; deleting the old topic's replica"
            );
            self.remove(&key).await;
        }
        self.open(assignment, Offset::ZERO).await;
    }

    /// Opens the replica of `assignment` and serves it, or records why it
    /// cannot be. `high_watermark`: what was known committed before.
    async fn open(&self, assignment: ReplicaAssignment, high_watermark: Offset) {
        let key = assignment.key.clone();
        let leadership = Leadership::of(&assignment);
        let dir = self.replica_dir(&key);
        let failed_assignment = assignment.clone();
        let opening = tokio::task::spawn_blocking({
            let dir = dir.clone();
            let context = self.context.clone();
            move || open_replica(&dir, &assignment, &context, high_watermark)
        })
        .await;
        let slot = match opening {
            Ok(Ok((replica, report))) => {
                if report.truncated.is_some() || !report.corrupt_segments.is_empty() {
                    warn!(partition = %key, ?report, "replica recovered from an unclean stop");
                } else {
                    debug!(partition = %key, ?report, "replica opened");
                }
                info!(
                    partition = %key,
                    topic_id = replica.topic_id(),
                    leader = ?leadership.leader,
                    epoch = %leadership.epoch,
                    log_start = %report.log_start,
                    log_end = %report.log_end,
                    "serving replica"
                );
                let replica = Arc::new(replica);
                self.start_flush_ticker(&replica);
                Slot::Ready(replica)
            }
            Ok(Err(reason)) => {
                error!(partition = %key, dir = %dir.display(), %reason, "cannot open replica; it is not served until it opens");
                Slot::Failed {
                    reason,
                    assignment: Box::new(failed_assignment.clone()),
                }
            }
            Err(error) => {
                error!(partition = %key, %error, "opening replica did not complete; it is not served until it opens");
                Slot::Failed {
                    reason: format!("opening its log did not complete: {error}"),
                    assignment: Box::new(failed_assignment.clone()),
                }
            }
        };
        self.lock().insert(key, slot);
    }

    /// Opens again what failed: a replica whose log refuses writes after a
    /// failed write or fsync (a full disk), and one whose log did not open.
    /// Recovery then decides what the files hold; a follower catches up
    /// from its leader and rejoins the ISR once the disk takes writes.
    async fn heal(&self) {
        let _changing = self.changing.lock().await;
        let mut retry = Vec::new();
        for (key, slot) in self.lock().iter() {
            match slot {
                Slot::Ready(replica) if replica.log().is_failed() && !replica.is_removed() => {
                    warn!(partition = %key, "the replica's log refuses writes after a failure; opening it again");
                    replica.mark_removed();
                    retry.push((replica.assignment(), replica.high_watermark()));
                }
                Slot::Failed { assignment, .. } => {
                    retry.push((ReplicaAssignment::clone(assignment), Offset::ZERO))
                }
                Slot::Ready(_) => {}
            }
        }
        if retry.is_empty() {
            return;
        }
        for (assignment, high_watermark) in retry {
            self.open(assignment, high_watermark).await;
        }
        self.followers.follow(self.ready());
    }

    /// Ends the streams on a replica and deletes its data. The replica
    /// stays in the map (answering as missing) until its directory is
    /// gone, so a heartbeat that omits it means its data is deleted.
    async fn remove(&self, key: &PartitionKey) {
        if let Some(Slot::Ready(replica)) = self.lock().get(key) {
            replica.mark_removed();
        }
        let dir = self.replica_dir(key);
        let deleting = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || remove_dir_if_exists(&dir)
        })
        .await;
        match deleting {
            Ok(Ok(())) => {
                info!(partition = %key, dir = %dir.display(), "replica removed and its data deleted")
            }
            Ok(Err(error)) => {
                error!(partition = %key, dir = %dir.display(), %error, "replica removed but its data could not be deleted; delete the directory by hand")
            }
            Err(error) => {
                error!(partition = %key, %error, "deleting the replica's data did not complete")
            }
        }
        self.lock().remove(key);
    }

    /// Deletes what each log holds past its retention, every `interval`,
    /// until shutdown.
    pub async fn enforce_retention_every(&self, interval: Duration) {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let replicas = self.ready();
            let pass = tokio::task::spawn_blocking(move || {
                let now = now_ms();
                for replica in replicas {
                    match replica.log().enforce_retention(now) {
                        Ok(outcome) if outcome.deleted_segments > 0 => info!(
                            partition = %replica.key(),
                            deleted_segments = outcome.deleted_segments,
                            deleted_bytes = outcome.deleted_bytes,
                            log_start = %outcome.log_start,
                            "retention deleted old segments"
                        ),
                        Ok(_) => {}
                        Err(error) => {
                            warn!(partition = %replica.key(), %error, "retention pass failed")
                        }
                    }
                }
            });
            if let Err(error) = pass.await {
                warn!(%error, "retention pass did not complete");
            }
        }
    }

    /// Lets every replica that leads check its followers' lag, every
    /// `interval`, and heals failed replicas every [`HEAL_EVERY_TICKS`]
    /// intervals, until shutdown.
    pub async fn tick_every(&self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now = now_ms();
            for replica in self.ready() {
                replica.tick(now);
            }
            ticks += 1;
            if ticks.is_multiple_of(HEAL_EVERY_TICKS) {
                self.heal().await;
            }
        }
    }

    /// Closes every log (flushing it and moving its recovery point to the
    /// end) so the next start opens it without a scan.
    pub async fn close_all(&self) {
        let replicas: Vec<Arc<Replica>> = std::mem::take(&mut *self.lock())
            .into_values()
            .filter_map(|slot| match slot {
                Slot::Ready(replica) => Some(replica),
                Slot::Failed { .. } => None,
            })
            .collect();
        let logs: Vec<(PartitionKey, Arc<Log>)> = replicas
            .iter()
            .map(|replica| (replica.key().clone(), Arc::clone(replica.log())))
            .collect();
        drop(replicas);
        let closing = tokio::task::spawn_blocking(move || {
            for (key, log) in logs {
                // A stream ending right now may still hold the log; a flush
                // is all `close` does, so it leaves the same files behind.
                let closed = match Arc::try_unwrap(log) {
                    Ok(log) => log.close(),
                    Err(shared) => shared.flush(),
                };
                if let Err(error) = closed {
                    error!(partition = %key, %error, "closing the log failed; the next start will recover it");
                }
            }
        });
        if let Err(error) = closing.await {
            error!(%error, "closing the logs did not complete; the next start will recover them");
        }
    }

    /// Under the `interval` flush policy, syncs the log when its interval
    /// is due even if no append comes to do it.
    fn start_flush_ticker(&self, replica: &Arc<Replica>) {
        let FlushPolicy::Interval { interval_ms } = replica.config().flush else {
            return;
        };
        let period = Duration::from_millis(interval_ms.max(1)).min(MAX_FLUSH_TICK);
        let replica = Arc::clone(replica);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = replica.removed() => return,
                    _ = ticker.tick() => {}
                }
                // Nothing to sync when everything written is durable. The
                // durable offset is behind a lock that is never held across
                // I/O (unlike the log's main lock), so this does not block.
                let written = *replica.watch_log_end().borrow();
                if replica.log().durable_offset() >= written {
                    continue;
                }
                let ticking = Arc::clone(&replica);
                let ticked = tokio::task::spawn_blocking(move || {
                    let now = now_ms();
                    let ticked = ticking.log().tick(now);
                    ticking.on_local_append(now);
                    ticked
                })
                .await;
                match ticked {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        warn!(partition = %replica.key(), %error, "interval flush failed")
                    }
                    Err(_) => return,
                }
            }
        });
    }

    fn ready(&self) -> Vec<Arc<Replica>> {
        self.lock()
            .values()
            .filter_map(|slot| match slot {
                Slot::Ready(replica) if !replica.is_removed() => Some(Arc::clone(replica)),
                _ => None,
            })
            .collect()
    }

    fn replica_dir(&self, key: &PartitionKey) -> PathBuf {
        self.data_dir.join(key.to_string())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PartitionKey, Slot>> {
        self.slots.lock().expect("replica map lock")
    }
}

/// The partition a directory named `<topic>-<partition>` holds, if the
/// name is one this SPU would have created.
pub(crate) fn parse_replica_dir_name(name: &str) -> Option<PartitionKey> {
    let (topic, partition) = name.rsplit_once('-')?;
    if partition.is_empty() || !partition.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let partition: u32 = partition.parse().ok()?;
    // Only the spelling we write: "orders-01" is not ours.
    if name.len() != topic.len() + 1 + partition.to_string().len() {
        return None;
    }
    Some(PartitionKey {
        topic: TopicName::new(topic).ok()?,
        partition: PartitionId(partition),
    })
}

/// Deletes every replica directory in `data_dir` that is not in `keep`.
fn delete_unassigned_dirs(data_dir: &Path, keep: &BTreeSet<PartitionKey>) -> io::Result<()> {
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        let Some(key) = entry.file_name().to_str().and_then(parse_replica_dir_name) else {
            continue;
        };
        if keep.contains(&key) || !entry.file_type()?.is_dir() {
            continue;
        }
        let path = entry.path();
        warn!(path = %path.display(), "deleting a replica directory the SC no longer assigns to this SPU");
        if let Err(error) = remove_dir_if_exists(&path) {
            error!(path = %path.display(), %error, "cannot delete an unassigned replica directory; delete it by hand");
        }
    }
    Ok(())
}

/// Opens the replica of `assignment` in `dir`, first deleting what an
/// older topic of the same name left there. Blocking. The error says what
/// failed, naming the directory.
fn open_replica(
    dir: &Path,
    assignment: &ReplicaAssignment,
    context: &ReplicaContext,
    high_watermark: Offset,
) -> Result<(Replica, RecoveryReport), String> {
    let topic_id = assignment.topic_id;
    match identity::incarnation(dir, topic_id) {
        Incarnation::Matches => {}
        Incarnation::Absent => create_replica_dir(dir, topic_id)?,
        Incarnation::NotADirectory => {
            return Err(format!(
                "{} is not a directory; move it out of the data directory",
                dir.display()
            ));
        }
        Incarnation::Other(found) => {
            replace_replica_dir(dir, topic_id, &format!("it holds topic id {found}"))?
        }
        Incarnation::Unknown(reason) => replace_replica_dir(
            dir,
            topic_id,
            &format!("{reason}, so its topic id is unknown"),
        )?,
    }
    Replica::open(dir, assignment, context, high_watermark, now_ms())
        .map_err(|error| error.to_string())
}

fn create_replica_dir(dir: &Path, topic_id: u64) -> Result<(), String> {
    identity::create_replica_dir(dir, topic_id)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))
}

/// Deletes `dir`, which is not known to hold topic `topic_id` (`reason`
/// says what it holds), and creates it anew for that topic.
fn replace_replica_dir(dir: &Path, topic_id: u64, reason: &str) -> Result<(), String> {
    warn!(
        path = %dir.display(),
        found = %reason,
        topic_id,
        "deleting a replica directory that is not this topic's: an older topic of the same name left it"
    );
    remove_dir_if_exists(dir)
        .map_err(|error| format!("cannot delete {}: {error}", dir.display()))?;
    create_replica_dir(dir, topic_id)
}

fn remove_dir_if_exists(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        result => result,
    }
}

#[cfg(test)]
mod tests {
    use runnel_metadata::TopicConfig;
    use runnel_types::{LeaderEpoch, Offset};
    use runnel_wire::{BatchBuilder, Compression};

    use super::*;

    fn key(topic: &str, partition: u32) -> PartitionKey {
        PartitionKey {
            topic: TopicName::new(topic).expect("valid name"),
            partition: PartitionId(partition),
        }
    }

    /// Replicas of SPU 1 in `dir`; ISR proposals go nowhere.
    fn test_replicas(dir: &Path) -> Replicas {
        let (proposals, _) = tokio::sync::mpsc::unbounded_channel();
        let context = ReplicaContext {
            me: SpuId(1),
            lag_time_max_ms: 10_000,
            proposals,
        };
        Replicas::new(
            context,
            dir.to_path_buf(),
            TransportConfig::default(),
            CancellationToken::new(),
        )
    }

    fn assignment(topic: &str, partition: u32, leader: u32, epoch: i32) -> ReplicaAssignment {
        ReplicaAssignment {
            key: key(topic, partition),
            topic_id: 1,
            config: TopicConfig::default(),
            replicas: vec![SpuId(leader)],
            leader: Some(SpuId(leader)),
            leader_epoch: LeaderEpoch(epoch),
            in_sync_replicas: vec![SpuId(leader)],
            leader_addr: None,
        }
    }

    fn snapshot(replicas: Vec<ReplicaAssignment>) -> AssignmentUpdate {
        AssignmentUpdate::Snapshot {
            cluster_id: "cluster-a".to_string(),
            replicas,
        }
    }

    fn ready(replicas: &Replicas, key: &PartitionKey) -> Arc<Replica> {
        match replicas.lookup(key) {
            Lookup::Ready(replica) => replica,
            other => panic!("{key} is not ready: {other:?}"),
        }
    }

    #[test]
    fn replica_dir_names_parse() {
        let check = |name: &str, expect: Option<PartitionKey>| {
            assert_eq!(parse_replica_dir_name(name), expect, "{name:?}");
        };
        check("orders-0", Some(key("orders", 0)));
        check("a-b.c_d-12", Some(key("a-b.c_d", 12)));
        check("orders", None);
        check("orders-", None);
        check("-3", None);
        check("orders-01", None);
        check("orders-+1", None);
        check("orders-99999999999", None);
        check("bad name-1", None);
        check("lost+found", None);
    }

    #[tokio::test]
    async fn snapshot_opens_assigned_and_deletes_unassigned() {
        let dir = tempfile::tempdir().expect("temp dir");
        let stale = dir.path().join("gone-0");
        std::fs::create_dir(&stale).expect("stale dir");
        let unrelated = dir.path().join("notes");
        std::fs::create_dir(&unrelated).expect("unrelated dir");
        let replicas = test_replicas(dir.path());

        replicas
            .apply(snapshot(vec![
                assignment("kept", 0, 1, 0),
                assignment("kept", 1, 2, 0),
            ]))
            .await
            .expect("applied");
        assert!(!stale.exists());
        assert!(unrelated.exists());
        assert!(dir.path().join("kept-0").is_dir());
        assert!(dir.path().join("kept-1").is_dir());
        assert_eq!(replicas.statuses().len(), 2);

        // A second snapshot without kept-1 removes it and its data.
        replicas
            .apply(snapshot(vec![assignment("kept", 0, 1, 0)]))
            .await
            .expect("applied");
        assert!(matches!(replicas.lookup(&key("kept", 1)), Lookup::Missing));
        assert!(!dir.path().join("kept-1").exists());
        assert!(dir.path().join("kept-0").is_dir());
    }

    #[tokio::test]
    async fn upsert_changes_the_leader_and_keeps_the_data() {
        let dir = tempfile::tempdir().expect("temp dir");
        let replicas = test_replicas(dir.path());
        let key = key("t", 0);
        replicas
            .apply(AssignmentUpdate::Upsert(assignment("t", 0, 1, 0)))
            .await
            .expect("applied");
        let replica = ready(&replicas, &key);
        append_one(&replica);

        replicas
            .apply(AssignmentUpdate::Upsert(assignment("t", 0, 3, 1)))
            .await
            .expect("applied");
        let same = ready(&replicas, &key);
        assert!(Arc::ptr_eq(&replica, &same), "the open replica is kept");
        assert_eq!(same.leadership(), Leadership::of(&assignment("t", 0, 3, 1)));
        assert_eq!(same.log().log_end_offset(), Offset(1));
    }

    fn append_one(replica: &Replica) {
        let mut builder = BatchBuilder::new(Compression::None);
        builder.push(1, None, Some(b"x".to_vec()), Vec::new());
        let mut bytes = builder.build().encode().expect("encodable");
        replica
            .log()
            .append_as_leader(&mut bytes, LeaderEpoch(0), 1)
            .expect("append");
    }

    #[tokio::test]
    async fn a_snapshot_of_another_cluster_is_refused_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let replicas = test_replicas(dir.path());
        replicas
            .apply(snapshot(vec![assignment("kept", 0, 1, 0)]))
            .await
            .expect("the first cluster is adopted");
        let unlisted = dir.path().join("other-0");
        std::fs::create_dir(&unlisted).expect("unlisted dir");

        let foreign = AssignmentUpdate::Snapshot {
            cluster_id: "cluster-b".to_string(),
            replicas: vec![assignment("new", 0, 1, 0)],
        };
        let refusal = replicas.apply(foreign).await.expect_err("refused");
        assert!(
            matches!(refusal, ClusterRefusal::Foreign { .. }),
            "{refusal}"
        );
        ready(&replicas, &key("kept", 0));
        assert!(dir.path().join("kept-0").is_dir());
        assert!(unlisted.is_dir(), "nothing is deleted");
        assert!(!dir.path().join("new-0").exists(), "nothing is opened");
    }

    #[tokio::test]
    async fn a_new_topic_id_replaces_the_replica_in_memory_and_on_disk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let replicas = test_replicas(dir.path());
        let key = key("t", 0);
        replicas
            .apply(AssignmentUpdate::Upsert(assignment("t", 0, 1, 0)))
            .await
            .expect("applied");
        let old = ready(&replicas, &key);
        append_one(&old);

        let second = ReplicaAssignment {
            topic_id: 2,
            ..assignment("t", 0, 1, 0)
        };
        replicas
            .apply(AssignmentUpdate::Upsert(second))
            .await
            .expect("applied");
        assert!(old.is_removed(), "streams on the old topic's replica end");
        let new = ready(&replicas, &key);
        assert_eq!(new.topic_id(), 2);
        assert_eq!(new.log().log_end_offset(), Offset(0));
        append_one(&new);
        drop((old, new));
        replicas.close_all().await;

        // On disk: a restarted SPU assigned a third incarnation, and a
        // directory without a marker.
        let unmarked = dir.path().join("u-0");
        std::fs::create_dir(&unmarked).expect("unmarked dir");
        std::fs::write(unmarked.join("00000000000000000000.log"), b"old").expect("old data");
        let replicas = test_replicas(dir.path());
        for assignment in [
            ReplicaAssignment {
                topic_id: 3,
                ..assignment("t", 0, 1, 0)
            },
            assignment("u", 0, 1, 0),
        ] {
            let key = assignment.key.clone();
            replicas
                .apply(AssignmentUpdate::Upsert(assignment))
                .await
                .expect("applied");
            assert_eq!(
                ready(&replicas, &key).log().log_end_offset(),
                Offset(0),
                "{key} starts empty"
            );
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("t-0").join("replica.id")).expect("marker"),
            "3\n"
        );
        assert_eq!(
            std::fs::read_to_string(unmarked.join("replica.id")).expect("marker"),
            "1\n"
        );
    }

    #[tokio::test]
    async fn remove_ends_streams_and_deletes_the_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let replicas = test_replicas(dir.path());
        let key = key("t", 4);
        replicas
            .apply(AssignmentUpdate::Upsert(assignment("t", 4, 1, 0)))
            .await
            .expect("applied");
        let replica = ready(&replicas, &key);
        replicas
            .apply(AssignmentUpdate::Remove(key.clone()))
            .await
            .expect("applied");
        assert!(replica.is_removed());
        assert!(matches!(replicas.lookup(&key), Lookup::Missing));
        assert!(!dir.path().join("t-4").exists());
        assert!(replicas.statuses().is_empty());
    }

    #[tokio::test]
    async fn a_log_that_cannot_open_is_reported_not_served() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A file where the replica's directory belongs.
        std::fs::write(dir.path().join("t-0"), b"not a directory").expect("blocking file");
        let replicas = test_replicas(dir.path());
        replicas
            .apply(AssignmentUpdate::Upsert(assignment("t", 0, 1, 0)))
            .await
            .expect("applied");
        let Lookup::Failed(reason) = replicas.lookup(&key("t", 0)) else {
            panic!("the replica should have failed to open");
        };
        assert!(reason.contains("t-0"), "{reason}");
        let statuses = replicas.statuses();
        assert_eq!(statuses.len(), 1);
        let (topic, partition, status) = &statuses[0];
        assert_eq!((topic.as_str(), partition.0), ("t", 0));
        assert!(
            status.damaged,
            "the SC must not elect it or count it in sync"
        );
        assert_eq!(status.log_end_offset, Offset::ZERO);

        // Healing opens it once the obstacle is gone.
        std::fs::remove_file(dir.path().join("t-0")).expect("remove the blocking file");
        replicas.heal().await;
        assert!(matches!(replicas.lookup(&key("t", 0)), Lookup::Ready(_)));
        assert!(!replicas.statuses()[0].2.damaged);
    }

    #[tokio::test]
    async fn close_all_leaves_logs_that_open_without_a_scan() {
        let dir = tempfile::tempdir().expect("temp dir");
        let replicas = test_replicas(dir.path());
        let os_flush = ReplicaAssignment {
            config: TopicConfig {
                flush: FlushPolicy::Os,
                ..TopicConfig::default()
            },
            ..assignment("t", 0, 1, 0)
        };
        replicas
            .apply(AssignmentUpdate::Upsert(os_flush.clone()))
            .await
            .expect("applied");
        let replica = ready(&replicas, &key("t", 0));
        append_one(&replica);
        drop(replica);
        replicas.close_all().await;
        assert!(replicas.statuses().is_empty());

        let (reopened, report) = Replica::open(
            &dir.path().join("t-0"),
            &os_flush,
            &replicas.context,
            Offset::ZERO,
            now_ms(),
        )
        .expect("reopen");
        assert_eq!(report.scanned_segments, 0, "{report:?}");
        assert_eq!(reopened.log().log_end_offset(), Offset(1));
    }
}
