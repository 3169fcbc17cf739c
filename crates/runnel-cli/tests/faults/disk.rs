//! The disk under the SPUs: replica directories read offline (as
//! `runnel debug dump-log` reads them: the segment files, validated batch
//! by batch, never opened as a `Log`, which could repair them), damage done
//! on purpose (a torn tail, a flipped bit), and a small tmpfs that fills up.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use runnel_log::inspect::{self, MAX_INSPECT_BATCH_BYTES};
use runnel_log::scan::{Offsets, Scanner};
use runnel_types::Offset;
use runnel_wire::RecordBatch;
use runnel_wire::batch::{BATCH_HEADER_LEN, DecodeLimits};

use crate::checker::StoredBatch;

/// Every batch of a replica directory, in offset order; an error names the
/// first fault (file, byte, offset), as `runnel debug verify-log` would.
pub fn read_replica(dir: &Path) -> Result<Vec<StoredBatch>, String> {
    if !dir.is_dir() {
        return Err(format!("{} does not exist", dir.display()));
    }
    let files = inspect::segment_files(dir).map_err(|error| error.to_string())?;
    let limits = DecodeLimits {
        max_decompressed_bytes: MAX_INSPECT_BATCH_BYTES,
    };
    let mut batches = Vec::new();
    let mut expected: Option<Offset> = None;
    for path in files {
        let file = File::open(&path).map_err(|error| format!("{}: {error}", path.display()))?;
        let file_len = file
            .metadata()
            .map_err(|error| format!("{}: {error}", path.display()))?
            .len();
        let start = expected
            .or_else(|| inspect::base_offset_of(&path))
            .unwrap_or(Offset(0));
        let mut scanner = Scanner::new(
            &file,
            file_len,
            0,
            start,
            MAX_INSPECT_BATCH_BYTES,
            Offsets::Contiguous,
        );
        loop {
            let header = match scanner.next_batch() {
                Ok(Some((_, header))) => header,
                Ok(None) => break,
                Err(fault) => {
                    return Err(format!(
                        "{} at byte {} (offset {}): {}",
                        path.display(),
                        fault.position,
                        fault.offset,
                        fault.kind
                    ));
                }
            };
            let bytes = scanner.batch_bytes().to_vec();
            let (batch, _) = RecordBatch::decode(&bytes, limits).map_err(|error| {
                format!(
                    "{} batch at offset {}: records do not decode: {error}",
                    path.display(),
                    header.base_offset()
                )
            })?;
            let records = batch
                .records
                .iter()
                .map(|record| {
                    let offset = header.base_offset().plus(i64::from(record.offset_delta));
                    (offset, record.value.clone().unwrap_or_default())
                })
                .collect();
            batches.push(StoredBatch {
                base_offset: header.base_offset(),
                last_offset: header.last_offset(),
                bytes,
                records,
            });
        }
        expected = Some(scanner.next_offset());
    }
    Ok(batches)
}

/// The segment files of a replica directory, in offset order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    inspect::segment_files(dir)
        .unwrap_or_else(|error| panic!("listing the segments of {}: {error}", dir.display()))
}

/// Cuts `bytes` off the end of the active (last) segment: a torn write.
/// Returns the file cut.
pub fn truncate_active_segment(dir: &Path, bytes: u64) -> PathBuf {
    let active = segments(dir)
        .pop()
        .unwrap_or_else(|| panic!("{} has no segment to truncate", dir.display()));
    let file = OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap_or_else(|error| panic!("opening {}: {error}", active.display()));
    let len = file.metadata().expect("segment metadata").len();
    assert!(
        len > bytes,
        "{} holds {len} bytes, too few to cut {bytes}",
        active.display()
    );
    file.set_len(len - bytes).expect("truncating the segment");
    file.sync_all().expect("syncing the truncated segment");
    active
}

/// Flips one bit inside the records of the first batch of the first
/// sealed segment (covered by its CRC, so the damage is detectable and
/// nothing else about the batch changes). Returns the file damaged.
pub fn flip_bit_in_sealed_segment(dir: &Path) -> PathBuf {
    let files = segments(dir);
    assert!(
        files.len() >= 2,
        "{} has {} segments; a sealed one needs at least two",
        dir.display(),
        files.len()
    );
    let sealed = &files[0];
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(sealed)
        .unwrap_or_else(|error| panic!("opening {}: {error}", sealed.display()));
    // The first byte after the header: the first record's length.
    let position = BATCH_HEADER_LEN as u64;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, position)
        .expect("the first batch has records");
    byte[0] ^= 0x10;
    file.write_all_at(&byte, position)
        .expect("writing the flip");
    file.sync_all().expect("syncing the damaged segment");
    sealed.clone()
}

/// A tmpfs mounted for the lifetime of the value; unmounted on drop.
/// Mounting needs root (CAP_SYS_ADMIN).
#[derive(Debug)]
pub struct Tmpfs {
    mount_point: PathBuf,
}

impl Tmpfs {
    pub fn mount(mount_point: &Path, size_bytes: u64) -> Tmpfs {
        fs::create_dir_all(mount_point).expect("creating the mount point");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes}")])
            .arg("tmpfs")
            .arg(mount_point)
            .output()
            .expect("running mount");
        assert!(
            output.status.success(),
            "cannot mount a tmpfs at {} (the disk-full scenario needs root): {}",
            mount_point.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        Tmpfs {
            mount_point: mount_point.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mount_point)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            // Still busy: detach it now, the kernel frees it when unused.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mount_point)
                .status();
        }
    }
}

/// Writes `path` until the file system is full; returns the bytes written.
/// Bounded by `limit` bytes, so a file system that never fills fails the
/// scenario instead of filling the machine.
pub fn fill(path: &Path, limit: u64) -> u64 {
    let mut file = File::create(path).expect("creating the filler");
    let chunk = vec![0xa5u8; 64 << 10];
    let mut written = 0u64;
    while written < limit {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(count) => written += count as u64,
            Err(error) if error.kind() == ErrorKind::StorageFull => return written,
            Err(error) => panic!("filling {}: {error}", path.display()),
        }
    }
    match file.sync_all() {
        Err(error) if error.kind() == ErrorKind::StorageFull => written,
        _ => panic!(
            "{} took {written} bytes without the file system filling up",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use runnel_log::{FlushPolicy, Log, LogConfig};
    use runnel_types::LeaderEpoch;
    use runnel_wire::Compression;
    use runnel_wire::batch::BatchBuilder;

    use super::*;

    /// A log of `batches` batches of three records `b{batch}-r{record}`,
    /// in segments of about two batches.
    fn write_log(dir: &Path, batches: usize) {
        let config = LogConfig {
            segment_max_bytes: 300,
            max_batch_bytes: 300,
            index_interval_bytes: 128,
            segment_max_age_ms: None,
            retention_time_ms: None,
            flush: FlushPolicy::Always,
            ..LogConfig::default()
        };
        let (log, _) = Log::open(dir, config).unwrap();
        for batch in 0..batches {
            let mut builder = BatchBuilder::new(Compression::None);
            for record in 0..3 {
                let value = format!("b{batch}-r{record}").into_bytes();
                builder.push(1_000, None, Some(value), Vec::new());
            }
            let mut bytes = builder.build().encode().unwrap();
            log.append_as_leader(&mut bytes, LeaderEpoch(1), 1_000)
                .unwrap();
        }
        log.close().unwrap();
    }

    #[test]
    fn reads_every_record_of_every_segment() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 6);
        assert!(segments(dir.path()).len() >= 2, "several segments");
        let batches = read_replica(dir.path()).unwrap();
        assert_eq!(batches.len(), 6);
        let records: Vec<(i64, String)> = batches
            .iter()
            .flat_map(|batch| &batch.records)
            .map(|(offset, value)| (offset.0, String::from_utf8(value.clone()).unwrap()))
            .collect();
        assert_eq!(records.len(), 18);
        assert_eq!(records[0], (0, "b0-r0".to_string()));
        assert_eq!(records[17], (17, "b5-r2".to_string()));
        assert_eq!(
            (batches[1].base_offset, batches[1].last_offset),
            (Offset(3), Offset(5))
        );
    }

    #[test]
    fn a_flipped_bit_in_a_sealed_segment_is_a_fault() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 6);
        let before = fs::read(&segments(dir.path())[0]).unwrap();
        let damaged = flip_bit_in_sealed_segment(dir.path());
        let after = fs::read(&damaged).unwrap();
        let differing: Vec<usize> = (0..before.len())
            .filter(|&index| before[index] != after[index])
            .collect();
        assert_eq!(differing, [BATCH_HEADER_LEN]);
        let error = read_replica(dir.path()).unwrap_err();
        assert!(error.contains("at byte 0 (offset 0)"), "{error}");
    }

    #[test]
    fn a_torn_active_segment_is_a_fault() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 6);
        let whole = read_replica(dir.path()).unwrap();
        let active = truncate_active_segment(dir.path(), 7);
        assert_eq!(Some(&active), segments(dir.path()).last());
        let error = read_replica(dir.path()).unwrap_err();
        let last = whole.last().unwrap().base_offset;
        assert!(error.contains(&format!("(offset {last})")), "{error}");
    }

    #[test]
    fn a_tmpfs_fills_up_and_is_unmounted_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let mount_point = dir.path().join("small");
        let tmpfs = Tmpfs::mount(&mount_point, 1 << 20);
        let written = fill(&mount_point.join("filler"), 8 << 20);
        assert!(written <= 1 << 20, "{written} bytes in a 1 MiB tmpfs");
        let error = File::create(mount_point.join("more"))
            .and_then(|mut file| {
                file.write_all(&[0; 8192])?;
                file.sync_all()
            })
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::StorageFull);
        drop(tmpfs);
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
        assert!(
            !mounts.contains(mount_point.to_str().unwrap()),
            "still mounted: {mounts}"
        );
    }

    #[test]
    fn a_missing_replica_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = read_replica(&dir.path().join("t-0")).unwrap_err();
        assert!(error.contains("does not exist"), "{error}");
    }
}
