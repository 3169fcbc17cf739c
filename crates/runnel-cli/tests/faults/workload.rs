//! The clients of a scenario, recording everything into a [`History`]:
//!
//! - producers (idempotent, `acks=all`) writing unique values
//!   `p{producer}-{n}` to every partition in turn, at a steady pace;
//! - one read-committed consumer per partition, from the beginning,
//!   resuming after each error from the next offset;
//! - a recorder of each partition's leader, epoch and ISR as the clients'
//!   metadata shows them.
//!
//! Then, once the faults are healed, [`read_all`] reads every partition
//! from the beginning: the final log the checker compares against.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use runnel_api::Acks;
use runnel_client::{ConsumerConfig, ProducerConfig, RunnelClient, StartFrom};
use runnel_metadata::{MetadataView, PartitionKey};
use runnel_transport::CancellationToken;
use runnel_types::{LeaderEpoch, Offset, PartitionId, SpuId, TopicName};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::history::{Clock, History, Leadership, Observation, Operation, Outcome, record_value};

/// Producers writing at once.
const PRODUCERS: u32 = 2;
/// Between two records of one producer: about 400 records a second in
/// all, enough to fill segments and keep every partition busy through a
/// failover, little enough for two cores fsyncing on three SPUs.
const SEND_INTERVAL: Duration = Duration::from_millis(5);
/// Longer than the clients' request timeout, so that an idempotent
/// producer retries an unanswered request on the next leader.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);
/// Records of one producer awaiting their outcome; sending waits beyond.
const MAX_OUTSTANDING: usize = 4096;
/// Between two attempts of a consumer to resume.
const CONSUMER_BACKOFF: Duration = Duration::from_millis(200);
/// Producer numbers of probes, apart from the workload's.
const FIRST_PROBE_PRODUCER: u32 = 100;

/// Where the clients write what happened.
#[derive(Debug)]
struct Recorder {
    clock: Clock,
    history: Mutex<History>,
}

impl Recorder {
    fn invoke(&self, producer: u32, sequence: u64, partition: PartitionId) -> usize {
        let mut history = self.history.lock().expect("history lock");
        history.operations.push(Operation {
            producer,
            sequence,
            partition,
            invoked: self.clock.now(),
            completion: None,
        });
        history.operations.len() - 1
    }

    fn complete(&self, index: usize, outcome: Outcome) {
        let at = self.clock.now();
        self.history.lock().expect("history lock").operations[index].completion =
            Some((at, outcome));
    }

    fn snapshot(&self) -> History {
        self.history.lock().expect("history lock").clone()
    }
}

#[derive(Debug)]
pub struct Workload {
    client: RunnelClient,
    topic: TopicName,
    recorder: Arc<Recorder>,
    stop_producing: CancellationToken,
    stop_observing: CancellationToken,
    producers: Vec<JoinHandle<()>>,
    observers: Vec<JoinHandle<()>>,
    probes: u32,
}

impl Workload {
    pub async fn start(
        client: &RunnelClient,
        topic: &TopicName,
        partitions: u32,
        clock: Clock,
    ) -> Workload {
        let recorder = Arc::new(Recorder {
            clock,
            history: Mutex::new(History::default()),
        });
        let stop_producing = CancellationToken::new();
        let stop_observing = CancellationToken::new();
        let mut producers = Vec::new();
        for producer in 0..PRODUCERS {
            let config = producer_config(DELIVERY_TIMEOUT);
            let handle = client
                .producer(topic, config)
                .await
                .unwrap_or_else(|error| panic!("creating producer {producer}: {error}"));
            producers.push(tokio::spawn(produce(
                handle,
                producer,
                partitions,
                Arc::clone(&recorder),
                stop_producing.clone(),
            )));
        }
        let mut observers: Vec<JoinHandle<()>> = (0..partitions)
            .map(|partition| {
                tokio::spawn(consume(
                    client.clone(),
                    topic.clone(),
                    PartitionId(partition),
                    Arc::clone(&recorder),
                    stop_observing.clone(),
                ))
            })
            .collect();
        observers.push(tokio::spawn(record_leadership(
            client.clone(),
            topic.clone(),
            Arc::clone(&recorder),
            stop_observing.clone(),
        )));
        Workload {
            client: client.clone(),
            topic: topic.clone(),
            recorder,
            stop_producing,
            stop_observing,
            producers,
            observers,
            probes: 0,
        }
    }

    /// What happened so far.
    pub fn history(&self) -> History {
        self.recorder.snapshot()
    }

    /// Waits until every one of `partitions` has an acknowledgement that
    /// came after `since`, for at most `timeout`; panics naming those
    /// without one.
    pub async fn wait_acknowledged_after(
        &self,
        partitions: &[PartitionId],
        since: Duration,
        timeout: Duration,
        why: &str,
    ) {
        let started = tokio::time::Instant::now();
        loop {
            let history = self.history();
            let waiting: Vec<u32> = partitions
                .iter()
                .filter(|partition| {
                    history
                        .first_acknowledged_after(**partition, since)
                        .is_none()
                })
                .map(|partition| partition.0)
                .collect();
            if waiting.is_empty() {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "{why}: partitions {waiting:?} acknowledged nothing within {timeout:?}; last failures: {:?}",
                last_failures(&history, 5)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `count` records (spread over `partitions`) from a producer of
    /// its own with this delivery timeout, records them in the history,
    /// and returns their outcomes.
    pub async fn probe(
        &mut self,
        partitions: &[PartitionId],
        count: u64,
        delivery_timeout: Duration,
    ) -> Vec<Outcome> {
        let producer_id = FIRST_PROBE_PRODUCER + self.probes;
        self.probes += 1;
        let producer = self
            .client
            .producer(&self.topic, producer_config(delivery_timeout))
            .await
            .unwrap_or_else(|error| panic!("creating probe producer {producer_id}: {error}"));
        let mut deliveries = Vec::new();
        for sequence in 0..count {
            let partition = partitions[(sequence % partitions.len() as u64) as usize];
            let index = self.recorder.invoke(producer_id, sequence, partition);
            let value = Bytes::from(record_value(producer_id, sequence));
            match producer.send_to(partition, None, value).await {
                Ok(delivery) => deliveries.push((index, delivery)),
                Err(error) => self
                    .recorder
                    .complete(index, Outcome::Failed(error.to_string())),
            }
        }
        let mut outcomes = Vec::new();
        for (index, delivery) in deliveries {
            let outcome = match delivery.await {
                Ok(metadata) => Outcome::Acknowledged(metadata.offset),
                Err(error) => Outcome::Failed(error.to_string()),
            };
            self.recorder.complete(index, outcome.clone());
            outcomes.push(outcome);
        }
        outcomes
    }

    /// Stops producing, waits for the outcome of every record sent
    /// (bounded by the delivery timeout), stops the observers and returns
    /// the history.
    pub async fn stop(self) -> History {
        self.stop_producing.cancel();
        let drain = DELIVERY_TIMEOUT + Duration::from_secs(5);
        for producer in self.producers {
            let abort = producer.abort_handle();
            match tokio::time::timeout(drain, producer).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => panic!("a producer task failed: {error}"),
                Err(_) => {
                    abort.abort();
                    eprintln!(
                        "a producer still had records without an outcome {drain:?} after it stopped; they count as indeterminate"
                    );
                }
            }
        }
        self.stop_observing.cancel();
        for observer in self.observers {
            match tokio::time::timeout(Duration::from_secs(10), observer).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => panic!("an observer task failed: {error}"),
                Err(_) => panic!("an observer did not stop within 10 s of being asked"),
            }
        }
        self.recorder.snapshot()
    }
}

fn producer_config(delivery_timeout: Duration) -> ProducerConfig {
    ProducerConfig {
        acks: Acks::All,
        idempotent: true,
        delivery_timeout,
        ..ProducerConfig::default()
    }
}

/// The last `count` failure reasons, for a panic message.
fn last_failures(history: &History, count: usize) -> Vec<String> {
    let mut failures: Vec<(Duration, String)> = history
        .operations
        .iter()
        .filter_map(|operation| match &operation.completion {
            Some((at, Outcome::Failed(reason))) => Some((*at, reason.clone())),
            _ => None,
        })
        .collect();
    failures.sort();
    failures
        .into_iter()
        .rev()
        .take(count)
        .map(|(at, reason)| format!("at {at:?}: {reason}"))
        .collect()
}

/// One producer: a record every [`SEND_INTERVAL`], to partition
/// `n % partitions`, until stopped; then waits for every outcome.
async fn produce(
    producer: runnel_client::Producer,
    producer_id: u32,
    partitions: u32,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
) {
    let outstanding = Arc::new(Semaphore::new(MAX_OUTSTANDING));
    let mut deliveries = JoinSet::new();
    let mut ticker = tokio::time::interval(SEND_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for sequence in 0u64.. {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    permit = Arc::clone(&outstanding).acquire_owned() => {
                        permit.expect("the semaphore is never closed")
                    }
                }
            }
        };
        let partition = PartitionId((sequence % u64::from(partitions)) as u32);
        let index = recorder.invoke(producer_id, sequence, partition);
        let value = Bytes::from(record_value(producer_id, sequence));
        match producer.send_to(partition, None, value).await {
            Ok(delivery) => {
                let recorder = Arc::clone(&recorder);
                deliveries.spawn(async move {
                    let outcome = match delivery.await {
                        Ok(metadata) => Outcome::Acknowledged(metadata.offset),
                        Err(error) => Outcome::Failed(error.to_string()),
                    };
                    recorder.complete(index, outcome);
                    drop(permit);
                });
            }
            Err(error) => recorder.complete(index, Outcome::Failed(error.to_string())),
        }
        while deliveries.try_join_next().is_some() {}
    }
    while deliveries.join_next().await.is_some() {}
}

/// Reads one partition from the beginning for as long as the scenario
/// runs, recording each record; after an error, resumes from the next
/// offset.
async fn consume(
    client: RunnelClient,
    topic: TopicName,
    partition: PartitionId,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
) {
    let mut start = StartFrom::Beginning;
    while !stop.is_cancelled() {
        let config = ConsumerConfig {
            partitions: Some(vec![partition]),
            start,
            start_timeout: Duration::from_secs(5),
            ..ConsumerConfig::default()
        };
        let created = tokio::select! {
            _ = stop.cancelled() => return,
            created = client.consumer(&topic, config) => created,
        };
        let error = match created {
            Err(error) => error.to_string(),
            Ok(mut consumer) => loop {
                let item = tokio::select! {
                    _ = stop.cancelled() => return,
                    item = consumer.next() => item,
                };
                match item {
                    Some(Ok(record)) => {
                        let observation = Observation {
                            at: recorder.clock.now(),
                            partition,
                            offset: record.offset,
                            value: record.value.to_vec(),
                        };
                        start = StartFrom::Offset(record.offset.plus(1).0);
                        let mut history = recorder.history.lock().expect("history lock");
                        history.observations.push(observation);
                    }
                    Some(Err(error)) => break error.to_string(),
                    None => break "the consumer ended".to_string(),
                }
            },
        };
        recorder
            .history
            .lock()
            .expect("history lock")
            .consumer_errors
            .push((recorder.clock.now(), partition, error));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(CONSUMER_BACKOFF) => {}
        }
    }
}

type LeadershipState = (Option<SpuId>, LeaderEpoch, BTreeSet<SpuId>);

/// Records each partition's leader, epoch and ISR whenever the metadata
/// the SC pushes changes them.
async fn record_leadership(
    client: RunnelClient,
    topic: TopicName,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
) {
    let mut last: BTreeMap<PartitionId, LeadershipState> = BTreeMap::new();
    loop {
        let view = client.metadata();
        let version = view.version;
        for (partition, state) in leadership_of(&view, &topic) {
            if last.get(&partition) == Some(&state) {
                continue;
            }
            let (leader, epoch, in_sync) = state.clone();
            recorder
                .history
                .lock()
                .expect("history lock")
                .leadership
                .push(Leadership {
                    at: recorder.clock.now(),
                    partition,
                    leader,
                    epoch,
                    in_sync,
                });
            last.insert(partition, state);
        }
        // Woken by the next change; the timeout only re-checks the stop.
        let changed =
            client.wait_for_metadata(|view| view.version != version, Duration::from_secs(1));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = changed => {}
        }
    }
}

fn leadership_of(view: &MetadataView, topic: &TopicName) -> Vec<(PartitionId, LeadershipState)> {
    view.partitions
        .iter()
        .filter(|(key, _)| key.topic == *topic)
        .map(|(PartitionKey { partition, .. }, found)| {
            let status = &found.status;
            let in_sync = status.in_sync_replicas.iter().copied().collect();
            (*partition, (status.leader, status.leader_epoch, in_sync))
        })
        .collect()
}

/// Every record of every partition, from the beginning to the high
/// watermark, read through the leaders; panics if that is not possible
/// within `timeout` (the cluster is healed when this is called).
pub async fn read_all(
    client: &RunnelClient,
    topic: &TopicName,
    partitions: u32,
    timeout: Duration,
) -> BTreeMap<PartitionId, Vec<(Offset, Vec<u8>)>> {
    let read = async {
        let config = ConsumerConfig {
            start: StartFrom::Beginning,
            stop_at_end: true,
            start_timeout: timeout,
            ..ConsumerConfig::default()
        };
        let mut consumer = client
            .consumer(topic, config)
            .await
            .unwrap_or_else(|error| panic!("reading {topic} back: {error}"));
        let mut log: BTreeMap<PartitionId, Vec<(Offset, Vec<u8>)>> = (0..partitions)
            .map(|partition| (PartitionId(partition), Vec::new()))
            .collect();
        while let Some(record) = consumer.next().await {
            let record = record.unwrap_or_else(|error| panic!("reading {topic} back: {error}"));
            log.entry(record.partition)
                .or_default()
                .push((record.offset, record.value.to_vec()));
        }
        log
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| panic!("reading {topic} back took more than {timeout:?}"))
}
