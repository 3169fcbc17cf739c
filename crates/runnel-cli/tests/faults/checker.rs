//! The history checker: pure, given what the clients did and saw and what
//! the cluster holds once healed, it names every broken promise.
//!
//! - No acknowledged record lost: each is at its acknowledged offset.
//! - No duplicates: no value at two offsets, nothing nobody sent.
//! - Order: within a partition, one producer's records follow its send
//!   order (the acknowledged ones included, at their offsets).
//! - Read committed: every record a consumer was given is, in the final
//!   log, at the same offset (a consumer shown a record above the high
//!   watermark that was later truncated sees it vanish or change).
//! - One value per offset across replicas: every replica holds the same
//!   batches, byte for byte, below the high watermark.
//! - Leadership: epochs never go back, one leader per epoch, and a new
//!   leader comes from the in-sync replicas the SC last showed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use runnel_types::{Offset, PartitionId, SpuId};

use crate::history::{History, parse_value};

/// One record batch of a replica, read from its segment files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The whole batch as stored.
    pub bytes: Vec<u8>,
    pub records: Vec<(Offset, Vec<u8>)>,
}

/// What the cluster holds after the scenario, the clients stopped and
/// every replica back in sync.
#[derive(Debug, Clone, Default)]
pub struct FinalState {
    /// Each partition read from the beginning through its leader (up to
    /// its high watermark): offset and value.
    pub log: BTreeMap<PartitionId, Vec<(Offset, Vec<u8>)>>,
    /// Each replica's batches, read offline from its directory after the
    /// cluster stopped; or why they could not be read.
    pub replicas: BTreeMap<PartitionId, BTreeMap<SpuId, Result<Vec<StoredBatch>, String>>>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub invoked: usize,
    pub acknowledged: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub observed: usize,
    /// Every broken promise, one sentence each.
    pub violations: Vec<String>,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} records sent, {} acknowledged, {} lost, {} duplicated; consumers saw {}",
            self.invoked, self.acknowledged, self.lost, self.duplicated, self.observed
        )?;
        if self.violations.is_empty() {
            return f.write_str("; no violation");
        }
        writeln!(f, "; {} violations:", self.violations.len())?;
        for violation in self.violations.iter().take(MAX_LISTED_VIOLATIONS) {
            writeln!(f, "  - {violation}")?;
        }
        if self.violations.len() > MAX_LISTED_VIOLATIONS {
            writeln!(
                f,
                "  … and {} more",
                self.violations.len() - MAX_LISTED_VIOLATIONS
            )?;
        }
        Ok(())
    }
}

/// Violations printed in full; the rest are counted (one lost stretch can
/// be thousands of records).
const MAX_LISTED_VIOLATIONS: usize = 40;

pub fn check(history: &History, state: &FinalState) -> Report {
    let mut report = Report {
        invoked: history.operations.len(),
        acknowledged: history.acknowledged(),
        observed: history.observations.len(),
        ..Report::default()
    };
    let stored = check_final_log(history, state, &mut report);
    check_acknowledged(history, state, &stored, &mut report);
    check_observations(history, state, &mut report);
    check_replicas(state, &mut report);
    check_leadership(history, &mut report);
    report
}

/// Where each value is in the final log.
type Locations = HashMap<Vec<u8>, Vec<(PartitionId, Offset)>>;

/// The final log on its own: contiguous offsets, only values that were
/// sent (to that partition), none twice, each producer's in send order.
fn check_final_log(history: &History, state: &FinalState, report: &mut Report) -> Locations {
    let sent: HashMap<(u32, u64), PartitionId> = history
        .operations
        .iter()
        .map(|operation| {
            (
                (operation.producer, operation.sequence),
                operation.partition,
            )
        })
        .collect();
    let mut locations: Locations = HashMap::new();
    for (partition, records) in &state.log {
        for pair in records.windows(2) {
            if pair[1].0 != pair[0].0.plus(1) {
                report.violations.push(format!(
                    "partition {partition}: the final log jumps from offset {} to {}",
                    pair[0].0, pair[1].0
                ));
            }
        }
        let mut last_sequence: HashMap<u32, (u64, Offset)> = HashMap::new();
        for (offset, value) in records {
            locations
                .entry(value.clone())
                .or_default()
                .push((*partition, *offset));
            let Some((producer, sequence)) = parse_value(value) else {
                report.violations.push(format!(
                    "partition {partition} offset {offset}: {:?} is no value any producer sends",
                    String::from_utf8_lossy(value)
                ));
                continue;
            };
            match sent.get(&(producer, sequence)) {
                None => report.violations.push(format!(
                    "partition {partition} offset {offset}: p{producer}-{sequence} was never sent"
                )),
                Some(target) if target != partition => report.violations.push(format!(
                    "partition {partition} offset {offset}: p{producer}-{sequence} was sent to partition {target}"
                )),
                Some(_) => {}
            }
            if let Some((previous, previous_offset)) = last_sequence.get(&producer)
                && *previous >= sequence
            {
                report.violations.push(format!(
                    "partition {partition}: p{producer}-{sequence} at offset {offset} comes after p{producer}-{previous} at offset {previous_offset}, against send order"
                ));
            }
            last_sequence.insert(producer, (sequence, *offset));
        }
    }
    let mut duplicates: Vec<_> = locations
        .iter()
        .filter(|(_, places)| places.len() > 1)
        .collect();
    duplicates.sort();
    for (value, places) in duplicates {
        report.duplicated += places.len() - 1;
        let places: Vec<String> = places
            .iter()
            .map(|(partition, offset)| format!("partition {partition} offset {offset}"))
            .collect();
        report.violations.push(format!(
            "{:?} is stored {} times: {}",
            String::from_utf8_lossy(value),
            places.len(),
            places.join(", ")
        ));
    }
    locations
}

/// Each acknowledged record at its acknowledged offset.
fn check_acknowledged(
    history: &History,
    state: &FinalState,
    stored: &Locations,
    report: &mut Report,
) {
    let logs: BTreeMap<PartitionId, BTreeMap<Offset, &[u8]>> = state
        .log
        .iter()
        .map(|(partition, records)| {
            let by_offset = records
                .iter()
                .map(|(offset, value)| (*offset, value.as_slice()))
                .collect();
            (*partition, by_offset)
        })
        .collect();
    for operation in &history.operations {
        let Some(offset) = operation.acknowledged_offset() else {
            continue;
        };
        let value = operation.value();
        let partition = operation.partition;
        let found = logs
            .get(&partition)
            .and_then(|log| log.get(&offset))
            .copied();
        if found == Some(value.as_bytes()) {
            continue;
        }
        let elsewhere = stored.get(value.as_bytes());
        let at_offset = match found {
            Some(other) => format!("holds {:?}", String::from_utf8_lossy(other)),
            None => "is missing".to_string(),
        };
        match elsewhere {
            Some(places) => report.violations.push(format!(
                "{value} was acknowledged at partition {partition} offset {offset}, which {at_offset}; it is stored at {places:?}"
            )),
            None => {
                report.lost += 1;
                report.violations.push(format!(
                    "acknowledged record lost: {value} (partition {partition} offset {offset}, acknowledged at {:?}); that offset {at_offset}",
                    operation.completion.as_ref().map(|(at, _)| *at)
                ));
            }
        }
    }
}

/// Every record a consumer was given is in the final log, at its offset.
fn check_observations(history: &History, state: &FinalState, report: &mut Report) {
    let logs: BTreeMap<PartitionId, BTreeMap<Offset, &Vec<u8>>> = state
        .log
        .iter()
        .map(|(partition, records)| {
            let by_offset = records
                .iter()
                .map(|(offset, value)| (*offset, value))
                .collect();
            (*partition, by_offset)
        })
        .collect();
    for observation in &history.observations {
        let found = logs
            .get(&observation.partition)
            .and_then(|log| log.get(&observation.offset));
        if found == Some(&&observation.value) {
            continue;
        }
        report.violations.push(format!(
            "a consumer was given {:?} at partition {} offset {} (at {:?}), but the final log {}: it read past the high watermark or the log changed below it",
            String::from_utf8_lossy(&observation.value),
            observation.partition,
            observation.offset,
            observation.at,
            match found {
                Some(value) => format!("holds {:?} there", String::from_utf8_lossy(value)),
                None => "has nothing there".to_string(),
            }
        ));
    }
}

/// Every replica holds the final log below its end (the high watermark),
/// in the same batches, byte for byte.
fn check_replicas(state: &FinalState, report: &mut Report) {
    for (partition, replicas) in &state.replicas {
        let log = state.log.get(partition).map_or(&[][..], Vec::as_slice);
        let high_watermark = log.last().map_or(Offset(0), |(offset, _)| offset.plus(1));
        let log_start = log.first().map_or(high_watermark, |(offset, _)| *offset);
        let mut reference: Option<(SpuId, Vec<&StoredBatch>)> = None;
        for (spu, batches) in replicas {
            let batches = match batches {
                Ok(batches) => batches,
                Err(error) => {
                    report.violations.push(format!(
                        "partition {partition}: the replica on SPU {spu} cannot be read: {error}"
                    ));
                    continue;
                }
            };
            let committed: Vec<(Offset, &Vec<u8>)> = batches
                .iter()
                .flat_map(|batch| batch.records.iter())
                .filter(|(offset, _)| *offset >= log_start && *offset < high_watermark)
                .map(|(offset, value)| (*offset, value))
                .collect();
            let differs =
                committed
                    .iter()
                    .zip(log)
                    .find(|((offset, value), (expected_offset, expected))| {
                        offset != expected_offset || *value != expected
                    });
            if let Some(((offset, value), (expected_offset, expected))) = differs {
                report.violations.push(format!(
                    "partition {partition}: the replica on SPU {spu} holds {:?} at offset {offset} where the leader served {:?} at offset {expected_offset}",
                    String::from_utf8_lossy(value),
                    String::from_utf8_lossy(expected),
                ));
                continue;
            }
            if committed.len() != log.len() {
                report.violations.push(format!(
                    "partition {partition}: the replica on SPU {spu} holds {} committed records of the {} below the high watermark {high_watermark}",
                    committed.len(),
                    log.len()
                ));
                continue;
            }
            let below: Vec<&StoredBatch> = batches
                .iter()
                .filter(|batch| {
                    batch.last_offset < high_watermark && batch.base_offset >= log_start
                })
                .collect();
            match &reference {
                None => reference = Some((*spu, below)),
                Some((reference_spu, reference_batches)) => {
                    if let Some(violation) =
                        compare_batches(reference_batches, &below, *reference_spu, *spu)
                    {
                        report
                            .violations
                            .push(format!("partition {partition}: {violation}"));
                    }
                }
            }
        }
    }
}

/// The first difference between two replicas' committed batches.
fn compare_batches(
    left: &[&StoredBatch],
    right: &[&StoredBatch],
    left_spu: SpuId,
    right_spu: SpuId,
) -> Option<String> {
    for (left_batch, right_batch) in left.iter().zip(right) {
        if left_batch.base_offset != right_batch.base_offset
            || left_batch.last_offset != right_batch.last_offset
        {
            return Some(format!(
                "SPU {left_spu} has a batch of offsets {}..={} where SPU {right_spu} has {}..={}",
                left_batch.base_offset,
                left_batch.last_offset,
                right_batch.base_offset,
                right_batch.last_offset
            ));
        }
        if left_batch.bytes != right_batch.bytes {
            return Some(format!(
                "the batch of offsets {}..={} differs in its bytes between SPU {left_spu} and SPU {right_spu}",
                left_batch.base_offset, left_batch.last_offset
            ));
        }
    }
    (left.len() != right.len()).then(|| {
        format!(
            "SPU {left_spu} has {} committed batches, SPU {right_spu} {}",
            left.len(),
            right.len()
        )
    })
}

/// Epochs only grow, one leader per epoch, and a leader elected in the
/// next epoch was in the in-sync set the SC showed just before.
fn check_leadership(history: &History, report: &mut Report) {
    let mut by_partition: BTreeMap<PartitionId, Vec<_>> = BTreeMap::new();
    for seen in &history.leadership {
        by_partition.entry(seen.partition).or_default().push(seen);
    }
    for (partition, seen) in by_partition {
        let mut leaders: BTreeMap<_, SpuId> = BTreeMap::new();
        for now in &seen {
            let Some(leader) = now.leader else { continue };
            if let Some(other) = leaders.insert(now.epoch, leader)
                && other != leader
            {
                report.violations.push(format!(
                    "partition {partition}: epoch {} had two leaders, SPU {other} and SPU {leader}",
                    now.epoch
                ));
            }
        }
        for pair in seen.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            if after.epoch < before.epoch {
                report.violations.push(format!(
                    "partition {partition}: the leader epoch went back from {} to {} at {:?}",
                    before.epoch, after.epoch, after.at
                ));
            }
            let elected = after.leader.filter(|_| after.epoch.0 == before.epoch.0 + 1);
            if let Some(leader) = elected
                && !before.in_sync.contains(&leader)
            {
                report.violations.push(format!(
                    "partition {partition}: SPU {leader} was elected in epoch {} at {:?} but the in-sync replicas were {:?}",
                    after.epoch,
                    after.at,
                    spu_list(&before.in_sync)
                ));
            }
        }
    }
}

fn spu_list(spus: &BTreeSet<SpuId>) -> Vec<u32> {
    spus.iter().map(|spu| spu.0).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use runnel_types::LeaderEpoch;

    use super::*;
    use crate::history::{Leadership, Observation, Operation, Outcome, record_value};

    /// Two producers, two partitions, three replicas; everything
    /// acknowledged but `p1-3` (failed, and not stored) and `p0-3` (failed,
    /// yet stored: an indeterminate outcome).
    fn healthy() -> (History, FinalState) {
        let mut history = History::default();
        let mut log: BTreeMap<PartitionId, Vec<(Offset, Vec<u8>)>> = BTreeMap::new();
        for sequence in 0..4u64 {
            for producer in 0..2u32 {
                let partition = PartitionId((sequence % 2) as u32);
                let value = record_value(producer, sequence);
                let failed = sequence == 3;
                let stored = !failed || producer == 0;
                let records = log.entry(partition).or_default();
                let offset = Offset(records.len() as i64);
                if stored {
                    records.push((offset, value.into_bytes()));
                }
                let outcome = if failed {
                    Outcome::Failed("the delivery timeout ran out".into())
                } else {
                    Outcome::Acknowledged(offset)
                };
                history.operations.push(Operation {
                    producer,
                    sequence,
                    partition,
                    invoked: Duration::from_millis(sequence * 10),
                    completion: Some((Duration::from_millis(sequence * 10 + 5), outcome)),
                });
            }
        }
        history.observations.push(Observation {
            at: Duration::from_millis(30),
            partition: PartitionId(1),
            offset: Offset(1),
            value: record_value(1, 1).into_bytes(),
        });
        let replicas = log
            .iter()
            .map(|(partition, records)| {
                let batch = StoredBatch {
                    base_offset: records[0].0,
                    last_offset: records[records.len() - 1].0,
                    bytes: format!("{records:?}").into_bytes(),
                    records: records.clone(),
                };
                let on_spus = (1..=3)
                    .map(|spu| (SpuId(spu), Ok(vec![batch.clone()])))
                    .collect();
                (*partition, on_spus)
            })
            .collect();
        history.leadership = vec![
            leadership(0, Some(1), 0, &[1, 2, 3]),
            leadership(0, Some(1), 0, &[1, 2]),
            leadership(0, Some(2), 1, &[2]),
            leadership(0, None, 1, &[2]),
            leadership(0, Some(2), 1, &[2, 1]),
        ];
        (history, FinalState { log, replicas })
    }

    fn leadership(partition: u32, leader: Option<u32>, epoch: i32, in_sync: &[u32]) -> Leadership {
        Leadership {
            at: Duration::from_millis(epoch as u64 * 100),
            partition: PartitionId(partition),
            leader: leader.map(SpuId),
            epoch: LeaderEpoch(epoch),
            in_sync: in_sync.iter().copied().map(SpuId).collect(),
        }
    }

    fn replica(state: &mut FinalState, partition: u32, spu: u32) -> &mut Vec<StoredBatch> {
        state
            .replicas
            .get_mut(&PartitionId(partition))
            .and_then(|replicas| replicas.get_mut(&SpuId(spu)))
            .and_then(|batches| batches.as_mut().ok())
            .expect("a readable replica")
    }

    /// Checks a broken copy of the healthy case: it must report a
    /// violation containing `expected`.
    fn assert_violation(
        break_it: impl FnOnce(&mut History, &mut FinalState),
        expected: &str,
    ) -> Report {
        let (mut history, mut state) = healthy();
        break_it(&mut history, &mut state);
        let report = check(&history, &state);
        assert!(
            report.violations.iter().any(|v| v.contains(expected)),
            "expected a violation containing {expected:?}, got: {report}"
        );
        report
    }

    #[test]
    fn a_healthy_history_passes() {
        let (history, state) = healthy();
        let report = check(&history, &state);
        assert!(report.is_valid(), "{report}");
        assert_eq!(
            (
                report.invoked,
                report.acknowledged,
                report.lost,
                report.duplicated
            ),
            (8, 6, 0, 0)
        );
    }

    #[test]
    fn a_lost_acknowledged_record_fails() {
        let report = assert_violation(
            |_, state| {
                let log = state.log.get_mut(&PartitionId(0)).unwrap();
                log.truncate(2);
            },
            "acknowledged record lost: p0-2",
        );
        assert_eq!(report.lost, 2, "p0-2 and p1-2: {report}");
    }

    #[test]
    fn a_record_at_another_offset_than_acknowledged_fails() {
        assert_violation(
            |history, _| {
                let operation = history
                    .operations
                    .iter_mut()
                    .find(|operation| operation.value() == "p0-1")
                    .unwrap();
                operation.completion =
                    Some((Duration::from_millis(15), Outcome::Acknowledged(Offset(1))));
            },
            "p0-1 was acknowledged at partition 1 offset 1, which holds \"p1-1\"",
        );
    }

    #[test]
    fn a_duplicate_fails() {
        let report = assert_violation(
            |_, state| {
                let log = state.log.get_mut(&PartitionId(0)).unwrap();
                let value = log[0].1.clone();
                log.push((Offset(log.len() as i64), value));
            },
            "\"p0-0\" is stored 2 times",
        );
        assert_eq!(report.duplicated, 1);
    }

    #[test]
    fn a_value_never_sent_fails() {
        assert_violation(
            |_, state| {
                let log = state.log.get_mut(&PartitionId(0)).unwrap();
                log.push((Offset(log.len() as i64), b"p7-0".to_vec()));
            },
            "p7-0 was never sent",
        );
    }

    #[test]
    fn a_value_in_the_wrong_partition_fails() {
        assert_violation(
            |_, state| {
                let log = state.log.get_mut(&PartitionId(0)).unwrap();
                log.push((Offset(log.len() as i64), b"p1-3".to_vec()));
            },
            "p1-3 was sent to partition 1",
        );
    }

    #[test]
    fn records_out_of_send_order_fail() {
        assert_violation(
            |history, state| {
                let log = state.log.get_mut(&PartitionId(0)).unwrap();
                // p0-0 and p0-2 swap places; their acknowledgements follow.
                let (first, second) = (log[0].1.clone(), log[2].1.clone());
                log[0].1 = second;
                log[2].1 = first;
                for operation in &mut history.operations {
                    let offset = match operation.value().as_str() {
                        "p0-0" => Offset(2),
                        "p0-2" => Offset(0),
                        _ => continue,
                    };
                    operation.completion =
                        Some((Duration::from_millis(40), Outcome::Acknowledged(offset)));
                }
            },
            "p0-0 at offset 2 comes after p0-2 at offset 0",
        );
    }

    #[test]
    fn a_gap_in_the_final_log_fails() {
        assert_violation(
            |_, state| {
                let log = state.log.get_mut(&PartitionId(1)).unwrap();
                let last = log.pop().unwrap();
                log.push((last.0.plus(3), last.1));
            },
            "jumps from offset",
        );
    }

    #[test]
    fn a_consumer_shown_an_uncommitted_record_fails() {
        assert_violation(
            |history, _| {
                history.observations.push(Observation {
                    at: Duration::from_millis(35),
                    partition: PartitionId(1),
                    offset: Offset(3),
                    value: b"p1-3".to_vec(),
                });
            },
            "a consumer was given \"p1-3\" at partition 1 offset 3",
        );
    }

    #[test]
    fn a_consumer_shown_another_value_fails() {
        assert_violation(
            |history, _| history.observations[0].value = b"p0-1".to_vec(),
            "holds \"p1-1\" there",
        );
    }

    #[test]
    fn a_replica_with_another_value_fails() {
        assert_violation(
            |_, state| {
                let batch = &mut replica(state, 0, 2)[0];
                batch.records[1].1 = b"p1-9".to_vec();
            },
            "the replica on SPU 2 holds \"p1-9\" at offset 1",
        );
    }

    #[test]
    fn a_replica_missing_committed_records_fails() {
        assert_violation(
            |_, state| {
                let batch = &mut replica(state, 1, 3)[0];
                batch.records.pop();
                batch.last_offset = batch.last_offset.plus(-1);
            },
            "the replica on SPU 3 holds 2 committed records of the 3",
        );
    }

    #[test]
    fn replicas_with_different_bytes_fail() {
        assert_violation(
            |_, state| replica(state, 1, 3)[0].bytes[0] ^= 1,
            "differs in its bytes between SPU 1 and SPU 3",
        );
    }

    #[test]
    fn replicas_with_different_batch_bounds_fail() {
        assert_violation(
            |_, state| {
                let whole = replica(state, 0, 2).remove(0);
                let (first, rest) = whole.records.split_at(1);
                let split = vec![
                    StoredBatch {
                        base_offset: first[0].0,
                        last_offset: first[0].0,
                        bytes: vec![1],
                        records: first.to_vec(),
                    },
                    StoredBatch {
                        base_offset: rest[0].0,
                        last_offset: whole.last_offset,
                        bytes: vec![2],
                        records: rest.to_vec(),
                    },
                ];
                *replica(state, 0, 2) = split;
            },
            "SPU 1 has a batch of offsets 0..=3 where SPU 2 has 0..=0",
        );
    }

    #[test]
    fn an_unreadable_replica_fails() {
        assert_violation(
            |_, state| {
                let replicas = state.replicas.get_mut(&PartitionId(0)).unwrap();
                replicas.insert(SpuId(2), Err("CRC mismatch at byte 70".into()));
            },
            "the replica on SPU 2 cannot be read: CRC mismatch",
        );
    }

    #[test]
    fn replicas_may_differ_above_the_high_watermark() {
        let (history, mut state) = healthy();
        let uncommitted = StoredBatch {
            base_offset: Offset(4),
            last_offset: Offset(4),
            bytes: vec![9],
            records: vec![(Offset(4), b"p1-3".to_vec())],
        };
        replica(&mut state, 0, 3).push(uncommitted);
        let report = check(&history, &state);
        assert!(report.is_valid(), "{report}");
    }

    #[test]
    fn an_epoch_going_back_fails() {
        assert_violation(
            |history, _| history.leadership.push(leadership(0, Some(1), 0, &[1, 2])),
            "the leader epoch went back from 1 to 0",
        );
    }

    #[test]
    fn two_leaders_in_one_epoch_fail() {
        assert_violation(
            |history, _| history.leadership.push(leadership(0, Some(1), 1, &[1, 2])),
            "epoch 1 had two leaders, SPU 2 and SPU 1",
        );
    }

    #[test]
    fn a_leader_elected_from_outside_the_in_sync_replicas_fails() {
        assert_violation(
            |history, _| {
                history.leadership.push(leadership(0, None, 2, &[2]));
                history.leadership.push(leadership(0, Some(3), 3, &[3]));
            },
            "SPU 3 was elected in epoch 3",
        );
    }
}
