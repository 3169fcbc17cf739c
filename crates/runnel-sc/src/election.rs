//! Who leads each partition and who is in its ISR: the SC's decisions, as
//! pure functions of a partition's record and which SPUs are alive, so
//! every rule is tested without a store, a clock or a socket.
//!
//! The rules (Kafka's, with KIP-966's "last replica standing"):
//! - A failed leader is replaced by the first replica, in replica-list
//!   order, that is in the ISR and online; the epoch is bumped and the
//!   offline SPUs leave the ISR. The ISR is the set of replicas holding
//!   every committed record, so any member can take over without loss.
//! - With no such replica the partition has no leader (epoch bumped, so
//!   the old leader is fenced) and keeps its ISR: nobody writes without a
//!   leader, so every member still holds every committed record, and the
//!   first of them to return leads again. The ISR is never emptied.
//! - A replica outside the ISR leads only if the topic opts in to unclean
//!   election, and only once every ISR member has failed (not while one
//!   may still be reconnecting); its ISR is then itself alone.
//! - A failed follower leaves the ISR at the same epoch, so `acks=all`
//!   stops waiting for it.
//! - Only the leader changes the ISR otherwise ([`alter_isr`]), with the
//!   current epoch and the ISR it was last told, so two changes never
//!   cross.

use std::collections::BTreeSet;

use runnel_api::{AlterIsrRequest, ApiError, ErrorCode};
use runnel_types::{LeaderEpoch, SpuId};

use crate::store::PartitionRecord;

/// Which SPUs are alive, as the controller sees them at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Liveness {
    /// SPUs with a session.
    pub online: BTreeSet<SpuId>,
    /// Offline SPUs taken for failed: their session ended, or they did
    /// not reconnect within the session timeout after the SC started.
    /// Offline SPUs not in here may still be on their way back.
    pub failed: BTreeSet<SpuId>,
}

impl Liveness {
    fn is_online(&self, spu: SpuId) -> bool {
        self.online.contains(&spu)
    }

    fn has_failed(&self, spu: SpuId) -> bool {
        self.failed.contains(&spu)
    }
}

/// What [`reconcile`] changed in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A replica of the ISR leads from the next epoch.
    Elected,
    /// A replica outside the ISR leads from the next epoch: records only
    /// the old ISR held are lost.
    ElectedUnclean,
    /// The leader failed and no replica may take over; the epoch is bumped
    /// and the ISR kept until one of its members returns.
    Leaderless,
    /// Failed followers left the ISR; same leader, same epoch.
    IsrShrunk,
}

/// A partition's new record and why it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub record: PartitionRecord,
    pub decision: Decision,
}

/// The change `liveness` calls for in `record`'s partition, if any.
/// `unclean_election` is the topic's setting. `damaged` are the replicas
/// that reported damage in their log: they leave the ISR and may not be
/// elected, as if failed, except that a damaged leader no other replica
/// can replace keeps leading (it still serves what is sound).
pub fn reconcile(
    record: &PartitionRecord,
    unclean_election: bool,
    liveness: &Liveness,
    damaged: &BTreeSet<SpuId>,
) -> Option<Outcome> {
    if damaged.is_empty() {
        return reconcile_live(record, unclean_election, liveness);
    }
    let mut sound = liveness.clone();
    for &spu in damaged {
        sound.online.remove(&spu);
        sound.failed.insert(spu);
    }
    let outcome = reconcile_live(record, false, &sound);
    let stranded = record
        .leader
        .is_some_and(|leader| damaged.contains(&leader) && !liveness.has_failed(leader));
    match outcome {
        Some(outcome) if stranded && outcome.decision == Decision::Leaderless => {
            reconcile_live(record, unclean_election, liveness)
        }
        outcome => outcome,
    }
}

/// [`reconcile`] without damage.
fn reconcile_live(
    record: &PartitionRecord,
    unclean_election: bool,
    liveness: &Liveness,
) -> Option<Outcome> {
    match record.leader {
        Some(leader) if !liveness.has_failed(leader) => {
            let in_sync: Vec<SpuId> = record
                .in_sync_replicas
                .iter()
                .copied()
                .filter(|&member| member == leader || !liveness.has_failed(member))
                .collect();
            (in_sync != record.in_sync_replicas).then(|| Outcome {
                record: PartitionRecord {
                    in_sync_replicas: in_sync,
                    ..record.clone()
                },
                decision: Decision::IsrShrunk,
            })
        }
        // The leader failed, or there was none: elect.
        leader => {
            let outcome = elect(record, unclean_election, liveness);
            // A partition without a leader that still finds none is left
            // as it is: no epoch to bump, nobody to fence.
            (leader.is_some() || outcome.decision != Decision::Leaderless).then_some(outcome)
        }
    }
}

/// A new leader (or none) for a partition whose leader failed or is
/// missing.
fn elect(record: &PartitionRecord, unclean_election: bool, liveness: &Liveness) -> Outcome {
    let replicas = &record.spec.replicas;
    let in_sync = &record.in_sync_replicas;
    let leader_epoch = next_epoch(record.leader_epoch);
    let clean = replicas
        .iter()
        .copied()
        .find(|&spu| in_sync.contains(&spu) && liveness.is_online(spu));
    if let Some(leader) = clean {
        return Outcome {
            record: PartitionRecord {
                leader: Some(leader),
                leader_epoch,
                in_sync_replicas: in_sync
                    .iter()
                    .copied()
                    .filter(|&member| liveness.is_online(member))
                    .collect(),
                spec: record.spec.clone(),
            },
            decision: Decision::Elected,
        };
    }
    let every_in_sync_failed = in_sync.iter().all(|&member| liveness.has_failed(member));
    let unclean = replicas
        .iter()
        .copied()
        .find(|&spu| liveness.is_online(spu))
        .filter(|_| unclean_election && every_in_sync_failed);
    match unclean {
        Some(leader) => Outcome {
            record: PartitionRecord {
                leader: Some(leader),
                leader_epoch,
                in_sync_replicas: vec![leader],
                spec: record.spec.clone(),
            },
            decision: Decision::ElectedUnclean,
        },
        None => Outcome {
            record: PartitionRecord {
                leader: None,
                leader_epoch,
                in_sync_replicas: in_sync.clone(),
                spec: record.spec.clone(),
            },
            decision: Decision::Leaderless,
        },
    }
}

/// Leadership moved to the preferred replica (the first of the replica
/// list): `Ok(None)` if it leads already, the new record if it can,
/// otherwise why not. The ISR is unchanged: the old leader stays in sync
/// as a follower.
pub fn preferred(
    record: &PartitionRecord,
    online: &BTreeSet<SpuId>,
) -> Result<Option<PartitionRecord>, String> {
    let preferred = *record
        .spec
        .replicas
        .first()
        .expect("a partition has replicas: placement gives every one at least one");
    if record.leader == Some(preferred) {
        return Ok(None);
    }
    if !online.contains(&preferred) {
        return Err(format!(
            "preferred replica SPU {preferred} is offline; start it and elect again"
        ));
    }
    if !record.in_sync_replicas.contains(&preferred) {
        return Err(format!(
            "preferred replica SPU {preferred} is not in sync; it leads once the leader takes it \
             back into the ISR"
        ));
    }
    Ok(Some(PartitionRecord {
        leader: Some(preferred),
        leader_epoch: next_epoch(record.leader_epoch),
        ..record.clone()
    }))
}

/// `record` with the ISR the leader asks for in `request`, in replica-list
/// order, or why the request is refused. `online` are the SPUs with a
/// session: a replica joins the ISR only while it is online.
pub fn alter_isr(
    record: &PartitionRecord,
    request: &AlterIsrRequest,
    online: &BTreeSet<SpuId>,
) -> Result<PartitionRecord, ApiError> {
    let key = &record.spec.key;
    if request.leader_epoch != record.leader_epoch {
        return Err(ApiError::new(
            ErrorCode::FENCED_LEADER_EPOCH,
            format!(
                "partition {key} is at leader epoch {}, not {}; wait for the new assignment",
                record.leader_epoch, request.leader_epoch
            ),
        ));
    }
    if record.leader != Some(request.spu) {
        let leader = record
            .leader
            .map_or_else(|| "no SPU".to_string(), |leader| format!("SPU {leader}"));
        return Err(ApiError::new(
            ErrorCode::NOT_LEADER,
            format!(
                "SPU {} does not lead partition {key} ({leader} does); only the leader changes \
                 the ISR",
                request.spu
            ),
        ));
    }
    let current: BTreeSet<SpuId> = record.in_sync_replicas.iter().copied().collect();
    // A proposal sent again after its answer was lost: already done.
    let wanted: BTreeSet<SpuId> = request.new_isr.iter().copied().collect();
    if wanted == current && wanted.len() == request.new_isr.len() {
        return Ok(record.clone());
    }
    let claimed: BTreeSet<SpuId> = request.current_isr.iter().copied().collect();
    if claimed != current || request.current_isr.len() != claimed.len() {
        return Err(invalid_isr(format!(
            "stale ISR {:?} for partition {key}: the SC holds {:?}; propose again from the \
             latest assignment",
            request.current_isr, record.in_sync_replicas
        )));
    }
    if wanted.len() != request.new_isr.len() {
        return Err(invalid_isr(format!(
            "ISR {:?} for partition {key} names an SPU twice",
            request.new_isr
        )));
    }
    if let Some(stranger) = wanted
        .iter()
        .find(|spu| !record.spec.replicas.contains(spu))
    {
        return Err(invalid_isr(format!(
            "SPU {stranger} holds no replica of partition {key} (replicas {:?}) and cannot be in \
             its ISR",
            record.spec.replicas
        )));
    }
    if !wanted.contains(&request.spu) {
        return Err(invalid_isr(format!(
            "ISR {:?} for partition {key} leaves out its leader, SPU {}; the leader is always in \
             sync",
            request.new_isr, request.spu
        )));
    }
    if let Some(offline) = wanted
        .difference(&current)
        .find(|spu| !online.contains(spu))
    {
        return Err(invalid_isr(format!(
            "SPU {offline} is offline and cannot join the ISR of partition {key}"
        )));
    }
    Ok(PartitionRecord {
        in_sync_replicas: record
            .spec
            .replicas
            .iter()
            .copied()
            .filter(|spu| wanted.contains(spu))
            .collect(),
        ..record.clone()
    })
}

fn invalid_isr(message: String) -> ApiError {
    ApiError::new(ErrorCode::INVALID_ISR, message)
}

pub fn next_epoch(epoch: LeaderEpoch) -> LeaderEpoch {
    LeaderEpoch(
        epoch
            .0
            .checked_add(1)
            .expect("a leader epoch stays below i32::MAX: it grows by one per election"),
    )
}

#[cfg(test)]
mod tests {
    use runnel_metadata::{PartitionKey, PartitionSpec};
    use runnel_types::{PartitionId, TopicName};

    use super::*;

    fn ids(list: &[u32]) -> Vec<SpuId> {
        list.iter().copied().map(SpuId).collect()
    }

    fn key() -> PartitionKey {
        PartitionKey {
            topic: TopicName::new("orders").expect("valid name"),
            partition: PartitionId(0),
        }
    }

    /// Replicas 1, 2, 3 (1 preferred) with this leader, epoch and ISR.
    fn record(leader: Option<u32>, epoch: i32, in_sync: &[u32]) -> PartitionRecord {
        PartitionRecord {
            spec: PartitionSpec {
                key: key(),
                replicas: ids(&[1, 2, 3]),
            },
            leader: leader.map(SpuId),
            leader_epoch: LeaderEpoch(epoch),
            in_sync_replicas: ids(in_sync),
        }
    }

    fn liveness(online: &[u32], failed: &[u32]) -> Liveness {
        Liveness {
            online: ids(online).into_iter().collect(),
            failed: ids(failed).into_iter().collect(),
        }
    }

    /// One case: the record before, who is alive, the topic's unclean
    /// setting, and the expected change (`None`: nothing to do).
    struct Case {
        name: &'static str,
        before: PartitionRecord,
        alive: Liveness,
        unclean: bool,
        after: Option<(PartitionRecord, Decision)>,
    }

    #[test]
    fn reconcile_follows_the_election_rules() {
        use Decision::*;
        let cases = [
            Case {
                name: "all alive: nothing to do",
                before: record(Some(1), 0, &[1, 2, 3]),
                alive: liveness(&[1, 2, 3], &[]),
                unclean: false,
                after: None,
            },
            Case {
                name: "leader failed: the next ISR member in replica order leads",
                before: record(Some(1), 4, &[1, 2, 3]),
                alive: liveness(&[2, 3], &[1]),
                unclean: false,
                after: Some((record(Some(2), 5, &[2, 3]), Elected)),
            },
            Case {
                name: "replica order, not ISR order, picks the leader",
                before: PartitionRecord {
                    in_sync_replicas: ids(&[3, 1, 2]),
                    ..record(Some(1), 0, &[])
                },
                alive: liveness(&[2, 3], &[1]),
                unclean: false,
                after: Some((
                    PartitionRecord {
                        in_sync_replicas: ids(&[3, 2]),
                        ..record(Some(2), 1, &[])
                    },
                    Elected,
                )),
            },
            Case {
                name: "an online replica outside the ISR is passed over",
                before: record(Some(1), 0, &[1, 3]),
                alive: liveness(&[2, 3], &[1]),
                unclean: false,
                after: Some((record(Some(3), 1, &[3]), Elected)),
            },
            Case {
                name: "offline ISR members leave the ISR at an election",
                before: record(Some(1), 0, &[1, 2, 3]),
                alive: liveness(&[3], &[1]),
                unclean: false,
                after: Some((record(Some(3), 1, &[3]), Elected)),
            },
            Case {
                name: "last replica standing: no leader, the ISR is kept",
                before: record(Some(1), 2, &[1]),
                alive: liveness(&[2, 3], &[1]),
                unclean: false,
                after: Some((record(None, 3, &[1]), Leaderless)),
            },
            Case {
                name: "unclean election when opted in and the ISR has failed",
                before: record(Some(1), 2, &[1]),
                alive: liveness(&[3], &[1, 2]),
                unclean: true,
                after: Some((record(Some(3), 3, &[3]), ElectedUnclean)),
            },
            Case {
                name: "no unclean election while an ISR member may be reconnecting",
                before: record(Some(1), 2, &[1, 2]),
                alive: liveness(&[3], &[1]),
                unclean: true,
                after: Some((record(None, 3, &[1, 2]), Leaderless)),
            },
            Case {
                name: "no unclean election with nobody online",
                before: record(Some(1), 2, &[1]),
                alive: liveness(&[], &[1, 2, 3]),
                unclean: true,
                after: Some((record(None, 3, &[1]), Leaderless)),
            },
            Case {
                name: "without a leader, a returning ISR member leads",
                before: record(None, 3, &[1, 2]),
                alive: liveness(&[2, 3], &[1]),
                unclean: false,
                after: Some((record(Some(2), 4, &[2]), Elected)),
            },
            Case {
                name: "without a leader and no ISR member back: unchanged",
                before: record(None, 3, &[1]),
                alive: liveness(&[2, 3], &[1]),
                unclean: false,
                after: None,
            },
            Case {
                name: "without a leader, unclean when opted in",
                before: record(None, 3, &[1]),
                alive: liveness(&[2], &[1, 3]),
                unclean: true,
                after: Some((record(Some(2), 4, &[2]), ElectedUnclean)),
            },
            Case {
                name: "a failed follower leaves the ISR at the same epoch",
                before: record(Some(1), 7, &[1, 2, 3]),
                alive: liveness(&[1, 3], &[2]),
                unclean: false,
                after: Some((record(Some(1), 7, &[1, 3]), IsrShrunk)),
            },
            Case {
                name: "an offline leader not yet failed keeps leading (SC restart)",
                before: record(Some(1), 7, &[1, 2, 3]),
                alive: liveness(&[2], &[]),
                unclean: true,
                after: None,
            },
            Case {
                name: "an offline follower not yet failed stays in the ISR",
                before: record(Some(1), 7, &[1, 2, 3]),
                alive: liveness(&[1], &[3]),
                unclean: false,
                after: Some((record(Some(1), 7, &[1, 2]), IsrShrunk)),
            },
        ];
        for case in cases {
            let got = reconcile(&case.before, case.unclean, &case.alive, &BTreeSet::new())
                .map(|outcome| (outcome.record, outcome.decision));
            assert_eq!(got, case.after, "{}", case.name);
        }
    }

    #[test]
    fn damaged_replicas_neither_lead_nor_stay_in_sync_while_others_can() {
        let everyone = liveness(&[1, 2, 3], &[]);
        let damaged = |list: &[u32]| -> BTreeSet<SpuId> { ids(list).into_iter().collect() };
        let decide = |before: &PartitionRecord, unclean: bool, hurt: &[u32]| {
            reconcile(before, unclean, &everyone, &damaged(hurt))
                .map(|outcome| (outcome.record, outcome.decision))
        };
        assert_eq!(
            decide(&record(Some(1), 4, &[1, 2, 3]), false, &[1]),
            Some((record(Some(2), 5, &[2, 3]), Decision::Elected)),
            "a damaged leader hands over to a sound ISR member"
        );
        assert_eq!(
            decide(&record(Some(1), 4, &[1, 2, 3]), false, &[3]),
            Some((record(Some(1), 4, &[1, 2]), Decision::IsrShrunk)),
            "a damaged follower leaves the ISR"
        );
        assert_eq!(
            decide(&record(Some(1), 4, &[1]), true, &[1]),
            None,
            "a damaged last in-sync leader keeps leading: nobody else has its records"
        );
        assert_eq!(
            decide(&record(None, 4, &[1, 2]), false, &[1]),
            Some((record(Some(2), 5, &[2]), Decision::Elected)),
            "no damaged replica is elected"
        );
        assert_eq!(decide(&record(Some(1), 4, &[1, 2, 3]), false, &[]), None);
    }

    #[test]
    fn preferred_leader_returns_only_when_online_and_in_sync() {
        let online: BTreeSet<SpuId> = ids(&[1, 2, 3]).into_iter().collect();
        assert_eq!(preferred(&record(Some(1), 3, &[1, 2]), &online), Ok(None));
        assert_eq!(
            preferred(&record(Some(2), 3, &[1, 2]), &online),
            Ok(Some(record(Some(1), 4, &[1, 2])))
        );
        assert_eq!(
            preferred(&record(None, 3, &[1]), &online),
            Ok(Some(record(Some(1), 4, &[1])))
        );
        let error = preferred(&record(Some(2), 3, &[2, 3]), &online).expect_err("not in sync");
        assert!(
            error.starts_with("preferred replica SPU 1 is not in sync"),
            "{error}"
        );
        let without_one: BTreeSet<SpuId> = ids(&[2, 3]).into_iter().collect();
        let error = preferred(&record(Some(2), 3, &[1, 2]), &without_one).expect_err("offline");
        assert!(
            error.starts_with("preferred replica SPU 1 is offline"),
            "{error}"
        );
    }

    fn request(spu: u32, epoch: i32, current: &[u32], new: &[u32]) -> AlterIsrRequest {
        AlterIsrRequest {
            spu: SpuId(spu),
            key: key(),
            leader_epoch: LeaderEpoch(epoch),
            current_isr: ids(current),
            new_isr: ids(new),
        }
    }

    #[test]
    fn alter_isr_takes_only_current_valid_changes() {
        let before = record(Some(1), 2, &[1, 2]);
        let online: BTreeSet<SpuId> = ids(&[1, 2]).into_iter().collect();
        let accepted = [
            // Shrink; the claimed ISR may be in any order.
            (request(1, 2, &[2, 1], &[1]), ids(&[1])),
            // No change is a change to the same ISR.
            (request(1, 2, &[1, 2], &[2, 1]), ids(&[1, 2])),
        ];
        for (request, in_sync) in accepted {
            let after = alter_isr(&before, &request, &online).expect("accepted");
            assert_eq!(after.in_sync_replicas, in_sync, "{request:?}");
            assert_eq!(after.leader, before.leader);
            assert_eq!(after.leader_epoch, before.leader_epoch);
        }
        let expand = alter_isr(
            &record(Some(1), 2, &[1]),
            &request(1, 2, &[1], &[3, 1]),
            &ids(&[1, 3]).into_iter().collect(),
        )
        .expect("an online replica joins");
        assert_eq!(expand.in_sync_replicas, ids(&[1, 3]), "replica order");

        let refused = [
            (
                request(1, 1, &[1, 2], &[1]),
                ErrorCode::FENCED_LEADER_EPOCH,
                "epoch 2, not 1",
            ),
            (
                request(1, 3, &[1, 2], &[1]),
                ErrorCode::FENCED_LEADER_EPOCH,
                "epoch 2, not 3",
            ),
            (
                request(2, 2, &[1, 2], &[2]),
                ErrorCode::NOT_LEADER,
                "SPU 1 does",
            ),
            (
                request(1, 2, &[1, 3], &[1]),
                ErrorCode::INVALID_ISR,
                "stale",
            ),
            (
                request(1, 2, &[1, 2, 2], &[1]),
                ErrorCode::INVALID_ISR,
                "stale",
            ),
            (
                request(1, 2, &[1, 2], &[1, 1]),
                ErrorCode::INVALID_ISR,
                "twice",
            ),
            (
                request(1, 2, &[1, 2], &[1, 4]),
                ErrorCode::INVALID_ISR,
                "SPU 4 holds no replica",
            ),
            (
                request(1, 2, &[1, 2], &[2]),
                ErrorCode::INVALID_ISR,
                "leaves out its leader",
            ),
            (
                request(1, 2, &[1, 2], &[1, 2, 3]),
                ErrorCode::INVALID_ISR,
                "SPU 3 is offline",
            ),
        ];
        // A proposal sent again after its answer was lost is answered as
        // done, though its `current_isr` is stale by now.
        assert_eq!(
            alter_isr(&before, &request(1, 2, &[1], &[1, 2]), &online).expect("done already"),
            before
        );
        for (request, code, text) in refused {
            let error = alter_isr(&before, &request, &online).expect_err("refused");
            assert_eq!(error.code, code, "{request:?}: {error:?}");
            assert!(error.message.contains(text), "{request:?}: {error:?}");
        }
        let leaderless = record(None, 3, &[1]);
        let error =
            alter_isr(&leaderless, &request(1, 3, &[1], &[1]), &online).expect_err("no leader");
        assert_eq!(error.code, ErrorCode::NOT_LEADER, "{error:?}");
        assert!(error.message.contains("no SPU does"), "{error:?}");
    }
}
