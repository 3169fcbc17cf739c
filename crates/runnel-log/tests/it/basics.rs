//! Appends, reads, rolls, indexes, epochs, validation and durability.

use std::sync::Arc;

use runnel_log::{FlushPolicy, Log, LogConfig, LogError};
use runnel_types::{LeaderEpoch, Offset};
use runnel_wire::batch::{self, BatchHeader};

use crate::support::{append, batch, open, read_all, small_config, temp_dir};

#[test]
fn leader_append_assigns_offsets_and_epoch() {
    let dir = temp_dir();
    let log = open(dir.path(), &LogConfig::default());
    for expected in [0, 5, 10] {
        assert_eq!(append(&log, 5, 10, 1_000), Offset(expected));
    }
    assert_eq!(log.log_end_offset(), Offset(15));

    let batches = read_all(&log);
    let bases: Vec<i64> = batches
        .iter()
        .map(|batch| batch.header.base_offset)
        .collect();
    assert_eq!(bases, [0, 5, 10]);
    assert!(
        batches
            .iter()
            .all(|batch| batch.header.partition_leader_epoch == 1)
    );

    let slice = log.read(Offset(7), 1).unwrap().unwrap();
    assert_eq!(
        (slice.first_offset, slice.next_offset),
        (Offset(5), Offset(10)),
        "at least one whole batch"
    );
    assert!(
        log.read(Offset(15), 1 << 20).unwrap().is_none(),
        "the log end has nothing yet"
    );
    let below = log
        .read_below(Offset(0), Offset(12), 1 << 20)
        .unwrap()
        .unwrap();
    assert_eq!(
        (below.first_offset, below.next_offset),
        (Offset(0), Offset(10)),
        "the batch ending past the limit is left out"
    );
    assert!(
        log.read_below(Offset(10), Offset(14), 1 << 20)
            .unwrap()
            .is_none(),
        "nothing ends at or below the limit"
    );
    assert!(matches!(
        log.read(Offset(16), 1 << 20),
        Err(LogError::OffsetOutOfRange {
            log_end: Offset(15),
            ..
        })
    ));
}

#[test]
fn segments_roll_by_size_and_reads_cross_them() {
    let dir = temp_dir();
    let config = small_config();
    let log = open(dir.path(), &config);
    for round in 0..40 {
        append(&log, 3, 100, 1_000 + round);
    }
    assert!(log.segment_count() >= 4, "{} segments", log.segment_count());
    let offsets = |batches: Vec<runnel_wire::RecordBatch>| -> Vec<i64> {
        batches
            .iter()
            .map(|batch| batch.header.base_offset)
            .collect()
    };
    let expected: Vec<i64> = (0..40).map(|round| round * 3).collect();
    assert_eq!(offsets(read_all(&log)), expected);
    for offset in 0..120 {
        let slice = log.read(Offset(offset), 1).unwrap().unwrap();
        assert!(slice.first_offset.0 <= offset && offset < slice.next_offset.0);
    }
    log.close().unwrap();
    let log = open(dir.path(), &config);
    assert_eq!(offsets(read_all(&log)), expected);
}

#[test]
fn segments_roll_by_record_age() {
    let dir = temp_dir();
    let config = LogConfig {
        segment_max_age_ms: Some(1_000),
        ..LogConfig::default()
    };
    let log = open(dir.path(), &config);
    append(&log, 1, 10, 10_000);
    append(&log, 1, 10, 10_500);
    assert_eq!(log.segment_count(), 1);
    append(&log, 1, 10, 11_000);
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn offsets_by_timestamp() {
    let dir = temp_dir();
    let log = open(dir.path(), &small_config());
    for (round, timestamp) in [100, 200, 300, 250, 400].into_iter().enumerate() {
        assert_eq!(append(&log, 2, 300, timestamp), Offset(round as i64 * 2));
    }
    let lookup = |timestamp| log.offset_for_timestamp(timestamp).unwrap();
    assert_eq!(lookup(0), Some(Offset(0)));
    assert_eq!(lookup(100), Some(Offset(0)));
    assert_eq!(lookup(150), Some(Offset(2)));
    assert_eq!(lookup(260), Some(Offset(4)));
    assert_eq!(lookup(400), Some(Offset(8)));
    assert_eq!(lookup(401), None);
}

#[test]
fn epoch_cache_follows_appends_truncation_and_reopen() {
    let dir = temp_dir();
    let log = open(dir.path(), &small_config());
    let append_at = |epoch| {
        let mut bytes = batch(2, 10, 0);
        log.append_as_leader(&mut bytes, LeaderEpoch(epoch), 0)
            .unwrap()
    };
    append_at(1);
    append_at(1);
    append_at(3);
    append_at(4);
    let expected = vec![
        (LeaderEpoch(1), Offset(0)),
        (LeaderEpoch(3), Offset(4)),
        (LeaderEpoch(4), Offset(6)),
    ];
    assert_eq!(log.epochs(), expected);
    assert_eq!(
        log.epoch_end_offset(LeaderEpoch(2)),
        Some((LeaderEpoch(1), Offset(4)))
    );
    assert_eq!(
        log.epoch_end_offset(LeaderEpoch(4)),
        Some((LeaderEpoch(4), Offset(8)))
    );
    assert_eq!(log.epoch_end_offset(LeaderEpoch(0)), None);

    let mut stale = batch(1, 10, 0);
    assert!(matches!(
        log.append_as_leader(&mut stale, LeaderEpoch(2), 0),
        Err(LogError::EpochRegression { .. })
    ));

    assert_eq!(
        log.truncate_to(Offset(5)).unwrap(),
        Offset(4),
        "the batch holding 5 goes whole"
    );
    assert_eq!(log.epochs(), expected[..1]);
    drop(log);
    let log = open(dir.path(), &small_config());
    assert_eq!(log.epochs(), expected[..1]);
    assert_eq!(log.log_end_offset(), Offset(4));
}

#[test]
fn replicated_appends_keep_offsets_and_must_be_contiguous() {
    let leader_dir = temp_dir();
    let follower_dir = temp_dir();
    let leader = open(leader_dir.path(), &small_config());
    let follower = open(follower_dir.path(), &small_config());
    for epoch in [1, 1, 2] {
        let mut bytes = batch(3, 50, 7);
        leader
            .append_as_leader(&mut bytes, LeaderEpoch(epoch), 7)
            .unwrap();
    }
    let (slice, bytes) = leader.read_verified(Offset(0), 1 << 20).unwrap().unwrap();
    assert_eq!(slice.next_offset, Offset(9));
    let info = follower.append_replicated(&bytes, 7).unwrap();
    assert_eq!(
        (info.first_offset, info.log_end, info.batch_count),
        (Offset(0), Offset(9), 3)
    );
    assert_eq!(follower.epochs(), leader.epochs());
    assert_eq!(read_all(&follower), read_all(&leader));
    assert!(matches!(
        follower.append_replicated(&bytes, 7),
        Err(LogError::NonContiguousBatch {
            log_end: Offset(9),
            ..
        })
    ));
}

#[test]
fn invalid_batches_are_refused_and_change_nothing() {
    let dir = temp_dir();
    let log = open(dir.path(), &small_config());
    append(&log, 2, 10, 0);

    let mut corrupt = batch(2, 10, 0);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x40;
    assert!(matches!(
        log.append_as_leader(&mut corrupt, LeaderEpoch(1), 0),
        Err(LogError::InvalidBatch { .. })
    ));

    let mut torn = batch(2, 10, 0);
    torn.truncate(torn.len() - 3);
    assert!(matches!(
        log.append_as_leader(&mut torn, LeaderEpoch(1), 0),
        Err(LogError::InvalidBatch { .. })
    ));

    let mut garbage = vec![0xAB; 100];
    assert!(
        log.append_as_leader(&mut garbage, LeaderEpoch(1), 0)
            .is_err()
    );
    assert!(log.append_as_leader(&mut [], LeaderEpoch(1), 0).is_err());

    let mut huge = batch(1, 5_000, 0);
    assert!(matches!(
        log.append_as_leader(&mut huge, LeaderEpoch(1), 0),
        Err(LogError::BatchTooLarge { limit: 4096, .. })
    ));

    // A batch whose header counts disagree would make offsets ambiguous.
    let mut lying = batch(3, 10, 0);
    lying[23..27].copy_from_slice(&7i32.to_be_bytes());
    let crc = batch::compute_crc(&lying);
    lying[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        log.append_as_leader(&mut lying, LeaderEpoch(1), 0),
        Err(LogError::InconsistentBatch { .. })
    ));

    assert_eq!(log.log_end_offset(), Offset(2));
    assert_eq!(read_all(&log).len(), 1);
}

#[test]
fn several_batches_in_one_append_get_consecutive_offsets() {
    let dir = temp_dir();
    let log = open(dir.path(), &LogConfig::default());
    let mut bytes = batch(2, 10, 0);
    bytes.extend(batch(3, 10, 0));
    let info = log.append_as_leader(&mut bytes, LeaderEpoch(0), 0).unwrap();
    assert_eq!(
        (info.first_offset, info.last_offset, info.batch_count),
        (Offset(0), Offset(4), 2)
    );
    let second = BatchHeader::parse(&bytes[batch(2, 10, 0).len()..]).unwrap();
    assert_eq!(
        second.base_offset, 2,
        "the caller's bytes carry the assigned offsets"
    );
}

#[test]
fn flush_always_is_durable_when_append_returns_and_os_is_not() {
    let dir = temp_dir();
    let log = open(dir.path(), &LogConfig::default());
    append(&log, 1, 10, 0);
    assert_eq!(log.durable_offset(), Offset(1));
    assert!(
        log.stats()
            .fsyncs
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );

    let dir = temp_dir();
    let config = LogConfig {
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    };
    let log = open(dir.path(), &config);
    append(&log, 1, 10, 0);
    assert_eq!(log.durable_offset(), Offset(0));
    assert_eq!(
        log.stats()
            .fsyncs
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    log.flush().unwrap();
    assert_eq!(log.durable_offset(), Offset(1));
}

#[test]
fn flush_interval_syncs_once_the_interval_passed() {
    let dir = temp_dir();
    let config = LogConfig {
        flush: FlushPolicy::Interval { interval_ms: 100 },
        ..LogConfig::default()
    };
    let log = open(dir.path(), &config);
    append(&log, 1, 10, 1_000);
    append(&log, 1, 10, 1_050);
    assert_eq!(log.durable_offset(), Offset(0));
    log.tick(1_080).unwrap();
    assert_eq!(log.durable_offset(), Offset(0));
    log.tick(1_100).unwrap();
    assert_eq!(log.durable_offset(), Offset(2));
}

#[test]
fn concurrent_appenders_share_fsyncs() {
    let dir = temp_dir();
    let log = Arc::new(open(dir.path(), &LogConfig::default()));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for _ in 0..100 {
                    let mut bytes = batch(4, 200, 0);
                    log.append_as_leader(&mut bytes, LeaderEpoch(0), 0).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let stats = log.stats();
    let batches = stats
        .batches_appended
        .load(std::sync::atomic::Ordering::Relaxed);
    let fsyncs = stats.fsyncs.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(batches, 400);
    assert!(
        fsyncs < batches,
        "group commit: {fsyncs} fsyncs for {batches} batches"
    );
    assert_eq!(log.log_end_offset(), Offset(1600));
    assert_eq!(read_all(&log).len(), 400);
}

#[test]
fn truncation_and_log_start() {
    let dir = temp_dir();
    let config = small_config();
    let log = open(dir.path(), &config);
    for round in 0..30 {
        append(&log, 2, 100, round);
    }
    assert_eq!(log.truncate_to(Offset(41)).unwrap(), Offset(40));
    assert_eq!(append(&log, 2, 100, 99), Offset(40));

    let mut bumped = batch(2, 100, 99);
    log.append_as_leader(&mut bumped, LeaderEpoch(2), 99)
        .unwrap();
    assert_eq!(log.truncate_to(Offset(42)).unwrap(), Offset(42));
    assert_eq!(log.advance_log_start(Offset(21)).unwrap(), Offset(21));
    assert_eq!(
        log.epochs(),
        [(LeaderEpoch(1), Offset(21))],
        "epochs before the start are gone"
    );
    assert!(matches!(
        log.read(Offset(20), 100),
        Err(LogError::OffsetOutOfRange {
            log_start: Offset(21),
            ..
        })
    ));
    let slice = log.read(Offset(21), 1).unwrap().unwrap();
    assert_eq!(
        slice.first_offset,
        Offset(20),
        "the batch holding the log start is served whole"
    );
    log.close().unwrap();

    let log = open(dir.path(), &config);
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (Offset(21), Offset(42))
    );
    assert_eq!(
        log.truncate_to(Offset(10)).unwrap(),
        Offset(10),
        "below the log start: start over"
    );
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (Offset(10), Offset(10))
    );
    assert_eq!(append(&log, 1, 10, 0), Offset(10));
    drop(log);
    let log = open(dir.path(), &config);
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (Offset(10), Offset(11))
    );
}

#[test]
fn invalid_configuration_is_refused() {
    let dir = temp_dir();
    let config = LogConfig {
        segment_max_bytes: 1 << 33,
        ..LogConfig::default()
    };
    assert!(matches!(
        Log::open(dir.path(), config),
        Err(LogError::InvalidConfig(_))
    ));
}

#[test]
fn flush_under_os_syncs_the_sealed_segments_too() {
    let dir = temp_dir();
    let config = LogConfig {
        flush: FlushPolicy::Os,
        ..small_config()
    };
    let log = open(dir.path(), &config);
    for round in 0..20 {
        append(&log, 3, 300, round);
    }
    let fsyncs = || {
        log.stats()
            .fsyncs
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(log.segment_count() >= 4);
    assert_eq!(fsyncs(), 0, "rolls under os do not sync");
    log.flush().unwrap();
    assert_eq!(fsyncs(), log.segment_count() as u64, "every segment once");
    assert_eq!(log.durable_offset(), log.log_end_offset());
}

#[test]
fn the_time_index_keeps_the_running_maximum() {
    let dir = temp_dir();
    let config = LogConfig {
        index_interval_bytes: 1,
        ..small_config()
    };
    let log = open(dir.path(), &config);
    // With an entry per batch, the 500 batch must not hide behind the later
    // 200 one: the first batch at or after 300 is offset 1.
    for timestamp in [100, 500, 200, 600] {
        append(&log, 1, 10, timestamp);
    }
    assert_eq!(log.offset_for_timestamp(300).unwrap(), Some(Offset(1)));
    log.roll().unwrap();
    log.close().unwrap();
    let (log, report) = Log::open(dir.path(), config).unwrap();
    assert!(
        report.rebuilt_indexes.is_empty(),
        "the written indexes pass their checks"
    );
    assert_eq!(log.offset_for_timestamp(300).unwrap(), Some(Offset(1)));
    assert_eq!(log.offset_for_timestamp(550).unwrap(), Some(Offset(3)));
    assert!(
        runnel_log::inspect::verify(dir.path())
            .unwrap()
            .fault
            .is_none()
    );
}

#[test]
fn an_append_spanning_too_many_offsets_is_refused() {
    let dir = temp_dir();
    let log = open(dir.path(), &LogConfig::default());
    // A header may claim any record count; the offsets it would take must
    // still fit in one segment's 32-bit index.
    let mut bytes = Vec::new();
    for _ in 0..2 {
        let mut lying = batch(1, 10, 0);
        lying[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        lying[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = batch::compute_crc(&lying);
        lying[17..21].copy_from_slice(&crc.to_be_bytes());
        bytes.extend(lying);
    }
    assert!(matches!(
        log.append_as_leader(&mut bytes, LeaderEpoch(0), 0),
        Err(LogError::OffsetSpan { .. })
    ));
    assert_eq!(append(&log, 1, 10, 0), Offset(0), "the log still works");
}

#[test]
fn reset_starts_the_log_over_empty_past_its_end() {
    let dir = temp_dir();
    let log = open(dir.path(), &small_config());
    for _ in 0..3 {
        append(&log, 2, 10, 0);
    }
    assert_eq!(log.log_end_offset(), Offset(6));
    assert_eq!(log.reset_to(Offset(500)).unwrap(), Offset(500));
    assert_eq!(log.log_start_offset(), Offset(500));
    assert_eq!(log.log_end_offset(), Offset(500));
    assert_eq!(log.durable_offset(), Offset(500));
    assert!(log.epochs().is_empty(), "no batch left, so no epoch");
    assert!(read_all(&log).is_empty());

    let mut bytes = batch(1, 10, 0);
    let appended = log
        .append_as_leader(&mut bytes, LeaderEpoch(3), 0)
        .expect("append after the reset");
    assert_eq!(appended.first_offset, Offset(500));
    drop(log);
    let log = open(dir.path(), &small_config());
    assert_eq!(log.log_start_offset(), Offset(500));
    assert_eq!(log.log_end_offset(), Offset(501));
    assert_eq!(log.epochs(), vec![(LeaderEpoch(3), Offset(500))]);
}

#[test]
fn unsynced_appends_become_durable_on_sync_to() {
    let dir = temp_dir();
    let config = LogConfig {
        flush: runnel_log::FlushPolicy::Always,
        ..small_config()
    };
    let log = open(dir.path(), &config);
    append(&log, 1, 10, 0);
    let mut bytes = batch(2, 10, 0);
    let appended = log
        .append_as_leader_unsynced(&mut bytes, LeaderEpoch(1), 0)
        .expect("append");
    assert_eq!(log.log_end_offset(), Offset(3));
    assert_eq!(
        log.durable_offset(),
        Offset(1),
        "not synced before its answer"
    );
    log.sync_to(appended.log_end).expect("sync");
    assert_eq!(log.durable_offset(), Offset(3));
}

#[test]
fn batch_headers_are_visited_across_segments_and_past_an_empty_one() {
    let dir = temp_dir();
    let log = open(dir.path(), &small_config());
    for _ in 0..12 {
        append(&log, 2, 300, 0);
    }
    // A roll just before a crash leaves an empty active segment.
    log.roll().unwrap();
    assert!(crate::support::segment_logs(dir.path()).len() >= 3);
    for from in [Offset(0), Offset(5), Offset(23)] {
        let mut bases = Vec::new();
        log.visit_batch_headers(from, |header| bases.push(header.base_offset().0))
            .unwrap();
        let expected: Vec<i64> = (0..12)
            .map(|batch| batch * 2)
            .filter(|&base| base + 2 > from.0)
            .collect();
        assert_eq!(bases, expected, "from {from}");
    }
}
