//! Model-based property test: random sequences of operations on a real log
//! and on an in-memory model must agree after every step.

use proptest::prelude::*;
use runnel_log::{FlushPolicy, Log, LogConfig, LogError};
use runnel_types::{LeaderEpoch, Offset};
use runnel_wire::Compression;
use runnel_wire::RecordBatch;
use runnel_wire::batch::BatchBuilder;

use crate::support::{read_all, temp_dir};

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: usize,
        value_len: usize,
        timestamp: i64,
        epoch_bump: bool,
    },
    Read {
        pick: u16,
        max_bytes: u64,
    },
    Roll,
    Truncate {
        pick: u16,
    },
    AdvanceStart {
        pick: u16,
    },
    Retention {
        now: i64,
    },
    Reopen {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..5, 0usize..400, 0i64..10_000, proptest::bool::weighted(0.1))
            .prop_map(|(records, value_len, timestamp, epoch_bump)| Op::Append { records, value_len, timestamp, epoch_bump }),
        3 => (any::<u16>(), 1u64..3_000).prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        1 => Just(Op::Roll),
        1 => any::<u16>().prop_map(|pick| Op::Truncate { pick }),
        1 => any::<u16>().prop_map(|pick| Op::AdvanceStart { pick }),
        1 => (0i64..12_000).prop_map(|now| Op::Retention { now }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

/// What the log must hold: its batches (offsets assigned) and its bounds.
#[derive(Debug, Default)]
struct Model {
    batches: Vec<RecordBatch>,
    log_start: i64,
    log_end: i64,
    epoch: i32,
}

impl Model {
    fn pick(&self, pick: u16) -> Offset {
        let span = (self.log_end - self.log_start + 1) as u64;
        Offset(self.log_start + (u64::from(pick) % span) as i64)
    }

    fn retain_from(&mut self, log_start: i64) {
        self.batches
            .retain(|batch| batch.header.last_offset().0 >= log_start);
        self.log_start = log_start;
    }
}

fn check(log: &Log, model: &Model) {
    assert!(
        log.durable_offset() <= log.log_end_offset(),
        "durable past the end"
    );
    assert_eq!(log.log_start_offset(), Offset(model.log_start));
    assert_eq!(log.log_end_offset(), Offset(model.log_end));
    assert_eq!(read_all(log), model.batches);
}

fn run(ops: Vec<Op>, config: LogConfig) {
    let dir = temp_dir();
    let mut log = Log::open(dir.path(), config.clone()).unwrap().0;
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append {
                records,
                value_len,
                timestamp,
                epoch_bump,
            } => {
                model.epoch += i32::from(epoch_bump);
                let mut builder = BatchBuilder::new(Compression::None);
                for index in 0..records {
                    let value = vec![(model.log_end as usize + index) as u8; value_len];
                    builder.push(timestamp + index as i64, None, Some(value), Vec::new());
                }
                let mut bytes = builder.build().encode().unwrap();
                let info = log
                    .append_as_leader(&mut bytes, LeaderEpoch(model.epoch), timestamp)
                    .unwrap();
                assert_eq!(info.first_offset, Offset(model.log_end));
                let (batch, _) = RecordBatch::decode(&bytes, Default::default()).unwrap();
                model.log_end = batch.header.next_offset().0;
                model.batches.push(batch);
            }
            Op::Read { pick, max_bytes } => {
                let offset = model.pick(pick);
                let read = log.read_verified(offset, max_bytes).unwrap();
                match read {
                    None => assert_eq!(offset.0, model.log_end),
                    Some((slice, _)) => {
                        let first = model
                            .batches
                            .iter()
                            .find(|batch| batch.header.last_offset() >= offset)
                            .unwrap();
                        assert_eq!(slice.first_offset.0, first.header.base_offset);
                    }
                }
                let below = Offset(model.log_start - 1);
                if model.log_start > 0 {
                    assert!(matches!(
                        log.read(below, 100),
                        Err(LogError::OffsetOutOfRange { .. })
                    ));
                }
            }
            Op::Roll => log.roll().unwrap(),
            Op::Truncate { pick } => {
                let offset = model.pick(pick);
                let log_end = log.truncate_to(offset).unwrap();
                if offset.0 >= model.log_end {
                    // Nothing to remove.
                } else if offset.0 <= model.log_start {
                    model.batches.clear();
                    model.log_start = offset.0;
                    model.log_end = offset.0;
                } else {
                    let cut = model
                        .batches
                        .iter()
                        .find(|batch| batch.header.last_offset() >= offset)
                        .expect("offset is below the log end")
                        .header
                        .base_offset;
                    model
                        .batches
                        .retain(|batch| batch.header.last_offset() < offset);
                    model.log_end = cut;
                    model.log_start = model.log_start.min(cut);
                }
                assert_eq!(log_end, Offset(model.log_end));
            }
            Op::AdvanceStart { pick } => {
                let offset = model.pick(pick);
                let log_start = log.advance_log_start(offset).unwrap();
                assert_eq!(log_start, offset.max(Offset(model.log_start)));
                model.retain_from(log_start.0);
            }
            Op::Retention { now } => {
                let before = model.log_start;
                let outcome = log.enforce_retention(now).unwrap();
                let log_start = outcome.log_start.0;
                assert!(log_start >= before);
                let deleted: Vec<_> = model
                    .batches
                    .iter()
                    .filter(|batch| batch.header.next_offset().0 <= log_start)
                    .collect();
                if let Some(retention) = config.retention_time_ms {
                    let size_allows = config.retention_bytes.is_some();
                    for batch in deleted {
                        assert!(
                            size_allows || batch.header.max_timestamp < now - retention as i64,
                            "deleted an unexpired batch"
                        );
                    }
                }
                assert!(
                    log_start == before
                        || log_start == model.log_end
                        || model
                            .batches
                            .iter()
                            .any(|batch| batch.header.base_offset == log_start),
                    "a log start moved by retention is a batch boundary"
                );
                model.retain_from(log_start);
            }
            Op::Reopen { clean } => {
                if clean {
                    log.close().unwrap();
                } else {
                    drop(log);
                }
                log = Log::open(dir.path(), config.clone()).unwrap().0;
            }
        }
        check(&log, &model);
    }
}

fn config() -> impl Strategy<Value = LogConfig> {
    (
        prop_oneof![Just(FlushPolicy::Os), Just(FlushPolicy::Always)],
        proptest::option::of(500u64..5_000),
        proptest::option::of(2_000u64..8_000),
    )
        .prop_map(|(flush, retention_time_ms, retention_bytes)| LogConfig {
            segment_max_bytes: 2048,
            max_batch_bytes: 2048,
            segment_max_age_ms: Some(3_000),
            index_interval_bytes: 256,
            retention_time_ms,
            retention_bytes,
            flush,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn log_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..40), config in config()) {
        run(ops, config);
    }
}
