//! The SC through its listeners: topics, placement, SPU sessions, metadata
//! watches, restarts, and refusals, with real connections on loopback.
//! `replication`: ISR changes, elections, preferred leaders, producer ids.

mod replication;
mod security;
mod support;
mod tls_support;

use std::collections::BTreeMap;
use std::time::Duration;

use runnel_api::{
    ApiError, ApiKey, ApiVersionsRequest, CreateTopicRequest, DeleteTopicRequest, ErrorCode,
    ListPartitionsRequest, ListSpusRequest, ListTopicsRequest, RegisterSpuRequest, Reply, Request,
    SpuConnectRequest, SpuHeartbeatRequest, UnregisterSpuRequest, WatchMetadataRequest,
};
use runnel_metadata::{
    AssignmentUpdate, Change, MetadataUpdate, ObjectKey, Partition, ReplicaAssignment, Spu, Topic,
    TopicConfig, TopicState,
};
use runnel_transport::TransportError;
use runnel_types::{ByteSize, LeaderEpoch, PartitionId, SpuId};
use runnel_wire::frame::{RESPONSE_HEADER_LEN, RequestHeader, ResponseHeader, encode_frame};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    FakeSpu, Sc, Watcher, api_error, assert_error, bounded, name, spu_spec, topic_spec,
};

/// Long enough that no SPU times out during a test that does not ask.
const PATIENT: Duration = Duration::from_secs(600);

fn upserted(update: AssignmentUpdate) -> ReplicaAssignment {
    match update {
        AssignmentUpdate::Upsert(assignment) => assignment,
        other => panic!("expected an Upsert, got {other:?}"),
    }
}

fn snapshot(update: AssignmentUpdate) -> Vec<ReplicaAssignment> {
    snapshot_of_cluster(update).1
}

/// The cluster id and the replicas of a snapshot.
fn snapshot_of_cluster(update: AssignmentUpdate) -> (String, Vec<ReplicaAssignment>) {
    match update {
        AssignmentUpdate::Snapshot {
            cluster_id,
            replicas,
        } => (cluster_id, replicas),
        other => panic!("expected a Snapshot, got {other:?}"),
    }
}

async fn list_topic(client: &runnel_transport::Connection, topic: &str) -> Topic {
    let mut topics = bounded(
        "list",
        client.call(&ListTopicsRequest {
            names: vec![name(topic)],
        }),
    )
    .await
    .expect("listed");
    topics.pop().expect("the topic asked for")
}

#[tokio::test]
async fn a_topic_waits_for_an_spu_then_is_placed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = Sc::start(dir.path(), PATIENT).await;
    let client = sc.client().await;

    let spec = topic_spec("early", 2, 1);
    bounded(
        "create",
        client.call(&CreateTopicRequest { spec: spec.clone() }),
    )
    .await
    .expect("created");
    let topics = bounded("list", client.call(&ListTopicsRequest { names: vec![] }))
        .await
        .expect("listed");
    assert_eq!(
        topics,
        vec![Topic {
            spec: spec.clone(),
            // The version the creation committed as: the store was empty.
            topic_id: 1,
            state: TopicState::Pending {
                reason: "1 replica per partition needs 1 online SPU but 0 are online; \
                         start SPUs with `runnel cluster start`"
                    .to_string()
            },
        }]
    );
    let partitions = bounded(
        "partitions",
        client.call(&ListPartitionsRequest {
            topic: Some(name("early")),
        }),
    )
    .await
    .expect("listed");
    assert_eq!(partitions, vec![]);

    let mut spu = sc.spu(7).await;
    let assignments = snapshot(spu.next().await);
    let expected: Vec<ReplicaAssignment> = (0..2)
        .map(|index| ReplicaAssignment {
            key: runnel_metadata::PartitionKey {
                topic: name("early"),
                partition: PartitionId(index),
            },
            // Placing the pending topic kept its id.
            topic_id: 1,
            config: TopicConfig::default(),
            replicas: vec![SpuId(7)],
            leader: Some(SpuId(7)),
            leader_epoch: LeaderEpoch(0),
            in_sync_replicas: vec![SpuId(7)],
            leader_addr: Some(spu_spec(7).private_addr),
        })
        .collect();
    assert_eq!(assignments, expected);

    let topics = bounded("list", client.call(&ListTopicsRequest { names: vec![] }))
        .await
        .expect("listed");
    assert_eq!(topics[0].state, TopicState::Provisioned);
    let spus = bounded("spus", client.call(&ListSpusRequest {}))
        .await
        .expect("listed");
    assert_eq!(
        spus,
        vec![Spu {
            spec: spu_spec(7),
            online: true
        }]
    );
    sc.stop().await;
}

#[tokio::test]
async fn partitions_spread_over_spus_and_every_change_is_pushed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = Sc::start(dir.path(), PATIENT).await;
    let client = sc.client().await;
    let mut watcher = Watcher::open(&client).await;
    assert!(
        matches!(&watcher.updates[0], MetadataUpdate::Snapshot { objects, .. } if objects.is_empty()),
        "{:?}",
        watcher.updates[0]
    );

    let mut spus: Vec<FakeSpu> = Vec::new();
    for id in 1..=3 {
        let mut spu = sc.spu(id).await;
        assert_eq!(snapshot(spu.next().await), vec![]);
        spus.push(spu);
    }
    watcher
        .until("three SPUs online", |view| {
            view.spus.values().filter(|spu| spu.online).count() == 3
        })
        .await;

    bounded(
        "create",
        client.call(&CreateTopicRequest {
            spec: topic_spec("orders", 6, 1),
        }),
    )
    .await
    .expect("created");

    // Each SPU is told to lead exactly two of the six partitions.
    let mut led: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for spu in &mut spus {
        for _ in 0..2 {
            let assignment = upserted(spu.next().await);
            assert_eq!(assignment.key.topic, name("orders"));
            assert_eq!(assignment.replicas, vec![spu.id]);
            assert_eq!(assignment.leader, Some(spu.id));
            assert_eq!(assignment.leader_epoch, LeaderEpoch(0));
            assert_eq!(assignment.config, TopicConfig::default());
            led.entry(spu.id.0)
                .or_default()
                .push(assignment.key.partition.0);
        }
    }
    assert_eq!(
        led,
        BTreeMap::from([(1, vec![0, 3]), (2, vec![1, 4]), (3, vec![2, 5])])
    );

    // Heartbeat reports appear in ListPartitions, nowhere else.
    let report = spus[0].report(42);
    spus[0]
        .heartbeat(vec![
            (name("orders"), PartitionId(0), report),
            // Not one of SPU 1's replicas: ignored.
            (name("orders"), PartitionId(1), report),
        ])
        .await
        .expect("heartbeat");
    let partitions: Vec<Partition> = bounded(
        "partitions",
        client.call(&ListPartitionsRequest {
            topic: Some(name("orders")),
        }),
    )
    .await
    .expect("listed");
    let listed: Vec<(u32, Option<SpuId>)> = partitions
        .iter()
        .map(|partition| (partition.spec.key.partition.0, partition.status.leader))
        .collect();
    assert_eq!(
        listed,
        (0..6)
            .map(|index| (index, Some(SpuId(index % 3 + 1))))
            .collect::<Vec<_>>()
    );
    assert_eq!(partitions[0].status.replicas, vec![report]);
    assert_eq!(partitions[0].leader_status(), Some(&report));
    for partition in &partitions[1..] {
        assert_eq!(partition.status.replicas, vec![]);
        assert_eq!(partition.status.in_sync_replicas, partition.spec.replicas);
    }

    watcher
        .until("orders provisioned with 6 partitions", |view| {
            view.topics
                .get(&name("orders"))
                .is_some_and(|topic| topic.state == TopicState::Provisioned)
                && view.partitions_of(&name("orders")).count() == 6
        })
        .await;
    let leader = watcher.view.leader_address(&runnel_metadata::PartitionKey {
        topic: name("orders"),
        partition: PartitionId(4),
    });
    assert_eq!(leader, Some((SpuId(2), spu_spec(2).public_addr.as_str())));

    // Delete: each SPU is told to remove its two replicas; watchers see
    // the partitions and the topic go.
    bounded(
        "delete",
        client.call(&DeleteTopicRequest {
            name: name("orders"),
        }),
    )
    .await
    .expect("deleted");
    for spu in &mut spus {
        let mut removed = Vec::new();
        for _ in 0..2 {
            match spu.next().await {
                AssignmentUpdate::Remove(key) => removed.push(key.partition.0),
                other => panic!("expected a Remove, got {other:?}"),
            }
        }
        let id = spu.id.0;
        assert_eq!(removed, vec![id - 1, id + 2]);
    }
    watcher
        .until("orders gone", |view| {
            view.topics.is_empty() && view.partitions.is_empty()
        })
        .await;
    let deletes: Vec<&Change> = watcher
        .updates
        .iter()
        .filter_map(|update| match update {
            MetadataUpdate::Delta { changes, .. } => Some(changes),
            MetadataUpdate::Snapshot { .. } => None,
        })
        .flatten()
        .filter(|change| matches!(change, Change::Delete(_)))
        .collect();
    assert_eq!(deletes.len(), 7, "{deletes:?}");
    assert!(deletes.contains(&&Change::Delete(ObjectKey::Topic(name("orders")))));

    // Versions grow by one per delta.
    let versions: Vec<u64> = watcher
        .updates
        .iter()
        .map(|update| match update {
            MetadataUpdate::Snapshot { version, .. } | MetadataUpdate::Delta { version, .. } => {
                *version
            }
        })
        .collect();
    assert!(
        versions.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "{versions:?}"
    );

    assert_error(
        bounded(
            "list deleted",
            client.call(&ListTopicsRequest {
                names: vec![name("orders")],
            }),
        )
        .await,
        ErrorCode::TOPIC_NOT_FOUND,
        "runnel topic list",
    );

    // An SPU that goes away is offline for watchers.
    let gone = spus.pop().expect("three SPUs");
    drop(gone);
    watcher
        .until("SPU 3 offline", |view| {
            view.spus.get(&SpuId(3)).is_some_and(|spu| !spu.online)
        })
        .await;
    sc.stop().await;
}

#[tokio::test]
async fn metadata_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = Sc::start(dir.path(), PATIENT).await;
    let client = sc.client().await;
    let mut spu = sc.spu(1).await;
    assert_eq!(snapshot(spu.next().await), vec![]);
    let mut spec = topic_spec("kept", 3, 1);
    spec.config.segment_size = ByteSize(64 * ByteSize::MIB);
    bounded(
        "create",
        client.call(&CreateTopicRequest { spec: spec.clone() }),
    )
    .await
    .expect("created");
    bounded(
        "create second",
        client.call(&CreateTopicRequest {
            spec: topic_spec("second", 1, 1),
        }),
    )
    .await
    .expect("created");
    bounded(
        "register",
        client.call(&RegisterSpuRequest { spec: spu_spec(2) }),
    )
    .await
    .expect("registered");
    let partitions_before: Vec<Partition> = bounded(
        "partitions",
        client.call(&ListPartitionsRequest { topic: None }),
    )
    .await
    .expect("listed");
    assert_eq!(partitions_before.len(), 4);
    let (public_addr, private_addr) = (sc.public_addr.clone(), sc.private_addr.clone());
    // Stopped with its SPU connected: an SPU that went away first would
    // have lost its leaderships.
    sc.stop().await;
    drop((spu, client));

    let sc = Sc::start_on(dir.path(), PATIENT, public_addr, private_addr).await;
    let client = sc.client().await;
    let topics: Vec<Topic> = bounded("list", client.call(&ListTopicsRequest { names: vec![] }))
        .await
        .expect("listed");
    let states: Vec<(String, TopicState)> = topics
        .iter()
        .map(|topic| (topic.spec.name.to_string(), topic.state.clone()))
        .collect();
    assert_eq!(
        states,
        vec![
            ("kept".to_string(), TopicState::Provisioned),
            ("second".to_string(), TopicState::Provisioned),
        ]
    );
    assert_eq!(topics[0].spec, spec);
    let partitions: Vec<Partition> = bounded(
        "partitions",
        client.call(&ListPartitionsRequest { topic: None }),
    )
    .await
    .expect("listed");
    assert_eq!(partitions, partitions_before);
    let spus: Vec<Spu> = bounded("spus", client.call(&ListSpusRequest {}))
        .await
        .expect("listed");
    assert_eq!(
        spus,
        vec![
            Spu {
                spec: spu_spec(1),
                online: false
            },
            Spu {
                spec: spu_spec(2),
                online: false
            },
        ]
    );

    // The SPU gets its assignments back when it reconnects.
    let mut spu = sc.spu(1).await;
    let keys: Vec<String> = snapshot(spu.next().await)
        .iter()
        .map(|assignment| assignment.key.to_string())
        .collect();
    assert_eq!(keys, vec!["kept-0", "kept-1", "kept-2", "second-0"]);
    sc.stop().await;
}

/// The cluster id stays with the store; a topic created again under the
/// same name is a new incarnation with a new id, before and after a
/// restart, and SPUs are told both.
#[tokio::test]
async fn the_cluster_id_is_kept_and_topic_ids_are_never_reused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = Sc::start(dir.path(), PATIENT).await;
    let client = sc.client().await;
    let mut spu = sc.spu(1).await;
    let (cluster_id, replicas) = snapshot_of_cluster(spu.next().await);
    assert_eq!(replicas, vec![]);
    assert!(!cluster_id.is_empty());

    let create = |text: &'static str| {
        let client = client.clone();
        async move {
            bounded(
                "create",
                client.call(&CreateTopicRequest {
                    spec: topic_spec(text, 1, 1),
                }),
            )
            .await
            .expect("created");
        }
    };
    let delete = |text: &'static str| {
        let client = client.clone();
        async move {
            bounded(
                "delete",
                client.call(&DeleteTopicRequest { name: name(text) }),
            )
            .await
            .expect("deleted");
        }
    };
    create("events").await;
    let first = list_topic(&client, "events").await.topic_id;
    assert_eq!(upserted(spu.next().await).topic_id, first);
    delete("events").await;
    assert!(matches!(spu.next().await, AssignmentUpdate::Remove(_)));
    create("events").await;
    let second = list_topic(&client, "events").await.topic_id;
    assert_ne!(second, first, "a new incarnation has a new id");
    assert_eq!(upserted(spu.next().await).topic_id, second);

    drop((spu, client));
    let (public_addr, private_addr) = (sc.public_addr.clone(), sc.private_addr.clone());
    sc.stop().await;
    let sc = Sc::start_on(dir.path(), PATIENT, public_addr, private_addr).await;
    let client = sc.client().await;
    assert_eq!(list_topic(&client, "events").await.topic_id, second);
    let mut spu = sc.spu(1).await;
    let (same_cluster, replicas) = snapshot_of_cluster(spu.next().await);
    assert_eq!(
        same_cluster, cluster_id,
        "the cluster id survives a restart"
    );
    let ids: Vec<u64> = replicas.iter().map(|replica| replica.topic_id).collect();
    assert_eq!(ids, vec![second]);

    bounded(
        "delete",
        client.call(&DeleteTopicRequest {
            name: name("events"),
        }),
    )
    .await
    .expect("deleted");
    bounded(
        "create",
        client.call(&CreateTopicRequest {
            spec: topic_spec("events", 1, 1),
        }),
    )
    .await
    .expect("created");
    let third = list_topic(&client, "events").await.topic_id;
    assert!(
        ![first, second].contains(&third),
        "ids stay unique across a restart: {first}, {second}, {third}"
    );
    sc.stop().await;

    // Another store is another cluster.
    let other_dir = tempfile::tempdir().expect("temp dir");
    let other = Sc::start(other_dir.path(), PATIENT).await;
    let mut stranger = other.spu(1).await;
    let (other_cluster, _) = snapshot_of_cluster(stranger.next().await);
    assert_ne!(other_cluster, cluster_id);
    other.stop().await;
}

/// A body no request decodes from: a string length with nothing after it.
#[derive(Debug, Serialize, Deserialize)]
struct Garbage(u8);

impl Request for Garbage {
    const API_KEY: ApiKey = ApiKey::CreateTopic;
    type Response = Reply<()>;
}

/// Sends one raw request frame and returns the decoded error of its
/// answer.
async fn raw_request(addr: &str, api_key: u16, api_version: u16) -> ApiError {
    let mut socket = bounded("connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connected");
    let mut header = Vec::new();
    RequestHeader {
        api_key,
        api_version,
        correlation_id: 9,
        client_id: "raw".to_string(),
    }
    .encode(&mut header);
    let mut frame = Vec::new();
    encode_frame(
        &header,
        &runnel_api::encode(&ApiVersionsRequest {}),
        0,
        &mut frame,
    );
    bounded("write", socket.write_all(&frame))
        .await
        .expect("written");
    let mut length = [0u8; 4];
    bounded("read length", socket.read_exact(&mut length))
        .await
        .expect("length");
    let mut answer = vec![0u8; u32::from_be_bytes(length) as usize];
    bounded("read frame", socket.read_exact(&mut answer))
        .await
        .expect("frame");
    let header = ResponseHeader::decode(&answer).expect("response header");
    assert_eq!(header.correlation_id, 9);
    let reply: Result<(), ApiError> =
        runnel_api::decode(&answer[RESPONSE_HEADER_LEN..]).expect("an error body");
    reply.expect_err("refused")
}

#[tokio::test]
async fn bad_requests_are_refused_and_the_sc_keeps_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = Sc::start(dir.path(), PATIENT).await;
    let client = sc.client().await;
    let link = sc.spu_link().await;

    let create = |spec| {
        let client = client.clone();
        async move { client.call(&CreateTopicRequest { spec }).await }
    };
    assert_error(
        bounded("rf 0", create(topic_spec("x", 1, 0))).await,
        ErrorCode::INVALID_CONFIG,
        "replication factor 0",
    );
    assert_error(
        bounded("rf 17", create(topic_spec("x", 1, 17))).await,
        ErrorCode::INVALID_CONFIG,
        "replication factor 17 is above the largest supported, 16",
    );
    for min in [0, 3] {
        let mut spec = topic_spec("x", 1, 2);
        spec.config.min_in_sync_replicas = Some(min);
        assert_error(
            bounded("min in-sync", create(spec)).await,
            ErrorCode::INVALID_CONFIG,
            &format!("min in-sync replicas {min} is outside 1 to 2"),
        );
    }
    assert_error(
        bounded("0 partitions", create(topic_spec("x", 0, 1))).await,
        ErrorCode::INVALID_CONFIG,
        "1 to 10000 partitions",
    );
    assert_error(
        bounded("too many partitions", create(topic_spec("x", 10_001, 1))).await,
        ErrorCode::INVALID_CONFIG,
        "not 10001",
    );
    for size in [ByteSize(1023), ByteSize(2 * ByteSize::GIB + 1)] {
        let mut spec = topic_spec("x", 1, 1);
        spec.config.segment_size = size;
        assert_error(
            bounded("segment size", create(spec)).await,
            ErrorCode::INVALID_CONFIG,
            "outside 1KiB to 2GiB",
        );
    }
    bounded("create", create(topic_spec("x", 1, 1)))
        .await
        .expect("created");
    assert_error(
        bounded("duplicate", create(topic_spec("x", 4, 1))).await,
        ErrorCode::TOPIC_EXISTS,
        "topic 'x' already exists; delete it first with `runnel topic delete x`",
    );
    assert_error(
        bounded(
            "delete unknown",
            client.call(&DeleteTopicRequest { name: name("nope") }),
        )
        .await,
        ErrorCode::TOPIC_NOT_FOUND,
        "`runnel topic list`",
    );
    assert_error(
        bounded(
            "partitions of unknown",
            client.call(&ListPartitionsRequest {
                topic: Some(name("nope")),
            }),
        )
        .await,
        ErrorCode::TOPIC_NOT_FOUND,
        "'nope'",
    );
    assert_error(
        bounded(
            "list unknown",
            client.call(&ListTopicsRequest {
                names: vec![name("x"), name("nope")],
            }),
        )
        .await,
        ErrorCode::TOPIC_NOT_FOUND,
        "'nope'",
    );
    let malformed = api_error(bounded("garbage", client.call(&Garbage(0xff))).await);
    assert_eq!(
        malformed.code,
        ErrorCode::MALFORMED_REQUEST,
        "{malformed:?}"
    );
    assert!(malformed.message.contains("CreateTopic"), "{malformed:?}");

    // Each listener refuses the other's apis.
    let heartbeat = SpuHeartbeatRequest {
        id: SpuId(1),
        replicas: vec![],
    };
    assert_error(
        bounded("heartbeat on public", client.call(&heartbeat)).await,
        ErrorCode::UNSUPPORTED_API,
        "SpuHeartbeat",
    );
    let mut connect_on_public = bounded(
        "connect on public",
        client.stream(&SpuConnectRequest { spec: spu_spec(1) }, 4),
    )
    .await
    .expect("request sent");
    let ended = bounded("refusal", connect_on_public.next()).await;
    assert!(
        matches!(&ended, Some(Err(TransportError::Api(error))) if error.code == ErrorCode::UNSUPPORTED_API),
        "{ended:?}"
    );
    assert_error(
        bounded(
            "create on private",
            link.call(&CreateTopicRequest {
                spec: topic_spec("y", 1, 1),
            }),
        )
        .await,
        ErrorCode::UNSUPPORTED_API,
        "CreateTopic",
    );
    let mut watch_on_private =
        bounded("watch on private", link.stream(&WatchMetadataRequest {}, 4))
            .await
            .expect("request sent");
    let ended = bounded("refusal", watch_on_private.next()).await;
    assert!(
        matches!(&ended, Some(Err(TransportError::Api(error))) if error.code == ErrorCode::UNSUPPORTED_API),
        "{ended:?}"
    );
    let unknown = raw_request(&sc.public_addr, 999, 0).await;
    assert_eq!(unknown.code, ErrorCode::UNSUPPORTED_API, "{unknown:?}");
    assert!(unknown.message.contains("999"), "{unknown:?}");
    let too_new = raw_request(&sc.public_addr, ApiKey::ListSpus as u16, 7).await;
    assert_eq!(too_new.code, ErrorCode::UNSUPPORTED_API, "{too_new:?}");
    assert!(too_new.message.contains("version 7"), "{too_new:?}");

    // ApiVersions lists the apis of the listener asked.
    let public_keys: Vec<u16> = bounded("versions", client.call(&ApiVersionsRequest {}))
        .await
        .expect("versions")
        .versions
        .iter()
        .map(|version| version.api_key)
        .collect();
    let mut expected = vec![0];
    expected.extend(10..=29);
    assert_eq!(public_keys, expected);
    let private_keys: Vec<u16> = bounded("versions", link.call(&ApiVersionsRequest {}))
        .await
        .expect("versions")
        .versions
        .iter()
        .map(|version| version.api_key)
        .collect();
    assert_eq!(private_keys, vec![0, 30, 31, 32]);

    // SPU registration.
    assert_error(
        bounded("heartbeat unknown", link.call(&heartbeat)).await,
        ErrorCode::SPU_NOT_FOUND,
        "not connected",
    );
    bounded(
        "register",
        client.call(&RegisterSpuRequest { spec: spu_spec(5) }),
    )
    .await
    .expect("registered");
    bounded(
        "unregister",
        client.call(&UnregisterSpuRequest { id: SpuId(5) }),
    )
    .await
    .expect("unregistered");
    assert_error(
        bounded(
            "unregister again",
            client.call(&UnregisterSpuRequest { id: SpuId(5) }),
        )
        .await,
        ErrorCode::SPU_NOT_FOUND,
        "runnel spu list",
    );
    let mut first = sc.spu(6).await;
    // Topic "x" was pending; SPU 6 now holds it.
    assert_eq!(snapshot(first.next().await).len(), 1);
    assert_error(
        bounded(
            "unregister online",
            client.call(&UnregisterSpuRequest { id: SpuId(6) }),
        )
        .await,
        ErrorCode::SPU_IN_USE,
        "online",
    );
    let mut moved = spu_spec(6);
    moved.public_addr = "127.0.0.1:1".to_string();
    assert_error(
        bounded(
            "re-register online",
            client.call(&RegisterSpuRequest { spec: moved }),
        )
        .await,
        ErrorCode::SPU_IN_USE,
        "stop it before changing its addresses",
    );

    // A second connect of SPU 6 replaces the first session.
    let mut second = sc.spu(6).await;
    assert_eq!(snapshot(second.next().await).len(), 1);
    let replaced = first.ended().await.expect("ended with an error");
    assert_eq!(replaced.code, ErrorCode::SPU_IN_USE, "{replaced:?}");
    drop(first);
    second
        .heartbeat(vec![])
        .await
        .expect("the new session is live");
    let spus: Vec<Spu> = bounded("spus", client.call(&ListSpusRequest {}))
        .await
        .expect("listed");
    assert_eq!(
        spus,
        vec![Spu {
            spec: spu_spec(6),
            online: true
        }]
    );

    // Once offline, it still holds a replica.
    drop(second);
    let mut watcher = Watcher::open(&client).await;
    watcher
        .until("SPU 6 offline", |view| {
            view.spus.get(&SpuId(6)).is_some_and(|spu| !spu.online)
        })
        .await;
    assert_error(
        bounded(
            "unregister holding",
            client.call(&UnregisterSpuRequest { id: SpuId(6) }),
        )
        .await,
        ErrorCode::SPU_IN_USE,
        "holds 1 replica(s) of topic(s) x",
    );

    // Still serving.
    bounded("create after errors", create(topic_spec("z", 2, 1)))
        .await
        .expect("created");
    let names: Vec<String> = bounded("list", client.call(&ListTopicsRequest { names: vec![] }))
        .await
        .expect("listed")
        .iter()
        .map(|topic| topic.spec.name.to_string())
        .collect();
    assert_eq!(names, vec!["x", "z"]);
    sc.stop().await;
}

#[tokio::test]
async fn a_silent_spu_goes_offline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = Sc::start(dir.path(), Duration::from_millis(300)).await;
    let client = sc.client().await;
    let mut watcher = Watcher::open(&client).await;
    let mut spu = sc.spu(4).await;
    assert_eq!(snapshot(spu.next().await), vec![]);

    // No heartbeat: the SC ends the session and marks the SPU offline.
    let ended = spu.ended().await.expect("ended with an error");
    assert_eq!(ended.code, ErrorCode::TIMEOUT, "{ended:?}");
    assert!(
        ended.message.contains("no heartbeat from SPU 4"),
        "{ended:?}"
    );
    watcher
        .until("SPU 4 offline", |view| {
            view.spus.get(&SpuId(4)).is_some_and(|spu| !spu.online)
        })
        .await;
    assert_error(
        spu.heartbeat(vec![]).await,
        ErrorCode::SPU_NOT_FOUND,
        "SPU 4 is not connected",
    );

    // It comes back by connecting again.
    let mut again = sc.spu(4).await;
    assert_eq!(snapshot(again.next().await), vec![]);
    watcher
        .until("SPU 4 online", |view| {
            view.spus.get(&SpuId(4)).is_some_and(|spu| spu.online)
        })
        .await;
    sc.stop().await;
}

#[tokio::test]
async fn a_busy_address_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let config = runnel_sc::ScConfig {
        data_dir: dir.path().to_path_buf(),
        public_addr: addr.clone(),
        private_addr: format!("127.0.0.1:{}", support::free_port()),
        ..runnel_sc::ScConfig::default()
    };
    let result = bounded(
        "run",
        runnel_sc::run(config, runnel_transport::CancellationToken::new()),
    )
    .await;
    let error = result.expect_err("the address is taken");
    assert_eq!(
        error.to_string(),
        format!("address {addr} is in use; is another cluster running? choose another --base-port")
    );
}

#[tokio::test]
async fn a_watcher_that_falls_behind_gets_a_new_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sc = Sc::start(dir.path(), PATIENT).await;
    let client = sc.client().await;
    // A window of one item: the SC can send the snapshot and nothing more
    // until the watcher reads it.
    let mut stream = bounded("watch", client.stream(&WatchMetadataRequest {}, 1))
        .await
        .expect("watching");
    for id in 0..1100 {
        bounded(
            "register",
            client.call(&RegisterSpuRequest { spec: spu_spec(id) }),
        )
        .await
        .expect("registered");
    }
    // The first snapshot and at most the delta taken before the window
    // closed; then, instead of the 1100 deltas the feed could not keep, a
    // snapshot of everything.
    let mut received = Vec::new();
    let last = loop {
        match bounded("an update", stream.next()).await {
            Some(Ok(MetadataUpdate::Snapshot { version, objects })) if objects.len() == 1100 => {
                break version;
            }
            Some(Ok(update)) => received.push(update),
            other => panic!("expected an update, got {other:?}"),
        }
    };
    assert_eq!(last, 1100);
    assert!(
        matches!(received[0], MetadataUpdate::Snapshot { version: 0, .. }),
        "{received:?}"
    );
    assert!(received.len() <= 2, "{received:?}");
    sc.stop().await;
}
