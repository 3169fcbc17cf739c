//! With `--tls`, every listener speaks only TLS, and the cluster still
//! replicates: so every hop (client→SC, client→SPU, SPU→SC, SPU→SPU) is
//! encrypted and mutually authenticated. Checked without a packet capture:
//! a plaintext peer on any port gets nothing but a close, while the
//! replicated cluster works.

use std::io::{Read, Write};
use std::net::TcpStream;

use runnel_api::{ApiVersionsRequest, ListSpusRequest};
use runnel_metadata::Spu;

use super::{PATIENCE, SecureCluster, call, eventually};

/// A plaintext `ApiVersions` request, as a client without TLS sends it.
fn plaintext_api_versions() -> Vec<u8> {
    let mut header = Vec::new();
    runnel_wire::frame::RequestHeader {
        api_key: runnel_api::ApiKey::ApiVersions as u16,
        api_version: 0,
        correlation_id: 1,
        client_id: "plaintext".into(),
    }
    .encode(&mut header);
    let body = runnel_api::encode(&ApiVersionsRequest {});
    let mut frame = Vec::new();
    runnel_wire::frame::encode_frame(&header, &body, 0, &mut frame);
    frame
}

/// Sends a plaintext request and reads until the server closes: what came
/// back must not be a Runnel response (a TLS alert at most).
fn assert_plaintext_refused(addr: &str) {
    let mut socket = TcpStream::connect(addr).expect("connect");
    socket
        .set_read_timeout(Some(PATIENCE))
        .expect("a read timeout");
    socket.write_all(&plaintext_api_versions()).expect("write");
    let mut received = Vec::new();
    let mut buffer = [0; 1024];
    loop {
        match socket.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => {
                received.extend_from_slice(&buffer[..read]);
                assert!(
                    received.len() < 1024,
                    "{addr} keeps answering a plaintext peer"
                );
            }
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(error) => panic!("{addr} neither answered nor closed: {error}"),
        }
    }
    // A Runnel response starts with a length, then the correlation id 1;
    // a TLS alert record starts with content type 21.
    assert!(
        received.is_empty() || received[0] == 21,
        "{addr} answered a plaintext request: {received:?}"
    );
}

#[test]
fn every_listener_refuses_plaintext_and_the_cluster_replicates_over_tls() {
    let secure = SecureCluster::start(3);
    let cluster = &secure.cluster;

    for index in 0..8 {
        assert_plaintext_refused(&secure.listener(index));
    }

    // Every process was started with its TLS material.
    for process in ["sc", "spu-1", "spu-2", "spu-3"] {
        let pid = cluster.pid(process).expect("a running process");
        let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).expect("its command line");
        let command_line = String::from_utf8_lossy(&command_line).replace('\0', " ");
        assert!(
            command_line.contains("--tls-cert"),
            "{process}: {command_line}"
        );
    }

    // The SC sees its SPUs only through their mutually authenticated
    // sessions on its TLS private listener.
    let admin = secure.issue("admin");
    let spus: Vec<Spu> =
        call(&secure.ca, &admin, &secure.listener(0), &ListSpusRequest {}).expect("list SPUs");
    assert_eq!(spus.len(), 3);
    assert!(spus.iter().all(|spu| spu.online), "{spus:?}");

    // Replication between SPUs, over their TLS private listeners.
    cluster.ok(&["topic", "create", "replicated", "-p", "1", "-r", "3"]);
    let input: String = (0..200).map(|i| format!("record-{i}\n")).collect();
    cluster.run(
        &["produce", "replicated", "--acks", "all"],
        input.as_bytes(),
    );
    eventually("every replica holds every record", || {
        let partitions = cluster.json_lines(
            &["partition", "list", "--topic", "replicated", "-O", "json"],
            b"",
        );
        let partition = &partitions[0];
        let isr = partition["in_sync_replicas"].as_array().map_or(0, Vec::len);
        let high_watermark = partition["high_watermark"].as_i64();
        isr == 3 && high_watermark == Some(200)
    });
    let consumed = cluster.ok(&["consume", "replicated", "-B", "-d"]);
    assert_eq!(consumed, input);
}
