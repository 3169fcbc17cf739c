//! The leader's side of one partition for one leader epoch: follower
//! positions and time in, high watermark advances and ISR proposals out.

use std::collections::BTreeMap;
use std::fmt;

use runnel_types::{LeaderEpoch, Offset, SpuId};

/// What a leader needs to know about its partition, fixed for the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    /// The SPU this leader runs on.
    pub me: SpuId,
    /// Every replica of the partition, the leader included.
    pub replicas: Vec<SpuId>,
    /// The smallest committed ISR, leader included, under which `acks=all`
    /// produces are refused: fewer copies than the topic asked for.
    pub min_in_sync: usize,
    /// How long a follower may go without being caught up to the leader's
    /// end before the leader proposes it out of the ISR.
    pub lag_time_max_ms: i64,
}

/// Names one ISR proposal of a [`Leader`], so that an answer that arrives
/// after the leader has moved on to another proposal is not taken for the
/// answer to that one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProposalId(u64);

/// What the SPU must do after feeding the leader an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Records below this offset are now on every in-sync replica: publish
    /// it to consumers and followers, checkpoint it, and answer the
    /// `acks=all` produces that [`Leader::acks_all`] now calls committed.
    AdvanceHighWatermark(Offset),
    /// Ask the SC to change the ISR from `current` (the ISR it committed)
    /// to `proposed`, with this leader's epoch. Answer with
    /// [`Leader::on_isr_committed`] and [`Leader::on_isr_refused`].
    ProposeIsr {
        proposal: ProposalId,
        current: Vec<SpuId>,
        proposed: Vec<SpuId>,
    },
}

/// Where an `acks=all` produce stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckState {
    /// Every in-sync replica holds the records and the ISR is at least
    /// `min_in_sync`: acknowledge.
    Committed,
    /// Not every in-sync replica holds the records yet.
    Waiting,
    /// The committed ISR is below `min_in_sync`: fail the produce with a
    /// retriable "not enough replicas".
    NotEnoughReplicas,
}

/// Why a follower's position was not taken. The leader's state is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionError {
    /// The follower follows an older epoch: it must take the SC's newer
    /// assignment and cut its log against this leader first.
    Fenced {
        reported: LeaderEpoch,
        current: LeaderEpoch,
    },
    /// The follower follows a newer epoch than this leader: this leader has
    /// been replaced and must wait for the SC's assignment.
    UnknownEpoch {
        reported: LeaderEpoch,
        current: LeaderEpoch,
    },
    /// The SPU is not a follower of this partition.
    NotAReplica { spu: SpuId },
    /// The follower claims records the leader does not have (or a negative
    /// end): it did not cut its log against this leader.
    Invalid {
        spu: SpuId,
        end: Offset,
        /// The end of what the leader has written.
        leader_end: Offset,
    },
}

impl fmt::Display for PositionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PositionError::Fenced { reported, current } => write!(
                f,
                "position for leader epoch {reported}, but the leader is at epoch {current}; \
                 the follower must take the newer assignment and truncate by epoch"
            ),
            PositionError::UnknownEpoch { reported, current } => write!(
                f,
                "position for leader epoch {reported}, newer than this leader's epoch {current}; \
                 this leader is stale and must wait for the SC's assignment"
            ),
            PositionError::NotAReplica { spu } => write!(
                f,
                "SPU {spu} is not a follower of this partition; check its assignment"
            ),
            PositionError::Invalid {
                spu,
                end,
                leader_end,
            } => write!(
                f,
                "SPU {spu} reports log end {end}, but the leader's end is {leader_end}; \
                 the follower must truncate by epoch against this leader before fetching"
            ),
        }
    }
}

impl std::error::Error for PositionError {}

/// What the leader knows of one follower in this epoch.
#[derive(Debug, Clone)]
struct Follower {
    /// The log end it last reported in this epoch.
    end: Option<Offset>,
    /// When it last held everything the leader had.
    last_caught_up_ms: i64,
    /// When it last reported, and the leader's end at that moment.
    last_report: Option<(i64, Offset)>,
}

/// An ISR change sent to the SC and not yet answered.
#[derive(Debug, Clone)]
struct Proposal {
    id: ProposalId,
    proposed: Vec<SpuId>,
    /// When it was last sent.
    sent_ms: i64,
}

/// How long a proposal may go unsettled before it is sent again: its
/// answer may have been lost, or the SC's later change may have crossed
/// it. The SC answers a repeat definitively either way.
pub const PROPOSAL_RESEND_MS: i64 = 5_000;

/// Leader-side state of one partition for one leader epoch. A new epoch
/// gets a new `Leader`.
#[derive(Debug, Clone)]
pub struct Leader {
    config: LeaderConfig,
    epoch: LeaderEpoch,
    /// The leader's end when it took the epoch: everything acknowledged in
    /// earlier epochs lies below it.
    epoch_start: Offset,
    local_end: Offset,
    /// The end of what the leader has written, durable or not: the most a
    /// follower can hold. At least `local_end`.
    written_end: Offset,
    high_watermark: Offset,
    /// As the SC committed it, sorted, without duplicates.
    isr: Vec<SpuId>,
    pending: Option<Proposal>,
    next_proposal: u64,
    /// Every replica but the leader.
    followers: BTreeMap<SpuId, Follower>,
}

impl Leader {
    /// Becoming leader at `epoch` with the ISR the SC committed, the
    /// leader's own committable end and the HW it knew. Read
    /// [`Leader::high_watermark`] afterwards: with no follower in the ISR
    /// it is `local_end` at once. A known HW above `local_end` (a checkpoint
    /// that outlived the unflushed tail of the log) is lowered to it.
    ///
    /// # Panics
    ///
    /// If `config.replicas` does not contain `config.me`: the SC makes only
    /// a replica leader.
    pub fn new(
        config: LeaderConfig,
        epoch: LeaderEpoch,
        isr: Vec<SpuId>,
        local_end: Offset,
        high_watermark: Offset,
        now_ms: i64,
    ) -> Leader {
        assert!(
            config.replicas.contains(&config.me),
            "SPU {} leads a partition whose replicas {:?} do not include it",
            config.me,
            config.replicas
        );
        let followers = config
            .replicas
            .iter()
            .filter(|&&spu| spu != config.me)
            .map(|&spu| {
                let follower = Follower {
                    end: None,
                    last_caught_up_ms: now_ms,
                    last_report: None,
                };
                (spu, follower)
            })
            .collect();
        let mut leader = Leader {
            config,
            epoch,
            epoch_start: local_end,
            local_end,
            written_end: local_end,
            high_watermark: high_watermark.min(local_end),
            isr: normalized(isr),
            pending: None,
            next_proposal: 0,
            followers,
        };
        leader.advance_high_watermark(&mut Vec::new());
        leader
    }

    pub fn epoch(&self) -> LeaderEpoch {
        self.epoch
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    /// The ISR as the SC committed it, sorted.
    pub fn isr(&self) -> &[SpuId] {
        &self.isr
    }

    /// The committed ISR together with every member of the proposal in
    /// flight, sorted: the replicas the HW waits for.
    pub fn maximal_isr(&self) -> Vec<SpuId> {
        normalized(self.maximal_members().collect())
    }

    /// The log end `spu` reported in this epoch, if it has.
    pub fn follower_end(&self, spu: SpuId) -> Option<Offset> {
        self.followers.get(&spu).and_then(|follower| follower.end)
    }

    /// The leader's own committable end moved: its durable end under
    /// `flush=always`, its log end otherwise. Ends reported out of order
    /// by concurrent appends are fine: a lower end than known is ignored.
    pub fn on_local_end(&mut self, local_end: Offset, now_ms: i64) -> Vec<Action> {
        // Followers at the old end were caught up until this instant; an
        // idle partition's followers do not need to report to stay in.
        self.note_caught_up(now_ms);
        self.local_end = self.local_end.max(local_end);
        self.written_end = self.written_end.max(self.local_end);
        let mut actions = Vec::new();
        self.advance_high_watermark(&mut actions);
        actions
    }

    /// The leader has written up to `written_end`, which may be ahead of
    /// its committable end (under `flush=always`, what is not fsynced yet).
    /// Followers may hold, and report, up to it.
    pub fn on_written_end(&mut self, written_end: Offset) {
        self.written_end = self.written_end.max(written_end);
    }

    /// A follower reports its log end for `epoch`. One follower's positions
    /// must arrive in the order it sent them (one stream per SPU pair): an
    /// end below an earlier one is taken as the truth, a follower that lost
    /// records, and holds the HW where it is until the follower catches up.
    pub fn on_follower_end(
        &mut self,
        spu: SpuId,
        epoch: LeaderEpoch,
        end: Offset,
        now_ms: i64,
    ) -> Result<Vec<Action>, PositionError> {
        let current = self.epoch;
        if epoch < current {
            return Err(PositionError::Fenced {
                reported: epoch,
                current,
            });
        }
        if epoch > current {
            return Err(PositionError::UnknownEpoch {
                reported: epoch,
                current,
            });
        }
        let local_end = self.local_end;
        let written_end = self.written_end.max(local_end);
        let Some(follower) = self.followers.get_mut(&spu) else {
            return Err(PositionError::NotAReplica { spu });
        };
        if end > written_end || end < Offset::ZERO {
            return Err(PositionError::Invalid {
                spu,
                end,
                leader_end: written_end,
            });
        }
        if end >= local_end {
            follower.last_caught_up_ms = follower.last_caught_up_ms.max(now_ms);
        } else if let Some((reported_ms, leader_end_then)) = follower.last_report
            && end >= leader_end_then
        {
            // Under steady produce a follower is never exactly at the end,
            // but holding what the leader had at its previous report means
            // it was caught up then (Kafka's lastFetchLeaderLogEndOffset).
            follower.last_caught_up_ms = follower.last_caught_up_ms.max(reported_ms);
        }
        follower.last_report = Some((now_ms, local_end));
        follower.end = Some(end);
        let mut actions = Vec::new();
        self.advance_high_watermark(&mut actions);
        self.reconsider_isr(now_ms, &mut actions);
        Ok(actions)
    }

    /// Time passes: ISR followers not caught up for more than
    /// `lag_time_max_ms` are proposed out.
    pub fn on_tick(&mut self, now_ms: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        self.reconsider_isr(now_ms, &mut actions);
        let isr = self.isr.clone();
        if let Some(pending) = &mut self.pending
            && now_ms - pending.sent_ms >= PROPOSAL_RESEND_MS
        {
            pending.sent_ms = now_ms;
            actions.push(Action::ProposeIsr {
                proposal: pending.id,
                current: isr,
                proposed: pending.proposed.clone(),
            });
        }
        actions
    }

    /// The SC committed `isr` for this epoch: the answer to a proposal, or
    /// a change of its own pushed in the partition's assignment. An ISR
    /// equal to the proposal in flight settles it; any other leaves it in
    /// flight (and counted) until its answer comes.
    pub fn on_isr_committed(&mut self, isr: Vec<SpuId>, now_ms: i64) -> Vec<Action> {
        let isr = normalized(isr);
        if self
            .pending
            .as_ref()
            .is_some_and(|pending| pending.proposed == isr)
        {
            self.pending = None;
        }
        self.isr = isr;
        let mut actions = Vec::new();
        self.advance_high_watermark(&mut actions);
        self.reconsider_isr(now_ms, &mut actions);
        actions
    }

    /// The SC answered that it did not commit `proposal` as proposed: it
    /// refused it, or it committed another ISR (report that first with
    /// [`Leader::on_isr_committed`]). A later tick or position may propose
    /// again. An answer for a proposal no longer in flight changes nothing,
    /// so calling this after every answer is safe. Returns the HW advance
    /// that no longer counting a proposed member may allow.
    ///
    /// Only a definite answer counts: when the request timed out or its
    /// answer was lost, the SC may have committed the proposal, so its
    /// members must stay counted. Resend the same request instead.
    pub fn on_isr_refused(&mut self, proposal: ProposalId) -> Vec<Action> {
        let mut actions = Vec::new();
        if self
            .pending
            .as_ref()
            .is_some_and(|pending| pending.id == proposal)
        {
            self.pending = None;
            self.advance_high_watermark(&mut actions);
        }
        actions
    }

    /// What an `acks=all` produce whose records end before `end` (last
    /// offset + 1) gets now.
    pub fn acks_all(&self, end: Offset) -> AckState {
        if !self.accepts_acks_all() {
            AckState::NotEnoughReplicas
        } else if self.high_watermark >= end {
            AckState::Committed
        } else {
            AckState::Waiting
        }
    }

    /// Whether an `acks=all` produce may be appended at all now: the
    /// committed ISR has at least `min_in_sync` members.
    pub fn accepts_acks_all(&self) -> bool {
        self.isr.len() >= self.config.min_in_sync
    }

    fn maximal_members(&self) -> impl Iterator<Item = SpuId> + '_ {
        let proposed = self.pending.iter().flat_map(|pending| &pending.proposed);
        self.isr.iter().chain(proposed).copied()
    }

    /// The end the HW may rise to: the lowest end in the maximal ISR, the
    /// leader's own included whether or not the SC lists it.
    fn advance_high_watermark(&mut self, actions: &mut Vec<Action>) {
        let candidate = self
            .maximal_members()
            .filter(|&spu| spu != self.config.me)
            .map(|spu| self.follower_end(spu).unwrap_or(self.high_watermark))
            .fold(self.local_end, Offset::min);
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            actions.push(Action::AdvanceHighWatermark(candidate));
        }
    }

    fn note_caught_up(&mut self, now_ms: i64) {
        for follower in self.followers.values_mut() {
            if follower.end.is_some_and(|end| end >= self.local_end) {
                follower.last_caught_up_ms = follower.last_caught_up_ms.max(now_ms);
            }
        }
    }

    /// Proposes, when nothing is in flight, the ISR that drops members out
    /// of sync and adds replicas that may join.
    fn reconsider_isr(&mut self, now_ms: i64, actions: &mut Vec<Action>) {
        self.note_caught_up(now_ms);
        if self.pending.is_some() {
            return;
        }
        let me = self.config.me;
        let mut proposed: Vec<SpuId> = self
            .isr
            .iter()
            .copied()
            .filter(|&spu| spu == me || self.in_sync(spu, now_ms))
            .collect();
        let joining = self
            .followers
            .iter()
            .filter(|&(spu, follower)| !self.isr.contains(spu) && self.may_join(follower, now_ms))
            .map(|(&spu, _)| spu);
        proposed.extend(joining);
        let proposed = normalized(proposed);
        if proposed == self.isr || proposed.is_empty() {
            return;
        }
        let id = ProposalId(self.next_proposal);
        self.next_proposal += 1;
        self.pending = Some(Proposal {
            id,
            proposed: proposed.clone(),
            sent_ms: now_ms,
        });
        actions.push(Action::ProposeIsr {
            proposal: id,
            current: self.isr.clone(),
            proposed,
        });
    }

    /// Whether ISR member `spu` stays in: it was caught up within the lag
    /// limit. A member that is not a replica at all can never report, so
    /// it goes out.
    fn in_sync(&self, spu: SpuId, now_ms: i64) -> bool {
        self.followers.get(&spu).is_some_and(|follower| {
            now_ms - follower.last_caught_up_ms <= self.config.lag_time_max_ms
        })
    }

    /// Whether a replica outside the ISR may be proposed in: it holds
    /// everything below the HW and everything written before this epoch
    /// (the HW this leader inherited may trail what the previous leader
    /// acknowledged), and it was caught up recently enough that the next
    /// tick would not propose it out again.
    fn may_join(&self, follower: &Follower, now_ms: i64) -> bool {
        let holds_committed = follower
            .end
            .is_some_and(|end| end >= self.high_watermark && end >= self.epoch_start);
        let recent = now_ms - follower.last_caught_up_ms <= self.config.lag_time_max_ms;
        holds_committed && recent
    }
}

fn normalized(mut spus: Vec<SpuId>) -> Vec<SpuId> {
    spus.sort_unstable();
    spus.dedup();
    spus
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
