//! The requesting side: one connection shared by many concurrent
//! requests and streams.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use runnel_api::{ApiError, Request};
use runnel_wire::frame::{
    API_CANCEL, API_CREDIT, RESPONSE_HEADER_LEN, RequestHeader, ResponseHeader, ResponseKind,
    encode_frame,
};
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::io::{Outgoing, Tail, read_frame, write_loop};
use crate::{ByteStream, TransportConfig, TransportError};

/// What a waiting exchange receives.
#[derive(Debug)]
enum Event {
    Item(Bytes),
    /// The last frame (a unary reply or a stream's end) and its body.
    Last(Bytes),
}

#[derive(Debug)]
enum Pending {
    Unary(oneshot::Sender<Bytes>),
    Stream {
        events: mpsc::UnboundedSender<Event>,
        /// Items the server may still send before it needs more credit.
        allowance: u32,
    },
}

#[derive(Debug)]
struct Shared {
    config: TransportConfig,
    queue: mpsc::Sender<Outgoing>,
    pending: Mutex<HashMap<u32, Pending>>,
    next_correlation_id: AtomicU32,
    closed: CancellationToken,
    /// Why the server refused this connection, when it said so (a TLS
    /// alert about our certificate); set before `closed` is cancelled.
    refusal: std::sync::OnceLock<String>,
}

impl Shared {
    /// The error for an exchange the connection's end cut short.
    fn closed_error(&self) -> TransportError {
        match self.refusal.get() {
            Some(why) => TransportError::Refused(why.clone()),
            None => TransportError::Closed,
        }
    }
}

/// A multiplexed connection; clones share it. It closes when the last
/// clone is dropped or the peer goes away.
#[derive(Debug, Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    _owner: Arc<DropGuard>,
}

#[derive(Debug)]
struct DropGuard(CancellationToken);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Connection {
    /// Connects over TCP, then TLS when the config carries TLS settings.
    pub async fn connect(
        addr: &str,
        config: TransportConfig,
    ) -> Result<Connection, TransportError> {
        let connecting = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr));
        let socket = match connecting.await {
            Ok(Ok(socket)) => socket,
            Ok(Err(source)) => {
                return Err(TransportError::Connect {
                    addr: addr.to_string(),
                    source,
                });
            }
            Err(_) => {
                return Err(TransportError::Connect {
                    addr: addr.to_string(),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
                });
            }
        };
        crate::io::tune_socket(&socket);
        let Some(tls) = config.client_tls.clone() else {
            return Ok(Connection::new(socket, config));
        };
        let handshake = tokio::time::timeout(config.connect_timeout, tls.connect(addr, socket));
        match handshake.await {
            Ok(Ok(stream)) => Ok(Connection::new(stream, config)),
            Ok(Err(source)) => Err(match crate::tls::refusal(&source) {
                Some(why) => TransportError::Refused(why),
                None => TransportError::Connect {
                    addr: addr.to_string(),
                    source,
                },
            }),
            Err(_) => Err(TransportError::Connect {
                addr: addr.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the TLS handshake timed out",
                ),
            }),
        }
    }

    /// Starts a connection over any byte stream (TLS, a test pipe).
    pub fn new<S: ByteStream>(stream: S, config: TransportConfig) -> Connection {
        let (reader, writer) = stream.into_split();
        let (queue, outgoing) = mpsc::channel(config.write_queue);
        let closed = CancellationToken::new();
        let shared = Arc::new(Shared {
            config,
            queue,
            pending: Mutex::default(),
            next_correlation_id: AtomicU32::new(1),
            closed: closed.clone(),
            refusal: std::sync::OnceLock::new(),
        });
        tokio::spawn({
            let closed = closed.clone();
            async move {
                tokio::select! {
                    _ = closed.cancelled() => {}
                    result = write_loop(writer, outgoing, closed.clone()) => {
                        if let Err(error) = result {
                            debug!(%error, "connection write failed");
                        }
                    }
                }
                closed.cancel();
            }
        });
        tokio::spawn(read_loop(reader, Arc::clone(&shared)));
        Connection {
            shared,
            _owner: Arc::new(DropGuard(closed)),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Resolves when the connection has closed.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    /// Sends a unary request and waits for its reply (at most the
    /// configured request timeout). An error reply becomes
    /// [`TransportError::Api`].
    pub async fn call<R, T>(&self, request: &R) -> Result<T, TransportError>
    where
        R: Request<Response = Result<T, ApiError>>,
        T: DeserializeOwned,
    {
        self.call_with_tail(request, Bytes::new()).await
    }

    /// Like [`Connection::call`], with `tail` bytes after the message.
    pub async fn call_with_tail<R, T>(&self, request: &R, tail: Bytes) -> Result<T, TransportError>
    where
        R: Request<Response = Result<T, ApiError>>,
        T: DeserializeOwned,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        let correlation_id = self.register(Pending::Unary(reply_tx))?;
        // Until the reply arrives, giving up (a timeout, or the caller
        // dropping this future) tells the server to stop and frees the
        // request's place there.
        let mut abandon = Abandon {
            connection: self,
            correlation_id,
            armed: true,
        };
        let frame = self.request_frame(request, tail, correlation_id)?;
        let timeout = self.shared.config.request_timeout;
        let waited = tokio::time::timeout(timeout, async {
            self.send(frame).await?;
            reply_rx.await.map_err(|_| self.shared.closed_error())
        })
        .await;
        let body = match waited {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout(timeout)),
        }?;
        abandon.armed = false;
        let reply: Result<T, ApiError> = runnel_api::decode(&body)?;
        Ok(reply?)
    }

    /// Opens a stream: the server may send up to `window` items ahead of
    /// the consumer; credits are returned as items are taken.
    pub async fn stream<R: Request>(
        &self,
        request: &R,
        window: u32,
    ) -> Result<ResponseStream<R::Response>, TransportError> {
        assert!(R::STREAMING, "{:?} is not a streaming api", R::API_KEY);
        assert!(window > 0, "a stream needs a window of at least one item");
        let (events_tx, events) = mpsc::unbounded_channel();
        let correlation_id = self.register(Pending::Stream {
            events: events_tx,
            allowance: window,
        })?;
        // From here the stream's drop cancels it, on error paths too.
        let stream = ResponseStream {
            connection: self.clone(),
            correlation_id,
            events,
            window,
            taken: 0,
            ended: false,
            _item: std::marker::PhantomData,
        };
        let frame = self.request_frame(request, Bytes::new(), correlation_id)?;
        self.send(frame).await?;
        self.send(control_frame(
            API_CREDIT,
            correlation_id,
            &window.to_be_bytes(),
        ))
        .await?;
        Ok(stream)
    }

    fn request_frame<R: Request>(
        &self,
        request: &R,
        tail: Bytes,
        correlation_id: u32,
    ) -> Result<Outgoing, TransportError> {
        let header = RequestHeader {
            api_key: R::API_KEY as u16,
            api_version: R::API_KEY.versions().1,
            correlation_id,
            client_id: self.shared.config.client_id.clone(),
        };
        let mut encoded_header = Vec::with_capacity(header.encoded_len());
        header.encode(&mut encoded_header);
        let body = runnel_api::encode(request);
        let size = encoded_header.len() + body.len() + tail.len();
        let limit = self.shared.config.max_frame_bytes;
        if size > limit {
            return Err(TransportError::FrameTooLarge { size, limit });
        }
        let mut bytes = Vec::with_capacity(4 + encoded_header.len() + body.len());
        encode_frame(&encoded_header, &body, tail.len(), &mut bytes);
        let tail = if tail.is_empty() {
            Tail::None
        } else {
            Tail::Bytes(tail)
        };
        Ok(Outgoing {
            bytes,
            tail,
            held: None,
        })
    }

    /// Registers an exchange under a correlation id no open exchange uses
    /// (ids wrap around after 2^32 requests).
    fn register(&self, pending: Pending) -> Result<u32, TransportError> {
        let mut map = self.shared.pending.lock().expect("pending map lock");
        // Checked under the lock the reader takes to fail everything on
        // close: nothing registered after it can wait forever.
        if self.is_closed() {
            return Err(self.shared.closed_error());
        }
        let correlation_id = loop {
            let id = self
                .shared
                .next_correlation_id
                .fetch_add(1, Ordering::Relaxed);
            if !map.contains_key(&id) {
                break id;
            }
        };
        map.insert(correlation_id, pending);
        Ok(correlation_id)
    }

    fn forget(&self, correlation_id: u32) {
        self.shared
            .pending
            .lock()
            .expect("pending map lock")
            .remove(&correlation_id);
    }

    async fn send(&self, frame: Outgoing) -> Result<(), TransportError> {
        tokio::select! {
            _ = self.shared.closed.cancelled() => Err(self.shared.closed_error()),
            sent = self.shared.queue.send(frame) => sent.map_err(|_| self.shared.closed_error()),
        }
    }
}

/// Forgets a unary exchange and cancels it on the server unless disarmed.
#[derive(Debug)]
struct Abandon<'a> {
    connection: &'a Connection,
    correlation_id: u32,
    armed: bool,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.connection.forget(self.correlation_id);
            let _ = self.connection.shared.queue.try_send(control_frame(
                API_CANCEL,
                self.correlation_id,
                &[],
            ));
        }
    }
}

fn control_frame(api_key: u16, correlation_id: u32, body: &[u8]) -> Outgoing {
    let header = RequestHeader {
        api_key,
        api_version: 0,
        correlation_id,
        client_id: String::new(),
    };
    let mut encoded_header = Vec::with_capacity(header.encoded_len());
    header.encode(&mut encoded_header);
    let mut bytes = Vec::with_capacity(4 + encoded_header.len() + body.len());
    encode_frame(&encoded_header, body, 0, &mut bytes);
    Outgoing {
        bytes,
        tail: Tail::None,
        held: None,
    }
}

async fn read_loop<R: tokio::io::AsyncRead + Unpin>(mut reader: R, shared: Arc<Shared>) {
    let max = shared.config.max_frame_bytes;
    let outcome = loop {
        let frame = tokio::select! {
            _ = shared.closed.cancelled() => break Ok(()),
            frame = read_frame(&mut reader, RESPONSE_HEADER_LEN, max) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame.freeze(),
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        };
        let header = match ResponseHeader::decode(&frame) {
            Ok(header) => header,
            Err(error) => break Err(error.into()),
        };
        let body = frame.slice(RESPONSE_HEADER_LEN..);
        if let Err(error) = deliver(&shared, header, body) {
            break Err(error);
        }
    };
    if let Err(error) = outcome {
        if let TransportError::Io(error) = &error
            && let Some(why) = crate::tls::refusal(error)
        {
            let _ = shared.refusal.set(why);
        }
        debug!(%error, "connection read ended");
    }
    // Fail every exchange still waiting: dropping their senders wakes them.
    let mut pending = shared.pending.lock().expect("pending map lock");
    shared.closed.cancel();
    pending.clear();
}

fn deliver(shared: &Shared, header: ResponseHeader, body: Bytes) -> Result<(), TransportError> {
    let mut pending = shared.pending.lock().expect("pending map lock");
    let id = header.correlation_id;
    // Unknown ids belong to requests that timed out or were cancelled.
    let Some(entry) = pending.get_mut(&id) else {
        return Ok(());
    };
    match (entry, header.kind) {
        (Pending::Stream { events, allowance }, ResponseKind::Item) => {
            if *allowance == 0 {
                return Err(TransportError::Protocol(format!(
                    "stream {id} sent an item without credit"
                )));
            }
            *allowance -= 1;
            // A receiver that is gone has cancelled; its items are dropped.
            let _ = events.send(Event::Item(body));
        }
        (Pending::Unary(_), ResponseKind::Item) => {
            return Err(TransportError::Protocol(format!(
                "stream item for unary request {id}"
            )));
        }
        (_, ResponseKind::Reply | ResponseKind::End) => match pending.remove(&id) {
            Some(Pending::Unary(reply)) => {
                let _ = reply.send(body);
            }
            Some(Pending::Stream { events, .. }) => {
                let _ = events.send(Event::Last(body));
            }
            None => unreachable!("the entry was just found"),
        },
    }
    Ok(())
}

/// The items of one stream, in order. Dropping it cancels the stream.
#[derive(Debug)]
pub struct ResponseStream<T> {
    connection: Connection,
    correlation_id: u32,
    events: mpsc::UnboundedReceiver<Event>,
    window: u32,
    /// Items taken since credit was last returned.
    taken: u32,
    ended: bool,
    _item: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> ResponseStream<T> {
    /// The next item; `None` once the stream ended without error.
    pub async fn next(&mut self) -> Option<Result<T, TransportError>> {
        let item = self.next_with_tail().await?;
        Some(item.and_then(|(item, tail)| {
            if tail.is_empty() {
                Ok(item)
            } else {
                Err(TransportError::Protocol(format!(
                    "{} unexpected bytes after a stream item",
                    tail.len()
                )))
            }
        }))
    }

    /// The next item and the bytes that follow it in its frame.
    pub async fn next_with_tail(&mut self) -> Option<Result<(T, Bytes), TransportError>> {
        if self.ended {
            return None;
        }
        let Some(event) = self.events.recv().await else {
            self.ended = true;
            return Some(Err(self.connection.shared.closed_error()));
        };
        match event {
            Event::Item(body) => {
                if let Err(error) = self.return_credit().await {
                    return Some(Err(error));
                }
                Some(
                    runnel_api::decode_with_tail::<T>(&body)
                        .map(|(item, tail)| {
                            let tail_at = body.len() - tail.len();
                            (item, body.slice(tail_at..))
                        })
                        .map_err(TransportError::from),
                )
            }
            Event::Last(body) => {
                self.ended = true;
                match runnel_api::decode::<Result<(), ApiError>>(&body) {
                    Ok(Ok(())) => None,
                    Ok(Err(error)) => Some(Err(error.into())),
                    Err(error) => Some(Err(error.into())),
                }
            }
        }
    }

    /// Returns credit in batches of half the window, so a stream costs
    /// one credit frame per half window of items.
    async fn return_credit(&mut self) -> Result<(), TransportError> {
        self.taken += 1;
        if self.taken < self.window.div_ceil(2) {
            return Ok(());
        }
        let credit = std::mem::take(&mut self.taken);
        {
            let mut pending = self
                .connection
                .shared
                .pending
                .lock()
                .expect("pending map lock");
            if let Some(Pending::Stream { allowance, .. }) = pending.get_mut(&self.correlation_id) {
                *allowance += credit;
            }
        }
        self.connection
            .send(control_frame(
                API_CREDIT,
                self.correlation_id,
                &credit.to_be_bytes(),
            ))
            .await
    }
}

impl<T> Drop for ResponseStream<T> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        self.connection.forget(self.correlation_id);
        let frame = control_frame(API_CANCEL, self.correlation_id, &[]);
        if let Err(mpsc::error::TrySendError::Full(frame)) =
            self.connection.shared.queue.try_send(frame)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let queue = self.connection.shared.queue.clone();
            runtime.spawn(async move { queue.send(frame).await });
        }
    }
}
