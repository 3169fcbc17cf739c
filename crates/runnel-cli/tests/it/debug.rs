//! `runnel debug verify-log | dump-log | write-log` on real partition
//! directories.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn runnel(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runnel starts");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A partition directory of several segments holding "line 0" .. "line N-1".
fn write_lines(dir: &Path, lines: usize) {
    let input: String = (0..lines).map(|line| format!("line {line}\n")).collect();
    let dir = dir.to_str().unwrap();
    let output = runnel(
        &[
            "debug",
            "write-log",
            dir,
            "--batch-records",
            "7",
            "--segment-size",
            "2KiB",
        ],
        input.as_bytes(),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains(&format!("the log ends at {lines}")));
}

#[test]
fn a_sound_log_verifies_and_dumps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    write_lines(dir.path(), 500);
    let path = dir.path().to_str().unwrap();

    let output = runnel(&["debug", "verify-log", path], b"");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    assert!(text(&output.stdout).starts_with("ok: "));
    assert!(text(&output.stdout).contains("500 records"));

    let output = runnel(&["debug", "dump-log", path, "--records", "-O", "json"], b"");
    assert!(output.status.success());
    let records: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(records.len(), 500);
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record["offset"], index);
        assert_eq!(record["value"], format!("line {index}"));
    }

    let output = runnel(&["debug", "dump-log", path, "-O", "json"], b"");
    let batches: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(batches.len(), 500usize.div_ceil(7));
    assert_eq!(batches[1]["base_offset"], 7);
    assert_eq!(batches[1]["records"], 7);
}

#[test]
fn a_flipped_bit_is_reported_with_file_position_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    write_lines(dir.path(), 300);
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 2);
    let target = &segments[1];
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(target)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, 500).unwrap();
    file.write_all_at(&[byte[0] ^ 0x10], 500).unwrap();

    let path = dir.path().to_str().unwrap();
    let output = runnel(&["debug", "verify-log", path, "-O", "json"], b"");
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(text(&output.stdout).trim()).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["fault"]["file"], target.display().to_string());
    let position = report["fault"]["position"].as_u64().unwrap();
    assert!(
        position <= 500,
        "the fault is in the batch holding byte 500, found at {position}"
    );
    assert!(report["fault"]["reason"].as_str().unwrap().contains("CRC"));

    let output = runnel(&["debug", "dump-log", path, "--records"], b"");
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains(&format!("at byte {position}")));
}

#[test]
fn a_torn_tail_is_a_fault_until_the_log_recovers() {
    let dir = tempfile::tempdir().unwrap();
    write_lines(dir.path(), 49);
    // As a crash right after the 50th record leaves the log: the record is
    // written past the recovery point, and its batch is torn.
    let recovery_point = dir.path().join("recovery-point.checkpoint");
    let before = std::fs::read(&recovery_point).unwrap();
    let path = dir.path().to_str().unwrap();
    assert!(
        runnel(&["debug", "write-log", path], b"line 49\n")
            .status
            .success()
    );
    std::fs::write(&recovery_point, before).unwrap();
    let segment = dir.path().join("00000000000000000000.log");
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    let output = runnel(&["debug", "verify-log", path], b"");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stdout).contains("file ends inside a batch"),
        "{}",
        text(&output.stdout)
    );

    // Opening the log (here to append) recovers it: the torn batch is cut.
    let output = runnel(&["debug", "write-log", path], b"after\n");
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("recovered: cut"));
    assert!(
        text(&output.stdout).contains("at offsets 49 to 49; the log ends at 50"),
        "{}",
        text(&output.stdout)
    );
    assert_eq!(
        runnel(&["debug", "verify-log", path], b"").status.code(),
        Some(0)
    );
}

#[test]
fn bad_arguments_get_clear_errors() {
    let output = runnel(
        &["debug", "verify-log", "/nonexistent/runnel/partition"],
        b"",
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("/nonexistent/runnel/partition"));

    let output = runnel(
        &["debug", "write-log", "/tmp/x", "--compression", "brotli"],
        b"",
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("use none, gzip, snappy, lz4 or zstd"));

    let output = runnel(
        &[
            "debug",
            "write-log",
            "/tmp/x",
            "--segment-size",
            "12parsecs",
        ],
        b"",
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("unknown unit"));
}

/// Batches written by kafka-python (the golden vectors of runnel-wire), as
/// `(bytes, record count)`.
fn kafka_batches() -> Vec<(Vec<u8>, usize)> {
    let path = std::env::var_os("RUNNEL_GOLDEN_VECTORS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../runnel-wire/tests/golden/vectors.json"),
        std::path::PathBuf::from,
    );
    let vectors: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    vectors
        .iter()
        .map(|vector| {
            let hex = vector["batch"].as_str().unwrap();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
                .collect();
            (bytes, vector["records"].as_array().unwrap().len())
        })
        .collect()
}

#[test]
fn the_tools_read_segments_written_by_another_kafka_implementation() {
    // A segment as a Kafka broker lays it out: kafka-python's batches back
    // to back, base offsets assigned in order (outside the CRC). One vector
    // has offset gaps, as compaction leaves them.
    let mut segment = Vec::new();
    let (mut next_offset, mut records) = (0i64, 0usize);
    for (mut batch, count) in kafka_batches() {
        batch[0..8].copy_from_slice(&next_offset.to_be_bytes());
        let last_offset_delta = i32::from_be_bytes(batch[23..27].try_into().unwrap());
        next_offset += i64::from(last_offset_delta) + 1;
        records += count;
        segment.extend(batch);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("00000000000000000000.log");
    std::fs::write(&file, &segment).unwrap();
    let file = file.to_str().unwrap();

    let output = runnel(&["debug", "verify-log", file, "-O", "json"], b"");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    let report: serde_json::Value = serde_json::from_str(text(&output.stdout).trim()).unwrap();
    assert_eq!(report["records"], records);
    assert_eq!(report["next_offset"], next_offset);

    let output = runnel(&["debug", "dump-log", file, "--records", "-O", "json"], b"");
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).lines().count(), records);
}

#[test]
fn an_index_longer_than_its_segment_allows_is_a_fault() {
    let dir = tempfile::tempdir().unwrap();
    write_lines(dir.path(), 50);
    let index = dir.path().join("00000000000000000000.index");
    std::fs::write(&index, vec![0; 1 << 20]).unwrap();
    let output = runnel(&["debug", "verify-log", dir.path().to_str().unwrap()], b"");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stdout).contains("index file is 1048576 bytes"),
        "{}",
        text(&output.stdout)
    );
}
