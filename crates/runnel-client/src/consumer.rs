//! Consuming: one task per partition streams batches from the leader
//! (pushed by the SPU as they are committed; nothing polls), checks and
//! decodes them, and hands their records to the [`Consumer`] in order.
//!
//! A stream broken by a leader move, a closed connection or a retriable
//! error resumes from the next offset on the leader the metadata names
//! once it changes (or after a backoff); it ends with an error once the
//! topic is gone from the metadata. A batch that fails its checks (CRC,
//! framing, or offsets other than those expected: see `fetched`) is an
//! error naming its partition and offset, none of its records are
//! delivered, and the partition's stream stops.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use runnel_api::{ListOffsetsResponse, OffsetQuery, StreamFetchRequest};
use runnel_metadata::{MetadataView, PartitionKey};
use runnel_transport::Backoff;
use runnel_types::{Offset, PartitionId, TopicName};
use runnel_wire::{RecordHeader, SharedBatch};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::client::check_partition;
use crate::fetched::check_item;
use crate::{ClientError, RunnelClient};

/// Decoded fetch items queued per partition ahead of the reader.
const QUEUED_ITEMS_PER_PARTITION: usize = 2;

/// Where each partition's consumption starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// The first record still held.
    Beginning,
    /// The next record produced.
    #[default]
    End,
    /// This absolute offset; it must lie in the partition.
    Offset(i64),
    /// This many records before the end (or the beginning, if fewer).
    FromEnd(u64),
    /// The first record at or after this time (ms since the Unix epoch).
    Timestamp(i64),
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Partitions to read; `None` reads them all.
    pub partitions: Option<Vec<PartitionId>>,
    pub start: StartFrom,
    /// End once the records that existed at the start (those below each
    /// partition's high watermark then) are delivered.
    pub stop_at_end: bool,
    /// Largest batch bytes in one pushed item. Default 1 MiB.
    pub max_bytes: u32,
    /// Items the SPU may push ahead of this consumer, per partition.
    /// Default 4.
    pub window: u32,
    /// How long starting may wait for each partition's leader to answer
    /// where to start (and, with `stop_at_end`, where to end) before
    /// [`RunnelClient::consumer`] fails naming the partition and its
    /// leader. Default 30 s.
    pub start_timeout: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            partitions: None,
            start: StartFrom::End,
            stop_at_end: false,
            max_bytes: 1 << 20,
            window: 4,
            start_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub partition: PartitionId,
    pub offset: Offset,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    /// Empty for a record with a null value.
    pub value: Bytes,
    pub headers: Vec<RecordHeader>,
}

type Delivery = Result<Vec<ConsumerRecord>, ClientError>;

/// The records of one topic, in order within each partition. Dropping it
/// stops its streams.
#[derive(Debug)]
pub struct Consumer {
    deliveries: mpsc::Receiver<Delivery>,
    buffered: VecDeque<ConsumerRecord>,
    /// Aborted when dropped.
    _tasks: JoinSet<()>,
}

impl Consumer {
    /// Starts a stream per partition and returns once each has found its
    /// start offset, so a record produced after this returns is delivered
    /// even when starting at the end. Fails with the first partition's
    /// error, among them [`ClientError::NoReachableLeader`] for a
    /// partition whose leader did not answer within
    /// [`ConsumerConfig::start_timeout`].
    pub(crate) async fn new(
        client: RunnelClient,
        topic: &TopicName,
        config: ConsumerConfig,
    ) -> Result<Consumer, ClientError> {
        let count = client.partition_count(topic)?;
        let partitions = match &config.partitions {
            None => (0..count).map(PartitionId).collect(),
            Some(chosen) => {
                let mut chosen = chosen.clone();
                chosen.sort_unstable();
                chosen.dedup();
                for partition in &chosen {
                    check_partition(topic, *partition, count)?;
                }
                chosen
            }
        };
        let start_deadline = Instant::now() + config.start_timeout;
        let (sender, deliveries) =
            mpsc::channel(QUEUED_ITEMS_PER_PARTITION * partitions.len().max(1));
        let mut tasks = JoinSet::new();
        let mut starts = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let (started, start) = oneshot::channel();
            starts.push(start);
            let stream = PartitionStream {
                client: client.clone(),
                key: PartitionKey {
                    topic: topic.clone(),
                    partition,
                },
                max_bytes: config.max_bytes.max(1),
                window: config.window.max(1),
                sender: sender.clone(),
            };
            tasks.spawn(stream.run(
                Start {
                    from: config.start,
                    stop_at_end: config.stop_at_end,
                    deadline: start_deadline,
                    timeout: config.start_timeout,
                },
                started,
            ));
        }
        // Every start is bounded by the deadline; dropping the tasks on
        // an error stops the others.
        for start in starts {
            start.await.unwrap_or(Err(ClientError::Closed))?;
        }
        Ok(Consumer {
            deliveries,
            buffered: VecDeque::new(),
            _tasks: tasks,
        })
    }

    /// The next record; `None` once every partition has ended (only with
    /// [`ConsumerConfig::stop_at_end`]). After an error of one partition
    /// the others go on.
    pub async fn next(&mut self) -> Option<Result<ConsumerRecord, ClientError>> {
        loop {
            if let Some(record) = self.buffered.pop_front() {
                return Some(Ok(record));
            }
            match self.deliveries.recv().await? {
                Ok(records) => self.buffered.extend(records),
                Err(error) => return Some(Err(error)),
            }
        }
    }

    /// The next records as they arrived together: at least one, all of
    /// one partition, in offset order. The same sequence as [`next`]
    /// gives, without the work per record: for applications that handle
    /// records in batches.
    ///
    /// [`next`]: Consumer::next
    pub async fn next_batch(&mut self) -> Option<Result<Vec<ConsumerRecord>, ClientError>> {
        if !self.buffered.is_empty() {
            return Some(Ok(self.buffered.drain(..).collect()));
        }
        loop {
            match self.deliveries.recv().await? {
                Ok(records) if records.is_empty() => continue,
                delivery => return Some(delivery),
            }
        }
    }
}

/// Where and how a partition's stream starts.
#[derive(Debug, Clone, Copy)]
struct Start {
    from: StartFrom,
    stop_at_end: bool,
    /// Finding the start offset gives up then.
    deadline: Instant,
    /// The start timeout the deadline came from, for the error.
    timeout: Duration,
}

/// Why one stream of a partition stopped.
enum Interruption {
    /// Done: the end was reached, the consumer is gone, or an error was
    /// delivered that ends the partition.
    Finished,
    /// Broken; resume from the next offset.
    Broken(ClientError),
}

struct PartitionStream {
    client: RunnelClient,
    key: PartitionKey,
    max_bytes: u32,
    window: u32,
    sender: mpsc::Sender<Delivery>,
}

impl PartitionStream {
    async fn run(self, start: Start, started: oneshot::Sender<Result<(), ClientError>>) {
        let (next, high_watermark) = match self.resolve_start(start).await {
            Ok(found) => found,
            Err(error) => {
                let _ = started.send(Err(error));
                return;
            }
        };
        let _ = started.send(Ok(()));
        let end = start.stop_at_end.then_some(high_watermark);
        if let Err(error) = self.consume(next, end).await {
            let _ = self.sender.send(Err(error)).await;
        }
    }

    /// Follows the partition from `next` (to `end`, if given), resuming
    /// broken streams while the error may pass.
    async fn consume(&self, mut next: Offset, end: Option<Offset>) -> Result<(), ClientError> {
        let mut backoff = Backoff::reconnect();
        let mut metadata = self.client.subscribe_metadata();
        loop {
            if end.is_some_and(|end| next >= end) {
                return Ok(());
            }
            metadata.mark_unchanged();
            let error = match self.stream(&mut next, end, &mut backoff).await {
                Interruption::Finished => return Ok(()),
                Interruption::Broken(error) => error,
            };
            let error = self.check_retriable(error)?;
            self.wait_before_retry(&error, &mut backoff, &mut metadata, None)
                .await;
        }
    }

    /// Returns `error` unless it may pass on a later attempt; a topic
    /// gone from the metadata is [`ClientError::TopicDeleted`].
    fn check_retriable(&self, error: ClientError) -> Result<ClientError, ClientError> {
        if !self.client.topic_exists(&self.key.topic) {
            return Err(ClientError::TopicDeleted(self.key.topic.clone()));
        }
        if !error.is_retriable() {
            return Err(error);
        }
        Ok(error)
    }

    /// After `error`, waits for a metadata change (it may name a new
    /// leader) or the backoff, whichever comes first, and at most until
    /// `deadline`.
    async fn wait_before_retry(
        &self,
        error: &(dyn fmt::Display + Sync),
        backoff: &mut Backoff,
        metadata: &mut watch::Receiver<MetadataView>,
        deadline: Option<Instant>,
    ) {
        if backoff.at_max() {
            warn!(partition = %self.key, %error, "partition stream interrupted; retrying");
        } else {
            debug!(partition = %self.key, %error, "partition stream interrupted; retrying");
        }
        let mut until = Instant::now() + backoff.next_delay();
        if let Some(deadline) = deadline {
            until = until.min(deadline);
        }
        let _ = tokio::time::timeout_at(until, metadata.changed()).await;
    }

    /// The first offset to read and the high watermark at the start,
    /// retrying while the partition has no reachable leader, until the
    /// start deadline.
    async fn resolve_start(&self, start: Start) -> Result<(Offset, Offset), ClientError> {
        let query = match start.from {
            StartFrom::Beginning | StartFrom::Offset(_) => OffsetQuery::Start,
            StartFrom::End | StartFrom::FromEnd(_) => OffsetQuery::End,
            StartFrom::Timestamp(timestamp) => OffsetQuery::Timestamp(timestamp),
        };
        let mut listed = self.list_offset_until(query, start).await?;
        // A leader elected a moment ago may not know yet how far records
        // are committed: an offset past its high watermark is asked again
        // until the start deadline before it counts as out of range.
        if let StartFrom::Offset(requested) = start.from {
            let mut backoff = Backoff::reconnect();
            loop {
                let retry_at = Instant::now() + backoff.next_delay();
                if requested <= listed.high_watermark.0 || retry_at >= start.deadline {
                    break;
                }
                tokio::time::sleep_until(retry_at).await;
                match self.list_offset_until(query, start).await {
                    Ok(again) => listed = again,
                    // Out of time: the answer in hand decides.
                    Err(_) => break,
                }
            }
        }
        let log_start = listed.log_start_offset;
        let high_watermark = listed.high_watermark;
        let first = match start.from {
            StartFrom::Offset(requested) => {
                if requested < log_start.0 || requested > high_watermark.0 {
                    return Err(ClientError::OffsetOutOfRange {
                        partition: self.key.clone(),
                        requested: Offset(requested),
                        log_start,
                        high_watermark,
                    });
                }
                Offset(requested)
            }
            StartFrom::FromEnd(count) => {
                let back = i64::try_from(count).unwrap_or(i64::MAX);
                Offset(high_watermark.0.saturating_sub(back).max(log_start.0))
            }
            StartFrom::Beginning | StartFrom::End | StartFrom::Timestamp(_) => listed.offset,
        };
        Ok((first, high_watermark))
    }

    /// Asks the leader for `query`, retrying errors that may pass until
    /// the start deadline; then fails naming the partition's leader and
    /// what is wrong with it.
    async fn list_offset_until(
        &self,
        query: OffsetQuery,
        start: Start,
    ) -> Result<ListOffsetsResponse, ClientError> {
        let mut backoff = Backoff::reconnect();
        let mut metadata = self.client.subscribe_metadata();
        let mut last_error = format!("no answer within {:?}", start.timeout);
        loop {
            metadata.mark_unchanged();
            let attempt = self.client.list_offset_of(&self.key, query);
            match tokio::time::timeout_at(start.deadline, attempt).await {
                Ok(Ok(listed)) => return Ok(listed),
                Ok(Err(error)) => last_error = self.check_retriable(error)?.to_string(),
                Err(_) => {}
            }
            if Instant::now() >= start.deadline {
                let (leader, problem) = self.client.leader_problem(&self.key, &last_error);
                return Err(ClientError::NoReachableLeader {
                    partition: self.key.clone(),
                    leader,
                    problem,
                });
            }
            self.wait_before_retry(
                &last_error,
                &mut backoff,
                &mut metadata,
                Some(start.deadline),
            )
            .await;
        }
    }

    /// Follows one fetch stream from `next`, delivering records and
    /// advancing `next`, until it ends.
    async fn stream(
        &self,
        next: &mut Offset,
        end: Option<Offset>,
        backoff: &mut Backoff,
    ) -> Interruption {
        let leader = match self.client.leader_connection(&self.key).await {
            Ok(found) => found,
            Err(error) => return Interruption::Broken(error),
        };
        let request = StreamFetchRequest {
            topic: self.key.topic.clone(),
            partition: self.key.partition,
            offset: *next,
            max_bytes: self.max_bytes,
        };
        let mut stream = match leader.connection.stream(&request, self.window).await {
            Ok(stream) => stream,
            Err(error) => {
                return Interruption::Broken(ClientError::from_spu(&self.key, &leader.addr, error));
            }
        };
        loop {
            let item = tokio::select! {
                _ = self.sender.closed() => return Interruption::Finished,
                item = stream.next_with_tail() => item,
            };
            let (item, tail) = match item {
                Some(Ok(item)) => item,
                Some(Err(error)) => {
                    return Interruption::Broken(ClientError::from_spu(
                        &self.key,
                        &leader.addr,
                        error,
                    ));
                }
                None => {
                    return Interruption::Broken(ClientError::SpuUnavailable {
                        partition: self.key.clone(),
                        addr: leader.addr,
                        reason: "the stream ended".into(),
                    });
                }
            };
            backoff.reset();
            let checked = check_item(&item, &tail, *next);
            let records = self.records_of(checked.batches, next, end);
            if !records.is_empty() && self.sender.send(Ok(records)).await.is_err() {
                return Interruption::Finished;
            }
            if let Some(fault) = checked.fault {
                let error = ClientError::CorruptBatch {
                    partition: self.key.clone(),
                    offset: fault.offset,
                    leader: leader.spu,
                    reason: fault.reason,
                };
                let _ = self.sender.send(Err(error)).await;
                return Interruption::Finished;
            }
            if end.is_some_and(|end| *next >= end) {
                return Interruption::Finished;
            }
        }
    }

    /// The records of checked `batches` at or after `next` (and before
    /// `end`), advancing `next` past each batch.
    fn records_of(
        &self,
        batches: Vec<SharedBatch>,
        next: &mut Offset,
        end: Option<Offset>,
    ) -> Vec<ConsumerRecord> {
        let mut records = Vec::new();
        for mut batch in batches {
            let base_offset = batch.header.base_offset();
            for record in std::mem::take(&mut batch.records) {
                // Checked: the deltas count from zero within the batch.
                let offset = base_offset.plus(i64::from(record.offset_delta));
                if offset < *next {
                    continue;
                }
                if let Some(end) = end
                    && offset >= end
                {
                    *next = end;
                    return records;
                }
                records.push(ConsumerRecord {
                    partition: self.key.partition,
                    offset,
                    timestamp: batch.timestamp_of(&record),
                    key: record.key,
                    value: record.value.unwrap_or_default(),
                    headers: record.headers,
                });
                *next = offset.plus(1);
            }
            *next = (*next).max(batch.header.next_offset());
        }
        records
    }
}
