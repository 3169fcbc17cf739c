//! Producing: records are placed on partitions, gathered per partition
//! into batches (see the accumulator), and sent by one task per
//! partition to the partition's leader.
//!
//! Each partition has at most one batch in flight, so records stay in
//! order even when a batch is retried. Retriable failures (no leader, a
//! leader that moved, a closed connection, a timeout, a partition not
//! ready yet) wait for the metadata to change or for a backoff, then try
//! the leader the metadata names then. Without an idempotent producer a
//! retry after a lost acknowledgement can store a batch twice.
//!
//! Memory is bounded: records waiting to be acknowledged hold
//! [`ProducerConfig::max_buffered_bytes`] between them, and `send` waits
//! for room beyond that.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use runnel_api::ProduceRequest;
use runnel_metadata::PartitionKey;
use runnel_transport::CancellationToken;
use runnel_types::{Offset, PartitionId, TopicName};
use runnel_wire::{Compression, RecordHeader};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tracing::debug;

use crate::accumulator::{Accumulator, Next, ReadyBatch, RecordParts, record_size};
use crate::client::check_partition;
use crate::{ClientError, Partitioner, ProduceError, RunnelClient};

/// Longest wait between two attempts at one batch; the backoff doubles up
/// to this.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// How a producer batches and retries.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Largest batch (uncompressed, header included) before it is sent
    /// without waiting for the linger time; a larger record goes alone.
    /// Default 16 KiB, as Kafka's `batch.size`.
    pub batch_size: usize,
    /// How long a batch waits for more records. Default 5 ms: a few more
    /// records per batch at a small cost in latency.
    pub linger: Duration,
    /// Codec of the batches; `None` uses the topic's.
    pub compression: Option<Compression>,
    /// Attempts after the first before a batch fails. Default unlimited:
    /// the delivery timeout bounds retrying.
    pub max_retries: u32,
    /// First wait before retrying a batch (cut short by a metadata
    /// change); doubled after each attempt up to 1 s. Default 100 ms.
    pub retry_backoff: Duration,
    /// How long a record may take from send to acknowledgement, retries
    /// included. Default 30 s.
    pub delivery_timeout: Duration,
    pub partitioner: Partitioner,
    /// Bytes of records sent but not yet acknowledged; `send` waits while
    /// they are used up. Also the largest record accepted. Default 32 MiB.
    pub max_buffered_bytes: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            batch_size: 16 << 10,
            linger: Duration::from_millis(5),
            compression: None,
            max_retries: u32::MAX,
            retry_backoff: Duration::from_millis(100),
            delivery_timeout: Duration::from_secs(30),
            partitioner: Partitioner::KeyHash,
            max_buffered_bytes: 32 << 20,
        }
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
}

impl Producer {
    pub(crate) fn new(
        client: RunnelClient,
        topic: &TopicName,
        config: ProducerConfig,
    ) -> Result<Producer, ClientError> {
        let (count, topic_compression) = {
            let view = client.metadata_ref();
            let found = view
                .topics
                .get(topic)
                .ok_or_else(|| ClientError::TopicNotFound(topic.clone()))?;
            (found.spec.partitions, found.spec.config.compression)
        };
        let compression = config.compression.unwrap_or(topic_compression);
        // Permits are counted in u32 per acquisition and capped by tokio.
        let max_buffered_bytes = config
            .max_buffered_bytes
            .clamp(1, (u32::MAX as usize).min(Semaphore::MAX_PERMITS));
        let closing = CancellationToken::new();
        let context = Arc::new(SenderContext {
            client,
            linger: config.linger,
            max_retries: config.max_retries,
            retry_backoff: config.retry_backoff,
            delivery_timeout: config.delivery_timeout,
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
        if size > inner.max_record_bytes {
            return Err(ClientError::RecordTooLarge {
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
        let memory = Arc::clone(&inner.memory)
            .acquire_many_owned(size as u32)
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
/// delivers them one at a time. Stops once the producer is dropped and
/// its records are all delivered or failed.
async fn run_partition(
    context: Arc<SenderContext>,
    state: Arc<PartitionState>,
    closing: CancellationToken,
) {
    loop {
        let draining = closing.is_cancelled();
        let next = state.accumulator.lock().expect("accumulator lock").next(
            Instant::now(),
            context.linger,
            draining,
        );
        match next {
            Next::Send(batch) => context.deliver(&state, batch).await,
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

impl SenderContext {
    /// Sends one batch and reports the outcome to each of its records.
    async fn deliver(&self, state: &PartitionState, batch: ReadyBatch<Pending>) {
        let ReadyBatch {
            builder,
            tickets,
            opened_at,
        } = batch;
        let count = tickets.len() as u64;
        let outcome = self.send_batch(&state.key, builder, opened_at).await;
        let partition = state.key.partition;
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
    }

    /// Sends the batch until it is acknowledged, a failure cannot be
    /// retried, or the retries or the delivery timeout run out. Returns
    /// the offset of its first record.
    async fn send_batch(
        &self,
        key: &PartitionKey,
        builder: runnel_wire::BatchBuilder,
        opened_at: Instant,
    ) -> Result<Offset, ProduceError> {
        let bytes =
            builder
                .build()
                .encode()
                .map(Bytes::from)
                .map_err(|error| ProduceError::Encode {
                    partition: key.clone(),
                    reason: error.to_string(),
                })?;
        let request = ProduceRequest {
            topic: key.topic.clone(),
            partition: key.partition,
        };
        let deadline = opened_at + self.delivery_timeout;
        let mut metadata = self.client.subscribe_metadata();
        let mut backoff = self.retry_backoff;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            // Changes from here on cut the wait before the next attempt.
            metadata.mark_unchanged();
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = self.client.call_leader(key, &request, bytes.clone());
            let error = match tokio::time::timeout(remaining, attempt).await {
                Ok(Ok(response)) => return Ok(response.base_offset),
                Ok(Err(error)) => error,
                Err(_) => {
                    return Err(ProduceError::DeliveryTimeout {
                        partition: key.clone(),
                        timeout: self.delivery_timeout,
                        attempts,
                        last_error: "the last attempt was not answered".into(),
                    });
                }
            };
            if !self.client.topic_exists(&key.topic) {
                return Err(ProduceError::TopicDeleted(key.topic.clone()));
            }
            if !error.is_retriable_on_data_path() {
                return Err(match error {
                    ClientError::Api(error) => ProduceError::Rejected {
                        partition: key.clone(),
                        error,
                    },
                    other => ProduceError::Failed {
                        partition: key.clone(),
                        reason: other.to_string(),
                    },
                });
            }
            if attempts > self.max_retries {
                return Err(ProduceError::RetriesExhausted {
                    partition: key.clone(),
                    attempts,
                    last_error: error.to_string(),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ProduceError::DeliveryTimeout {
                    partition: key.clone(),
                    timeout: self.delivery_timeout,
                    attempts,
                    last_error: error.to_string(),
                });
            }
            debug!(partition = %key, %error, attempts, "retrying a batch");
            let wait = backoff.min(deadline - now);
            // A metadata change may name a new leader: retry at once.
            let _ = tokio::time::timeout(wait, metadata.changed()).await;
            backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
        }
    }
}

/// Milliseconds since the Unix epoch, the record timestamp unit.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
