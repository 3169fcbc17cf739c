//! Sparse indexes of one segment, kept in memory and written beside it.
//!
//! Both are derived data: they can always be rebuilt by scanning the segment,
//! and are rebuilt whenever they are missing or fail their sanity checks.
//!
//! - `.index`: 8-byte entries `(relative offset u32, position u32)`, the base
//!   offset of a batch relative to the segment base and where the batch
//!   starts in the segment file. One entry every `index_interval_bytes`.
//! - `.timeindex`: 12-byte entries `(timestamp i64, relative offset u32)`, the
//!   largest record timestamp seen so far in the segment and the batch that
//!   first reached it. Timestamps are strictly increasing.
//!
//! All integers big-endian, like the batches.

pub const OFFSET_ENTRY_LEN: usize = 8;
pub const TIME_ENTRY_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    pub fn push(&mut self, entry: OffsetEntry) {
        if let Some(last) = self.entries.last() {
            assert!(
                entry.relative_offset > last.relative_offset,
                "index offsets increase"
            );
            assert!(entry.position > last.position, "index positions increase");
        }
        self.entries.push(entry);
    }

    /// The last entry at or below `relative_offset`.
    pub fn floor(&self, relative_offset: u32) -> Option<OffsetEntry> {
        let count = self
            .entries
            .partition_point(|entry| entry.relative_offset <= relative_offset);
        count.checked_sub(1).map(|index| self.entries[index])
    }

    pub fn entries(&self) -> &[OffsetEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_LEN);
        for entry in &self.entries {
            out.extend_from_slice(&entry.relative_offset.to_be_bytes());
            out.extend_from_slice(&entry.position.to_be_bytes());
        }
        out
    }

    /// Parses an index file and checks what can be checked without the
    /// segment: whole entries, strictly increasing, inside the segment.
    pub fn decode(bytes: &[u8], segment_len: u64) -> Option<OffsetIndex> {
        if !bytes.len().is_multiple_of(OFFSET_ENTRY_LEN) {
            return None;
        }
        let mut index = OffsetIndex::default();
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_LEN) {
            let entry = OffsetEntry {
                relative_offset: u32::from_be_bytes(chunk[0..4].try_into().ok()?),
                position: u32::from_be_bytes(chunk[4..8].try_into().ok()?),
            };
            if u64::from(entry.position) >= segment_len {
                return None;
            }
            if let Some(last) = index.entries.last()
                && (entry.relative_offset <= last.relative_offset
                    || entry.position <= last.position)
            {
                return None;
            }
            index.entries.push(entry);
        }
        Some(index)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// Adds an entry if `timestamp` is larger than every one before.
    pub fn observe(&mut self, timestamp: i64, relative_offset: u32) {
        if self
            .entries
            .last()
            .is_none_or(|last| timestamp > last.timestamp)
        {
            self.entries.push(TimeEntry {
                timestamp,
                relative_offset,
            });
        }
    }

    /// The last entry whose timestamp is below `timestamp`: the batches
    /// before it cannot hold a record at or after `timestamp`.
    pub fn last_below(&self, timestamp: i64) -> Option<TimeEntry> {
        let count = self
            .entries
            .partition_point(|entry| entry.timestamp < timestamp);
        count.checked_sub(1).map(|index| self.entries[index])
    }

    pub fn entries(&self) -> &[TimeEntry] {
        &self.entries
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_LEN);
        for entry in &self.entries {
            out.extend_from_slice(&entry.timestamp.to_be_bytes());
            out.extend_from_slice(&entry.relative_offset.to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<TimeIndex> {
        if !bytes.len().is_multiple_of(TIME_ENTRY_LEN) {
            return None;
        }
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(TIME_ENTRY_LEN) {
            let entry = TimeEntry {
                timestamp: i64::from_be_bytes(chunk[0..8].try_into().ok()?),
                relative_offset: u32::from_be_bytes(chunk[8..12].try_into().ok()?),
            };
            if let Some(last) = index.entries.last()
                && (entry.timestamp <= last.timestamp
                    || entry.relative_offset < last.relative_offset)
            {
                return None;
            }
            index.entries.push(entry);
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_and_validation() {
        let mut index = OffsetIndex::default();
        index.push(OffsetEntry {
            relative_offset: 0,
            position: 0,
        });
        index.push(OffsetEntry {
            relative_offset: 10,
            position: 4100,
        });
        index.push(OffsetEntry {
            relative_offset: 20,
            position: 8200,
        });
        assert_eq!(index.floor(15).unwrap().position, 4100);
        assert_eq!(index.floor(20).unwrap().position, 8200);
        let bytes = index.encode();
        assert_eq!(OffsetIndex::decode(&bytes, 9000), Some(index.clone()));
        assert_eq!(
            OffsetIndex::decode(&bytes, 8200),
            None,
            "position past the segment"
        );
        assert_eq!(
            OffsetIndex::decode(&bytes[..7], 9000),
            None,
            "partial entry"
        );
        let mut swapped = bytes.clone();
        swapped[8..16].copy_from_slice(&bytes[16..24]);
        assert_eq!(OffsetIndex::decode(&swapped, 9000), None, "not increasing");
    }

    #[test]
    fn time_index_lookup_and_validation() {
        let mut index = TimeIndex::default();
        index.observe(100, 0);
        index.observe(90, 3);
        index.observe(200, 5);
        assert_eq!(
            index.entries().last().map(|entry| entry.timestamp),
            Some(200)
        );
        assert_eq!(index.last_below(150).unwrap().relative_offset, 0);
        assert_eq!(index.last_below(100), None);
        assert_eq!(TimeIndex::decode(&index.encode()), Some(index.clone()));
        assert_eq!(TimeIndex::decode(&index.encode()[..11]), None);
    }
}
