//! A cluster started with `cluster start --tls`, and clients with
//! certificates of every kind: the cluster's admin, principals issued by
//! the cluster CA, and hostile ones (another CA, expired, two common
//! names, revoked).

mod abuse;
mod authn;
mod authz;
mod hops;
mod login;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use runnel_api::{ApiError, ErrorCode, Request};
use runnel_pki::{ClusterCa, IssuedCert};
use runnel_transport::{ClientTls, Connection, TransportConfig, TransportError};

use crate::support::{TestCluster, text};

/// Bounds a wait for something that happens at once unless the code is
/// broken; never a measurement.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// A TLS cluster and its CA, read from the files `cluster start --tls`
/// wrote.
pub struct SecureCluster {
    pub cluster: TestCluster,
    pub ca: ClusterCa,
}

impl SecureCluster {
    pub fn start(spus: u32) -> SecureCluster {
        let cluster = TestCluster::start_with(spus, &["--tls"]);
        let dir = cluster.home.path().join("local").join("tls");
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .unwrap_or_else(|error| panic!("`cluster start --tls` wrote {name}: {error}"))
        };
        let ca = ClusterCa::from_pem(&read("ca.pem"), &read("ca.key")).expect("the cluster CA");
        SecureCluster { cluster, ca }
    }

    pub fn tls_file(&self, name: &str) -> PathBuf {
        self.cluster
            .home
            .path()
            .join("local")
            .join("tls")
            .join(name)
    }

    /// A client certificate for `principal` from the cluster CA.
    pub fn issue(&self, principal: &str) -> IssuedCert {
        issue(&self.ca, principal)
    }

    /// A profile named `name` that presents `certificate` and trusts the
    /// cluster CA, for the SC at `sc_addr`.
    pub fn add_profile(&self, name: &str, sc_addr: &str, certificate: &IssuedCert) {
        let dir = self.cluster.home.path().join("test-certs");
        std::fs::create_dir_all(&dir).expect("a directory for test certificates");
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &certificate.cert_pem).expect("write a certificate");
        std::fs::write(&key, &certificate.key_pem).expect("write a key");
        let path = |path: PathBuf| path.display().to_string();
        self.cluster.ok(&[
            "profile",
            "add",
            name,
            sc_addr,
            "--tls-ca",
            &path(self.tls_file("ca.pem")),
            "--tls-cert",
            &path(cert),
            "--tls-key",
            &path(key),
        ]);
    }

    /// Runs `runnel --profile PROFILE ARGS` with `stdin`.
    pub fn run_as(&self, profile: &str, args: &[&str], stdin: &[u8]) -> Output {
        let mut all = vec!["--profile", profile];
        all.extend_from_slice(args);
        self.cluster.run(&all, stdin)
    }

    /// Like [`SecureCluster::run_as`], expecting success; its stdout.
    pub fn ok_as(&self, profile: &str, args: &[&str], stdin: &[u8]) -> String {
        let output = self.run_as(profile, args, stdin);
        assert!(
            output.status.success(),
            "runnel --profile {profile} {args:?} failed: {}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    /// Like [`SecureCluster::run_as`], expecting failure; its stderr.
    pub fn fails_as(&self, profile: &str, args: &[&str], stdin: &[u8]) -> String {
        let output = self.run_as(profile, args, stdin);
        assert!(
            !output.status.success(),
            "runnel --profile {profile} {args:?} should fail but printed: {}",
            text(&output.stdout)
        );
        text(&output.stderr)
    }

    /// Runs `runnel ARGS` as `profile`, asserting it is refused with
    /// "permission denied: PROFILE may not WHAT".
    pub fn denied_as(&self, profile: &str, args: &[&str], stdin: &[u8], what: &str) {
        let denied = self.fails_as(profile, args, stdin);
        let expected = format!("permission denied: {profile} may not {what}");
        assert!(denied.contains(&expected), "{args:?}: {denied}");
    }

    /// The address of listener `index`: 0 SC public, 1 SC private, then
    /// each SPU's public and private.
    pub fn listener(&self, index: u16) -> String {
        format!("127.0.0.1:{}", self.cluster.base_port + index)
    }

    pub fn spu_public(&self, spu: u16) -> String {
        self.listener(2 * spu)
    }

    pub fn spu_private(&self, spu: u16) -> String {
        self.listener(2 * spu + 1)
    }
}

pub fn issue(ca: &ClusterCa, principal: &str) -> IssuedCert {
    ca.issue(principal, &[], &[], now(), time::Duration::hours(1))
        .expect("issue a certificate")
}

/// One request over a TLS connection presenting `certificate`, from a
/// runtime of its own (the tests are synchronous).
pub fn call<R, T>(
    ca: &ClusterCa,
    certificate: &IssuedCert,
    addr: &str,
    request: &R,
) -> Result<T, TransportError>
where
    R: Request<Response = Result<T, ApiError>>,
    T: serde::de::DeserializeOwned,
{
    runtime().block_on(async {
        let connection = connect(ca, certificate, addr).await?;
        tokio::time::timeout(PATIENCE, connection.call(request))
            .await
            .expect("a reply within the test's patience")
    })
}

pub async fn connect(
    ca: &ClusterCa,
    certificate: &IssuedCert,
    addr: &str,
) -> Result<Connection, TransportError> {
    let tls = ClientTls::new(
        ca.cert_pem().as_bytes(),
        Some((
            certificate.cert_pem.as_bytes(),
            certificate.key_pem.as_bytes(),
        )),
        None,
    )
    .expect("client TLS settings");
    let config = TransportConfig {
        client_tls: Some(tls),
        ..TransportConfig::default()
    };
    tokio::time::timeout(PATIENCE, Connection::connect(addr, config))
        .await
        .expect("connected within the test's patience")
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The error code of a refused call.
pub fn code<T: std::fmt::Debug>(result: Result<T, TransportError>) -> (ErrorCode, String) {
    match result {
        Err(TransportError::Api(error)) => (error.code, error.message),
        other => panic!("expected an error answer, got {other:?}"),
    }
}

/// Waits (bounded) until `condition` holds.
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
