//! Recovery from unclean stops and damaged files: torn tails, missing and
//! corrupt indexes, bit flips in sealed segments.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use runnel_log::{LogConfig, LogError, inspect};
use runnel_types::Offset;
use runnel_wire::RecordBatch;

use crate::support::{append, copy_dir, open, read_all, segment_logs, small_config, temp_dir};

/// A log of several segments as a crash right after its last append leaves
/// it: the recovery point is where it was before that append. Returns the
/// batches.
fn build(dir: &Path, config: &LogConfig, batches: usize) -> Vec<RecordBatch> {
    let log = open(dir, config);
    let append_round = |log: &runnel_log::Log, round: usize| {
        append(
            log,
            1 + round % 3,
            40 + round * 7 % 90,
            1_000 + round as i64,
        );
    };
    for round in 0..batches - 1 {
        append_round(&log, round);
    }
    log.close().unwrap();
    let recovery_point = dir.join("recovery-point.checkpoint");
    let before_last = std::fs::read(&recovery_point).unwrap();
    let log = open(dir, config);
    append_round(&log, batches - 1);
    let written = read_all(&log);
    log.close().unwrap();
    std::fs::write(&recovery_point, before_last).unwrap();
    written
}

#[test]
fn a_torn_tail_is_cut_at_every_byte_of_the_last_batch() {
    let pristine = temp_dir();
    let config = small_config();
    let written = build(pristine.path(), &config, 30);
    let active = segment_logs(pristine.path()).pop().unwrap();
    let active_len = std::fs::metadata(&active).unwrap().len();
    let last = written.last().unwrap();
    let last_len = last.encode().unwrap().len() as u64;
    let last_start = active_len - last_len;
    assert!(
        last_start > 0,
        "the active segment holds more than the last batch"
    );

    for cut in last_start..active_len {
        let scratch = temp_dir();
        copy_dir(pristine.path(), scratch.path());
        let file = OpenOptions::new()
            .write(true)
            .open(scratch.path().join(active.file_name().unwrap()))
            .unwrap();
        file.set_len(cut).unwrap();
        drop(file);

        let (log, report) = runnel_log::Log::open(scratch.path(), config.clone()).unwrap();
        assert_eq!(report.truncated.is_some(), cut > last_start, "cut at {cut}");
        assert_eq!(report.bytes_truncated, cut - last_start);
        assert_eq!(
            log.log_end_offset(),
            Offset(last.header.base_offset),
            "cut at {cut}"
        );
        assert_eq!(read_all(&log), written[..written.len() - 1], "cut at {cut}");
        assert_eq!(append(&log, 2, 10, 5), Offset(last.header.base_offset));
        drop(log);

        let log = open(scratch.path(), &config);
        assert_eq!(read_all(&log).len(), written.len());
        assert!(inspect::verify(scratch.path()).unwrap().fault.is_none());
    }
}

#[test]
fn garbage_after_the_last_batch_is_cut() {
    let dir = temp_dir();
    let config = small_config();
    let written = build(dir.path(), &config, 10);
    let active = segment_logs(dir.path()).pop().unwrap();
    let file = OpenOptions::new().append(true).open(&active).unwrap();
    let end = file.metadata().unwrap().len();
    file.write_all_at(&[0x5A; 300], end).unwrap();
    let (log, report) = runnel_log::Log::open(dir.path(), config).unwrap();
    assert_eq!(report.bytes_truncated, 300);
    assert_eq!(read_all(&log), written);
}

#[test]
fn without_a_recovery_point_every_segment_is_scanned() {
    let dir = temp_dir();
    let config = small_config();
    let written = build(dir.path(), &config, 30);
    std::fs::remove_file(dir.path().join("recovery-point.checkpoint")).unwrap();
    let (log, report) = runnel_log::Log::open(dir.path(), config).unwrap();
    assert_eq!(report.scanned_segments, report.segments);
    assert!(report.truncated.is_none());
    assert_eq!(read_all(&log), written);
}

#[test]
fn missing_or_corrupt_indexes_are_rebuilt_and_reads_are_identical() {
    let pristine = temp_dir();
    let config = LogConfig {
        index_interval_bytes: 100,
        ..small_config()
    };
    let written = build(pristine.path(), &config, 60);
    let expected_reads = read_every_offset(pristine.path(), &config);
    let expected_times = times(pristine.path(), &config);
    let sealed = segment_logs(pristine.path());
    let sealed = &sealed[..sealed.len() - 1];
    assert!(sealed.len() >= 3);

    type Damage = fn(&Path);
    let damages: [(&str, Damage); 7] = [
        ("deleted index", |log| {
            std::fs::remove_file(log.with_extension("index")).unwrap()
        }),
        ("deleted time index", |log| {
            std::fs::remove_file(log.with_extension("timeindex")).unwrap()
        }),
        ("torn index", |log| {
            let path = log.with_extension("index");
            let len = std::fs::metadata(&path).unwrap().len();
            OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(len - 3)
                .unwrap();
        }),
        ("garbage index", |log| {
            std::fs::write(log.with_extension("index"), [0xFF; 64]).unwrap()
        }),
        ("well-formed but wrong index", |log| {
            // Increasing entries that point between batches: only checking
            // the batch at the position catches this.
            let mut bytes = Vec::new();
            for entry in 0u32..4 {
                bytes.extend_from_slice(&(entry * 2).to_be_bytes());
                bytes.extend_from_slice(&(entry * 50 + 1).to_be_bytes());
            }
            std::fs::write(log.with_extension("index"), bytes).unwrap();
        }),
        ("oversized index", |log| {
            // Longer than any index of the segment could be: not even read.
            std::fs::write(log.with_extension("index"), vec![0; 1 << 20]).unwrap()
        }),
        ("garbage time index", |log| {
            std::fs::write(log.with_extension("timeindex"), [0x01; 24]).unwrap()
        }),
    ];
    for (name, damage) in damages {
        let scratch = temp_dir();
        copy_dir(pristine.path(), scratch.path());
        for log in sealed {
            damage(&scratch.path().join(log.file_name().unwrap()));
        }
        assert_eq!(
            read_every_offset(scratch.path(), &config),
            expected_reads,
            "{name}"
        );
        assert_eq!(times(scratch.path(), &config), expected_times, "{name}");
        let log = open(scratch.path(), &config);
        assert_eq!(read_all(&log), written, "{name}");
        drop(log);
        let report = inspect::verify(scratch.path()).unwrap();
        assert!(
            report.fault.is_none(),
            "{name}: indexes rewritten after the rebuild: {report:?}"
        );
    }
}

/// For every offset, the range of the first batch a read returns.
fn read_every_offset(dir: &Path, config: &LogConfig) -> Vec<(Offset, Offset)> {
    let log = open(dir, config);
    (0..log.log_end_offset().0)
        .map(|offset| {
            let (slice, _) = log.read_verified(Offset(offset), 1).unwrap().unwrap();
            (slice.first_offset, slice.next_offset)
        })
        .collect()
}

fn times(dir: &Path, config: &LogConfig) -> Vec<Option<Offset>> {
    let log = open(dir, config);
    (990..1_070)
        .map(|timestamp| log.offset_for_timestamp(timestamp).unwrap())
        .collect()
}

#[test]
fn every_single_bit_flip_in_a_sealed_segment_is_reported() {
    let dir = temp_dir();
    let config = LogConfig {
        segment_max_bytes: 1024,
        max_batch_bytes: 1024,
        index_interval_bytes: 200,
        ..small_config()
    };
    build(dir.path(), &config, 24);
    let segments = segment_logs(dir.path());
    assert!(segments.len() >= 3);
    let target = &segments[1];
    let pristine = std::fs::read(target).unwrap();
    let file = OpenOptions::new().write(true).open(target).unwrap();
    let log = open(dir.path(), &config);

    for bit in 0..pristine.len() * 8 {
        let position = (bit / 8) as u64;
        let flipped = [pristine[bit / 8] ^ (1 << (bit % 8))];
        file.write_all_at(&flipped, position).unwrap();

        let report = inspect::verify(dir.path()).unwrap();
        assert!(report.fault.is_some(), "verify missed bit {bit}");

        let mut offset = log.log_start_offset();
        let outcome = loop {
            match log.read_verified(offset, 300) {
                Ok(Some((slice, _))) => offset = slice.next_offset,
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        assert!(
            matches!(outcome, Err(LogError::Corrupt { .. })),
            "reads served a flip of bit {bit}: {outcome:?}"
        );
        file.write_all_at(&pristine[bit / 8..bit / 8 + 1], position)
            .unwrap();
    }
    assert!(log.corruption().is_some(), "the log knows it is corrupt");
    assert!(inspect::verify(dir.path()).unwrap().fault.is_none());
}

#[test]
fn a_corrupt_sealed_segment_found_at_open_is_kept_and_reported() {
    let dir = temp_dir();
    let config = small_config();
    let written = build(dir.path(), &config, 60);
    let target = segment_logs(dir.path())[1].clone();
    assert!(segment_logs(dir.path()).len() >= 3, "the target is sealed");
    std::fs::remove_file(target.with_extension("index")).unwrap();
    let file = OpenOptions::new().write(true).open(&target).unwrap();
    file.write_all_at(&[0xEE], 100).unwrap();
    let size_before = std::fs::metadata(&target).unwrap().len();

    let (log, report) = runnel_log::Log::open(dir.path(), config).unwrap();
    assert_eq!(report.corrupt_segments.len(), 1);
    assert!(log.corruption().is_some());
    assert_eq!(
        std::fs::metadata(&target).unwrap().len(),
        size_before,
        "sealed data is never cut"
    );
    assert_eq!(
        log.log_end_offset().0,
        written.last().unwrap().header.next_offset().0
    );
    let error = (0..log.log_end_offset().0)
        .find_map(|offset| log.read_verified(Offset(offset), 1).err())
        .expect("a read reaches the corrupt batch");
    assert!(matches!(error, LogError::Corrupt { .. }), "{error}");

    // A replica repairs by cutting the damage off and fetching it again.
    let (_, fault) = log.corruption().expect("still corrupt");
    let log_end = log.truncate_to(fault.offset).unwrap();
    assert!(log_end <= fault.offset);
    assert!(
        log.corruption().is_none(),
        "the damage went with the suffix"
    );
    assert_eq!(read_all(&log).len() as i64 > 0, log_end.0 > 0);
}

#[test]
fn an_epoch_the_checkpoint_missed_is_learned_at_recovery() {
    let dir = temp_dir();
    let config = small_config();
    let log = open(dir.path(), &config);
    let mut bytes = crate::support::batch(2, 10, 0);
    log.append_as_leader(&mut bytes, runnel_types::LeaderEpoch(1), 0)
        .unwrap();
    let checkpoint = dir.path().join("leader-epochs.checkpoint");
    let before = std::fs::read(&checkpoint).unwrap();
    let mut bytes = crate::support::batch(2, 10, 0);
    log.append_as_leader(&mut bytes, runnel_types::LeaderEpoch(2), 0)
        .unwrap();
    drop(log);
    // As if the process died between the append and the checkpoint write.
    std::fs::write(&checkpoint, before).unwrap();

    let log = open(dir.path(), &config);
    let epochs: Vec<(i32, i64)> = log
        .epochs()
        .iter()
        .map(|(epoch, offset)| (epoch.0, offset.0))
        .collect();
    assert_eq!(epochs, [(1, 0), (2, 2)]);
    assert_eq!(read_all(&log).len(), 2);
}

/// Writes `batches` back to back as the only segment of a fresh log dir.
fn raw_segment(batches: &[Vec<u8>]) -> tempfile::TempDir {
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("00000000000000000000.log"),
        batches.concat(),
    )
    .unwrap();
    dir
}

fn stamped(records: usize, base_offset: i64, epoch: i32) -> Vec<u8> {
    let mut bytes = crate::support::batch(records, 10, 0);
    runnel_wire::batch::set_base_offset(&mut bytes, Offset(base_offset));
    runnel_wire::batch::set_leader_epoch(&mut bytes, runnel_types::LeaderEpoch(epoch));
    bytes
}

#[test]
fn recovery_cuts_at_an_offset_gap_or_a_decreasing_epoch() {
    // Found by fuzzing: each tail is framed and CRC-valid, but cannot be
    // served as part of a contiguous log with increasing epochs.
    let cases = [
        ("gap at the segment base", vec![stamped(2, 7, 0)], 0),
        (
            "gap between batches",
            vec![stamped(2, 0, 0), stamped(2, 5, 0)],
            2,
        ),
        (
            "decreasing epoch",
            vec![stamped(2, 0, 3), stamped(2, 2, 3), stamped(2, 4, 1)],
            4,
        ),
    ];
    for (name, batches, kept) in cases {
        let dir = raw_segment(&batches);
        let (log, report) = runnel_log::Log::open(dir.path(), small_config()).unwrap();
        assert!(report.truncated.is_some(), "{name}");
        assert_eq!(log.log_end_offset(), Offset(kept), "{name}");
        assert_eq!(read_all(&log).len() as i64, kept / 2, "{name}");
    }
}

#[test]
fn damage_below_the_recovery_point_is_never_cut() {
    let dir = temp_dir();
    let config = small_config();
    let log = open(dir.path(), &config);
    for round in 0..4 {
        append(&log, 2, 50, round);
    }
    log.close().unwrap();
    let active = segment_logs(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&active).unwrap().len();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&active)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, 70).unwrap();
    file.write_all_at(&[byte[0] ^ 0x01], 70).unwrap();

    // Opened from its checked indexes after the clean close, the segment
    // is not scanned: the damage is found by the read that reaches it.
    let (log, _) = runnel_log::Log::open(dir.path(), config.clone()).unwrap();
    let error = log.read_verified(Offset(0), 1).unwrap_err();
    assert!(matches!(error, LogError::Corrupt { .. }), "{error}");
    assert!(log.corruption().is_some());
    drop(log);

    // Scanned (its indexes gone), the last segment's end cannot be known past
    // damaged durable data: the open fails naming the damage, and nothing is
    // deleted.
    std::fs::remove_file(active.with_extension("index")).unwrap();
    let error = runnel_log::Log::open(dir.path(), config).unwrap_err();
    assert!(
        matches!(error, LogError::Corrupt { position: 0, .. }),
        "{error}"
    );
    assert_eq!(std::fs::metadata(&active).unwrap().len(), len);
}

#[test]
fn lowering_max_batch_bytes_keeps_larger_batches() {
    let dir = temp_dir();
    let config = LogConfig {
        max_batch_bytes: 4096,
        ..small_config()
    };
    let log = open(dir.path(), &config);
    append(&log, 3, 1_000, 0);
    append(&log, 3, 1_000, 0);
    log.close().unwrap();
    let smaller = LogConfig {
        max_batch_bytes: 1024,
        ..config
    };
    let (log, report) = runnel_log::Log::open(dir.path(), smaller).unwrap();
    assert!(report.truncated.is_none());
    assert_eq!(log.log_end_offset(), Offset(6));
    assert_eq!(read_all(&log).len(), 2);
}

#[test]
fn a_damaged_first_header_of_a_sealed_segment_is_reported_not_fatal() {
    let dir = temp_dir();
    let config = small_config();
    build(dir.path(), &config, 60);
    let target = segment_logs(dir.path())[1].clone();
    let file = OpenOptions::new().write(true).open(&target).unwrap();
    file.write_all_at(&[7], 16).unwrap();

    let (log, report) = runnel_log::Log::open(dir.path(), config).unwrap();
    assert_eq!(report.corrupt_segments.len(), 1, "{report:?}");
    assert!(log.corruption().is_some());
}

#[test]
fn corruption_met_while_locating_a_batch_marks_the_log() {
    let dir = temp_dir();
    let config = small_config();
    build(dir.path(), &config, 60);
    let log = open(dir.path(), &config);
    assert!(log.corruption().is_none());
    let target = segment_logs(dir.path())[1].clone();
    let base: i64 = target
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let file = OpenOptions::new().write(true).open(&target).unwrap();
    file.write_all_at(&[7], 16).unwrap();

    let error = log.read_verified(Offset(base), 1).unwrap_err();
    assert!(matches!(error, LogError::Corrupt { .. }), "{error}");
    assert!(log.corruption().is_some());
}

#[test]
fn a_clean_close_spares_the_next_open_a_scan() {
    let dir = temp_dir();
    let config = small_config();
    let log = open(dir.path(), &config);
    for round in 0..30 {
        append(&log, 2, 100, round);
    }
    let written = read_all(&log);
    log.close().unwrap();
    let (log, report) = runnel_log::Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(report.scanned_segments, 0, "{report:?}");
    assert_eq!(read_all(&log), written);
    assert_eq!(append(&log, 1, 10, 99), Offset(60));
    drop(log);

    // Appended after the last close: the tail no longer ends at the
    // recovery point, so the last segment is scanned.
    let (log, report) = runnel_log::Log::open(dir.path(), config).unwrap();
    assert_eq!(report.scanned_segments, 1);
    assert_eq!(log.log_end_offset(), Offset(61));
}
