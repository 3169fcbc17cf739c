//! Replication as the SC drives it: ISR changes from leaders, elections
//! when SPUs fail or return, preferred leaders, restarts, producer ids.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use runnel_api::{
    CreateTopicRequest, ElectPreferredRequest, ElectionResult, ErrorCode, InitProducerIdRequest,
    ListPartitionsRequest, ProducerIdentity,
};
use runnel_metadata::{Partition, PartitionKey, ReplicaAssignment, TopicSpec};
use runnel_transport::Connection;
use runnel_types::{LeaderEpoch, PartitionId, SpuId};
use tokio::time::Instant;

use crate::support::{
    FakeSpu, Sc, Watcher, assert_error, bounded, key, name, spu_ids, spu_spec, topic_spec,
};
use crate::{PATIENT, snapshot, upserted};

/// Heartbeat period of fake SPUs under a short session timeout.
const HEARTBEAT: Duration = Duration::from_millis(100);

async fn create(client: &Connection, spec: TopicSpec) {
    bounded("create", client.call(&CreateTopicRequest { spec }))
        .await
        .expect("created");
}

async fn partition(client: &Connection, key: &PartitionKey) -> Partition {
    let partitions: Vec<Partition> = bounded(
        "partitions",
        client.call(&ListPartitionsRequest {
            topic: Some(key.topic.clone()),
        }),
    )
    .await
    .expect("listed");
    partitions
        .into_iter()
        .find(|partition| &partition.spec.key == key)
        .expect("the partition asked for")
}

/// Leader, epoch and ISR of a partition as listed.
async fn leadership(client: &Connection, key: &PartitionKey) -> (Option<SpuId>, i32, Vec<SpuId>) {
    let status = partition(client, key).await.status;
    (
        status.leader,
        status.leader_epoch.0,
        status.in_sync_replicas,
    )
}

/// Leader, epoch and ISR of an assignment.
fn led(assignment: &ReplicaAssignment) -> (Option<SpuId>, i32, Vec<SpuId>) {
    (
        assignment.leader,
        assignment.leader_epoch.0,
        assignment.in_sync_replicas.clone(),
    )
}

/// Connects SPUs `ids`, each reading its (empty) first snapshot.
async fn spus(sc: &Sc, ids: &[u32]) -> Vec<FakeSpu> {
    let mut spus = Vec::new();
    for &id in ids {
        let mut spu = sc.spu(id).await;
        assert_eq!(snapshot(spu.next().await), vec![], "SPU {id} starts empty");
        spus.push(spu);
    }
    spus
}

async fn elect_preferred(
    client: &Connection,
    topic: Option<&str>,
    partition: Option<u32>,
) -> Vec<ElectionResult> {
    bounded(
        "ElectPreferred",
        client.call(&ElectPreferredRequest {
            topic: topic.map(name),
            partition: partition.map(PartitionId),
        }),
    )
    .await
    .expect("elected")
}

#[tokio::test]
async fn alter_isr_takes_only_the_current_leaders_valid_changes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = Sc::start(dir.path(), PATIENT).await;
    let client = sc.client().await;
    let mut spus = spus(&sc, &[1, 2, 3]).await;
    create(&client, topic_spec("orders", 1, 3)).await;
    let orders = key("orders", 0);
    for spu in &mut spus {
        let assignment = upserted(spu.next().await);
        assert_eq!(assignment.replicas, spu_ids(&[1, 2, 3]));
        assert_eq!(led(&assignment), (Some(SpuId(1)), 0, spu_ids(&[1, 2, 3])));
    }

    // The leader shrinks the ISR; every replica is told, at the same epoch.
    let committed = spus[0]
        .alter_isr(&orders, 0, &[3, 2, 1], &[3, 1])
        .await
        .expect("accepted");
    assert_eq!(committed, spu_ids(&[1, 3]), "in replica order");
    for spu in &mut spus {
        assert_eq!(
            led(&upserted(spu.next().await)),
            (Some(SpuId(1)), 0, spu_ids(&[1, 3]))
        );
    }
    assert_eq!(
        leadership(&client, &orders).await,
        (Some(SpuId(1)), 0, spu_ids(&[1, 3]))
    );

    // Refusals change nothing.
    let leader = &spus[0];
    assert_error(
        leader.alter_isr(&orders, 1, &[1, 3], &[1]).await,
        ErrorCode::FENCED_LEADER_EPOCH,
        "at leader epoch 0, not 1",
    );
    assert_error(
        leader.alter_isr(&orders, 0, &[1, 2, 3], &[1]).await,
        ErrorCode::INVALID_ISR,
        "stale ISR",
    );
    assert_error(
        spus[2].alter_isr(&orders, 0, &[1, 3], &[3]).await,
        ErrorCode::NOT_LEADER,
        "SPU 3 does not lead partition orders-0 (SPU 1 does)",
    );
    assert_error(
        leader.alter_isr(&orders, 0, &[1, 3], &[3]).await,
        ErrorCode::INVALID_ISR,
        "leaves out its leader",
    );
    assert_error(
        leader.alter_isr(&orders, 0, &[1, 3], &[1, 4]).await,
        ErrorCode::INVALID_ISR,
        "SPU 4 holds no replica of partition orders-0",
    );
    assert_error(
        leader.alter_isr(&orders, 0, &[1, 3], &[1, 3, 3]).await,
        ErrorCode::INVALID_ISR,
        "names an SPU twice",
    );
    assert_error(
        leader.alter_isr(&key("orders", 1), 0, &[1], &[1]).await,
        ErrorCode::PARTITION_NOT_FOUND,
        "orders-1 does not exist",
    );

    // An offline replica cannot join; an online one can.
    let mut watcher = Watcher::open(&client).await;
    let gone = spus.remove(1);
    drop(gone);
    watcher
        .until("SPU 2 offline", |view| {
            view.spus.get(&SpuId(2)).is_some_and(|spu| !spu.online)
        })
        .await;
    assert_error(
        spus[0].alter_isr(&orders, 0, &[1, 3], &[1, 2, 3]).await,
        ErrorCode::INVALID_ISR,
        "SPU 2 is offline and cannot join",
    );
    assert_eq!(
        leadership(&client, &orders).await,
        (Some(SpuId(1)), 0, spu_ids(&[1, 3]))
    );
    spus[0]
        .alter_isr(&orders, 0, &[1, 3], &[1])
        .await
        .expect("shrunk");
    let committed = spus[0]
        .alter_isr(&orders, 0, &[1], &[1, 3])
        .await
        .expect("SPU 3 rejoins");
    assert_eq!(committed, spu_ids(&[1, 3]));
    for spu in &mut spus {
        let isrs = [upserted(spu.next().await), upserted(spu.next().await)]
            .map(|assignment| assignment.in_sync_replicas);
        assert_eq!(isrs, [spu_ids(&[1]), spu_ids(&[1, 3])]);
    }
    sc.stop().await;
}

#[tokio::test]
async fn a_failed_leader_is_replaced_from_the_isr_at_the_next_epoch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = Sc::start(dir.path(), PATIENT).await;
    let client = sc.client().await;
    let mut spus = spus(&sc, &[1, 2, 3]).await;
    create(&client, topic_spec("orders", 1, 3)).await;
    let orders = key("orders", 0);
    for spu in &mut spus {
        assert_eq!(upserted(spu.next().await).replicas, spu_ids(&[1, 2, 3]));
    }

    // The leader goes: the next ISR member in replica order leads.
    drop(spus.remove(0));
    for spu in &mut spus {
        let assignment = upserted(spu.next().await);
        assert_eq!(led(&assignment), (Some(SpuId(2)), 1, spu_ids(&[2, 3])));
        assert_eq!(assignment.leader_addr, Some(spu_spec(2).private_addr));
    }
    // A follower goes: it leaves the ISR, at the same epoch.
    drop(spus.pop());
    assert_eq!(
        led(&upserted(spus[0].next().await)),
        (Some(SpuId(2)), 1, spu_ids(&[2]))
    );
    assert_eq!(
        leadership(&client, &orders).await,
        (Some(SpuId(2)), 1, spu_ids(&[2]))
    );

    // The old leader returns as a follower outside the ISR.
    let mut back = sc.spu(1).await;
    let assignments = snapshot(back.next().await);
    assert_eq!(assignments.len(), 1);
    assert_eq!(led(&assignments[0]), (Some(SpuId(2)), 1, spu_ids(&[2])));
    sc.stop().await;
}

/// KIP-966: the last in-sync replica to fail keeps the ISR; nobody leads
/// until it returns, and a replica outside the ISR is not elected.
#[tokio::test]
async fn the_last_replica_standing_leads_again_when_it_returns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = Sc::start(dir.path(), PATIENT).await;
    let client = sc.client().await;
    let mut spus = spus(&sc, &[1, 2]).await;
    create(&client, topic_spec("orders", 1, 2)).await;
    let orders = key("orders", 0);
    for spu in &mut spus {
        assert_eq!(upserted(spu.next().await).replicas, spu_ids(&[1, 2]));
    }
    let mut watcher = Watcher::open(&client).await;

    drop(spus.pop());
    assert_eq!(
        led(&upserted(spus[0].next().await)),
        (Some(SpuId(1)), 0, spu_ids(&[1]))
    );
    drop(spus.pop());
    watcher
        .until("SPU 1 offline", |view| {
            view.spus.get(&SpuId(1)).is_some_and(|spu| !spu.online)
        })
        .await;
    assert_eq!(
        leadership(&client, &orders).await,
        (None, 1, spu_ids(&[1])),
        "no leader, the epoch bumped to fence SPU 1, the ISR kept"
    );

    // SPU 2 lacks records SPU 1 had acknowledged: it does not lead.
    let mut second = sc.spu(2).await;
    assert_eq!(
        led(&snapshot(second.next().await)[0]),
        (None, 1, spu_ids(&[1]))
    );
    assert_eq!(leadership(&client, &orders).await, (None, 1, spu_ids(&[1])));

    // SPU 1 returns and leads again.
    let mut first = sc.spu(1).await;
    assert_eq!(
        led(&snapshot(first.next().await)[0]),
        (Some(SpuId(1)), 2, spu_ids(&[1]))
    );
    let assignment = upserted(second.next().await);
    assert_eq!(led(&assignment), (Some(SpuId(1)), 2, spu_ids(&[1])));
    assert_eq!(assignment.leader_addr, Some(spu_spec(1).private_addr));
    sc.stop().await;
}

#[tokio::test]
async fn a_replica_outside_the_isr_leads_only_if_the_topic_allows_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = Sc::start(dir.path(), PATIENT).await;
    let client = sc.client().await;
    let mut spus = spus(&sc, &[1, 2]).await;
    // Partition 0 of each topic: replicas [1, 2]; partition 1: [2, 1].
    create(&client, topic_spec("clean", 2, 2)).await;
    let mut unclean = topic_spec("unclean", 2, 2);
    unclean.config.unclean_election = true;
    create(&client, unclean).await;
    for spu in &mut spus {
        for _ in 0..4 {
            spu.next().await;
        }
    }
    for topic in ["clean", "unclean"] {
        assert_eq!(
            partition(&client, &key(topic, 0)).await.spec.replicas,
            spu_ids(&[1, 2])
        );
        spus[0]
            .alter_isr(&key(topic, 0), 0, &[1, 2], &[1])
            .await
            .expect("SPU 2 fell behind");
        for spu in &mut spus {
            assert_eq!(upserted(spu.next().await).in_sync_replicas, spu_ids(&[1]));
        }
    }

    drop(spus.remove(0));
    let mut after: BTreeMap<String, (Option<SpuId>, i32, Vec<SpuId>)> = BTreeMap::new();
    for _ in 0..4 {
        let assignment = upserted(spus[0].next().await);
        after.insert(assignment.key.to_string(), led(&assignment));
    }
    assert_eq!(
        after,
        BTreeMap::from([
            ("clean-0".to_string(), (None, 1, spu_ids(&[1]))),
            ("clean-1".to_string(), (Some(SpuId(2)), 0, spu_ids(&[2]))),
            ("unclean-0".to_string(), (Some(SpuId(2)), 1, spu_ids(&[2]))),
            ("unclean-1".to_string(), (Some(SpuId(2)), 0, spu_ids(&[2]))),
        ])
    );

    // SPU 1 returns: it leads the clean partition again; the unclean one
    // stays with SPU 2, whose log is now the partition's.
    let mut back = sc.spu(1).await;
    let assignments: BTreeMap<String, (Option<SpuId>, i32, Vec<SpuId>)> =
        snapshot(back.next().await)
            .iter()
            .map(|assignment| (assignment.key.to_string(), led(assignment)))
            .collect();
    assert_eq!(assignments["clean-0"], (Some(SpuId(1)), 2, spu_ids(&[1])));
    assert_eq!(assignments["unclean-0"], (Some(SpuId(2)), 1, spu_ids(&[2])));
    sc.stop().await;
}

#[tokio::test]
async fn elect_preferred_moves_leadership_back_once_in_sync() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = Sc::start(dir.path(), PATIENT).await;
    let client = sc.client().await;
    let mut spus = spus(&sc, &[1, 2]).await;
    create(&client, topic_spec("orders", 1, 2)).await;
    let orders = key("orders", 0);
    for spu in &mut spus {
        spu.next().await;
    }
    let result = |leader: u32, epoch: i32, error: Option<&str>| {
        (Some(SpuId(leader)), epoch, error.map(str::to_string))
    };
    let summary = |results: Vec<ElectionResult>| -> Vec<(Option<SpuId>, i32, Option<String>)> {
        results
            .into_iter()
            .map(|result| {
                assert_eq!(result.key, key("orders", 0));
                (
                    result.leader,
                    result.leader_epoch.0,
                    result.error.map(|error| {
                        assert_eq!(error.code, ErrorCode::ELECTION_NOT_POSSIBLE, "{error:?}");
                        error.message
                    }),
                )
            })
            .collect()
    };
    assert_eq!(
        summary(elect_preferred(&client, None, None).await),
        vec![result(1, 0, None)],
        "already preferred"
    );

    let mut first = spus.remove(0);
    let mut second = spus.remove(0);
    drop(first);
    assert_eq!(
        led(&upserted(second.next().await)),
        (Some(SpuId(2)), 1, spu_ids(&[2]))
    );
    assert_eq!(
        summary(elect_preferred(&client, Some("orders"), None).await),
        vec![result(
            2,
            1,
            Some("preferred replica SPU 1 is offline; start it and elect again")
        )]
    );

    first = sc.spu(1).await;
    snapshot(first.next().await);
    let results = summary(elect_preferred(&client, Some("orders"), Some(0)).await);
    assert_eq!(results.len(), 1);
    let why = results[0].2.as_deref().expect("not moved");
    assert!(
        why.starts_with("preferred replica SPU 1 is not in sync"),
        "{why}"
    );

    // Caught up, the leader takes SPU 1 back into the ISR; now it can lead.
    second
        .alter_isr(&orders, 1, &[2], &[2, 1])
        .await
        .expect("SPU 1 rejoins");
    for spu in [&mut first, &mut second] {
        assert_eq!(
            upserted(spu.next().await).in_sync_replicas,
            spu_ids(&[1, 2])
        );
    }
    assert_eq!(
        summary(elect_preferred(&client, Some("orders"), Some(0)).await),
        vec![result(1, 2, None)]
    );
    for spu in [&mut first, &mut second] {
        assert_eq!(
            led(&upserted(spu.next().await)),
            (Some(SpuId(1)), 2, spu_ids(&[1, 2]))
        );
    }

    assert_error(
        bounded(
            "unknown topic",
            client.call(&ElectPreferredRequest {
                topic: Some(name("nope")),
                partition: None,
            }),
        )
        .await,
        ErrorCode::TOPIC_NOT_FOUND,
        "'nope'",
    );
    assert_error(
        bounded(
            "unknown partition",
            client.call(&ElectPreferredRequest {
                topic: Some(name("orders")),
                partition: Some(PartitionId(5)),
            }),
        )
        .await,
        ErrorCode::PARTITION_NOT_FOUND,
        "topic 'orders' has no partition 5: it has only partition 0",
    );
    assert_error(
        bounded(
            "partition without topic",
            client.call(&ElectPreferredRequest {
                topic: None,
                partition: Some(PartitionId(0)),
            }),
        )
        .await,
        ErrorCode::MALFORMED_REQUEST,
        "without its topic",
    );
    sc.stop().await;
}

/// The liveness check moves leadership back by itself.
#[tokio::test]
async fn leadership_returns_to_the_preferred_replica_by_itself() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = Sc::start(dir.path(), Duration::from_secs(2)).await;
    let client = sc.client().await;
    let mut spus = spus(&sc, &[1, 2]).await;
    let mut second = spus.pop().expect("SPU 2");
    let first = spus.pop().expect("SPU 1");
    let first_alive = first.keep_alive(HEARTBEAT);
    let _second_alive = second.keep_alive(HEARTBEAT);
    create(&client, topic_spec("orders", 1, 2)).await;
    let orders = key("orders", 0);
    assert_eq!(
        led(&upserted(second.next().await)),
        (Some(SpuId(1)), 0, spu_ids(&[1, 2]))
    );

    // SPU 1 leaves; SPU 2 leads epoch 1.
    drop((first_alive, first));
    assert_eq!(
        led(&upserted(second.next().await)),
        (Some(SpuId(2)), 1, spu_ids(&[2]))
    );

    let mut watcher = Watcher::open(&client).await;
    let first = sc.spu(1).await;
    let _first_alive = first.keep_alive(HEARTBEAT);
    second
        .alter_isr(&orders, 1, &[2], &[1, 2])
        .await
        .expect("SPU 1 rejoins");
    watcher
        .until("SPU 1 leads again", |view| {
            view.partitions.get(&orders).is_some_and(|partition| {
                partition.status.leader == Some(SpuId(1))
                    && partition.status.leader_epoch == LeaderEpoch(2)
            })
        })
        .await;
    assert_eq!(
        leadership(&client, &orders).await,
        (Some(SpuId(1)), 2, spu_ids(&[1, 2]))
    );
    sc.stop().await;
}

/// After a restart the SC knows no session: an SPU that led before is not
/// replaced until it has had a session timeout to reconnect.
#[tokio::test]
async fn after_a_restart_no_leader_is_replaced_within_the_session_timeout() {
    let session_timeout = Duration::from_secs(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = Sc::start(dir.path(), session_timeout).await;
    let client = sc.client().await;
    let spus = spus(&sc, &[1, 2]).await;
    let alive: Vec<_> = spus.iter().map(|spu| spu.keep_alive(HEARTBEAT)).collect();
    create(&client, topic_spec("orders", 1, 2)).await;
    let orders = key("orders", 0);
    let (public_addr, private_addr) = (sc.public_addr.clone(), sc.private_addr.clone());
    // Stopping the SC ends every session; that elects nobody.
    sc.stop().await;
    drop((alive, spus, client));

    let restarted = Instant::now();
    let sc = Sc::start_on(dir.path(), session_timeout, public_addr, private_addr).await;
    let client = sc.client().await;
    let mut watcher = Watcher::open(&client).await;
    let second = sc.spu(2).await;
    let _second_alive = second.keep_alive(HEARTBEAT);
    watcher
        .until("SPU 2 leads", |view| {
            view.partitions
                .get(&orders)
                .is_some_and(|partition| partition.status.leader == Some(SpuId(2)))
        })
        .await;
    assert!(
        restarted.elapsed() >= session_timeout,
        "SPU 1 was replaced {:?} after the restart, within the session timeout",
        restarted.elapsed()
    );
    assert_eq!(
        leadership(&client, &orders).await,
        (Some(SpuId(2)), 1, spu_ids(&[2]))
    );
    sc.stop().await;
}

#[tokio::test]
async fn producer_ids_are_never_given_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = Sc::start(dir.path(), PATIENT).await;
    let client = sc.client().await;
    let mut given: Vec<ProducerIdentity> = Vec::new();
    let concurrent: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call(&InitProducerIdRequest {}).await })
        })
        .collect();
    for call in concurrent {
        let identity = bounded("InitProducerId", call)
            .await
            .expect("the call's task")
            .expect("a producer id");
        given.push(identity);
    }
    let (public_addr, private_addr) = (sc.public_addr.clone(), sc.private_addr.clone());
    sc.stop().await;

    let sc = Sc::start_on(dir.path(), PATIENT, public_addr, private_addr).await;
    let client = sc.client().await;
    for _ in 0..3 {
        given.push(
            bounded("InitProducerId", client.call(&InitProducerIdRequest {}))
                .await
                .expect("a producer id"),
        );
    }
    let ids: BTreeSet<i64> = given.iter().map(|identity| identity.producer_id).collect();
    assert_eq!(ids.len(), given.len(), "every id is new: {given:?}");
    assert!(ids.iter().all(|&id| id >= 0), "{ids:?}");
    assert!(
        given.iter().all(|identity| identity.producer_epoch == 0),
        "{given:?}"
    );
    sc.stop().await;
}
