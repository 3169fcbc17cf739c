//! Offline checks for operators: walk a partition directory or a single
//! segment file and report the first fault, with file, byte position and
//! offset. Works on any directory of Kafka v2 segments, ours or Kafka's.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use runnel_types::Offset;

use crate::LogError;
use crate::index::{OFFSET_ENTRY_LEN, OffsetIndex, TIME_ENTRY_LEN, TimeIndex};
use crate::scan::{Offsets, Scanner};
use crate::segment::{self, INDEX_SUFFIX, IndexFile, LOG_SUFFIX, TIME_INDEX_SUFFIX};

/// Largest batch the offline tools will read; larger length fields are
/// reported as faults instead of allocated.
pub const MAX_INSPECT_BATCH_BYTES: usize = 256 << 20;

/// The segment files to inspect: all of a directory's, in offset order, or
/// the one file given.
pub fn segment_files(path: &Path) -> Result<Vec<PathBuf>, LogError> {
    if !path.is_dir() {
        if !path.exists() {
            return Err(LogError::Io {
                context: "opening",
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        return Ok(vec![path.to_path_buf()]);
    }
    let mut segments = BTreeMap::new();
    for entry in fs::read_dir(path).map_err(LogError::io("listing", path))? {
        let entry = entry.map_err(LogError::io("listing", path))?;
        let name = entry.file_name();
        if let Some((base, LOG_SUFFIX)) = name.to_str().and_then(segment::parse_segment_name) {
            segments.insert(base, entry.path());
        }
    }
    Ok(segments.into_values().collect())
}

/// The base offset a segment's file name gives, if it follows the naming.
pub fn base_offset_of(path: &Path) -> Option<Offset> {
    let name = path.file_name()?.to_str()?;
    segment::parse_segment_name(name).map(|(base, _)| base)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFault {
    pub file: PathBuf,
    pub position: u64,
    pub offset: Offset,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: usize,
    pub batches: u64,
    pub records: u64,
    pub bytes: u64,
    pub first_offset: Option<Offset>,
    pub next_offset: Option<Offset>,
    /// Segments without index files (not a fault: indexes are rebuilt).
    pub missing_indexes: Vec<PathBuf>,
    pub fault: Option<VerifyFault>,
}

/// Checks every batch of every segment under `path` (lengths, CRC, offsets
/// strictly increasing across segments) and each segment's indexes against
/// the batches. Stops at the first fault.
pub fn verify(path: &Path) -> Result<VerifyReport, LogError> {
    let mut report = VerifyReport::default();
    let mut expected = None::<Offset>;
    // The leader epoch is outside the CRC: check it against our epoch
    // checkpoint when there is one, else only that it never decreases.
    let epochs = if path.is_dir() {
        crate::log::read_epochs(path)?
    } else {
        None
    };
    let mut previous_epoch = None;
    // A directory with our checkpoints is a Runnel log, whose offsets are
    // contiguous; anything else may be a compacted Kafka log with gaps.
    let offsets = match path.is_dir() && path.join(crate::log::LOG_START_FILE).exists() {
        true => Offsets::Contiguous,
        false => Offsets::Increasing,
    };
    for file_path in segment_files(path)? {
        report.segments += 1;
        let file = File::open(&file_path).map_err(LogError::io("opening", &file_path))?;
        let file_len = file
            .metadata()
            .map_err(LogError::io("reading size of", &file_path))?
            .len();
        let base = base_offset_of(&file_path);
        if let (Some(base), Some(expected)) = (base, expected)
            && base < expected
        {
            report.fault = Some(VerifyFault {
                file: file_path,
                position: 0,
                offset: base,
                reason: format!(
                    "segment base offset {base} overlaps the previous segment, which ends at {expected}"
                ),
            });
            return Ok(report);
        }
        let start = match offsets {
            Offsets::Contiguous => base.or(expected),
            Offsets::Increasing => expected.or(base),
        };
        if let (Offsets::Contiguous, Some(base), Some(expected)) = (offsets, base, expected)
            && base != expected
        {
            report.fault = Some(VerifyFault {
                file: file_path,
                position: 0,
                offset: base,
                reason: format!(
                    "segment base offset {base} does not continue the previous segment, which ends at {expected}"
                ),
            });
            return Ok(report);
        }
        let start = start.unwrap_or(Offset(i64::MIN));
        let mut scanner = Scanner::new(&file, file_len, 0, start, MAX_INSPECT_BATCH_BYTES, offsets);
        let mut batch_starts = BTreeMap::new();
        let mut max_timestamp = None::<i64>;
        loop {
            match scanner.next_batch() {
                Ok(Some((position, header))) => {
                    let epoch = header.leader_epoch();
                    let expected_epoch = epochs
                        .as_ref()
                        .and_then(|epochs| epochs.epoch_at(header.base_offset()));
                    let epoch_fault = match (expected_epoch, previous_epoch) {
                        (Some(expected), _) if expected != epoch => Some(format!(
                            "leader epoch {epoch} disagrees with the epoch checkpoint, which says {expected}"
                        )),
                        (None, Some(previous)) if epoch < previous => Some(format!(
                            "leader epoch {epoch} is lower than the previous batch's {previous}"
                        )),
                        _ => None,
                    };
                    if let Some(reason) = epoch_fault {
                        report.fault = Some(VerifyFault {
                            file: file_path,
                            position,
                            offset: header.base_offset(),
                            reason,
                        });
                        return Ok(report);
                    }
                    previous_epoch = Some(epoch);
                    report.batches += 1;
                    report.records += header.record_count.max(0) as u64;
                    report.bytes += header.total_len() as u64;
                    report.first_offset.get_or_insert(header.base_offset());
                    report.next_offset = Some(header.next_offset());
                    batch_starts.insert(position, header.base_offset());
                    max_timestamp = Some(
                        max_timestamp
                            .map_or(header.max_timestamp, |max| max.max(header.max_timestamp)),
                    );
                }
                Ok(None) => break,
                Err(fault) => {
                    report.fault = Some(VerifyFault {
                        file: file_path,
                        position: fault.position,
                        offset: fault.offset,
                        reason: fault.kind.to_string(),
                    });
                    return Ok(report);
                }
            }
        }
        expected = Some(scanner.next_offset());
        if let Some(base) = base
            && let Some(fault) = check_indexes(
                &file_path,
                base,
                file_len,
                &batch_starts,
                max_timestamp,
                &mut report,
            )?
        {
            report.fault = Some(fault);
            return Ok(report);
        }
    }
    Ok(report)
}

/// Every index entry must name the start of a batch and its base offset;
/// time index entries may not exceed the segment's largest timestamp.
fn check_indexes(
    log_path: &Path,
    base: Offset,
    file_len: u64,
    batch_starts: &BTreeMap<u64, Offset>,
    max_timestamp: Option<i64>,
    report: &mut VerifyReport,
) -> Result<Option<VerifyFault>, LogError> {
    let index_path = log_path.with_extension(INDEX_SUFFIX);
    let time_index_path = log_path.with_extension(TIME_INDEX_SUFFIX);
    let fault = |file: &Path, position: u64, offset: Offset, reason: String| {
        Some(VerifyFault {
            file: file.to_path_buf(),
            position,
            offset,
            reason,
        })
    };
    let read = |path: &Path,
                entry_len|
     -> Result<Result<Option<Vec<u8>>, Option<VerifyFault>>, LogError> {
        Ok(match segment::read_index_file(path, file_len, entry_len)? {
            IndexFile::Missing => Ok(None),
            IndexFile::Bytes(bytes) => Ok(Some(bytes)),
            IndexFile::TooLarge { len, limit } => Err(fault(
                path,
                limit,
                base,
                format!(
                    "index file is {len} bytes; a segment of {file_len} bytes needs at most {limit}"
                ),
            )),
        })
    };
    let index_bytes = match read(&index_path, OFFSET_ENTRY_LEN)? {
        Ok(bytes) => bytes,
        Err(too_large) => return Ok(too_large),
    };
    let time_index_bytes = match read(&time_index_path, TIME_ENTRY_LEN)? {
        Ok(bytes) => bytes,
        Err(too_large) => return Ok(too_large),
    };
    if index_bytes.is_none() || time_index_bytes.is_none() {
        report.missing_indexes.push(log_path.to_path_buf());
    }
    if let Some(bytes) = index_bytes {
        let Some(index) = OffsetIndex::decode(&bytes, file_len.max(1)) else {
            return Ok(fault(&index_path, 0, base, "offset index is malformed (partial entry, not increasing, or past the segment end)".to_string()));
        };
        for (number, entry) in index.entries().iter().enumerate() {
            let offset = base.plus(i64::from(entry.relative_offset));
            if batch_starts.get(&u64::from(entry.position)) != Some(&offset) {
                return Ok(fault(
                    &index_path,
                    (number * OFFSET_ENTRY_LEN) as u64,
                    offset,
                    format!(
                        "index entry {number} maps offset {offset} to byte {}, where no batch with that base offset starts",
                        entry.position
                    ),
                ));
            }
        }
    }
    if let Some(bytes) = time_index_bytes {
        let Some(time_index) = TimeIndex::decode(&bytes) else {
            return Ok(fault(
                &time_index_path,
                0,
                base,
                "time index is malformed (partial entry or not increasing)".to_string(),
            ));
        };
        for (number, entry) in time_index.entries().iter().enumerate() {
            if max_timestamp.is_none_or(|max| entry.timestamp > max) {
                return Ok(fault(
                    &time_index_path,
                    (number * TIME_ENTRY_LEN) as u64,
                    base.plus(i64::from(entry.relative_offset)),
                    format!(
                        "time index entry {number} has timestamp {}, newer than any record in the segment",
                        entry.timestamp
                    ),
                ));
            }
        }
    }
    Ok(None)
}
