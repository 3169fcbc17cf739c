//! The Streaming Controller (SC): owns the cluster metadata, places
//! partitions on SPUs, and pushes the metadata to SPUs and clients.
//!
//! - `store`: the durable metadata (redb), one transaction per change;
//!   users, policy and certificates in tables of their own.
//! - `placement`: which SPUs hold a new topic's partitions (pure).
//! - `election`: who leads each partition and who is in its ISR (pure).
//! - `controller`: the metadata in memory, every change, and the change
//!   feed to watchers and SPUs.
//! - `security`: users, roles, logins and revocations, and their feed to
//!   the listeners and SPUs; `password`: argon2id hashing.
//! - `access`: who sent a request and what they may do.
//! - `service`: the public listener (clients) and the private listener
//!   (SPUs), and their streams.
//!
//! The SC is on the control path only: no record passes through it.

mod access;
mod controller;
mod election;
mod password;
mod placement;
mod security;
mod service;
mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use runnel_api::Listener;
use runnel_pki::{ClusterCa, PkiError, PrincipalSource};
use runnel_transport::{Admission, NodeTls, Revocations, ServerTls, TlsError, TransportConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::controller::Controller;
use crate::security::{Security, SecurityConfig};
use crate::service::Service;
use crate::store::{Loaded, LoadedSecurity, Store, StoreError};

/// The store's file name inside the data directory.
pub const STORE_FILE: &str = "metadata.redb";

/// The default longest lifetime of a certificate issued at login.
pub const DEFAULT_MAX_CERT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 60 * 60);

#[derive(Clone)]
pub struct ScConfig {
    /// Holds the metadata store, [`STORE_FILE`].
    pub data_dir: PathBuf,
    /// Address clients connect to.
    pub public_addr: String,
    /// Address SPUs connect to.
    pub private_addr: String,
    /// An SPU that neither connects nor heartbeats for this long is offline.
    pub session_timeout: Duration,
    /// Its `server_tls` is replaced by what `tls` makes for each listener.
    pub transport: TransportConfig,
    /// The SC's TLS material: security is on exactly when it is set.
    pub tls: Option<NodeTls>,
    /// The cluster CA's private key, PEM, to sign the CSRs of logins;
    /// without it the SC refuses logins. Needs `tls`, whose CA it must
    /// belong to.
    pub ca_key_pem: Option<Vec<u8>>,
    /// Principals allowed everything, whatever the policy says.
    pub superusers: Vec<String>,
    /// The longest lifetime a login certificate gets.
    pub max_cert_lifetime: Duration,
}

impl Default for ScConfig {
    fn default() -> Self {
        ScConfig {
            data_dir: PathBuf::from("."),
            public_addr: "127.0.0.1:9003".to_string(),
            private_addr: "127.0.0.1:9004".to_string(),
            session_timeout: Duration::from_secs(3),
            transport: TransportConfig::default(),
            tls: None,
            ca_key_pem: None,
            superusers: Vec::new(),
            max_cert_lifetime: DEFAULT_MAX_CERT_LIFETIME,
        }
    }
}

/// Leaves out the CA key, so no log line carries it.
impl std::fmt::Debug for ScConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScConfig")
            .field("data_dir", &self.data_dir)
            .field("public_addr", &self.public_addr)
            .field("private_addr", &self.private_addr)
            .field("session_timeout", &self.session_timeout)
            .field("transport", &self.transport)
            .field("tls", &self.tls)
            .field(
                "ca_key_pem",
                &self.ca_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("superusers", &self.superusers)
            .field("max_cert_lifetime", &self.max_cert_lifetime)
            .finish()
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
    #[error(
        "the SC's TLS material cannot serve its {listener} listener: {source}; check the CA, \
         certificate and key files"
    )]
    Tls {
        listener: &'static str,
        source: TlsError,
    },
    #[error("the SC cannot sign login certificates with the CA key: {0}")]
    CaKey(PkiError),
    #[error("invalid SC security setting: {0}")]
    Security(String),
}

/// Runs an SC until `shutdown` is cancelled: opens the store under
/// `config.data_dir`, serves clients on `public_addr` and SPUs on
/// `private_addr`, then closes everything and returns. With `config.tls`,
/// both listeners run TLS and every request is authorized.
pub async fn run(config: ScConfig, shutdown: CancellationToken) -> Result<(), ScError> {
    let secured = secure(&config)?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ScError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let (store, loaded, loaded_security) = open_store(config.data_dir.join(STORE_FILE)).await?;
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
        tls = secured.is_some(),
        users = loaded_security.users.len(),
        "SC started",
    );
    let controller = Arc::new(Controller::new(
        Arc::clone(&store),
        loaded,
        config.session_timeout,
        shutdown.clone(),
    ));
    let (security, [public_tls, private_tls]) = match secured {
        None => (None, [None, None]),
        Some(secured) => {
            let security = Security::new(
                secured.security,
                store,
                loaded_security,
                secured.revocations,
            );
            (Some(Arc::new(security)), secured.listeners.map(Some))
        }
    };
    let listeners = [
        (public, Listener::ScPublic, public_tls),
        (private, Listener::ScPrivate, private_tls),
    ];
    let serving = listeners.map(|(listener, role, server_tls)| {
        let service = Service::new(
            role,
            Arc::clone(&controller),
            security.clone(),
            shutdown.clone(),
        );
        let transport = TransportConfig {
            server_tls,
            ..config.transport.clone()
        };
        tokio::spawn(runnel_transport::serve(
            listener,
            Arc::new(service),
            transport,
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
    if let Some(security) = &security {
        security.close().await;
    }
    info!("SC stopped");
    Ok(())
}

/// What security needs, made from the configuration before anything
/// starts, so that bad TLS material stops the SC at once.
struct Secured {
    security: SecurityConfig,
    revocations: Revocations,
    /// The public listener's TLS, then the private one's.
    listeners: [ServerTls; 2],
}

/// Checks the security settings; `None` when security is off.
fn secure(config: &ScConfig) -> Result<Option<Secured>, ScError> {
    let Some(tls) = &config.tls else {
        if config.ca_key_pem.is_some() {
            return Err(ScError::Security(
                "a CA key is given without TLS; give the SC its TLS material too (--tls)".into(),
            ));
        }
        return Ok(None);
    };
    check_superusers(&config.superusers)?;
    if config.ca_key_pem.is_some() && tls.principal_source != PrincipalSource::CommonName {
        return Err(ScError::Security(format!(
            "the SC signs logins with the CA key, but takes principals from {} \
             (--principal-from): login certificates name their user in the common name only, \
             so no login could be used; take principals from the common name \
             (--principal-from cn), or give no CA key",
            tls.principal_source
        )));
    }
    let max_cert_lifetime = time::Duration::try_from(config.max_cert_lifetime)
        .ok()
        .filter(|lifetime| lifetime.is_positive())
        .ok_or_else(|| {
            ScError::Security(format!(
                "the longest certificate lifetime {:?} is not a positive duration a \
                 certificate can have; give one such as 30d",
                config.max_cert_lifetime
            ))
        })?;
    let revocations = Revocations::default();
    let listener_tls = |listener, admission| {
        tls.server(admission, revocations.clone())
            .map_err(|source| ScError::Tls { listener, source })
    };
    let listeners = [
        listener_tls("public", Admission::ClientsOrAnonymous)?,
        listener_tls("private", Admission::Nodes)?,
    ];
    let ca = config
        .ca_key_pem
        .as_deref()
        .map(|key_pem| cluster_ca(&tls.ca_pem, key_pem))
        .transpose()?;
    let security = SecurityConfig {
        superusers: config.superusers.clone(),
        ca,
        max_cert_lifetime,
        failed_auth_delay: config.transport.failed_auth_delay,
    };
    Ok(Some(Secured {
        security,
        revocations,
        listeners,
    }))
}

/// Refuses superusers that are no valid principal, or a cluster node's
/// identity: a node certificate is on every node's disk, so it must never
/// be allowed everything.
fn check_superusers(superusers: &[String]) -> Result<(), ScError> {
    for superuser in superusers {
        runnel_auth::validate_principal(superuser)
            .map_err(|error| ScError::Security(format!("superuser {superuser:?}: {error}")))?;
        if runnel_auth::is_node_identity(superuser) {
            return Err(ScError::Security(format!(
                "superuser {superuser:?} is a cluster node's identity, which may use only the \
                 private apis; name a user or a client certificate's principal instead"
            )));
        }
    }
    Ok(())
}

/// The CA that signs login certificates: the certificate the SC trusts,
/// with the key given for it.
fn cluster_ca(ca_pem: &[u8], key_pem: &[u8]) -> Result<ClusterCa, ScError> {
    let text = |pem: &[u8], what: &str| {
        std::str::from_utf8(pem)
            .map_err(|_| ScError::Security(format!("the {what} is not PEM text")))
            .map(str::to_owned)
    };
    ClusterCa::from_pem(&text(ca_pem, "CA certificate")?, &text(key_pem, "CA key")?)
        .map_err(ScError::CaKey)
}

/// Opens the store, drops the certificates and revocations that have
/// expired, and reads everything.
async fn open_store(path: PathBuf) -> Result<(Arc<Store>, Loaded, LoadedSecurity), ScError> {
    let opened = tokio::task::spawn_blocking(move || {
        let store = Store::open(&path)?;
        let expired_before = security::now_unix().saturating_sub(security::EXPIRY_GRACE_SECS);
        store.drop_expired_security(expired_before)?;
        let loaded = store.load()?;
        let loaded_security = store.load_security()?;
        Ok::<_, StoreError>((Arc::new(store), loaded, loaded_security))
    })
    .await;
    match opened {
        Ok(opened) => Ok(opened?),
        Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
    }
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
