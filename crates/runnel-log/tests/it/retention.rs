//! Retention by record time and by size.

use runnel_log::{LogConfig, LogError};
use runnel_types::Offset;

use crate::support::{append, open, read_all, small_config, temp_dir};

#[test]
fn time_retention_deletes_by_record_timestamp() {
    let dir = temp_dir();
    let config = LogConfig {
        retention_time_ms: Some(1_500),
        ..small_config()
    };
    let log = open(dir.path(), &config);
    for second in 1..=5 {
        append(&log, 1, 3_000, second * 1_000);
    }
    assert_eq!(log.segment_count(), 5);
    // Files were written just now; only the record timestamps are old.
    let outcome = log.enforce_retention(4_000).unwrap();
    assert_eq!(
        outcome.deleted_segments, 2,
        "segments with newest record before 2500"
    );
    assert_eq!(outcome.log_start, Offset(2));
    assert!(matches!(
        log.read(Offset(1), 100),
        Err(LogError::OffsetOutOfRange {
            log_start: Offset(2),
            ..
        })
    ));
    assert_eq!(read_all(&log).len(), 3);
    log.close().unwrap();
    let log = open(dir.path(), &config);
    assert_eq!(log.log_start_offset(), Offset(2));
}

#[test]
fn an_expired_active_segment_is_sealed_and_deleted() {
    let dir = temp_dir();
    let config = LogConfig {
        retention_time_ms: Some(1_000),
        ..LogConfig::default()
    };
    let log = open(dir.path(), &config);
    append(&log, 10, 10, 5_000);
    let outcome = log.enforce_retention(100_000).unwrap();
    assert_eq!(outcome.deleted_segments, 1);
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (Offset(10), Offset(10))
    );
    assert_eq!(append(&log, 1, 10, 100_000), Offset(10));
    assert!(log.enforce_retention(100_500).unwrap().deleted_segments == 0);
}

#[test]
fn size_retention_keeps_the_log_under_the_limit() {
    let dir = temp_dir();
    let config = LogConfig {
        retention_bytes: Some(10_000),
        ..small_config()
    };
    let log = open(dir.path(), &config);
    for round in 0..20 {
        append(&log, 1, 3_000, round);
    }
    let before = log.size_bytes();
    let outcome = log.enforce_retention(0).unwrap();
    assert!(outcome.deleted_segments > 0);
    assert!(
        log.size_bytes() <= 10_000,
        "{} bytes left",
        log.size_bytes()
    );
    assert_eq!(before - outcome.deleted_bytes, log.size_bytes());
    assert_eq!(log.log_end_offset(), Offset(20));
    assert_eq!(
        read_all(&log).first().unwrap().header.base_offset,
        outcome.log_start.0
    );
}

#[test]
fn no_retention_configured_deletes_nothing() {
    let dir = temp_dir();
    let log = open(dir.path(), &small_config());
    for round in 0..10 {
        append(&log, 1, 3_000, round);
    }
    assert_eq!(log.enforce_retention(i64::MAX).unwrap().deleted_segments, 0);
    assert_eq!(read_all(&log).len(), 10);
}
