//! The serving side: accept connections, read requests, run each in its
//! own task, and send replies and credit-limited streams back.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use runnel_api::{ApiError, ErrorCode, Request};
use runnel_pki::PeerIdentity;
use runnel_wire::WireError;
use runnel_wire::frame::{
    API_CANCEL, API_CREDIT, REQUEST_HEADER_FIXED_LEN, RequestHeader, ResponseHeader, ResponseKind,
    encode_frame,
};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::io::{Outgoing, Tail, read_frame, write_loop};
use crate::{ByteStream, FileRange, ServerTls, TransportConfig, TransportError};

/// How long a closing connection may take to send the frames already
/// queued for it.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Most credits a stream may hold unused; more are ignored.
const MAX_STREAM_CREDITS: usize = 1 << 20;

/// Serves requests: called once per request, in a task of its own.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        request: IncomingRequest,
        responder: Responder,
    ) -> impl Future<Output = ()> + Send;
}

/// A request as read from the wire.
#[derive(Debug)]
pub struct IncomingRequest {
    pub header: RequestHeader,
    pub body: Bytes,
    pub peer: SocketAddr,
    /// Who the peer's certificate names, on a TLS connection with a
    /// client certificate; `None` on plaintext or anonymous connections.
    pub identity: Option<Arc<PeerIdentity>>,
}

impl IncomingRequest {
    /// Decodes a body that holds exactly the message.
    pub fn decode<R: Request>(&self) -> Result<R, WireError> {
        runnel_api::decode(&self.body)
    }

    /// Decodes the message and returns the bytes that follow it.
    pub fn decode_with_tail<R: Request>(&self) -> Result<(R, Bytes), WireError> {
        let (message, tail) = runnel_api::decode_with_tail(&self.body)?;
        let tail_at = self.body.len() - tail.len();
        Ok((message, self.body.slice(tail_at..)))
    }
}

/// Per-request state shared with the connection's reader: credits granted
/// and whether the requester cancelled.
#[derive(Debug)]
struct Exchange {
    credits: Semaphore,
    cancelled: CancellationToken,
}

type Exchanges = Arc<Mutex<HashMap<u32, Arc<Exchange>>>>;

/// Answers one request: [`Responder::reply`] once, or
/// [`Responder::into_stream`] for a stream. Dropped without an answer, it
/// sends an error so the requester never waits for nothing.
#[derive(Debug)]
pub struct Responder {
    correlation_id: u32,
    queue: mpsc::Sender<Outgoing>,
    exchange: Arc<Exchange>,
    exchanges: Exchanges,
    answered: bool,
    /// This request's place among the connection's requests in progress
    /// (a stream's place among its streams, once it is one). Given back
    /// before the last frame is queued, so a requester that sends its next
    /// request on seeing that frame finds the place free.
    permit: Option<OwnedSemaphorePermit>,
    /// The connection's places for streams.
    streams: Arc<Semaphore>,
    /// Most bytes a stream may have queued for the writer.
    max_queued_bytes: usize,
}

impl Responder {
    /// Sends the one answer to a unary request.
    pub async fn reply<T: Serialize>(mut self, response: &T) {
        self.answered = true;
        self.permit = None;
        let frame = response_frame(self.correlation_id, ResponseKind::Reply, response, 0);
        let _ = self.queue.send(frame).await;
    }

    /// Turns this exchange into a stream of items. A stream leaves the
    /// connection's unary requests and takes a place among its streams;
    /// with none left, the stream ends at once with a retriable error and
    /// every send fails.
    pub fn into_stream(mut self) -> StreamSender {
        self.answered = true;
        self.permit = Arc::clone(&self.streams).try_acquire_owned().ok();
        let refused = self.permit.is_none();
        if refused {
            self.exchange.cancelled.cancel();
            let error: Result<(), ApiError> = Err(ApiError::new(
                ErrorCode::TOO_MANY_REQUESTS,
                "this connection has as many open streams as the server allows; close some or \
                 open another connection",
            ));
            queue_final(
                &self.queue,
                response_frame(self.correlation_id, ResponseKind::End, &error, 0),
            );
        }
        let queued = Arc::new(Semaphore::new(queued_limit(self.max_queued_bytes)));
        StreamSender {
            responder: self,
            ended: refused,
            queued,
        }
    }

    /// Resolves when the requester cancels or the connection closes.
    pub async fn cancelled(&self) {
        self.exchange.cancelled.cancelled().await
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.permit = None;
        self.exchanges
            .lock()
            .expect("exchange map lock")
            .remove(&self.correlation_id);
        if !self.answered {
            let error: Result<(), ApiError> = Err(ApiError::new(
                ErrorCode::UNKNOWN,
                "the server dropped this request without answering; see its log",
            ));
            let frame = response_frame(self.correlation_id, ResponseKind::Reply, &error, 0);
            queue_final(&self.queue, frame);
        }
    }
}

/// Queues the last frame of an exchange from a synchronous context (a
/// `Drop`): at once if there is room, else from a task, so the requester
/// never waits for an answer that was dropped.
fn queue_final(queue: &mpsc::Sender<Outgoing>, frame: Outgoing) {
    if let Err(mpsc::error::TrySendError::Full(frame)) = queue.try_send(frame)
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        let queue = queue.clone();
        runtime.spawn(async move { queue.send(frame).await });
    }
}

/// The stream was cancelled by the requester or its connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stream was cancelled or its connection closed")]
pub struct StreamClosed;

/// Sends the items of one stream, each only when the requester has
/// granted a credit for it.
#[derive(Debug)]
pub struct StreamSender {
    responder: Responder,
    ended: bool,
    /// Bytes of this stream's items queued but not yet written (the
    /// semaphore starts with the stream's limit).
    queued: Arc<Semaphore>,
}

impl StreamSender {
    pub async fn send<T: Serialize>(&mut self, item: &T) -> Result<(), StreamClosed> {
        self.send_frame(item, Tail::None).await
    }

    /// Sends an item followed by `tail` bytes.
    pub async fn send_with_tail<T: Serialize>(
        &mut self,
        item: &T,
        tail: Bytes,
    ) -> Result<(), StreamClosed> {
        self.send_frame(item, Tail::Bytes(tail)).await
    }

    /// Sends an item followed by a file range, without copying it where
    /// the connection allows.
    pub async fn send_with_file<T: Serialize>(
        &mut self,
        item: &T,
        range: FileRange,
    ) -> Result<(), StreamClosed> {
        self.send_frame(item, Tail::File(range)).await
    }

    /// Cancel-safe: dropped before it returns, it has sent nothing and used
    /// no credit (the credit is spent only together with queueing the
    /// frame, which cannot be interrupted).
    async fn send_frame<T: Serialize>(&mut self, item: &T, tail: Tail) -> Result<(), StreamClosed> {
        let exchange = &self.responder.exchange;
        let credit = tokio::select! {
            biased;
            _ = exchange.cancelled.cancelled() => return Err(StreamClosed),
            credit = exchange.credits.acquire() => credit.map_err(|_| StreamClosed)?,
        };
        let tail_len = match &tail {
            Tail::None => 0,
            Tail::Bytes(bytes) => bytes.len(),
            Tail::File(range) => range.len as usize,
        };
        let mut frame = response_frame(
            self.responder.correlation_id,
            ResponseKind::Item,
            item,
            tail_len,
        );
        frame.tail = tail;
        // The stream waits while its frames not yet written hold the
        // bytes it may queue; one larger item waits for all of them.
        let queued = Arc::clone(&self.queued);
        let limit = queued_limit(self.responder.max_queued_bytes);
        let size = (frame.bytes.len() + tail_len).clamp(1, limit) as u32;
        frame.held = tokio::select! {
            biased;
            _ = exchange.cancelled.cancelled() => return Err(StreamClosed),
            held = queued.acquire_many_owned(size) => Some(held.map_err(|_| StreamClosed)?),
        };
        let slot = self
            .responder
            .queue
            .reserve()
            .await
            .map_err(|_| StreamClosed)?;
        credit.forget();
        slot.send(frame);
        Ok(())
    }

    /// Resolves when the requester cancels or the connection closes.
    pub async fn cancelled(&self) {
        self.responder.cancelled().await
    }

    /// Ends the stream, with an error or without.
    pub async fn end(mut self, result: Result<(), ApiError>) {
        self.ended = true;
        self.responder.permit = None;
        let frame = response_frame(self.responder.correlation_id, ResponseKind::End, &result, 0);
        let _ = self.responder.queue.send(frame).await;
    }
}

impl Drop for StreamSender {
    fn drop(&mut self) {
        self.responder.permit = None;
        if !self.ended && !self.responder.exchange.cancelled.is_cancelled() {
            let result: Result<(), ApiError> = Ok(());
            let frame =
                response_frame(self.responder.correlation_id, ResponseKind::End, &result, 0);
            queue_final(&self.responder.queue, frame);
        }
    }
}

/// The queued-bytes limit as the semaphore can count it: at least one
/// byte, at most what one acquisition can take.
fn queued_limit(configured: usize) -> usize {
    configured.clamp(1, u32::MAX as usize)
}

fn response_frame<T: Serialize>(
    correlation_id: u32,
    kind: ResponseKind,
    body: &T,
    tail_len: usize,
) -> Outgoing {
    let mut header = Vec::with_capacity(runnel_wire::frame::RESPONSE_HEADER_LEN);
    ResponseHeader {
        correlation_id,
        kind,
    }
    .encode(&mut header);
    let body = runnel_api::encode(body);
    let mut bytes = Vec::with_capacity(4 + header.len() + body.len());
    encode_frame(&header, &body, tail_len, &mut bytes);
    Outgoing {
        bytes,
        tail: Tail::None,
        held: None,
    }
}

/// Accepts connections on `listener` and serves each until `shutdown` is
/// cancelled; then stops accepting and closes the connections, letting
/// requests in progress see their cancellation, and returns once they have
/// finished or [`TransportConfig::shutdown_grace`] has passed. With
/// [`TransportConfig::server_tls`] set, every connection runs a TLS 1.3
/// handshake first, within [`TransportConfig::handshake_timeout`].
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    config: TransportConfig,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Semaphore::new(config.max_connections));
    // Connections still in their TLS handshake may hold at most half the
    // places, so slow handshakes cannot crowd out clients that finished.
    let handshakes = Arc::new(Semaphore::new((config.max_connections / 2).max(1)));
    let per_address = PerAddress::default();
    let served = TaskTracker::new();
    let requests = TaskTracker::new();
    loop {
        // At the connection limit, new connections wait in the listen
        // backlog until one closes.
        let place = tokio::select! {
            _ = shutdown.cancelled() => break,
            place = Arc::clone(&connections).acquire_owned() => {
                place.expect("the semaphore is never closed")
            }
        };
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: keep serving
                    // the connections there are.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // One address may hold only so many connections: closed at once,
        // before a handshake or a byte is read.
        let Some(address_place) = per_address.take(peer.ip(), config.max_connections_per_addr)
        else {
            debug!(%peer, limit = config.max_connections_per_addr,
                "connection refused: too many from this address");
            continue;
        };
        crate::io::tune_socket(&socket);
        let handshake = match &config.server_tls {
            None => None,
            Some(_) => match Arc::clone(&handshakes).try_acquire_owned() {
                Ok(handshake) => Some(handshake),
                Err(_) => {
                    debug!(%peer, "connection refused: too many TLS handshakes in progress");
                    continue;
                }
            },
        };
        let handler = Arc::clone(&handler);
        let config = config.clone();
        let shutdown = shutdown.child_token();
        let requests = requests.clone();
        served.spawn(async move {
            let served = match config.server_tls.clone() {
                None => {
                    serve_connection(socket, peer, None, handler, config, shutdown, requests).await
                }
                Some(tls) => {
                    let handshake = Handshake {
                        tls,
                        place: handshake,
                    };
                    serve_tls(socket, peer, handshake, handler, config, shutdown, requests).await
                }
            };
            if let Err(error) = served {
                debug!(%peer, %error, "connection closed");
            }
            drop(address_place);
            drop(place);
        });
    }
    // Returning means done: every connection has closed and its requests
    // have finished, so whatever the handler holds (a store, open logs) is
    // released for whoever starts next. Each connection ends within its
    // drain timeout; requests get the grace.
    drop(listener);
    served.close();
    served.wait().await;
    requests.close();
    if tokio::time::timeout(config.shutdown_grace, requests.wait())
        .await
        .is_err()
    {
        warn!(requests = requests.len(), grace = ?config.shutdown_grace,
            "requests still running after the shutdown grace; leaving them behind");
    }
}

/// A TLS handshake to run, holding its place among those in progress.
struct Handshake {
    tls: ServerTls,
    place: Option<OwnedSemaphorePermit>,
}

/// The handshake, bounded in time, then the connection. A refused
/// handshake holds the connection for the failed-authentication delay
/// before closing, so guessing costs the guesser time.
async fn serve_tls<H: Handler>(
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    handshake: Handshake,
    handler: Arc<H>,
    config: TransportConfig,
    shutdown: CancellationToken,
    requests: TaskTracker,
) -> Result<(), TransportError> {
    let Handshake {
        tls,
        place: handshake_place,
    } = handshake;
    // Fallible, so a refused peer's socket comes back and stays open
    // through the failed-authentication delay.
    let accepting = tls.acceptor().accept(socket).into_fallible();
    let handshake = tokio::time::timeout(config.handshake_timeout, accepting);
    let handshake = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        handshake = handshake => handshake,
    };
    // The handshake is over, whatever its outcome: its place goes to the
    // next one, even while a refused peer waits out the delay below.
    drop(handshake_place);
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err((error, socket))) => {
            info!(%peer, %error, "TLS handshake failed");
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(config.failed_auth_delay) => {}
            }
            drop(socket);
            return Err(error.into());
        }
        Err(_) => {
            info!(%peer, timeout = ?config.handshake_timeout, "TLS handshake timed out");
            return Err(TransportError::Timeout(config.handshake_timeout));
        }
    };
    let identity = tls.peer_identity(&stream).map(Arc::new);
    serve_connection(stream, peer, identity, handler, config, shutdown, requests).await
}

/// Connections open per client address.
#[derive(Debug, Clone, Default)]
struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl PerAddress {
    /// A place for one more connection from `address`, or `None` at the
    /// limit. The place is given back when dropped.
    fn take(&self, address: IpAddr, limit: usize) -> Option<AddressPlace> {
        let mut counts = self.0.lock().expect("per-address lock");
        let count = counts.entry(address).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(AddressPlace {
            counts: self.clone(),
            address,
        })
    }
}

#[derive(Debug)]
struct AddressPlace {
    counts: PerAddress,
    address: IpAddr,
}

impl Drop for AddressPlace {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().expect("per-address lock");
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// Serves one connection until it closes or `shutdown` is cancelled. Each
/// request runs in a task of `requests`, which the caller may wait for:
/// requests can outlive their connection until they see its cancellation.
pub async fn serve_connection<S: ByteStream, H: Handler>(
    stream: S,
    peer: SocketAddr,
    identity: Option<Arc<PeerIdentity>>,
    handler: Arc<H>,
    config: TransportConfig,
    shutdown: CancellationToken,
    requests: TaskTracker,
) -> Result<(), TransportError> {
    let (mut reader, writer) = stream.into_split();
    // Cancelled when this connection ends, for whatever reason; a child,
    // so that ending one connection leaves the caller's token alone.
    let connection = shutdown.child_token();
    let (queue, outgoing) = mpsc::channel(config.write_queue);
    let writer = tokio::spawn(write_loop(writer, outgoing, connection.clone()));
    let exchanges: Exchanges = Arc::default();
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
    let streams = Arc::new(Semaphore::new(config.max_streams));

    // One timer for the connection, moved only when it fires: a frame
    // just records when it arrived.
    let idle = tokio::time::sleep(config.idle_timeout);
    tokio::pin!(idle);
    let mut last_frame = tokio::time::Instant::now();
    let result = loop {
        // A connection with nothing in progress (no request running, no
        // stream open) that completes no frame within the idle timeout is
        // closed: a slow sender or a forgotten client holds a place only
        // so long. The read itself is never dropped midway otherwise.
        let read = read_frame(
            &mut reader,
            REQUEST_HEADER_FIXED_LEN,
            config.max_frame_bytes,
        );
        tokio::pin!(read);
        let frame = loop {
            tokio::select! {
                _ = connection.cancelled() => break Ok(None),
                frame = &mut read => break frame,
                () = &mut idle => {
                    let deadline = last_frame + config.idle_timeout;
                    if deadline > tokio::time::Instant::now() {
                        idle.as_mut().reset(deadline);
                    } else if exchanges.lock().expect("exchange map lock").is_empty() {
                        info!(%peer, timeout = ?config.idle_timeout, "closing idle connection");
                        break Ok(None);
                    } else {
                        idle.as_mut().reset(tokio::time::Instant::now() + config.idle_timeout);
                    }
                }
            }
        };
        last_frame = tokio::time::Instant::now();
        let frame = match frame {
            Ok(Some(frame)) => frame.freeze(),
            Ok(None) => break Ok(()),
            Err(error) => {
                if matches!(error, TransportError::Wire(WireError::FrameLength { .. })) {
                    warn!(%peer, %error, "closing connection: not a Runnel frame or too large");
                }
                break Err(error);
            }
        };
        let (header, body_at) = match RequestHeader::decode(&frame) {
            Ok(decoded) => decoded,
            Err(error) => {
                warn!(%peer, %error, "closing connection: malformed request header");
                break Err(error.into());
            }
        };
        match header.api_key {
            API_CREDIT => {
                let Ok(count) = <[u8; 4]>::try_from(&frame[body_at..]) else {
                    break Err(TransportError::Protocol(
                        "credit frame without a u32 count".into(),
                    ));
                };
                let exchange = exchanges
                    .lock()
                    .expect("exchange map lock")
                    .get(&header.correlation_id)
                    .cloned();
                if let Some(exchange) = exchange {
                    let room =
                        MAX_STREAM_CREDITS.saturating_sub(exchange.credits.available_permits());
                    exchange
                        .credits
                        .add_permits((u32::from_be_bytes(count) as usize).min(room));
                }
            }
            API_CANCEL => {
                if let Some(exchange) = exchanges
                    .lock()
                    .expect("exchange map lock")
                    .get(&header.correlation_id)
                {
                    exchange.cancelled.cancel();
                }
            }
            _ => {
                // Over the limit, a request is refused rather than waited
                // for: the requests in progress may be streams waiting for
                // the credits and cancels behind it, so the reader must
                // never stop for them.
                let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                    let refusal: Result<(), ApiError> = Err(ApiError::new(
                        ErrorCode::TOO_MANY_REQUESTS,
                        format!(
                            "the server is already running {} requests for this connection; \
                             retry when some have finished, or spread requests over more \
                             connections",
                            config.max_in_flight
                        ),
                    ));
                    let frame =
                        response_frame(header.correlation_id, ResponseKind::Reply, &refusal, 0);
                    // A peer that sends without reading may have filled
                    // the queue; closing must not wait for it.
                    tokio::select! {
                        _ = connection.cancelled() => break Ok(()),
                        sent = queue.send(frame) => if sent.is_err() {
                            break Err(TransportError::Closed);
                        },
                    }
                    continue;
                };
                let exchange = Arc::new(Exchange {
                    credits: Semaphore::new(0),
                    cancelled: connection.child_token(),
                });
                let duplicate = exchanges
                    .lock()
                    .expect("exchange map lock")
                    .insert(header.correlation_id, Arc::clone(&exchange))
                    .is_some();
                if duplicate {
                    break Err(TransportError::Protocol(format!(
                        "correlation id {} reused while its exchange is open",
                        header.correlation_id
                    )));
                }
                let responder = Responder {
                    correlation_id: header.correlation_id,
                    queue: queue.clone(),
                    exchange,
                    exchanges: Arc::clone(&exchanges),
                    answered: false,
                    permit: Some(permit),
                    streams: Arc::clone(&streams),
                    max_queued_bytes: config.max_stream_queued_bytes,
                };
                let request = IncomingRequest {
                    header,
                    body: frame.slice(body_at..),
                    peer,
                    identity: identity.clone(),
                };
                let handler = Arc::clone(&handler);
                requests.spawn(async move { handler.handle(request, responder).await });
            }
        }
    };
    connection.cancel();
    drop(queue);
    // Replies of requests still running are dropped with the connection;
    // the writer sends the frames already queued, then shuts down. A peer
    // that stopped reading gets a bounded time for that.
    let mut writer = writer;
    if tokio::time::timeout(DRAIN_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    result
}
