//! Peers that attack before (or right after) authenticating: absurd
//! length prefixes, a handshake sent a byte at a time, a flood of
//! connections from one address, decompression bombs. The server closes
//! or refuses each, its memory stays bounded (RSS grows by less than 64
//! MiB), and a legitimate client is served throughout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use runnel_api::{Acks, ErrorCode, ListTopicsRequest, ProduceRequest};
use runnel_metadata::Topic;
use runnel_pki::IssuedCert;
use runnel_testkit::free_ports;
use runnel_types::{PartitionId, TopicName};
use runnel_wire::{BatchBuilder, Compression};

use super::{PATIENCE, SecureCluster, call, code};
use crate::support::{Background, runnel_binary};

const RSS_GROWTH_LIMIT_KIB: u64 = 64 << 10;

fn rss_kib(pid: i32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// A second SC with the cluster's TLS material and tight limits, run
/// with `runnel run sc`, so the limits can be set by flag.
struct GuardedSc {
    process: Background,
    pid: i32,
    addr: String,
    _data: tempfile::TempDir,
}

impl GuardedSc {
    fn start(secure: &SecureCluster) -> GuardedSc {
        let port = free_ports(2);
        let data = tempfile::tempdir().expect("a data directory");
        let addr = format!("127.0.0.1:{port}");
        let file = |name: &str| secure.tls_file(name).display().to_string();
        let mut command = Command::new(runnel_binary());
        command.args([
            "run",
            "sc",
            "--public-addr",
            &addr,
            "--private-addr",
            &format!("127.0.0.1:{}", port + 1),
            "--data-dir",
            &data.path().display().to_string(),
            "--tls-ca",
            &file("ca.pem"),
            "--tls-cert",
            &file("sc.pem"),
            "--tls-key",
            &file("sc.key"),
            "--superuser",
            "admin",
            "--max-connections-per-addr",
            "32",
            "--handshake-timeout",
            "3s",
            "--failed-auth-delay",
            "100ms",
        ]);
        let process = Background::spawn(command);
        let pid = process.pid();
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "the SC did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        GuardedSc {
            process,
            pid,
            addr,
            _data: data,
        }
    }

    fn assert_serves(&self, secure: &SecureCluster, admin: &IssuedCert) {
        let topics: Vec<Topic> = call(
            &secure.ca,
            admin,
            &self.addr,
            &ListTopicsRequest { names: Vec::new() },
        )
        .expect("a legitimate client is served");
        assert!(topics.is_empty());
    }
}

/// Reads until the peer closes (bounded); panics if it sends more than
/// a TLS alert's worth.
fn assert_closed(mut socket: impl Read, what: &str) {
    let mut buffer = [0; 1024];
    let mut received = 0;
    loop {
        match socket.read(&mut buffer) {
            Ok(0) => return,
            Ok(read) => {
                received += read;
                assert!(received < 1024, "{what}: the server keeps sending");
            }
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(error) if error.kind() == std::io::ErrorKind::InvalidData => return,
            Err(error) => panic!("{what}: neither closed nor answered: {error}"),
        }
    }
}

fn raw(addr: &str) -> TcpStream {
    let socket = TcpStream::connect(addr).expect("connect");
    socket
        .set_read_timeout(Some(PATIENCE))
        .expect("a read timeout");
    socket
}

/// A TCP connection from another loopback address, so a flood from it
/// does not count against the test's own clients on 127.0.0.1 (std has
/// no bind-before-connect).
fn raw_from(source: &str, addr: &str) -> TcpStream {
    let target: SocketAddr = addr.parse().expect("an address");
    let source: SocketAddr = format!("{source}:0").parse().expect("a source address");
    let socket = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        None,
    )
    .expect("a socket");
    rustix::net::bind(&socket, &source).expect("bind to the second loopback address");
    rustix::net::connect(&socket, &target).expect("connect from the second address");
    let socket = TcpStream::from(socket);
    socket
        .set_read_timeout(Some(PATIENCE))
        .expect("a read timeout");
    socket
}

/// A TLS 1.3 client session as `certificate`, to send bytes inside TLS.
fn tls_session(
    secure: &SecureCluster,
    certificate: &IssuedCert,
    addr: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(secure.ca.cert_pem().as_bytes()).expect("the CA"))
        .expect("a root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from_pem_slice(certificate.cert_pem.as_bytes()).expect("a cert")],
        PrivateKeyDer::from_pem_slice(certificate.key_pem.as_bytes()).expect("a key"),
    )
    .expect("client auth");
    let name = ServerName::try_from("127.0.0.1")
        .expect("a name")
        .to_owned();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("a session");
    rustls::StreamOwned::new(connection, raw(addr))
}

#[test]
fn hostile_peers_get_closed_and_memory_stays_bounded() {
    let secure = SecureCluster::start(1);
    let admin = secure.issue("admin");
    let sc = GuardedSc::start(&secure);
    sc.assert_serves(&secure, &admin);
    let rss_before = rss_kib(sc.pid);

    // Absurd length prefixes, before any handshake and inside TLS.
    for prefix in [0x7FFF_FFFFu32, u32::MAX, 0x8000_0000] {
        let mut socket = raw(&sc.addr);
        socket.write_all(&prefix.to_be_bytes()).expect("write");
        assert_closed(&mut socket, "a raw length prefix");

        let mut session = tls_session(&secure, &admin, &sc.addr);
        session
            .write_all(&prefix.to_be_bytes())
            .expect("write inside TLS");
        session.flush().expect("flush");
        assert_closed(&mut session, "a length prefix inside TLS");
    }
    sc.assert_serves(&secure, &admin);

    // A slow handshake from each of 8 connections: a byte a second, for
    // longer than the 3 s handshake timeout.
    let slow: Vec<_> = (0..8)
        .map(|_| {
            let addr = sc.addr.clone();
            std::thread::spawn(move || {
                let mut socket = raw_from("127.0.0.2", &addr);
                for byte in [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01] {
                    if socket.write_all(&[byte]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                assert_closed(&mut socket, "a slow handshake");
            })
        })
        .collect();
    sc.assert_serves(&secure, &admin);
    for thread in slow {
        thread.join().expect("a slow peer's thread");
    }

    // A flood from one address: at most 32 of its connections are kept.
    let flood: Vec<TcpStream> = (0..100).map(|_| raw_from("127.0.0.2", &sc.addr)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut open = 0;
    for socket in &flood {
        socket.set_nonblocking(true).expect("non-blocking");
        let mut byte = [0];
        match (&*socket).read(&mut byte) {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => open += 1,
            _ => {}
        }
    }
    assert!(
        (1..=32).contains(&open),
        "{open} connections from one address kept open"
    );
    sc.assert_serves(&secure, &admin);
    drop(flood);

    let growth = rss_kib(sc.pid).saturating_sub(rss_before);
    assert!(
        growth < RSS_GROWTH_LIMIT_KIB,
        "the SC's RSS grew by {growth} KiB"
    );
    drop(sc.process);

    decompression_bombs_are_refused(&secure, &admin);
}

/// A one-record batch whose compressed records inflate to 40 MiB of
/// zeros, past the SPU's default 32 MiB limit. The compressed stream is
/// written a MiB at a time, so the test never holds the inflated bytes.
fn bomb(compression: Compression) -> Bytes {
    const INFLATED: usize = 40 << 20;
    // One record: attributes, timestamp delta, offset delta, a null key,
    // the value's length (zig-zag varints), then the zeros, then no
    // headers; preceded by its own length.
    let mut fields = vec![0];
    push_varint(&mut fields, 0);
    push_varint(&mut fields, 0);
    push_varint(&mut fields, -1);
    push_varint(&mut fields, INFLATED as i64);
    let mut record_prefix = Vec::new();
    push_varint(&mut record_prefix, (fields.len() + INFLATED + 1) as i64);
    record_prefix.extend_from_slice(&fields);
    let zeros = vec![0u8; 1 << 20];
    let payload = match compression {
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&record_prefix).expect("compress");
            for _ in 0..INFLATED >> 20 {
                encoder.write_all(&zeros).expect("compress");
            }
            encoder.write_all(&[0]).expect("compress");
            encoder.finish().expect("compress")
        }
        Compression::Zstd => {
            let mut encoder = zstd::Encoder::new(Vec::new(), 1).expect("an encoder");
            encoder.write_all(&record_prefix).expect("compress");
            for _ in 0..INFLATED >> 20 {
                encoder.write_all(&zeros).expect("compress");
            }
            encoder.write_all(&[0]).expect("compress");
            encoder.finish().expect("compress")
        }
        other => panic!("no bomb for {other:?}"),
    };
    // A real one-record batch of this compression supplies the header;
    // its records are replaced by the bomb, its length and CRC fixed.
    let mut builder = BatchBuilder::new(compression);
    builder.push(0, None, Some(b"x".to_vec()), Vec::new());
    let mut batch = builder.build().encode().expect("a batch")[..61].to_vec();
    batch.extend_from_slice(&payload);
    let batch_length = (batch.len() - 12) as u32;
    batch[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = runnel_wire::batch::compute_crc(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(batch)
}

fn push_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn decompression_bombs_are_refused(secure: &SecureCluster, admin: &IssuedCert) {
    secure.cluster.ok(&["topic", "create", "bombs"]);
    let spu = secure.cluster.pid("spu-1").expect("the SPU's pid");
    let rss_before = rss_kib(spu);
    let produce = ProduceRequest {
        topic: TopicName::new("bombs").expect("a topic name"),
        partition: PartitionId(0),
        acks: Acks::Leader,
        timeout_ms: 5000,
    };
    for compression in [Compression::Gzip, Compression::Zstd] {
        let batch = bomb(compression);
        let answer = super::runtime().block_on(async {
            let connection = super::connect(&secure.ca, admin, &secure.spu_public(1))
                .await
                .expect("a TLS connection to the SPU");
            connection.call_with_tail(&produce, batch).await
        });
        let (refusal, message) = code::<runnel_api::ProduceResponse>(answer);
        assert!(
            refusal == ErrorCode::RECORDS_TOO_LARGE || refusal == ErrorCode::INVALID_RECORDS,
            "{compression:?} bomb: {refusal} {message}"
        );
    }
    let growth = rss_kib(spu).saturating_sub(rss_before);
    assert!(
        growth < RSS_GROWTH_LIMIT_KIB,
        "the SPU's RSS grew by {growth} KiB"
    );

    // Nothing of the bombs was stored, and the SPU still serves.
    secure
        .cluster
        .run(&["produce", "bombs"], b"after the bombs\n");
    assert_eq!(
        secure.cluster.ok(&["consume", "bombs", "-B", "-d"]),
        "after the bombs\n"
    );
}
