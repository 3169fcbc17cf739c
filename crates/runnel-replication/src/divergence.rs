//! Where a follower cuts its log before following a new leader epoch
//! (Kafka's KIP-101 and KIP-279): it compares its epoch history with the
//! leader's, one question at a time, instead of trusting a cached high
//! watermark.
//!
//! Both sides use the epoch cache of their log: `(epoch, start offset)`
//! pairs, ascending. Records written in the same epoch were written by that
//! epoch's one leader, so two logs that both hold epoch `e` agree on every
//! record below the point where the shorter of the two stops holding `e`.

use std::fmt;

use runnel_types::{LeaderEpoch, Offset};

/// The next step of the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Divergence {
    /// Ask the leader about this epoch next: one the follower holds,
    /// strictly lower than the one asked before.
    Ask(LeaderEpoch),
    /// Remove every record at or after this offset (never above the
    /// follower's end), then fetch from it. An offset at or below the log
    /// start empties the log and starts it there.
    TruncateTo(Offset),
    /// None of the follower's records can be matched against the leader's
    /// log: remove them all and start the log, empty, at this offset (the
    /// leader's log start), then fetch from it.
    ResetTo(Offset),
}

/// The leader's answer cannot be right; ask again (the leader may have
/// changed in between).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochEndError {
    /// The leader named an epoch above the one asked about.
    AnswerNewerThanAsked {
        asked: LeaderEpoch,
        answered: LeaderEpoch,
    },
}

impl fmt::Display for EpochEndError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EpochEndError::AnswerNewerThanAsked { asked, answered } => write!(
                f,
                "asked the leader where epoch {asked} ends and it answered for epoch {answered}; \
                 the answer must name an epoch at most the one asked, so ask again"
            ),
        }
    }
}

impl std::error::Error for EpochEndError {}

/// The first epoch a follower asks the leader about: its latest. `None`
/// when its log holds no epoch, so it has nothing to cut.
pub fn divergence_question(own_epochs: &[(LeaderEpoch, Offset)]) -> Option<LeaderEpoch> {
    own_epochs.last().map(|&(epoch, _)| epoch)
}

/// The leader answered `answer` to a question about `asked`: the largest
/// epoch at most `asked` that its log holds and the offset where that
/// epoch ends there, or `None` if it holds no epoch that old.
///
/// `own_epochs` is the follower's epoch cache, `(epoch, start offset)`
/// ascending; `own_end` its log end; `leader_log_start` the leader's log
/// start.
///
/// # Panics
///
/// If `own_epochs` is not strictly ascending in both epoch and offset: a
/// log's epoch cache always is.
pub fn on_epoch_end(
    own_epochs: &[(LeaderEpoch, Offset)],
    own_end: Offset,
    asked: LeaderEpoch,
    answer: Option<(LeaderEpoch, Offset)>,
    leader_log_start: Offset,
) -> Result<Divergence, EpochEndError> {
    for pair in own_epochs.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "epoch cache epochs not ascending: {own_epochs:?}"
        );
        assert!(
            pair[0].1 < pair[1].1,
            "epoch cache offsets not ascending: {own_epochs:?}"
        );
    }
    // The leader holds no epoch this old: its records are all from later
    // epochs than any the follower could still match, and what lies below
    // its log start cannot be compared at all.
    let Some((epoch, leader_end)) = answer else {
        return Ok(Divergence::ResetTo(leader_log_start));
    };
    if epoch > asked {
        return Err(EpochEndError::AnswerNewerThanAsked {
            asked,
            answered: epoch,
        });
    }
    let holds_epoch = own_epochs.iter().any(|&(own, _)| own == epoch);
    let lower = own_epochs.iter().rev().find(|&&(own, _)| own < epoch);
    if !holds_epoch && let Some(&(lower, _)) = lower {
        // The follower never held `epoch`, so its records at the leader's
        // `epoch` offsets are older ones; they can match only up to where
        // the leader's own `lower` (or older) ends. Ask about that.
        return Ok(Divergence::Ask(lower));
    }
    // Where the follower's records of epochs up to `epoch` end: the start
    // of its next epoch, which the leader does not hold (its largest epoch
    // up to the one asked is `epoch`, and anything later the follower
    // holds was found divergent in an earlier round).
    let own_epoch_end = own_epochs
        .iter()
        .find(|&&(own, _)| own > epoch)
        .map_or(own_end, |&(_, start)| start);
    Ok(Divergence::TruncateTo(
        leader_end.min(own_epoch_end).min(own_end),
    ))
}

#[cfg(test)]
mod tests;
