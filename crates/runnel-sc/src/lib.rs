//! The Streaming Controller (SC): owns the cluster metadata, places
//! partitions on SPUs, and pushes the metadata to SPUs and clients.
//!
//! - `store`: the durable metadata (redb), one transaction per change.
//! - `placement`: which SPUs hold a new topic's partitions (pure).
//! - `election`: who leads each partition and who is in its ISR (pure).
//! - `controller`: the metadata in memory, every change, and the change
//!   feed to watchers and SPUs.
//! - `service`: the public listener (clients) and the private listener
//!   (SPUs), and their streams.
//!
//! The SC is on the control path only: no record passes through it.

mod controller;
mod election;
mod placement;
mod service;
mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use runnel_api::Listener;
use runnel_transport::TransportConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::controller::Controller;
use crate::service::Service;
use crate::store::{Store, StoreError};

/// The store's file name inside the data directory.
pub const STORE_FILE: &str = "metadata.redb";

#[derive(Debug, Clone)]
pub struct ScConfig {
    /// Holds the metadata store, [`STORE_FILE`].
    pub data_dir: PathBuf,
    /// Address clients connect to.
    pub public_addr: String,
    /// Address SPUs connect to.
    pub private_addr: String,
    /// An SPU that neither connects nor heartbeats for this long is offline.
    pub session_timeout: Duration,
    pub transport: TransportConfig,
}

impl Default for ScConfig {
    fn default() -> Self {
        ScConfig {
            data_dir: PathBuf::from("."),
            public_addr: "127.0.0.1:9003".to_string(),
            private_addr: "127.0.0.1:9004".to_string(),
            session_timeout: Duration::from_secs(3),
            transport: TransportConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScError {
    #[error("cannot create the SC data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("address {addr} is in use; is another cluster running? choose another --base-port")]
    AddressInUse { addr: String },
    #[error("cannot listen on {addr}: {source}; check the address")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Runs an SC until `shutdown` is cancelled: opens the store under
/// `config.data_dir`, serves clients on `public_addr` and SPUs on
/// `private_addr`, then closes everything and returns.
pub async fn run(config: ScConfig, shutdown: CancellationToken) -> Result<(), ScError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ScError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let path = config.data_dir.join(STORE_FILE);
    let opened = tokio::task::spawn_blocking(move || {
        let store = Store::open(&path)?;
        let loaded = store.load()?;
        Ok::<_, StoreError>((store, loaded))
    })
    .await;
    let (store, loaded) = match opened {
        Ok(opened) => opened?,
        Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
    };
    let public = bind(&config.public_addr).await?;
    let private = bind(&config.private_addr).await?;

    info!(
        public_addr = %local_addr(&public, &config.public_addr),
        private_addr = %local_addr(&private, &config.private_addr),
        data_dir = %config.data_dir.display(),
        cluster_id = store.cluster_id(),
        version = loaded.version,
        topics = loaded.topics.len(),
        partitions = loaded.partitions.len(),
        spus = loaded.spus.len(),
        "SC started",
    );
    let controller = Arc::new(Controller::new(
        store,
        loaded,
        config.session_timeout,
        shutdown.clone(),
    ));
    let serving =
        [(public, Listener::ScPublic), (private, Listener::ScPrivate)].map(|(listener, role)| {
            let service = Service::new(role, Arc::clone(&controller), shutdown.clone());
            tokio::spawn(runnel_transport::serve(
                listener,
                Arc::new(service),
                config.transport.clone(),
                shutdown.clone(),
            ))
        });
    let liveness = tokio::spawn({
        let controller = Arc::clone(&controller);
        async move { controller.check_liveness().await }
    });

    shutdown.cancelled().await;
    for task in serving {
        // The listeners are closed once their tasks have returned.
        if let Err(join_error) = task.await {
            std::panic::resume_unwind(join_error.into_panic());
        }
    }
    if let Err(join_error) = liveness.await {
        std::panic::resume_unwind(join_error.into_panic());
    }
    controller.close().await;
    info!("SC stopped");
    Ok(())
}

async fn bind(addr: &str) -> Result<TcpListener, ScError> {
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            ScError::AddressInUse {
                addr: addr.to_string(),
            }
        } else {
            ScError::Bind {
                addr: addr.to_string(),
                source,
            }
        }
    })
}

/// The address a listener is bound to (the port chosen for port 0).
fn local_addr(listener: &TcpListener, configured: &str) -> String {
    listener
        .local_addr()
        .map_or_else(|_| configured.to_string(), |addr| addr.to_string())
}
