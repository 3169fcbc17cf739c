//! The partition log: an ordered list of segments, the offsets that bound
//! it, its leader-epoch cache, and the durability machinery (group commit,
//! recovery point).
//!
//! Locking: `state` guards the segments and offsets; `sync` guards the
//! group-commit bookkeeping. Code that holds `state` may take `sync`, never
//! the reverse, and no thread holds `sync` while it fsyncs.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use runnel_types::{LeaderEpoch, Offset};
use runnel_wire::batch::{self, BatchHeader};

use crate::checkpoint;
use crate::epoch::EpochCache;
use crate::scan::{Fault, FaultKind, Offsets, Scanner};
use crate::segment::{self, LOG_SUFFIX, MAX_SEGMENT_SPAN, Segment, WriteFailure};
use crate::{FlushPolicy, LogConfig, LogError};

const RECOVERY_POINT_FILE: &str = "recovery-point.checkpoint";
pub(crate) const LOG_START_FILE: &str = "log-start-offset.checkpoint";
const EPOCHS_FILE: &str = "leader-epochs.checkpoint";
const HIGH_WATERMARK_FILE: &str = "high-watermark.checkpoint";

/// Largest batch a scan of our own files accepts. Deliberately not the
/// configured `max_batch_bytes`: lowering that must not turn batches that
/// were accepted before into faults. A length must still fit in the file
/// before anything is allocated for it.
const SCAN_BATCH_LIMIT: usize = 1 << 31;

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: Offset,
    pub last_offset: Offset,
    /// The log end offset after the append.
    pub log_end: Offset,
    pub max_timestamp: i64,
    pub batch_count: u32,
}

/// Whole batches of one segment file, located for sending without copying
/// (`sendfile`). [`Log::read_verified`] reads and checks them instead.
#[derive(Debug, Clone)]
pub struct FileSlice {
    pub file: Arc<File>,
    pub path: PathBuf,
    pub position: u64,
    pub len: u64,
    /// Base offset of the first batch in the slice.
    pub first_offset: Offset,
    /// Offset after the last batch in the slice.
    pub next_offset: Offset,
}

/// What opening a log found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    /// Segments scanned batch by batch because they lie after the recovery
    /// point.
    pub scanned_segments: usize,
    /// Where a torn or invalid tail was cut off, and why.
    pub truncated: Option<Fault>,
    pub bytes_truncated: u64,
    /// Whole segments removed because they followed the cut.
    pub deleted_segments: Vec<PathBuf>,
    /// Sealed segments whose indexes were missing or failed their checks.
    pub rebuilt_indexes: Vec<PathBuf>,
    /// Sealed segments with a corrupt batch. They are kept (they were
    /// durable once), but the log reports itself corrupt.
    pub corrupt_segments: Vec<(PathBuf, Fault)>,
    pub log_start: Offset,
    pub log_end: Offset,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
    pub log_start: Offset,
}

/// Counters for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct LogStats {
    pub batches_appended: AtomicU64,
    pub fsyncs: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// By base offset; never empty. The last one is the active segment.
    segments: BTreeMap<i64, Segment>,
    log_start: Offset,
    recovery_point: Offset,
    epochs: EpochCache,
    last_flush_ms: Option<i64>,
    /// Set when a write or fsync failed in a way that leaves the files in an
    /// unknown state; the log refuses writes until reopened.
    failed: bool,
    /// The first corruption found in a sealed segment.
    corruption: Option<(PathBuf, Fault)>,
}

impl State {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    fn log_end(&self) -> Offset {
        self.active().next_offset
    }

    fn size_bytes(&self) -> u64 {
        self.segments.values().map(|segment| segment.size).sum()
    }
}

#[derive(Debug)]
struct SyncState {
    /// Every offset below this is on stable storage.
    durable: Offset,
    syncing: bool,
    failed: bool,
    /// Bumped by every truncation: an fsync that started before one may
    /// not cover what the log holds after it.
    generation: u64,
    /// Appenders that entered `append` and have not finished writing yet.
    writers: usize,
    /// Bytes appended since the log opened, and how many of them the last
    /// completed fsync covered: their difference is what a sync would
    /// write back.
    written_bytes: u64,
    covered_bytes: u64,
}

#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    state: Mutex<State>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    stats: LogStats,
}

impl Log {
    /// Opens the log in `dir`, creating it if needed, and recovers from an
    /// unclean stop: scans every segment after the recovery point, cuts a
    /// torn or invalid tail at its first bad byte, rebuilds indexes.
    pub fn open(dir: &Path, config: LogConfig) -> Result<(Log, RecoveryReport), LogError> {
        config.validate()?;
        fs::create_dir_all(dir).map_err(LogError::io("creating log directory", dir))?;
        let bases = list_segments(dir)?;
        let mut report = RecoveryReport {
            segments: bases.len(),
            ..RecoveryReport::default()
        };

        let checkpointed_recovery_point = read_single(dir, RECOVERY_POINT_FILE)?;
        let recovery_point = checkpointed_recovery_point.unwrap_or(Offset::ZERO);
        // Below this offset, data was fsynced: a fault there is damage to
        // report and keep, never a torn tail to cut. Without a recovery
        // point, only the last segment may have a torn tail.
        let durable_until = match checkpointed_recovery_point {
            Some(point) => point,
            None => bases.last().copied().unwrap_or(Offset::ZERO),
        };
        let checkpointed_start = read_single(dir, LOG_START_FILE)?;

        let checkpointed_epochs = read_epochs(dir)?;
        let epochs_checkpointed = checkpointed_epochs.is_some();
        let mut epochs = checkpointed_epochs.unwrap_or_default();
        let mut segments = BTreeMap::new();
        let recovery_base = bases
            .iter()
            .rev()
            .find(|base| **base <= recovery_point)
            .copied()
            .unwrap_or(Offset::ZERO);
        let mut cut = false;
        for (index, &base) in bases.iter().enumerate() {
            let path = segment::segment_path(dir, base, LOG_SUFFIX);
            if cut {
                report.deleted_segments.push(path);
                continue;
            }
            let next_base = bases.get(index + 1).copied();
            let previous_end = segments
                .values()
                .next_back()
                .map(|segment: &Segment| segment.next_offset);
            // Our offsets are contiguous across segments too: a segment that
            // does not start where the previous one ends follows a hole.
            if let Some(previous_end) = previous_end
                && base != previous_end
            {
                let fault = Fault {
                    position: 0,
                    offset: previous_end,
                    kind: FaultKind::OffsetGap {
                        base_offset: base,
                        expected: previous_end,
                    },
                };
                if previous_end < durable_until {
                    report.corrupt_segments.push((path.clone(), fault));
                } else {
                    report.truncated = Some(fault);
                    cut = true;
                    report.deleted_segments.push(path);
                    continue;
                }
            }
            if base < recovery_base {
                let next_offset =
                    next_base.expect("a segment before the recovery base has a successor");
                let (segment, opened) = Segment::open_sealed(
                    dir,
                    base,
                    next_offset,
                    config.index_interval_bytes,
                    SCAN_BATCH_LIMIT,
                )?;
                if opened.rebuilt_indexes {
                    report.rebuilt_indexes.push(path.clone());
                }
                if let Some(fault) = opened.fault {
                    report.corrupt_segments.push((path, fault));
                }
                if !epochs_checkpointed {
                    learn_epochs(&segment, &mut epochs);
                }
                segments.insert(base.0, segment);
                continue;
            }
            // After a clean close the recovery point is the end of the last
            // segment, and its indexes were written: checked, they spare a
            // scan of the whole segment.
            if next_base.is_none()
                && checkpointed_recovery_point.is_some()
                && let Some(segment) = Segment::open_trusted(
                    dir,
                    base,
                    recovery_point,
                    config.index_interval_bytes,
                    SCAN_BATCH_LIMIT,
                )?
            {
                if !epochs_checkpointed {
                    learn_epochs(&segment, &mut epochs);
                }
                segments.insert(base.0, segment);
                continue;
            }
            report.scanned_segments += 1;
            // Epochs never decrease along the log, and a batch may carry an
            // epoch the checkpoint missed (a crash between the append and
            // the checkpoint write): it is learned here.
            let mut check_epoch = |header: &BatchHeader| {
                let epoch = header.leader_epoch();
                match epochs.epoch_at(header.base_offset()) {
                    Some(known) if epoch < known => Err(FaultKind::EpochMismatch {
                        found: epoch,
                        expected: known,
                    }),
                    _ => {
                        epochs.assign(epoch, header.base_offset());
                        Ok(())
                    }
                }
            };
            let (mut segment, fault) = Segment::open_scanning(
                dir,
                base,
                config.index_interval_bytes,
                SCAN_BATCH_LIMIT,
                &mut check_epoch,
            )?;
            let file_len = segment
                .file
                .metadata()
                .map_err(LogError::io("reading size of segment", &path))?
                .len();
            match fault {
                None => segment.write_indexes(true)?,
                Some(fault) if matches!(fault.kind, FaultKind::Io(_)) => {
                    return Err(LogError::Io {
                        context: "reading during recovery",
                        path,
                        source: std::io::Error::other(fault.kind.to_string()),
                    });
                }
                Some(fault) if fault.offset < durable_until => match next_base {
                    // Damaged durable data is kept whole: reads that reach
                    // it report it, and the replica is repaired from a peer.
                    Some(next_base) => {
                        segment.size = file_len;
                        segment.next_offset = next_base;
                        segment::remove_index_files(&path)?;
                        report.corrupt_segments.push((path, fault));
                    }
                    // Where the log ends cannot be known past the damage.
                    None => {
                        return Err(LogError::Corrupt {
                            path,
                            position: fault.position,
                            offset: fault.offset,
                            fault: fault.kind,
                        });
                    }
                },
                Some(fault) => {
                    segment
                        .file
                        .set_len(fault.position)
                        .map_err(LogError::io("truncating torn segment", &path))?;
                    report.bytes_truncated += file_len - fault.position;
                    report.truncated = Some(fault);
                    cut = true;
                    segment.write_indexes(true)?;
                }
            }
            // Synced under every policy: the recovery point moves past it
            // below, and it will not be scanned again.
            segment.sync()?;
            segments.insert(base.0, segment);
        }
        if segments.is_empty() {
            let base = checkpointed_start.unwrap_or(Offset::ZERO);
            segments.insert(
                base.0,
                Segment::create(dir, base, config.index_interval_bytes)?,
            );
            checkpoint::sync_dir(dir)?;
        }
        // Removing segments after a cut is done last, highest first, so a
        // crash midway still leaves a prefix of the log.
        for path in report.deleted_segments.iter().rev() {
            segment::delete_files(path)?;
        }

        let first_base = Offset(*segments.keys().next().expect("not empty"));
        let mut state = State {
            segments,
            log_start: first_base,
            recovery_point,
            epochs,
            last_flush_ms: None,
            failed: false,
            corruption: report.corrupt_segments.first().cloned(),
        };
        let log_end = state.log_end();
        state.log_start = checkpointed_start
            .map_or(first_base, |start| start.max(first_base))
            .min(log_end);

        state.epochs.truncate_from_end(log_end);
        state.epochs.truncate_from_start(state.log_start);

        // What recovery kept is now forced to disk, so the recovery point can
        // move to the end and the next open scans only what comes after.
        state.recovery_point = log_end;
        write_single(dir, RECOVERY_POINT_FILE, log_end)?;
        write_single(dir, LOG_START_FILE, state.log_start)?;
        write_epochs(dir, &state.epochs)?;
        report.log_start = state.log_start;
        report.log_end = log_end;

        let log = Log {
            dir: dir.to_path_buf(),
            config,
            state: Mutex::new(state),
            sync: Mutex::new(SyncState {
                durable: log_end,
                syncing: false,
                failed: false,
                generation: 0,
                writers: 0,
                written_bytes: 0,
                covered_bytes: 0,
            }),
            synced: Condvar::new(),
            stats: LogStats::default(),
        };
        Ok((log, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    pub fn log_start_offset(&self) -> Offset {
        self.lock().log_start
    }

    pub fn log_end_offset(&self) -> Offset {
        self.lock().log_end()
    }

    /// Whether a failed write or fsync left the log refusing writes until
    /// it is opened again.
    pub fn is_failed(&self) -> bool {
        self.lock_sync().failed
    }

    /// Every offset below this is on stable storage.
    pub fn durable_offset(&self) -> Offset {
        self.lock_sync().durable
    }

    pub fn size_bytes(&self) -> u64 {
        self.lock().size_bytes()
    }

    pub fn segment_count(&self) -> usize {
        self.lock().segments.len()
    }

    /// The first corruption found in a sealed segment, if any. A corrupt
    /// replica must not lead until repaired.
    pub fn corruption(&self) -> Option<(PathBuf, Fault)> {
        self.lock().corruption.clone()
    }

    pub fn epochs(&self) -> Vec<(LeaderEpoch, Offset)> {
        self.lock().epochs.entries().to_vec()
    }

    /// See [`EpochCache::end_offset_for`].
    pub fn epoch_end_offset(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        let state = self.lock();
        state.epochs.end_offset_for(epoch, state.log_end())
    }

    /// Appends batches from a producer: each gets the next offsets and
    /// `epoch` written into its header. Returns once the flush policy is
    /// satisfied.
    pub fn append_as_leader(
        &self,
        batches: &mut [u8],
        epoch: LeaderEpoch,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let headers = self.validate(batches, true)?;
        self.append(Incoming::Producer { batches, epoch }, headers, now_ms, true)
    }

    /// Like [`Log::append_as_leader`], but returns once the batches are
    /// written, without waiting for the `always` policy's fsync; call
    /// [`Log::sync_to`] for it later. For producers that asked for no
    /// durability before their answer.
    pub fn append_as_leader_unsynced(
        &self,
        batches: &mut [u8],
        epoch: LeaderEpoch,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let headers = self.validate(batches, true)?;
        self.append(
            Incoming::Producer { batches, epoch },
            headers,
            now_ms,
            false,
        )
    }

    /// Blocks until every offset below `offset` (at most the log end) is
    /// on stable storage, sharing fsyncs with concurrent appenders.
    pub fn sync_to(&self, offset: Offset) -> Result<(), LogError> {
        let (target, generation) = {
            let state = self.lock();
            if state.failed {
                return Err(LogError::Failed(self.dir.clone()));
            }
            (offset.min(state.log_end()), self.lock_sync().generation)
        };
        self.wait_durable(target, generation)
    }

    /// Appends batches copied from the leader, offsets and epochs unchanged.
    /// The first must start at the log end, each next one where the previous
    /// ended, and epochs may not decrease.
    pub fn append_replicated(&self, batches: &[u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        let headers = self.validate(batches, false)?;
        self.append(Incoming::Replica(batches), headers, now_ms, true)
    }

    /// Checks framing, size and CRC of each batch in `bytes`.
    fn validate(&self, bytes: &[u8], from_producer: bool) -> Result<Vec<BatchHeader>, LogError> {
        let mut headers = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let invalid = |source| LogError::InvalidBatch {
                position: at,
                source,
            };
            let rest = &bytes[at..];
            let header = BatchHeader::parse(rest).map_err(invalid)?;
            let length = header.total_len();
            if length > self.config.max_batch_bytes {
                return Err(LogError::BatchTooLarge {
                    size: length,
                    limit: self.config.max_batch_bytes,
                });
            }
            let batch_bytes = rest.get(..length).ok_or_else(|| {
                invalid(runnel_wire::WireError::Truncated {
                    needed: length,
                    available: rest.len(),
                })
            })?;
            batch::verify_crc(batch_bytes).map_err(invalid)?;
            let counts_sound = if from_producer {
                header.record_count >= 1 && header.last_offset_delta == header.record_count - 1
            } else {
                header.record_count >= 0 && header.last_offset_delta >= 0
            };
            if !counts_sound {
                return Err(LogError::InconsistentBatch {
                    record_count: header.record_count,
                    last_offset_delta: header.last_offset_delta,
                });
            }
            headers.push(header);
            at += length;
        }
        if headers.is_empty() {
            return Err(LogError::InvalidBatch {
                position: 0,
                source: runnel_wire::WireError::Truncated {
                    needed: batch::BATCH_HEADER_LEN,
                    available: 0,
                },
            });
        }
        if bytes.len() as u64 > self.config.segment_max_bytes {
            return Err(LogError::BatchTooLarge {
                size: bytes.len(),
                limit: self.config.segment_max_bytes as usize,
            });
        }
        Ok(headers)
    }

    fn append(
        &self,
        incoming: Incoming<'_>,
        mut headers: Vec<BatchHeader>,
        now_ms: i64,
        wait_for_flush: bool,
    ) -> Result<AppendInfo, LogError> {
        let mut writer = Writer::enter(self);
        let (info, generation) = {
            let mut state = self.lock();
            if state.failed {
                return Err(LogError::Failed(self.dir.clone()));
            }
            let batches: &[u8] = match incoming {
                Incoming::Producer { batches, epoch } => {
                    assign_offsets(&state, batches, &mut headers, epoch)?;
                    batches
                }
                Incoming::Replica(batches) => {
                    check_replicated(&state, &headers)?;
                    batches
                }
            };
            let first = headers.first().expect("validated: at least one batch");
            let last = headers.last().expect("validated: at least one batch");
            let offsets = last.next_offset().0 - first.base_offset().0;
            if offsets > MAX_SEGMENT_SPAN {
                return Err(LogError::OffsetSpan { offsets });
            }
            let max_timestamp = headers
                .iter()
                .map(|header| header.max_timestamp)
                .max()
                .unwrap_or(first.max_timestamp);
            if self.should_roll(state.active(), batches.len() as u64, last, max_timestamp) {
                let rolled = self.roll_locked(&mut state);
                self.fail_on_error(&mut state, rolled)?;
            }
            match state.active_mut().append(batches, &headers) {
                Ok(()) => {}
                Err(WriteFailure::RolledBack(error)) => return Err(error),
                Err(WriteFailure::Unrecoverable(error)) => {
                    return self.fail_on_error(&mut state, Err(error));
                }
            }
            let mut epochs_changed = false;
            for header in &headers {
                epochs_changed |= state
                    .epochs
                    .assign(header.leader_epoch(), header.base_offset());
            }
            if epochs_changed {
                // The batch is written but its epoch not persisted: failing
                // the log keeps a retry from duplicating it.
                let written = write_epochs(&self.dir, &state.epochs);
                self.fail_on_error(&mut state, written)?;
            }
            self.stats
                .batches_appended
                .fetch_add(headers.len() as u64, Ordering::Relaxed);
            let info = AppendInfo {
                first_offset: first.base_offset(),
                last_offset: last.last_offset(),
                log_end: state.log_end(),
                max_timestamp,
                batch_count: headers.len() as u32,
            };
            (info, writer.written(batches.len() as u64))
        };
        match self.config.flush {
            FlushPolicy::Always if !wait_for_flush => {}
            FlushPolicy::Always => self.wait_durable(info.log_end, generation)?,
            FlushPolicy::Interval { .. } => self.tick(now_ms)?,
            FlushPolicy::Os => {}
        }
        Ok(info)
    }

    fn should_roll(
        &self,
        active: &Segment,
        incoming_bytes: u64,
        last: &BatchHeader,
        max_timestamp: i64,
    ) -> bool {
        if active.size == 0 {
            return false;
        }
        let too_big = active.size + incoming_bytes > self.config.segment_max_bytes;
        let too_old = match (self.config.segment_max_age_ms, active.first_batch_timestamp) {
            (Some(max_age), Some(first)) => max_timestamp.saturating_sub(first) >= max_age as i64,
            _ => false,
        };
        let offsets_overflow = last.last_offset().0 - active.base.0 > MAX_SEGMENT_SPAN;
        too_big || too_old || offsets_overflow
    }

    /// Seals the active segment and starts a new one at the log end. Under
    /// any policy but `os`, the sealed segment is synced and the recovery
    /// point moves past it.
    fn roll_locked(&self, state: &mut State) -> Result<(), LogError> {
        let sync = self.config.flush != FlushPolicy::Os;
        let log_end = state.log_end();
        let active = state.active_mut();
        if sync {
            active.sync()?;
            self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        active.write_indexes(sync)?;
        let segment = Segment::create(&self.dir, log_end, self.config.index_interval_bytes)?;
        state.segments.insert(log_end.0, segment);
        if sync {
            checkpoint::sync_dir(&self.dir)?;
            state.recovery_point = log_end;
            write_single(&self.dir, RECOVERY_POINT_FILE, log_end)?;
            let mut sync_state = self.lock_sync();
            sync_state.durable = sync_state.durable.max(log_end);
        }
        Ok(())
    }

    /// Marks the log failed if `result` is an error. For errors after which
    /// the files' state is unknown: a failed fsync (the kernel may have
    /// dropped the dirty pages, so a later fsync could succeed without
    /// them) or a half-done multi-step change. The log refuses writes until
    /// it is reopened and recovered.
    fn fail_on_error<T>(
        &self,
        state: &mut State,
        result: Result<T, LogError>,
    ) -> Result<T, LogError> {
        if result.is_err() {
            state.failed = true;
            self.lock_sync().failed = true;
            self.synced.notify_all();
        }
        result
    }

    /// Blocks until every offset below `target` is on stable storage. The
    /// first waiter runs the fsync; those who arrive meanwhile wait for it
    /// and, if it did not cover them, one of them runs the next (group
    /// commit). `generation` is the truncation generation the caller's
    /// data was written in: a truncation since means the data may be gone.
    fn wait_durable(&self, target: Offset, generation: u64) -> Result<(), LogError> {
        let mut sync = self.lock_sync();
        loop {
            if sync.failed {
                return Err(LogError::Failed(self.dir.clone()));
            }
            if sync.generation != generation {
                return Err(LogError::TruncatedBeforeDurable { offset: target });
            }
            if sync.durable >= target {
                return Ok(());
            }
            if sync.syncing {
                sync = self.synced.wait(sync).expect("sync lock is never poisoned");
                continue;
            }
            sync.syncing = true;
            // Group commit: appenders that are writing right now will want
            // this fsync too, so it waits for them, unless enough is already
            // unsynced to make the fsync worth it on its own. Writers never
            // wait for the sync lock while holding it up, so this ends.
            while sync.writers > 0
                && sync.written_bytes - sync.covered_bytes < GROUP_COMMIT_WAIT_BYTES
                && !sync.failed
            {
                sync = self.synced.wait(sync).expect("sync lock is never poisoned");
            }
            drop(sync);
            let result = self.sync_active();
            sync = self.lock_sync();
            sync.syncing = false;
            match &result {
                // What was synced is what the log holds only if no
                // truncation happened while the fsync ran.
                Ok((covered, synced_generation, covered_bytes))
                    if *synced_generation == sync.generation =>
                {
                    sync.durable = sync.durable.max(*covered);
                    sync.covered_bytes = sync.covered_bytes.max(*covered_bytes);
                }
                Ok(_) => {}
                Err(_) => sync.failed = true,
            }
            self.synced.notify_all();
            if let Err(error) = result {
                drop(sync);
                self.lock().failed = true;
                return Err(error);
            }
        }
    }

    /// fsyncs the active segment; returns the log end it covered, the
    /// truncation generation it saw and the bytes written until then.
    fn sync_active(&self) -> Result<(Offset, u64, u64), LogError> {
        let (file, path, log_end, generation, written_bytes) = {
            let state = self.lock();
            let active = state.active();
            let sync = self.lock_sync();
            (
                Arc::clone(&active.file),
                active.path.clone(),
                state.log_end(),
                sync.generation,
                sync.written_bytes,
            )
        };
        file.sync_data()
            .map_err(LogError::io("syncing segment", &path))?;
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok((log_end, generation, written_bytes))
    }

    /// For the `interval` policy: syncs if the interval has passed since the
    /// last sync and something is not yet durable. The owner calls this on a
    /// timer; appends call it too.
    pub fn tick(&self, now_ms: i64) -> Result<(), LogError> {
        let FlushPolicy::Interval { interval_ms } = self.config.flush else {
            return Ok(());
        };
        let (log_end, generation) = {
            let mut state = self.lock();
            let last = *state.last_flush_ms.get_or_insert(now_ms);
            let due = now_ms.saturating_sub(last) >= interval_ms as i64;
            let log_end = state.log_end();
            let sync = self.lock_sync();
            if !due || sync.durable >= log_end {
                return Ok(());
            }
            // Claimed now, so that appenders ticking while this sync runs
            // do not find the interval due and sync again.
            state.last_flush_ms = Some(now_ms);
            (log_end, sync.generation)
        };
        self.wait_durable(log_end, generation)
    }

    /// Forces everything appended so far to stable storage and moves the
    /// recovery point to the log end.
    pub fn flush(&self) -> Result<(), LogError> {
        let mut state = self.lock();
        if state.failed {
            return Err(LogError::Failed(self.dir.clone()));
        }
        let flushed = self.flush_locked(&mut state);
        let log_end = self.fail_on_error(&mut state, flushed)?;
        let mut sync = self.lock_sync();
        sync.durable = sync.durable.max(log_end);
        self.synced.notify_all();
        Ok(())
    }

    /// Syncs every segment past the recovery point, under the state lock so
    /// that no roll slips an unsynced segment in meanwhile. Under `os`,
    /// rolls do not sync, so sealed segments (and their indexes, which
    /// retention trusts once the recovery point has moved over them) are
    /// synced here too.
    fn flush_locked(&self, state: &mut State) -> Result<Offset, LogError> {
        let recovery_point = state.recovery_point;
        let active_base = state.active().base;
        for segment in state.segments.values_mut() {
            if segment.next_offset > recovery_point && segment.base != active_base {
                segment.sync()?;
                segment.write_indexes(true)?;
                self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        state.active().sync()?;
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        let log_end = state.log_end();
        if state.recovery_point < log_end {
            state.active_mut().write_indexes(true)?;
            state.recovery_point = log_end;
            write_single(&self.dir, RECOVERY_POINT_FILE, log_end)?;
        }
        Ok(log_end)
    }

    /// Seals the active segment now and starts a new one (if the active one
    /// holds anything).
    pub fn roll(&self) -> Result<(), LogError> {
        let mut state = self.lock();
        if state.failed {
            return Err(LogError::Failed(self.dir.clone()));
        }
        if state.active().size == 0 {
            return Ok(());
        }
        let rolled = self.roll_locked(&mut state);
        self.fail_on_error(&mut state, rolled)
    }

    /// Flushes and closes the log; the next open scans nothing.
    pub fn close(self) -> Result<(), LogError> {
        self.flush()
    }

    /// Whole batches starting with the one that holds `offset`, up to
    /// `max_bytes` (but always at least one batch). `None` when `offset` is
    /// the log end: nothing to read yet.
    pub fn read(&self, offset: Offset, max_bytes: u64) -> Result<Option<FileSlice>, LogError> {
        self.read_below(offset, Offset(i64::MAX), max_bytes)
    }

    /// Like [`Log::read`], but only batches that end at or below `limit`
    /// (a high watermark or the durable offset): `None` when the batch
    /// holding `offset` ends past it.
    pub fn read_below(
        &self,
        offset: Offset,
        limit: Offset,
        max_bytes: u64,
    ) -> Result<Option<FileSlice>, LogError> {
        let mut state = self.lock();
        let (log_start, log_end) = (state.log_start, state.log_end());
        if offset < log_start || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start,
                log_end,
            });
        }
        let start_base = state
            .segments
            .range(..=offset.0)
            .next_back()
            .map(|(base, _)| *base)
            .expect("offset >= log start >= first segment base");
        // An offset in a gap between segments is served from the next one.
        for (_, segment) in state.segments.range_mut(start_base..) {
            let Some((position, first)) = segment.locate(offset, SCAN_BATCH_LIMIT)? else {
                continue;
            };
            if first.next_offset() > limit {
                return Ok(None);
            }
            let mut end = position + first.total_len() as u64;
            let mut next_offset = first.next_offset();
            while end < segment.size {
                let header = segment.read_header_at(end)?;
                if end + header.total_len() as u64 - position > max_bytes
                    || header.next_offset() > limit
                {
                    break;
                }
                end += header.total_len() as u64;
                next_offset = header.next_offset();
            }
            return Ok(Some(FileSlice {
                file: Arc::clone(&segment.file),
                path: segment.path.clone(),
                position,
                len: end - position,
                first_offset: first.base_offset(),
                next_offset,
            }));
        }
        Ok(None)
    }

    /// Reads like [`Log::read`] and verifies every batch: CRC, that the
    /// first batch holds `offset`, that base offsets follow each other, and
    /// that each leader epoch agrees with the epoch cache (the two fields
    /// outside the CRC). A corrupt batch marks the log corrupt and is
    /// reported, never returned.
    pub fn read_verified(
        &self,
        offset: Offset,
        max_bytes: u64,
    ) -> Result<Option<(FileSlice, Vec<u8>)>, LogError> {
        let checked = self.read(offset, max_bytes).and_then(|slice| match slice {
            None => Ok(None),
            Some(slice) => {
                let mut bytes = vec![0; slice.len as usize];
                slice
                    .file
                    .read_exact_at(&mut bytes, slice.position)
                    .map_err(LogError::io("reading", &slice.path))?;
                self.verify_batches(&slice, offset, &bytes)?;
                Ok(Some((slice, bytes)))
            }
        });
        if let Err(LogError::Corrupt {
            path,
            position,
            offset,
            fault,
        }) = &checked
        {
            self.lock().corruption.get_or_insert_with(|| {
                let fault = Fault {
                    position: *position,
                    offset: *offset,
                    kind: fault.clone(),
                };
                (path.clone(), fault)
            });
        }
        checked
    }

    /// Checks every batch read for `offset`, in one pass: framing and CRC,
    /// then the two fields the CRC does not cover (the first batch holds
    /// `offset` and base offsets follow each other; leader epochs agree
    /// with the epoch cache).
    fn verify_batches(
        &self,
        slice: &FileSlice,
        offset: Offset,
        bytes: &[u8],
    ) -> Result<(), LogError> {
        let state = self.lock();
        let mut at = 0usize;
        let mut expected_base = None::<Offset>;
        while at < bytes.len() {
            let corrupt = |fault| LogError::Corrupt {
                path: slice.path.clone(),
                position: slice.position + at as u64,
                offset: expected_base.unwrap_or(offset),
                fault,
            };
            let header = BatchHeader::parse(&bytes[at..])
                .map_err(|error| corrupt(FaultKind::BadHeader(error)))?;
            let batch_bytes = bytes.get(at..at + header.total_len()).ok_or_else(|| {
                corrupt(FaultKind::Truncated {
                    needed: header.total_len() as u64,
                    available: (bytes.len() - at) as u64,
                })
            })?;
            batch::verify_crc(batch_bytes).map_err(|error| corrupt(FaultKind::Crc(error)))?;
            let base = header.base_offset();
            let sound_position = match expected_base {
                None => base <= offset && header.last_offset() >= offset,
                Some(expected) => base == expected,
            };
            if !sound_position {
                return Err(corrupt(FaultKind::OffsetNotIncreasing {
                    base_offset: base,
                    expected_at_least: expected_base.unwrap_or(offset),
                }));
            }
            if let Some(expected) = state.epochs.epoch_at(base)
                && expected != header.leader_epoch()
            {
                return Err(corrupt(FaultKind::EpochMismatch {
                    found: header.leader_epoch(),
                    expected,
                }));
            }
            expected_base = Some(header.next_offset());
            at += header.total_len();
        }
        Ok(())
    }

    /// Passes the header of every batch from the one holding `from` (the
    /// log start, if `from` is below it) to the log end to `visit`, in
    /// offset order: for rebuilding what an owner keeps beside the log
    /// (the SPU's idempotent-producer table). Reads only headers, one
    /// `pread` each, and holds the state lock throughout, so appends wait:
    /// meant for opening a replica, not for the serving path.
    pub fn visit_batch_headers(
        &self,
        from: Offset,
        mut visit: impl FnMut(&BatchHeader),
    ) -> Result<(), LogError> {
        let mut state = self.lock();
        let from = from.max(state.log_start);
        if from >= state.log_end() {
            return Ok(());
        }
        let start_base = state
            .segments
            .range(..=from.0)
            .next_back()
            .map(|(base, _)| *base)
            .expect("offset >= log start >= first segment base");
        for (_, segment) in state.segments.range_mut(start_base..) {
            // Only the first segment is entered mid-way; later ones are read
            // from their start, and an empty one (rolled just before a
            // crash) holds nothing to locate.
            let mut position = if from <= segment.base {
                0
            } else {
                match segment.locate(from, SCAN_BATCH_LIMIT)? {
                    Some((position, _)) => position,
                    None => continue,
                }
            };
            while position < segment.size {
                let header = segment.read_header_at(position)?;
                visit(&header);
                position += header.total_len() as u64;
            }
        }
        Ok(())
    }

    /// Base offset of the first batch holding a record with a timestamp at
    /// or after `timestamp`, or `None` if there is none.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<Offset>, LogError> {
        let mut state = self.lock();
        let log_start = state.log_start;
        for segment in state.segments.values_mut() {
            if let Some((_, header)) = segment.locate_timestamp(timestamp, SCAN_BATCH_LIMIT)? {
                return Ok(Some(header.base_offset().max(log_start)));
            }
        }
        Ok(None)
    }

    /// Removes every batch at or after `offset` (a batch holding `offset` is
    /// removed whole). Returns the new log end.
    pub fn truncate_to(&self, offset: Offset) -> Result<Offset, LogError> {
        let mut state = self.lock();
        if state.failed {
            return Err(LogError::Failed(self.dir.clone()));
        }
        if offset >= state.log_end() {
            return Ok(state.log_end());
        }
        let start_over = offset <= state.log_start;
        let truncated = self.truncate_locked(&mut state, offset, start_over);
        self.fail_on_error(&mut state, truncated)
    }

    /// The steps of a truncation, ordered so that a crash between any two
    /// leaves a log that recovery turns into a prefix of the old one.
    fn truncate_locked(
        &self,
        state: &mut State,
        offset: Offset,
        start_over: bool,
    ) -> Result<Offset, LogError> {
        // First the recovery point, so that a crash midway has the next open
        // rescan (and cut at the hole) instead of trusting a shortened
        // segment as sealed.
        if state.recovery_point > offset {
            state.recovery_point = offset;
            write_single(&self.dir, RECOVERY_POINT_FILE, offset)?;
        }
        {
            // Waiters for data at or past `offset` must not be acknowledged,
            // and an fsync already running may not cover what follows.
            let mut sync = self.lock_sync();
            sync.generation += 1;
            sync.durable = sync.durable.min(offset);
            self.synced.notify_all();
        }
        // Segments go highest first, so a crash midway leaves a prefix; the
        // directory is synced before the kept segment is shortened.
        let doomed: Vec<i64> = match start_over {
            true => state.segments.keys().rev().copied().collect(),
            false => state
                .segments
                .range(offset.0..)
                .map(|(base, _)| *base)
                .rev()
                .collect(),
        };
        for base in doomed {
            state
                .segments
                .remove(&base)
                .expect("key from the map")
                .delete()?;
        }
        checkpoint::sync_dir(&self.dir)?;
        if start_over {
            let fresh = Segment::create(&self.dir, offset, self.config.index_interval_bytes)?;
            state.segments.insert(offset.0, fresh);
            checkpoint::sync_dir(&self.dir)?;
        } else {
            state.active_mut().truncate_to(offset, SCAN_BATCH_LIMIT)?;
            state.active().sync()?;
        }
        let log_end = state.log_end();
        state.active_mut().write_indexes(true)?;
        let log_start = match start_over {
            true => offset,
            false => state.log_start.min(log_end),
        };
        if log_start != state.log_start || start_over {
            state.log_start = log_start;
            write_single(&self.dir, LOG_START_FILE, log_start)?;
        }
        // Damage cut off with the suffix is gone with it.
        if state
            .corruption
            .as_ref()
            .is_some_and(|(_, fault)| fault.offset >= log_end)
        {
            state.corruption = None;
        }
        // A log started over holds no batch, so no epoch either.
        let epochs_changed = match start_over {
            true => !std::mem::take(&mut state.epochs).entries().is_empty(),
            false => state.epochs.truncate_from_end(log_end),
        };
        if epochs_changed {
            write_epochs(&self.dir, &state.epochs)?;
        }
        state.recovery_point = log_end;
        write_single(&self.dir, RECOVERY_POINT_FILE, log_end)?;
        let mut sync = self.lock_sync();
        sync.durable = match start_over {
            true => log_end,
            false => sync.durable.min(log_end),
        };
        Ok(log_end)
    }

    /// Removes every batch and starts the log over, empty, at `offset`:
    /// for a follower whose leader no longer holds what it lacks.
    pub fn reset_to(&self, offset: Offset) -> Result<Offset, LogError> {
        let mut state = self.lock();
        if state.failed {
            return Err(LogError::Failed(self.dir.clone()));
        }
        let reset = self.truncate_locked(&mut state, offset, true);
        self.fail_on_error(&mut state, reset)
    }

    /// Moves the log start up to `offset` (for replication and delete-records
    /// requests); whole segments below it are deleted.
    pub fn advance_log_start(&self, offset: Offset) -> Result<Offset, LogError> {
        let mut state = self.lock();
        let target = offset.min(state.log_end());
        if target <= state.log_start {
            return Ok(state.log_start);
        }
        // The new start is persisted before anything is deleted, so a crash
        // cannot make records below it readable again.
        write_single(&self.dir, LOG_START_FILE, target)?;
        let previous_start = std::mem::replace(&mut state.log_start, target);
        self.delete_segments_below(&mut state, previous_start, |segment| {
            segment.next_offset <= target
        })?;
        Ok(state.log_start)
    }

    /// Deletes sealed segments past the retention time (by their newest
    /// record's timestamp, not the file's mtime) or beyond the retention
    /// size, oldest first. An active segment that is entirely expired is
    /// sealed first so it can go too.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionOutcome, LogError> {
        let mut state = self.lock();
        let expired =
            |segment: &Segment| match (self.config.retention_time_ms, segment.max_timestamp) {
                (Some(retention), Some(max)) => max < now_ms.saturating_sub(retention as i64),
                _ => false,
            };
        if expired(state.active()) && state.active().size > 0 {
            self.roll_locked(&mut state)?;
        }
        let mut remaining = state.size_bytes();
        let limit = self.config.retention_bytes;
        let before = state.segments.len();
        let previous_start = state.log_start;
        let deleted_bytes = self.delete_segments_below(&mut state, previous_start, |segment| {
            let over_size = limit.is_some_and(|limit| remaining > limit);
            let doomed = expired(segment) || over_size;
            if doomed {
                remaining -= segment.size;
            }
            doomed
        })?;
        Ok(RetentionOutcome {
            deleted_segments: before - state.segments.len(),
            deleted_bytes,
            log_start: state.log_start,
        })
    }

    /// Deletes sealed segments from the oldest while `doomed` says so, then
    /// persists the log start if it moved past `previous_start`. Returns the
    /// bytes deleted.
    fn delete_segments_below(
        &self,
        state: &mut MutexGuard<'_, State>,
        previous_start: Offset,
        mut doomed: impl FnMut(&Segment) -> bool,
    ) -> Result<u64, LogError> {
        let mut deleted_bytes = 0;
        while state.segments.len() > 1 {
            let (&base, oldest) = state.segments.iter().next().expect("more than one segment");
            if !doomed(oldest) {
                break;
            }
            let segment = state.segments.remove(&base).expect("key from the map");
            deleted_bytes += segment.size;
            segment.delete()?;
        }
        let first_base = Offset(*state.segments.keys().next().expect("never empty"));
        let log_start = state.log_start.max(first_base);
        state.log_start = log_start;
        if log_start != previous_start {
            write_single(&self.dir, LOG_START_FILE, log_start)?;
            if state.epochs.truncate_from_start(log_start) {
                write_epochs(&self.dir, &state.epochs)?;
            }
        }
        Ok(deleted_bytes)
    }

    /// Persists the high watermark the owner computed (replication).
    pub fn write_high_watermark(&self, high_watermark: Offset) -> Result<(), LogError> {
        write_single(&self.dir, HIGH_WATERMARK_FILE, high_watermark)
    }

    pub fn read_high_watermark(&self) -> Result<Option<Offset>, LogError> {
        read_single(&self.dir, HIGH_WATERMARK_FILE)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("log state lock is never poisoned")
    }

    fn lock_sync(&self) -> MutexGuard<'_, SyncState> {
        self.sync.lock().expect("sync lock is never poisoned")
    }
}

/// While a syncer waits for appenders still writing, it stops waiting once
/// this much is unsynced: a larger fsync gains little from more company.
const GROUP_COMMIT_WAIT_BYTES: u64 = 4 << 20;

/// An appender between entering `append` and finishing its write, counted
/// so that a syncer can wait for it (group commit). Leaving early, on an
/// error, uncounts it too.
struct Writer<'a> {
    log: &'a Log,
    writing: bool,
}

impl<'a> Writer<'a> {
    fn enter(log: &'a Log) -> Writer<'a> {
        log.lock_sync().writers += 1;
        Writer { log, writing: true }
    }

    /// Records the write of `bytes`; returns the truncation generation it
    /// happened in.
    fn written(&mut self, bytes: u64) -> u64 {
        self.writing = false;
        let mut sync = self.log.lock_sync();
        sync.writers -= 1;
        sync.written_bytes += bytes;
        self.log.synced.notify_all();
        sync.generation
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        if self.writing {
            self.log.lock_sync().writers -= 1;
            self.log.synced.notify_all();
        }
    }
}

/// Batches to append: a producer's, which the leader stamps with offsets and
/// its epoch in place, or a replica's, stored unchanged.
enum Incoming<'a> {
    Producer {
        batches: &'a mut [u8],
        epoch: LeaderEpoch,
    },
    Replica(&'a [u8]),
}

/// Writes the next offsets and `epoch` into a producer's batches.
fn assign_offsets(
    state: &State,
    batches: &mut [u8],
    headers: &mut [BatchHeader],
    epoch: LeaderEpoch,
) -> Result<(), LogError> {
    if let Some((latest, _)) = state.epochs.latest()
        && epoch < latest
    {
        return Err(LogError::EpochRegression {
            found: epoch,
            latest,
        });
    }
    let mut next = state.log_end();
    let mut at = 0;
    for header in headers {
        let bytes = &mut batches[at..at + header.total_len()];
        batch::set_base_offset(bytes, next);
        batch::set_leader_epoch(bytes, epoch);
        header.base_offset = next.0;
        header.partition_leader_epoch = epoch.0;
        next = header.next_offset();
        at += header.total_len();
    }
    Ok(())
}

/// Checks that replicated batches continue the log exactly.
fn check_replicated(state: &State, headers: &[BatchHeader]) -> Result<(), LogError> {
    let mut expected = state.log_end();
    let mut latest_epoch = state.epochs.latest().map(|(epoch, _)| epoch);
    for header in headers {
        if header.base_offset() != expected {
            return Err(LogError::NonContiguousBatch {
                base_offset: header.base_offset(),
                log_end: expected,
            });
        }
        if let Some(latest) = latest_epoch
            && header.leader_epoch() < latest
        {
            return Err(LogError::EpochRegression {
                found: header.leader_epoch(),
                latest,
            });
        }
        expected = header.next_offset();
        latest_epoch = Some(header.leader_epoch());
    }
    Ok(())
}

/// Base offsets of the segment files in `dir`, ascending. Removes leftovers
/// of interrupted writes (`*.tmp`) and indexes whose segment is gone.
fn list_segments(dir: &Path) -> Result<Vec<Offset>, LogError> {
    let mut bases = Vec::new();
    let mut orphans = Vec::new();
    let entries = fs::read_dir(dir).map_err(LogError::io("listing", dir))?;
    for entry in entries {
        let entry = entry.map_err(LogError::io("listing", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            orphans.push(entry.path());
            continue;
        }
        match segment::parse_segment_name(name) {
            Some((base, LOG_SUFFIX)) => bases.push(base),
            Some((base, _)) => orphans.push(segment::segment_path(dir, base, LOG_SUFFIX)),
            None => {}
        }
    }
    for orphan in orphans {
        if orphan
            .extension()
            .is_some_and(|extension| extension == "tmp")
        {
            segment::remove_if_exists(&orphan)?;
        } else if !orphan.exists() {
            let base = segment::parse_segment_name(
                orphan
                    .file_name()
                    .and_then(|name| name.to_str())
                    .unwrap_or_default(),
            )
            .map(|(base, _)| base)
            .expect("built from a parsed name");
            for suffix in [segment::INDEX_SUFFIX, segment::TIME_INDEX_SUFFIX] {
                segment::remove_if_exists(&segment::segment_path(dir, base, suffix))?;
            }
        }
    }
    bases.sort();
    Ok(bases)
}

/// Writes a checkpoint of one offset; the kind is the file name's stem.
fn write_single(dir: &Path, file: &str, offset: Offset) -> Result<(), LogError> {
    let kind = file.trim_end_matches(".checkpoint");
    checkpoint::write(&dir.join(file), kind, &[(offset.0, 0)])
}

fn read_single(dir: &Path, file: &str) -> Result<Option<Offset>, LogError> {
    let kind = file.trim_end_matches(".checkpoint");
    match checkpoint::read(&dir.join(file), kind) {
        Ok(Some(entries)) if entries.len() == 1 => Ok(Some(Offset(entries[0].0))),
        Ok(None) => Ok(None),
        // A damaged checkpoint costs a longer recovery, never data: the
        // recovery point falls back to 0 (scan all) and the log start to the
        // first segment.
        Ok(Some(_)) | Err(LogError::CorruptCheckpoint { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

pub(crate) fn read_epochs(dir: &Path) -> Result<Option<EpochCache>, LogError> {
    match checkpoint::read(&dir.join(EPOCHS_FILE), "leader-epochs") {
        Ok(Some(entries)) => Ok(EpochCache::from_entries(
            entries
                .into_iter()
                .map(|(epoch, offset)| (LeaderEpoch(epoch as i32), Offset(offset)))
                .collect(),
        )),
        Ok(None) | Err(LogError::CorruptCheckpoint { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

fn write_epochs(dir: &Path, epochs: &EpochCache) -> Result<(), LogError> {
    let entries: Vec<(i64, i64)> = epochs
        .entries()
        .iter()
        .map(|(epoch, offset)| (i64::from(epoch.0), offset.0))
        .collect();
    checkpoint::write(&dir.join(EPOCHS_FILE), "leader-epochs", &entries)
}

/// Learns the epochs stamped in a sealed segment's batches, when the epoch
/// checkpoint is missing or damaged. A batch with a lower epoch than the
/// cache is left for reads to report as corrupt.
fn learn_epochs(segment: &Segment, epochs: &mut EpochCache) {
    let mut scanner = Scanner::new(
        &segment.file,
        segment.size,
        0,
        segment.base,
        SCAN_BATCH_LIMIT,
        Offsets::Contiguous,
    );
    while let Ok(Some((_, header))) = scanner.next_batch() {
        epochs.assign(header.leader_epoch(), header.base_offset());
    }
}
