//! One partition replica held by this SPU: its log, who leads it, and its
//! high watermark, published so fetch streams wake as soon as records are
//! committed.

use std::path::Path;
use std::sync::{Arc, Mutex};

use runnel_log::{Log, LogConfig, LogError, RecoveryReport};
use runnel_metadata::{PartitionKey, ReplicaAssignment, ReplicaStatus, TopicConfig};
use runnel_types::{FlushPolicy, LeaderEpoch, Offset, SpuId};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Who leads a partition, as the SC last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leadership {
    pub leader: Option<SpuId>,
    pub epoch: LeaderEpoch,
}

#[derive(Debug)]
pub(crate) struct Replica {
    key: PartitionKey,
    /// The topic incarnation this replica's data belongs to.
    topic_id: u64,
    log: Arc<Log>,
    /// The topic settings the log was opened with.
    config: TopicConfig,
    leadership: Mutex<Leadership>,
    /// Offset after the last committed record. Only grows while the
    /// replica is held; fetch streams wait on its changes.
    high_watermark: watch::Sender<Offset>,
    /// Cancelled when the SC removes the replica, so that streams on it
    /// end instead of waiting for records that never come.
    removed: CancellationToken,
}

impl Replica {
    /// Opens (or creates) the replica's log in `dir`, recovering it after
    /// an unclean stop. Blocking: call it from a blocking task.
    pub fn open(
        dir: &Path,
        assignment: &ReplicaAssignment,
    ) -> Result<(Replica, RecoveryReport), LogError> {
        let (log, report) = Log::open(dir, log_config(&assignment.config))?;
        let replica = Replica {
            key: assignment.key.clone(),
            topic_id: assignment.topic_id,
            log: Arc::new(log),
            config: assignment.config.clone(),
            leadership: Mutex::new(Leadership {
                leader: assignment.leader,
                epoch: assignment.leader_epoch,
            }),
            high_watermark: watch::Sender::new(Offset::ZERO),
            removed: CancellationToken::new(),
        };
        replica.refresh_high_watermark();
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
        *self.leadership.lock().expect("leadership lock")
    }

    pub fn set_leadership(&self, leadership: Leadership) {
        *self.leadership.lock().expect("leadership lock") = leadership;
    }

    pub fn high_watermark(&self) -> Offset {
        *self.high_watermark.borrow()
    }

    /// A receiver that sees every later change of the high watermark.
    pub fn watch_high_watermark(&self) -> watch::Receiver<Offset> {
        self.high_watermark.subscribe()
    }

    /// Recomputes the high watermark from the log and wakes the streams
    /// waiting on it if it moved. With one replica, a record is committed
    /// once the flush policy is satisfied: durable under `always`, written
    /// under the relaxed policies (which accept losing it on power loss).
    /// Blocking (it reads the log's end under its lock).
    pub fn refresh_high_watermark(&self) {
        let committed = match self.config.flush {
            FlushPolicy::Always => self.log.durable_offset(),
            FlushPolicy::Interval { .. } | FlushPolicy::Os => self.log.log_end_offset(),
        };
        self.high_watermark.send_if_modified(|high_watermark| {
            let moved = committed > *high_watermark;
            if moved {
                *high_watermark = committed;
            }
            moved
        });
    }

    /// What the heartbeat reports. Blocking (it takes the log's lock).
    pub fn status(&self, spu: SpuId) -> ReplicaStatus {
        ReplicaStatus {
            spu,
            log_start_offset: self.log.log_start_offset(),
            log_end_offset: self.log.log_end_offset(),
            high_watermark: self.high_watermark(),
            size_bytes: self.log.size_bytes(),
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
            let (replica, _) =
                Replica::open(&dir.path().join("events-0"), &assignment(flush)).expect("open");
            let mut watcher = replica.watch_high_watermark();
            assert_eq!(*watcher.borrow_and_update(), Offset(0));

            let mut bytes = batch();
            replica
                .log()
                .append_as_leader(&mut bytes, LeaderEpoch(2), 1_000)
                .expect("append");
            replica.refresh_high_watermark();
            assert!(watcher.has_changed().expect("sender alive"), "{flush}");
            assert_eq!(*watcher.borrow_and_update(), Offset(1));

            // Nothing new: no wake-up.
            replica.refresh_high_watermark();
            assert!(!watcher.has_changed().expect("sender alive"));
            assert_eq!(replica.status(SpuId(1)).log_end_offset, Offset(1));
        }
    }

    #[test]
    fn reopened_replica_starts_at_its_committed_end() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events-0");
        let assignment = assignment(FlushPolicy::Always);
        {
            let (replica, _) = Replica::open(&path, &assignment).expect("open");
            let mut bytes = batch();
            replica
                .log()
                .append_as_leader(&mut bytes, LeaderEpoch(2), 1_000)
                .expect("append");
        }
        let (replica, _) = Replica::open(&path, &assignment).expect("reopen");
        assert_eq!(replica.high_watermark(), Offset(1));
        assert_eq!(
            replica.leadership(),
            Leadership {
                leader: Some(SpuId(1)),
                epoch: LeaderEpoch(2)
            }
        );
    }
}
