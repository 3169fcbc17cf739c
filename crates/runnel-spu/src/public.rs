//! The client api of an SPU: produce, streaming fetch and list offsets on
//! the partitions it leads.
//!
//! Fetch streams are pushed: a stream that has sent everything committed
//! waits on its replica's high watermark and wakes the moment an append
//! moves it. Nothing on this path sleeps or polls.
//!
//! With TLS, every request is authorized first (produce: write, fetch:
//! read, list offsets: describe on the topic), and a fetch stream again
//! before each item and whenever the security state changes or the
//! certificate expires, so a revocation or a narrower policy ends open
//! streams, idle ones included.
//!
//! Every produced batch is validated whole (every check a decoder makes,
//! within the decompression limit) before it is appended: the log stores
//! only what consumers will be able to read.
//!
//! Every call into a log runs on a blocking thread: the log's lock is held
//! across an fsync when a segment rolls, and an async thread waiting for
//! it would stall every connection it serves.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runnel_api::{
    Acks, ApiError, ApiKey, ApiVersionsRequest, ErrorCode, FetchItem, ListOffsetsRequest,
    ListOffsetsResponse, Listener, OffsetQuery, ProduceRequest, ProduceResponse, Reply,
    StreamFetchRequest,
};
use runnel_auth::Action;
use runnel_log::scan::Fault;
use runnel_metadata::PartitionKey;
use runnel_transport::{FileRange, Handler, IncomingRequest, Responder, StreamSender};
use runnel_types::{FlushPolicy, LeaderEpoch, Offset, SpuId};
use runnel_wire::{DecodeLimits, RecordBatch, WireError};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::auth::{Authorizer, Grant, Permission};
use crate::error::{log_error_to_api, malformed, task_failed};
use crate::now_ms;
use crate::producers::SequenceError;
use crate::replica::{Commitment, ProduceRefusal, Produced, Replica};
use crate::replicas::{Lookup, Replicas};

/// Room left in a fetch item's frame for its header and message, besides
/// the batches.
pub(crate) const FRAME_OVERHEAD_BYTES: usize = 1024;
/// Most batch bytes in one fetch item, whatever the client asks for: one
/// item is one write to the socket and one credit.
const MAX_FETCH_ITEM_BYTES: u64 = 8 << 20;

const SERVED: &[Listener] = &[Listener::Any, Listener::SpuPublic];
const NAME: &str = "the SPU's public listener";

/// The sizes the public api holds requests and answers to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The transport's frame limit: fetch items fit in it.
    pub max_frame_bytes: usize,
    /// The largest records section a produced batch may decompress to.
    pub max_decompressed_batch_bytes: usize,
}

#[derive(Debug)]
pub(crate) struct PublicApi {
    spu: SpuId,
    replicas: Arc<Replicas>,
    authorizer: Arc<Authorizer>,
    /// Largest tail of a fetch item this SPU sends.
    max_fetch_bytes: u64,
    /// How produced batches are decoded before they are appended.
    produce_limits: DecodeLimits,
    shutdown: CancellationToken,
}

impl Handler for PublicApi {
    async fn handle(&self, request: IncomingRequest, responder: Responder) {
        let header = &request.header;
        let api = match runnel_api::check_served(header.api_key, header.api_version, SERVED, NAME) {
            Ok(api) => api,
            Err(error) => return reply_error(responder, error).await,
        };
        match api {
            ApiKey::ApiVersions => {
                let reply = request
                    .decode::<ApiVersionsRequest>()
                    .map(|_| runnel_api::api_versions(SERVED))
                    .map_err(|error| malformed("ApiVersions", error));
                responder.reply(&reply).await
            }
            ApiKey::Produce => responder.reply(&self.produce(request).await).await,
            ApiKey::ListOffsets => responder.reply(&self.list_offsets(&request).await).await,
            ApiKey::StreamFetch => self.stream_fetch(&request, responder).await,
            other => {
                let error = ApiError::new(
                    ErrorCode::UNSUPPORTED_API,
                    format!("{other:?} is not implemented by this SPU; upgrade it"),
                );
                reply_error(responder, error).await
            }
        }
    }
}

impl PublicApi {
    pub fn new(
        spu: SpuId,
        replicas: Arc<Replicas>,
        authorizer: Arc<Authorizer>,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> PublicApi {
        let frame_room = limits.max_frame_bytes.saturating_sub(FRAME_OVERHEAD_BYTES) as u64;
        PublicApi {
            spu,
            replicas,
            authorizer,
            max_fetch_bytes: MAX_FETCH_ITEM_BYTES.min(frame_room),
            produce_limits: DecodeLimits {
                max_decompressed_bytes: limits.max_decompressed_batch_bytes,
            },
            shutdown,
        }
    }

    async fn produce(&self, request: IncomingRequest) -> Reply<ProduceResponse> {
        let (produce, tail) = request
            .decode_with_tail::<ProduceRequest>()
            .map_err(|error| malformed("Produce", error))?;
        self.authorizer.authorize_topic(
            request.identity.as_deref(),
            Action::Write,
            &produce.topic,
        )?;
        // The tail is then the only handle on the frame's buffer, so the
        // log can stamp offsets into it without a copy.
        drop(request);
        let key = PartitionKey {
            topic: produce.topic,
            partition: produce.partition,
        };
        let (replica, epoch) = self.leader_replica(&key)?;
        if tail.is_empty() {
            return Err(ApiError::new(
                ErrorCode::INVALID_RECORDS,
                format!(
                    "the produce request for {key} carries no record batches; send at least one RecordBatch v2 after the message"
                ),
            ));
        }
        let acks = produce.acks;
        if acks == Acks::All
            && let Err((in_sync, needed)) = replica.accepts_acks_all()
        {
            return Err(not_enough_replicas(&key, in_sync, needed));
        }
        let appending = Arc::clone(&replica);
        let appending_key = key.clone();
        let limits = self.produce_limits;
        let appended = tokio::task::spawn_blocking(move || {
            check_batches(&appending_key, &tail, limits)?;
            // The log stamps offsets and the leader epoch into the bytes:
            // in the received buffer itself when nothing else holds it.
            let mut batches = tail
                .try_into_mut()
                .unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]));
            let log = appending.log();
            // Records appended after damage would be lost with it when the
            // replica is repaired; reads below it may go on.
            if let Some((path, fault)) = log.corruption() {
                return Err(corrupt_log_error(&appending_key, log.dir(), &path, &fault));
            }
            let now = now_ms();
            let produced = appending
                .append_produced(&mut batches, epoch, now)
                .map_err(|refusal| produce_refusal(&appending_key, refusal))?;
            let (first_offset, end) = match produced {
                Produced::Appended(info) => (info.first_offset, info.log_end),
                Produced::Duplicate {
                    first_offset,
                    last_offset,
                } => (first_offset, Offset(last_offset.0 + 1)),
            };
            // Under `always`, the leader stores a batch once it is durable;
            // the fsync is shared with concurrent appends (group commit),
            // and followers copy the batch meanwhile.
            if acks != Acks::None && appending.config().flush == FlushPolicy::Always {
                appending.on_written();
                log.sync_to(end)
                    .map_err(|error| log_error_to_api(&appending_key, &error))?;
            }
            // Before the acknowledgement: a producer that reads after its
            // ack finds its records as committed as the rules allow.
            appending.on_local_append(now);
            Ok((first_offset, end, log.log_end_offset()))
        })
        .await;
        let (first_offset, end, log_end_offset) = match appended {
            Ok(result) => result?,
            Err(error) => return Err(task_failed(&key, "append", &error)),
        };
        let response = ProduceResponse {
            base_offset: first_offset,
            log_end_offset,
        };
        match acks {
            Acks::Leader => {}
            Acks::None => self.sync_later(&replica, end),
            Acks::All => {
                let timeout = Duration::from_millis(u64::from(produce.timeout_ms));
                self.committed(&replica, &key, epoch, end, timeout).await?;
            }
        }
        Ok(response)
    }

    /// For `acks=none` on a topic whose records are committed only once
    /// durable: syncs in the background, so the records become visible
    /// without waiting for the next append.
    fn sync_later(&self, replica: &Arc<Replica>, end: Offset) {
        if replica.config().flush != FlushPolicy::Always {
            return;
        }
        let syncing = Arc::clone(replica);
        tokio::task::spawn_blocking(move || match syncing.log().sync_to(end) {
            Ok(()) => syncing.on_local_append(now_ms()),
            Err(error) => {
                warn!(partition = %syncing.key(), %error, "syncing records produced with acks=none failed")
            }
        });
    }

    /// Waits until every in-sync replica has the records before `end`,
    /// written at `epoch`: the high watermark passed them with the ISR at
    /// its minimum. Any other outcome is an error that says whether the
    /// records are stored.
    async fn committed(
        &self,
        replica: &Replica,
        key: &PartitionKey,
        epoch: LeaderEpoch,
        end: Offset,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = replica.watch_changes();
        loop {
            changes.borrow_and_update();
            match replica.commitment(epoch, end) {
                Commitment::Committed => return Ok(()),
                Commitment::Waiting => {}
                Commitment::NotEnoughReplicas { in_sync, needed } => {
                    return Err(ApiError::new(
                        ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                        format!(
                            "the records for {key} were written by the leader, but the ISR shrank to {in_sync} replica(s), below the {needed} that acks=all needs, before they were committed; they may or may not survive a failure: retry (an idempotent producer does not duplicate them)"
                        ),
                    ));
                }
                Commitment::LeadershipLost { leader, epoch: now } => {
                    return Err(ApiError::new(
                        ErrorCode::NOT_LEADER,
                        format!(
                            "SPU {} stopped leading {key} (epoch {now}, leader {leader:?}) before the records written at epoch {epoch} were committed; they may or may not survive: retry at the new leader (an idempotent producer does not duplicate them)",
                            self.spu
                        ),
                    ));
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(self.shutting_down(key, end)),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(ApiError::new(
                        ErrorCode::TIMEOUT,
                        format!(
                            "the records for {key} were written by the leader but not replicated to every in-sync replica within {timeout:?}; retry (an idempotent producer does not duplicate them)"
                        ),
                    ));
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(self.removed_error(key));
                    }
                }
            }
        }
    }

    async fn list_offsets(&self, request: &IncomingRequest) -> Reply<ListOffsetsResponse> {
        let list = request
            .decode::<ListOffsetsRequest>()
            .map_err(|error| malformed("ListOffsets", error))?;
        self.authorizer.authorize_topic(
            request.identity.as_deref(),
            Action::Describe,
            &list.topic,
        )?;
        let key = PartitionKey {
            topic: list.topic,
            partition: list.partition,
        };
        let (replica, _) = self.leader_replica(&key)?;
        let high_watermark = replica.high_watermark();
        let log = Arc::clone(replica.log());
        let query = list.query;
        let looked_up = tokio::task::spawn_blocking(move || {
            let by_time = match query {
                OffsetQuery::Timestamp(timestamp) => log.offset_for_timestamp(timestamp)?,
                OffsetQuery::Start | OffsetQuery::End => None,
            };
            Ok((log.log_start_offset(), by_time))
        })
        .await;
        let (log_start_offset, by_time) = match looked_up {
            Ok(Ok(looked_up)) => looked_up,
            Ok(Err(error)) => return Err(log_error_to_api(&key, &error)),
            Err(error) => return Err(task_failed(&key, "offset lookup", &error)),
        };
        let offset = match query {
            OffsetQuery::Start => log_start_offset,
            OffsetQuery::End => high_watermark,
            // Records past the high watermark are not visible yet; no
            // record that late means the end.
            OffsetQuery::Timestamp(_) => {
                by_time.map_or(high_watermark, |offset| offset.min(high_watermark))
            }
        };
        Ok(ListOffsetsResponse {
            offset,
            log_start_offset,
            high_watermark,
        })
    }

    async fn stream_fetch(&self, request: &IncomingRequest, responder: Responder) {
        let fetch = match request.decode::<StreamFetchRequest>() {
            Ok(fetch) => fetch,
            Err(error) => return reply_error(responder, malformed("StreamFetch", error)).await,
        };
        let key = PartitionKey {
            topic: fetch.topic,
            partition: fetch.partition,
        };
        let granted = self.authorizer.grant(
            request.identity.as_deref(),
            Permission::Topic(Action::Read, &key.topic),
        );
        let mut grant = match granted {
            Ok(grant) => grant,
            Err(error) => return reply_error(responder, error).await,
        };
        let replica = match self.leader_replica(&key) {
            Ok((replica, _)) => replica,
            Err(error) => return reply_error(responder, error).await,
        };
        let max_bytes = u64::from(fetch.max_bytes).min(self.max_fetch_bytes);
        let mut sender = responder.into_stream();
        if let Some(error) = self
            .push_records(
                &replica,
                &key,
                fetch.offset,
                max_bytes,
                &mut sender,
                &mut grant,
            )
            .await
        {
            sender.end(Err(error)).await;
        }
    }

    /// Sends every committed batch from `offset` on, then each new one as
    /// it is committed, for as long as `grant` holds. Returns the error
    /// that ends the stream, or `None` when the requester went away.
    async fn push_records(
        &self,
        replica: &Replica,
        key: &PartitionKey,
        mut offset: Offset,
        max_bytes: u64,
        sender: &mut StreamSender,
        grant: &mut Grant<'_>,
    ) -> Option<ApiError> {
        let mut committed = replica.watch_high_watermark();
        let mut changes = replica.watch_changes();
        // One wait for the refusal, kept across items.
        let revoked = grant.revoked();
        tokio::pin!(revoked);
        loop {
            if replica.is_removed() {
                return Some(self.removed_error(key));
            }
            // Consumers read from the leader: one that moved away sends
            // them to the new one.
            changes.borrow_and_update();
            if let Err(error) = self.leads(key, replica) {
                return Some(error);
            }
            // Marks this value seen before reading: an append after it
            // wakes the wait below, so no commit is missed.
            let high_watermark = *committed.borrow_and_update();
            let log = Arc::clone(replica.log());
            let read = tokio::task::spawn_blocking(move || {
                let slice = log.read_below(offset, high_watermark, max_bytes)?;
                Ok((slice, log.log_start_offset()))
            })
            .await;
            let (slice, log_start_offset) = match read {
                Ok(Ok(read)) => read,
                Ok(Err(error)) => return Some(log_error_to_api(key, &error)),
                Err(error) => return Some(task_failed(key, "read", &error)),
            };
            match slice {
                Some(slice) => {
                    let item = FetchItem {
                        first_offset: slice.first_offset,
                        next_offset: slice.next_offset,
                        log_start_offset,
                        high_watermark,
                    };
                    let range = FileRange {
                        file: slice.file,
                        position: slice.position,
                        len: slice.len,
                    };
                    tokio::select! {
                        biased;
                        _ = self.shutdown.cancelled() => return Some(self.shutting_down(key, offset)),
                        _ = replica.removed() => return Some(self.removed_error(key)),
                        // A consumer that grants no credit does not hold
                        // the stream open past a refusal.
                        refused = &mut revoked => return Some(refused),
                        sent = sender.send_with_file(&item, range) => {
                            if sent.is_err() {
                                return None;
                            }
                        }
                    }
                    offset = slice.next_offset;
                }
                None => {
                    tokio::select! {
                        biased;
                        _ = self.shutdown.cancelled() => return Some(self.shutting_down(key, offset)),
                        _ = replica.removed() => return Some(self.removed_error(key)),
                        refused = &mut revoked => return Some(refused),
                        _ = sender.cancelled() => return None,
                        changed = committed.changed() => {
                            if changed.is_err() {
                                return Some(self.removed_error(key));
                            }
                        }
                        _ = changes.changed() => {}
                    }
                }
            }
        }
    }

    /// The replica of `key` if this SPU leads it, with the epoch to stamp.
    fn leader_replica(&self, key: &PartitionKey) -> Result<(Arc<Replica>, LeaderEpoch), ApiError> {
        let spu = self.spu;
        let replica = match self.replicas.lookup(key) {
            Lookup::Ready(replica) => replica,
            Lookup::Missing => return Err(self.not_hosted(key)),
            Lookup::Failed(reason) => {
                return Err(ApiError::new(
                    ErrorCode::STORAGE,
                    format!(
                        "partition {key} cannot be served by SPU {spu}: its log failed to open ({reason}); the SPU tries again every few seconds: free space or fix the disk"
                    ),
                ));
            }
        };
        let epoch = self.leads(key, &replica)?;
        Ok((replica, epoch))
    }

    /// The epoch at which this SPU leads `replica`, or why it does not.
    fn leads(&self, key: &PartitionKey, replica: &Replica) -> Result<LeaderEpoch, ApiError> {
        let spu = self.spu;
        match replica.leader_and_epoch() {
            (Some(leader), epoch) if leader == spu => Ok(epoch),
            (Some(leader), epoch) => Err(ApiError::new(
                ErrorCode::NOT_LEADER,
                format!(
                    "SPU {spu} is not the leader of partition {key}; SPU {leader} leads it (epoch {epoch}): refresh metadata and retry there"
                ),
            )),
            (None, _) => Err(ApiError::new(
                ErrorCode::NOT_LEADER,
                format!("partition {key} has no leader right now; retry after refreshing metadata"),
            )),
        }
    }

    /// This SPU does not host `key`: not yet (its assignment is on the
    /// way), or not any more (it moved). Retriable: the client's metadata
    /// catches up and it retries where the partition is.
    fn not_hosted(&self, key: &PartitionKey) -> ApiError {
        ApiError::new(
            ErrorCode::PARTITION_NOT_READY,
            format!(
                "partition {key} is not hosted by SPU {}; the client retries once its metadata catches up",
                self.spu
            ),
        )
    }

    /// The replica a stream reads was removed: its topic was deleted.
    fn removed_error(&self, key: &PartitionKey) -> ApiError {
        ApiError::new(
            ErrorCode::PARTITION_NOT_FOUND,
            format!(
                "partition {key} was removed from SPU {}: its topic was deleted; refresh metadata",
                self.spu
            ),
        )
    }

    fn shutting_down(&self, key: &PartitionKey, offset: Offset) -> ApiError {
        ApiError::new(
            ErrorCode::SHUTTING_DOWN,
            format!(
                "SPU {} is shutting down; resume {key} from offset {offset} once the partition is served again",
                self.spu
            ),
        )
    }
}

/// The answer to a produce on a log that found damage in `segment`: new
/// records are refused until an operator has looked at it.
fn corrupt_log_error(
    key: &PartitionKey,
    log_dir: &Path,
    segment: &Path,
    fault: &Fault,
) -> ApiError {
    ApiError::new(
        ErrorCode::STORAGE,
        format!(
            "partition {key} takes no records: {} is corrupt at byte {} (offset {}: {}); the operator must run `runnel debug verify-log {}` and repair the replica",
            segment.display(),
            fault.position,
            fault.offset,
            fault.kind,
            log_dir.display(),
        ),
    )
}

/// Validates every batch of a produce request with all the checks a
/// consumer's decoder makes (CRC, codec, records filling the batch), each
/// within `limits`: a batch the log would store but no consumer could
/// read, or one that inflates past the limit, is refused. Validation
/// builds no records and holds no reference to the buffer, so the log can
/// then take it without a copy.
fn check_batches(
    key: &PartitionKey,
    batches: &Bytes,
    limits: DecodeLimits,
) -> Result<(), ApiError> {
    let mut at = 0;
    let mut index = 1;
    // The limit holds for the whole request: many small bombs in one frame
    // cost no more decompression than one.
    let mut left = limits.max_decompressed_bytes;
    // Each batch takes at least its header's bytes: the loop ends.
    while at < batches.len() {
        let within = DecodeLimits {
            max_decompressed_bytes: left,
        };
        let (used, decompressed) =
            RecordBatch::validate_counted(&batches[at..], within).map_err(|error| {
                let earlier = left < limits.max_decompressed_bytes;
                refused_batch(key, index, at, &error, earlier.then_some(limits))
            })?;
        left -= decompressed;
        at += used;
        index += 1;
    }
    Ok(())
}

/// The refusal of batch `index`; `shared` is the request's limit when
/// earlier batches had used part of it.
fn refused_batch(
    key: &PartitionKey,
    index: usize,
    position: usize,
    error: &WireError,
    shared: Option<DecodeLimits>,
) -> ApiError {
    let batch =
        format!("partition {key}: batch {index} of the produce request (at byte {position})");
    match (error, shared) {
        (WireError::DecompressedTooLarge { .. }, Some(limits)) => ApiError::new(
            ErrorCode::RECORDS_TOO_LARGE,
            format!(
                "{batch} was refused: with the batches before it, the request decompresses to more than {} bytes (the SPU's max_decompressed_batch_bytes, which bounds a whole request); send fewer batches per request; nothing was written",
                limits.max_decompressed_bytes
            ),
        ),
        (WireError::DecompressedTooLarge { .. }, None) => ApiError::new(
            ErrorCode::RECORDS_TOO_LARGE,
            format!(
                "{batch} was refused: its {error} (the SPU's max_decompressed_batch_bytes); split the records into smaller batches; nothing was written"
            ),
        ),
        _ => ApiError::new(
            ErrorCode::INVALID_RECORDS,
            format!(
                "{batch} is invalid: {error}; send whole, well-formed RecordBatch v2 batches; nothing was written"
            ),
        ),
    }
}

fn produce_refusal(key: &PartitionKey, refusal: ProduceRefusal) -> ApiError {
    match refusal {
        ProduceRefusal::Log(error) => log_error_to_api(key, &error),
        ProduceRefusal::Sequence(error @ SequenceError::OutOfOrder { .. }) => ApiError::new(
            ErrorCode::OUT_OF_ORDER_SEQUENCE,
            format!("partition {key}: {error}"),
        ),
        ProduceRefusal::Sequence(error @ SequenceError::Fenced { .. }) => ApiError::new(
            ErrorCode::PRODUCER_FENCED,
            format!("partition {key}: {error}"),
        ),
        refusal @ ProduceRefusal::NotLeader { .. } => ApiError::new(
            ErrorCode::NOT_LEADER,
            format!("partition {key}: {refusal}; refresh metadata and retry at the new leader"),
        ),
        ProduceRefusal::MixedRetry => ApiError::new(
            ErrorCode::INVALID_RECORDS,
            format!("partition {key}: {}", ProduceRefusal::MixedRetry),
        ),
    }
}

fn not_enough_replicas(key: &PartitionKey, in_sync: usize, needed: usize) -> ApiError {
    ApiError::new(
        ErrorCode::NOT_ENOUGH_REPLICAS,
        format!(
            "partition {key} has {in_sync} in-sync replica(s), fewer than the {needed} that acks=all needs; nothing was written: retry once replicas catch up, or produce with --acks leader"
        ),
    )
}

/// Answers any request, unary or streaming, with an error: both kinds
/// read a final frame holding a `Result`.
async fn reply_error(responder: Responder, error: ApiError) {
    responder.reply(&Err::<(), _>(error)).await
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use runnel_types::{PartitionId, TopicName};
    use runnel_wire::{BatchBuilder, Compression};

    use super::*;

    fn key() -> PartitionKey {
        PartitionKey {
            topic: TopicName::new("events").expect("valid name"),
            partition: PartitionId(0),
        }
    }

    fn batch(codec: Compression, value: &[u8]) -> Vec<u8> {
        let mut builder = BatchBuilder::new(codec);
        builder.push(0, None, Some(value.to_vec()), Vec::new());
        builder.build().encode().expect("encodable batch")
    }

    #[test]
    fn checked_batches_stay_in_the_received_buffer() {
        let mut received = batch(Compression::None, b"a");
        received.extend(batch(Compression::Lz4, b"b"));
        let frame = BytesMut::from(&received[..]).freeze();
        let tail = frame.slice(..);
        drop(frame);
        let limits = DecodeLimits {
            max_decompressed_bytes: 1024,
        };
        check_batches(&key(), &tail, limits).expect("valid batches");
        assert!(
            tail.try_into_mut().is_ok(),
            "nothing else holds the buffer: the log takes it without a copy"
        );
    }

    #[test]
    fn the_limit_bounds_the_whole_request() {
        let one = batch(Compression::Gzip, &[0; 3000]);
        let mut two = one.clone();
        two.extend(batch(Compression::Gzip, &[0; 3000]));
        let limits = DecodeLimits {
            max_decompressed_bytes: 4096,
        };
        check_batches(&key(), &Bytes::from(one), limits).expect("one batch fits");
        let refused =
            check_batches(&key(), &Bytes::from(two), limits).expect_err("two do not, together");
        assert_eq!(refused.code, ErrorCode::RECORDS_TOO_LARGE);
        assert!(
            refused.message.contains("batch 2")
                && refused.message.contains("more than 4096 bytes")
                && refused.message.contains("fewer batches per request"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn the_limit_is_the_decompressed_size() {
        let tail = Bytes::from(batch(Compression::Gzip, &[0; 4096]));
        let limits = |max_decompressed_bytes| DecodeLimits {
            max_decompressed_bytes,
        };
        check_batches(&key(), &tail, limits(8192)).expect("within the limit");
        let refused = check_batches(&key(), &tail, limits(4096)).expect_err("past the limit");
        assert_eq!(refused.code, ErrorCode::RECORDS_TOO_LARGE);
        assert!(
            refused.message.contains("limit of 4096 bytes"),
            "{}",
            refused.message
        );
    }
}
