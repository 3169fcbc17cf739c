//! The peer listener: the leader side of replication.
//!
//! - `ReplicaSync`: one stream per follower SPU; for each partition it
//!   lists, a pusher sends every batch from the follower's offset on as
//!   soon as it is appended (up to the log end, not the high watermark:
//!   followers are what move the high watermark), and the high watermark
//!   when it moves. Nothing polls: pushers wait on the replica's log end,
//!   high watermark and role.
//! - `ReplicaPositions`: followers' log ends, fed to the replication rules.
//! - `FetchEpochEnd`: where an epoch ends in this leader's log, for a
//!   follower cutting its divergent suffix.
//!
//! Every request names the leader epoch the follower follows; one that is
//! not this replica's current epoch as leader is refused (fenced).
//!
//! A follower syncs only partitions it is a replica of, with or without
//! TLS. With TLS, the transport admits only node certificates here, and a
//! peer speaks only as the SPU its certificate names: `spu:N` syncs and
//! reports positions as follower N only, and asks epoch ends only of
//! partitions N follows. A sync stream is authorized again for every item
//! and whenever the security state changes or the certificate expires: a
//! revoked SPU stops replicating at once, not at its next reconnection.

use std::sync::Arc;

use runnel_api::{
    ApiError, ApiKey, ApiVersionsRequest, EpochEnd, ErrorCode, FetchEpochEndRequest, Listener,
    ReplicaPositionsRequest, ReplicaSyncRequest, Reply, SyncItem, SyncKind, SyncPartition,
};
use runnel_metadata::PartitionKey;
use runnel_transport::{
    FileRange, Handler, IncomingRequest, Responder, StreamClosed, StreamSender,
};
use runnel_types::{LeaderEpoch, Offset, SpuId};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::auth::{Authorizer, Permission};
use crate::error::{log_error_to_api, malformed, task_failed};
use crate::now_ms;
use crate::replica::Replica;
use crate::replicas::{Lookup, Replicas};

const SERVED: &[Listener] = &[Listener::Any, Listener::SpuPrivate];
const NAME: &str = "the SPU's private listener";
/// Most batch bytes in one replication item.
const MAX_SYNC_ITEM_BYTES: u64 = 4 << 20;
/// Items the pushers of one stream may have ready ahead of the socket.
const PUSHED_AHEAD: usize = 4;

#[derive(Debug)]
pub(crate) struct PrivateApi {
    spu: SpuId,
    replicas: Arc<Replicas>,
    /// With TLS: a peer speaks only as the SPU its certificate names.
    authorizer: Arc<Authorizer>,
    /// Largest batch bytes in one item: the transport's frame limit, less
    /// room for the header and message.
    max_item_bytes: u64,
    shutdown: CancellationToken,
}

impl Handler for PrivateApi {
    async fn handle(&self, request: IncomingRequest, responder: Responder) {
        let header = &request.header;
        let api = match runnel_api::check_served(header.api_key, header.api_version, SERVED, NAME) {
            Ok(api) => api,
            Err(error) => return refuse(header.api_key, responder, error).await,
        };
        match api {
            ApiKey::ApiVersions => {
                let reply = request
                    .decode::<ApiVersionsRequest>()
                    .map(|_| runnel_api::api_versions(SERVED))
                    .map_err(|error| malformed("ApiVersions", error));
                responder.reply(&reply).await
            }
            ApiKey::FetchEpochEnd => responder.reply(&self.epoch_end(&request).await).await,
            ApiKey::ReplicaPositions => responder.reply(&self.positions(&request)).await,
            ApiKey::ReplicaSync => self.sync(&request, responder).await,
            other => {
                let error = ApiError::new(
                    ErrorCode::UNSUPPORTED_API,
                    format!("{other:?} is not implemented by this SPU; upgrade it"),
                );
                refuse(other as u16, responder, error).await
            }
        }
    }
}

impl PrivateApi {
    pub fn new(
        spu: SpuId,
        replicas: Arc<Replicas>,
        authorizer: Arc<Authorizer>,
        max_frame_bytes: usize,
        shutdown: CancellationToken,
    ) -> PrivateApi {
        let room = max_frame_bytes.saturating_sub(crate::public::FRAME_OVERHEAD_BYTES) as u64;
        PrivateApi {
            spu,
            replicas,
            authorizer,
            max_item_bytes: MAX_SYNC_ITEM_BYTES.min(room),
            shutdown,
        }
    }

    async fn epoch_end(&self, request: &IncomingRequest) -> Reply<EpochEnd> {
        let question = request
            .decode::<FetchEpochEndRequest>()
            .map_err(|error| malformed("FetchEpochEnd", error))?;
        // Who asks, before anything about the partition is looked up: a
        // stranger learns nothing, not even whether it is led here.
        let asker = self
            .authorizer
            .requesting_spu(request.identity.as_deref())?;
        let replica = self.led_at(&question.key, question.leader_epoch)?;
        self.authorizer
            .authorize_replica(asker, &question.key, &replica.assignment().replicas)?;
        let log = Arc::clone(replica.log());
        let epoch = question.epoch;
        let answered = tokio::task::spawn_blocking(move || EpochEnd {
            epoch_end: log.epoch_end_offset(epoch),
            log_start_offset: log.log_start_offset(),
        })
        .await;
        answered.map_err(|error| task_failed(&question.key, "epoch lookup", &error))
    }

    /// Feeds each position to its replica's rules. A stale position (an
    /// old epoch, a replica that no longer leads) is dropped: the follower
    /// learns the change from the SC or its stream.
    fn positions(&self, request: &IncomingRequest) -> Reply<()> {
        let report = request
            .decode::<ReplicaPositionsRequest>()
            .map_err(|error| malformed("ReplicaPositions", error))?;
        self.authorizer
            .authorize_follower(request.identity.as_deref(), report.follower)?;
        self.within_held("ReplicaPositions", report.positions.len())?;
        let now = now_ms();
        for position in report.positions {
            let Lookup::Ready(replica) = self.replicas.lookup(&position.key) else {
                continue;
            };
            let taken = replica.on_follower_end(
                report.follower,
                position.leader_epoch,
                position.log_end_offset,
                now,
            );
            if let Err(error) = taken {
                debug!(partition = %position.key, follower = %report.follower, %error, "position dropped");
            }
        }
        Ok(())
    }

    async fn sync(&self, request: &IncomingRequest, responder: Responder) {
        let sync = match request.decode::<ReplicaSyncRequest>() {
            Ok(sync) => sync,
            Err(error) => {
                let error = malformed("ReplicaSync", error);
                return refuse(ApiKey::ReplicaSync as u16, responder, error).await;
            }
        };
        let granted = self.authorizer.grant(
            request.identity.as_deref(),
            Permission::Follower(sync.follower),
        );
        let mut grant = match granted {
            Ok(grant) => grant,
            Err(error) => return refuse(ApiKey::ReplicaSync as u16, responder, error).await,
        };
        // One pusher task per listed partition: a peer may not list more
        // than this SPU holds.
        if let Err(error) = self.within_held("ReplicaSync", sync.partitions.len()) {
            return refuse(ApiKey::ReplicaSync as u16, responder, error).await;
        }
        let mut sender = responder.into_stream();
        let (items, mut ready) = mpsc::channel::<(SyncItem, Option<FileRange>)>(PUSHED_AHEAD);
        let mut pushers = JoinSet::new();
        for (index, partition) in (0u32..).zip(sync.partitions) {
            let pusher = Pusher {
                index,
                leader: self.spu,
                follower: sync.follower,
                max_bytes: self.max_item_bytes,
                items: items.clone(),
            };
            match self.served_to(sync.follower, &partition) {
                Ok(replica) => {
                    pushers.spawn(pusher.run(replica, partition, self.shutdown.clone()));
                }
                Err(error) => {
                    pushers.spawn(pusher.stop(error));
                }
            }
        }
        drop(items);
        // One wait for the refusal, kept across items.
        let revoked = grant.revoked();
        tokio::pin!(revoked);
        loop {
            let next = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    let error = ApiError::new(ErrorCode::SHUTTING_DOWN, format!("SPU {} is shutting down", self.spu));
                    return sender.end(Err(error)).await;
                }
                refused = &mut revoked => return sender.end(Err(refused)).await,
                _ = sender.cancelled() => return,
                next = ready.recv() => next,
            };
            // Every pusher ended (each sent why): the follower reconnects.
            let Some((item, range)) = next else {
                return sender.end(Ok(())).await;
            };
            // A follower that grants no credit does not hold the stream
            // open past a refusal.
            let sent = tokio::select! {
                biased;
                refused = &mut revoked => return sender.end(Err(refused)).await,
                sent = send_item(&mut sender, &item, range) => sent,
            };
            if sent.is_err() {
                return;
            }
        }
    }

    /// Refuses a peer's list of `count` partitions longer than the
    /// replicas this SPU holds: no follower can need more.
    fn within_held(&self, api: &str, count: usize) -> Result<(), ApiError> {
        let held = self.replicas.held();
        if count > held {
            return Err(ApiError::new(
                ErrorCode::MALFORMED_REQUEST,
                format!(
                    "the {api} request lists {count} partitions but SPU {} holds {held} replicas; list only partitions this SPU leads",
                    self.spu
                ),
            ));
        }
        Ok(())
    }

    /// The replica of a partition a follower asks to sync, if this SPU
    /// leads it at the epoch asked and `follower` is one of its replicas.
    /// With TLS the stream's grant made `follower` the certificate's SPU;
    /// without, the request's word is taken, and the check still keeps a
    /// misconfigured SPU from pulling a partition it does not replicate.
    /// Checked once, at the opening: a partition's replicas are fixed
    /// when it is created (the SC moves no replica), so the answer holds
    /// for as long as the stream does.
    fn served_to(
        &self,
        follower: SpuId,
        partition: &SyncPartition,
    ) -> Result<Arc<Replica>, ApiError> {
        let replica = self.led_at(&partition.key, partition.leader_epoch)?;
        self.authorizer.authorize_replica(
            Some(follower),
            &partition.key,
            &replica.assignment().replicas,
        )?;
        Ok(replica)
    }

    /// The replica of `key` if this SPU leads it at exactly `epoch`.
    fn led_at(&self, key: &PartitionKey, epoch: LeaderEpoch) -> Result<Arc<Replica>, ApiError> {
        let spu = self.spu;
        let replica = match self.replicas.lookup(key) {
            Lookup::Ready(replica) => replica,
            Lookup::Missing | Lookup::Failed(_) => {
                return Err(ApiError::new(
                    ErrorCode::PARTITION_NOT_READY,
                    format!("partition {key} is not served by SPU {spu}"),
                ));
            }
        };
        let (leader, current) = replica.leader_and_epoch();
        if leader != Some(spu) {
            return Err(ApiError::new(
                ErrorCode::NOT_LEADER,
                format!(
                    "SPU {spu} does not lead partition {key} (epoch {current}, leader {leader:?}); follow the SC's newer assignment"
                ),
            ));
        }
        fenced(key, current, epoch)?;
        Ok(replica)
    }
}

/// Refuses a follower whose idea of the leader epoch is not `current`.
fn fenced(key: &PartitionKey, current: LeaderEpoch, asked: LeaderEpoch) -> Result<(), ApiError> {
    if asked < current {
        return Err(ApiError::new(
            ErrorCode::FENCED_LEADER_EPOCH,
            format!("epoch {asked} of partition {key} is over; the current epoch is {current}"),
        ));
    }
    if asked > current {
        return Err(ApiError::new(
            ErrorCode::UNKNOWN_LEADER_EPOCH,
            format!(
                "this leader of partition {key} is at epoch {current} and does not know epoch {asked} yet"
            ),
        ));
    }
    Ok(())
}

/// Sends one partition's batches to one follower.
#[derive(Debug)]
struct Pusher {
    index: u32,
    /// This SPU, the leader.
    leader: SpuId,
    follower: SpuId,
    max_bytes: u64,
    items: mpsc::Sender<(SyncItem, Option<FileRange>)>,
}

impl Pusher {
    async fn run(
        self,
        replica: Arc<Replica>,
        partition: SyncPartition,
        shutdown: CancellationToken,
    ) {
        let stopped = self.push(&replica, partition, &shutdown).await;
        if let Some(error) = stopped {
            self.stop(error).await;
        }
    }

    /// Tells the follower why its partition is not served (any more).
    /// Waits for room, like every item: a refusal is never dropped.
    async fn stop(self, error: ApiError) {
        let item = SyncItem {
            index: self.index,
            kind: SyncKind::Stopped(error),
        };
        let _ = self.items.send((item, None)).await;
    }

    /// Pushes until the follower goes away (`None`) or the partition may
    /// no longer be served to it (the reason).
    async fn push(
        &self,
        replica: &Arc<Replica>,
        partition: SyncPartition,
        shutdown: &CancellationToken,
    ) -> Option<ApiError> {
        let key = partition.key;
        let epoch = partition.leader_epoch;
        let mut offset = partition.offset;
        let mut log_end = replica.watch_log_end();
        let mut changes = replica.watch_changes();
        // The high watermark the follower was last told.
        let mut told = Offset(-1);
        loop {
            changes.borrow_and_update();
            // Only what the replica has announced: its rules know the
            // leader wrote it, so the follower's report of it is taken.
            let announced = *log_end.borrow_and_update();
            let (leader, current) = replica.leader_and_epoch();
            if leader != Some(self.leader) || replica.is_removed() {
                return Some(ApiError::new(
                    ErrorCode::NOT_LEADER,
                    format!("partition {key} is no longer led here"),
                ));
            }
            if let Err(error) = fenced(&key, current, epoch) {
                return Some(error);
            }
            let high_watermark = replica.high_watermark();
            let log = Arc::clone(replica.log());
            let max_bytes = self.max_bytes;
            let read = tokio::task::spawn_blocking(move || {
                let log_start = log.log_start_offset();
                if offset < log_start {
                    return Ok((None, log_start));
                }
                Ok((log.read_below(offset, announced, max_bytes)?, log_start))
            })
            .await;
            let (slice, log_start_offset) = match read {
                Ok(Ok(read)) => read,
                Ok(Err(error)) => return Some(log_error_to_api(&key, &error)),
                Err(error) => return Some(task_failed(&key, "read", &error)),
            };
            let item = match slice {
                _ if offset < log_start_offset => {
                    offset = log_start_offset;
                    Some((SyncKind::StartOver { log_start_offset }, None))
                }
                Some(slice) => {
                    let kind = SyncKind::Records {
                        first_offset: slice.first_offset,
                        next_offset: slice.next_offset,
                        log_start_offset,
                        high_watermark,
                    };
                    offset = slice.next_offset;
                    let range = FileRange {
                        file: slice.file,
                        position: slice.position,
                        len: slice.len,
                    };
                    Some((kind, Some(range)))
                }
                None if high_watermark != told => Some((
                    SyncKind::HighWatermark {
                        log_start_offset,
                        high_watermark,
                    },
                    None,
                )),
                None => None,
            };
            if let Some((kind, range)) = item {
                if matches!(
                    kind,
                    SyncKind::Records { .. } | SyncKind::HighWatermark { .. }
                ) {
                    told = high_watermark;
                }
                let item = SyncItem {
                    index: self.index,
                    kind,
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    sent = self.items.send((item, range)) => {
                        if sent.is_err() {
                            return None;
                        }
                    }
                }
                continue;
            }
            debug!(partition = %key, follower = %self.follower, %offset, "follower caught up; waiting for appends");
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = self.items.closed() => return None,
                _ = replica.removed() => {}
                changed = log_end.changed() => if changed.is_err() { return None },
                changed = changes.changed() => if changed.is_err() { return None },
            }
        }
    }
}

/// Sends one item, with its batches when it carries some.
async fn send_item(
    sender: &mut StreamSender,
    item: &SyncItem,
    range: Option<FileRange>,
) -> Result<(), StreamClosed> {
    match range {
        Some(range) => sender.send_with_file(item, range).await,
        None => sender.send(item).await,
    }
}

/// Answers a refused request: a reply, or the end of a stream.
async fn refuse(api_key: u16, responder: Responder, error: ApiError) {
    match ApiKey::from_u16(api_key) {
        Some(key) if key.is_streaming() => responder.into_stream().end(Err(error)).await,
        _ => responder.reply(&Err::<(), _>(error)).await,
    }
}
