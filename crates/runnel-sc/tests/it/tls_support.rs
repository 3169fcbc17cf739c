//! Test harness for an SC with security on: a cluster CA made in memory,
//! certificates for any principal, an SC running with TLS, and
//! connections to it as a given principal or without a certificate.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use runnel_api::{ApiVersionsRequest, SpuConnectRequest};
use runnel_pki::{ClusterCa, PrincipalSource};
use runnel_sc::{ScConfig, ScError};
use runnel_transport::{ClientTls, Connection, NodeTls, TransportConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::{FakeSpu, bounded, free_port, spu_spec, start_sc};

/// The principal the test SC takes as its superuser.
pub const SUPERUSER: &str = "admin";
/// The password every test user gets, unless a test says otherwise.
pub const PASSWORD: &str = "correct horse battery";

/// A cluster CA, and certificates from it.
pub struct Pki {
    pub ca: ClusterCa,
}

impl Pki {
    pub fn new() -> Pki {
        let ca =
            ClusterCa::generate("runnel-test", now(), time::Duration::days(2)).expect("a test CA");
        Pki { ca }
    }

    /// A certificate and key naming `principal`, valid for loopback.
    pub fn identity(&self, principal: &str) -> (String, String) {
        self.lasting(principal, time::Duration::days(1))
    }

    /// A certificate and key naming `principal`, valid for loopback, that
    /// expire `lifetime` from now.
    pub fn lasting(&self, principal: &str, lifetime: time::Duration) -> (String, String) {
        let issued = self
            .ca
            .issue(
                principal,
                &[],
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                now(),
                lifetime,
            )
            .expect("a test certificate");
        (issued.cert_pem, issued.key_pem)
    }

    /// The TLS material of a node named `principal`.
    pub fn node(&self, principal: &str) -> NodeTls {
        let (cert_pem, key_pem) = self.identity(principal);
        NodeTls {
            ca_pem: self.ca.cert_pem().as_bytes().to_vec(),
            cert_pem: cert_pem.into_bytes(),
            key_pem: key_pem.into_bytes(),
            principal_source: PrincipalSource::CommonName,
        }
    }

    /// Client TLS presenting `identity` (certificate and key PEM), or no
    /// certificate.
    pub fn client(&self, identity: Option<(&str, &str)>) -> TransportConfig {
        let identity = identity.map(|(cert, key)| (cert.as_bytes(), key.as_bytes()));
        let tls =
            ClientTls::new(self.ca.cert_pem().as_bytes(), identity, None).expect("client TLS");
        TransportConfig {
            client_tls: Some(tls),
            ..TransportConfig::default()
        }
    }
}

pub fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// An SC running in this process with TLS on and [`SUPERUSER`].
pub struct SecureSc {
    pub public_addr: String,
    pub private_addr: String,
    pub pki: Pki,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ScError>>,
}

impl SecureSc {
    /// Starts an SC that can sign logins.
    pub async fn start(data_dir: &Path, pki: Pki) -> SecureSc {
        let config = SecureSc::config(data_dir, &pki);
        SecureSc::start_with(config, pki).await
    }

    /// The configuration [`SecureSc::start`] uses, on fresh ports.
    pub fn config(data_dir: &Path, pki: &Pki) -> ScConfig {
        ScConfig {
            data_dir: data_dir.to_path_buf(),
            public_addr: format!("127.0.0.1:{}", free_port()),
            private_addr: format!("127.0.0.1:{}", free_port()),
            session_timeout: Duration::from_secs(600),
            transport: TransportConfig {
                failed_auth_delay: Duration::from_millis(10),
                ..TransportConfig::default()
            },
            tls: Some(pki.node("sc")),
            ca_key_pem: Some(pki.ca.key_pem().as_bytes().to_vec()),
            superusers: vec![SUPERUSER.to_string()],
            ..ScConfig::default()
        }
    }

    /// Starts an SC with `config`, moved to fresh ports if its own are
    /// taken.
    pub async fn start_with(config: ScConfig, pki: Pki) -> SecureSc {
        // Ready once both listeners answer.
        let (config, shutdown, task) = start_sc(config, true, |public, private| {
            let admin = pki.identity(SUPERUSER);
            let node = pki.identity("spu:0");
            let pki = &pki;
            async move {
                connect_ready(&public, pki.client(Some((&admin.0, &admin.1)))).await;
                connect_ready(&private, pki.client(Some((&node.0, &node.1)))).await;
            }
        })
        .await;
        SecureSc {
            public_addr: config.public_addr,
            private_addr: config.private_addr,
            pki,
            shutdown,
            task,
        }
    }

    /// Stops the SC and waits until `run` has returned; gives back the
    /// CA, for a restart.
    pub async fn stop(self) -> Pki {
        self.shutdown.cancel();
        let result = bounded("the SC to stop", self.task).await;
        result.expect("the SC task").expect("the SC stops cleanly");
        self.pki
    }

    /// A connection to the public listener with a certificate naming
    /// `principal`.
    pub async fn as_principal(&self, principal: &str) -> Connection {
        let (cert, key) = self.pki.identity(principal);
        self.public_with(Some((&cert, &key))).await
    }

    /// A connection to the public listener presenting `identity`, or no
    /// certificate.
    pub async fn public_with(&self, identity: Option<(&str, &str)>) -> Connection {
        connect_ready(&self.public_addr, self.pki.client(identity)).await
    }

    /// A connection to the private listener as node `principal`.
    pub async fn node(&self, principal: &str) -> Connection {
        let (cert, key) = self.pki.identity(principal);
        connect_ready(&self.private_addr, self.pki.client(Some((&cert, &key)))).await
    }

    /// Connects SPU `id` with its own node certificate.
    pub async fn spu(&self, id: u32) -> FakeSpu {
        let (cert, key) = self.pki.identity(&format!("spu:{id}"));
        self.spu_with(id, (&cert, &key)).await
    }

    /// Connects SPU `id` presenting `identity` (certificate and key PEM).
    pub async fn spu_with(&self, id: u32, identity: (&str, &str)) -> FakeSpu {
        self.spu_with_credit(id, identity, 64).await
    }

    /// Connects SPU `id` presenting `identity`, granting its assignment
    /// stream `credit` items.
    pub async fn spu_with_credit(&self, id: u32, identity: (&str, &str), credit: u32) -> FakeSpu {
        let connection = connect_ready(&self.private_addr, self.pki.client(Some(identity))).await;
        let assignments = bounded(
            "SpuConnect",
            connection.stream(&SpuConnectRequest { spec: spu_spec(id) }, credit),
        )
        .await
        .expect("SpuConnect opens");
        FakeSpu {
            id: runnel_types::SpuId(id),
            connection,
            assignments,
        }
    }
}

/// Connects and asks for api versions, retrying while the listener is not
/// up yet.
async fn connect_ready(addr: &str, config: TransportConfig) -> Connection {
    bounded(&format!("a TLS connection to {addr}"), async {
        loop {
            if let Ok(connection) = Connection::connect(addr, config.clone()).await
                && connection.call(&ApiVersionsRequest {}).await.is_ok()
            {
                return connection;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}
