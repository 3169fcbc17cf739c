//! An SPU run in-process against a fake SC, driven through its public
//! listener as a client would.

mod hostile_batches;
mod security;
mod support;

use bytes::Bytes;
use runnel_api::{
    Acks, ApiVersionsRequest, ErrorCode, ListOffsetsRequest, ListOffsetsResponse, OffsetQuery,
    ProduceRequest, ReplicaSyncRequest, StreamFetchRequest, SyncItem, SyncKind, SyncPartition,
};
use runnel_metadata::{PartitionKey, ReplicaAssignment};
use runnel_transport::{Connection, ResponseStream, TransportConfig, TransportError};
use runnel_types::{LeaderEpoch, Offset, SpuId};

use support::*;

fn fetch(key: &PartitionKey, offset: i64, max_bytes: u32) -> StreamFetchRequest {
    StreamFetchRequest {
        topic: key.topic.clone(),
        partition: key.partition,
        offset: Offset(offset),
        max_bytes,
    }
}

async fn list_offsets(
    connection: &Connection,
    key: &PartitionKey,
    query: OffsetQuery,
) -> ListOffsetsResponse {
    let request = ListOffsetsRequest {
        topic: key.topic.clone(),
        partition: key.partition,
        query,
    };
    connection.call(&request).await.expect("list offsets")
}

fn api_error<T: std::fmt::Debug>(result: Result<T, TransportError>) -> runnel_api::ApiError {
    match result {
        Err(TransportError::Api(error)) => error,
        other => panic!("expected an error from the SPU, got {other:?}"),
    }
}

/// Reads a stream until `end`, returning every record.
async fn read_until(
    connection: &Connection,
    key: &PartitionKey,
    from: i64,
    end: i64,
) -> Vec<(i64, String)> {
    let mut stream = connection
        .stream(&fetch(key, from, 1 << 20), 8)
        .await
        .expect("open a fetch stream");
    let mut all = Vec::new();
    let mut next = from;
    while next < end {
        let (item, tail) = next_item(&mut stream).await;
        assert_eq!(item.first_offset.0, next, "items follow each other");
        all.extend(records(&tail));
        next = item.next_offset.0;
    }
    all
}

fn expected(values: &[(i64, &str)]) -> Vec<(i64, String)> {
    values
        .iter()
        .map(|(offset, value)| (*offset, value.to_string()))
        .collect()
}

/// Partition `shared-0`, led by SPU 1 at epoch 0 and followed by SPU 2;
/// SPU 1 alone is in sync.
fn followed_by_spu_2() -> ReplicaAssignment {
    let mut shared = assignment("shared", 0, SPU, 0);
    shared.replicas = vec![SPU, SpuId(2)];
    shared
}

/// Appends one batch of `values` to `key`, acknowledged by its leader
/// alone.
async fn produce_to_leader(connection: &Connection, key: &PartitionKey, values: &[&str]) {
    let request = ProduceRequest {
        topic: key.topic.clone(),
        partition: key.partition,
        acks: Acks::Leader,
        timeout_ms: 30_000,
    };
    connection
        .call_with_tail(&request, batch(values))
        .await
        .expect("the leader appends");
}

/// Opens `follower`'s replication stream of `key`, led at epoch 0, from
/// offset 0.
async fn sync_from_start(
    connection: &Connection,
    follower: SpuId,
    key: &PartitionKey,
) -> ResponseStream<SyncItem> {
    let request = ReplicaSyncRequest {
        follower,
        partitions: vec![SyncPartition {
            key: key.clone(),
            leader_epoch: LeaderEpoch(0),
            offset: Offset(0),
        }],
    };
    connection
        .stream(&request, 4)
        .await
        .expect("open a replication stream")
}

/// Asserts that a replication stream of the one partition `key` refuses
/// `follower`, no replica of it: the partition is stopped, nothing of it
/// is sent, and the stream ends.
async fn assert_not_a_replica(
    stream: &mut ResponseStream<SyncItem>,
    follower: SpuId,
    key: &PartitionKey,
) {
    let item = bounded("the refusal", stream.next_with_tail()).await;
    let refused = match item {
        Some(Ok((
            SyncItem {
                index: 0,
                kind: SyncKind::Stopped(error),
            },
            _,
        ))) => error,
        other => panic!("expected the partition stopped, got {other:?}"),
    };
    assert_eq!(refused.code, ErrorCode::PERMISSION_DENIED, "{refused}");
    assert!(
        refused.message.contains(&format!(
            "spu:{follower} is not a follower of partition {key}"
        )),
        "{refused}"
    );
    let after = bounded("the stream to end", stream.next_with_tail()).await;
    assert!(after.is_none(), "expected the end, got {after:?}");
}

/// The records of the first item of a replication stream of one
/// partition, which must carry records.
async fn first_synced(stream: &mut ResponseStream<SyncItem>) -> Vec<(i64, String)> {
    match bounded("the first replication item", stream.next_with_tail()).await {
        Some(Ok((
            SyncItem {
                index: 0,
                kind: SyncKind::Records { .. },
            },
            tail,
        ))) => records(&tail),
        other => panic!("expected records, got {other:?}"),
    }
}

#[tokio::test]
async fn produced_batches_are_fetched_back() {
    let data = tempfile::tempdir().expect("temp dir");
    let events = key("events", 0);
    let sc = FakeSc::start(vec![assignment("events", 0, SPU, 3)]).await;
    let spu = TestSpu::start(&sc.addr, data.path());
    sc.heartbeat_listing(std::slice::from_ref(&events)).await;
    let connection = spu.connect().await;

    let first = produce(&connection, &events, &["a", "b", "c"])
        .await
        .expect("produce");
    assert_eq!(
        (first.base_offset, first.log_end_offset),
        (Offset(0), Offset(3))
    );
    let second = produce(&connection, &events, &["d", "e"])
        .await
        .expect("produce");
    assert_eq!(
        (second.base_offset, second.log_end_offset),
        (Offset(3), Offset(5))
    );

    let all = read_until(&connection, &events, 0, 5).await;
    assert_eq!(
        all,
        expected(&[(0, "a"), (1, "b"), (2, "c"), (3, "d"), (4, "e")])
    );

    let start = list_offsets(&connection, &events, OffsetQuery::Start).await;
    assert_eq!(start.offset, Offset(0));
    let end = list_offsets(&connection, &events, OffsetQuery::End).await;
    assert_eq!((end.offset, end.high_watermark), (Offset(5), Offset(5)));
    let by_time = list_offsets(&connection, &events, OffsetQuery::Timestamp(0)).await;
    assert_eq!(by_time.offset, Offset(0));
    let future = list_offsets(&connection, &events, OffsetQuery::Timestamp(i64::MAX)).await;
    assert_eq!(future.offset, Offset(5), "no record that late: the end");

    let heartbeat = sc
        .heartbeat_where("a heartbeat with 5 records", |heartbeat| {
            heartbeat
                .replicas
                .iter()
                .any(|(_, _, status)| status.high_watermark == Offset(5))
        })
        .await;
    let (_, _, status) = &heartbeat.replicas[0];
    assert_eq!(status.spu, SPU);
    assert_eq!(status.log_end_offset, Offset(5));
    assert!(status.size_bytes > 0);
    spu.stop().await;
}

#[tokio::test]
async fn a_stream_at_the_end_is_pushed_new_records() {
    let data = tempfile::tempdir().expect("temp dir");
    let events = key("events", 0);
    let sc = FakeSc::start(vec![assignment("events", 0, SPU, 0)]).await;
    let spu = TestSpu::start(&sc.addr, data.path());
    sc.heartbeat_listing(std::slice::from_ref(&events)).await;
    let connection = spu.connect().await;
    produce(&connection, &events, &["old"])
        .await
        .expect("produce");

    let mut stream = connection
        .stream(&fetch(&events, 1, 1 << 20), 4)
        .await
        .expect("open a fetch stream");
    let waiting = tokio::spawn(async move {
        let item = next_item(&mut stream).await;
        (item, stream)
    });
    produce(&connection, &events, &["new"])
        .await
        .expect("produce");
    let ((item, tail), mut stream) = bounded("the pushed record", waiting)
        .await
        .expect("the reader does not panic");
    assert_eq!(
        (item.first_offset, item.next_offset),
        (Offset(1), Offset(2))
    );
    assert_eq!(item.high_watermark, Offset(2));
    assert_eq!(records(&tail), expected(&[(1, "new")]));

    // And the next one too: the stream keeps waiting, it does not end.
    produce(&connection, &events, &["newer"])
        .await
        .expect("produce");
    let (_, tail) = next_item(&mut stream).await;
    assert_eq!(records(&tail), expected(&[(2, "newer")]));
    spu.stop().await;
}

#[tokio::test]
async fn a_window_of_one_gets_one_item_per_credit() {
    let data = tempfile::tempdir().expect("temp dir");
    let events = key("events", 0);
    let sc = FakeSc::start(vec![assignment("events", 0, SPU, 0)]).await;
    let spu = TestSpu::start(&sc.addr, data.path());
    sc.heartbeat_listing(std::slice::from_ref(&events)).await;
    let connection = spu.connect().await;
    for value in ["one", "two", "three"] {
        produce(&connection, &events, &[value])
            .await
            .expect("produce");
    }

    // max_bytes 1: one batch per item. An item sent without credit would
    // break the connection (a protocol violation on the client side).
    let mut stream = connection
        .stream(&fetch(&events, 0, 1), 1)
        .await
        .expect("open a fetch stream");
    let mut all = Vec::new();
    for offset in 0..3 {
        let (item, tail) = next_item(&mut stream).await;
        assert_eq!(
            (item.first_offset, item.next_offset),
            (Offset(offset), Offset(offset + 1))
        );
        all.extend(records(&tail));
    }
    assert_eq!(all, expected(&[(0, "one"), (1, "two"), (2, "three")]));
    assert!(!connection.is_closed());
    spu.stop().await;
}

#[tokio::test]
async fn requests_the_spu_cannot_serve_get_clear_errors() {
    let data = tempfile::tempdir().expect("temp dir");
    let led = key("events", 0);
    let elsewhere = key("events", 1);
    let sc = FakeSc::start(vec![
        assignment("events", 0, SPU, 0),
        assignment("events", 1, SpuId(9), 4),
    ])
    .await;
    let spu = TestSpu::start(&sc.addr, data.path());
    sc.heartbeat_listing(&[led.clone(), elsewhere.clone()])
        .await;
    let connection = spu.connect().await;
    produce(&connection, &led, &["a", "b"])
        .await
        .expect("produce");

    let not_leader = api_error(produce(&connection, &elsewhere, &["x"]).await);
    assert_eq!(not_leader.code, ErrorCode::NOT_LEADER);
    assert!(not_leader.code.is_retriable());
    assert!(not_leader.message.contains("SPU 9"), "{not_leader}");

    // Not hosted here (yet, or any more): the client retries once its
    // metadata catches up.
    let unknown = api_error(produce(&connection, &key("events", 7), &["x"]).await);
    assert_eq!(unknown.code, ErrorCode::PARTITION_NOT_READY);
    assert!(unknown.code.is_retriable());
    assert_eq!(
        unknown.message,
        "partition events-7 is not hosted by SPU 1; the client retries once its metadata catches up"
    );
    let mut stream = connection
        .stream(&fetch(&key("other", 0), 0, 1024), 1)
        .await
        .expect("open a fetch stream");
    assert_eq!(
        stream_error(&mut stream).await.code,
        ErrorCode::PARTITION_NOT_READY
    );
    let missing = ListOffsetsRequest {
        topic: key("other", 0).topic,
        partition: key("other", 0).partition,
        query: OffsetQuery::End,
    };
    assert_eq!(
        api_error(connection.call(&missing).await).code,
        ErrorCode::PARTITION_NOT_READY
    );

    let mut stream = connection
        .stream(&fetch(&led, 100, 1024), 1)
        .await
        .expect("open a fetch stream");
    let out_of_range = stream_error(&mut stream).await;
    assert_eq!(out_of_range.code, ErrorCode::OFFSET_OUT_OF_RANGE);
    assert!(
        out_of_range.message.contains("0 to 2"),
        "names the valid range: {out_of_range}"
    );

    let request = ProduceRequest {
        topic: led.topic.clone(),
        partition: led.partition,
        acks: Acks::All,
        timeout_ms: 30_000,
    };
    let empty = api_error(connection.call_with_tail(&request, Bytes::new()).await);
    assert_eq!(empty.code, ErrorCode::INVALID_RECORDS);
    let mut corrupt = batch(&["x"]).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let bad_crc = api_error(
        connection
            .call_with_tail(&request, Bytes::from(corrupt))
            .await,
    );
    assert_eq!(bad_crc.code, ErrorCode::INVALID_RECORDS);
    assert!(bad_crc.message.contains("CRC"), "{bad_crc}");

    // Nothing was appended by the failures.
    let end = list_offsets(&connection, &led, OffsetQuery::End).await;
    assert_eq!(end.offset, Offset(2));

    // The private listener serves replication, not clients.
    let peer = Connection::connect(&spu.private_addr, TransportConfig::default())
        .await
        .expect("connect to the private listener");
    let versions = peer
        .call(&ApiVersionsRequest {})
        .await
        .expect("api versions");
    let mut served: Vec<u16> = versions.versions.iter().map(|v| v.api_key).collect();
    served.sort_unstable();
    assert_eq!(served, vec![0, 70, 71, 72]);
    let refused = api_error(produce(&peer, &led, &["x"]).await);
    assert_eq!(refused.code, ErrorCode::UNSUPPORTED_API);

    // A peer lists no more partitions than this SPU holds (two here).
    let position = runnel_api::ReplicaPosition {
        key: led.clone(),
        leader_epoch: LeaderEpoch(0),
        log_end_offset: Offset(0),
    };
    let too_many = runnel_api::ReplicaPositionsRequest {
        follower: SpuId(9),
        positions: vec![position; 3],
    };
    let refused = api_error(peer.call(&too_many).await);
    assert_eq!(refused.code, ErrorCode::MALFORMED_REQUEST);
    assert!(refused.message.contains("holds 2 replicas"), "{refused}");
    spu.stop().await;
}

/// Without TLS the follower named in the request is taken on trust, but
/// an SPU still syncs only partitions it replicates: a misconfigured one
/// pulls nothing it should not hold.
#[tokio::test]
async fn only_replicas_sync_a_partition_without_tls_too() {
    let data = tempfile::tempdir().expect("temp dir");
    let shared = key("shared", 0);
    let sc = FakeSc::start(vec![followed_by_spu_2()]).await;
    let spu = TestSpu::start(&sc.addr, data.path());
    sc.heartbeat_listing(std::slice::from_ref(&shared)).await;
    produce_to_leader(&spu.connect().await, &shared, &["a", "b"]).await;
    let peer = Connection::connect(&spu.private_addr, TransportConfig::default())
        .await
        .expect("connect to the private listener");

    // The leader itself is no follower of its partition either.
    for outsider in [SpuId(3), SPU] {
        let mut stream = sync_from_start(&peer, outsider, &shared).await;
        assert_not_a_replica(&mut stream, outsider, &shared).await;
    }
    let mut stream = sync_from_start(&peer, SpuId(2), &shared).await;
    assert_eq!(
        first_synced(&mut stream).await,
        expected(&[(0, "a"), (1, "b")])
    );
    spu.stop().await;
}

#[tokio::test]
async fn a_new_leader_assignment_takes_effect() {
    let data = tempfile::tempdir().expect("temp dir");
    let moving = key("events", 0);
    let sc = FakeSc::start(vec![assignment("events", 0, SpuId(2), 1)]).await;
    let spu = TestSpu::start(&sc.addr, data.path());
    sc.heartbeat_listing(std::slice::from_ref(&moving)).await;
    let connection = spu.connect().await;
    assert_eq!(
        api_error(produce(&connection, &moving, &["x"]).await).code,
        ErrorCode::NOT_LEADER
    );

    // Updates apply in order: once the second partition is listed, the
    // leader change before it is in effect.
    sc.upsert(assignment("events", 0, SPU, 2));
    sc.upsert(assignment("events", 1, SPU, 0));
    sc.heartbeat_listing(&[moving.clone(), key("events", 1)])
        .await;
    let produced = produce(&connection, &moving, &["x"])
        .await
        .expect("produce");
    assert_eq!(produced.base_offset, Offset(0));
    spu.stop().await;
}

#[tokio::test]
async fn a_restarted_spu_keeps_its_data() {
    let data = tempfile::tempdir().expect("temp dir");
    let events = key("events", 0);
    let sc = FakeSc::start(vec![assignment("events", 0, SPU, 0)]).await;
    let spu = TestSpu::start(&sc.addr, data.path());
    sc.heartbeat_listing(std::slice::from_ref(&events)).await;
    let connection = spu.connect().await;
    produce(&connection, &events, &["kept", "too"])
        .await
        .expect("produce");
    spu.stop().await;
    drop(connection);

    sc.forget_heartbeats();
    let spu = TestSpu::start(&sc.addr, data.path());
    sc.heartbeat_where("the restarted SPU's heartbeat", |heartbeat| {
        heartbeat
            .replicas
            .iter()
            .any(|(_, _, status)| status.high_watermark == Offset(2))
    })
    .await;
    let connection = spu.connect().await;
    assert_eq!(
        read_until(&connection, &events, 0, 2).await,
        expected(&[(0, "kept"), (1, "too")])
    );
    let next = produce(&connection, &events, &["after"])
        .await
        .expect("produce");
    assert_eq!(next.base_offset, Offset(2));
    spu.stop().await;
}

#[tokio::test]
async fn removing_a_replica_ends_its_streams_and_deletes_its_data() {
    let data = tempfile::tempdir().expect("temp dir");
    let doomed = key("events", 0);
    let kept = key("events", 1);
    // Left over from a topic deleted while the SPU was down.
    let stale = data.path().join("deleted-0");
    std::fs::create_dir(&stale).expect("stale replica directory");
    let sc = FakeSc::start(vec![
        assignment("events", 0, SPU, 0),
        assignment("events", 1, SPU, 0),
    ])
    .await;
    let spu = TestSpu::start(&sc.addr, data.path());
    sc.heartbeat_listing(&[doomed.clone(), kept.clone()]).await;
    assert!(!stale.exists(), "the snapshot deletes unassigned replicas");
    let connection = spu.connect().await;
    produce(&connection, &doomed, &["gone"])
        .await
        .expect("produce");
    let mut stream = connection
        .stream(&fetch(&doomed, 1, 1024), 1)
        .await
        .expect("open a fetch stream");

    sc.remove(&doomed);
    let ended = stream_error(&mut stream).await;
    assert_eq!(ended.code, ErrorCode::PARTITION_NOT_FOUND);
    assert!(ended.message.contains("topic was deleted"), "{ended}");
    sc.heartbeat_listing(std::slice::from_ref(&kept)).await;
    assert!(!data.path().join("events-0").exists());
    assert!(data.path().join("events-1").is_dir());
    assert_eq!(
        api_error(produce(&connection, &doomed, &["x"]).await).code,
        ErrorCode::PARTITION_NOT_READY
    );
    spu.stop().await;
}

#[tokio::test]
async fn the_spu_waits_for_a_late_sc() {
    let data = tempfile::tempdir().expect("temp dir");
    let sc_addr = free_addr();
    let spu = TestSpu::start(&sc_addr, data.path());
    let sc = FakeSc::start_at(&sc_addr, vec![assignment("events", 0, SPU, 0)]).await;
    sc.heartbeat_listing(&[key("events", 0)]).await;

    // The SC goes away: the SPU keeps serving what it holds.
    sc.stop();
    let connection = spu.connect().await;
    let produced = produce(&connection, &key("events", 0), &["still"])
        .await
        .expect("produce without the SC");
    assert_eq!(produced.base_offset, Offset(0));
    spu.stop().await;
}

#[tokio::test]
async fn a_taken_port_is_named_in_the_error() {
    let data = tempfile::tempdir().expect("temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let config = runnel_spu::SpuConfig {
        public_addr: addr.clone(),
        private_addr: free_addr(),
        sc_addr: free_addr(),
        data_dir: data.path().to_path_buf(),
        ..runnel_spu::SpuConfig::default()
    };
    let error = bounded(
        "the SPU to fail",
        runnel_spu::run(config, runnel_transport::CancellationToken::new()),
    )
    .await
    .expect_err("the port is taken");
    let message = error.to_string();
    assert!(message.contains(&addr), "{message}");
    assert!(message.contains("--base-port"), "{message}");
}

#[tokio::test]
async fn retention_moves_the_log_start_and_old_offsets_go_out_of_range() {
    let data = tempfile::tempdir().expect("temp dir");
    let events = key("events", 0);
    let mut small = assignment("events", 0, SPU, 0);
    // About three one-record batches per segment; keep about four.
    small.config.segment_size = runnel_types::ByteSize(256);
    small.config.max_partition_size = Some(runnel_types::ByteSize(300));
    let sc = FakeSc::start(vec![small]).await;
    let spu = TestSpu::start(&sc.addr, data.path());
    sc.heartbeat_listing(std::slice::from_ref(&events)).await;
    let connection = spu.connect().await;
    for value in ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"] {
        produce(&connection, &events, &[value])
            .await
            .expect("produce");
    }

    let heartbeat = sc
        .heartbeat_where("retention to move the log start", |heartbeat| {
            heartbeat
                .replicas
                .iter()
                .any(|(_, _, status)| status.log_start_offset > Offset(0))
        })
        .await;
    let log_start = heartbeat.replicas[0].2.log_start_offset;
    let start = list_offsets(&connection, &events, OffsetQuery::Start).await;
    assert!(start.offset >= log_start);

    let mut stream = connection
        .stream(&fetch(&events, 0, 1024), 1)
        .await
        .expect("open a fetch stream");
    let expired = stream_error(&mut stream).await;
    assert_eq!(expired.code, ErrorCode::OFFSET_OUT_OF_RANGE);
    let remaining = read_until(&connection, &events, start.offset.0, 10).await;
    assert_eq!(remaining.last(), Some(&(9, "9".to_string())));
    spu.stop().await;
}

/// The same assignment for another incarnation of the topic.
fn incarnation(mut assignment: ReplicaAssignment, topic_id: u64) -> ReplicaAssignment {
    assignment.topic_id = topic_id;
    assignment
}

/// A topic deleted and created again under the same name while the SPU
/// missed the deletion (its session was lost, or it was down) starts
/// empty: the old topic's records are deleted, never served as the new
/// topic's.
#[tokio::test]
async fn a_topic_created_again_never_serves_the_old_records() {
    let data = tempfile::tempdir().expect("temp dir");
    let events = key("events", 0);
    let sc = FakeSc::start(vec![assignment("events", 0, SPU, 0)]).await;
    let spu = TestSpu::start(&sc.addr, data.path());
    sc.heartbeat_listing(std::slice::from_ref(&events)).await;
    let connection = spu.connect().await;
    produce(&connection, &events, &["old", "older"])
        .await
        .expect("produce");
    let mut stream = connection
        .stream(&fetch(&events, 2, 1024), 1)
        .await
        .expect("open a fetch stream");

    // While running: the same partition arrives with a new topic id.
    sc.forget_heartbeats();
    sc.upsert(incarnation(assignment("events", 0, SPU, 0), 2));
    let ended = stream_error(&mut stream).await;
    assert_eq!(ended.code, ErrorCode::PARTITION_NOT_FOUND, "{ended}");
    sc.heartbeat_where("the new, empty replica", |heartbeat| {
        heartbeat
            .replicas
            .iter()
            .any(|(_, _, status)| status.log_end_offset == Offset(0))
    })
    .await;
    let fresh = produce(&connection, &events, &["new"])
        .await
        .expect("produce");
    assert_eq!(fresh.base_offset, Offset(0), "the new topic starts empty");
    assert_eq!(
        read_until(&connection, &events, 0, 1).await,
        expected(&[(0, "new")])
    );
    spu.stop().await;
    drop(connection);

    // While down: the directory on disk is the older topic's.
    sc.upsert(incarnation(assignment("events", 0, SPU, 0), 3));
    sc.forget_heartbeats();
    let spu = TestSpu::start(&sc.addr, data.path());
    sc.heartbeat_listing(std::slice::from_ref(&events)).await;
    let connection = spu.connect().await;
    let end = list_offsets(&connection, &events, OffsetQuery::End).await;
    assert_eq!(end.offset, Offset(0), "the old records are gone");
    assert_eq!(
        std::fs::read_to_string(data.path().join("events-0").join("replica.id"))
            .expect("the marker"),
        "3\n"
    );
    spu.stop().await;
}

/// An SPU whose SC turns out to be another cluster's (one that lost its
/// store and started over, or a wrong --sc-addr) keeps its data, serves
/// it, and keeps retrying; the foreign snapshot, which lists nothing, is
/// not applied.
#[tokio::test]
async fn an_sc_of_another_cluster_deletes_nothing() {
    let data = tempfile::tempdir().expect("temp dir");
    let events = key("events", 0);
    let sc = FakeSc::start(vec![assignment("events", 0, SPU, 0)]).await;
    let spu = TestSpu::start(&sc.addr, data.path());
    sc.heartbeat_listing(std::slice::from_ref(&events)).await;
    sc.connects_reach(1).await;
    let connection = spu.connect().await;
    produce(&connection, &events, &["kept"])
        .await
        .expect("produce");

    sc.restart_as("fedcba9876543210", vec![]);
    // Refused, and tried again.
    sc.connects_reach(3).await;
    assert_eq!(
        read_until(&connection, &events, 0, 1).await,
        expected(&[(0, "kept")])
    );
    let next = produce(&connection, &events, &["still"])
        .await
        .expect("produce");
    assert_eq!(next.base_offset, Offset(1));
    assert!(data.path().join("events-0").is_dir());
    assert_eq!(
        std::fs::read_to_string(data.path().join("cluster.id")).expect("cluster id"),
        format!("{CLUSTER}\n")
    );
    spu.stop().await;
    drop(connection);

    // Started against it, the SPU deletes nothing either: once it has
    // connected twice, it has refused the first snapshot.
    let before = sc.connects();
    let spu = TestSpu::start(&sc.addr, data.path());
    sc.connects_reach(before + 2).await;
    assert!(data.path().join("events-0").is_dir());
    spu.stop().await;

    // Back with its own cluster, it serves its data again.
    sc.restart_as(CLUSTER, vec![assignment("events", 0, SPU, 0)]);
    sc.forget_heartbeats();
    let spu = TestSpu::start(&sc.addr, data.path());
    sc.heartbeat_listing(std::slice::from_ref(&events)).await;
    let connection = spu.connect().await;
    assert_eq!(
        read_until(&connection, &events, 0, 2).await,
        expected(&[(0, "kept"), (1, "still")])
    );
    spu.stop().await;
}

/// An SC that stops answering heartbeats without closing the connection
/// is taken for dead: the SPU reconnects.
#[tokio::test]
async fn an_sc_that_stops_answering_is_left() {
    let data = tempfile::tempdir().expect("temp dir");
    let events = key("events", 0);
    let sc = FakeSc::start(vec![assignment("events", 0, SPU, 0)]).await;
    let spu = TestSpu::start(&sc.addr, data.path());
    sc.heartbeat_listing(std::slice::from_ref(&events)).await;
    sc.connects_reach(1).await;

    sc.stall_heartbeats();
    // The SPU's heartbeat interval is 50 ms; the transport's own request
    // timeout (30 s) is far past the wait.
    sc.connects_reach(2).await;
    let connection = spu.connect().await;
    produce(&connection, &events, &["served"])
        .await
        .expect("produce while the SC hangs");
    spu.stop().await;
}

/// A log that found damage in a sealed segment takes no more records and
/// says how to look at it; the records after the damage are still read.
#[tokio::test]
async fn a_corrupt_log_refuses_produce() {
    let data = tempfile::tempdir().expect("temp dir");
    let events = key("events", 0);
    let mut small = assignment("events", 0, SPU, 0);
    // About three one-record batches per segment.
    small.config.segment_size = runnel_types::ByteSize(256);
    let sc = FakeSc::start(vec![small]).await;
    let spu = TestSpu::start(&sc.addr, data.path());
    sc.heartbeat_listing(std::slice::from_ref(&events)).await;
    let connection = spu.connect().await;
    for value in ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"] {
        produce(&connection, &events, &[value])
            .await
            .expect("produce");
    }
    spu.stop().await;
    drop(connection);

    // Flip a byte inside the first, sealed segment; without its index
    // the next open scans it and finds the damage.
    let dir = data.path().join("events-0");
    let segment = dir.join(format!("{:020}.log", 0));
    std::fs::remove_file(segment.with_extension("index")).expect("remove the index");
    let mut bytes = std::fs::read(&segment).expect("read the segment");
    assert!(bytes.len() > 100, "the segment holds batches");
    bytes[100] ^= 0xff;
    std::fs::write(&segment, &bytes).expect("write the damage");

    sc.forget_heartbeats();
    let spu = TestSpu::start(&sc.addr, data.path());
    sc.heartbeat_listing(std::slice::from_ref(&events)).await;
    let connection = spu.connect().await;
    let refused = api_error(produce(&connection, &events, &["more"]).await);
    assert_eq!(refused.code, ErrorCode::STORAGE, "{refused}");
    let verify = format!("runnel debug verify-log {}", dir.display());
    assert!(refused.message.contains(&verify), "{refused}");
    assert!(
        refused.message.contains(&segment.display().to_string()),
        "names the damaged segment: {refused}"
    );
    assert_eq!(
        read_until(&connection, &events, 9, 10).await,
        expected(&[(9, "9")])
    );
    spu.stop().await;
}
