//! Connections ending: server shutdown, a client going away, connecting
//! to nothing.

use std::sync::Arc;
use std::time::Duration;

use runnel_api::{
    ApiVersionsRequest, ErrorCode, ListSpusRequest, ListTopicsRequest, WatchMetadataRequest,
};
use runnel_transport::{CancellationToken, Connection, TransportConfig, TransportError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::support::{
    TestHandler, TestServer, assert_closed_error, bounded, serve_pipe, serve_pipe_with, settle,
};

/// Shutting the server down closes its connections even while requests are
/// still running (one ignores its cancellation outright); clients see the
/// close and every waiting call fails with `Closed`. `serve` returns only
/// once the requests have finished, so what the handler holds is released.
#[tokio::test]
async fn server_shutdown_closes_connections_and_fails_waiting_calls() {
    let mut server = TestServer::start().await;
    let connection = server.connect().await;
    let stubborn = stubborn_call(&connection);
    let polite = tokio::spawn({
        let connection = connection.clone();
        async move { connection.call(&ListSpusRequest {}).await }
    });
    let mut stream = connection
        .stream(&WatchMetadataRequest {}, 2)
        .await
        .expect("open a metadata watch");
    server
        .handler
        .wait_for("both calls reaching the handler", |counters| {
            counters.requests_held == 2
        })
        .await;

    server.shutdown.cancel();
    bounded("the client seeing the close", connection.closed()).await;
    assert!(connection.is_closed());
    assert_closed_error(
        bounded("the stubborn call", stubborn)
            .await
            .expect("call task"),
    );
    assert_closed_error(bounded("the polite call", polite).await.expect("call task"));
    loop {
        match bounded("the stream failing", stream.next()).await {
            Some(Ok(_)) => continue,
            Some(Err(TransportError::Closed)) => break,
            other => panic!("expected the stream to fail with Closed, got {other:?}"),
        }
    }
    server
        .handler
        .wait_for("the polite handler seeing the cancellation", |counters| {
            counters.unary_cancelled == 1
        })
        .await;
    settle().await;
    assert!(
        !server.task.is_finished(),
        "serve returned while a request was still running"
    );
    server.handler.release.cancel();
    bounded("serve returning", &mut server.task)
        .await
        .expect("the serve task");
    assert_eq!(
        Arc::strong_count(&server.handler),
        1,
        "serve returned with the handler still in use"
    );
}

/// A request that never finishes holds a stopping server only for the
/// shutdown grace; then `serve` returns and leaves it behind.
#[tokio::test]
async fn a_request_ignoring_its_cancellation_holds_shutdown_only_for_the_grace() {
    let mut server = TestServer::start_with(TransportConfig {
        shutdown_grace: Duration::from_millis(200),
        ..TransportConfig::default()
    })
    .await;
    let connection = server.connect().await;
    let stubborn = stubborn_call(&connection);
    server
        .handler
        .wait_for("the call reaching the handler", |counters| {
            counters.requests_held == 1
        })
        .await;

    server.shutdown.cancel();
    bounded("serve returning after the grace", &mut server.task)
        .await
        .expect("the serve task");
    assert!(
        Arc::strong_count(&server.handler) > 1,
        "the stubborn request was left running"
    );
    assert_closed_error(
        bounded("the stubborn call", stubborn)
            .await
            .expect("call task"),
    );
    server.handler.release.cancel();
}

/// A call the test handler holds, ignoring its cancellation, until
/// [`TestHandler::release`](crate::support::TestHandler::release).
fn stubborn_call(connection: &Connection) -> JoinHandle<Result<(), TransportError>> {
    let connection = connection.clone();
    tokio::spawn(async move {
        connection
            .call(&ListTopicsRequest { names: Vec::new() })
            .await
            .map(drop)
    })
}

#[tokio::test]
async fn a_client_going_away_cancels_its_requests() {
    let server = TestServer::start().await;
    let connection = server.connect().await;
    let call = tokio::spawn({
        let connection = connection.clone();
        async move { connection.call(&ListSpusRequest {}).await }
    });
    server
        .handler
        .wait_for("the call reaching the handler", |counters| {
            counters.requests_held == 1
        })
        .await;
    call.abort();
    drop(connection);
    server
        .handler
        .wait_for("the handler seeing the cancellation", |counters| {
            counters.unary_cancelled == 1
        })
        .await;
}

#[tokio::test]
async fn serve_connection_returns_when_its_client_goes_away() {
    let handler = TestHandler::new();
    let (connection, served) = serve_pipe(handler);
    bounded(
        "an api versions reply",
        connection.call(&ApiVersionsRequest {}),
    )
    .await
    .expect("api versions succeeds");
    drop(connection);
    bounded("serve_connection returning", served)
        .await
        .expect("the serving task")
        .expect("a client hanging up is a clean end");
}

/// Connections served with one shutdown token end independently: one
/// client going away leaves the token, and the others, alone.
#[tokio::test]
async fn one_connection_ending_leaves_the_others_on_its_token_serving() {
    let handler = TestHandler::new();
    let shutdown = CancellationToken::new();
    let (first, first_served) = serve_pipe_with(handler.clone(), shutdown.clone());
    let (second, second_served) = serve_pipe_with(handler, shutdown.clone());
    drop(first);
    bounded("the first connection ending", first_served)
        .await
        .expect("the serving task")
        .expect("a client hanging up is a clean end");
    assert!(!shutdown.is_cancelled());
    bounded("an api versions reply", second.call(&ApiVersionsRequest {}))
        .await
        .expect("the second connection still serves");

    shutdown.cancel();
    bounded("the second connection ending", second_served)
        .await
        .expect("the serving task")
        .expect("a shutdown is a clean end");
    bounded("the client seeing the close", second.closed()).await;
}

#[tokio::test]
async fn connecting_to_a_closed_port_is_a_retriable_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address")
        .to_string();
    drop(listener);
    let error = bounded(
        "the connect failing",
        Connection::connect(&addr, TransportConfig::default()),
    )
    .await
    .expect_err("nothing listens there");
    match &error {
        TransportError::Connect { addr: failed, .. } => assert_eq!(*failed, addr),
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert!(error.is_retriable());
}

#[tokio::test]
async fn an_abandoned_call_is_cancelled_on_the_server_while_the_connection_lives() {
    let server = TestServer::start().await;
    let connection = server.connect().await;
    let call = tokio::spawn({
        let connection = connection.clone();
        async move { connection.call(&ListSpusRequest {}).await }
    });
    server
        .handler
        .wait_for("the call reaching the handler", |counters| {
            counters.requests_held == 1
        })
        .await;
    call.abort();
    server
        .handler
        .wait_for("the handler seeing the cancellation", |counters| {
            counters.unary_cancelled == 1
        })
        .await;
    let versions = bounded("a later call", connection.call(&ApiVersionsRequest {})).await;
    assert!(
        versions.is_ok(),
        "the connection still serves: {versions:?}"
    );
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused_and_unary_calls_still_pass() {
    let config = TransportConfig {
        max_streams: 2,
        max_in_flight: 2,
        ..TransportConfig::default()
    };
    let server = TestServer::start_with(config).await;
    let connection = server.connect().await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = connection
            .stream(&WatchMetadataRequest {}, 1)
            .await
            .expect("a stream opens");
        bounded("a first item", stream.next()).await;
        open.push(stream);
    }
    let mut refused = connection
        .stream(&WatchMetadataRequest {}, 1)
        .await
        .expect("the request is sent");
    match bounded("the refusal", refused.next()).await {
        Some(Err(TransportError::Api(error))) => {
            assert_eq!(error.code, ErrorCode::TOO_MANY_REQUESTS);
            assert!(error.code.is_retriable());
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Two streams open do not use up the two places for requests.
    for _ in 0..3 {
        let versions = bounded("a unary call", connection.call(&ApiVersionsRequest {})).await;
        assert!(versions.is_ok(), "{versions:?}");
    }
    drop(open);
    let mut again = connection
        .stream(&WatchMetadataRequest {}, 1)
        .await
        .expect("a stream opens");
    let item = bounded("an item once places are free", again.next()).await;
    assert!(matches!(item, Some(Ok(_))), "{item:?}");
}
