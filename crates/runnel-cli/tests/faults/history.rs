//! What the clients did and saw during a scenario, each with the time it
//! happened: the input of the checker.
//!
//! Every produce is an operation: invoked, then completed with the offset
//! the cluster acknowledged or with the reason it failed. A failed
//! operation is indeterminate (the record may or may not be stored), as
//! in Jepsen's histories; only an acknowledgement is a promise.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use runnel_types::{LeaderEpoch, Offset, PartitionId, SpuId};

/// Time since the scenario started, shared by every recorder so that
/// their timestamps compare.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    started: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            started: Instant::now(),
        }
    }

    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }
}

/// The value producer `producer` writes as its `sequence`-th record:
/// unique in a scenario, and telling who wrote it and in which order.
pub fn record_value(producer: u32, sequence: u64) -> String {
    format!("p{producer}-{sequence}")
}

/// The producer and sequence of a value written by [`record_value`].
pub fn parse_value(value: &[u8]) -> Option<(u32, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (producer, sequence) = text.strip_prefix('p')?.split_once('-')?;
    Some((producer.parse().ok()?, sequence.parse().ok()?))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: stored at this offset of the operation's partition.
    Acknowledged(Offset),
    /// Not acknowledged; may still be stored.
    Failed(String),
}

/// One produced record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub producer: u32,
    pub sequence: u64,
    pub partition: PartitionId,
    pub invoked: Duration,
    /// `None` if the workload stopped before the record's outcome came.
    pub completion: Option<(Duration, Outcome)>,
}

impl Operation {
    pub fn value(&self) -> String {
        record_value(self.producer, self.sequence)
    }

    pub fn acknowledged_offset(&self) -> Option<Offset> {
        match &self.completion {
            Some((_, Outcome::Acknowledged(offset))) => Some(*offset),
            _ => None,
        }
    }
}

/// A record a consumer was given while the scenario ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub at: Duration,
    pub partition: PartitionId,
    pub offset: Offset,
    pub value: Vec<u8>,
}

/// A partition's leadership as the clients' metadata showed it, recorded
/// each time it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub at: Duration,
    pub partition: PartitionId,
    pub leader: Option<SpuId>,
    pub epoch: LeaderEpoch,
    pub in_sync: BTreeSet<SpuId>,
}

#[derive(Debug, Clone, Default)]
pub struct History {
    pub operations: Vec<Operation>,
    pub observations: Vec<Observation>,
    pub leadership: Vec<Leadership>,
    /// Errors the consumers met (they resume after each), for the report.
    pub consumer_errors: Vec<(Duration, PartitionId, String)>,
}

impl History {
    pub fn acknowledged(&self) -> usize {
        self.operations
            .iter()
            .filter(|operation| operation.acknowledged_offset().is_some())
            .count()
    }

    /// The first acknowledgement on `partition` that came after `since`:
    /// when the partition served again after a fault at `since`.
    pub fn first_acknowledged_after(
        &self,
        partition: PartitionId,
        since: Duration,
    ) -> Option<Duration> {
        self.operations
            .iter()
            .filter(|operation| operation.partition == partition)
            .filter_map(|operation| match &operation.completion {
                Some((at, Outcome::Acknowledged(_))) if *at > since => Some(*at),
                _ => None,
            })
            .min()
    }

    /// When the clients' metadata first showed `partition` led in a later
    /// epoch than it was at `since`: the election after a fault at `since`
    /// (the old leader re-elected included).
    pub fn leader_elected_after(
        &self,
        partition: PartitionId,
        since: Duration,
    ) -> Option<Duration> {
        let seen = || {
            self.leadership
                .iter()
                .filter(|seen| seen.partition == partition)
        };
        let epoch_before = seen()
            .filter(|seen| seen.at <= since)
            .map(|seen| seen.epoch)
            .max();
        seen()
            .filter(|seen| seen.at > since && seen.leader.is_some())
            .find(|seen| epoch_before.is_none_or(|before| seen.epoch > before))
            .map(|seen| seen.at)
    }

    /// Acknowledgements of records invoked at or after `since`, on any of
    /// `partitions`.
    pub fn acknowledged_invoked_after(&self, partitions: &[PartitionId], since: Duration) -> usize {
        self.operations
            .iter()
            .filter(|operation| {
                partitions.contains(&operation.partition)
                    && operation.invoked >= since
                    && operation.acknowledged_offset().is_some()
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_foreign_ones_do_not_parse() {
        assert_eq!(
            parse_value(record_value(3, 1207).as_bytes()),
            Some((3, 1207))
        );
        for foreign in ["", "p", "p1", "p-1", "q1-2", "p1-x", "p1-2-3"] {
            assert_eq!(parse_value(foreign.as_bytes()), None, "{foreign:?}");
        }
        assert_eq!(parse_value(&[0xff, b'1']), None);
    }

    #[test]
    fn first_acknowledgement_after_a_time() {
        let operation = |partition, at_ms, outcome| Operation {
            producer: 0,
            sequence: 0,
            partition: PartitionId(partition),
            invoked: Duration::ZERO,
            completion: Some((Duration::from_millis(at_ms), outcome)),
        };
        let history = History {
            operations: vec![
                operation(0, 100, Outcome::Acknowledged(Offset(0))),
                operation(0, 900, Outcome::Failed("no leader".into())),
                operation(0, 1500, Outcome::Acknowledged(Offset(1))),
                operation(1, 1200, Outcome::Acknowledged(Offset(0))),
                operation(0, 1300, Outcome::Acknowledged(Offset(2))),
            ],
            ..History::default()
        };
        assert_eq!(
            history.first_acknowledged_after(PartitionId(0), Duration::from_millis(500)),
            Some(Duration::from_millis(1300))
        );
        assert_eq!(
            history.first_acknowledged_after(PartitionId(0), Duration::from_millis(1500)),
            None
        );
        assert_eq!(history.acknowledged(), 4);
    }

    #[test]
    fn an_election_is_a_later_epoch_with_a_leader() {
        let seen = |at_ms, leader: Option<u32>, epoch| Leadership {
            at: Duration::from_millis(at_ms),
            partition: PartitionId(0),
            leader: leader.map(SpuId),
            epoch: LeaderEpoch(epoch),
            in_sync: BTreeSet::new(),
        };
        let history = History {
            leadership: vec![
                seen(0, Some(1), 0),
                seen(100, Some(1), 0),
                seen(600, None, 1),
                seen(900, Some(1), 2),
                seen(1200, Some(2), 3),
            ],
            ..History::default()
        };
        let at = |ms| Some(Duration::from_millis(ms));
        assert_eq!(
            history.leader_elected_after(PartitionId(0), Duration::from_millis(500)),
            at(900)
        );
        assert_eq!(
            history.leader_elected_after(PartitionId(0), Duration::from_millis(950)),
            at(1200)
        );
        assert_eq!(
            history.leader_elected_after(PartitionId(0), Duration::from_millis(1300)),
            None
        );
        assert_eq!(
            history.leader_elected_after(PartitionId(1), Duration::ZERO),
            None
        );
    }
}
