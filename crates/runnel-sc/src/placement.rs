//! Replica placement: which SPUs hold the partitions of a new topic.
//!
//! A pure function of the online SPUs and what they already hold, so it is
//! tested without a controller. Rules, in order:
//! - the replicas of one partition are distinct SPUs;
//! - the first replica is the preferred leader, and leaders are spread
//!   evenly: each partition's leader is the SPU leading the fewest
//!   partitions (then holding the fewest replicas);
//! - the other replicas go to the SPUs holding the fewest replicas (then
//!   leading the fewest);
//! - ties go to the lowest SPU id, so the same input always gives the
//!   same placement.

use std::fmt;

use runnel_types::SpuId;

/// An online SPU and what it holds already, across all topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpuLoad {
    pub id: SpuId,
    /// Replicas the SPU holds, leaders included.
    pub replicas: u32,
    /// Partitions whose preferred leader the SPU is.
    pub leaders: u32,
}

/// Fewer online SPUs than replicas per partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotEnoughSpus {
    pub replication_factor: u16,
    pub online: usize,
}

impl fmt::Display for NotEnoughSpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let needed = self.replication_factor;
        let (replicas, need, spus) = if needed == 1 {
            ("replica", "needs", "SPU")
        } else {
            ("replicas", "need", "SPUs")
        };
        let verb = if self.online == 1 { "is" } else { "are" };
        write!(
            f,
            "{needed} {replicas} per partition {need} {needed} online {spus} but {online} {verb} online; \
             start SPUs with `runnel cluster start`",
            online = self.online,
        )
    }
}

/// Chooses the replica list of each of `partitions` partitions (first =
/// preferred leader) among `online` SPUs.
pub fn place(
    partitions: u32,
    replication_factor: u16,
    online: &[SpuLoad],
) -> Result<Vec<Vec<SpuId>>, NotEnoughSpus> {
    let wanted = usize::from(replication_factor);
    if wanted == 0 || online.len() < wanted {
        return Err(NotEnoughSpus {
            replication_factor,
            online: online.len(),
        });
    }
    let mut loads = online.to_vec();
    let mut placements = Vec::with_capacity(partitions as usize);
    for _ in 0..partitions {
        let mut replicas = Vec::with_capacity(wanted);
        let leader = (0..loads.len())
            .min_by_key(|&at| (loads[at].leaders, loads[at].replicas, loads[at].id))
            .expect("there is at least one online SPU");
        loads[leader].leaders += 1;
        loads[leader].replicas += 1;
        replicas.push(loads[leader].id);
        while replicas.len() < wanted {
            let follower = (0..loads.len())
                .filter(|&at| !replicas.contains(&loads[at].id))
                .min_by_key(|&at| (loads[at].replicas, loads[at].leaders, loads[at].id))
                .expect("more online SPUs than replicas chosen so far");
            loads[follower].replicas += 1;
            replicas.push(loads[follower].id);
        }
        placements.push(replicas);
    }
    Ok(placements)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn idle(ids: &[u32]) -> Vec<SpuLoad> {
        ids.iter()
            .map(|&id| SpuLoad {
                id: SpuId(id),
                replicas: 0,
                leaders: 0,
            })
            .collect()
    }

    fn ids(list: &[u32]) -> Vec<SpuId> {
        list.iter().copied().map(SpuId).collect()
    }

    /// (leaders, replicas) per SPU id.
    fn counts(placements: &[Vec<SpuId>]) -> BTreeMap<u32, (u32, u32)> {
        let mut counts = BTreeMap::new();
        for replicas in placements {
            for (position, spu) in replicas.iter().enumerate() {
                let entry = counts.entry(spu.0).or_insert((0, 0));
                entry.1 += 1;
                if position == 0 {
                    entry.0 += 1;
                }
            }
        }
        counts
    }

    #[test]
    fn six_partitions_on_three_spus_give_two_leaders_each() {
        let placements = place(6, 1, &idle(&[1, 2, 3])).expect("placed");
        assert_eq!(
            placements,
            vec![
                ids(&[1]),
                ids(&[2]),
                ids(&[3]),
                ids(&[1]),
                ids(&[2]),
                ids(&[3])
            ]
        );
        assert_eq!(
            counts(&placements),
            BTreeMap::from([(1, (2, 2)), (2, (2, 2)), (3, (2, 2))])
        );
    }

    #[test]
    fn replicas_of_a_partition_are_distinct_and_spread() {
        let placements = place(6, 3, &idle(&[1, 2, 3, 4])).expect("placed");
        for replicas in &placements {
            let distinct: BTreeSet<_> = replicas.iter().collect();
            assert_eq!(distinct.len(), 3, "{replicas:?}");
        }
        let counts = counts(&placements);
        let leaders: Vec<u32> = counts.values().map(|&(leaders, _)| leaders).collect();
        let replicas: Vec<u32> = counts.values().map(|&(_, replicas)| replicas).collect();
        assert!(
            leaders.iter().all(|&count| (1..=2).contains(&count)),
            "{counts:?}"
        );
        // 18 replicas over 4 SPUs: 4 or 5 each.
        assert!(
            replicas.iter().all(|&count| (4..=5).contains(&count)),
            "{counts:?}"
        );
    }

    #[test]
    fn replication_factor_equal_to_spus_uses_every_spu() {
        let placements = place(3, 2, &idle(&[5, 9])).expect("placed");
        assert_eq!(placements, vec![ids(&[5, 9]), ids(&[9, 5]), ids(&[5, 9])]);
    }

    #[test]
    fn existing_load_is_balanced_first() {
        let online = [
            SpuLoad {
                id: SpuId(1),
                replicas: 4,
                leaders: 4,
            },
            SpuLoad {
                id: SpuId(2),
                replicas: 1,
                leaders: 1,
            },
            SpuLoad {
                id: SpuId(3),
                replicas: 0,
                leaders: 0,
            },
        ];
        let placements = place(4, 1, &online).expect("placed");
        assert_eq!(placements, vec![ids(&[3]), ids(&[2]), ids(&[3]), ids(&[2])]);
    }

    #[test]
    fn same_input_same_placement_whatever_the_order() {
        let forward = place(7, 2, &idle(&[1, 2, 3])).expect("placed");
        let backward = place(7, 2, &idle(&[3, 2, 1])).expect("placed");
        assert_eq!(forward, backward);
    }

    #[test]
    fn too_few_spus_say_what_is_missing() {
        let error = place(1, 1, &[]).expect_err("no SPU");
        assert_eq!(
            error.to_string(),
            "1 replica per partition needs 1 online SPU but 0 are online; \
             start SPUs with `runnel cluster start`"
        );
        let error = place(2, 3, &idle(&[1, 2])).expect_err("two SPUs");
        assert_eq!(
            error.to_string(),
            "3 replicas per partition need 3 online SPUs but 2 are online; \
             start SPUs with `runnel cluster start`"
        );
        let error = place(2, 2, &idle(&[1])).expect_err("one SPU");
        assert!(error.to_string().contains("but 1 is online"), "{error}");
    }

    #[test]
    fn zero_partitions_place_nothing() {
        assert_eq!(place(0, 1, &idle(&[1])), Ok(vec![]));
    }
}
