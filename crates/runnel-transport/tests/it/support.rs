//! The test handler, a server on loopback, an in-memory byte stream for the
//! generic path, and raw frame helpers for peers that misbehave.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use runnel_api::{
    ApiError, ApiKey, ApiVersion, ApiVersionsResponse, ErrorCode, FetchItem, ListOffsetsRequest,
    OffsetQuery, ProduceRequest, ProduceResponse, Reply, Request, SpuConnectRequest,
    StreamFetchRequest,
};
use runnel_metadata::{AssignmentUpdate, MetadataUpdate, PartitionKey};
use runnel_transport::{
    ByteStream, CancellationToken, Connection, FileRange, FrameWrite, Handler, IncomingRequest,
    Responder, TaskTracker, TransportConfig, TransportError, serve, serve_connection,
};
use runnel_types::{Offset, PartitionId, TopicName};
use runnel_wire::frame::{
    LENGTH_PREFIX_LEN, RequestHeader, ResponseHeader, ResponseKind, encode_frame,
};
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, DuplexStream, ReadHalf, WriteHalf, duplex, split,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Upper bound of every wait in these tests. Reaching it is a failure (a
/// hang), never a measurement.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not happen within {WAIT:?}"),
    }
}

/// Gives a misbehaving server the chance to do what it must not (send an
/// item without credit) before the test checks that it did not. A pass
/// never depends on this being long enough; only a bug can be missed.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// What the handler has done, observed by tests through a watch channel.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Items a metadata watch has handed to the transport.
    pub watch_items_sent: u64,
    /// Streams whose `send` returned `StreamClosed`.
    pub streams_closed_on_send: u64,
    /// Streams whose `cancelled()` resolved.
    pub streams_cancelled: u64,
    /// Unary requests whose `cancelled()` resolved.
    pub unary_cancelled: u64,
    /// Requests the handler holds without answering.
    pub requests_held: u64,
    /// Replies sent by the reverse-order list-offsets handler.
    pub reverse_replies: u32,
}

/// Serves a few apis with behaviours the tests need:
///
/// - `ApiVersions`: a reply listing every api key.
/// - `ListOffsets { partition: n, query: Timestamp(i) }`: replies to `n`
///   such requests in reverse order of `i`, offset `7 * i`.
/// - `Produce`: records the tail, replies with its length as the log end.
/// - `WatchMetadata`: deltas numbered 0, 1, 2, … until the stream closes.
/// - `SpuConnect { id: 0 }`: waits for `cancelled()`; `{ id: n }`: sends
///   `n` items, then ends with `NOT_LEADER`.
/// - `StreamFetch`: the test file from `offset` in items of `max_bytes`,
///   sent as file tails, then a clean end.
/// - `ListSpus`: never answers, waits for `cancelled()`.
/// - `ListTopics`: never answers and ignores cancellation; returns once
///   the test cancels [`TestHandler::release`].
/// - `DeleteTopic`: drops the responder.
#[derive(Debug)]
pub struct TestHandler {
    pub counters: watch::Sender<Counters>,
    pub produced: Mutex<Vec<Bytes>>,
    pub fetch_file: Arc<File>,
    pub fetch_content: Vec<u8>,
    /// Lets the held `ListTopics` requests return.
    pub release: CancellationToken,
}

/// Bytes of the fetch file: more than the 256 KiB buffer of the default
/// `write_file`, so the buffered path loops.
pub const FETCH_FILE_LEN: usize = 300_000;

impl TestHandler {
    pub fn new() -> Arc<TestHandler> {
        let fetch_content = pattern(FETCH_FILE_LEN, 17);
        let mut file = tempfile::tempfile().expect("create a temporary file");
        file.write_all(&fetch_content)
            .expect("write the temporary file");
        Arc::new(TestHandler {
            counters: watch::Sender::new(Counters::default()),
            produced: Mutex::default(),
            fetch_file: Arc::new(file),
            fetch_content,
            release: CancellationToken::new(),
        })
    }

    /// Waits until the counters satisfy `condition`.
    pub async fn wait_for(&self, what: &str, condition: impl FnMut(&Counters) -> bool) {
        let mut counters = self.counters.subscribe();
        bounded(what, counters.wait_for(condition))
            .await
            .expect("the handler owns the sender");
    }

    pub fn counters(&self) -> Counters {
        self.counters.borrow().clone()
    }

    fn count(&self, update: impl FnOnce(&mut Counters)) {
        self.counters.send_modify(update);
    }

    async fn list_offsets(&self, request: ListOffsetsRequest, responder: Responder) {
        let (OffsetQuery::Timestamp(index), total) = (request.query, request.partition.0) else {
            return reject(responder, "the test handler expects a timestamp query").await;
        };
        let turn = total - 1 - index as u32;
        let mut counters = self.counters.subscribe();
        let _ = counters
            .wait_for(|counters| counters.reverse_replies == turn)
            .await;
        let reply: Reply<_> = Ok(runnel_api::ListOffsetsResponse {
            offset: Offset(7 * index),
            log_start_offset: Offset(index),
            high_watermark: Offset(i64::from(total)),
        });
        responder.reply(&reply).await;
        self.count(|counters| counters.reverse_replies += 1);
    }

    async fn produce(&self, request: &IncomingRequest, responder: Responder) {
        let tail = match request.decode_with_tail::<ProduceRequest>() {
            Ok((_, tail)) => tail,
            Err(error) => return reject(responder, &error.to_string()).await,
        };
        let reply: Reply<_> = Ok(ProduceResponse {
            base_offset: Offset(0),
            log_end_offset: Offset(tail.len() as i64),
        });
        self.produced.lock().expect("produced lock").push(tail);
        responder.reply(&reply).await;
    }

    async fn watch_metadata(&self, responder: Responder) {
        let mut stream = responder.into_stream();
        for version in 0.. {
            let update = MetadataUpdate::Delta {
                version,
                changes: Vec::new(),
            };
            if stream.send(&update).await.is_err() {
                self.count(|counters| counters.streams_closed_on_send += 1);
                return;
            }
            self.count(|counters| counters.watch_items_sent += 1);
        }
    }

    async fn spu_connect(&self, request: SpuConnectRequest, responder: Responder) {
        let mut stream = responder.into_stream();
        if request.spec.id.0 == 0 {
            stream.cancelled().await;
            self.count(|counters| counters.streams_cancelled += 1);
            return;
        }
        for partition in 0..request.spec.id.0 {
            let update = AssignmentUpdate::Remove(PartitionKey {
                topic: topic(),
                partition: PartitionId(partition),
            });
            if stream.send(&update).await.is_err() {
                return;
            }
        }
        stream
            .end(Err(ApiError::new(
                ErrorCode::NOT_LEADER,
                "this SPU no longer leads; reconnect to the new leader",
            )))
            .await;
    }

    async fn stream_fetch(&self, request: StreamFetchRequest, responder: Responder) {
        let mut stream = responder.into_stream();
        let end = self.fetch_content.len() as u64;
        let mut position = request.offset.0 as u64;
        while position < end {
            let len = u64::from(request.max_bytes).min(end - position);
            let item = FetchItem {
                first_offset: Offset(position as i64),
                next_offset: Offset((position + len) as i64),
                log_start_offset: Offset(0),
                high_watermark: Offset(end as i64),
            };
            let range = FileRange {
                file: Arc::clone(&self.fetch_file),
                position,
                len,
            };
            if stream.send_with_file(&item, range).await.is_err() {
                return;
            }
            position += len;
        }
        stream.end(Ok(())).await;
    }
}

impl Handler for TestHandler {
    async fn handle(&self, request: IncomingRequest, responder: Responder) {
        match ApiKey::from_u16(request.header.api_key) {
            Some(ApiKey::ApiVersions) => {
                let reply: Reply<_> = Ok(all_versions());
                responder.reply(&reply).await;
            }
            Some(ApiKey::ListOffsets) => match request.decode() {
                Ok(decoded) => self.list_offsets(decoded, responder).await,
                Err(error) => reject(responder, &error.to_string()).await,
            },
            Some(ApiKey::Produce) => self.produce(&request, responder).await,
            Some(ApiKey::WatchMetadata) => self.watch_metadata(responder).await,
            Some(ApiKey::SpuConnect) => match request.decode() {
                Ok(decoded) => self.spu_connect(decoded, responder).await,
                Err(error) => reject(responder, &error.to_string()).await,
            },
            Some(ApiKey::StreamFetch) => match request.decode() {
                Ok(decoded) => self.stream_fetch(decoded, responder).await,
                Err(error) => reject(responder, &error.to_string()).await,
            },
            Some(ApiKey::ListSpus) => {
                self.count(|counters| counters.requests_held += 1);
                responder.cancelled().await;
                self.count(|counters| counters.unary_cancelled += 1);
            }
            Some(ApiKey::ListTopics) => {
                let _held = responder;
                self.count(|counters| counters.requests_held += 1);
                self.release.cancelled().await;
            }
            Some(ApiKey::DeleteTopic) => drop(responder),
            _ => {
                let reply: Reply<()> = Err(ApiError::new(
                    ErrorCode::UNSUPPORTED_API,
                    "the test handler does not serve this api",
                ));
                responder.reply(&reply).await;
            }
        }
    }
}

async fn reject(responder: Responder, message: &str) {
    let reply: Reply<()> = Err(ApiError::new(ErrorCode::MALFORMED_REQUEST, message));
    responder.reply(&reply).await;
}

pub fn all_versions() -> ApiVersionsResponse {
    ApiVersionsResponse {
        versions: ApiKey::ALL
            .iter()
            .map(|&key| ApiVersion {
                api_key: key as u16,
                min_version: key.versions().0,
                max_version: key.versions().1,
            })
            .collect(),
    }
}

pub fn topic() -> TopicName {
    TopicName::new("events").expect("a valid topic name")
}

/// Deterministic bytes that differ at every position of a short period, so
/// a misplaced or repeated chunk shows.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|index| (index % 251) as u8 ^ seed.wrapping_mul((index / 251) as u8))
        .collect()
}

/// A server on an ephemeral loopback port, stopped when dropped.
#[derive(Debug)]
pub struct TestServer {
    pub addr: String,
    pub handler: Arc<TestHandler>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(TransportConfig::default()).await
    }

    pub async fn start_with(config: TransportConfig) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address")
            .to_string();
        let handler = TestHandler::new();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            Arc::clone(&handler),
            config,
            shutdown.clone(),
        ));
        TestServer {
            addr,
            handler,
            shutdown,
            task,
        }
    }

    pub async fn connect(&self) -> Connection {
        self.connect_with(TransportConfig::default()).await
    }

    pub async fn connect_with(&self, config: TransportConfig) -> Connection {
        Connection::connect(&self.addr, config)
            .await
            .expect("connect to the test server")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An in-memory [`ByteStream`]: exercises the generic path (buffered
/// `write_file`, `Connection::new`, `serve_connection`).
#[derive(Debug)]
pub struct Pipe(pub DuplexStream);

#[derive(Debug)]
pub struct PipeWriter(WriteHalf<DuplexStream>);

impl ByteStream for Pipe {
    type Reader = ReadHalf<DuplexStream>;
    type Writer = PipeWriter;

    fn into_split(self) -> (ReadHalf<DuplexStream>, PipeWriter) {
        let (reader, writer) = split(self.0);
        (reader, PipeWriter(writer))
    }
}

impl AsyncWrite for PipeWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(context, buffer)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(context)
    }
}

impl FrameWrite for PipeWriter {}

/// Two ends of an in-memory connection.
pub fn pipe() -> (Pipe, Pipe) {
    let (client, server) = duplex(64 << 10);
    (Pipe(client), Pipe(server))
}

/// A server connection over a pipe; the returned task ends with
/// `serve_connection`'s result.
pub fn serve_pipe(
    handler: Arc<TestHandler>,
) -> (Connection, JoinHandle<Result<(), TransportError>>) {
    serve_pipe_with(handler, CancellationToken::new())
}

/// Like [`serve_pipe`], stopped by `shutdown`.
pub fn serve_pipe_with(
    handler: Arc<TestHandler>,
    shutdown: CancellationToken,
) -> (Connection, JoinHandle<Result<(), TransportError>>) {
    let (client, server) = pipe();
    let peer: SocketAddr = "127.0.0.1:9".parse().expect("a valid socket address");
    let task = tokio::spawn(serve_connection(
        server,
        peer,
        None,
        handler,
        TransportConfig::default(),
        shutdown,
        TaskTracker::new(),
    ));
    (Connection::new(client, TransportConfig::default()), task)
}

/// A request frame built by hand, as a raw peer sends it.
pub fn raw_request(api_key: u16, correlation_id: u32, body: &[u8]) -> Vec<u8> {
    let mut header = Vec::new();
    RequestHeader {
        api_key,
        api_version: 0,
        correlation_id,
        client_id: "raw".to_string(),
    }
    .encode(&mut header);
    let mut frame = Vec::new();
    encode_frame(&header, body, 0, &mut frame);
    frame
}

/// A typed request frame built by hand.
pub fn raw_typed_request<R: Request>(correlation_id: u32, request: &R) -> Vec<u8> {
    raw_request(
        R::API_KEY as u16,
        correlation_id,
        &runnel_api::encode(request),
    )
}

/// A response frame built by hand, as a fake server sends it.
pub fn raw_response(correlation_id: u32, kind: ResponseKind, body: &[u8]) -> Vec<u8> {
    let mut header = Vec::new();
    ResponseHeader {
        correlation_id,
        kind,
    }
    .encode(&mut header);
    let mut frame = Vec::new();
    encode_frame(&header, body, 0, &mut frame);
    frame
}

/// Reads one frame after its length prefix.
async fn read_raw_frame(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut prefix = [0; LENGTH_PREFIX_LEN];
    bounded("a frame's length", stream.read_exact(&mut prefix))
        .await
        .expect("the peer sends a whole length prefix");
    let mut frame = vec![0; u32::from_be_bytes(prefix) as usize];
    bounded("a frame's bytes", stream.read_exact(&mut frame))
        .await
        .expect("the peer sends a whole frame");
    frame
}

pub async fn read_raw_response(stream: &mut (impl AsyncRead + Unpin)) -> (ResponseHeader, Vec<u8>) {
    let frame = read_raw_frame(stream).await;
    let header = ResponseHeader::decode(&frame).expect("a well-formed response header");
    (
        header,
        frame[runnel_wire::frame::RESPONSE_HEADER_LEN..].to_vec(),
    )
}

pub async fn read_raw_request(stream: &mut (impl AsyncRead + Unpin)) -> (RequestHeader, Vec<u8>) {
    let frame = read_raw_frame(stream).await;
    let (header, body_at) = RequestHeader::decode(&frame).expect("a well-formed request header");
    (header, frame[body_at..].to_vec())
}

/// Reads until the peer closes the connection; fails on any byte or hang.
pub async fn assert_closed_by_peer(stream: &mut (impl AsyncRead + Unpin)) {
    let mut buffer = [0; 64];
    match bounded(
        "the server closing the connection",
        stream.read(&mut buffer),
    )
    .await
    {
        Ok(0) | Err(_) => {}
        Ok(count) => panic!("the server sent {count} bytes instead of closing"),
    }
}

/// Asserts the error is `Closed`.
pub fn assert_closed_error<T: std::fmt::Debug>(result: Result<T, TransportError>) {
    match result {
        Err(TransportError::Closed) => {}
        other => panic!("expected TransportError::Closed, got {other:?}"),
    }
}
