//! Peers that do not speak the protocol, or speak it wrongly: the server
//! closes their connection and goes on serving others; the client fails
//! every waiting call instead of hanging.

use runnel_api::{ApiVersionsRequest, ApiVersionsResponse, Reply, WatchMetadataRequest};
use runnel_metadata::MetadataUpdate;
use runnel_transport::{Connection, TransportConfig, TransportError};
use runnel_wire::frame::{API_CANCEL, API_CREDIT, ResponseKind};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::{
    TestServer, all_versions, assert_closed_by_peer, assert_closed_error, bounded, pipe,
    raw_request, raw_response, raw_typed_request, read_raw_request, read_raw_response,
};

async fn raw_connect(server: &TestServer) -> TcpStream {
    bounded("a raw connection", TcpStream::connect(&server.addr))
        .await
        .expect("connect to the test server")
}

async fn assert_still_serving(server: &TestServer) {
    let connection = server.connect().await;
    let reply = bounded(
        "an api versions reply",
        connection.call(&ApiVersionsRequest {}),
    )
    .await
    .expect("the server serves well-behaved clients");
    assert_eq!(reply, all_versions());
}

#[tokio::test]
async fn an_http_request_is_closed_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let mut raw = raw_connect(&server).await;
    raw.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write to the server");
    assert_closed_by_peer(&mut raw).await;
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn a_length_over_the_frame_limit_is_closed_before_reading_it() {
    let config = TransportConfig {
        max_frame_bytes: 4096,
        ..TransportConfig::default()
    };
    let server = TestServer::start_with(config).await;
    let mut raw = raw_connect(&server).await;
    let mut frame = 4097u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0; 32]);
    raw.write_all(&frame).await.expect("write to the server");
    assert_closed_by_peer(&mut raw).await;
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn a_credit_frame_without_a_count_is_closed() {
    let server = TestServer::start().await;
    let mut raw = raw_connect(&server).await;
    raw.write_all(&raw_request(API_CREDIT, 1, &[0, 0, 1]))
        .await
        .expect("write to the server");
    assert_closed_by_peer(&mut raw).await;
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn control_frames_for_unknown_ids_are_ignored() {
    let server = TestServer::start().await;
    let mut raw = raw_connect(&server).await;
    let mut frames = raw_request(API_CREDIT, 999, &5u32.to_be_bytes());
    frames.extend(raw_request(API_CANCEL, 998, &[]));
    frames.extend(raw_typed_request(1, &ApiVersionsRequest {}));
    raw.write_all(&frames).await.expect("write to the server");

    let (header, body) = read_raw_response(&mut raw).await;
    assert_eq!(header.correlation_id, 1);
    assert_eq!(header.kind, ResponseKind::Reply);
    let reply: Reply<ApiVersionsResponse> = runnel_api::decode(&body).expect("a well-formed reply");
    assert_eq!(reply, Ok(all_versions()));
}

#[tokio::test]
async fn the_client_ignores_replies_for_unknown_ids() {
    let (client, mut fake_server) = pipe();
    let connection = Connection::new(client, TransportConfig::default());
    let answering = async {
        let (header, _) = read_raw_request(&mut fake_server.0).await;
        let reply: Reply<ApiVersionsResponse> = Ok(all_versions());
        let body = runnel_api::encode(&reply);
        let mut frames = raw_response(header.correlation_id + 1000, ResponseKind::Reply, &body);
        frames.extend(raw_response(
            header.correlation_id,
            ResponseKind::Reply,
            &body,
        ));
        fake_server
            .0
            .write_all(&frames)
            .await
            .expect("write to the client");
        fake_server
    };
    let (reply, _fake_server) = bounded("the call and the fake server", async {
        tokio::join!(connection.call(&ApiVersionsRequest {}), answering)
    })
    .await;
    assert_eq!(reply.expect("the call gets its own reply"), all_versions());
    assert!(!connection.is_closed());
}

/// A response the client cannot parse ends its reader; every call and
/// stream still waiting must fail at once rather than at its timeout.
#[tokio::test]
async fn a_failing_reader_wakes_every_waiting_call() {
    let (client, mut fake_server) = pipe();
    let connection = Connection::new(client, TransportConfig::default());
    let call = tokio::spawn({
        let connection = connection.clone();
        async move { connection.call(&ApiVersionsRequest {}).await }
    });
    let mut stream = bounded(
        "opening a stream",
        connection.stream(&WatchMetadataRequest {}, 2),
    )
    .await
    .expect("open a metadata watch");

    // Wait until both requests have reached the fake server, then answer
    // with a response kind that does not exist.
    let mut requests = 0;
    while requests < 2 {
        let (header, _) = read_raw_request(&mut fake_server.0).await;
        if header.api_key != API_CREDIT {
            requests += 1;
        }
    }
    let mut garbage = raw_response(1, ResponseKind::Reply, &[]);
    garbage[8] = 9;
    fake_server
        .0
        .write_all(&garbage)
        .await
        .expect("write to the client");

    bounded("the connection closing", connection.closed()).await;
    assert_closed_error(
        bounded("the call failing", call)
            .await
            .expect("the call task"),
    );
    match bounded("the stream failing", stream.next()).await {
        Some(Err(TransportError::Closed)) => {}
        other => panic!("expected the stream to fail with Closed, got {other:?}"),
    }
    assert_closed_error(connection.call(&ApiVersionsRequest {}).await);
}

/// A server that sends a stream more items than it was granted breaks the
/// protocol; the client closes the connection instead of buffering them.
#[tokio::test]
async fn an_item_without_credit_closes_the_client_connection() {
    let (client, mut fake_server) = pipe();
    let connection = Connection::new(client, TransportConfig::default());
    let mut stream = bounded(
        "opening a stream",
        connection.stream(&WatchMetadataRequest {}, 1),
    )
    .await
    .expect("open a metadata watch");
    let (header, _) = read_raw_request(&mut fake_server.0).await;
    let item = runnel_api::encode(&MetadataUpdate::Delta {
        version: 0,
        changes: Vec::new(),
    });
    let mut frames = raw_response(header.correlation_id, ResponseKind::Item, &item);
    frames.extend(raw_response(
        header.correlation_id,
        ResponseKind::Item,
        &item,
    ));
    fake_server
        .0
        .write_all(&frames)
        .await
        .expect("write to the client");

    bounded("the connection closing", connection.closed()).await;
    let mut outcomes = Vec::new();
    while let Some(outcome) = bounded("the stream draining", stream.next()).await {
        let failed = outcome.is_err();
        outcomes.push(outcome);
        if failed {
            break;
        }
    }
    assert!(
        matches!(outcomes.last(), Some(Err(TransportError::Closed))),
        "the stream ends with Closed: {outcomes:?}"
    );
    assert!(outcomes.len() <= 2, "at most the granted item precedes it");
}
