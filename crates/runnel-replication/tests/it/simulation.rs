//! A deterministic simulation of one partition on three SPUs and a model
//! SC, driven only through the crate's public API: produces with
//! `acks=all`, followers that cut their logs by epoch and fetch, positions
//! delayed on the network (in order per SPU pair, in any order between
//! pairs), ISR proposals the SC accepts by compare-and-set, crashes,
//! restarts, false suspicions (a paused or cut off leader) and moves back
//! to the preferred leader. It checks that no acknowledged record is ever lost, that
//! every leader's log holds every record committed before it, and that
//! logs agree on committed prefixes.
//!
//! Logs are durable (`flush=always`): a crash loses the SPU's memory, not
//! its log.

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use runnel_replication::{
    AckState, Action, Divergence, Leader, LeaderConfig, PositionError, ProposalId,
    divergence_question, on_epoch_end,
};
use runnel_types::{LeaderEpoch, Offset, SpuId};

const NODES: usize = 3;
const MIN_IN_SYNC: usize = 2;
const LAG_MS: i64 = 40;

fn spu(node: usize) -> SpuId {
    SpuId(node as u32 + 1)
}

fn node_of(spu: SpuId) -> usize {
    spu.0 as usize - 1
}

fn offset(length: usize) -> Offset {
    Offset(length as i64)
}

fn sorted(mut spus: Vec<SpuId>) -> Vec<SpuId> {
    spus.sort_unstable();
    spus.dedup();
    spus
}

/// One record: the epoch it was written in and a value no other record has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    epoch: LeaderEpoch,
    value: u64,
}

/// The epoch cache of a log: `(epoch, start offset)` ascending.
fn epochs_of(log: &[Entry]) -> Vec<(LeaderEpoch, Offset)> {
    let mut epochs: Vec<(LeaderEpoch, Offset)> = Vec::new();
    for (at, entry) in log.iter().enumerate() {
        if epochs.last().is_none_or(|&(last, _)| last != entry.epoch) {
            epochs.push((entry.epoch, offset(at)));
        }
    }
    epochs
}

/// A leader's answer to "where does `epoch` end?" (as runnel-log's
/// `EpochCache::end_offset_for`).
fn epoch_end(log: &[Entry], epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
    let epochs = epochs_of(log);
    let index = epochs.iter().rposition(|&(known, _)| known <= epoch)?;
    let end = epochs
        .get(index + 1)
        .map_or(offset(log.len()), |&(_, start)| start);
    Some((epochs[index].0, end))
}

fn common_prefix(a: &[Entry], b: &[Entry]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[derive(Debug)]
enum Role {
    /// Restarted, or its partition has no leader: waits for the SC.
    Idle,
    Leader {
        state: Box<Leader>,
        /// `acks=all` produces not answered yet: (end, value).
        waiting: Vec<(Offset, u64)>,
        last_high_watermark: Offset,
    },
    Follower {
        epoch: LeaderEpoch,
        leader: SpuId,
        /// Whether it has cut its log against this epoch's leader.
        truncated: bool,
    },
}

/// What the SC sends an SPU, in order, over its session.
#[derive(Debug, Clone)]
enum FromSc {
    Assignment {
        epoch: LeaderEpoch,
        leader: Option<SpuId>,
        isr: Vec<SpuId>,
    },
    AlterIsrAnswer {
        epoch: LeaderEpoch,
        proposal: ProposalId,
        committed: Option<Vec<SpuId>>,
    },
}

#[derive(Debug)]
struct Node {
    alive: bool,
    session: u64,
    log: Vec<Entry>,
    /// The HW it last learned, checkpointed with its log.
    high_watermark: Offset,
    known_epoch: Option<LeaderEpoch>,
    role: Role,
    inbox: VecDeque<FromSc>,
}

#[derive(Debug, Clone)]
struct AlterIsr {
    from: SpuId,
    epoch: LeaderEpoch,
    proposal: ProposalId,
    current: Vec<SpuId>,
    proposed: Vec<SpuId>,
}

#[derive(Debug, Clone)]
struct Position {
    from: SpuId,
    to: SpuId,
    epoch: LeaderEpoch,
    end: Offset,
}

#[derive(Debug)]
struct Sc {
    epoch: LeaderEpoch,
    leader: Option<SpuId>,
    isr: Vec<SpuId>,
    believed_alive: [bool; NODES],
    /// The session of each SPU the SC has seen last.
    sessions: [u64; NODES],
}

#[derive(Debug, Clone)]
enum Step {
    Produce(usize),
    /// A follower fetches up to this many records (or cuts its log first).
    Fetch(usize, usize),
    DeliverPosition(usize),
    DeliverToSc(usize),
    DeliverFromSc(usize),
    Tick(usize),
    Wait(i64),
    Crash(usize),
    Restart(usize),
    /// The SC takes an SPU for dead while it may be alive: paused, or cut
    /// off from the SC.
    ScSuspects(usize),
    /// The SC's session timeout: every crashed SPU is taken for dead.
    ScTimesOut,
    /// The SC hears from an SPU (a heartbeat, or a new session).
    ScSees(usize),
    /// The SC moves leadership back to the preferred replica (the first).
    ScPrefers,
}

fn step() -> impl Strategy<Value = Step> {
    let node = || 0..NODES;
    prop_oneof![
        20 => node().prop_map(Step::Produce),
        25 => (node(), 1..4usize).prop_map(|(node, count)| Step::Fetch(node, count)),
        20 => any::<usize>().prop_map(Step::DeliverPosition),
        6 => any::<usize>().prop_map(Step::DeliverToSc),
        20 => node().prop_map(Step::DeliverFromSc),
        5 => node().prop_map(Step::Tick),
        5 => (1..30i64).prop_map(Step::Wait),
        1 => node().prop_map(Step::Crash),
        2 => node().prop_map(Step::Restart),
        1 => node().prop_map(Step::ScSuspects),
        3 => Just(Step::ScTimesOut),
        3 => node().prop_map(Step::ScSees),
        1 => Just(Step::ScPrefers),
    ]
}

/// What a run went through, to show the simulation reaches the cases it
/// is meant to check.
#[derive(Debug, Default, Clone, Copy)]
struct Coverage {
    acknowledged: usize,
    elections: usize,
    records_truncated: usize,
    isr_commits: usize,
}

#[derive(Debug)]
struct Sim {
    nodes: Vec<Node>,
    sc: Sc,
    to_sc: Vec<AlterIsr>,
    positions: Vec<Position>,
    now_ms: i64,
    next_value: u64,
    /// The longest prefix a leader announced below its HW while `acks=all`
    /// would have been acknowledged there.
    committed: Vec<Entry>,
    /// For each epoch, how much of `committed` its leader announced.
    committed_by_epoch: BTreeMap<LeaderEpoch, usize>,
    acknowledged: Vec<(usize, Entry)>,
    leaders: BTreeMap<LeaderEpoch, SpuId>,
    coverage: Coverage,
}

impl Sim {
    /// Node 1 leads epoch 1 with every replica in sync, all logs empty.
    fn new() -> Sim {
        let everyone: Vec<SpuId> = (0..NODES).map(spu).collect();
        let nodes = (0..NODES)
            .map(|_| Node {
                alive: true,
                session: 0,
                log: Vec::new(),
                high_watermark: Offset::ZERO,
                known_epoch: None,
                role: Role::Idle,
                inbox: VecDeque::new(),
            })
            .collect();
        let mut sim = Sim {
            nodes,
            sc: Sc {
                epoch: LeaderEpoch(1),
                leader: Some(spu(0)),
                isr: everyone,
                believed_alive: [true; NODES],
                sessions: [0; NODES],
            },
            to_sc: Vec::new(),
            positions: Vec::new(),
            now_ms: 0,
            next_value: 0,
            committed: Vec::new(),
            committed_by_epoch: BTreeMap::new(),
            acknowledged: Vec::new(),
            leaders: BTreeMap::new(),
            coverage: Coverage::default(),
        };
        sim.push_all();
        sim
    }

    fn run(&mut self, step: &Step) {
        match *step {
            Step::Produce(node) => self.produce(node),
            Step::Fetch(node, count) => self.fetch(node, count),
            Step::DeliverPosition(pick) => self.deliver_position(pick),
            Step::DeliverToSc(pick) => self.deliver_to_sc(pick),
            Step::DeliverFromSc(node) => self.deliver_from_sc(node),
            Step::Tick(node) => self.tick(node),
            Step::Wait(elapsed_ms) => self.now_ms += elapsed_ms,
            Step::Crash(node) => self.crash(node),
            Step::Restart(node) => self.restart(node),
            Step::ScSuspects(node) => self.sc_suspects(node),
            Step::ScTimesOut => {
                for node in 0..NODES {
                    if !self.nodes[node].alive {
                        self.sc_suspects(node);
                    }
                }
            }
            Step::ScSees(node) => self.sc_sees(node),
            Step::ScPrefers => self.sc_prefers(),
        }
        self.check();
    }

    // ---- the SC ----

    /// Sends the partition's assignment to every SPU whose current session
    /// the SC knows.
    fn push_all(&mut self) {
        for node in 0..NODES {
            self.push_to(node);
        }
    }

    fn push_to(&mut self, node: usize) {
        let target = &mut self.nodes[node];
        if target.alive && target.session == self.sc.sessions[node] {
            target.inbox.push_back(FromSc::Assignment {
                epoch: self.sc.epoch,
                leader: self.sc.leader,
                isr: self.sc.isr.clone(),
            });
        }
    }

    fn sc_suspects(&mut self, node: usize) {
        if !self.sc.believed_alive[node] {
            return;
        }
        self.sc.believed_alive[node] = false;
        let suspect = spu(node);
        if self.sc.leader == Some(suspect) {
            self.elect();
        } else if self.sc.leader.is_some() && self.sc.isr.contains(&suspect) {
            self.sc.isr.retain(|&member| member != suspect);
            self.coverage.isr_commits += 1;
            self.push_all();
        }
    }

    /// Replaces a leader the SC takes for dead with a live ISR member and a
    /// new epoch; with none, the partition goes offline and keeps its ISR,
    /// so only a member of it may lead again.
    fn elect(&mut self) {
        self.sc.epoch = LeaderEpoch(self.sc.epoch.0 + 1);
        let alive = self.sc.believed_alive;
        let candidate = self
            .sc
            .isr
            .iter()
            .copied()
            .find(|&member| alive[node_of(member)]);
        if let Some(leader) = candidate {
            self.sc.isr.retain(|&member| alive[node_of(member)]);
            self.sc.leader = Some(leader);
        } else {
            self.sc.leader = None;
        }
        self.push_all();
    }

    fn sc_sees(&mut self, node: usize) {
        if !self.nodes[node].alive {
            return;
        }
        if self.sc.sessions[node] != self.nodes[node].session {
            // A new session: whatever the old one led is lost with it.
            self.sc_suspects(node);
            self.sc.sessions[node] = self.nodes[node].session;
        }
        self.sc.believed_alive[node] = true;
        if self.sc.leader.is_none() && self.sc.isr.contains(&spu(node)) {
            self.sc.epoch = LeaderEpoch(self.sc.epoch.0 + 1);
            self.sc.leader = Some(spu(node));
            self.push_all();
        } else {
            self.push_to(node);
        }
    }

    /// Leadership returns to the preferred replica once it is in sync.
    fn sc_prefers(&mut self) {
        let preferred = spu(0);
        if self.sc.leader.is_some_and(|leader| leader != preferred)
            && self.sc.isr.contains(&preferred)
            && self.sc.believed_alive[0]
        {
            self.sc.epoch = LeaderEpoch(self.sc.epoch.0 + 1);
            self.sc.leader = Some(preferred);
            self.push_all();
        }
    }

    fn deliver_to_sc(&mut self, pick: usize) {
        if self.to_sc.is_empty() {
            return;
        }
        let request = self.to_sc.remove(pick % self.to_sc.len());
        let added_alive = request
            .proposed
            .iter()
            .filter(|member| !self.sc.isr.contains(member))
            .all(|&member| self.sc.believed_alive[node_of(member)]);
        let accepted = request.epoch == self.sc.epoch
            && self.sc.leader == Some(request.from)
            && sorted(request.current.clone()) == self.sc.isr
            && request.proposed.contains(&request.from)
            && added_alive;
        if accepted {
            self.sc.isr = sorted(request.proposed.clone());
            self.coverage.isr_commits += 1;
        }
        let node = node_of(request.from);
        if self.nodes[node].alive && self.nodes[node].session == self.sc.sessions[node] {
            self.nodes[node].inbox.push_back(FromSc::AlterIsrAnswer {
                epoch: request.epoch,
                proposal: request.proposal,
                committed: accepted.then(|| self.sc.isr.clone()),
            });
        }
        if accepted {
            self.push_all();
        }
    }

    // ---- SPUs ----

    fn crash(&mut self, node: usize) {
        let target = &mut self.nodes[node];
        target.alive = false;
        target.role = Role::Idle;
        target.known_epoch = None;
        target.inbox.clear();
    }

    fn restart(&mut self, node: usize) {
        let target = &mut self.nodes[node];
        if !target.alive {
            target.alive = true;
            target.session += 1;
        }
    }

    fn deliver_from_sc(&mut self, node: usize) {
        let Some(message) = self.nodes[node].inbox.pop_front() else {
            return;
        };
        let now_ms = self.now_ms;
        match message {
            FromSc::Assignment { epoch, leader, isr } => {
                let known = self.nodes[node].known_epoch;
                if known.is_some_and(|known| epoch < known) {
                    return;
                }
                if known == Some(epoch) {
                    if let Role::Leader { state, .. } = &mut self.nodes[node].role {
                        let actions = state.on_isr_committed(isr, now_ms);
                        self.handle(node, actions);
                    }
                    return;
                }
                self.nodes[node].known_epoch = Some(epoch);
                match leader {
                    Some(leader) if leader == spu(node) => self.become_leader(node, epoch, isr),
                    Some(leader) => {
                        self.nodes[node].role = Role::Follower {
                            epoch,
                            leader,
                            truncated: false,
                        };
                    }
                    None => self.nodes[node].role = Role::Idle,
                }
            }
            FromSc::AlterIsrAnswer {
                epoch,
                proposal,
                committed,
            } => {
                let Role::Leader { state, .. } = &mut self.nodes[node].role else {
                    return;
                };
                if state.epoch() != epoch {
                    return;
                }
                let mut actions = Vec::new();
                if let Some(isr) = committed {
                    actions.extend(state.on_isr_committed(isr, now_ms));
                }
                actions.extend(state.on_isr_refused(proposal));
                self.handle(node, actions);
            }
        }
    }

    fn become_leader(&mut self, node: usize, epoch: LeaderEpoch, isr: Vec<SpuId>) {
        let previous = self.leaders.insert(epoch, spu(node));
        assert_eq!(previous, None, "two leaders for epoch {epoch}");
        self.coverage.elections += 1;
        // What leaders of earlier epochs committed. (An SPU slow to read
        // its assignments may still become a leader of an old epoch.)
        let earlier = self
            .committed_by_epoch
            .range(..epoch)
            .map(|(_, &length)| length)
            .max()
            .unwrap_or(0);
        let target = &mut self.nodes[node];
        let log = &target.log;
        assert!(
            earlier <= log.len() && log[..earlier] == self.committed[..earlier],
            "new leader {} of epoch {epoch} lacks committed records: log {log:?}, committed {:?}",
            spu(node),
            &self.committed[..earlier]
        );
        for &(at, entry) in self
            .acknowledged
            .iter()
            .filter(|(_, entry)| entry.epoch < epoch)
        {
            assert_eq!(
                log.get(at),
                Some(&entry),
                "new leader {} of epoch {epoch} lost acknowledged offset {at}",
                spu(node)
            );
        }
        let config = LeaderConfig {
            me: spu(node),
            replicas: (0..NODES).map(spu).collect(),
            min_in_sync: MIN_IN_SYNC,
            lag_time_max_ms: LAG_MS,
        };
        let state = Leader::new(
            config,
            epoch,
            isr,
            offset(log.len()),
            target.high_watermark,
            self.now_ms,
        );
        target.role = Role::Leader {
            last_high_watermark: state.high_watermark(),
            state: Box::new(state),
            waiting: Vec::new(),
        };
        self.announce(node);
    }

    fn produce(&mut self, node: usize) {
        let now_ms = self.now_ms;
        let value = self.next_value;
        let target = &mut self.nodes[node];
        if !target.alive {
            return;
        }
        let Role::Leader { state, waiting, .. } = &mut target.role else {
            return;
        };
        if !state.accepts_acks_all() {
            return;
        }
        self.next_value += 1;
        target.log.push(Entry {
            epoch: state.epoch(),
            value,
        });
        let end = offset(target.log.len());
        waiting.push((end, value));
        let actions = state.on_local_end(end, now_ms);
        self.handle(node, actions);
    }

    fn tick(&mut self, node: usize) {
        let now_ms = self.now_ms;
        if let Role::Leader { state, .. } = &mut self.nodes[node].role {
            let actions = state.on_tick(now_ms);
            self.handle(node, actions);
        }
    }

    fn handle(&mut self, node: usize, actions: Vec<Action>) {
        let Role::Leader { state, .. } = &self.nodes[node].role else {
            unreachable!("only leaders act");
        };
        let epoch = state.epoch();
        for action in actions {
            if let Action::ProposeIsr {
                proposal,
                current,
                proposed,
            } = action
            {
                self.to_sc.push(AlterIsr {
                    from: spu(node),
                    epoch,
                    proposal,
                    current,
                    proposed,
                });
            }
        }
        self.announce(node);
    }

    /// Publishes the leader's HW, records what it commits, and answers the
    /// produces it can.
    fn announce(&mut self, node: usize) {
        let target = &mut self.nodes[node];
        let Role::Leader {
            state,
            waiting,
            last_high_watermark,
        } = &mut target.role
        else {
            unreachable!("only leaders announce");
        };
        let high_watermark = state.high_watermark();
        assert!(
            high_watermark >= *last_high_watermark,
            "HW went back from {last_high_watermark} to {high_watermark}"
        );
        assert!(high_watermark <= offset(target.log.len()));
        *last_high_watermark = high_watermark;
        target.high_watermark = high_watermark;
        if state.acks_all(high_watermark) == AckState::Committed {
            let prefix = &target.log[..high_watermark.0 as usize];
            let shared = prefix.len().min(self.committed.len());
            assert_eq!(
                prefix[..shared],
                self.committed[..shared],
                "leader {} of epoch {} commits records that disagree with those committed before",
                spu(node),
                state.epoch()
            );
            if prefix.len() > self.committed.len() {
                self.committed = prefix.to_vec();
            }
            let by_epoch = self.committed_by_epoch.entry(state.epoch()).or_default();
            *by_epoch = (*by_epoch).max(prefix.len());
        }
        let log = &target.log;
        let mut acknowledged = Vec::new();
        waiting.retain(|&(end, value)| match state.acks_all(end) {
            AckState::Committed => {
                let at = end.0 as usize - 1;
                assert_eq!(log[at].value, value);
                acknowledged.push((at, log[at]));
                false
            }
            AckState::NotEnoughReplicas => false,
            AckState::Waiting => true,
        });
        self.coverage.acknowledged += acknowledged.len();
        self.acknowledged.extend(acknowledged);
    }

    /// A follower cuts its log against its leader, or copies records and
    /// sends its position.
    fn fetch(&mut self, node: usize, count: usize) {
        let follower = &self.nodes[node];
        let Role::Follower {
            epoch,
            leader,
            truncated,
        } = follower.role
        else {
            return;
        };
        let leader_node = &self.nodes[node_of(leader)];
        let Role::Leader { state, .. } = &leader_node.role else {
            return;
        };
        // A leader of another epoch refuses the request (fenced or unknown).
        if !follower.alive || !leader_node.alive || state.epoch() != epoch {
            return;
        }
        let leader_log = leader_node.log.clone();
        let leader_high_watermark = state.high_watermark();
        let follower = &mut self.nodes[node];
        if !truncated {
            let kept = cut(&follower.log, &leader_log);
            assert!(
                offset(kept) >= follower.high_watermark,
                "{} cuts its log at {kept}, below the HW {} it was told",
                spu(node),
                follower.high_watermark
            );
            self.coverage.records_truncated += follower.log.len() - kept;
            follower.log.truncate(kept);
            follower.high_watermark = follower.high_watermark.min(offset(kept));
            follower.role = Role::Follower {
                epoch,
                leader,
                truncated: true,
            };
            return;
        }
        let from = follower.log.len();
        assert_eq!(
            follower.log[..],
            leader_log[..from],
            "{} diverged from its leader after cutting its log",
            spu(node)
        );
        let to = leader_log.len().min(from + count);
        follower.log.extend_from_slice(&leader_log[from..to]);
        let end = offset(follower.log.len());
        follower.high_watermark = follower.high_watermark.max(leader_high_watermark.min(end));
        self.positions.push(Position {
            from: spu(node),
            to: leader,
            epoch,
            end,
        });
    }

    fn deliver_position(&mut self, pick: usize) {
        if self.positions.is_empty() {
            return;
        }
        // One stream per SPU pair: a pair's positions arrive in order,
        // different pairs' in any order.
        let picked = &self.positions[pick % self.positions.len()];
        let (from, to) = (picked.from, picked.to);
        let first = self
            .positions
            .iter()
            .position(|position| position.from == from && position.to == to)
            .expect("the picked position itself");
        let position = self.positions.remove(first);
        let node = node_of(position.to);
        let now_ms = self.now_ms;
        if !self.nodes[node].alive {
            return;
        }
        let Role::Leader { state, .. } = &mut self.nodes[node].role else {
            return;
        };
        match state.on_follower_end(position.from, position.epoch, position.end, now_ms) {
            Ok(actions) => self.handle(node, actions),
            Err(PositionError::Fenced { .. } | PositionError::UnknownEpoch { .. }) => {}
            Err(error) => panic!("{position:?}: {error}"),
        }
    }

    /// After every step: the SC's current leader holds everything
    /// committed, and every leader's HW is within its log and its ISR.
    fn check(&self) {
        for (node, target) in self.nodes.iter().enumerate() {
            let Role::Leader { state, .. } = &target.role else {
                continue;
            };
            let high_watermark = state.high_watermark();
            assert!(high_watermark <= offset(target.log.len()));
            for member in state.maximal_isr() {
                if let Some(end) = state.follower_end(member) {
                    assert!(high_watermark <= end, "HW above {member}'s end");
                }
            }
            let current = self.sc.leader == Some(spu(node)) && state.epoch() == self.sc.epoch;
            if current {
                assert!(
                    target.log.starts_with(&self.committed),
                    "current leader {} lacks committed records",
                    spu(node)
                );
            }
        }
    }

    /// Everything comes back and the network delivers everything: the
    /// partition must return to one leader, a full ISR and equal logs.
    fn heal(&mut self) {
        for node in 0..NODES {
            self.restart(node);
            self.sc_sees(node);
        }
        for _ in 0..40 {
            self.now_ms += 5;
            for node in 0..NODES {
                while !self.nodes[node].inbox.is_empty() {
                    self.run(&Step::DeliverFromSc(node));
                }
            }
            while !self.to_sc.is_empty() {
                self.run(&Step::DeliverToSc(0));
            }
            for node in 0..NODES {
                self.run(&Step::Fetch(node, usize::MAX / 2));
            }
            while !self.positions.is_empty() {
                self.run(&Step::DeliverPosition(0));
            }
            for node in 0..NODES {
                self.run(&Step::Tick(node));
            }
        }
        let leader = self.sc.leader.expect("a leader after healing");
        let everyone: Vec<SpuId> = (0..NODES).map(spu).collect();
        assert_eq!(self.sc.isr, everyone, "full ISR after healing");
        let leader_log = &self.nodes[node_of(leader)].log;
        for (node, target) in self.nodes.iter().enumerate() {
            assert_eq!(
                &target.log,
                leader_log,
                "{} differs from leader {leader}",
                spu(node)
            );
            for &(at, entry) in &self.acknowledged {
                assert_eq!(target.log.get(at), Some(&entry), "offset {at} lost");
            }
        }
        assert!(leader_log.starts_with(&self.committed));
        let Role::Leader { state, .. } = &self.nodes[node_of(leader)].role else {
            panic!("{leader} does not lead after healing");
        };
        assert_eq!(state.high_watermark(), offset(leader_log.len()));
    }
}

/// Runs the KIP-279 exchange between a follower's log and its leader's and
/// returns how many records the follower keeps, checking it keeps exactly
/// the records both share.
fn cut(own: &[Entry], leader: &[Entry]) -> usize {
    let own_epochs = epochs_of(own);
    let own_end = offset(own.len());
    let mut asked = divergence_question(&own_epochs);
    for _ in 0..=own_epochs.len() {
        let Some(epoch) = asked else {
            return own.len();
        };
        let answer = epoch_end(leader, epoch);
        match on_epoch_end(&own_epochs, own_end, epoch, answer, Offset::ZERO) {
            Ok(Divergence::Ask(lower)) => asked = Some(lower),
            Ok(Divergence::TruncateTo(at)) => {
                assert_eq!(at.0 as usize, common_prefix(own, leader), "cut at {at}");
                return at.0 as usize;
            }
            Ok(Divergence::ResetTo(start)) => {
                assert_eq!(start, Offset::ZERO);
                assert_eq!(common_prefix(own, leader), 0, "reset keeps nothing");
                return 0;
            }
            Err(error) => panic!("{error}"),
        }
    }
    panic!("no cut within {} questions", own_epochs.len() + 1);
}

fn simulate(steps: &[Step]) -> Coverage {
    let mut sim = Sim::new();
    for step in steps {
        sim.run(step);
    }
    sim.heal();
    sim.coverage
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_acknowledged_record_is_lost(steps in prop::collection::vec(step(), 0..300)) {
        simulate(&steps);
    }
}

/// The random runs reach what they are meant to check: acknowledged
/// records, failovers, divergent suffixes cut, ISR changes.
#[test]
fn simulation_covers_failover() {
    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(step(), 300);
    let mut total = Coverage::default();
    for _ in 0..40 {
        let steps = strategy
            .new_tree(&mut runner)
            .expect("steps generate")
            .current();
        let coverage = simulate(&steps);
        total.acknowledged += coverage.acknowledged;
        total.elections += coverage.elections;
        total.records_truncated += coverage.records_truncated;
        total.isr_commits += coverage.isr_commits;
    }
    // Each run elects once at the start; the rest are failovers.
    assert!(total.acknowledged > 60, "{total:?}");
    assert!(total.elections > 60, "{total:?}");
    assert!(total.records_truncated > 20, "{total:?}");
    assert!(total.isr_commits > 50, "{total:?}");
}

/// A scripted failover: records acknowledged by the first leader survive
/// its crash, and its unacknowledged tail is cut when it returns.
#[test]
fn failover_keeps_acknowledged_records_and_cuts_the_old_tail() {
    let mut sim = Sim::new();
    let deliver_all = |sim: &mut Sim| {
        for node in 0..NODES {
            while !sim.nodes[node].inbox.is_empty() {
                sim.run(&Step::DeliverFromSc(node));
            }
        }
    };
    deliver_all(&mut sim);
    for _ in 0..3 {
        sim.run(&Step::Produce(0));
    }
    for node in [1, 2] {
        sim.run(&Step::Fetch(node, 10));
        sim.run(&Step::Fetch(node, 10));
    }
    while !sim.positions.is_empty() {
        sim.run(&Step::DeliverPosition(0));
    }
    assert_eq!(sim.acknowledged.len(), 3);
    // Two more records reach only the leader, which is then cut off.
    sim.run(&Step::Produce(0));
    sim.run(&Step::Produce(0));
    assert_eq!(sim.acknowledged.len(), 3);
    sim.run(&Step::ScSuspects(0));
    assert_eq!(sim.sc.leader, Some(spu(1)));
    assert_eq!(sim.sc.epoch, LeaderEpoch(2));
    for node in [1, 2] {
        while !sim.nodes[node].inbox.is_empty() {
            sim.run(&Step::DeliverFromSc(node));
        }
    }
    // The old leader, unaware, takes another produce it can never commit;
    // the new one takes one it will.
    sim.run(&Step::Produce(0));
    sim.run(&Step::Produce(1));
    sim.run(&Step::Crash(0));
    sim.run(&Step::Restart(0));
    sim.run(&Step::ScSees(0));
    deliver_all(&mut sim);
    sim.run(&Step::Fetch(0, 10));
    assert_eq!(sim.nodes[0].log.len(), 3, "the old leader's tail is cut");
    sim.heal();
    let epochs: Vec<LeaderEpoch> = sim
        .acknowledged
        .iter()
        .map(|(_, entry)| entry.epoch)
        .collect();
    assert_eq!(epochs, [1, 1, 1, 2].map(LeaderEpoch));
    assert_eq!(sim.nodes[0].log, sim.nodes[1].log);
    assert_eq!(sim.nodes[0].log.len(), 4);
}
