//! One segment: a file of concatenated batches named by its base offset, and
//! its two sparse indexes.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use runnel_types::Offset;
use runnel_wire::batch::{BATCH_HEADER_LEN, BatchHeader};

use crate::LogError;
use crate::checkpoint::sync_parent;
use crate::index::{
    OFFSET_ENTRY_LEN, OffsetEntry, OffsetIndex, TIME_ENTRY_LEN, TimeEntry, TimeIndex,
};
use crate::scan::{Fault, FaultKind, Offsets, Scanner};

pub const LOG_SUFFIX: &str = "log";
pub const INDEX_SUFFIX: &str = "index";
pub const TIME_INDEX_SUFFIX: &str = "timeindex";

/// Most offsets one segment may cover: relative offsets in the index are
/// 32-bit, and a segment rolls well before they could wrap.
pub const MAX_SEGMENT_SPAN: i64 = i32::MAX as i64;

/// A check of each batch a scan finds, beyond framing and CRC.
pub type BatchCheck<'a> = &'a mut dyn FnMut(&BatchHeader) -> Result<(), FaultKind>;

/// `<dir>/<base offset, 20 digits>.<suffix>`.
pub fn segment_path(dir: &Path, base: Offset, suffix: &str) -> PathBuf {
    dir.join(format!("{:020}.{suffix}", base.0))
}

/// The base offset a segment file name encodes, if it is one of ours.
pub fn parse_segment_name(name: &str) -> Option<(Offset, &str)> {
    let (stem, suffix) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    Some((Offset(stem.parse().ok()?), suffix))
}

#[derive(Debug)]
pub struct Segment {
    pub base: Offset,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Bytes of sound batches in the file.
    pub size: u64,
    /// Offset after the last batch; `base` when empty.
    pub next_offset: Offset,
    /// Largest record timestamp in the segment.
    pub max_timestamp: Option<i64>,
    /// Max timestamp of the first batch: the segment's age for rolling.
    pub first_batch_timestamp: Option<i64>,
    /// Relative base offset of the batch holding `max_timestamp`.
    max_timestamp_offset: u32,
    index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index_entry: u64,
    index_interval_bytes: u64,
}

impl Segment {
    /// Creates a new, empty segment file. Fails if one already exists.
    pub fn create(
        dir: &Path,
        base: Offset,
        index_interval_bytes: u64,
    ) -> Result<Segment, LogError> {
        let path = segment_path(dir, base, LOG_SUFFIX);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(LogError::io("creating segment", &path))?;
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            remove_if_exists(&segment_path(dir, base, suffix))?;
        }
        Ok(Segment::empty(base, path, file, 0, index_interval_bytes))
    }

    /// Opens a segment and scans all of it, stopping at the first fault or
    /// the first batch `check` refuses. Returns the segment holding only the
    /// sound prefix (the file itself is not changed) and the fault, if any.
    pub fn open_scanning(
        dir: &Path,
        base: Offset,
        index_interval_bytes: u64,
        max_batch_bytes: usize,
        check: BatchCheck<'_>,
    ) -> Result<(Segment, Option<Fault>), LogError> {
        let mut segment = Segment::open_file(dir, base, index_interval_bytes)?;
        let fault = segment.scan(max_batch_bytes, check)?;
        Ok((segment, fault))
    }

    /// Opens a sealed segment that ends at `next_offset`, trusting its
    /// indexes if they pass their checks and rebuilding them otherwise.
    /// Returns a fault if a rebuild found a corrupt batch.
    pub fn open_sealed(
        dir: &Path,
        base: Offset,
        next_offset: Offset,
        index_interval_bytes: u64,
        max_batch_bytes: usize,
    ) -> Result<(Segment, SealedOpen), LogError> {
        let trusted = Segment::open_trusted(
            dir,
            base,
            next_offset,
            index_interval_bytes,
            max_batch_bytes,
        )?;
        if let Some(segment) = trusted {
            let opened = SealedOpen {
                rebuilt_indexes: false,
                fault: None,
            };
            return Ok((segment, opened));
        }
        Segment::open_file(dir, base, index_interval_bytes)?
            .rebuild_from_scan(next_offset, max_batch_bytes)
    }

    /// Opens a segment from its index files without scanning it, if they
    /// pass every check: well-formed; the last time entry names a batch with
    /// that timestamp (retention trusts it as the segment's newest record);
    /// and the batches after the last index entry end exactly at the end of
    /// the file, the last one just before `next_offset` (a crash in a
    /// truncation or an append could leave the file shorter or longer).
    /// `None` if any check fails.
    pub fn open_trusted(
        dir: &Path,
        base: Offset,
        next_offset: Offset,
        index_interval_bytes: u64,
        max_batch_bytes: usize,
    ) -> Result<Option<Segment>, LogError> {
        let mut segment = Segment::open_file(dir, base, index_interval_bytes)?;
        segment.next_offset = next_offset;
        if segment.size == 0 {
            return Ok((next_offset == base).then_some(segment));
        }
        let index = read_index_file(
            &segment_path(dir, base, INDEX_SUFFIX),
            segment.size,
            OFFSET_ENTRY_LEN,
        )?;
        let time_index = read_index_file(
            &segment_path(dir, base, TIME_INDEX_SUFFIX),
            segment.size,
            TIME_ENTRY_LEN,
        )?;
        let (IndexFile::Bytes(index), IndexFile::Bytes(time_index)) = (index, time_index) else {
            return Ok(None);
        };
        let (Some(index), Some(time_index)) = (
            OffsetIndex::decode(&index, segment.size),
            TimeIndex::decode(&time_index),
        ) else {
            return Ok(None);
        };
        let Some(last_entry) = time_index.entries().last().copied() else {
            return Ok(None);
        };
        if index.is_empty() {
            return Ok(None);
        }
        segment.max_timestamp = Some(last_entry.timestamp);
        segment.max_timestamp_offset = last_entry.relative_offset;
        segment.index = index;
        segment.time_index = time_index;
        if !segment.time_entry_is_sound(last_entry, max_batch_bytes)
            || !segment.ends_at(next_offset)
        {
            return Ok(None);
        }
        let Ok(first) = segment.read_header_at(0) else {
            return Ok(None);
        };
        segment.first_batch_timestamp = Some(first.max_timestamp);
        Ok(Some(segment))
    }

    /// Whether the batches from the last index entry on end exactly at the
    /// end of the file, with `next_offset` as the offset after the last.
    fn ends_at(&self, next_offset: Offset) -> bool {
        let mut position = self
            .index
            .entries()
            .last()
            .map_or(0, |entry| u64::from(entry.position));
        let mut end = None;
        while position < self.size {
            let Ok(header) = self.read_header_at(position) else {
                return false;
            };
            position += header.total_len() as u64;
            end = Some(header.next_offset());
        }
        position == self.size && end == Some(next_offset)
    }

    /// Rebuilds the indexes of a sealed segment whose index files cannot be
    /// trusted. On a corrupt batch the segment keeps its full extent, so
    /// reads reach the batch and report it instead of skipping it.
    fn rebuild_from_scan(
        mut self,
        next_offset: Offset,
        max_batch_bytes: usize,
    ) -> Result<(Segment, SealedOpen), LogError> {
        let file_len = self.size;
        let fault = self.rebuild_indexes(max_batch_bytes)?;
        match fault {
            None => self.write_indexes(true)?,
            Some(_) => {
                self.size = file_len;
                self.next_offset = next_offset;
            }
        }
        let opened = SealedOpen {
            rebuilt_indexes: true,
            fault,
        };
        Ok((self, opened))
    }

    fn open_file(dir: &Path, base: Offset, index_interval_bytes: u64) -> Result<Segment, LogError> {
        let path = segment_path(dir, base, LOG_SUFFIX);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(LogError::io("opening segment", &path))?;
        let size = file
            .metadata()
            .map_err(LogError::io("reading size of segment", &path))?
            .len();
        Ok(Segment::empty(base, path, file, size, index_interval_bytes))
    }

    /// A segment whose state is not known yet: scanning or loading its
    /// indexes fills it in.
    fn empty(
        base: Offset,
        path: PathBuf,
        file: File,
        size: u64,
        index_interval_bytes: u64,
    ) -> Segment {
        Segment {
            base,
            path,
            file: Arc::new(file),
            size,
            next_offset: base,
            max_timestamp: None,
            first_batch_timestamp: None,
            max_timestamp_offset: 0,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index_entry: 0,
            index_interval_bytes,
        }
    }

    /// Rebuilds both indexes by scanning the whole file. On a fault, the
    /// segment describes the sound prefix before it.
    pub fn rebuild_indexes(&mut self, max_batch_bytes: usize) -> Result<Option<Fault>, LogError> {
        self.scan(max_batch_bytes, &mut |_| Ok(()))
    }

    /// Rebuilds the in-memory state from the file, batch by batch, stopping
    /// at the first fault or the first batch `check` refuses.
    fn scan(
        &mut self,
        max_batch_bytes: usize,
        check: BatchCheck<'_>,
    ) -> Result<Option<Fault>, LogError> {
        let file_len = self
            .file
            .metadata()
            .map_err(LogError::io("reading size of segment", &self.path))?
            .len();
        self.index = OffsetIndex::default();
        self.time_index = TimeIndex::default();
        self.bytes_since_index_entry = 0;
        self.max_timestamp = None;
        self.max_timestamp_offset = 0;
        self.first_batch_timestamp = None;
        self.size = 0;
        self.next_offset = self.base;
        let file = Arc::clone(&self.file);
        let mut scanner = Scanner::new(
            &file,
            file_len,
            0,
            self.base,
            max_batch_bytes,
            Offsets::Contiguous,
        );
        let fault = loop {
            match scanner.next_batch() {
                Ok(Some((position, header))) => {
                    let span = header.last_offset().0 - self.base.0;
                    let within_span = if span > MAX_SEGMENT_SPAN {
                        Err(FaultKind::SegmentSpan {
                            last_offset: header.last_offset(),
                            base: self.base,
                        })
                    } else {
                        Ok(())
                    };
                    if let Err(kind) = within_span.and_then(|()| check(&header)) {
                        break Some(Fault {
                            position,
                            offset: header.base_offset(),
                            kind,
                        });
                    }
                    self.track(position, &header);
                }
                Ok(None) => break None,
                Err(fault) => break Some(fault),
            }
        };
        Ok(fault)
    }

    /// Updates the in-memory state for a batch written at `position`. The
    /// caller has checked that the batch lies within [`MAX_SEGMENT_SPAN`].
    fn track(&mut self, position: u64, header: &BatchHeader) {
        let relative_offset = u32::try_from(header.base_offset - self.base.0)
            .expect("batch offsets checked against the segment span");
        if self
            .max_timestamp
            .is_none_or(|max| header.max_timestamp > max)
        {
            self.max_timestamp = Some(header.max_timestamp);
            self.max_timestamp_offset = relative_offset;
        }
        if self.index.is_empty() || self.bytes_since_index_entry >= self.index_interval_bytes {
            self.index.push(OffsetEntry {
                relative_offset,
                position: u32::try_from(position).expect("segments are at most 2 GiB"),
            });
            // The running maximum, so that every batch before an entry is
            // known to be older than it.
            if let Some(max) = self.max_timestamp {
                self.time_index.observe(max, self.max_timestamp_offset);
            }
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += header.total_len() as u64;
        self.first_batch_timestamp
            .get_or_insert(header.max_timestamp);
        self.size = position + header.total_len() as u64;
        self.next_offset = header.next_offset();
    }

    /// Appends whole, already validated batches. `headers` describe them in
    /// order. On a failed write the file is cut back to its old size.
    pub fn append(&mut self, bytes: &[u8], headers: &[BatchHeader]) -> Result<(), WriteFailure> {
        let start = self.size;
        if let Err(source) = self.file.write_all_at(bytes, start) {
            let error = LogError::Io {
                context: "appending to segment",
                path: self.path.clone(),
                source,
            };
            return match self.file.set_len(start) {
                Ok(()) => Err(WriteFailure::RolledBack(error)),
                Err(_) => Err(WriteFailure::Unrecoverable(error)),
            };
        }
        let mut position = start;
        for header in headers {
            self.track(position, header);
            position += header.total_len() as u64;
        }
        debug_assert_eq!(self.size, start + bytes.len() as u64);
        Ok(())
    }

    /// Reads the header of the batch at `position` and checks that the
    /// batch lies inside the segment.
    pub fn read_header_at(&self, position: u64) -> Result<BatchHeader, LogError> {
        let corrupt = |fault| LogError::Corrupt {
            path: self.path.clone(),
            position,
            offset: self.base,
            fault,
        };
        let available = self.size.saturating_sub(position);
        if available < BATCH_HEADER_LEN as u64 {
            return Err(corrupt(FaultKind::Truncated {
                needed: BATCH_HEADER_LEN as u64,
                available,
            }));
        }
        let mut bytes = [0u8; BATCH_HEADER_LEN];
        self.file
            .read_exact_at(&mut bytes, position)
            .map_err(LogError::io("reading batch header of", &self.path))?;
        let header =
            BatchHeader::parse(&bytes).map_err(|error| corrupt(FaultKind::BadHeader(error)))?;
        if header.total_len() as u64 > available {
            return Err(corrupt(FaultKind::Truncated {
                needed: header.total_len() as u64,
                available,
            }));
        }
        Ok(header)
    }

    /// The position and header of the batch holding `offset`, or `None` if
    /// the segment ends before it.
    pub fn locate(
        &mut self,
        offset: Offset,
        max_batch_bytes: usize,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let relative = offset
            .0
            .saturating_sub(self.base.0)
            .min(i64::from(u32::MAX)) as u32;
        let position = self.seek(relative, max_batch_bytes)?;
        self.locate_from(position, offset).map(Some)
    }

    /// Where to start scanning for `relative`: the indexed batch at or before
    /// it. The entry is checked against the batch header it names, and a
    /// wrong index is rebuilt before it is used.
    fn seek(&mut self, relative: u32, max_batch_bytes: usize) -> Result<u64, LogError> {
        let Some(entry) = self.index.floor(relative) else {
            return Ok(0);
        };
        let position = u64::from(entry.position);
        let expected = self.base.plus(i64::from(entry.relative_offset));
        let sound = position < self.size
            && self
                .read_header_at(position)
                .is_ok_and(|header| header.base_offset() == expected);
        if sound {
            return Ok(position);
        }
        self.rebuild_indexes_keeping_extent(max_batch_bytes)?;
        Ok(self
            .index
            .floor(relative)
            .map_or(0, |entry| u64::from(entry.position)))
    }

    fn locate_from(
        &self,
        mut position: u64,
        offset: Offset,
    ) -> Result<(u64, BatchHeader), LogError> {
        loop {
            let header = self.read_header_at(position)?;
            if header.last_offset() >= offset || position + header.total_len() as u64 >= self.size {
                return Ok((position, header));
            }
            position += header.total_len() as u64;
        }
    }

    /// Whether a time index entry names a batch with exactly that max
    /// timestamp, as every entry we write does.
    fn time_entry_is_sound(&mut self, entry: TimeEntry, max_batch_bytes: usize) -> bool {
        let offset = self.base.plus(i64::from(entry.relative_offset));
        matches!(
            self.locate(offset, max_batch_bytes),
            Ok(Some((_, header))) if header.base_offset() == offset && header.max_timestamp == entry.timestamp
        )
    }

    /// Rebuilds the indexes after finding one wrong, without changing how
    /// much of the file the segment covers.
    fn rebuild_indexes_keeping_extent(&mut self, max_batch_bytes: usize) -> Result<(), LogError> {
        let (size, next_offset) = (self.size, self.next_offset);
        let fault = self.rebuild_indexes(max_batch_bytes)?;
        if let Some(fault) = fault
            && fault.position < size
        {
            self.size = size;
            self.next_offset = next_offset;
            return Err(LogError::Corrupt {
                path: self.path.clone(),
                position: fault.position,
                offset: fault.offset,
                fault: fault.kind,
            });
        }
        self.size = size;
        self.next_offset = next_offset;
        self.write_indexes(true)
    }

    /// The first batch whose max timestamp is at or after `timestamp`.
    pub fn locate_timestamp(
        &mut self,
        timestamp: i64,
        max_batch_bytes: usize,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        if self.max_timestamp.is_none_or(|max| max < timestamp) {
            return Ok(None);
        }
        let mut entry = self.time_index.last_below(timestamp);
        if let Some(found) = entry
            && !self.time_entry_is_sound(found, max_batch_bytes)
        {
            self.rebuild_indexes_keeping_extent(max_batch_bytes)?;
            entry = self.time_index.last_below(timestamp);
        }
        let mut position = match entry {
            Some(entry) => self.seek(entry.relative_offset, max_batch_bytes)?,
            None => 0,
        };
        while position < self.size {
            let header = self.read_header_at(position)?;
            if header.max_timestamp >= timestamp {
                return Ok(Some((position, header)));
            }
            position += header.total_len() as u64;
        }
        Ok(None)
    }

    /// Cuts the segment so that it ends before `offset`, at a batch boundary:
    /// a batch holding `offset` is removed whole.
    pub fn truncate_to(&mut self, offset: Offset, max_batch_bytes: usize) -> Result<(), LogError> {
        let Some((position, _)) = self.locate(offset, max_batch_bytes)? else {
            return Ok(());
        };
        self.file
            .set_len(position)
            .map_err(LogError::io("truncating segment", &self.path))?;
        let fault = self.rebuild_indexes(max_batch_bytes)?;
        debug_assert!(fault.is_none(), "a prefix of a sound segment is sound");
        Ok(())
    }

    /// Writes both index files atomically (the time index gets a final entry
    /// with the segment's max timestamp, which retention relies on).
    pub fn write_indexes(&mut self, sync: bool) -> Result<(), LogError> {
        if let Some(max) = self.max_timestamp {
            self.time_index.observe(max, self.max_timestamp_offset);
        }
        let dir = self
            .path
            .parent()
            .expect("segments live in a directory")
            .to_path_buf();
        write_atomically(
            &segment_path(&dir, self.base, INDEX_SUFFIX),
            &self.index.encode(),
            sync,
        )?;
        write_atomically(
            &segment_path(&dir, self.base, TIME_INDEX_SUFFIX),
            &self.time_index.encode(),
            sync,
        )
    }

    pub fn sync(&self) -> Result<(), LogError> {
        self.file
            .sync_data()
            .map_err(LogError::io("syncing segment", &self.path))
    }

    /// Removes the segment's files, the log file last so that a crash midway
    /// leaves a segment whose indexes get rebuilt, never an orphan index.
    pub fn delete(self) -> Result<(), LogError> {
        delete_files(&self.path)
    }
}

/// What opening a sealed segment found.
#[derive(Debug)]
pub struct SealedOpen {
    pub rebuilt_indexes: bool,
    /// A corrupt batch found while rebuilding the indexes.
    pub fault: Option<Fault>,
}

/// Removes the files of the segment whose log file is `log_path`, the log
/// file last.
pub fn delete_files(log_path: &Path) -> Result<(), LogError> {
    remove_index_files(log_path)?;
    remove_if_exists(log_path)
}

/// Removes the index files of the segment whose log file is `log_path`, so
/// the next open rebuilds them.
pub fn remove_index_files(log_path: &Path) -> Result<(), LogError> {
    for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        remove_if_exists(&log_path.with_extension(suffix))?;
    }
    Ok(())
}

/// Outcome of a failed append.
#[derive(Debug)]
pub enum WriteFailure {
    /// The file was restored to its size before the append.
    RolledBack(LogError),
    /// The file could not be restored; the log must not take more writes.
    Unrecoverable(LogError),
}

/// An index file as found on disk.
#[derive(Debug)]
pub enum IndexFile {
    Missing,
    /// Longer than any index of its segment can be: damaged, and not read.
    TooLarge {
        len: u64,
        limit: u64,
    },
    Bytes(Vec<u8>),
}

/// Reads an index file of a segment of `segment_len` bytes. An index holds
/// at most one entry per batch (plus the time index's final entry), so a
/// longer file is damaged and is not read into memory.
pub fn read_index_file(
    path: &Path,
    segment_len: u64,
    entry_len: usize,
) -> Result<IndexFile, LogError> {
    let limit = (segment_len / BATCH_HEADER_LEN as u64 + 2) * entry_len as u64;
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(IndexFile::Missing);
        }
        Err(error) => {
            return Err(LogError::Io {
                context: "opening",
                path: path.to_path_buf(),
                source: error,
            });
        }
    };
    let len = file
        .metadata()
        .map_err(LogError::io("reading size of", path))?
        .len();
    if len > limit {
        return Ok(IndexFile::TooLarge { len, limit });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    (&file)
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(LogError::io("reading", path))?;
    Ok(IndexFile::Bytes(bytes))
}

pub fn remove_if_exists(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(LogError::Io {
            context: "removing",
            path: path.to_path_buf(),
            source: error,
        }),
    }
}

fn write_atomically(path: &Path, bytes: &[u8], sync: bool) -> Result<(), LogError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let temporary = path.with_file_name(name);
    let mut file = File::create(&temporary).map_err(LogError::io("creating", &temporary))?;
    file.write_all(bytes)
        .map_err(LogError::io("writing", &temporary))?;
    if sync {
        file.sync_data()
            .map_err(LogError::io("syncing", &temporary))?;
    }
    fs::rename(&temporary, path).map_err(LogError::io("renaming into", path))?;
    if sync {
        sync_parent(path)?;
    }
    Ok(())
}
