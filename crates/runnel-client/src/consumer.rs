//! Consuming: one task per partition streams batches from the leader
//! (pushed by the SPU as they are committed; nothing polls), checks and
//! decodes them, and hands their records to the [`Consumer`] in order.
//!
//! A stream broken by a leader move, a closed connection or a retriable
//! error resumes from the next offset on the leader the metadata names
//! once it changes (or after a backoff). A batch that fails its checks is
//! an error naming its partition and offset; none of its records are
//! delivered.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use runnel_api::{OffsetQuery, StreamFetchRequest};
use runnel_metadata::PartitionKey;
use runnel_types::{Offset, PartitionId, TopicName};
use runnel_wire::{DecodeLimits, RecordBatch, RecordHeader};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::client::check_partition;
use crate::{ClientError, RunnelClient};

/// First wait before resuming a broken stream; doubled after each failure.
const RESUME_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Longest wait between two attempts to resume a stream.
const RESUME_BACKOFF_MAX: Duration = Duration::from_secs(2);
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
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            partitions: None,
            start: StartFrom::End,
            stop_at_end: false,
            max_bytes: 1 << 20,
            window: 4,
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
    /// start offset (or failed: its error is the first thing it
    /// delivers), so a record produced after this returns is delivered
    /// even when starting at the end.
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
            tasks.spawn(stream.run(config.start, config.stop_at_end, started));
        }
        for start in starts {
            // An error instead of a start is queued for `next`.
            let _ = start.await;
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
}

/// Why one stream of a partition stopped.
enum Interruption {
    /// Done: the end was reached or the consumer is gone.
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
    async fn run(self, start: StartFrom, stop_at_end: bool, started: oneshot::Sender<()>) {
        if let Err(error) = self.consume(start, stop_at_end, started).await {
            let _ = self.sender.send(Err(error)).await;
        }
    }

    async fn consume(
        &self,
        start: StartFrom,
        stop_at_end: bool,
        started: oneshot::Sender<()>,
    ) -> Result<(), ClientError> {
        let (mut next, high_watermark) = self.resolve_start(start).await?;
        let _ = started.send(());
        let end = stop_at_end.then_some(high_watermark);
        let mut backoff = RESUME_BACKOFF_INITIAL;
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
            self.wait_before_retry(error, &mut backoff, &mut metadata)
                .await?;
        }
    }

    /// Waits for a metadata change or the backoff, if `error` may pass;
    /// otherwise returns it.
    async fn wait_before_retry(
        &self,
        error: ClientError,
        backoff: &mut Duration,
        metadata: &mut tokio::sync::watch::Receiver<runnel_metadata::MetadataView>,
    ) -> Result<(), ClientError> {
        if !self.client.topic_exists(&self.key.topic) {
            return Err(ClientError::TopicNotFound(self.key.topic.clone()));
        }
        if !error.is_retriable_on_data_path() {
            return Err(error);
        }
        if *backoff >= RESUME_BACKOFF_MAX {
            warn!(partition = %self.key, %error, "partition stream interrupted; retrying");
        } else {
            debug!(partition = %self.key, %error, "partition stream interrupted; retrying");
        }
        let _ = tokio::time::timeout(*backoff, metadata.changed()).await;
        *backoff = (*backoff * 2).min(RESUME_BACKOFF_MAX);
        Ok(())
    }

    /// The first offset to read and the high watermark at the start,
    /// retrying while the partition has no reachable leader.
    async fn resolve_start(&self, start: StartFrom) -> Result<(Offset, Offset), ClientError> {
        let query = match start {
            StartFrom::Beginning | StartFrom::Offset(_) => OffsetQuery::Start,
            StartFrom::End | StartFrom::FromEnd(_) => OffsetQuery::End,
            StartFrom::Timestamp(timestamp) => OffsetQuery::Timestamp(timestamp),
        };
        let mut backoff = RESUME_BACKOFF_INITIAL;
        let mut metadata = self.client.subscribe_metadata();
        let listed = loop {
            metadata.mark_unchanged();
            match self.client.list_offset_of(&self.key, query).await {
                Ok(listed) => break listed,
                Err(error) => {
                    self.wait_before_retry(error, &mut backoff, &mut metadata)
                        .await?
                }
            }
        };
        let log_start = listed.log_start_offset;
        let high_watermark = listed.high_watermark;
        let first = match start {
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

    /// Follows one fetch stream from `next`, delivering records and
    /// advancing `next`, until it ends.
    async fn stream(
        &self,
        next: &mut Offset,
        end: Option<Offset>,
        backoff: &mut Duration,
    ) -> Interruption {
        let (addr, connection) = match self.client.leader_connection(&self.key).await {
            Ok(found) => found,
            Err(error) => return Interruption::Broken(error),
        };
        let request = StreamFetchRequest {
            topic: self.key.topic.clone(),
            partition: self.key.partition,
            offset: *next,
            max_bytes: self.max_bytes,
        };
        let mut stream = match connection.stream(&request, self.window).await {
            Ok(stream) => stream,
            Err(error) => {
                return Interruption::Broken(ClientError::from_spu(&self.key, &addr, error));
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
                    return Interruption::Broken(ClientError::from_spu(&self.key, &addr, error));
                }
                None => {
                    return Interruption::Broken(ClientError::SpuUnavailable {
                        partition: self.key.clone(),
                        addr,
                        reason: "the stream ended".into(),
                    });
                }
            };
            *backoff = RESUME_BACKOFF_INITIAL;
            let (records, outcome) = self.decode(&tail, next, end);
            if outcome.is_ok() && end.is_none_or(|end| *next < end) {
                // Past everything in the item, even offsets no record
                // holds any more.
                *next = (*next).max(item.next_offset);
            }
            if !records.is_empty() && self.sender.send(Ok(records)).await.is_err() {
                return Interruption::Finished;
            }
            if let Err(error) = outcome {
                let _ = self.sender.send(Err(error)).await;
                return Interruption::Finished;
            }
            if end.is_some_and(|end| *next >= end) {
                return Interruption::Finished;
            }
        }
    }

    /// Decodes the batches of one item: the records at or after `next`
    /// (and before `end`), advancing `next`. A batch that fails its checks
    /// stops decoding; the records of the batches before it are returned
    /// with the error.
    fn decode(
        &self,
        tail: &[u8],
        next: &mut Offset,
        end: Option<Offset>,
    ) -> (Vec<ConsumerRecord>, Result<(), ClientError>) {
        let mut records = Vec::new();
        let mut position = 0;
        while position < tail.len() {
            let rest = &tail[position..];
            let (batch, used) = match RecordBatch::decode(rest, DecodeLimits::default()) {
                Ok(decoded) => decoded,
                Err(error) => {
                    let offset = rest
                        .first_chunk::<8>()
                        .map_or(*next, |bytes| Offset(i64::from_be_bytes(*bytes)));
                    return (
                        records,
                        Err(ClientError::CorruptBatch {
                            partition: self.key.clone(),
                            offset,
                            reason: error.to_string(),
                        }),
                    );
                }
            };
            position += used;
            let mut batch = batch;
            let base_offset = batch.header.base_offset;
            for record in std::mem::take(&mut batch.records) {
                let offset = Offset(base_offset + i64::from(record.offset_delta));
                if offset < *next {
                    continue;
                }
                if let Some(end) = end
                    && offset >= end
                {
                    *next = end;
                    return (records, Ok(()));
                }
                records.push(ConsumerRecord {
                    partition: self.key.partition,
                    offset,
                    timestamp: batch.timestamp_of(&record),
                    key: record.key.map(Bytes::from),
                    value: record.value.map(Bytes::from).unwrap_or_default(),
                    headers: record.headers,
                });
                *next = offset.plus(1);
            }
            *next = (*next).max(batch.header.next_offset());
        }
        (records, Ok(()))
    }
}
