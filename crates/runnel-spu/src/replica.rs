//! One partition replica held by this SPU: its log, its role in the
//! partition (leader, follower, or neither), and its high watermark,
//! published so fetch streams wake as soon as records are committed.
//!
//! As leader, the replica drives the replication rules of
//! `runnel-replication` (follower positions in, high watermark and ISR
//! proposals out). As follower, its high watermark is the leader's, capped
//! by its own log end.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use runnel_log::{AppendInfo, Log, LogConfig, LogError, RecoveryReport};
use runnel_metadata::{PartitionKey, ReplicaAssignment, ReplicaStatus, TopicConfig};
use runnel_replication::{AckState, Action, Leader, LeaderConfig, ProposalId};
use runnel_types::{FlushPolicy, LeaderEpoch, Offset, SpuId};
use runnel_wire::batch::BatchHeader;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Numbers every replica opened by this process.
static NEXT_INCARNATION: AtomicU64 = AtomicU64::new(1);

/// How much a scrub reads at a time.
const SCRUB_READ_BYTES: u64 = 8 << 20;

use crate::producers::{ProducerStates, SequenceCheck, SequenceError};

/// Who leads a partition, as the SC last said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leadership {
    pub leader: Option<SpuId>,
    pub epoch: LeaderEpoch,
    pub in_sync_replicas: Vec<SpuId>,
    /// The leader's private address, where followers replicate from.
    pub leader_addr: Option<String>,
}

impl Leadership {
    pub fn of(assignment: &ReplicaAssignment) -> Leadership {
        Leadership {
            leader: assignment.leader,
            epoch: assignment.leader_epoch,
            in_sync_replicas: assignment.in_sync_replicas.clone(),
            leader_addr: assignment.leader_addr.clone(),
        }
    }
}

/// What this replica does in its partition.
#[derive(Debug)]
enum Role {
    Leader(Box<Leader>),
    /// Replicates from `leader` (at the address of the leadership).
    Follower,
    /// No leader, or the SC has not said yet.
    Idle,
}

/// A leader's request to change its partition's ISR, for the SC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IsrProposal {
    pub key: PartitionKey,
    /// The opening of the replica that made it: one opened again (healed)
    /// numbers its proposals anew.
    pub incarnation: u64,
    pub epoch: LeaderEpoch,
    pub proposal: ProposalId,
    pub current: Vec<SpuId>,
    pub proposed: Vec<SpuId>,
}

/// Where a produce acknowledged with `acks=all` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commitment {
    Committed,
    Waiting,
    NotEnoughReplicas {
        in_sync: usize,
        needed: usize,
    },
    /// The replica no longer leads at the epoch the records were written in.
    LeadershipLost {
        leader: Option<SpuId>,
        epoch: LeaderEpoch,
    },
}

#[derive(Debug)]
struct RoleState {
    /// Bumped on every change of leader, epoch or leader address: a
    /// replication stream may change the log only while the generation it
    /// started in lasts.
    generation: u64,
    /// The SC's latest assignment of this replica.
    assignment: ReplicaAssignment,
    leadership: Leadership,
    role: Role,
}

#[derive(Debug)]
pub(crate) struct Replica {
    key: PartitionKey,
    me: SpuId,
    /// The topic incarnation this replica's data belongs to.
    topic_id: u64,
    incarnation: u64,
    log: Arc<Log>,
    /// The topic settings the log was opened with.
    config: TopicConfig,
    /// How long an ISR follower may stay behind before it is proposed out.
    lag_time_max_ms: i64,
    state: Mutex<RoleState>,
    /// Offset after the last committed record. Only grows while the
    /// replica leads; fetch streams wait on its changes.
    high_watermark: watch::Sender<Offset>,
    /// The log end, for replication streams waiting for new batches.
    log_end: watch::Sender<Offset>,
    /// Bumped on every change of role, ISR or high watermark: produces
    /// waiting for `acks=all` and replication streams watch it.
    changes: watch::Sender<u64>,
    proposals: mpsc::UnboundedSender<IsrProposal>,
    /// The idempotent producers' last batches. Its lock is held from the
    /// check of a produced batch through its write and record, so two
    /// appends of one partition never interleave there (the fsync after
    /// is outside it and shared).
    producers: Mutex<ProducerStates>,
    /// Cancelled when the SC removes the replica, so that streams on it
    /// end instead of waiting for records that never come.
    removed: CancellationToken,
}

/// What a producer's batches came to.
#[derive(Debug)]
pub(crate) enum Produced {
    Appended(AppendInfo),
    /// The replica holds them already (a retry): these are their offsets.
    Duplicate {
        first_offset: Offset,
        last_offset: Offset,
    },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProduceRefusal {
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(
        "the request mixes batches this partition holds already with new ones; send one batch per idempotent producer per request"
    )]
    MixedRetry,
    /// Leadership moved between the request's check and its write.
    #[error(
        "leadership moved (now epoch {epoch}, leader {leader:?}) before the records were written; nothing was stored"
    )]
    NotLeader {
        leader: Option<SpuId>,
        epoch: LeaderEpoch,
    },
}

/// Why a replication stream may not change a follower's log.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FollowError {
    #[error("the replica's role changed since the stream started; a new stream takes over")]
    Superseded,
    #[error(transparent)]
    Log(#[from] LogError),
}

/// What an SPU passes to every replica it opens.
#[derive(Debug, Clone)]
pub(crate) struct ReplicaContext {
    pub me: SpuId,
    pub lag_time_max_ms: i64,
    pub proposals: mpsc::UnboundedSender<IsrProposal>,
}

impl Replica {
    /// Opens (or creates) the replica's log in `dir`, recovering it after
    /// an unclean stop, and takes the role the assignment gives it.
    /// `high_watermark` is what this process knew committed before (zero
    /// for a replica it did not have open).
    /// Blocking: call it from a blocking task.
    pub fn open(
        dir: &Path,
        assignment: &ReplicaAssignment,
        context: &ReplicaContext,
        high_watermark: Offset,
        now_ms: i64,
    ) -> Result<(Replica, RecoveryReport), LogError> {
        let (log, report) = Log::open(dir, log_config(&assignment.config))?;
        // After an unclean stop, the sealed segments recovery trusted are
        // read once too: damage found there marks the log corrupt, and a
        // follower repairs it from its leader before anything else.
        if report.scanned_segments > 0 || report.truncated.is_some() {
            scrub(&log);
        }
        let producers = ProducerStates::rebuild(&log)?;
        // What is known committed: what this process saw before it opened
        // the log again, or nothing until the leader (this replica, or the
        // one it follows) says so.
        let high_watermark = high_watermark.min(log.log_end_offset());
        let log_end = log.log_end_offset();
        let replica = Replica {
            key: assignment.key.clone(),
            me: context.me,
            topic_id: assignment.topic_id,
            log: Arc::new(log),
            config: assignment.config.clone(),
            lag_time_max_ms: context.lag_time_max_ms,
            incarnation: NEXT_INCARNATION.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(RoleState {
                generation: 0,
                assignment: assignment.clone(),
                leadership: Leadership {
                    leader: None,
                    epoch: LeaderEpoch(-1),
                    in_sync_replicas: Vec::new(),
                    leader_addr: None,
                },
                role: Role::Idle,
            }),
            high_watermark: watch::Sender::new(high_watermark),
            log_end: watch::Sender::new(log_end),
            changes: watch::Sender::new(0),
            proposals: context.proposals.clone(),
            producers: Mutex::new(producers),
            removed: CancellationToken::new(),
        };
        replica.assign(assignment, now_ms);
        Ok((replica, report))
    }

    pub fn key(&self) -> &PartitionKey {
        &self.key
    }

    pub fn topic_id(&self) -> u64 {
        self.topic_id
    }

    /// The log. Most of its methods take its lock, which a roll holds
    /// across an fsync: call them from a blocking task.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    pub fn leadership(&self) -> Leadership {
        self.lock().leadership.clone()
    }

    /// Who leads and at which epoch, without copying the rest of the
    /// leadership: for checks on the fetch and replication paths.
    pub fn leader_and_epoch(&self) -> (Option<SpuId>, LeaderEpoch) {
        let state = self.lock();
        (state.leadership.leader, state.leadership.epoch)
    }

    /// The SC's latest assignment of this replica.
    pub fn assignment(&self) -> ReplicaAssignment {
        self.lock().assignment.clone()
    }

    /// Tells this opening of the replica from earlier and later ones of
    /// the same partition on this SPU.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Takes the role an assignment gives: leader (rules started afresh
    /// at a new epoch, or told the ISR the SC committed), follower, or
    /// idle. Blocking (reads the log's end).
    pub fn assign(&self, assignment: &ReplicaAssignment, now_ms: i64) {
        let leadership = Leadership::of(assignment);
        // No write to the log runs while the role changes: a produce
        // checked against the old role, or a stream of the old leader,
        // cannot append after it.
        let _writing = self.writer();
        // Read before the state lock: the log's lock may be held across an
        // fsync, and async tasks take the state lock.
        let local_end = self.local_end();
        let log_end = self.log.log_end_offset();
        let mut state = self.lock();
        if state.leadership == leadership {
            state.assignment = assignment.clone();
            return;
        }
        let same_epoch = state.leadership.epoch == leadership.epoch
            && state.leadership.leader == leadership.leader;
        if !same_epoch || state.leadership.leader_addr != leadership.leader_addr {
            state.generation += 1;
        }
        let actions = match (&mut state.role, leadership.leader) {
            (Role::Leader(leader), Some(me)) if me == self.me && same_epoch => {
                leader.on_isr_committed(leadership.in_sync_replicas.clone(), now_ms)
            }
            (_, Some(me)) if me == self.me => {
                let config = LeaderConfig {
                    me,
                    replicas: assignment.replicas.clone(),
                    min_in_sync: assignment.config.min_in_sync(assignment.replicas.len()),
                    lag_time_max_ms: self.lag_time_max_ms,
                };
                let high_watermark = (*self.high_watermark.borrow()).min(local_end);
                info!(partition = %self.key, epoch = %leadership.epoch, isr = ?leadership.in_sync_replicas, %local_end, %high_watermark, "leading");
                let mut leader = Leader::new(
                    config,
                    leadership.epoch,
                    leadership.in_sync_replicas.clone(),
                    local_end,
                    high_watermark,
                    now_ms,
                );
                leader.on_written_end(log_end);
                let mut actions = leader.on_local_end(local_end, now_ms);
                actions.push(Action::AdvanceHighWatermark(leader.high_watermark()));
                state.role = Role::Leader(Box::new(leader));
                actions
            }
            (_, Some(leader)) => {
                if !matches!(state.role, Role::Follower) || !same_epoch {
                    info!(partition = %self.key, %leader, epoch = %leadership.epoch, "following");
                }
                state.role = Role::Follower;
                Vec::new()
            }
            (_, None) => {
                info!(partition = %self.key, epoch = %leadership.epoch, "no leader");
                state.role = Role::Idle;
                Vec::new()
            }
        };
        state.leadership = leadership;
        state.assignment = assignment.clone();
        self.apply(&mut state, actions);
    }

    /// The leader's own end the rules count: what is durable under the
    /// `always` policy (a record is committed only once every in-sync
    /// replica has it on disk), what is written otherwise.
    fn local_end(&self) -> Offset {
        match self.config.flush {
            FlushPolicy::Always => self.log.durable_offset(),
            FlushPolicy::Interval { .. } | FlushPolicy::Os => self.log.log_end_offset(),
        }
    }

    pub fn high_watermark(&self) -> Offset {
        *self.high_watermark.borrow()
    }

    /// A receiver that sees every later change of the high watermark.
    pub fn watch_high_watermark(&self) -> watch::Receiver<Offset> {
        self.high_watermark.subscribe()
    }

    pub fn watch_log_end(&self) -> watch::Receiver<Offset> {
        self.log_end.subscribe()
    }

    /// A receiver woken by every change of role, ISR or high watermark.
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Appends a producer's batches at `epoch`, unless they are a retry
    /// of batches held already; refuses a gap in a producer's sequence.
    /// Returns once the batches are written; under the `always` policy
    /// the caller waits for [`Log::sync_to`] before counting them. Blocking.
    pub fn append_produced(
        &self,
        batches: &mut [u8],
        epoch: LeaderEpoch,
        now_ms: i64,
    ) -> Result<Produced, ProduceRefusal> {
        let mut producers = self.writer();
        {
            let state = self.lock();
            let leads = matches!(state.role, Role::Leader(_)) && state.leadership.epoch == epoch;
            if !leads {
                return Err(ProduceRefusal::NotLeader {
                    leader: state.leadership.leader,
                    epoch: state.leadership.epoch,
                });
            }
        }
        let mut duplicate = None;
        let mut fresh = false;
        for header in headers(batches) {
            match producers.check(&header)? {
                SequenceCheck::Append => fresh = true,
                SequenceCheck::Duplicate {
                    first_offset,
                    last_offset,
                } => {
                    let (first, _) = duplicate.get_or_insert((first_offset, last_offset));
                    duplicate = Some((*first, last_offset));
                }
            }
        }
        match duplicate {
            Some((first_offset, last_offset)) if !fresh => {
                return Ok(Produced::Duplicate {
                    first_offset,
                    last_offset,
                });
            }
            // A retry resends one request as it was; one that mixes held
            // and new batches is not a retry.
            Some(_) => return Err(ProduceRefusal::MixedRetry),
            None => {}
        }
        let info = self.log.append_as_leader_unsynced(batches, epoch, now_ms)?;
        for header in headers(batches) {
            producers.record(&header);
        }
        Ok(Produced::Appended(info))
    }

    /// The generation of this replica's role while it follows `leader`
    /// at `epoch`, for a stream from that leader to fence its writes with.
    pub fn following(&self) -> Option<(SpuId, LeaderEpoch, String, u64)> {
        let state = self.lock();
        match (
            &state.role,
            state.leadership.leader,
            &state.leadership.leader_addr,
        ) {
            (Role::Follower, Some(leader), Some(addr)) => Some((
                leader,
                state.leadership.epoch,
                addr.clone(),
                state.generation,
            )),
            _ => None,
        }
    }

    /// Refuses a stream whose generation is over.
    fn check_following(&self, generation: u64) -> Result<(), FollowError> {
        let state = self.lock();
        match state.role {
            Role::Follower if state.generation == generation => Ok(()),
            _ => Err(FollowError::Superseded),
        }
    }

    /// Appends batches copied from the leader, and records their
    /// producers (so a retry after a failover is recognised here), if the
    /// stream's generation still lasts. Blocking.
    pub fn append_replicated(
        &self,
        generation: u64,
        batches: &[u8],
        leader_high_watermark: Offset,
        now_ms: i64,
    ) -> Result<AppendInfo, FollowError> {
        let mut producers = self.writer();
        self.check_following(generation)?;
        let info = self.log.append_replicated(batches, now_ms)?;
        for header in headers(batches) {
            producers.record(&header);
        }
        drop(producers);
        self.on_local_append(now_ms);
        self.publish_high_watermark(leader_high_watermark.min(info.log_end));
        Ok(info)
    }

    /// Cuts the log at `offset` (or, `start_over`, empties it and starts it
    /// at `offset`) for the stream of `generation`. Blocking.
    pub fn truncate_replicated(
        &self,
        generation: u64,
        offset: Offset,
        start_over: bool,
    ) -> Result<Offset, FollowError> {
        let mut producers = self.writer();
        self.check_following(generation)?;
        let log_end = match start_over {
            true => self.log.reset_to(offset)?,
            false => self.log.truncate_to(offset)?,
        };
        producers.truncate_to(log_end);
        drop(producers);
        self.after_truncation(log_end);
        Ok(log_end)
    }

    /// Cuts a damaged log at its damage for the stream of `generation`:
    /// the damaged path, fault and new log end, or `None` when sound.
    /// Blocking.
    pub fn repair(
        &self,
        generation: u64,
    ) -> Result<Option<(std::path::PathBuf, runnel_log::scan::Fault, Offset)>, FollowError> {
        let mut producers = self.writer();
        self.check_following(generation)?;
        let Some((path, fault)) = self.log.corruption() else {
            return Ok(None);
        };
        let log_end = self.log.truncate_to(fault.offset)?;
        producers.truncate_to(log_end);
        drop(producers);
        self.after_truncation(log_end);
        Ok(Some((path, fault, log_end)))
    }

    /// What the leader may count of this follower, if the stream's
    /// generation still lasts: the durable end under the `always` policy,
    /// the written end otherwise. Read under the writer lock, so it is an
    /// end this stream's own writes made. Blocking.
    pub fn follower_position(&self, generation: u64) -> Option<Offset> {
        let _writing = self.writer();
        self.check_following(generation).ok()?;
        Some(self.local_end())
    }

    /// On a follower, for the stream of `generation`: the leader's high
    /// watermark, capped by this log's end. Blocking.
    pub fn follow_high_watermark(&self, generation: u64, leader_high_watermark: Offset) {
        let _writing = self.writer();
        if self.check_following(generation).is_ok() {
            let log_end = self.log.log_end_offset();
            self.publish_high_watermark(leader_high_watermark.min(log_end));
        }
    }

    /// The lock every change of the log's content takes; it guards the
    /// producers' table too.
    fn writer(&self) -> MutexGuard<'_, ProducerStates> {
        self.producers.lock().expect("producers lock")
    }

    /// After an append to the log (as leader or follower), or a flush:
    /// wakes replication streams and, on a leader, moves the high
    /// watermark as far as the rules allow. Blocking (reads the log's end
    /// under its lock).
    pub fn on_local_append(&self, now_ms: i64) {
        let log_end = self.log.log_end_offset();
        let local_end = self.local_end();
        {
            let mut state = self.lock();
            if let Role::Leader(leader) = &mut state.role {
                leader.on_written_end(log_end);
                let actions = leader.on_local_end(local_end, now_ms);
                self.apply(&mut state, actions);
            }
        }
        self.announce(log_end);
    }

    /// After a leader wrote batches, before they are durable: followers
    /// may fetch them now, so their fsyncs run alongside the leader's
    /// instead of after it. Blocking (reads the log's end).
    pub fn on_written(&self) {
        let log_end = self.log.log_end_offset();
        if let Role::Leader(leader) = &mut self.lock().role {
            leader.on_written_end(log_end);
        }
        self.announce(log_end);
    }

    /// Wakes replication streams for what is written up to `log_end`. The
    /// rules learn of it first, so a follower's report of it is taken.
    fn announce(&self, log_end: Offset) {
        self.log_end.send_if_modified(|end| {
            let moved = *end < log_end;
            if moved {
                *end = log_end;
            }
            moved
        });
    }

    /// A follower's position, reported after it appended.
    pub fn on_follower_end(
        &self,
        follower: SpuId,
        epoch: LeaderEpoch,
        end: Offset,
        now_ms: i64,
    ) -> Result<(), String> {
        let mut state = self.lock();
        let Role::Leader(leader) = &mut state.role else {
            return Err("this replica does not lead".to_string());
        };
        let actions = leader
            .on_follower_end(follower, epoch, end, now_ms)
            .map_err(|error| error.to_string())?;
        self.apply(&mut state, actions);
        Ok(())
    }

    /// Time passes: a leader proposes lagging followers out of the ISR.
    pub fn tick(&self, now_ms: i64) {
        let mut state = self.lock();
        if let Role::Leader(leader) = &mut state.role {
            let actions = leader.on_tick(now_ms);
            self.apply(&mut state, actions);
        }
    }

    /// The SC refused an ISR proposal made at `epoch`. (An accepted one
    /// takes effect when the SC's assignment with the new ISR arrives:
    /// assignments come in the order the SC committed them, answers do
    /// not.)
    pub fn on_isr_refused(&self, epoch: LeaderEpoch, proposal: ProposalId) {
        let mut state = self.lock();
        let current_epoch = state.leadership.epoch;
        let Role::Leader(leader) = &mut state.role else {
            return;
        };
        if leader.epoch() != epoch || current_epoch != epoch {
            return;
        }
        let actions = leader.on_isr_refused(proposal);
        self.apply(&mut state, actions);
    }

    /// After a truncation: the high watermark may not point past the new
    /// end.
    fn after_truncation(&self, log_end: Offset) {
        self.high_watermark.send_if_modified(|high_watermark| {
            let above = *high_watermark > log_end;
            if above {
                *high_watermark = log_end;
            }
            above
        });
        self.log_end.send_replace(log_end);
        self.changes.send_modify(|version| *version += 1);
    }

    /// Where a produce at `epoch` whose records end before `end` stands
    /// under `acks=all`.
    pub fn commitment(&self, epoch: LeaderEpoch, end: Offset) -> Commitment {
        let state = self.lock();
        let lost = Commitment::LeadershipLost {
            leader: state.leadership.leader,
            epoch: state.leadership.epoch,
        };
        let Role::Leader(leader) = &state.role else {
            return lost;
        };
        if leader.epoch() != epoch {
            return lost;
        }
        match leader.acks_all(end) {
            AckState::Committed => Commitment::Committed,
            AckState::Waiting => Commitment::Waiting,
            AckState::NotEnoughReplicas => Commitment::NotEnoughReplicas {
                in_sync: leader.isr().len(),
                needed: self.min_in_sync(&state),
            },
        }
    }

    /// Whether an `acks=all` produce may be appended now; the error names
    /// the ISR size and the minimum.
    pub fn accepts_acks_all(&self) -> Result<(), (usize, usize)> {
        let state = self.lock();
        match &state.role {
            Role::Leader(leader) if !leader.accepts_acks_all() => {
                Err((leader.isr().len(), self.min_in_sync(&state)))
            }
            _ => Ok(()),
        }
    }

    fn min_in_sync(&self, state: &RoleState) -> usize {
        self.config.min_in_sync(state.assignment.replicas.len())
    }

    /// Carries out the rules' actions: a new high watermark is published,
    /// an ISR proposal goes to the SC.
    fn apply(&self, state: &mut MutexGuard<'_, RoleState>, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::AdvanceHighWatermark(offset) => self.publish_high_watermark(offset),
                Action::ProposeIsr {
                    proposal,
                    current,
                    proposed,
                } => {
                    info!(partition = %self.key, epoch = %state.leadership.epoch, ?current, ?proposed, "proposing an ISR change");
                    // No receiver means the SPU is stopping.
                    let _ = self.proposals.send(IsrProposal {
                        key: self.key.clone(),
                        incarnation: self.incarnation,
                        epoch: state.leadership.epoch,
                        proposal,
                        current,
                        proposed,
                    });
                }
            }
        }
        self.changes.send_modify(|version| *version += 1);
    }

    fn publish_high_watermark(&self, offset: Offset) {
        let moved = self.high_watermark.send_if_modified(|high_watermark| {
            let moved = offset > *high_watermark;
            if moved {
                *high_watermark = offset;
            }
            moved
        });
        if moved {
            self.changes.send_modify(|version| *version += 1);
        }
    }

    /// What the heartbeat reports. Blocking (it takes the log's lock).
    pub fn status(&self, spu: SpuId) -> ReplicaStatus {
        ReplicaStatus {
            spu,
            log_start_offset: self.log.log_start_offset(),
            log_end_offset: self.log.log_end_offset(),
            high_watermark: self.high_watermark(),
            size_bytes: self.log.size_bytes(),
            damaged: self.log.corruption().is_some() || self.log.is_failed(),
        }
    }

    /// Marks the replica removed: streams on it end.
    pub fn mark_removed(&self) {
        self.removed.cancel();
    }

    pub fn is_removed(&self) -> bool {
        self.removed.is_cancelled()
    }

    /// Resolves once the replica is removed.
    pub async fn removed(&self) {
        self.removed.cancelled().await
    }

    fn lock(&self) -> MutexGuard<'_, RoleState> {
        self.state.lock().expect("replica state lock")
    }
}

/// Reads the whole log, checking every batch; the first damaged one
/// marks the log corrupt ([`Log::corruption`]). Blocking.
fn scrub(log: &Log) {
    let mut offset = log.log_start_offset();
    loop {
        match log.read_verified(offset, SCRUB_READ_BYTES) {
            Ok(Some((slice, _))) => offset = slice.next_offset,
            Ok(None) => return,
            Err(LogError::Corrupt { path, offset, .. }) => {
                warn!(path = %path.display(), %offset, "scrub found a damaged batch");
                return;
            }
            Err(error) => {
                warn!(dir = %log.dir().display(), %error, "scrub stopped");
                return;
            }
        }
    }
}

/// The headers of the whole batches in `bytes`, stopping at the first
/// that does not parse (the log refuses those).
fn headers(bytes: &[u8]) -> impl Iterator<Item = BatchHeader> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = BatchHeader::parse(bytes.get(at..)?).ok()?;
        at += header.total_len();
        (at <= bytes.len()).then_some(header)
    })
}

/// The log settings that follow from a topic's configuration.
pub(crate) fn log_config(config: &TopicConfig) -> LogConfig {
    let defaults = LogConfig::default();
    let segment_max_bytes = config.segment_size.as_u64();
    LogConfig {
        segment_max_bytes,
        // A batch never spans segments, so a topic with small segments
        // takes only batches that fit one.
        max_batch_bytes: defaults
            .max_batch_bytes
            .min(usize::try_from(segment_max_bytes).unwrap_or(usize::MAX)),
        retention_time_ms: config.retention_time.map(|time| time.as_millis()),
        retention_bytes: config.max_partition_size.map(|size| size.as_u64()),
        flush: config.flush,
        ..defaults
    }
}

#[cfg(test)]
mod tests {
    use runnel_types::{ByteSize, Duration, PartitionId, TopicName};
    use runnel_wire::{BatchBuilder, Compression};

    use super::*;

    fn assignment(flush: FlushPolicy) -> ReplicaAssignment {
        ReplicaAssignment {
            key: PartitionKey {
                topic: TopicName::new("events").expect("valid name"),
                partition: PartitionId(0),
            },
            config: TopicConfig {
                flush,
                ..TopicConfig::default()
            },
            topic_id: 1,
            replicas: vec![SpuId(1)],
            leader: Some(SpuId(1)),
            leader_epoch: LeaderEpoch(2),
            in_sync_replicas: vec![SpuId(1)],
            leader_addr: None,
        }
    }

    fn context() -> (ReplicaContext, mpsc::UnboundedReceiver<IsrProposal>) {
        let (proposals, proposed) = mpsc::unbounded_channel();
        let context = ReplicaContext {
            me: SpuId(1),
            lag_time_max_ms: 10_000,
            proposals,
        };
        (context, proposed)
    }

    fn batch() -> Vec<u8> {
        let mut builder = BatchBuilder::new(Compression::None);
        builder.push(1_000, None, Some(b"value".to_vec()), Vec::new());
        builder.build().encode().expect("encodable batch")
    }

    #[test]
    fn log_config_follows_the_topic() {
        let config = TopicConfig {
            retention_time: Some(Duration::from_millis(60_000)),
            max_partition_size: Some(ByteSize(1 << 20)),
            segment_size: ByteSize(4096),
            compression: Compression::None,
            flush: FlushPolicy::Interval { interval_ms: 50 },
            ..TopicConfig::default()
        };
        let log = log_config(&config);
        assert_eq!(log.segment_max_bytes, 4096);
        assert_eq!(log.max_batch_bytes, 4096);
        assert_eq!(log.retention_time_ms, Some(60_000));
        assert_eq!(log.retention_bytes, Some(1 << 20));
        assert_eq!(log.flush, FlushPolicy::Interval { interval_ms: 50 });

        let forever = log_config(&TopicConfig {
            retention_time: None,
            ..TopicConfig::default()
        });
        assert_eq!(forever.retention_time_ms, None);
        assert_eq!(forever.retention_bytes, None);
        assert_eq!(
            forever.max_batch_bytes,
            LogConfig::default().max_batch_bytes
        );
    }

    #[test]
    fn high_watermark_follows_appends_and_wakes_watchers() {
        for flush in [FlushPolicy::Always, FlushPolicy::Os] {
            let dir = tempfile::tempdir().expect("temp dir");
            let (context, _proposed) = context();
            let (replica, _) = Replica::open(
                &dir.path().join("events-0"),
                &assignment(flush),
                &context,
                Offset::ZERO,
                1_000,
            )
            .expect("open");
            let mut watcher = replica.watch_high_watermark();
            assert_eq!(*watcher.borrow_and_update(), Offset(0));

            let mut bytes = batch();
            replica
                .log()
                .append_as_leader(&mut bytes, LeaderEpoch(2), 1_000)
                .expect("append");
            replica.on_local_append(1_000);
            assert!(watcher.has_changed().expect("sender alive"), "{flush}");
            assert_eq!(*watcher.borrow_and_update(), Offset(1));
            assert_eq!(
                replica.commitment(LeaderEpoch(2), Offset(1)),
                Commitment::Committed,
                "a lone replica commits what it has"
            );

            // Nothing new: no wake-up.
            replica.on_local_append(1_000);
            assert!(!watcher.has_changed().expect("sender alive"));
            assert_eq!(replica.status(SpuId(1)).log_end_offset, Offset(1));
        }
    }

    #[test]
    fn reopened_replica_starts_at_its_committed_end() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events-0");
        let assignment = assignment(FlushPolicy::Always);
        let (context, _proposed) = context();
        {
            let (replica, _) =
                Replica::open(&path, &assignment, &context, Offset::ZERO, 1_000).expect("open");
            let mut bytes = batch();
            replica
                .log()
                .append_as_leader(&mut bytes, LeaderEpoch(2), 1_000)
                .expect("append");
        }
        let (replica, _) =
            Replica::open(&path, &assignment, &context, Offset::ZERO, 1_000).expect("reopen");
        assert_eq!(replica.high_watermark(), Offset(1));
        assert_eq!(replica.leadership(), Leadership::of(&assignment));
    }
}
