//! TLS on a real loopback listener: who gets in, who is refused and why,
//! and the limits a peer meets before it has authenticated.

use std::sync::Arc;
use std::time::Duration;

use runnel_api::{ApiVersionsRequest, Reply, Request};
use runnel_pki::{ClusterCa, IssuedCert, PrincipalSource};
use runnel_transport::{
    Admission, ClientTls, Connection, Handler, IncomingRequest, Responder, Revocations, ServerTls,
    TransportConfig, TransportError, serve,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::support::bounded;

/// Answers every request with the principal the connection's certificate
/// names.
#[derive(Debug)]
struct WhoAmI;

#[derive(Debug, Serialize, Deserialize)]
struct WhoAmIRequest {}

impl Request for WhoAmIRequest {
    const API_KEY: runnel_api::ApiKey = runnel_api::ApiKey::ListSpus;
    type Response = Reply<Option<String>>;
}

impl Handler for WhoAmI {
    async fn handle(&self, request: IncomingRequest, responder: Responder) {
        let reply: Reply<Option<String>> =
            Ok(request.identity.map(|identity| identity.principal.clone()));
        responder.reply(&reply).await;
    }
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn ca(name: &str) -> ClusterCa {
    ClusterCa::generate(name, now(), time::Duration::days(1)).expect("generate a CA")
}

fn issue(ca: &ClusterCa, common_name: &str) -> IssuedCert {
    ca.issue(
        common_name,
        &["localhost".to_string()],
        &["127.0.0.1".parse().expect("an IP address")],
        now(),
        time::Duration::days(1),
    )
    .expect("issue a certificate")
}

/// A TLS listener with the node certificate `sc`, admitting `admission`.
struct TlsServer {
    addr: String,
    ca: ClusterCa,
    revocations: Revocations,
    shutdown: CancellationToken,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TlsServer {
    async fn start(admission: Admission, config: TransportConfig) -> TlsServer {
        TlsServer::start_reading(admission, PrincipalSource::CommonName, config).await
    }

    async fn start_reading(
        admission: Admission,
        source: PrincipalSource,
        config: TransportConfig,
    ) -> TlsServer {
        let ca = ca("test");
        let node = issue(&ca, "sc");
        let revocations = Revocations::default();
        let tls = ServerTls::new(
            ca.cert_pem().as_bytes(),
            node.cert_pem.as_bytes(),
            node.key_pem.as_bytes(),
            admission,
            source,
            revocations.clone(),
        )
        .expect("server TLS");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address").to_string();
        let shutdown = CancellationToken::new();
        let config = TransportConfig {
            server_tls: Some(tls),
            failed_auth_delay: Duration::ZERO,
            ..config
        };
        tokio::spawn(serve(listener, Arc::new(WhoAmI), config, shutdown.clone()));
        TlsServer {
            addr,
            ca,
            revocations,
            shutdown,
        }
    }

    /// Connects presenting `certificate` (signed by `ca`, which defaults
    /// to the server's) and asks who the server thinks we are.
    async fn who_am_i(
        &self,
        certificate: Option<&IssuedCert>,
    ) -> Result<Option<String>, TransportError> {
        let identity = certificate.map(|cert| (cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()));
        let tls =
            ClientTls::new(self.ca.cert_pem().as_bytes(), identity, None).expect("client TLS");
        self.call_with(tls).await
    }

    async fn call_with(&self, tls: ClientTls) -> Result<Option<String>, TransportError> {
        let config = TransportConfig {
            client_tls: Some(tls),
            ..TransportConfig::default()
        };
        let connection =
            bounded("a TLS connection", Connection::connect(&self.addr, config)).await?;
        bounded("a reply", connection.call(&WhoAmIRequest {})).await
    }
}

fn refused(result: Result<Option<String>, TransportError>) -> String {
    match result {
        Err(TransportError::Refused(why)) => why,
        other => panic!("expected the server to refuse the certificate, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_certificate_from_the_ca_names_the_principal() {
    let server = TlsServer::start(Admission::Clients, TransportConfig::default()).await;
    let alice = issue(&server.ca, "alice");
    assert_eq!(
        server.who_am_i(Some(&alice)).await.expect("served"),
        Some("alice".into())
    );
}

#[tokio::test]
async fn an_anonymous_client_is_served_only_where_admitted() {
    let open = TlsServer::start(Admission::ClientsOrAnonymous, TransportConfig::default()).await;
    assert_eq!(open.who_am_i(None).await.expect("served"), None);

    let strict = TlsServer::start(Admission::Clients, TransportConfig::default()).await;
    let why = refused(strict.who_am_i(None).await);
    assert!(why.contains("requires a client certificate"), "{why}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let server = TlsServer::start(Admission::Clients, TransportConfig::default()).await;
    let stranger = issue(&ca("other"), "alice");
    let why = refused(server.who_am_i(Some(&stranger)).await);
    assert!(why.contains("not signed by the cluster's CA"), "{why}");
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let server = TlsServer::start(Admission::Clients, TransportConfig::default()).await;
    let expired = runnel_pki::hostile::expired(&server.ca, "alice", now()).expect("issue");
    let why = refused(server.who_am_i(Some(&expired)).await);
    assert!(why.contains("expired"), "{why}");
}

#[tokio::test]
async fn a_certificate_with_two_common_names_is_refused() {
    let server = TlsServer::start(Admission::Clients, TransportConfig::default()).await;
    let ambiguous = runnel_pki::hostile::with_two_common_names(&server.ca, "alice", "admin", now())
        .expect("issue");
    let why = refused(server.who_am_i(Some(&ambiguous)).await);
    assert!(why.contains("exactly one common name"), "{why}");
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_and_others_still_served() {
    let server = TlsServer::start(Admission::Clients, TransportConfig::default()).await;
    let alice = issue(&server.ca, "alice");
    let bob = issue(&server.ca, "bob");
    assert!(server.who_am_i(Some(&alice)).await.is_ok());
    server.revocations.replace([alice.serial.clone()]);
    let why = refused(server.who_am_i(Some(&alice)).await);
    assert!(why.contains("revoked"), "{why}");
    assert_eq!(
        server.who_am_i(Some(&bob)).await.expect("served"),
        Some("bob".into())
    );
}

#[tokio::test]
async fn a_private_listener_admits_node_identities_only() {
    let server = TlsServer::start(Admission::Nodes, TransportConfig::default()).await;
    let spu = issue(&server.ca, "spu:3");
    assert_eq!(
        server.who_am_i(Some(&spu)).await.expect("served"),
        Some("spu:3".into())
    );
    let client = issue(&server.ca, "alice");
    let why = refused(server.who_am_i(Some(&client)).await);
    assert!(why.contains("cluster nodes only"), "{why}");
}

#[tokio::test]
async fn the_client_verifies_the_server_name() {
    let server = TlsServer::start(Admission::Clients, TransportConfig::default()).await;
    let alice = issue(&server.ca, "alice");
    let identity = Some((alice.cert_pem.as_bytes(), alice.key_pem.as_bytes()));
    let wrong_name = ClientTls::new(
        server.ca.cert_pem().as_bytes(),
        identity,
        Some("elsewhere.example"),
    )
    .expect("client TLS");
    match server.call_with(wrong_name).await {
        Err(TransportError::Connect { source, .. }) => {
            assert!(source.to_string().contains("certificate"), "{source}")
        }
        other => panic!("expected the server's certificate to be refused, got {other:?}"),
    }
    let right_name = ClientTls::new(server.ca.cert_pem().as_bytes(), identity, Some("localhost"))
        .expect("client TLS");
    assert_eq!(
        server.call_with(right_name).await.expect("served"),
        Some("alice".into())
    );
}

/// Reads until the server closes, with a bound on bytes and time; the
/// count of bytes it sent first.
async fn read_until_closed(socket: &mut TcpStream) -> usize {
    let mut received = 0;
    let mut buffer = [0; 4096];
    loop {
        match bounded("the server closing", socket.read(&mut buffer)).await {
            Ok(0) | Err(_) => return received,
            Ok(read) => {
                received += read;
                assert!(
                    received < 64 << 10,
                    "the server keeps sending to a plaintext peer"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_plaintext_client_on_a_tls_port_is_closed_cleanly() {
    let server = TlsServer::start(Admission::Clients, TransportConfig::default()).await;
    let alice = issue(&server.ca, "alice");
    for hostile in [
        // A Runnel frame claiming the largest length.
        0x7FFF_FFFFu32.to_be_bytes().to_vec(),
        // A negative length.
        (-1i32).to_be_bytes().to_vec(),
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
    ] {
        let mut socket = TcpStream::connect(&server.addr).await.expect("connect");
        socket.write_all(&hostile).await.expect("write");
        read_until_closed(&mut socket).await;
    }
    assert_eq!(
        server.who_am_i(Some(&alice)).await.expect("served"),
        Some("alice".into())
    );
}

#[tokio::test]
async fn a_handshake_that_does_not_finish_in_time_is_closed() {
    let config = TransportConfig {
        handshake_timeout: Duration::from_millis(300),
        ..TransportConfig::default()
    };
    let server = TlsServer::start(Admission::Clients, config).await;
    let mut socket = TcpStream::connect(&server.addr).await.expect("connect");
    // The first bytes of a TLS record, then nothing more.
    socket.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
    assert_eq!(read_until_closed(&mut socket).await, 0);
}

#[tokio::test]
async fn connections_past_the_per_address_limit_are_closed() {
    let config = TransportConfig {
        max_connections_per_addr: 2,
        ..TransportConfig::default()
    };
    let server = TlsServer::start(Admission::Clients, config).await;
    let alice = issue(&server.ca, "alice");
    let held = [
        TcpStream::connect(&server.addr).await.expect("connect"),
        TcpStream::connect(&server.addr).await.expect("connect"),
    ];
    let mut third = TcpStream::connect(&server.addr).await.expect("connect");
    assert_eq!(read_until_closed(&mut third).await, 0);
    drop(held);
    // The places are given back once the server sees the two close.
    let served = bounded("a place freed", async {
        loop {
            if let Ok(principal) = server.who_am_i(Some(&alice)).await {
                return principal;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(served, Some("alice".into()));
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let config = TransportConfig {
        idle_timeout: Duration::from_millis(200),
        ..TransportConfig::default()
    };
    let server = crate::support::TestServer::start_with(config).await;
    let mut socket = TcpStream::connect(&server.addr).await.expect("connect");
    // Half a frame: the length, then silence.
    socket.write_all(&64u32.to_be_bytes()).await.expect("write");
    assert_eq!(read_until_closed(&mut socket).await, 0);
    let connection = server.connect().await;
    let reply = connection.call(&ApiVersionsRequest {}).await;
    assert!(reply.is_ok(), "{reply:?}");
}

#[tokio::test]
async fn a_revoked_certificate_cannot_resume_an_earlier_session() {
    let server = TlsServer::start(Admission::Clients, TransportConfig::default()).await;
    let alice = issue(&server.ca, "alice");
    // One client config for both connections: it would offer the first
    // session's ticket on the second, if the server issued any.
    let tls = ClientTls::new(
        server.ca.cert_pem().as_bytes(),
        Some((alice.cert_pem.as_bytes(), alice.key_pem.as_bytes())),
        None,
    )
    .expect("client TLS");
    assert_eq!(
        server.call_with(tls.clone()).await.expect("served"),
        Some("alice".into())
    );
    server.revocations.replace([alice.serial.clone()]);
    let why = refused(server.call_with(tls).await);
    assert!(why.contains("revoked"), "{why}");
}

#[tokio::test]
async fn a_node_can_require_the_server_to_be_a_given_node() {
    let server = TlsServer::start(Admission::Nodes, TransportConfig::default()).await;
    let spu = issue(&server.ca, "spu:1");
    let tls = ClientTls::new(
        server.ca.cert_pem().as_bytes(),
        Some((spu.cert_pem.as_bytes(), spu.key_pem.as_bytes())),
        None,
    )
    .expect("client TLS");
    assert_eq!(
        server.call_with(tls.expecting("sc")).await.expect("served"),
        Some("spu:1".into())
    );
    match server.call_with(tls.expecting("spu:2")).await {
        Err(TransportError::Connect { source, .. }) => {
            assert!(
                source.to_string().contains("not the expected `spu:2`"),
                "{source}"
            )
        }
        other => panic!("expected the server's certificate to be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn private_listeners_read_node_identities_from_the_common_name() {
    // Clients' principals come from a DNS name here; node certificates
    // carry `localhost` as theirs, which must not hide `spu:4`.
    let server = TlsServer::start_reading(
        Admission::Nodes,
        PrincipalSource::SanDns,
        TransportConfig::default(),
    )
    .await;
    let spu = issue(&server.ca, "spu:4");
    assert_eq!(
        server.who_am_i(Some(&spu)).await.expect("served"),
        Some("spu:4".into())
    );
}
