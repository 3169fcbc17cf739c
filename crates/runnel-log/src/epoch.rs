//! The leader-epoch cache: for each leader epoch, the first offset written
//! in it. Replication uses it to find where a follower's log diverged from
//! the leader's (Kafka's KIP-101/279).

use runnel_types::{LeaderEpoch, Offset};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    /// `(epoch, start offset)`, both strictly increasing.
    entries: Vec<(LeaderEpoch, Offset)>,
}

impl EpochCache {
    pub fn from_entries(entries: Vec<(LeaderEpoch, Offset)>) -> Option<EpochCache> {
        let increasing = entries
            .windows(2)
            .all(|pair| pair[0].0 < pair[1].0 && pair[0].1 < pair[1].1);
        increasing.then_some(EpochCache { entries })
    }

    pub fn entries(&self) -> &[(LeaderEpoch, Offset)] {
        &self.entries
    }

    pub fn latest(&self) -> Option<(LeaderEpoch, Offset)> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `offset`. Returns whether the cache
    /// changed. An epoch lower than the latest one is ignored: batches from
    /// an older leader never start a new entry.
    pub fn assign(&mut self, epoch: LeaderEpoch, offset: Offset) -> bool {
        match self.entries.last() {
            Some(&(latest, _)) if epoch <= latest => false,
            _ => {
                self.entries.push((epoch, offset));
                true
            }
        }
    }

    /// Drops every epoch that starts at or after `log_end`, after the log was
    /// truncated there.
    pub fn truncate_from_end(&mut self, log_end: Offset) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, start)| start < log_end);
        before != self.entries.len()
    }

    /// Forgets epochs that end before `log_start`; the epoch covering
    /// `log_start` is kept, moved up to start there.
    pub fn truncate_from_start(&mut self, log_start: Offset) -> bool {
        let covering = self
            .entries
            .iter()
            .rposition(|&(_, start)| start <= log_start);
        let Some(covering) = covering else {
            return false;
        };
        let changed = covering > 0 || self.entries[0].1 != log_start;
        self.entries.drain(..covering);
        self.entries[0].1 = log_start;
        changed
    }

    /// The epoch that `offset` was written in, if the cache covers it.
    pub fn epoch_at(&self, offset: Offset) -> Option<LeaderEpoch> {
        let index = self
            .entries
            .iter()
            .rposition(|&(_, start)| start <= offset)?;
        Some(self.entries[index].0)
    }

    /// The answer a leader gives a follower asking about `epoch`: the largest
    /// epoch ≤ `epoch` that this log knows, and the offset where it ends
    /// (the start of the next epoch, or `log_end` for the latest). `None`
    /// when `epoch` is older than anything this log has.
    pub fn end_offset_for(
        &self,
        epoch: LeaderEpoch,
        log_end: Offset,
    ) -> Option<(LeaderEpoch, Offset)> {
        let index = self
            .entries
            .iter()
            .rposition(|&(known, _)| known <= epoch)?;
        let end = self
            .entries
            .get(index + 1)
            .map_or(log_end, |&(_, next_start)| next_start);
        Some((self.entries[index].0, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        EpochCache::from_entries(
            entries
                .iter()
                .map(|&(epoch, offset)| (LeaderEpoch(epoch), Offset(offset)))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn end_offsets() {
        let epochs = cache(&[(1, 0), (3, 10), (4, 25)]);
        let end = |epoch| epochs.end_offset_for(LeaderEpoch(epoch), Offset(40));
        assert_eq!(end(0), None);
        assert_eq!(end(1), Some((LeaderEpoch(1), Offset(10))));
        assert_eq!(end(2), Some((LeaderEpoch(1), Offset(10))));
        assert_eq!(end(3), Some((LeaderEpoch(3), Offset(25))));
        assert_eq!(end(9), Some((LeaderEpoch(4), Offset(40))));
    }

    #[test]
    fn assign_and_truncate() {
        let mut epochs = cache(&[(1, 0), (3, 10)]);
        assert!(!epochs.assign(LeaderEpoch(2), Offset(12)));
        assert!(epochs.assign(LeaderEpoch(5), Offset(20)));
        assert!(epochs.truncate_from_end(Offset(20)));
        assert_eq!(epochs, cache(&[(1, 0), (3, 10)]));
        assert!(epochs.truncate_from_start(Offset(12)));
        assert_eq!(epochs, cache(&[(3, 12)]));
        assert!(
            EpochCache::from_entries(vec![
                (LeaderEpoch(2), Offset(5)),
                (LeaderEpoch(1), Offset(9))
            ])
            .is_none()
        );
    }
}
