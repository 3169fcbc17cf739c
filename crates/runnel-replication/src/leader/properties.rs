//! Random interleavings of appends, follower fetches and reports (some for
//! stale or future epochs), ticks and SC answers, checked against the
//! leader's invariants after every step, and a settling phase that checks
//! the leader gets back to a full ISR with the HW at its end.

use proptest::prelude::*;

use super::*;

const ME: SpuId = SpuId(1);
const EPOCH: LeaderEpoch = LeaderEpoch(7);
const LAG_MS: i64 = 50;

#[derive(Debug, Clone)]
enum Op {
    Append(i64),
    /// Follower (by index) copies up to this many records.
    Fetch(usize, i64),
    /// Follower reports its end, for the leader's epoch plus this delta.
    Report(usize, i32),
    /// A position the leader must refuse.
    ReportBogus(usize),
    /// Time passes by this many milliseconds, then a tick.
    Tick(i64),
    Accept,
    Refuse,
    /// A refusal of a proposal that is no longer in flight.
    StaleRefuse,
    /// The SC removes a follower (by index) on its own.
    ScRemoves(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..4i64).prop_map(Op::Append),
        4 => (0..4usize, 1..6i64).prop_map(|(index, count)| Op::Fetch(index, count)),
        5 => (0..4usize, prop_oneof![6 => Just(0), 1 => Just(-1), 1 => Just(1)])
            .prop_map(|(index, delta)| Op::Report(index, delta)),
        1 => (0..4usize).prop_map(Op::ReportBogus),
        3 => (0..60i64).prop_map(Op::Tick),
        2 => Just(Op::Accept),
        1 => Just(Op::Refuse),
        1 => Just(Op::StaleRefuse),
        1 => (0..4usize).prop_map(Op::ScRemoves),
    ]
}

#[derive(Debug, Clone)]
struct Setup {
    followers: usize,
    min_in_sync: usize,
    local_end: i64,
    high_watermark: i64,
    /// Per follower: in the initial ISR, and its initial end.
    initial: Vec<(bool, i64)>,
}

fn setup() -> impl Strategy<Value = Setup> {
    (0..4usize, 0..20i64).prop_flat_map(|(followers, local_end)| {
        (
            1..=followers + 1,
            0..=local_end,
            prop::collection::vec((any::<bool>(), 0..=local_end), followers),
        )
            .prop_map(move |(min_in_sync, high_watermark, initial)| {
                // ISR members hold everything below the HW they were
                // committed with.
                let initial = initial
                    .into_iter()
                    .map(|(member, end)| match member {
                        true => (true, end.max(high_watermark)),
                        false => (false, end),
                    })
                    .collect();
                Setup {
                    followers,
                    min_in_sync,
                    local_end,
                    high_watermark,
                    initial,
                }
            })
    })
}

/// The leader under test and what the test knows to be true.
struct Model {
    leader: Leader,
    spus: Vec<SpuId>,
    /// Each follower's real log end.
    ends: Vec<i64>,
    local_end: i64,
    epoch_start: i64,
    now_ms: i64,
    high_watermark: Offset,
    pending: Option<(ProposalId, Vec<SpuId>)>,
    settled: Vec<ProposalId>,
    /// When each follower last reported an end equal to the leader's.
    last_full_report_ms: Vec<Option<i64>>,
    min_in_sync: usize,
}

impl Model {
    fn new(setup: &Setup) -> Model {
        let spus: Vec<SpuId> = (0..setup.followers)
            .map(|index| SpuId(index as u32 + 2))
            .collect();
        let mut isr = vec![ME];
        isr.extend(
            spus.iter()
                .zip(&setup.initial)
                .filter(|(_, (member, _))| *member)
                .map(|(&spu, _)| spu),
        );
        let mut replicas = vec![ME];
        replicas.extend(&spus);
        let config = LeaderConfig {
            me: ME,
            replicas,
            min_in_sync: setup.min_in_sync,
            lag_time_max_ms: LAG_MS,
        };
        let leader = Leader::new(
            config,
            EPOCH,
            isr,
            Offset(setup.local_end),
            Offset(setup.high_watermark),
            0,
        );
        Model {
            high_watermark: leader.high_watermark(),
            leader,
            ends: setup.initial.iter().map(|&(_, end)| end).collect(),
            spus,
            local_end: setup.local_end,
            epoch_start: setup.local_end,
            now_ms: 0,
            pending: None,
            settled: Vec::new(),
            last_full_report_ms: vec![None; setup.followers],
            min_in_sync: setup.min_in_sync,
        }
    }

    fn end_of(&self, spu: SpuId) -> i64 {
        match spu {
            ME => self.local_end,
            _ => self.ends[self.index(spu)],
        }
    }

    fn index(&self, spu: SpuId) -> usize {
        self.spus
            .iter()
            .position(|&known| known == spu)
            .expect("a follower")
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let followers = self.spus.len();
        match *op {
            Op::Append(count) => {
                self.local_end += count;
                let actions = self
                    .leader
                    .on_local_end(Offset(self.local_end), self.now_ms);
                self.check_actions(actions)?;
            }
            Op::Fetch(index, count) if index < followers => {
                self.ends[index] = (self.ends[index] + count).min(self.local_end);
            }
            Op::Report(index, delta) if index < followers => {
                let spu = self.spus[index];
                let end = Offset(self.ends[index]);
                let epoch = LeaderEpoch(EPOCH.0 + delta);
                let known = self.leader.follower_end(spu);
                match (
                    delta,
                    self.leader.on_follower_end(spu, epoch, end, self.now_ms),
                ) {
                    (0, Ok(actions)) => {
                        if end.0 == self.local_end {
                            self.last_full_report_ms[index] = Some(self.now_ms);
                        }
                        self.check_actions(actions)?;
                    }
                    (-1, Err(PositionError::Fenced { .. }))
                    | (1, Err(PositionError::UnknownEpoch { .. })) => {
                        prop_assert_eq!(self.leader.follower_end(spu), known);
                    }
                    (delta, outcome) => {
                        prop_assert!(false, "epoch delta {delta} gave {outcome:?}")
                    }
                }
            }
            Op::ReportBogus(index) => {
                let (spu, end) = match index < followers {
                    true => (self.spus[index], self.local_end + 1),
                    false => (ME, self.local_end),
                };
                let known = self.leader.follower_end(spu);
                let outcome = self
                    .leader
                    .on_follower_end(spu, EPOCH, Offset(end), self.now_ms);
                prop_assert!(
                    matches!(
                        outcome,
                        Err(PositionError::Invalid { .. } | PositionError::NotAReplica { .. })
                    ),
                    "{spu} at {end}: {outcome:?}"
                );
                prop_assert_eq!(self.leader.follower_end(spu), known);
            }
            Op::Tick(elapsed_ms) => {
                self.now_ms += elapsed_ms;
                let actions = self.leader.on_tick(self.now_ms);
                self.check_actions(actions)?;
            }
            Op::Accept => {
                if let Some((_, proposed)) = self.pending.take() {
                    let actions = self.leader.on_isr_committed(proposed, self.now_ms);
                    self.check_actions(actions)?;
                }
            }
            Op::Refuse => {
                if let Some((id, _)) = self.pending.take() {
                    self.settled.push(id);
                    let actions = self.leader.on_isr_refused(id);
                    self.check_actions(actions)?;
                }
            }
            Op::StaleRefuse => {
                if let Some(&id) = self.settled.last() {
                    let maximal = self.leader.maximal_isr();
                    prop_assert_eq!(self.leader.on_isr_refused(id), vec![]);
                    prop_assert_eq!(self.leader.maximal_isr(), maximal);
                }
            }
            Op::ScRemoves(index) if index < followers => {
                let removed = self.spus[index];
                if self.leader.isr().contains(&removed) {
                    let isr: Vec<SpuId> = self
                        .leader
                        .isr()
                        .iter()
                        .copied()
                        .filter(|&spu| spu != removed)
                        .collect();
                    if self
                        .pending
                        .as_ref()
                        .is_some_and(|(_, proposed)| *proposed == isr)
                    {
                        let (id, _) = self.pending.take().expect("checked");
                        self.settled.push(id);
                    }
                    let actions = self.leader.on_isr_committed(isr, self.now_ms);
                    self.check_actions(actions)?;
                }
            }
            Op::Fetch(..) | Op::Report(..) | Op::ScRemoves(_) => {}
        }
        self.check_invariants()
    }

    fn check_actions(&mut self, actions: Vec<Action>) -> Result<(), TestCaseError> {
        for action in actions {
            match action {
                Action::AdvanceHighWatermark(offset) => {
                    prop_assert!(
                        offset > self.high_watermark,
                        "HW from {} to {offset}",
                        self.high_watermark
                    );
                    self.high_watermark = offset;
                }
                Action::ProposeIsr {
                    proposal,
                    current,
                    proposed,
                } => {
                    prop_assert!(self.pending.is_none(), "a second proposal in flight");
                    prop_assert_eq!(&current, &self.leader.isr().to_vec());
                    prop_assert!(!proposed.is_empty());
                    prop_assert_ne!(&proposed, &current);
                    if current.contains(&ME) {
                        prop_assert!(proposed.contains(&ME), "{proposed:?} drops the leader");
                    }
                    for &removed in current.iter().filter(|spu| !proposed.contains(spu)) {
                        let index = self.index(removed);
                        let recent = self.last_full_report_ms[index]
                            .is_some_and(|at| self.now_ms - at <= LAG_MS);
                        prop_assert!(!recent, "{removed} was caught up recently");
                    }
                    for &added in proposed.iter().filter(|spu| !current.contains(spu)) {
                        let end = self.leader.follower_end(added).expect("a reported end");
                        prop_assert!(end >= self.leader.high_watermark());
                        prop_assert!(end.0 >= self.epoch_start);
                    }
                    self.pending = Some((proposal, proposed));
                }
            }
        }
        Ok(())
    }

    fn check_invariants(&self) -> Result<(), TestCaseError> {
        let leader = &self.leader;
        let high_watermark = leader.high_watermark();
        prop_assert_eq!(
            high_watermark,
            self.high_watermark,
            "every advance is announced"
        );
        prop_assert!(high_watermark.0 <= self.local_end);
        let mut maximal = leader.isr().to_vec();
        if let Some((_, proposed)) = &self.pending {
            maximal.extend(proposed);
        }
        prop_assert_eq!(leader.maximal_isr(), normalized(maximal));
        for spu in leader.maximal_isr() {
            prop_assert!(
                high_watermark.0 <= self.end_of(spu),
                "HW {high_watermark} above {spu}'s end {}",
                self.end_of(spu)
            );
            if let Some(known) = leader.follower_end(spu) {
                prop_assert!(high_watermark <= known);
            }
        }
        for end in 0..=self.local_end + 1 {
            let state = leader.acks_all(Offset(end));
            if leader.isr().len() < self.min_in_sync {
                prop_assert_eq!(state, AckState::NotEnoughReplicas);
                prop_assert!(!leader.accepts_acks_all());
            } else if state == AckState::Committed {
                for &member in leader.isr() {
                    prop_assert!(
                        self.end_of(member) >= end,
                        "records below {end} acknowledged, {member} ends at {}",
                        self.end_of(member)
                    );
                }
            } else {
                prop_assert_eq!(state, AckState::Waiting);
            }
        }
        Ok(())
    }

    /// Every follower catches up and reports, the SC accepts every
    /// proposal: the ISR fills and the HW reaches the leader's end.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..4 {
            self.apply(&Op::Accept)?;
            for index in 0..self.spus.len() {
                self.apply(&Op::Fetch(index, i64::MAX / 2))?;
                self.apply(&Op::Report(index, 0))?;
            }
            self.apply(&Op::Tick(1))?;
        }
        prop_assert_eq!(self.leader.high_watermark(), Offset(self.local_end));
        let mut everyone = self.spus.clone();
        everyone.push(ME);
        prop_assert_eq!(self.leader.isr().to_vec(), normalized(everyone));
        prop_assert_eq!(
            self.leader.acks_all(Offset(self.local_end)),
            AckState::Committed
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn leader_invariants_hold(setup in setup(), ops in prop::collection::vec(op(), 0..80)) {
        let mut model = Model::new(&setup);
        model.check_invariants()?;
        for op in &ops {
            model.apply(op)?;
        }
        model.settle()?;
    }
}
