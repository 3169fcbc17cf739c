use super::*;

const ME: SpuId = SpuId(1);
const A: SpuId = SpuId(2);
const B: SpuId = SpuId(3);
const LAG_MS: i64 = 100;
const EPOCH: LeaderEpoch = LeaderEpoch(5);

fn leader(isr: &[SpuId], local_end: i64, high_watermark: i64) -> Leader {
    let config = LeaderConfig {
        me: ME,
        replicas: vec![ME, A, B],
        min_in_sync: 2,
        lag_time_max_ms: LAG_MS,
    };
    Leader::new(
        config,
        EPOCH,
        isr.to_vec(),
        Offset(local_end),
        Offset(high_watermark),
        0,
    )
}

fn report(leader: &mut Leader, spu: SpuId, end: i64, now_ms: i64) -> Vec<Action> {
    leader
        .on_follower_end(spu, EPOCH, Offset(end), now_ms)
        .unwrap_or_else(|error| panic!("position of {spu} at {end}: {error}"))
}

fn advance(offset: i64) -> Vec<Action> {
    vec![Action::AdvanceHighWatermark(Offset(offset))]
}

/// The one proposal in `actions`: its id and the ISR it proposes.
fn proposal(actions: &[Action]) -> (ProposalId, Vec<SpuId>) {
    let proposals: Vec<_> = actions
        .iter()
        .filter_map(|action| match action {
            Action::ProposeIsr {
                proposal, proposed, ..
            } => Some((*proposal, proposed.clone())),
            Action::AdvanceHighWatermark(_) => None,
        })
        .collect();
    assert_eq!(proposals.len(), 1, "expected one proposal in {actions:?}");
    proposals[0].clone()
}

#[test]
fn high_watermark_is_the_lowest_end_in_the_isr() {
    let mut leader = leader(&[ME, A, B], 10, 4);
    assert_eq!(report(&mut leader, A, 8, 0), vec![], "B's end is unknown");
    assert_eq!(report(&mut leader, B, 6, 0), advance(6));
    assert_eq!(report(&mut leader, B, 10, 0), advance(8));
    assert_eq!(report(&mut leader, A, 10, 0), advance(10));
    assert_eq!(leader.high_watermark(), Offset(10));
    assert_eq!(leader.follower_end(A), Some(Offset(10)));
}

#[test]
fn a_leader_alone_commits_at_its_end() {
    let mut leader = leader(&[ME], 10, 3);
    assert_eq!(leader.high_watermark(), Offset(10));
    assert_eq!(leader.on_local_end(Offset(12), 1), advance(12));
    assert_eq!(
        leader.on_local_end(Offset(11), 2),
        vec![],
        "an end reported out of order"
    );
    assert_eq!(leader.high_watermark(), Offset(12));
}

#[test]
fn a_known_high_watermark_above_the_log_end_is_lowered() {
    assert_eq!(leader(&[ME, A], 5, 9).high_watermark(), Offset(5));
}

#[test]
fn a_lower_position_holds_the_high_watermark_where_it_is() {
    let mut leader = leader(&[ME, A], 10, 6);
    assert_eq!(report(&mut leader, A, 8, 0), advance(8));
    assert_eq!(report(&mut leader, A, 4, 1), vec![], "never backwards");
    assert_eq!(leader.high_watermark(), Offset(8));
    assert_eq!(leader.follower_end(A), Some(Offset(4)));
    assert_eq!(leader.on_local_end(Offset(12), 2), vec![]);
    assert_eq!(report(&mut leader, A, 7, 3), vec![], "still below the HW");
    assert_eq!(report(&mut leader, A, 12, 4), advance(12));
}

#[test]
fn positions_that_cannot_be_taken() {
    let mut leader = leader(&[ME, A], 10, 2);
    let cases = [
        (
            A,
            LeaderEpoch(4),
            5,
            PositionError::Fenced {
                reported: LeaderEpoch(4),
                current: EPOCH,
            },
        ),
        (
            A,
            LeaderEpoch(6),
            5,
            PositionError::UnknownEpoch {
                reported: LeaderEpoch(6),
                current: EPOCH,
            },
        ),
        (
            SpuId(9),
            EPOCH,
            5,
            PositionError::NotAReplica { spu: SpuId(9) },
        ),
        (ME, EPOCH, 5, PositionError::NotAReplica { spu: ME }),
        (
            A,
            EPOCH,
            11,
            PositionError::Invalid {
                spu: A,
                end: Offset(11),
                leader_end: Offset(10),
            },
        ),
        (
            A,
            EPOCH,
            -1,
            PositionError::Invalid {
                spu: A,
                end: Offset(-1),
                leader_end: Offset(10),
            },
        ),
    ];
    for (spu, epoch, end, expect) in cases {
        assert_eq!(
            leader.on_follower_end(spu, epoch, Offset(end), 1),
            Err(expect),
            "{spu} at {end} in epoch {epoch}"
        );
    }
    assert_eq!(leader.follower_end(A), None);
    assert_eq!(leader.high_watermark(), Offset(2));
    let message = PositionError::Fenced {
        reported: LeaderEpoch(4),
        current: EPOCH,
    }
    .to_string();
    assert!(message.contains("truncate by epoch"), "{message}");
}

#[test]
fn a_follower_not_caught_up_past_the_lag_limit_is_proposed_out() {
    let mut leader = leader(&[ME, A, B], 10, 10);
    report(&mut leader, A, 10, 0);
    report(&mut leader, B, 10, 0);
    // Both were caught up until the leader appended at 10 ms.
    leader.on_local_end(Offset(15), 10);
    report(&mut leader, A, 15, 20);
    assert_eq!(leader.on_tick(10 + LAG_MS), vec![], "exactly the limit");
    let actions = leader.on_tick(11 + LAG_MS);
    assert_eq!(
        actions,
        vec![Action::ProposeIsr {
            proposal: proposal(&actions).0,
            current: vec![ME, A, B],
            proposed: vec![ME, A],
        }]
    );
}

#[test]
fn followers_of_an_idle_leader_stay_in() {
    let mut leader = leader(&[ME, A], 10, 10);
    report(&mut leader, A, 10, 0);
    assert_eq!(leader.on_tick(10_000), vec![]);
    leader.on_local_end(Offset(11), 10_000);
    assert_eq!(leader.on_tick(10_000 + LAG_MS), vec![]);
    assert_eq!(proposal(&leader.on_tick(10_001 + LAG_MS)).1, vec![ME]);
}

/// Under steady produce a follower that holds, at each report, what the
/// leader had at its previous report stays in; one that trails further
/// goes out.
#[test]
fn steady_produce_keeps_a_follower_one_report_behind() {
    for (behind, goes_out) in [(0, false), (1, false), (2, true), (5, true)] {
        let mut leader = leader(&[ME, A], 10, 10);
        let mut proposed = false;
        for step in 1..=20i64 {
            let now_ms = step * 30;
            let local_end = 10 + step;
            leader.on_local_end(Offset(local_end), now_ms);
            let end = (local_end - behind).max(10);
            let actions = report(&mut leader, A, end, now_ms);
            proposed |= actions
                .iter()
                .chain(&leader.on_tick(now_ms))
                .any(|action| matches!(action, Action::ProposeIsr { .. }));
        }
        assert_eq!(proposed, goes_out, "{behind} records behind");
    }
}

#[test]
fn never_proposes_dropping_the_leader_or_an_empty_isr() {
    let mut leader_in_isr = leader(&[ME, A], 10, 0);
    assert_eq!(proposal(&leader_in_isr.on_tick(1_000)).1, vec![ME]);
    let mut leader_missing = leader(&[A, B], 10, 0);
    assert_eq!(leader_missing.on_tick(1_000), vec![]);
}

#[test]
fn one_proposal_in_flight() {
    let mut leader = leader(&[ME, A, B], 10, 0);
    let (first, proposed) = proposal(&leader.on_tick(1_000));
    assert_eq!(proposed, vec![ME]);
    assert_eq!(leader.on_tick(2_000), vec![]);
    assert_eq!(leader.on_isr_refused(first), vec![]);
    let (second, proposed) = proposal(&leader.on_tick(2_001));
    assert_ne!(first, second);
    assert_eq!(proposed, vec![ME]);
    leader.on_isr_refused(first);
    assert_eq!(leader.on_tick(2_002), vec![], "a stale refusal is ignored");
    leader.on_isr_committed(vec![ME], 2_003);
    assert_eq!(leader.isr(), &[ME]);
    leader.on_isr_refused(second);
    assert_eq!(leader.on_tick(2_004), vec![]);
}

#[test]
fn a_member_proposed_out_holds_the_high_watermark_until_committed() {
    let mut leader = leader(&[ME, A, B], 10, 0);
    report(&mut leader, A, 10, 0);
    assert_eq!(report(&mut leader, B, 4, 0), advance(4));
    leader.on_local_end(Offset(20), 1);
    report(&mut leader, A, 20, 50);
    let (_, proposed) = proposal(&leader.on_tick(200));
    assert_eq!(proposed, vec![ME, A]);
    assert_eq!(leader.high_watermark(), Offset(4));
    assert_eq!(leader.maximal_isr(), vec![ME, A, B]);
    assert_eq!(leader.on_isr_committed(vec![A, ME], 201), advance(20));
    assert_eq!(leader.isr(), &[ME, A]);
    assert_eq!(leader.maximal_isr(), vec![ME, A]);
}

#[test]
fn a_member_proposed_in_holds_the_high_watermark_at_once() {
    let mut leader = leader(&[ME], 10, 10);
    assert_eq!(leader.on_local_end(Offset(20), 1), advance(20));
    assert_eq!(report(&mut leader, A, 15, 2), vec![], "below the HW");
    let (_, proposed) = proposal(&report(&mut leader, A, 20, 3));
    assert_eq!(proposed, vec![ME, A]);
    assert_eq!(leader.maximal_isr(), vec![ME, A]);
    assert_eq!(leader.isr(), &[ME]);
    assert_eq!(leader.on_local_end(Offset(25), 4), vec![]);
    assert_eq!(report(&mut leader, A, 25, 5), advance(25));
    assert_eq!(leader.on_isr_committed(vec![ME, A], 6), vec![]);
    assert_eq!(leader.isr(), &[ME, A]);
    assert_eq!(leader.on_tick(7), vec![], "the proposal is settled");
}

#[test]
fn a_refused_expansion_stops_holding_the_high_watermark() {
    let mut leader = leader(&[ME], 10, 10);
    let (id, _) = proposal(&report(&mut leader, A, 10, 1));
    assert_eq!(leader.on_local_end(Offset(20), 2), vec![]);
    assert_eq!(leader.on_isr_refused(id), advance(20));
}

#[test]
fn joining_needs_everything_written_before_the_epoch() {
    // The inherited HW (10) trails the epoch start (50): the previous
    // leader may have acknowledged up to 50.
    let mut leader = leader(&[ME, A], 50, 10);
    assert_eq!(report(&mut leader, B, 20, 1), vec![]);
    assert_eq!(report(&mut leader, B, 49, 1), vec![]);
    assert_eq!(report(&mut leader, A, 50, 1), advance(50));
    assert_eq!(proposal(&report(&mut leader, B, 50, 2)).1, vec![ME, A, B]);
}

#[test]
fn a_replica_caught_up_long_ago_does_not_join() {
    let mut leader = leader(&[ME, A], 10, 10);
    report(&mut leader, A, 10, 0);
    leader.on_local_end(Offset(30), 0);
    // A holds the HW at 10 and goes out for lagging; B holds more than the
    // HW but has not been caught up since the epoch began, so it would go
    // out again at once: it does not come in.
    assert_eq!(proposal(&report(&mut leader, B, 20, 500)).1, vec![ME]);
}

#[test]
fn acks_all_waits_for_the_high_watermark_and_the_minimum_isr() {
    let alone = leader(&[ME], 10, 10);
    assert!(!alone.accepts_acks_all());
    assert_eq!(alone.acks_all(Offset(5)), AckState::NotEnoughReplicas);

    let mut leader = leader(&[ME, A], 10, 0);
    assert!(leader.accepts_acks_all());
    assert_eq!(leader.acks_all(Offset(6)), AckState::Waiting);
    report(&mut leader, A, 6, 1);
    assert_eq!(leader.acks_all(Offset(6)), AckState::Committed);
    assert_eq!(leader.acks_all(Offset(7)), AckState::Waiting);
    leader.on_isr_committed(vec![ME], 2);
    assert_eq!(leader.acks_all(Offset(6)), AckState::NotEnoughReplicas);
}

#[test]
fn an_sc_change_while_a_proposal_is_in_flight_leaves_it_in_flight() {
    let mut leader = leader(&[ME, A, B], 10, 0);
    report(&mut leader, A, 10, 60);
    let (id, proposed) = proposal(&leader.on_tick(150));
    assert_eq!(proposed, vec![ME, A]);
    // The SC drops A on its own before seeing the proposal.
    leader.on_isr_committed(vec![ME, B], 151);
    assert_eq!(leader.isr(), &[ME, B]);
    assert_eq!(leader.maximal_isr(), vec![ME, A, B]);
    assert_eq!(leader.on_tick(152), vec![]);
    leader.on_isr_refused(id);
    // B is still lagging; A, dropped by the SC, is caught up and comes back.
    assert_eq!(proposal(&leader.on_tick(153)).1, vec![ME, A]);
}

#[test]
fn followers_may_be_ahead_of_what_the_leader_has_synced() {
    // Under flush=always the leader counts what it has fsynced (10) but
    // has written more (14); a follower that synced faster reports 14.
    let mut leader = leader(&[ME, A], 10, 10);
    leader.on_written_end(Offset(14));
    assert_eq!(
        report(&mut leader, A, 14, 1),
        vec![],
        "capped by the leader's own end"
    );
    assert_eq!(leader.follower_end(A), Some(Offset(14)));
    assert_eq!(leader.on_local_end(Offset(14), 2), advance(14));
    assert_eq!(
        leader.on_follower_end(A, EPOCH, Offset(15), 3),
        Err(PositionError::Invalid {
            spu: A,
            end: Offset(15),
            leader_end: Offset(14),
        }),
        "nothing beyond what the leader wrote"
    );
}

#[test]
fn an_unsettled_proposal_is_sent_again_with_the_same_id() {
    let mut leader = leader(&[ME, A, B], 10, 0);
    let (first, proposed) = proposal(&leader.on_tick(1_000));
    assert_eq!(
        leader.on_tick(1_000 + PROPOSAL_RESEND_MS - 1),
        vec![],
        "not yet"
    );
    let again = leader.on_tick(1_000 + PROPOSAL_RESEND_MS);
    assert_eq!(proposal(&again), (first, proposed.clone()));
    assert_eq!(
        leader.on_tick(1_000 + PROPOSAL_RESEND_MS + 1),
        vec![],
        "the resend restarts the wait"
    );
    leader.on_isr_committed(proposed, 9_000);
    assert_eq!(leader.on_tick(9_000 + PROPOSAL_RESEND_MS), vec![]);
}
