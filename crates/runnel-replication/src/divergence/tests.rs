use proptest::prelude::*;

use super::*;

fn epochs(pairs: &[(i32, i64)]) -> Vec<(LeaderEpoch, Offset)> {
    pairs
        .iter()
        .map(|&(epoch, start)| (LeaderEpoch(epoch), Offset(start)))
        .collect()
}

fn check(
    own: &[(i32, i64)],
    own_end: i64,
    asked: i32,
    answer: Option<(i32, i64)>,
    leader_log_start: i64,
    expect: Result<Divergence, EpochEndError>,
) {
    let answer = answer.map(|(epoch, end)| (LeaderEpoch(epoch), Offset(end)));
    let got = on_epoch_end(
        &epochs(own),
        Offset(own_end),
        LeaderEpoch(asked),
        answer,
        Offset(leader_log_start),
    );
    assert_eq!(
        got, expect,
        "own {own:?} end {own_end}, asked {asked}, answer {answer:?}, leader start {leader_log_start}"
    );
}

fn truncate(offset: i64) -> Result<Divergence, EpochEndError> {
    Ok(Divergence::TruncateTo(Offset(offset)))
}

fn ask(epoch: i32) -> Result<Divergence, EpochEndError> {
    Ok(Divergence::Ask(LeaderEpoch(epoch)))
}

#[test]
fn first_question_is_the_latest_epoch() {
    assert_eq!(divergence_question(&[]), None);
    assert_eq!(
        divergence_question(&epochs(&[(1, 0), (3, 5)])),
        Some(LeaderEpoch(3))
    );
}

#[test]
fn same_epoch_cuts_where_the_shorter_log_stops_holding_it() {
    let own = [(1, 0), (3, 10)];
    check(&own, 20, 3, Some((3, 15)), 0, truncate(15));
    check(&own, 20, 3, Some((3, 25)), 0, truncate(20));
    check(&own, 20, 3, Some((3, 20)), 0, truncate(20));
}

#[test]
fn lower_epoch_held_by_the_follower_cuts_at_its_next_epoch() {
    let own = [(1, 0), (3, 10)];
    // The leader's epoch 1 runs past where the follower's epoch 3 began.
    check(&own, 20, 3, Some((1, 12)), 0, truncate(10));
    // The leader's epoch 1 ends first.
    check(&own, 20, 3, Some((1, 8)), 0, truncate(8));
}

#[test]
fn epoch_the_follower_lacks_is_asked_about_again_lower() {
    let own = [(1, 0), (4, 10)];
    check(&own, 20, 4, Some((2, 12)), 0, ask(1));
    check(&own, 20, 1, Some((1, 7)), 0, truncate(7));
    check(&own, 20, 1, Some((1, 14)), 0, truncate(10));
}

#[test]
fn no_lower_epoch_to_ask_about_cuts_at_the_follower_s_first_epoch() {
    let own = [(3, 5), (4, 10)];
    check(&own, 20, 4, Some((2, 8)), 0, truncate(5));
    // Below the follower's log start: the log is emptied and started there.
    check(&own, 20, 4, Some((2, 3)), 0, truncate(3));
}

#[test]
fn never_above_the_follower_s_end() {
    check(&[(1, 0)], 5, 1, Some((1, 9)), 0, truncate(5));
    check(&[(1, 0), (2, 5)], 5, 2, Some((2, 30)), 0, truncate(5));
}

#[test]
fn a_leader_without_so_old_an_epoch_resets_the_follower_to_its_log_start() {
    check(
        &[(2, 0)],
        10,
        2,
        None,
        40,
        Ok(Divergence::ResetTo(Offset(40))),
    );
    check(
        &[(2, 0)],
        10,
        2,
        None,
        0,
        Ok(Divergence::ResetTo(Offset::ZERO)),
    );
}

#[test]
fn an_answer_above_the_question_is_an_error() {
    check(
        &[(2, 0)],
        10,
        2,
        Some((3, 4)),
        0,
        Err(EpochEndError::AnswerNewerThanAsked {
            asked: LeaderEpoch(2),
            answered: LeaderEpoch(3),
        }),
    );
}

/// The epoch cache of a log given as one epoch per offset.
fn cache_of(log: &[i32]) -> Vec<(LeaderEpoch, Offset)> {
    let mut cache: Vec<(LeaderEpoch, Offset)> = Vec::new();
    for (offset, &epoch) in log.iter().enumerate() {
        if cache.last().is_none_or(|&(last, _)| last.0 != epoch) {
            cache.push((LeaderEpoch(epoch), Offset(offset as i64)));
        }
    }
    cache
}

/// What a leader answers (as `runnel_log::EpochCache::end_offset_for`).
fn leader_answer(
    cache: &[(LeaderEpoch, Offset)],
    epoch: LeaderEpoch,
    log_end: Offset,
) -> Option<(LeaderEpoch, Offset)> {
    let index = cache.iter().rposition(|&(known, _)| known <= epoch)?;
    let end = cache.get(index + 1).map_or(log_end, |&(_, start)| start);
    Some((cache[index].0, end))
}

/// Two logs that could both exist: a common prefix, the prefix's last
/// epoch continued by each for its own length, then suffixes in epochs
/// the other never held (leader odd, follower even above the prefix).
fn log_pair() -> impl Strategy<Value = (Vec<i32>, Vec<i32>)> {
    let runs = prop::collection::vec((0..3i32, 1..4usize), 0..5);
    let suffix = || prop::collection::vec((1..3i32, 1..4usize), 0..4);
    (runs, 0..4usize, 0..4usize, suffix(), suffix()).prop_map(
        |(runs, leader_extra, follower_extra, leader_runs, follower_runs)| {
            let mut prefix = Vec::new();
            let mut epoch = 0;
            for (gap, len) in runs {
                epoch += gap + 1;
                prefix.extend(std::iter::repeat_n(epoch, len));
            }
            let mut leader = prefix.clone();
            let mut follower = prefix.clone();
            if !prefix.is_empty() {
                leader.extend(std::iter::repeat_n(epoch, leader_extra));
                follower.extend(std::iter::repeat_n(epoch, follower_extra));
            }
            let extend = |log: &mut Vec<i32>, runs: &[(i32, usize)], parity: i32| {
                let mut step = 0;
                for &(gap, len) in runs {
                    step += gap;
                    log.extend(std::iter::repeat_n(epoch + 2 * step - parity, len));
                }
            };
            extend(&mut leader, &leader_runs, 1);
            extend(&mut follower, &follower_runs, 0);
            (leader, follower)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// The exchange keeps exactly the records both logs share, or, when the
    /// leader's retention removed the shared epochs, nothing it cannot
    /// match; and it ends within as many rounds as the follower has epochs.
    #[test]
    fn cut_is_the_common_prefix((leader, follower) in log_pair(), start_pick in 0..100usize) {
        let common = leader.iter().zip(&follower).take_while(|(a, b)| a == b).count();
        let leader_log_start = start_pick % (leader.len() + 1);
        let mut leader_cache = cache_of(&leader);
        if let Some(covering) = leader_cache
            .iter()
            .rposition(|&(_, start)| start.0 <= leader_log_start as i64)
        {
            leader_cache.drain(..covering);
            leader_cache[0].1 = Offset(leader_log_start as i64);
        }
        let leader_end = Offset(leader.len() as i64);
        let own = cache_of(&follower);
        let own_end = Offset(follower.len() as i64);

        let mut asked = divergence_question(&own);
        let mut outcome = None;
        for _ in 0..=own.len() {
            let Some(epoch) = asked else {
                outcome = Some(Divergence::TruncateTo(own_end));
                break;
            };
            let answer = leader_answer(&leader_cache, epoch, leader_end);
            match on_epoch_end(&own, own_end, epoch, answer, Offset(leader_log_start as i64)) {
                Ok(Divergence::Ask(next)) => {
                    prop_assert!(next < epoch, "asked {epoch}, then {next}");
                    prop_assert!(own.iter().any(|&(held, _)| held == next));
                    asked = Some(next);
                }
                Ok(done) => {
                    outcome = Some(done);
                    break;
                }
                Err(error) => prop_assert!(false, "{error}"),
            }
        }
        let outcome = outcome.expect("the exchange ends within the follower's epoch count");
        let kept = match outcome {
            Divergence::TruncateTo(offset) => offset.0 as usize,
            Divergence::ResetTo(_) => 0,
            Divergence::Ask(_) => unreachable!("loop exits only on a cut"),
        };
        prop_assert!(kept <= common, "kept {kept} records, only {common} are shared: {outcome:?}");
        if leader_log_start < common {
            prop_assert_eq!(kept, common, "{:?}", outcome);
        }
        if let Divergence::ResetTo(offset) = outcome {
            prop_assert_eq!(offset.0 as usize, leader_log_start);
        }
    }
}
