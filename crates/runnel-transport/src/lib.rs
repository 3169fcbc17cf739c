//! Framed, multiplexed connections for every Runnel listener.
//!
//! One connection carries many requests at once, matched by correlation
//! id. A streaming request gets many responses on its correlation id, and
//! the requester grants them in credits ([`runnel_wire::frame::API_CREDIT`]):
//! the server sends an item only when it holds a credit, so a slow
//! consumer slows its own stream and nothing else. Every frame's length is
//! checked against [`TransportConfig::max_frame_bytes`] before anything is
//! allocated for it.
//!
//! The byte stream is generic ([`ByteStream`]): plaintext TCP, or TLS 1.3
//! over it ([`tls`]) when the config carries TLS settings, without
//! touching callers. A stream item may carry a file range as its tail; on
//! plaintext TCP it goes to the socket with `sendfile`.
//!
//! Knows nothing of what the apis mean: the client side sends typed
//! [`runnel_api::Request`]s, the server side hands raw requests to a
//! [`Handler`].

mod backoff;
mod client;
mod io;
mod server;
pub mod tls;

use std::time::Duration;

pub use backoff::Backoff;
pub use client::{Connection, ResponseStream};
pub use io::{ByteStream, FileRange, FrameWrite};
pub use server::{
    Handler, IncomingRequest, Responder, StreamClosed, StreamSender, serve, serve_connection,
};
pub use tls::{
    Admission, ClientTls, NodeTls, Revocations, ServerTls, TlsError, certificate_required,
    expiry_deadline,
};
pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;

use runnel_api::ApiError;
use runnel_wire::WireError;

/// Limits and timings of a connection. The same struct serves both sides.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Largest frame accepted or sent, length prefix excluded.
    pub max_frame_bytes: usize,
    /// How long a unary request waits for its reply.
    pub request_timeout: Duration,
    /// Requests (streams included) a server runs at once for one
    /// connection. One more is answered at once with a retriable error
    /// ([`runnel_api::ErrorCode::TOO_MANY_REQUESTS`]) instead of being waited for: the
    /// reader never stops, so the credits and cancels that let running
    /// streams finish always get through.
    pub max_in_flight: usize,
    /// Streams a server keeps open at once for one connection (they do not
    /// count as requests in progress). One more ends at once with
    /// `TOO_MANY_REQUESTS`.
    pub max_streams: usize,
    /// Connections a server serves at once; more wait to be accepted. At
    /// most half of them may be in their TLS handshake; more are closed.
    pub max_connections: usize,
    /// Connections a server serves at once from one IP address; more are
    /// closed as soon as they are accepted.
    pub max_connections_per_addr: usize,
    /// Bytes of one stream's items queued for the connection's writer; a
    /// stream whose peer reads slowly waits there, whatever its credits.
    pub max_stream_queued_bytes: usize,
    /// How long a server gives a client to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// A server closes a connection with no request in progress and no
    /// stream open that completes no frame for this long.
    pub idle_timeout: Duration,
    /// How long a server holds a connection whose authentication failed
    /// before closing it, so guessing costs the guesser time.
    pub failed_auth_delay: Duration,
    /// How long a stopping server waits for its requests still running
    /// (they have seen their cancellation) before leaving them behind.
    pub shutdown_grace: Duration,
    /// TLS for the listeners a server serves with this config.
    pub server_tls: Option<ServerTls>,
    /// TLS for the connections a client opens with this config.
    pub client_tls: Option<ClientTls>,
    /// Frames queued for a connection's writer.
    pub write_queue: usize,
    /// Label sent in every request header.
    pub client_id: String,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_frame_bytes: 64 << 20,
            request_timeout: Duration::from_secs(30),
            max_in_flight: 256,
            max_streams: 4096,
            max_connections: 4096,
            max_connections_per_addr: 256,
            max_stream_queued_bytes: 32 << 20,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            failed_auth_delay: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            server_tls: None,
            client_tls: None,
            write_queue: 1024,
            client_id: "runnel".to_string(),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl TransportConfig {
    /// This config for connecting to the node named `principal` (`sc`,
    /// `spu:<id>`): with TLS, its certificate must name it
    /// ([`ClientTls::expecting`]). Without TLS, the same config.
    pub fn expecting(&self, principal: &str) -> TransportConfig {
        TransportConfig {
            client_tls: self.client_tls.as_ref().map(|tls| tls.expecting(principal)),
            ..self.clone()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connection closed")]
    Closed,
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("request of {size} bytes exceeds the frame limit of {limit} bytes")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("protocol violation by the peer: {0}")]
    Protocol(String),
    #[error("undecodable message: {0}")]
    Wire(#[from] WireError),
    /// The server answered with an error.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The server refused this side's TLS identity; says why.
    #[error("the server refused the connection: {0}")]
    Refused(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl TransportError {
    /// Whether the same request may succeed on a new connection or later.
    pub fn is_retriable(&self) -> bool {
        match self {
            TransportError::Connect { .. }
            | TransportError::Closed
            | TransportError::Timeout(_)
            | TransportError::Io(_) => true,
            TransportError::Api(error) => error.code.is_retriable(),
            _ => false,
        }
    }
}
