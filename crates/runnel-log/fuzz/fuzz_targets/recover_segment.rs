//! Opens logs made of arbitrary bytes. Recovery must never panic, must leave
//! a log that verifies and takes appends, and reads of a sealed segment with
//! arbitrary contents and indexes either return verified batches or report
//! corruption.

#![no_main]

use std::fs;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use runnel_log::{FlushPolicy, Log, LogConfig, LogError, inspect};
use runnel_types::{LeaderEpoch, Offset};
use runnel_wire::Compression;
use runnel_wire::batch::BatchBuilder;

/// Where the sealed segment of the second mode ends: the base of the next.
const NEXT_BASE: i64 = 1 << 20;

fn config() -> LogConfig {
    LogConfig {
        segment_max_bytes: 1 << 20,
        max_batch_bytes: 1 << 16,
        index_interval_bytes: 128,
        segment_max_age_ms: None,
        retention_time_ms: Some(1_000),
        retention_bytes: None,
        flush: FlushPolicy::Os,
    }
}

fn scratch() -> tempfile::TempDir {
    // tmpfs keeps the many small files and fsyncs of each run cheap.
    let shm = Path::new("/dev/shm");
    match shm.is_dir() {
        true => tempfile::tempdir_in(shm),
        false => tempfile::tempdir(),
    }
    .expect("temporary directory")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        recover_active(rest);
    } else {
        read_sealed(rest);
    }
});

/// The bytes are the only segment, after an unclean stop.
fn recover_active(bytes: &[u8]) {
    let dir = scratch();
    fs::write(dir.path().join("00000000000000000000.log"), bytes).unwrap();
    let (log, report) = Log::open(dir.path(), config()).expect("recovery opens any segment bytes");
    let log_end = log.log_end_offset();
    assert_eq!(report.log_end, log_end);
    let mut offset = log.log_start_offset();
    while let Some((slice, _)) = log.read_verified(offset, 1 << 16).expect("a recovered log is sound") {
        assert!(slice.next_offset > offset);
        offset = slice.next_offset;
    }
    assert_eq!(offset, log_end);

    let mut builder = BatchBuilder::new(Compression::None);
    builder.push(0, None, Some(b"after recovery".to_vec()), Vec::new());
    let mut batch = builder.build().encode().unwrap();
    let epoch = log.epochs().last().map_or(LeaderEpoch(0), |(epoch, _)| *epoch);
    let info = log.append_as_leader(&mut batch, epoch, 0).expect("a recovered log takes appends");
    assert_eq!(info.first_offset, log_end);
    log.close().unwrap();
    let verified = inspect::verify(dir.path()).unwrap();
    assert!(verified.fault.is_none(), "{verified:?}");
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert!(report.truncated.is_none());
    assert_eq!(log.log_end_offset(), log_end.plus(1));
}

/// The bytes are a sealed segment and its two index files, trusted by a
/// clean recovery point.
fn read_sealed(bytes: &[u8]) {
    let Some((&[index_len, time_index_len], rest)) = bytes.split_first_chunk::<2>() else {
        return;
    };
    let (index, rest) = rest.split_at((index_len as usize).min(rest.len()));
    let (time_index, segment) = rest.split_at((time_index_len as usize).min(rest.len()));
    let dir = scratch();
    let path = |name: &str| dir.path().join(name);
    fs::write(path("00000000000000000000.log"), segment).unwrap();
    fs::write(path("00000000000000000000.index"), index).unwrap();
    fs::write(path("00000000000000000000.timeindex"), time_index).unwrap();
    fs::write(path(&format!("{NEXT_BASE:020}.log")), b"").unwrap();
    let checkpoint = format!("runnel-checkpoint 1 recovery-point\n1\n{NEXT_BASE} 0\n");
    let crc = runnel_wire::batch::crc32c(checkpoint.as_bytes());
    fs::write(path("recovery-point.checkpoint"), format!("{checkpoint}crc32c {crc:08x}\n")).unwrap();

    let (log, _) = Log::open(dir.path(), config()).expect("opens");
    for offset in (0..64).chain([NEXT_BASE - 1]) {
        match log.read_verified(Offset(offset), 4096) {
            Ok(Some((slice, _))) => assert!(slice.first_offset <= Offset(offset)),
            Ok(None) | Err(LogError::Corrupt { .. }) | Err(LogError::OffsetOutOfRange { .. }) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    let _ = log.offset_for_timestamp(0);
    let _ = log.enforce_retention(i64::MAX);
}
