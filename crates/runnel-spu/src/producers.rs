//! The idempotent producers of one partition replica: the epoch and the
//! last batches of each producer id, so that a leader recognises a
//! producer's retry of a batch it already holds, answers it with the
//! offsets it was stored at instead of storing it again, and refuses a
//! batch that would leave a gap in a producer's sequence.
//!
//! Kafka's rules. A producer gets an id and an epoch from the SC and
//! numbers its records per partition from 0 (`base_sequence` of a batch
//! is the sequence number of its first record, and its last record's is
//! `base_sequence + last_offset_delta`, wrapping from `i32::MAX` to 0).
//! For a producer this replica knows:
//!
//! - an epoch below the known one is a fenced producer (a newer instance
//!   or a newer sequence of the same producer took over);
//! - an epoch above it starts a new sequence, which must start at 0;
//! - in the same epoch, a batch whose first and last sequence numbers are
//!   those of one of the last [`BATCHES_PER_PRODUCER`] batches is a
//!   duplicate; one that starts right after the last batch is appended;
//!   anything else is out of order.
//!
//! A producer this replica does not know (never seen, evicted, or older
//! than the rebuilt window) is appended whatever its sequence: its state
//! may have aged out, and refusing it would stop a producer for good.
//!
//! Followers [`ProducerStates::record`] the batches they replicate as
//! the leader records the ones it appends, so a new leader already knows
//! the producers and deduplicates retries sent to it after a failover.
//!
//! Pure, apart from [`ProducerStates::rebuild`], which reads batch
//! headers through a [`Log`]. Checking a batch, appending it and
//! recording it must happen under one lock per partition: two batches of
//! one producer checked against the same state could both pass. One
//! produce request should carry one batch per idempotent producer (as
//! Kafka requires), since a second one is checked before the first is
//! recorded.

use std::collections::{BTreeMap, HashMap, VecDeque};

use runnel_log::{Log, LogError};
use runnel_types::Offset;
use runnel_wire::batch::{BatchHeader, NO_PRODUCER_ID};

/// Batches remembered per producer, as Kafka's
/// `max.in.flight.requests.per.connection` bound of 5: a retry is
/// recognised if at most 4 later batches of its producer were stored
/// since.
const BATCHES_PER_PRODUCER: usize = 5;

/// Producers remembered per partition. Beyond it the producer whose last
/// append is the oldest is forgotten: about 10_000 × 5 cached batches,
/// a few MiB per partition at most. A forgotten producer is unknown, so
/// its next batch is appended whatever its sequence, and a retry of one
/// of its old batches would be stored again; only a partition written by
/// more than 10_000 producers in turn between a batch and its retry sees
/// that.
const MAX_PRODUCERS: usize = 10_000;

/// How far back [`ProducerStates::rebuild`] reads: the batches holding
/// the last 100_000 offsets of the log.
///
/// Rebuilding runs when a replica is opened, before it serves; reading
/// the whole log there would make opening as slow as the log is long.
/// What a restart must recognise is a retry of a batch that was in
/// flight when the SPU stopped: a producer keeps one batch in flight per
/// partition, so that batch is among the last ones appended, far inside
/// this window. Replicas that stay up do not rebuild: they record every
/// batch as it is appended or replicated. The cost: after a restart, a
/// producer whose last batch lies before the window is unknown (its next
/// batch is appended whatever its sequence), and a retry of a batch that
/// old would be stored twice. Reading headers costs one `pread` per
/// batch, at most 100_000 of them.
const REBUILD_WINDOW_OFFSETS: i64 = 100_000;

/// What to do with a producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    /// Store it: it is new (or carries no producer id).
    Append,
    /// The replica holds it already, at these offsets: answer with them
    /// and store nothing.
    Duplicate {
        first_offset: Offset,
        last_offset: Offset,
    },
}

/// Why a producer's batch is refused. Neither is retriable: the batch is
/// not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SequenceError {
    #[error(
        "out of order sequence: the batch starts at sequence number {got}, but this partition expects {expected} from its producer; batches in between were lost or the producer reordered them; this batch is not stored: fail it with the batches queued behind it, and start a new epoch (sequence 0) for the records after"
    )]
    OutOfOrder { expected: i32, got: i32 },
    #[error(
        "producer fenced: the batch carries producer epoch {got}, but this partition already holds batches of epoch {current_epoch} from the same producer id; a newer producer instance or epoch took over; this batch is not stored: stop sending with the old epoch"
    )]
    Fenced { current_epoch: i16, got: i16 },
}

/// A stored batch of a producer: its sequence numbers and offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CachedBatch {
    base_sequence: i32,
    last_sequence: i32,
    first_offset: Offset,
    last_offset: Offset,
}

#[derive(Debug)]
struct ProducerState {
    epoch: i16,
    /// Its last batches in this epoch, oldest first, at most
    /// [`BATCHES_PER_PRODUCER`]; never empty.
    batches: VecDeque<CachedBatch>,
    /// Its place in [`ProducerStates::by_last_append`].
    last_append: u64,
}

/// The idempotent producers of one partition replica.
#[derive(Debug, Default)]
pub(crate) struct ProducerStates {
    producers: HashMap<i64, ProducerState>,
    /// Producer ids by the number of their last recorded batch, oldest
    /// first: the eviction order.
    by_last_append: BTreeMap<u64, i64>,
    /// Batches recorded so far: a clock that counts appends, not time.
    recorded: u64,
}

impl ProducerStates {
    pub fn new() -> ProducerStates {
        ProducerStates::default()
    }

    /// Decides about a producer's batch before it is appended, from its
    /// header as received (producer id and epoch, base sequence, last
    /// offset delta). Batches without a producer id are always appended.
    /// Any header may be checked, before the log validates it.
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        if header.producer_id == NO_PRODUCER_ID {
            return Ok(SequenceCheck::Append);
        }
        let got = header.base_sequence;
        let Some(state) = self.producers.get(&header.producer_id) else {
            return if got < 0 {
                Err(SequenceError::OutOfOrder { expected: 0, got })
            } else {
                Ok(SequenceCheck::Append)
            };
        };
        if header.producer_epoch < state.epoch {
            return Err(SequenceError::Fenced {
                current_epoch: state.epoch,
                got: header.producer_epoch,
            });
        }
        if header.producer_epoch > state.epoch {
            return if got == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder { expected: 0, got })
            };
        }
        let last_sequence = sequence_after(got, header.last_offset_delta);
        if let Some(stored) = state
            .batches
            .iter()
            .find(|stored| stored.base_sequence == got && stored.last_sequence == last_sequence)
        {
            return Ok(SequenceCheck::Duplicate {
                first_offset: stored.first_offset,
                last_offset: stored.last_offset,
            });
        }
        let last = state.batches.back().expect("a known producer has a batch");
        let expected = sequence_after(last.last_sequence, 1);
        if got == expected {
            Ok(SequenceCheck::Append)
        } else {
            Err(SequenceError::OutOfOrder { expected, got })
        }
    }

    /// Records a batch once it is in the log, with its final base offset:
    /// the leader's appends and the batches a follower replicates alike.
    /// A batch of an epoch older than the producer's known one changes
    /// nothing (the leader would have fenced it).
    pub fn record(&mut self, header: &BatchHeader) {
        if header.producer_id == NO_PRODUCER_ID {
            return;
        }
        let batch = CachedBatch {
            base_sequence: header.base_sequence,
            last_sequence: sequence_after(header.base_sequence, header.last_offset_delta),
            first_offset: header.base_offset(),
            last_offset: header.last_offset(),
        };
        let known = self.producers.get_mut(&header.producer_id);
        if known
            .as_ref()
            .is_some_and(|state| header.producer_epoch < state.epoch)
        {
            return;
        }
        self.recorded += 1;
        let now = self.recorded;
        match known {
            Some(state) => {
                if header.producer_epoch > state.epoch {
                    state.epoch = header.producer_epoch;
                    state.batches.clear();
                }
                if state.batches.len() == BATCHES_PER_PRODUCER {
                    state.batches.pop_front();
                }
                state.batches.push_back(batch);
                self.by_last_append.remove(&state.last_append);
                state.last_append = now;
            }
            None => {
                self.producers.insert(
                    header.producer_id,
                    ProducerState {
                        epoch: header.producer_epoch,
                        batches: VecDeque::from([batch]),
                        last_append: now,
                    },
                );
            }
        }
        self.by_last_append.insert(now, header.producer_id);
        if self.producers.len() > MAX_PRODUCERS
            && let Some((_, oldest)) = self.by_last_append.pop_first()
        {
            self.producers.remove(&oldest);
        }
    }

    /// Forgets the batches at or after `offset`, for a log truncated
    /// there (a follower dropping a divergent suffix, or starting over):
    /// a retry of a removed batch must be stored again, not answered
    /// with offsets that now hold other records. A producer left with no
    /// batch becomes unknown.
    pub fn truncate_to(&mut self, offset: Offset) {
        let by_last_append = &mut self.by_last_append;
        self.producers.retain(|_, state| {
            state.batches.retain(|batch| batch.last_offset < offset);
            if state.batches.is_empty() {
                by_last_append.remove(&state.last_append);
                return false;
            }
            true
        });
    }

    /// The producers of the last [`REBUILD_WINDOW_OFFSETS`] offsets of
    /// `log`, from their batch headers; see that constant for what older
    /// producers lose.
    pub fn rebuild(log: &Log) -> Result<ProducerStates, LogError> {
        let from = log
            .log_end_offset()
            .0
            .saturating_sub(REBUILD_WINDOW_OFFSETS);
        let mut states = ProducerStates::new();
        log.visit_batch_headers(Offset(from), |header| states.record(header))?;
        Ok(states)
    }
}

/// The sequence number `increment` after `sequence`: Kafka's, which
/// wraps from `i32::MAX` to 0. Computed wide, so a header the log would
/// refuse (a negative delta) gives a number that matches nothing rather
/// than an overflow.
fn sequence_after(sequence: i32, increment: i32) -> i32 {
    let next = i64::from(sequence) + i64::from(increment);
    if next > i64::from(i32::MAX) {
        (next - i64::from(i32::MAX) - 1) as i32
    } else {
        next as i32
    }
}

#[cfg(test)]
mod tests {
    use runnel_log::LogConfig;
    use runnel_types::LeaderEpoch;
    use runnel_wire::{BatchBuilder, Compression};

    use super::*;

    const PRODUCER: i64 = 7;

    /// The header of a batch of `records` records from `producer` in
    /// `epoch`, starting at `sequence`, stored at `offset`.
    fn header(producer: i64, epoch: i16, sequence: i32, records: i32, offset: i64) -> BatchHeader {
        let mut builder = BatchBuilder::new(Compression::None).producer(producer, epoch, sequence);
        for record in 0..records {
            builder.push(
                1_000 + i64::from(record),
                None,
                Some(b"v".to_vec()),
                Vec::new(),
            );
        }
        let mut bytes = builder.build().encode().expect("encode");
        runnel_wire::batch::set_base_offset(&mut bytes, Offset(offset));
        BatchHeader::parse(&bytes).expect("parse")
    }

    /// States that recorded one batch per `(epoch, sequence, records)`,
    /// each stored right after the previous, from offset 0.
    fn recorded(batches: &[(i16, i32, i32)]) -> ProducerStates {
        let mut states = ProducerStates::new();
        let mut offset = 0;
        for &(epoch, sequence, records) in batches {
            states.record(&header(PRODUCER, epoch, sequence, records, offset));
            offset += i64::from(records);
        }
        states
    }

    #[test]
    fn checks_follow_kafkas_rules() {
        // Producer 7, epoch 3, has stored sequences 0..=4 (offsets 0..=4)
        // and 5..=6 (offsets 5..=6).
        let states = recorded(&[(3, 0, 5), (3, 5, 2)]);
        // (what, epoch, base sequence, records, expected)
        type Case = (
            &'static str,
            i16,
            i32,
            i32,
            Result<SequenceCheck, SequenceError>,
        );
        let cases: &[Case] = &[
            ("next in sequence", 3, 7, 4, Ok(SequenceCheck::Append)),
            (
                "retry of the last batch",
                3,
                5,
                2,
                Ok(SequenceCheck::Duplicate {
                    first_offset: Offset(5),
                    last_offset: Offset(6),
                }),
            ),
            (
                "retry of an earlier batch",
                3,
                0,
                5,
                Ok(SequenceCheck::Duplicate {
                    first_offset: Offset(0),
                    last_offset: Offset(4),
                }),
            ),
            (
                "same start, other length",
                3,
                5,
                3,
                Err(SequenceError::OutOfOrder {
                    expected: 7,
                    got: 5,
                }),
            ),
            (
                "a gap",
                3,
                8,
                1,
                Err(SequenceError::OutOfOrder {
                    expected: 7,
                    got: 8,
                }),
            ),
            (
                "behind, not cached",
                3,
                3,
                2,
                Err(SequenceError::OutOfOrder {
                    expected: 7,
                    got: 3,
                }),
            ),
            (
                "older epoch",
                2,
                7,
                1,
                Err(SequenceError::Fenced {
                    current_epoch: 3,
                    got: 2,
                }),
            ),
            ("newer epoch from 0", 4, 0, 3, Ok(SequenceCheck::Append)),
            (
                "newer epoch not from 0",
                4,
                7,
                1,
                Err(SequenceError::OutOfOrder {
                    expected: 0,
                    got: 7,
                }),
            ),
        ];
        for (name, epoch, sequence, records, expected) in cases {
            let batch = header(PRODUCER, *epoch, *sequence, *records, 100);
            assert_eq!(states.check(&batch), *expected, "{name}");
        }
    }

    #[test]
    fn batches_without_a_producer_and_unknown_producers_are_appended() {
        let states = recorded(&[(0, 0, 1)]);
        let plain = header(NO_PRODUCER_ID, -1, -1, 1, 0);
        assert_eq!(states.check(&plain), Ok(SequenceCheck::Append));
        let stranger = header(PRODUCER + 1, 0, 41, 1, 0);
        assert_eq!(
            states.check(&stranger),
            Ok(SequenceCheck::Append),
            "its state may have aged out"
        );
        let negative = header(PRODUCER + 1, 0, -5, 1, 0);
        assert_eq!(
            states.check(&negative),
            Err(SequenceError::OutOfOrder {
                expected: 0,
                got: -5
            }),
            "sequence numbers are never negative"
        );
        let mut states = states;
        states.record(&plain);
        assert_eq!(states.producers.len(), 1, "no state for batches without id");
    }

    #[test]
    fn sequences_wrap_from_the_largest_to_zero() {
        assert_eq!(sequence_after(i32::MAX, 1), 0);
        assert_eq!(sequence_after(i32::MAX, i32::MAX), i32::MAX - 1);
        assert_eq!(sequence_after(0, i32::MIN), i32::MIN, "no overflow");
        assert_eq!(sequence_after(i32::MAX - 1, 3), 1);
        assert_eq!(sequence_after(5, 2), 7);
        // A batch of 3 ending at i32::MAX, then one spanning the wrap.
        let states = recorded(&[(0, i32::MAX - 2, 3)]);
        assert_eq!(
            states.check(&header(PRODUCER, 0, 0, 2, 3)),
            Ok(SequenceCheck::Append)
        );
        let states = recorded(&[(0, i32::MAX - 2, 3), (0, 0, 2), (0, 2, 1)]);
        assert_eq!(
            states.check(&header(PRODUCER, 0, 3, 1, 6)),
            Ok(SequenceCheck::Append)
        );
        let spanning = recorded(&[(0, i32::MAX - 1, 4)]);
        assert_eq!(
            spanning.check(&header(PRODUCER, 0, i32::MAX - 1, 4, 9)),
            Ok(SequenceCheck::Duplicate {
                first_offset: Offset(0),
                last_offset: Offset(3),
            }),
            "last sequence 1, across the wrap"
        );
        assert_eq!(
            spanning.check(&header(PRODUCER, 0, 2, 1, 9)),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let batches: Vec<(i16, i32, i32)> = (0..6).map(|sequence| (0, sequence, 1)).collect();
        let states = recorded(&batches);
        assert_eq!(
            states.check(&header(PRODUCER, 0, 1, 1, 50)),
            Ok(SequenceCheck::Duplicate {
                first_offset: Offset(1),
                last_offset: Offset(1),
            }),
            "fifth from the end"
        );
        assert_eq!(
            states.check(&header(PRODUCER, 0, 0, 1, 50)),
            Err(SequenceError::OutOfOrder {
                expected: 6,
                got: 0
            }),
            "sixth from the end is forgotten"
        );
    }

    #[test]
    fn a_new_epoch_forgets_the_old_batches() {
        let mut states = recorded(&[(0, 0, 2)]);
        states.record(&header(PRODUCER, 1, 0, 1, 2));
        assert_eq!(
            states.check(&header(PRODUCER, 1, 1, 1, 3)),
            Ok(SequenceCheck::Append)
        );
        assert_eq!(
            states.check(&header(PRODUCER, 0, 0, 2, 3)),
            Err(SequenceError::Fenced {
                current_epoch: 1,
                got: 0
            }),
            "a retry from the old epoch is fenced, not a duplicate"
        );
        states.record(&header(PRODUCER, 0, 2, 1, 3));
        assert_eq!(
            states.check(&header(PRODUCER, 1, 1, 1, 4)),
            Ok(SequenceCheck::Append),
            "an older epoch recorded changes nothing"
        );
    }

    #[test]
    fn the_producer_with_the_oldest_last_append_is_evicted() {
        let mut states = ProducerStates::new();
        for producer in 0..MAX_PRODUCERS as i64 {
            states.record(&header(producer, 0, 0, 1, producer));
        }
        // Producer 0 appends again: producer 1 is now the oldest.
        states.record(&header(0, 0, 1, 1, 20_000));
        states.record(&header(50_000, 0, 0, 1, 20_001));
        assert_eq!(states.producers.len(), MAX_PRODUCERS);
        assert_eq!(states.by_last_append.len(), MAX_PRODUCERS);
        assert!(!states.producers.contains_key(&1), "producer 1 evicted");
        assert!(states.producers.contains_key(&0));
        assert!(states.producers.contains_key(&2));
        assert_eq!(
            states.check(&header(1, 0, 7, 1, 30_000)),
            Ok(SequenceCheck::Append),
            "an evicted producer is unknown"
        );
        assert_eq!(
            states.check(&header(0, 0, 1, 1, 30_000)),
            Ok(SequenceCheck::Duplicate {
                first_offset: Offset(20_000),
                last_offset: Offset(20_000),
            })
        );
    }

    #[test]
    fn truncation_forgets_the_batches_it_removed() {
        // Offsets 0..=1, 2..=3, 4..=5 from producer 7; offset 6 from 8.
        let mut states = recorded(&[(0, 0, 2), (0, 2, 2), (0, 4, 2)]);
        states.record(&header(8, 0, 0, 1, 6));
        states.truncate_to(Offset(4));
        assert_eq!(
            states.check(&header(PRODUCER, 0, 4, 2, 4)),
            Ok(SequenceCheck::Append),
            "the removed batch is stored again"
        );
        assert_eq!(
            states.check(&header(PRODUCER, 0, 2, 2, 4)),
            Ok(SequenceCheck::Duplicate {
                first_offset: Offset(2),
                last_offset: Offset(3),
            })
        );
        assert!(!states.producers.contains_key(&8), "left without batches");
        assert_eq!(states.by_last_append.len(), 1);
    }

    #[test]
    fn rebuild_reads_the_producers_back_from_the_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = LogConfig {
            segment_max_bytes: 4096,
            max_batch_bytes: 4096,
            ..LogConfig::default()
        };
        let (log, _) = Log::open(dir.path(), config.clone()).expect("open");
        let mut appended = Vec::new();
        let mut next_sequence = HashMap::new();
        // 40 batches of 3 records over several segments: producer 10
        // writes every fourth, one in four carries no id, producer 9
        // writes the rest.
        for index in 0..40 {
            let producer = match index % 4 {
                0 => 10,
                1 => NO_PRODUCER_ID,
                _ => 9,
            };
            let sequence = next_sequence.entry(producer).or_insert(0);
            let mut builder = BatchBuilder::new(Compression::None).producer(producer, 2, *sequence);
            *sequence += 3;
            for record in 0..3 {
                builder.push(1_000 + record, None, Some(vec![0; 100]), Vec::new());
            }
            let mut bytes = builder.build().encode().expect("encode");
            log.append_as_leader(&mut bytes, LeaderEpoch(1), 1_000)
                .expect("append");
            appended.push(BatchHeader::parse(&bytes).expect("parse"));
        }
        assert!(log.segment_count() > 2, "the window spans segments");
        let mut live = ProducerStates::new();
        for header in &appended {
            live.record(header);
        }
        log.close().expect("close");
        let (log, _) = Log::open(dir.path(), config).expect("reopen");
        let rebuilt = ProducerStates::rebuild(&log).expect("rebuild");
        for header in &appended {
            assert_eq!(
                rebuilt.check(header),
                live.check(header),
                "batch at {}",
                header.base_offset
            );
        }
        let last_of_9 = appended
            .iter()
            .rev()
            .find(|header| header.producer_id == 9)
            .expect("a batch of 9");
        assert_eq!(
            rebuilt.check(last_of_9),
            Ok(SequenceCheck::Duplicate {
                first_offset: last_of_9.base_offset(),
                last_offset: last_of_9.last_offset(),
            })
        );
        let next_of_9 = header(9, 2, last_of_9.base_sequence + 3, 1, 500);
        assert_eq!(rebuilt.check(&next_of_9), Ok(SequenceCheck::Append));
    }

    #[test]
    fn rebuild_forgets_producers_before_its_window() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, _) = Log::open(dir.path(), LogConfig::default()).expect("open");
        let append = |producer: i64, sequence: i32, records: i64| {
            let mut builder = BatchBuilder::new(Compression::None).producer(producer, 0, sequence);
            for record in 0..records {
                builder.push(1_000 + record, None, None, Vec::new());
            }
            let mut bytes = builder.build().encode().expect("encode");
            log.append_as_leader(&mut bytes, LeaderEpoch(1), 1_000)
                .expect("append");
        };
        // Producer 11 at offset 0, producer 12 at offset 1, then so many
        // records without a producer that only producer 12's batch is
        // inside the window.
        append(11, 0, 1);
        append(12, 0, 1);
        append(NO_PRODUCER_ID, -1, REBUILD_WINDOW_OFFSETS - 1);
        let rebuilt = ProducerStates::rebuild(&log).expect("rebuild");
        assert_eq!(
            rebuilt.check(&header(11, 0, 5, 1, 0)),
            Ok(SequenceCheck::Append),
            "producer 11 is unknown: any sequence goes"
        );
        assert_eq!(
            rebuilt.check(&header(12, 0, 5, 1, 0)),
            Err(SequenceError::OutOfOrder {
                expected: 1,
                got: 5
            }),
            "producer 12 is known"
        );
        assert_eq!(
            rebuilt.check(&header(12, 0, 0, 1, 0)),
            Ok(SequenceCheck::Duplicate {
                first_offset: Offset(1),
                last_offset: Offset(1),
            })
        );
    }

    #[test]
    fn errors_say_what_to_do() {
        let out_of_order = SequenceError::OutOfOrder {
            expected: 7,
            got: 9,
        }
        .to_string();
        assert!(
            out_of_order.contains("starts at sequence number 9"),
            "{out_of_order}"
        );
        assert!(out_of_order.contains("expects 7"), "{out_of_order}");
        assert!(out_of_order.contains("not stored"), "{out_of_order}");
        let fenced = SequenceError::Fenced {
            current_epoch: 4,
            got: 3,
        }
        .to_string();
        assert!(fenced.contains("epoch 3"), "{fenced}");
        assert!(fenced.contains("epoch 4"), "{fenced}");
        assert!(
            fenced.contains("stop sending with the old epoch"),
            "{fenced}"
        );
    }
}
