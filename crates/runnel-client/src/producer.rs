//! Producing: records are placed on partitions, gathered per partition
//! into batches (see the accumulator), and sent by one task per
//! partition to the partition's leader.
//!
//! Each partition has at most one batch in flight, so records stay in
//! order. A batch is retried when a failure proves the leader did not
//! store it: no leader or no connection yet (nothing was sent), or an
//! error *reply* that may pass (`NOT_LEADER`, `PARTITION_NOT_READY`, …);
//! each retry waits for the metadata to change or for a backoff, then
//! tries the leader the metadata names then.
//!
//! A request that was sent and then got no answer (a timeout, a closed
//! connection) may or may not have been stored. What happens next depends
//! on idempotence:
//!
//! - Idempotent (the default): the producer has an id and epoch from the
//!   SC and numbers each partition's records; a batch is numbered and
//!   encoded once, when its first send seals it, and keeps those bytes.
//!   The unanswered batch is retried like any other, byte for byte, and
//!   the leader (the same one or the next, after a failover: followers
//!   track producers too) answers a batch it already holds with its
//!   original offsets instead of storing it again. A gap in a producer's
//!   sequence is refused (`OUT_OF_ORDER_SEQUENCE`), as is an old epoch
//!   (`PRODUCER_FENCED`): that batch fails with those queued behind it,
//!   which would land out of order. After any failed batch the partition
//!   moves to the next epoch of the producer id, where sequences restart
//!   at 0, since the failed batch's numbers can be neither reused nor
//!   skipped.
//! - Not idempotent: a retry could store it twice, and sending the next
//!   batch could put it before a later resend: so that batch and every
//!   batch queued behind it on the partition fail, and the records sent
//!   after that go on as usual.
//!
//! Either way a batch whose delivery timeout runs out while it may be
//! stored fails as of unknown outcome, with the batches queued behind it.
//!
//! Memory is bounded: records held until their outcome is known take at
//! most [`ProducerConfig::max_buffered_bytes`] between them, and `send`
//! waits for room beyond that.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use runnel_api::{Acks, ApiError, ErrorCode, ProduceRequest, ProducerIdentity};
use runnel_metadata::PartitionKey;
use runnel_transport::{Backoff, CancellationToken, TransportError};
use runnel_types::{ByteSize, Offset, PartitionId, SpuId, TopicName};
use runnel_wire::batch::BATCH_HEADER_LEN;
use runnel_wire::{BatchEncoder, Compression, RecordHeader, WireError};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tracing::debug;

use crate::accumulator::{Accumulator, Next, ReadyBatch, RecordParts, Sequencer, record_size};
use crate::client::check_partition;
use crate::{ClientError, Partitioner, ProduceError, RunnelClient};

/// Largest record batch an SPU accepts, header included: the default
/// `max_batch_bytes` of its log. No batch the producer builds is larger,
/// and a record that cannot fit in one is refused at `send`.
pub const MAX_BATCH_BYTES: usize = 8 << 20;
/// Smallest [`ProducerConfig::batch_size`]: below it the batch header
/// (61 bytes) outweighs the records.
const MIN_BATCH_BYTES: usize = 1 << 10;
/// Longest [`ProducerConfig::linger`]: records wait in memory meanwhile.
const MAX_LINGER: Duration = Duration::from_secs(60);
/// Longest wait between two attempts at one batch, unless the first wait
/// is longer; the backoff doubles up to this.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// How a producer batches and retries.
///
/// # Delivery guarantees
///
/// Records of one partition are stored in the order they were sent, and
/// each record's [`DeliveryFuture`] says whether it was stored:
///
/// - `Ok`: stored once, at the offset given.
/// - [`ProduceError::OutcomeUnknown`]: its request reached the leader's
///   connection and no answer came, and no retry was acknowledged before
///   the delivery timeout ran out. It may or may not be stored. An
///   idempotent producer retries an unanswered request (the leader stores
///   it once); one that is not idempotent never resends it by itself,
///   since that could store it twice, and fails it at once.
/// - [`ProduceError::NotSentAfterUnknownOutcome`],
///   [`ProduceError::NotSentAfterSequenceError`]: not stored. It was
///   queued behind a batch whose outcome is unknown, or that the leader
///   refused as out of sequence, and failed with it, so that resending
///   that batch cannot put it after this one. Records sent after that
///   failure are delivered as usual.
/// - Any other error: not stored. Retries are automatic, up to
///   [`ProducerConfig::max_retries`] and the delivery timeout, while
///   each failure proves the batch was not stored (no leader, no
///   connection, a retriable error reply such as `NOT_LEADER`), or,
///   with idempotence, got no answer.
///
/// To have every record stored at least once, resend the records of the
/// failures in their order; that may store an unknown one twice.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Largest batch (uncompressed, header included) before it is sent
    /// without waiting for the linger time; a larger record goes alone.
    /// 1 KiB to [`MAX_BATCH_BYTES`]. Default 16 KiB, as Kafka's
    /// `batch.size`.
    pub batch_size: usize,
    /// How long a batch waits for more records; at most 1 minute.
    /// Default 5 ms: a few more records per batch at a small cost in
    /// latency.
    pub linger: Duration,
    /// Codec of the batches; `None` uses the topic's.
    pub compression: Option<Compression>,
    /// Attempts after the first before a batch fails. Default unlimited:
    /// the delivery timeout bounds retrying.
    pub max_retries: u32,
    /// First wait before retrying a batch (cut short by a metadata
    /// change); doubled after each attempt up to 1 s (or this, if
    /// longer). Default 100 ms.
    pub retry_backoff: Duration,
    /// How long a record may take from send to acknowledgement, waiting
    /// in its batch and retries included; more than zero. A batch whose
    /// request is in flight when it runs out (or, with idempotence, one
    /// that went unanswered before) fails with
    /// [`ProduceError::OutcomeUnknown`]. Default 2 minutes, as Kafka's
    /// `delivery.timeout.ms`: longer than the transport's request timeout
    /// (30 s by default), so that an idempotent producer can still retry
    /// a request that went unanswered, on the partition's next leader
    /// after a failover.
    pub delivery_timeout: Duration,
    pub partitioner: Partitioner,
    /// Most bytes of records the producer holds, from `send` until each
    /// record's outcome is known: records lingering in open batches,
    /// batches queued or in flight. Counted uncompressed. `send` waits
    /// for room while they are used up. At least `batch_size`; a record
    /// larger than this is refused. Default 32 MiB.
    pub max_buffered_bytes: usize,
    /// When the leader answers a batch. Default [`Acks::All`]: every
    /// in-sync replica has it.
    pub acks: Acks,
    /// Whether the leader stores each batch once however often it is
    /// sent. The producer gets an id from the SC when it is created
    /// (creating it fails while the SC cannot give one), numbers each
    /// partition's records, and retries requests that went unanswered;
    /// see the module docs. Default true. `false` needs no SC call and
    /// fails unanswered batches instead of retrying them.
    pub idempotent: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            batch_size: 16 << 10,
            linger: Duration::from_millis(5),
            compression: None,
            max_retries: u32::MAX,
            retry_backoff: Duration::from_millis(100),
            delivery_timeout: Duration::from_secs(120),
            partitioner: Partitioner::KeyHash,
            max_buffered_bytes: 32 << 20,
            acks: Acks::All,
            idempotent: true,
        }
    }
}

impl ProducerConfig {
    /// Checks every setting is in its range; the error names the first
    /// that is not and its allowed range.
    pub fn validate(&self) -> Result<(), ClientError> {
        let invalid = |setting, value: String, allowed: String| {
            Err(ClientError::InvalidConfig {
                setting,
                value,
                allowed,
            })
        };
        if !(MIN_BATCH_BYTES..=MAX_BATCH_BYTES).contains(&self.batch_size) {
            return invalid(
                "ProducerConfig::batch_size",
                format!("{} bytes", self.batch_size),
                format!(
                    "between {} and {} (the largest batch an SPU accepts)",
                    ByteSize(MIN_BATCH_BYTES as u64),
                    ByteSize(MAX_BATCH_BYTES as u64)
                ),
            );
        }
        if self.max_buffered_bytes < self.batch_size {
            return invalid(
                "ProducerConfig::max_buffered_bytes",
                format!("{} bytes", self.max_buffered_bytes),
                format!("at least the batch size, {} bytes", self.batch_size),
            );
        }
        if self.linger > MAX_LINGER {
            return invalid(
                "ProducerConfig::linger",
                format!("{:?}", self.linger),
                format!("at most {MAX_LINGER:?}"),
            );
        }
        if self.delivery_timeout.is_zero() {
            return invalid(
                "ProducerConfig::delivery_timeout",
                format!("{:?}", self.delivery_timeout),
                "more than zero".into(),
            );
        }
        Ok(())
    }
}

/// A record with everything a record can carry.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<RecordHeader>,
    /// Milliseconds since the Unix epoch; `None` stamps the send time.
    pub timestamp: Option<i64>,
    /// `None` lets the partitioner choose.
    pub partition: Option<PartitionId>,
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: PartitionId,
    pub offset: Offset,
}

/// Resolves once the record is acknowledged or has failed.
#[derive(Debug)]
pub struct DeliveryFuture {
    receiver: oneshot::Receiver<Result<RecordMetadata, ProduceError>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ProduceError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(context)
            .map(|outcome| outcome.unwrap_or(Err(ProduceError::Closed)))
    }
}

/// Sends records to one topic. Clones share the batches; once the last
/// clone is dropped the records it holds are still sent (await
/// [`Producer::flush`] first to know how that went).
///
/// Records of a partition are stored in send order, each at most once
/// unless the caller resends it; see [`ProducerConfig`] for what each
/// delivery outcome means and when the producer retries by itself.
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<ProducerInner>,
}

#[derive(Debug)]
struct ProducerInner {
    topic: TopicName,
    partitioner: Partitioner,
    /// Records placed round robin so far.
    round_robin: AtomicU64,
    partitions: Vec<Arc<PartitionState>>,
    memory: Arc<Semaphore>,
    max_record_bytes: usize,
    /// Cancelled when the producer is dropped: the senders drain and stop.
    closing: CancellationToken,
}

impl Drop for ProducerInner {
    fn drop(&mut self) {
        self.closing.cancel();
    }
}

/// What a record's sender keeps until the record's outcome is known.
#[derive(Debug)]
struct Pending {
    delivery: oneshot::Sender<Result<RecordMetadata, ProduceError>>,
    /// The record's share of the buffer, given back with it.
    _memory: OwnedSemaphorePermit,
}

#[derive(Debug)]
struct PartitionState {
    key: PartitionKey,
    accumulator: Mutex<Accumulator<Pending>>,
    /// Wakes the partition's sender: a batch opened or closed, a flush.
    wake: Notify,
    /// Records whose outcome is known (acknowledged or failed), in order.
    completed: watch::Sender<u64>,
}

/// What every partition's sender shares.
#[derive(Debug)]
struct SenderContext {
    client: RunnelClient,
    linger: Duration,
    max_retries: u32,
    retry_backoff: Duration,
    delivery_timeout: Duration,
    acks: Acks,
    /// The identity the SC gave an idempotent producer; each partition
    /// numbers its batches under it, and moves on to later epochs of it
    /// by itself.
    identity: Option<ProducerIdentity>,
}

impl Producer {
    pub(crate) async fn new(
        client: RunnelClient,
        topic: &TopicName,
        config: ProducerConfig,
    ) -> Result<Producer, ClientError> {
        config.validate()?;
        let (count, topic_compression) = {
            let view = client.metadata_ref();
            let found = view
                .topics
                .get(topic)
                .ok_or_else(|| client.topic_not_found(topic))?;
            (found.spec.partitions, found.spec.config.compression)
        };
        let compression = config.compression.unwrap_or(topic_compression);
        // A producer that cannot be idempotent fails here, not record by
        // record.
        let identity = if config.idempotent {
            let identity = client.admin().init_producer_id().await.map_err(|error| {
                ClientError::NoProducerId {
                    retriable: error.is_retriable(),
                    reason: error.to_string(),
                }
            })?;
            Some(identity)
        } else {
            None
        };
        // Permits are capped by tokio; each acquisition counts in u32,
        // and no record is larger than a batch.
        let max_buffered_bytes = config.max_buffered_bytes.min(Semaphore::MAX_PERMITS);
        let closing = CancellationToken::new();
        let context = Arc::new(SenderContext {
            client,
            linger: config.linger,
            max_retries: config.max_retries,
            retry_backoff: config.retry_backoff,
            delivery_timeout: config.delivery_timeout,
            acks: config.acks,
            identity,
        });
        let partitions = (0..count)
            .map(|partition| {
                let state = Arc::new(PartitionState {
                    key: PartitionKey {
                        topic: topic.clone(),
                        partition: PartitionId(partition),
                    },
                    accumulator: Mutex::new(Accumulator::new(config.batch_size, compression)),
                    wake: Notify::new(),
                    completed: watch::Sender::new(0),
                });
                tokio::spawn(run_partition(
                    Arc::clone(&context),
                    Arc::clone(&state),
                    closing.clone(),
                ));
                state
            })
            .collect();
        Ok(Producer {
            inner: Arc::new(ProducerInner {
                topic: topic.clone(),
                partitioner: config.partitioner,
                round_robin: AtomicU64::new(0),
                partitions,
                memory: Arc::new(Semaphore::new(max_buffered_bytes)),
                max_record_bytes: max_buffered_bytes,
                closing,
            }),
        })
    }

    pub fn topic(&self) -> &TopicName {
        &self.inner.topic
    }

    /// Sends a record to the partition the partitioner picks.
    pub async fn send(
        &self,
        key: Option<Bytes>,
        value: Bytes,
    ) -> Result<DeliveryFuture, ClientError> {
        self.send_record(ProducerRecord {
            key,
            value,
            ..ProducerRecord::default()
        })
        .await
    }

    /// Sends a record to `partition`.
    pub async fn send_to(
        &self,
        partition: PartitionId,
        key: Option<Bytes>,
        value: Bytes,
    ) -> Result<DeliveryFuture, ClientError> {
        self.send_record(ProducerRecord {
            key,
            value,
            partition: Some(partition),
            ..ProducerRecord::default()
        })
        .await
    }

    /// Queues a record for sending; waits only while the buffer is full.
    /// The returned future resolves with where the record was stored.
    pub async fn send_record(&self, record: ProducerRecord) -> Result<DeliveryFuture, ClientError> {
        let inner = &self.inner;
        let size = record_size(record.key.as_deref(), &record.value, &record.headers);
        if size > MAX_BATCH_BYTES - BATCH_HEADER_LEN {
            return Err(ClientError::RecordTooLarge { size });
        }
        if size > inner.max_record_bytes {
            return Err(ClientError::RecordExceedsBuffer {
                size,
                limit: inner.max_record_bytes,
            });
        }
        let count = inner.partitions.len() as u32;
        let partition = match record.partition {
            Some(partition) => {
                check_partition(&inner.topic, partition, count)?;
                partition
            }
            None => {
                let key = record.key.as_deref();
                let sequence = if inner.partitioner.is_round_robin(key) {
                    inner.round_robin.fetch_add(1, Ordering::Relaxed)
                } else {
                    0
                };
                inner.partitioner.partition(key, count, sequence)
            }
        };
        let permits = u32::try_from(size).expect("a record fits in a batch, far below 4 GiB");
        let memory = Arc::clone(&inner.memory)
            .acquire_many_owned(permits)
            .await
            .map_err(|_| ClientError::Closed)?;
        let (delivery, receiver) = oneshot::channel();
        let parts = RecordParts {
            timestamp: record.timestamp.unwrap_or_else(now_ms),
            key: record.key,
            value: record.value,
            headers: record.headers,
        };
        let state = &inner.partitions[partition.0 as usize];
        let pending = Pending {
            delivery,
            _memory: memory,
        };
        let wake = state.accumulator.lock().expect("accumulator lock").append(
            Instant::now(),
            parts,
            pending,
        );
        if wake {
            state.wake.notify_one();
        }
        Ok(DeliveryFuture { receiver })
    }

    /// Waits until every record sent before this call is acknowledged or
    /// has failed (each delivery future tells which), sending lingering
    /// batches at once.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let mut waits = Vec::with_capacity(self.inner.partitions.len());
        for state in &self.inner.partitions {
            let target = state
                .accumulator
                .lock()
                .expect("accumulator lock")
                .request_flush();
            state.wake.notify_one();
            waits.push((state.completed.subscribe(), target));
        }
        for (mut completed, target) in waits {
            completed
                .wait_for(|done| *done >= target)
                .await
                .map_err(|_| ClientError::Closed)?;
        }
        Ok(())
    }
}

/// The sender of one partition: takes batches as they are ready and
/// delivers them one at a time. After a batch whose outcome is unknown,
/// or that was refused as out of sequence, it fails the batches queued
/// behind it. Stops once the producer is dropped and its records are all
/// delivered or failed.
async fn run_partition(
    context: Arc<SenderContext>,
    state: Arc<PartitionState>,
    closing: CancellationToken,
) {
    // Only this task numbers the partition's batches.
    let mut sequencer = context.identity.map(Sequencer::new);
    loop {
        let draining = closing.is_cancelled();
        let next = state.accumulator.lock().expect("accumulator lock").next(
            Instant::now(),
            context.linger,
            draining,
        );
        match next {
            Next::Send(batch) => {
                if let Some(error) = context.deliver(&state, batch, sequencer.as_mut()).await {
                    fail_queued(&state, &error);
                }
            }
            Next::WaitUntil(deadline) => {
                tokio::select! {
                    _ = state.wake.notified() => {}
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                    _ = closing.cancelled(), if !draining => {}
                }
            }
            Next::Idle if draining => return,
            Next::Idle => {
                tokio::select! {
                    _ = state.wake.notified() => {}
                    _ = closing.cancelled() => {}
                }
            }
        }
    }
}

/// A batch whose request was sent and then got no answer.
#[derive(Debug)]
struct UnknownOutcome {
    spu: SpuId,
    /// What happened after the request was sent.
    cause: String,
}

/// Fails every record queued on the partition (in closed or open
/// batches) with `error`, behind a batch whose outcome is unknown or
/// that was refused as out of sequence: sending them could store them
/// before a resend of that batch.
fn fail_queued(state: &PartitionState, error: &ProduceError) {
    let queued = state
        .accumulator
        .lock()
        .expect("accumulator lock")
        .take_all();
    if queued.is_empty() {
        return;
    }
    let count = queued.len() as u64;
    debug!(
        partition = %state.key,
        records = count,
        %error,
        "failing the records queued behind a failed batch"
    );
    for pending in queued {
        let _ = pending.delivery.send(Err(error.clone()));
    }
    state.completed.send_modify(|completed| *completed += count);
}

impl SenderContext {
    /// Seals one batch, sends it and reports the outcome to each of its
    /// records. Returns the error for the records queued behind it if
    /// they must fail too.
    async fn deliver(
        &self,
        state: &PartitionState,
        batch: ReadyBatch<Pending>,
        sequencer: Option<&mut Sequencer>,
    ) -> Option<ProduceError> {
        let ReadyBatch {
            encoder,
            tickets,
            opened_at,
        } = batch;
        let count = tickets.len() as u64;
        let key = &state.key;
        let outcome = match sequencer {
            Some(sequencer) => match self.seal(key, sequencer, encoder).await {
                Ok(bytes) => {
                    let outcome = self.send_batch(key, bytes, opened_at).await;
                    if outcome.is_err() {
                        sequencer.restart();
                    }
                    outcome
                }
                Err(error) => Err(Failure::Known(error)),
            },
            None => match encoder.finish() {
                Ok(bytes) => self.send_batch(key, Bytes::from(bytes), opened_at).await,
                Err(error) => Err(Failure::Known(encode_error(key, &error))),
            },
        };
        let (outcome, queued_error) = match outcome {
            Ok(base_offset) => (Ok(base_offset), None),
            Err(Failure::Known(error)) => {
                let queued = match &error {
                    ProduceError::Rejected { error, .. } if is_sequence_error(error) => {
                        Some(ProduceError::NotSentAfterSequenceError {
                            partition: key.clone(),
                            error: error.clone(),
                        })
                    }
                    _ => None,
                };
                (Err(error), queued)
            }
            Err(Failure::Unknown(unknown)) => {
                let error = ProduceError::OutcomeUnknown {
                    partition: key.clone(),
                    spu: unknown.spu,
                    cause: unknown.cause.clone(),
                };
                let queued = ProduceError::NotSentAfterUnknownOutcome {
                    partition: key.clone(),
                    spu: unknown.spu,
                    cause: unknown.cause,
                };
                (Err(error), Some(queued))
            }
        };
        let partition = key.partition;
        for (index, pending) in tickets.into_iter().enumerate() {
            let result = match &outcome {
                Ok(base_offset) => Ok(RecordMetadata {
                    partition,
                    offset: base_offset.plus(index as i64),
                }),
                Err(error) => Err(error.clone()),
            };
            // A caller that dropped its delivery future does not want it.
            let _ = pending.delivery.send(result);
        }
        state.completed.send_modify(|completed| *completed += count);
        queued_error
    }

    /// Numbers and encodes a batch of an idempotent producer, first
    /// getting a new producer id if the partition used up the epochs of
    /// its last one.
    async fn seal(
        &self,
        key: &PartitionKey,
        sequencer: &mut Sequencer,
        encoder: BatchEncoder,
    ) -> Result<Bytes, ProduceError> {
        if sequencer.needs_identity() {
            let identity = self.client.admin().init_producer_id().await.map_err(|error| {
                ProduceError::Failed {
                    partition: key.clone(),
                    reason: format!(
                        "the producer used up the epochs of its producer id on this partition, and the SC gave no new id ({error}); the producer asks again for the next batch"
                    ),
                }
            })?;
            sequencer.start_identity(identity);
        }
        sequencer
            .seal(encoder)
            .map_err(|error| encode_error(key, &error))
    }

    /// Sends the batch until it is acknowledged, a failure cannot be
    /// retried, or the retries or the delivery timeout run out. A sent
    /// request that gets no answer ends it as of unknown outcome, unless
    /// the producer is idempotent: then it is retried, and the batch stays
    /// of unknown outcome if no later attempt is acknowledged. Returns the
    /// offset of its first record.
    async fn send_batch(
        &self,
        key: &PartitionKey,
        bytes: Bytes,
        opened_at: Instant,
    ) -> Result<Offset, Failure> {
        let request = ProduceRequest {
            topic: key.topic.clone(),
            partition: key.partition,
            acks: self.acks,
            timeout_ms: u32::try_from(self.delivery_timeout.as_millis()).unwrap_or(u32::MAX),
        };
        let deadline = tokio::time::Instant::from_std(opened_at + self.delivery_timeout);
        let mut metadata = self.client.subscribe_metadata();
        let mut backoff = Backoff::new(
            self.retry_backoff.min(MAX_RETRY_BACKOFF),
            MAX_RETRY_BACKOFF.max(self.retry_backoff),
        );
        let mut attempts = 0u32;
        let mut last_error = String::from("the batch waited in the queue until then");
        // The last attempt that got no answer, once one did (only an
        // idempotent producer goes on after it): from then on the batch
        // may be stored, whatever later attempts say.
        let mut unanswered: Option<UnknownOutcome> = None;
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(self.give_up(
                    unanswered,
                    ProduceError::DeliveryTimeout {
                        partition: key.clone(),
                        timeout: self.delivery_timeout,
                        attempts,
                        last_error,
                    },
                ));
            }
            attempts += 1;
            // Changes from here on cut the wait before the next attempt.
            metadata.mark_unchanged();
            // Nothing is sent before the connection is there: running out
            // of time here leaves the batch unstored by this attempt.
            let leader =
                tokio::time::timeout_at(deadline, self.client.leader_connection(key)).await;
            // `None`: the attempt went unanswered and is retried.
            let error = match leader {
                Err(_) => {
                    return Err(self.give_up(
                        unanswered,
                        ProduceError::DeliveryTimeout {
                            partition: key.clone(),
                            timeout: self.delivery_timeout,
                            attempts,
                            last_error: "no connection to the leader before the deadline".into(),
                        },
                    ));
                }
                Ok(Err(error)) => Some(error),
                Ok(Ok(leader)) => {
                    let call = leader.connection.call_with_tail(&request, bytes.clone());
                    match tokio::time::timeout_at(deadline, call).await {
                        Ok(Ok(response)) => return Ok(response.base_offset),
                        Ok(Err(TransportError::Api(error))) => Some(ClientError::Api(error)),
                        Ok(Err(error @ TransportError::FrameTooLarge { .. })) => {
                            return Err(self.give_up(
                                unanswered,
                                ProduceError::Failed {
                                    partition: key.clone(),
                                    reason: error.to_string(),
                                },
                            ));
                        }
                        Ok(Err(TransportError::Connect { source, .. })) => {
                            Some(ClientError::SpuUnavailable {
                                partition: key.clone(),
                                addr: leader.addr,
                                reason: source.to_string(),
                            })
                        }
                        Ok(Err(error)) => {
                            let cause = match &error {
                                TransportError::Timeout(timeout) => {
                                    format!(
                                        "no reply came within the request timeout of {timeout:?}"
                                    )
                                }
                                TransportError::Closed | TransportError::Io(_) => {
                                    format!("the connection broke ({error})")
                                }
                                _ => format!("its reply could not be read ({error})"),
                            };
                            // A connection that timed out may look open.
                            self.client.discard_connection(&leader.addr).await;
                            let unknown = UnknownOutcome {
                                spu: leader.spu,
                                cause,
                            };
                            if self.identity.is_none() {
                                return Err(Failure::Unknown(unknown));
                            }
                            unanswered = Some(unknown);
                            None
                        }
                        Err(_) => {
                            // Dropping the call cancelled it on the leader,
                            // which may have stored the batch already.
                            return Err(Failure::Unknown(UnknownOutcome {
                                spu: leader.spu,
                                cause: format!(
                                    "the delivery timeout of {:?} ran out",
                                    self.delivery_timeout
                                ),
                            }));
                        }
                    }
                }
            };
            let retry_reason = match error {
                None => unanswered
                    .as_ref()
                    .map(|unknown| format!("the request was sent, then {}", unknown.cause))
                    .expect("an unanswered attempt is kept"),
                // Here this attempt stored nothing: nothing was sent, or
                // the leader answered with an error.
                Some(error) => {
                    if !self.client.topic_exists(&key.topic) {
                        return Err(
                            self.give_up(unanswered, ProduceError::TopicDeleted(key.topic.clone()))
                        );
                    }
                    if !error.is_retriable() {
                        let error = match error {
                            ClientError::Api(error) => ProduceError::Rejected {
                                partition: key.clone(),
                                error,
                            },
                            other => ProduceError::Failed {
                                partition: key.clone(),
                                reason: other.to_string(),
                            },
                        };
                        return Err(self.give_up(unanswered, error));
                    }
                    error.to_string()
                }
            };
            if attempts > self.max_retries {
                return Err(self.give_up(
                    unanswered,
                    ProduceError::RetriesExhausted {
                        partition: key.clone(),
                        attempts,
                        last_error: retry_reason,
                    },
                ));
            }
            debug!(partition = %key, error = %retry_reason, attempts, "retrying a batch");
            last_error = retry_reason;
            let wait = backoff.next_delay();
            // A metadata change may name a new leader: retry at once.
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + wait),
                metadata.changed(),
            )
            .await;
        }
    }

    /// The failure of a batch that retrying could not deliver: `error`,
    /// unless an earlier attempt went unanswered, which may have stored
    /// the batch: then its outcome is unknown.
    fn give_up(&self, unanswered: Option<UnknownOutcome>, error: ProduceError) -> Failure {
        match unanswered {
            None => Failure::Known(error),
            Some(unknown) => {
                let ended = match &error {
                    ProduceError::DeliveryTimeout { attempts, .. } => format!(
                        "no attempt was acknowledged before the delivery timeout of {:?} ran out ({attempts} attempts)",
                        self.delivery_timeout
                    ),
                    other => format!("a retry failed: {other}"),
                };
                Failure::Unknown(UnknownOutcome {
                    spu: unknown.spu,
                    cause: format!("{}; {ended}", unknown.cause),
                })
            }
        }
    }
}

/// Whether a refusal says the batch does not fit the producer's
/// sequence: the batches queued behind it would not either.
fn is_sequence_error(error: &ApiError) -> bool {
    error.code == ErrorCode::OUT_OF_ORDER_SEQUENCE || error.code == ErrorCode::PRODUCER_FENCED
}

fn encode_error(key: &PartitionKey, error: &WireError) -> ProduceError {
    ProduceError::Encode {
        partition: key.clone(),
        reason: error.to_string(),
    }
}

/// Why a batch was not acknowledged.
#[derive(Debug)]
enum Failure {
    /// The batch was not stored.
    Known(ProduceError),
    /// Its request was sent and got no answer: it may be stored.
    Unknown(UnknownOutcome),
}

/// Milliseconds since the Unix epoch, the record timestamp unit.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
