//! Sequential, validating reader of a segment file. Recovery, index rebuilds
//! and the operator tools (`verify-log`, `dump-log`) all walk segments with
//! it, so they agree on what a sound segment is.

use std::fs::File;
use std::os::unix::fs::FileExt;

use runnel_types::{LeaderEpoch, Offset};
use runnel_wire::WireError;
use runnel_wire::batch::{self, BATCH_HEADER_LEN, BatchHeader};

const READ_CHUNK: usize = 1 << 20;

/// Why a scan stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// The file ends inside a batch header or body: a torn write.
    Truncated { needed: u64, available: u64 },
    /// The header cannot be parsed (bad magic or length).
    BadHeader(WireError),
    /// The length field names more bytes than a batch may have.
    TooLarge { length: usize, limit: usize },
    /// The CRC does not match the batch contents.
    Crc(WireError),
    /// The base offset does not follow the previous batch.
    OffsetNotIncreasing {
        base_offset: Offset,
        expected_at_least: Offset,
    },
    /// The base offset leaves a gap after the previous batch (or the segment
    /// base) in a log that has none: Runnel never compacts, so its offsets
    /// are contiguous.
    OffsetGap {
        base_offset: Offset,
        expected: Offset,
    },
    /// The batch's offsets lie further past the segment base than a segment
    /// may cover.
    SegmentSpan { last_offset: Offset, base: Offset },
    /// The header's counts are inconsistent.
    BadCounts {
        record_count: i32,
        last_offset_delta: i32,
    },
    /// The batch's leader epoch disagrees with the leader-epoch cache.
    EpochMismatch {
        found: LeaderEpoch,
        expected: LeaderEpoch,
    },
    /// Reading the file failed: a fault of the medium, not of the data, so
    /// recovery must stop rather than truncate.
    Io(String),
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultKind::Truncated { needed, available } => {
                write!(
                    f,
                    "file ends inside a batch ({needed} bytes needed, {available} left)"
                )
            }
            FaultKind::BadHeader(error) => write!(f, "bad batch header: {error}"),
            FaultKind::TooLarge { length, limit } => {
                write!(
                    f,
                    "batch length {length} exceeds the limit of {limit} bytes"
                )
            }
            FaultKind::Crc(error) => write!(f, "{error}"),
            FaultKind::EpochMismatch { found, expected } => {
                write!(
                    f,
                    "batch has leader epoch {found} but the epoch cache says {expected}"
                )
            }
            FaultKind::Io(error) => write!(f, "read failed: {error}"),
            FaultKind::OffsetNotIncreasing {
                base_offset,
                expected_at_least,
            } => write!(
                f,
                "base offset {base_offset} does not follow the previous batch (expected at least {expected_at_least})"
            ),
            FaultKind::OffsetGap {
                base_offset,
                expected,
            } => write!(
                f,
                "base offset {base_offset} leaves a gap: expected {expected}"
            ),
            FaultKind::SegmentSpan { last_offset, base } => write!(
                f,
                "offset {last_offset} is more than 2^31 past the segment base {base}"
            ),
            FaultKind::BadCounts {
                record_count,
                last_offset_delta,
            } => write!(
                f,
                "record count {record_count} and last offset delta {last_offset_delta} are inconsistent"
            ),
        }
    }
}

/// The first invalid byte of a segment and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub position: u64,
    /// The offset the scan expected next.
    pub offset: Offset,
    pub kind: FaultKind,
}

/// Which offset sequences a scan accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offsets {
    /// Each batch starts exactly where the previous one ended: Runnel's own
    /// logs.
    Contiguous,
    /// Gaps allowed, as in segments of compacted Kafka topics.
    Increasing,
}

/// Walks the batches of one segment file from a starting position, checking
/// framing, CRC and offset order, reading in large chunks.
#[derive(Debug)]
pub struct Scanner<'a> {
    file: &'a File,
    file_len: u64,
    max_batch_bytes: usize,
    offsets: Offsets,
    /// Position in the file of `buffer[0]`.
    buffer_position: u64,
    buffer: Vec<u8>,
    /// Position in the file of the next batch.
    position: u64,
    next_offset: Offset,
    /// The batch returned by the last call to `next`, within `buffer`.
    current: std::ops::Range<usize>,
}

impl<'a> Scanner<'a> {
    /// Scans from `position`, expecting the first batch there to start at
    /// `next_offset` (or later, with [`Offsets::Increasing`]).
    pub fn new(
        file: &'a File,
        file_len: u64,
        position: u64,
        next_offset: Offset,
        max_batch_bytes: usize,
        offsets: Offsets,
    ) -> Scanner<'a> {
        Scanner {
            file,
            file_len,
            max_batch_bytes,
            offsets,
            buffer_position: position,
            buffer: Vec::new(),
            position,
            next_offset,
            current: 0..0,
        }
    }

    /// Position of the next batch: after a fault, where the sound part of the
    /// file ends.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Offset expected of the next batch.
    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }

    /// The bytes of the batch the last successful `next` returned.
    pub fn batch_bytes(&self) -> &[u8] {
        &self.buffer[self.current.clone()]
    }

    /// The next sound batch with its file position, `Ok(None)` at a clean end
    /// of file, or the first fault.
    pub fn next_batch(&mut self) -> Result<Option<(u64, BatchHeader)>, Fault> {
        let remaining = self.file_len - self.position;
        if remaining == 0 {
            return Ok(None);
        }
        let fault = |scanner: &Scanner, kind| Fault {
            position: scanner.position,
            offset: scanner.next_offset,
            kind,
        };
        if remaining < BATCH_HEADER_LEN as u64 {
            return Err(fault(
                self,
                FaultKind::Truncated {
                    needed: BATCH_HEADER_LEN as u64,
                    available: remaining,
                },
            ));
        }
        self.fill(BATCH_HEADER_LEN)
            .map_err(|kind| fault(self, kind))?;
        let start = (self.position - self.buffer_position) as usize;
        let header = BatchHeader::parse(&self.buffer[start..])
            .map_err(|error| fault(self, FaultKind::BadHeader(error)))?;
        let length = header.total_len();
        if length > self.max_batch_bytes {
            return Err(fault(
                self,
                FaultKind::TooLarge {
                    length,
                    limit: self.max_batch_bytes,
                },
            ));
        }
        if length as u64 > remaining {
            return Err(fault(
                self,
                FaultKind::Truncated {
                    needed: length as u64,
                    available: remaining,
                },
            ));
        }
        self.fill(length).map_err(|kind| fault(self, kind))?;
        let start = (self.position - self.buffer_position) as usize;
        let bytes = &self.buffer[start..start + length];
        batch::verify_crc(bytes).map_err(|error| fault(self, FaultKind::Crc(error)))?;
        if header.base_offset() < self.next_offset {
            return Err(fault(
                self,
                FaultKind::OffsetNotIncreasing {
                    base_offset: header.base_offset(),
                    expected_at_least: self.next_offset,
                },
            ));
        }
        if self.offsets == Offsets::Contiguous && header.base_offset() != self.next_offset {
            return Err(fault(
                self,
                FaultKind::OffsetGap {
                    base_offset: header.base_offset(),
                    expected: self.next_offset,
                },
            ));
        }
        if header.last_offset_delta < 0 || header.record_count < 0 {
            return Err(fault(
                self,
                FaultKind::BadCounts {
                    record_count: header.record_count,
                    last_offset_delta: header.last_offset_delta,
                },
            ));
        }
        self.current = start..start + length;
        let position = self.position;
        self.position += length as u64;
        self.next_offset = header.next_offset();
        Ok(Some((position, header)))
    }

    /// Makes sure `needed` bytes from `self.position` are in the buffer.
    fn fill(&mut self, needed: usize) -> Result<(), FaultKind> {
        let start = (self.position - self.buffer_position) as usize;
        if self.buffer.len() - start >= needed {
            return Ok(());
        }
        self.buffer.drain(..start);
        self.buffer_position = self.position;
        let want = needed.max(READ_CHUNK);
        let available = (self.file_len - self.position).min(want as u64) as usize;
        let have = self.buffer.len();
        self.buffer.resize(available, 0);
        let read_at = self.position + have as u64;
        self.file
            .read_exact_at(&mut self.buffer[have..], read_at)
            .map_err(|error| FaultKind::Io(error.to_string()))
    }
}
