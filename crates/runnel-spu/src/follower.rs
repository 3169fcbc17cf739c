//! The follower side of replication: for each SPU that leads partitions
//! this SPU follows, one connection and one replication stream that carries
//! all of them.
//!
//! Before a partition joins a stream, its divergent suffix is cut: the
//! follower asks the leader where its own latest epoch ends in the
//! leader's log and truncates there (Kafka's KIP-101/279), never to a
//! locally cached high watermark. Then the leader pushes batches as they
//! are appended; the follower appends the leader's bytes unchanged and
//! reports its new log end, which is what moves the leader's high
//! watermark.
//!
//! When the set of partitions followed from a leader changes (a new
//! epoch, a replica added or removed), that leader's stream is replaced.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use runnel_api::{
    EpochEnd, FetchEpochEndRequest, ReplicaPosition, ReplicaPositionsRequest, ReplicaSyncRequest,
    SyncKind, SyncPartition,
};
use runnel_metadata::PartitionKey;
use runnel_replication::{Divergence, divergence_question, on_epoch_end};
use runnel_transport::{Backoff, Connection, TransportConfig, TransportError};
use runnel_types::{LeaderEpoch, Offset, SpuId};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::now_ms;
use crate::replica::{FollowError, Replica};

/// Items the leader may push ahead of this follower appending them.
const SYNC_WINDOW: u32 = 8;
/// How often a follower repeats its positions while none moves.
const REPORT_REFRESH: Duration = Duration::from_secs(1);
/// Most rounds of epoch questions before giving up on a leader whose
/// answers do not converge (each round asks about an older epoch).
const MAX_DIVERGENCE_ROUNDS: usize = 64;

/// What one replication stream is for: a leader, its address, and the
/// partitions (with their epoch and the replica's incarnation: a replica
/// opened again gets a new stream) followed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StreamPlan {
    addr: String,
    partitions: Vec<(PartitionKey, LeaderEpoch, u64, u64)>,
}

/// A replica followed at a leader epoch, in one generation of its role:
/// every change the stream makes to it is fenced by that generation.
#[derive(Debug, Clone)]
struct Followed {
    replica: Arc<Replica>,
    epoch: LeaderEpoch,
    generation: u64,
}

#[derive(Debug)]
struct Fetcher {
    plan: StreamPlan,
    task: JoinHandle<()>,
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
pub(crate) struct Followers {
    me: SpuId,
    transport: TransportConfig,
    shutdown: CancellationToken,
    fetchers: Mutex<BTreeMap<SpuId, Fetcher>>,
}

impl Followers {
    pub fn new(me: SpuId, transport: TransportConfig, shutdown: CancellationToken) -> Followers {
        Followers {
            me,
            transport,
            shutdown,
            fetchers: Mutex::default(),
        }
    }

    /// Makes the replication streams match the roles of `replicas`: one
    /// per leader of a partition this SPU follows; a stream whose plan
    /// changed is replaced, one no longer needed is stopped.
    pub fn follow(&self, replicas: Vec<Arc<Replica>>) {
        let mut wanted: BTreeMap<SpuId, (StreamPlan, Vec<Followed>)> = BTreeMap::new();
        for replica in replicas {
            let Some((leader, epoch, addr, generation)) = replica.following() else {
                continue;
            };
            if leader == self.me {
                continue;
            }
            let (plan, members) = wanted.entry(leader).or_insert_with(|| {
                let plan = StreamPlan {
                    addr: addr.clone(),
                    partitions: Vec::new(),
                };
                (plan, Vec::new())
            });
            plan.partitions.push((
                replica.key().clone(),
                epoch,
                replica.incarnation(),
                generation,
            ));
            members.push(Followed {
                replica,
                epoch,
                generation,
            });
        }
        let mut fetchers = self.fetchers.lock().expect("fetchers lock");
        fetchers.retain(|leader, fetcher| {
            wanted
                .get(leader)
                .is_some_and(|(plan, _)| *plan == fetcher.plan)
        });
        for (leader, (plan, members)) in wanted {
            if fetchers.contains_key(&leader) {
                continue;
            }
            let stream = ReplicationStream {
                me: self.me,
                leader,
                addr: plan.addr.clone(),
                partitions: members,
                transport: self
                    .transport
                    .expecting(&runnel_auth::spu_principal(leader.0)),
            };
            let task = tokio::spawn(stream.run(self.shutdown.clone()));
            fetchers.insert(leader, Fetcher { plan, task });
        }
    }
}

/// One leader's replication stream, kept up (reconnecting with backoff)
/// until it is replaced or the SPU stops.
#[derive(Debug)]
struct ReplicationStream {
    me: SpuId,
    leader: SpuId,
    addr: String,
    partitions: Vec<Followed>,
    transport: TransportConfig,
}

impl ReplicationStream {
    async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::reconnect();
        let mut reported: Option<String> = None;
        loop {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = self.replicate() => outcome,
            };
            match outcome {
                Ok(()) => backoff.reset(),
                Err(reason) => {
                    if reported.as_ref() != Some(&reason) {
                        warn!(leader = %self.leader, addr = %self.addr, %reason, "replication stream interrupted; retrying");
                        reported = Some(reason);
                    } else {
                        debug!(leader = %self.leader, %reason, "replication stream still interrupted");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// Connects, cuts each partition's divergent suffix, then appends what
    /// the leader pushes until the stream fails. `Ok` when the leader
    /// ended it without an error.
    async fn replicate(&self) -> Result<(), String> {
        let connection = Connection::connect(&self.addr, self.transport.clone())
            .await
            .map_err(|error| format!("cannot connect: {error}"))?;
        let reporter = Arc::new(Reporter::default());
        let _reporting = AbortOnDrop(tokio::spawn(Arc::clone(&reporter).run(
            connection.clone(),
            self.me,
            self.leader,
        )));
        let mut following = Vec::with_capacity(self.partitions.len());
        let mut request = ReplicaSyncRequest {
            follower: self.me,
            partitions: Vec::with_capacity(self.partitions.len()),
        };
        for followed in &self.partitions {
            if followed.replica.is_removed() {
                continue;
            }
            repair(followed).await?;
            let offset = cut_divergence(&connection, followed).await?;
            reporter.report(followed).await;
            request.partitions.push(SyncPartition {
                key: followed.replica.key().clone(),
                leader_epoch: followed.epoch,
                offset,
            });
            following.push(followed.clone());
        }
        if following.is_empty() {
            return Ok(());
        }
        let mut stream = connection
            .stream(&request, SYNC_WINDOW)
            .await
            .map_err(|error| format!("the leader refused the stream: {error}"))?;
        loop {
            let (item, tail) = match stream.next_with_tail().await {
                Some(Ok(item)) => item,
                Some(Err(error)) => return Err(format!("stream failed: {error}")),
                None => return Ok(()),
            };
            let Some(followed) = following.get(item.index as usize) else {
                return Err(format!(
                    "the leader sent an item for partition #{} of {}",
                    item.index,
                    following.len()
                ));
            };
            apply_item(followed, item.kind, tail).await?;
            reporter.report(followed).await;
        }
    }
}

/// Runs `change` on a blocking thread; its error, or a task that did not
/// complete, becomes the reason the stream stops.
async fn blocking<T: Send + 'static>(
    what: String,
    change: impl FnOnce() -> Result<T, FollowError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(change).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("{what}: {error}")),
        Err(error) => Err(format!("{what} did not complete: {error}")),
    }
}

/// Applies one pushed item to the followed replica: appends batches,
/// follows the high watermark, or starts the log over where the leader's
/// begins.
async fn apply_item(followed: &Followed, kind: SyncKind, tail: Bytes) -> Result<(), String> {
    let key = followed.replica.key().clone();
    let replica = Arc::clone(&followed.replica);
    let generation = followed.generation;
    match kind {
        SyncKind::Records {
            first_offset,
            high_watermark,
            ..
        } => {
            blocking(
                format!("appending {key} from offset {first_offset}"),
                move || replica.append_replicated(generation, &tail, high_watermark, now_ms()),
            )
            .await?;
        }
        SyncKind::HighWatermark { high_watermark, .. } => {
            blocking(format!("following {key}'s high watermark"), move || {
                replica.follow_high_watermark(generation, high_watermark);
                Ok(())
            })
            .await?;
        }
        SyncKind::StartOver { log_start_offset } => {
            blocking(format!("starting {key} over"), move || {
                replica.truncate_replicated(generation, log_start_offset, true)
            })
            .await?;
            info!(partition = %key, log_start = %log_start_offset, "the leader no longer holds what this replica lacks; started over at its log start");
        }
        SyncKind::Stopped(error) => return Err(format!("the leader stopped {key}: {error}")),
    }
    Ok(())
}

/// Cuts a damaged batch and everything after it off a corrupt replica,
/// so that it fetches them again from the leader.
async fn repair(followed: &Followed) -> Result<(), String> {
    let key = followed.replica.key().clone();
    let replica = Arc::clone(&followed.replica);
    let generation = followed.generation;
    let repaired = blocking(format!("repairing {key}"), move || {
        replica.repair(generation)
    })
    .await?;
    if let Some((path, fault, log_end)) = repaired {
        warn!(partition = %key, segment = %path.display(), offset = %fault.offset, fault = %fault.kind, %log_end, "repairing a damaged replica: cut it at the damage to fetch the rest from the leader");
    }
    Ok(())
}

/// Asks the leader where this replica's epochs end in its log and cuts
/// the suffix that is not the leader's; returns the log end after.
async fn cut_divergence(connection: &Connection, followed: &Followed) -> Result<Offset, String> {
    let key = followed.replica.key().clone();
    let generation = followed.generation;
    let reading = Arc::clone(&followed.replica);
    let (epochs, log_end) = tokio::task::spawn_blocking(move || {
        (reading.log().epochs(), reading.log().log_end_offset())
    })
    .await
    .map_err(|error| format!("reading {key}'s epochs did not complete: {error}"))?;
    let mut question = divergence_question(&epochs);
    for _ in 0..MAX_DIVERGENCE_ROUNDS {
        let Some(asked) = question else {
            return Ok(log_end);
        };
        let request = FetchEpochEndRequest {
            key: key.clone(),
            leader_epoch: followed.epoch,
            epoch: asked,
        };
        let answer: EpochEnd = connection
            .call(&request)
            .await
            .map_err(|error| match error {
                TransportError::Api(error) => {
                    format!("the leader refused the epoch question for {key}: {error}")
                }
                other => format!("asking the leader about {key}'s epoch {asked} failed: {other}"),
            })?;
        let next = on_epoch_end(
            &epochs,
            log_end,
            asked,
            answer.epoch_end,
            answer.log_start_offset,
        )
        .map_err(|error| format!("{key}: {error}"))?;
        let (offset, start_over) = match next {
            Divergence::Ask(epoch) => {
                question = Some(epoch);
                continue;
            }
            Divergence::TruncateTo(offset) if offset >= log_end => return Ok(log_end),
            Divergence::TruncateTo(offset) => (offset, false),
            Divergence::ResetTo(offset) => (offset, true),
        };
        let replica = Arc::clone(&followed.replica);
        let cut = blocking(format!("cutting {key} at {offset}"), move || {
            replica.truncate_replicated(generation, offset, start_over)
        })
        .await?;
        match start_over {
            true => {
                info!(partition = %key, from = %log_end, at = %cut, "nothing in this replica matches the leader's log; started over")
            }
            false => {
                info!(partition = %key, from = %log_end, to = %cut, epoch = %asked, "cut the suffix that diverged from the leader's log")
            }
        }
        return Ok(cut);
    }
    Err(format!(
        "the leader's epoch answers for {key} did not converge in {MAX_DIVERGENCE_ROUNDS} rounds"
    ))
}

/// Sends the follower's positions to the leader, one call at a time,
/// each with the latest position of every partition that moved: a slow
/// answer coalesces later reports instead of queueing them. While nothing
/// moves, every position is sent again each [`REPORT_REFRESH`], so a
/// report the leader could not take (it had not learned its epoch yet, a
/// call that failed) is not the last word.
#[derive(Debug, Default)]
struct Reporter {
    pending: Mutex<BTreeMap<PartitionKey, ReplicaPosition>>,
    latest: Mutex<BTreeMap<PartitionKey, ReplicaPosition>>,
    wake: Notify,
}

impl Reporter {
    /// Queues the followed replica's position, if its stream's generation
    /// still lasts.
    async fn report(&self, followed: &Followed) {
        let reading = Arc::clone(&followed.replica);
        let generation = followed.generation;
        let Ok(Some(log_end_offset)) =
            tokio::task::spawn_blocking(move || reading.follower_position(generation)).await
        else {
            return;
        };
        let position = ReplicaPosition {
            key: followed.replica.key().clone(),
            leader_epoch: followed.epoch,
            log_end_offset,
        };
        self.latest
            .lock()
            .expect("latest positions lock")
            .insert(position.key.clone(), position.clone());
        self.pending
            .lock()
            .expect("pending positions lock")
            .insert(position.key.clone(), position);
        self.wake.notify_one();
    }

    async fn run(self: Arc<Self>, connection: Connection, me: SpuId, leader: SpuId) {
        loop {
            let refresh = tokio::select! {
                _ = self.wake.notified() => false,
                _ = tokio::time::sleep(REPORT_REFRESH) => true,
            };
            let positions: Vec<ReplicaPosition> = match refresh {
                true => self
                    .latest
                    .lock()
                    .expect("latest positions lock")
                    .values()
                    .cloned()
                    .collect(),
                false => std::mem::take(&mut *self.pending.lock().expect("pending positions lock"))
                    .into_values()
                    .collect(),
            };
            if positions.is_empty() {
                continue;
            }
            let request = ReplicaPositionsRequest {
                follower: me,
                positions,
            };
            if let Err(error) = connection.call(&request).await {
                debug!(%leader, %error, "reporting positions failed");
            }
        }
    }
}

/// A task stopped when its owner lets go of it.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
