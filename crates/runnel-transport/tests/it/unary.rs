//! Unary requests: round trips, multiplexing, tails, and the ways a call
//! fails (timeout, dropped responder, frame limit).

use std::time::Duration;

use bytes::Bytes;
use runnel_api::{
    ApiVersionsRequest, DeleteTopicRequest, ErrorCode, ListOffsetsRequest, ListSpusRequest,
    OffsetQuery, ProduceRequest,
};
use runnel_transport::{TransportConfig, TransportError};
use runnel_types::{Offset, PartitionId};

use crate::support::{TestHandler, TestServer, all_versions, bounded, pattern, serve_pipe, topic};

#[tokio::test]
async fn unary_call_round_trips() {
    let server = TestServer::start().await;
    let connection = server.connect().await;
    let reply = bounded(
        "an api versions reply",
        connection.call(&ApiVersionsRequest {}),
    )
    .await
    .expect("api versions succeeds");
    assert_eq!(reply, all_versions());
}

/// Sixteen requests in flight on one connection; the server answers them in
/// the reverse order, and each caller still gets its own reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_get_their_own_replies_in_any_order() {
    const REQUESTS: u32 = 16;
    let server = TestServer::start().await;
    let connection = server.connect().await;
    let mut calls = tokio::task::JoinSet::new();
    for index in 0..REQUESTS {
        let connection = connection.clone();
        calls.spawn(async move {
            let request = ListOffsetsRequest {
                topic: topic(),
                partition: PartitionId(REQUESTS),
                query: OffsetQuery::Timestamp(i64::from(index)),
            };
            (index, connection.call(&request).await)
        });
    }
    let replies = bounded("all sixteen replies", calls.join_all()).await;
    assert_eq!(replies.len(), REQUESTS as usize);
    for (index, reply) in replies {
        let reply = reply.expect("list offsets succeeds");
        assert_eq!(
            reply.offset,
            Offset(7 * i64::from(index)),
            "request {index}"
        );
        assert_eq!(reply.log_start_offset, Offset(i64::from(index)));
    }
    assert_eq!(server.handler.counters().reverse_replies, REQUESTS);
}

async fn produce_tail_arrives_intact(
    connection: &runnel_transport::Connection,
    handler: &TestHandler,
) {
    let tail = Bytes::from(pattern(100_000, 3));
    let request = ProduceRequest {
        topic: topic(),
        partition: PartitionId(0),
        acks: runnel_api::Acks::All,
        timeout_ms: 30_000,
    };
    let reply = bounded(
        "a produce reply",
        connection.call_with_tail(&request, tail.clone()),
    )
    .await
    .expect("produce succeeds");
    assert_eq!(reply.log_end_offset, Offset(tail.len() as i64));
    let produced = handler.produced.lock().expect("produced lock");
    assert_eq!(produced.len(), 1);
    assert!(produced[0] == tail, "the tail changed on the way");
}

#[tokio::test]
async fn produce_tail_arrives_intact_over_tcp() {
    let server = TestServer::start().await;
    let connection = server.connect().await;
    produce_tail_arrives_intact(&connection, &server.handler).await;
}

#[tokio::test]
async fn produce_tail_arrives_intact_over_a_generic_stream() {
    let handler = TestHandler::new();
    let (connection, _server) = serve_pipe(handler.clone());
    produce_tail_arrives_intact(&connection, &handler).await;
}

#[tokio::test]
async fn a_request_larger_than_the_frame_limit_is_refused_before_sending() {
    let server = TestServer::start().await;
    let config = TransportConfig {
        max_frame_bytes: 1024,
        ..TransportConfig::default()
    };
    let connection = server.connect_with(config).await;
    let request = ProduceRequest {
        topic: topic(),
        partition: PartitionId(0),
        acks: runnel_api::Acks::All,
        timeout_ms: 30_000,
    };
    let refused = connection
        .call_with_tail(&request, Bytes::from(vec![7; 2048]))
        .await;
    match refused {
        Err(TransportError::FrameTooLarge { size, limit }) => {
            assert_eq!(limit, 1024);
            assert!(size > 2048, "the size counts header, body and tail: {size}");
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    // The connection is intact, and the server never saw the big request.
    let small = Bytes::from_static(b"small");
    bounded(
        "a produce reply",
        connection.call_with_tail(&request, small.clone()),
    )
    .await
    .expect("a small produce succeeds");
    let produced = server.handler.produced.lock().expect("produced lock");
    assert_eq!(*produced, vec![small]);
}

#[tokio::test]
async fn a_call_without_a_reply_times_out_and_the_connection_stays_usable() {
    let server = TestServer::start().await;
    let timeout = Duration::from_millis(200);
    let config = TransportConfig {
        request_timeout: timeout,
        ..TransportConfig::default()
    };
    let connection = server.connect_with(config).await;
    let error = bounded("the timeout", connection.call(&ListSpusRequest {}))
        .await
        .expect_err("the handler never answers");
    assert!(
        matches!(error, TransportError::Timeout(limit) if limit == timeout),
        "expected a timeout, got {error:?}"
    );
    assert!(error.is_retriable());
    assert!(!connection.is_closed());
    bounded(
        "an api versions reply",
        connection.call(&ApiVersionsRequest {}),
    )
    .await
    .expect("the connection still serves calls");
}

#[tokio::test]
async fn a_dropped_responder_answers_with_an_error() {
    let server = TestServer::start().await;
    let connection = server.connect().await;
    let request = DeleteTopicRequest { name: topic() };
    let error = bounded("an error reply", connection.call(&request))
        .await
        .expect_err("the handler dropped the request");
    match error {
        TransportError::Api(error) => assert_eq!(error.code, ErrorCode::UNKNOWN),
        other => panic!("expected an api error, got {other:?}"),
    }
    assert!(!connection.is_closed());
}

/// A requester that waits for each reply before sending its next request
/// never finds the server at its in-flight limit: the server frees the
/// request's place before its reply leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_one_after_another_fit_an_in_flight_limit_of_one() {
    let config = TransportConfig {
        max_in_flight: 1,
        ..TransportConfig::default()
    };
    let server = TestServer::start_with(config).await;
    let connection = server.connect().await;
    for call in 0..500 {
        bounded(
            "an api versions reply",
            connection.call(&ApiVersionsRequest {}),
        )
        .await
        .unwrap_or_else(|error| panic!("call {call} was refused: {error:?}"));
    }
}
