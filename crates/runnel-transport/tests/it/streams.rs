//! Streaming responses: order, credit flow control, ends with and without
//! an error, cancellation, and file tails on both write paths.

use runnel_api::{
    ApiVersionsRequest, FetchItem, SpuConnectRequest, StreamFetchRequest, WatchMetadataRequest,
};
use runnel_metadata::{AssignmentUpdate, MetadataUpdate, SpuSpec};
use runnel_transport::{Connection, TransportConfig, TransportError};
use runnel_types::{Offset, PartitionId, SpuId};

use crate::support::{
    FETCH_FILE_LEN, TestHandler, TestServer, WAIT, bounded, serve_pipe, settle, topic,
};

fn spu_connect(id: u32) -> SpuConnectRequest {
    SpuConnectRequest {
        spec: SpuSpec {
            id: SpuId(id),
            public_addr: "127.0.0.1:9010".to_string(),
            private_addr: "127.0.0.1:9011".to_string(),
            rack: None,
        },
    }
}

fn version(update: &MetadataUpdate) -> u64 {
    match update {
        MetadataUpdate::Delta { version, .. } => *version,
        MetadataUpdate::Snapshot { .. } => panic!("the test handler sends only deltas"),
    }
}

/// With a window of two, the server is never more than two items ahead of
/// the consumer: it sends two, then waits until the consumer takes one.
#[tokio::test]
async fn a_stream_runs_at_most_its_window_ahead_of_the_consumer() {
    const WINDOW: u64 = 2;
    let server = TestServer::start().await;
    let connection = server.connect().await;
    let mut stream = connection
        .stream(&WatchMetadataRequest {}, WINDOW as u32)
        .await
        .expect("open a metadata watch");
    let handler = &server.handler;
    handler
        .wait_for("the first window of items", |counters| {
            counters.watch_items_sent == WINDOW
        })
        .await;
    settle().await;
    assert_eq!(
        handler.counters().watch_items_sent,
        WINDOW,
        "sent without credit"
    );

    for taken in 1..=5 {
        let update = bounded("the next item", stream.next())
            .await
            .expect("the stream is open")
            .expect("a metadata update");
        assert_eq!(version(&update), taken - 1, "items arrive in order");
        handler
            .wait_for("the item the returned credit allows", |counters| {
                counters.watch_items_sent == taken + WINDOW
            })
            .await;
        settle().await;
        assert_eq!(
            handler.counters().watch_items_sent,
            taken + WINDOW,
            "sent without credit after {taken} items were taken"
        );
    }
}

#[tokio::test]
async fn a_stream_that_ends_with_an_error_surfaces_it_after_its_items() {
    let server = TestServer::start().await;
    let connection = server.connect().await;
    let mut stream = connection
        .stream(&spu_connect(3), 8)
        .await
        .expect("open an assignment stream");
    for partition in 0..3 {
        let update = bounded("an assignment", stream.next())
            .await
            .expect("three items before the end")
            .expect("an assignment update");
        match update {
            AssignmentUpdate::Remove(key) => assert_eq!(key.partition, PartitionId(partition)),
            other => panic!("unexpected update {other:?}"),
        }
    }
    match bounded("the stream's end", stream.next()).await {
        Some(Err(TransportError::Api(error))) => {
            assert_eq!(error.code, runnel_api::ErrorCode::NOT_LEADER);
            assert!(error.code.is_retriable());
        }
        other => panic!("expected the stream to end with an api error, got {other:?}"),
    }
    assert!(stream.next().await.is_none(), "nothing after the end");
    assert!(!connection.is_closed());
}

#[tokio::test]
async fn dropping_a_stream_cancels_it_on_the_server() {
    let server = TestServer::start().await;
    let connection = server.connect().await;
    let handler = &server.handler;

    // A sender blocked waiting for credit sees `StreamClosed`.
    let mut stream = connection
        .stream(&WatchMetadataRequest {}, 2)
        .await
        .expect("open a metadata watch");
    bounded("the first item", stream.next())
        .await
        .expect("the stream is open")
        .expect("a metadata update");
    drop(stream);
    handler
        .wait_for("the sender seeing the cancel", |counters| {
            counters.streams_closed_on_send == 1
        })
        .await;

    // A sender waiting in `cancelled()` wakes.
    let stream = connection
        .stream(&spu_connect(0), 1)
        .await
        .expect("open an assignment stream");
    drop(stream);
    handler
        .wait_for("cancelled() resolving", |counters| {
            counters.streams_cancelled == 1
        })
        .await;

    bounded(
        "an api versions reply",
        connection.call(&ApiVersionsRequest {}),
    )
    .await
    .expect("the connection outlives its streams");
}

/// Reads the whole fetch file through a stream and checks every byte.
async fn fetch_whole_file(connection: &Connection, handler: &TestHandler, max_bytes: u32) {
    let request = StreamFetchRequest {
        topic: topic(),
        partition: PartitionId(0),
        offset: Offset(0),
        max_bytes,
    };
    let mut stream = connection
        .stream(&request, 4)
        .await
        .expect("open a fetch stream");
    let mut fetched = Vec::with_capacity(FETCH_FILE_LEN);
    while let Some(item) = bounded("the next fetch item", stream.next_with_tail()).await {
        let (item, tail): (FetchItem, _) = item.expect("a fetch item");
        assert_eq!(item.first_offset, Offset(fetched.len() as i64));
        assert_eq!(item.next_offset.0 - item.first_offset.0, tail.len() as i64);
        assert!(tail.len() <= max_bytes as usize);
        fetched.extend_from_slice(&tail);
    }
    assert_eq!(fetched.len(), FETCH_FILE_LEN);
    assert!(fetched == handler.fetch_content, "the file arrived changed");
}

#[tokio::test]
async fn file_tails_arrive_byte_exact_through_sendfile() {
    let server = TestServer::start().await;
    let connection = server.connect().await;
    fetch_whole_file(&connection, &server.handler, 64 << 10).await;
}

/// The generic path reads the range through a 256 KiB buffer; a larger
/// item makes it loop.
#[tokio::test]
async fn file_tails_arrive_byte_exact_through_the_buffered_path() {
    let handler = TestHandler::new();
    let (connection, _server) = serve_pipe(handler.clone());
    fetch_whole_file(&connection, &handler, 270_000).await;
    fetch_whole_file(&connection, &handler, 10_000).await;
}

/// A connection whose requests are all taken by streams waiting for
/// credit still reads the credits: a request over the in-flight limit is
/// refused with a retriable error instead of stopping the reader.
#[tokio::test]
async fn streams_at_the_in_flight_limit_keep_receiving_credit() {
    let config = TransportConfig {
        max_in_flight: 1,
        ..TransportConfig::default()
    };
    let server = TestServer::start_with(config).await;
    let connection = server.connect().await;
    let mut stream = connection
        .stream(&WatchMetadataRequest {}, 2)
        .await
        .expect("open a metadata watch");

    let refused = bounded(
        "the over-limit call",
        connection.call(&ApiVersionsRequest {}),
    )
    .await;
    match refused {
        Err(TransportError::Api(error)) => assert!(error.code.is_retriable(), "{error:?}"),
        other => panic!("expected a retriable refusal, got {other:?}"),
    }
    for expected in 0..5 {
        let update = bounded("an item after the refused call", stream.next())
            .await
            .expect("the stream is open")
            .expect("a metadata update");
        assert_eq!(version(&update), expected);
    }

    drop(stream);
    let retried = async {
        loop {
            match connection.call(&ApiVersionsRequest {}).await {
                Err(TransportError::Api(error)) if error.code.is_retriable() => {
                    tokio::time::sleep(WAIT / 1000).await;
                }
                result => return result,
            }
        }
    };
    bounded("the call once the stream is gone", retried)
        .await
        .expect("a call succeeds once the stream has ended");
}
