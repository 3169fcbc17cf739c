//! The Streaming Processing Unit (SPU): holds partition replicas on disk
//! and serves produce and streaming fetch for the partitions it leads.
//!
//! Layout:
//! - [`run`] (this file) binds the listeners, starts the background work
//!   and closes every log on shutdown.
//! - `controller`: the session with the SC — assignments in, heartbeats
//!   out, reconnecting forever.
//! - `replicas` / `replica`: which partition logs this SPU holds, opened,
//!   removed and kept within retention as the SC says, and each one's role:
//!   as leader it runs the replication rules of `runnel-replication`.
//! - `follower`: one replication stream per leader SPU this SPU follows.
//! - `identity`: which cluster the data directory belongs to, and which
//!   topic incarnation each replica directory holds.
//! - `public`: the client api (produce with `acks`, fetch streams, list
//!   offsets); `private`: the peer listener, the leader side of
//!   replication.
//! - `auth`: with TLS, who may do what: the SC's latest security state,
//!   asked by both listeners on every request.
//!
//! The SPU is on the data path only: it never decides placement or
//! leadership, it applies what the SC sends, and proposes ISR changes of
//! the partitions it leads for the SC to accept or refuse.

mod auth;
mod controller;
mod error;
mod follower;
mod identity;
mod private;
mod producers;
mod public;
mod replica;
mod replicas;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use runnel_transport::{Admission, NodeTls, TransportConfig};
use runnel_types::SpuId;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use error::SpuError;

use crate::auth::Authorizer;
use crate::controller::ScSession;
use crate::private::PrivateApi;
use crate::public::PublicApi;
use crate::replica::ReplicaContext;
use crate::replicas::Replicas;

/// How often leaders check their followers' lag.
const LEADER_TICK: Duration = Duration::from_millis(250);

/// Everything an SPU process needs to know.
#[derive(Debug, Clone)]
pub struct SpuConfig {
    pub id: SpuId,
    /// Address clients connect to (produce, fetch).
    pub public_addr: String,
    /// Address peers connect to (replication, later).
    pub private_addr: String,
    /// Where clients and peers are told to connect, when not the
    /// listening addresses (behind a proxy or NAT).
    pub advertised_public_addr: Option<String>,
    pub advertised_private_addr: Option<String>,
    /// The SC's private listener.
    pub sc_addr: String,
    /// Replicas live in `data_dir/<topic>-<partition>/`; `data_dir/cluster.id`
    /// names the cluster they belong to.
    pub data_dir: PathBuf,
    /// How often the SPU reports its replicas to the SC. An SC that leaves
    /// a heartbeat unanswered for three intervals is taken for dead.
    pub heartbeat_interval: Duration,
    /// How often every log deletes segments past its retention.
    pub retention_check_interval: Duration,
    /// How long a follower may stay behind its leader before the leader
    /// proposes it out of the ISR.
    pub replica_lag_time_max: Duration,
    /// The most a produce request's compressed batches may decompress to,
    /// together; a request past it is refused, never stored. Every
    /// produced batch is decoded whole before it is appended.
    pub max_decompressed_batch_bytes: usize,
    pub transport: TransportConfig,
    /// With TLS, the SPU serves both listeners over TLS 1.3, admits only
    /// clients with a certificate from the cluster CA on the public one and
    /// only nodes on the private one, connects to the SC and to leaders with
    /// its own certificate (`spu:<id>`), and authorizes every request with
    /// the security state the SC sends. Without it, none of this.
    pub tls: Option<NodeTls>,
}

impl Default for SpuConfig {
    fn default() -> Self {
        SpuConfig {
            id: SpuId(1),
            public_addr: "127.0.0.1:9005".to_string(),
            private_addr: "127.0.0.1:9006".to_string(),
            advertised_public_addr: None,
            advertised_private_addr: None,
            sc_addr: "127.0.0.1:9004".to_string(),
            data_dir: PathBuf::from("spu-data"),
            heartbeat_interval: Duration::from_secs(1),
            retention_check_interval: Duration::from_secs(10),
            replica_lag_time_max: Duration::from_secs(10),
            max_decompressed_batch_bytes: 32 << 20,
            transport: TransportConfig::default(),
            tls: None,
        }
    }
}

/// Runs an SPU until `shutdown` is cancelled: serves clients and peers,
/// keeps a session with the SC (reconnecting while it is unreachable), and
/// on shutdown stops the listeners and closes every log cleanly so the
/// next start needs no recovery scan.
pub async fn run(config: SpuConfig, shutdown: CancellationToken) -> Result<(), SpuError> {
    validate(&config)?;
    let authorizer = Arc::new(Authorizer::new(config.id, config.tls.is_some()));
    let transports = Transports::of(&config, &authorizer)?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| SpuError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let public_listener = bind("public", &config.public_addr).await?;
    let private_listener = bind("private", &config.private_addr).await?;
    info!(
        spu = %config.id,
        public_addr = %config.public_addr,
        private_addr = %config.private_addr,
        data_dir = %config.data_dir.display(),
        "SPU listening"
    );

    let (proposals, proposed) = tokio::sync::mpsc::unbounded_channel();
    let context = ReplicaContext {
        me: config.id,
        lag_time_max_ms: i64::try_from(config.replica_lag_time_max.as_millis()).unwrap_or(i64::MAX),
        proposals,
    };
    let replicas = Arc::new(Replicas::new(
        context,
        config.data_dir.clone(),
        transports.outgoing.clone(),
        shutdown.clone(),
    ));
    let public = Arc::new(PublicApi::new(
        config.id,
        Arc::clone(&replicas),
        Arc::clone(&authorizer),
        public::Limits {
            max_frame_bytes: config.transport.max_frame_bytes,
            max_decompressed_batch_bytes: config.max_decompressed_batch_bytes,
        },
        shutdown.clone(),
    ));
    let private = Arc::new(PrivateApi::new(
        config.id,
        Arc::clone(&replicas),
        Arc::clone(&authorizer),
        config.transport.max_frame_bytes,
        shutdown.clone(),
    ));
    let session = ScSession::new(
        &config,
        transports.outgoing,
        Arc::clone(&replicas),
        authorizer,
        proposed,
    );

    tokio::join!(
        runnel_transport::serve(public_listener, public, transports.public, shutdown.clone()),
        runnel_transport::serve(
            private_listener,
            private,
            transports.private,
            shutdown.clone(),
        ),
        session.run(shutdown.clone()),
        replicas.enforce_retention_every(config.retention_check_interval),
        replicas.tick_every(LEADER_TICK),
    );
    replicas.close_all().await;
    info!(spu = %config.id, "SPU stopped");
    Ok(())
}

fn validate(config: &SpuConfig) -> Result<(), SpuError> {
    if config.heartbeat_interval.is_zero() {
        return Err(SpuError::InvalidConfig(
            "heartbeat_interval is zero; use a positive interval such as 1s".to_string(),
        ));
    }
    if config.retention_check_interval.is_zero() {
        return Err(SpuError::InvalidConfig(
            "retention_check_interval is zero; use a positive interval such as 10s".to_string(),
        ));
    }
    if config.max_decompressed_batch_bytes == 0 {
        return Err(SpuError::InvalidConfig(
            "max_decompressed_batch_bytes is zero; use a positive size such as 32MiB".to_string(),
        ));
    }
    if config.transport.max_frame_bytes <= public::FRAME_OVERHEAD_BYTES {
        return Err(SpuError::InvalidConfig(format!(
            "transport max_frame_bytes is {}; it must exceed {} bytes to carry record batches",
            config.transport.max_frame_bytes,
            public::FRAME_OVERHEAD_BYTES
        )));
    }
    Ok(())
}

/// The transport settings of each side of the SPU.
#[derive(Debug)]
struct Transports {
    public: TransportConfig,
    private: TransportConfig,
    /// Connections to the SC and to leader SPUs.
    outgoing: TransportConfig,
}

impl Transports {
    /// With TLS, each listener admits its kind of peer (clients, or nodes)
    /// and checks certificates against the revocations `authorizer` keeps;
    /// outgoing connections present this SPU's certificate.
    fn of(config: &SpuConfig, authorizer: &Authorizer) -> Result<Transports, SpuError> {
        let Some(tls) = &config.tls else {
            return Ok(Transports {
                public: config.transport.clone(),
                private: config.transport.clone(),
                outgoing: config.transport.clone(),
            });
        };
        let server = |what, admission| {
            let server_tls = tls
                .server(admission, authorizer.revocations())
                .map_err(|source| SpuError::Tls { what, source })?;
            Ok::<_, SpuError>(TransportConfig {
                server_tls: Some(server_tls),
                ..config.transport.clone()
            })
        };
        let public = server("the public listener", Admission::Clients)?;
        let private = server("the private listener", Admission::Nodes)?;
        let client_tls = tls.client().map_err(|source| SpuError::Tls {
            what: "connections to the SC and to other SPUs",
            source,
        })?;
        Ok(Transports {
            public,
            private,
            outgoing: TransportConfig {
                client_tls: Some(client_tls),
                ..config.transport.clone()
            },
        })
    }
}

async fn bind(listener: &'static str, addr: &str) -> Result<TcpListener, SpuError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SpuError::Bind {
            listener,
            addr: addr.to_string(),
            source,
        })
}

/// Milliseconds since the Unix epoch: the clock logs are driven with
/// (retention, interval flush, append times).
fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
