//! Authentication: every certificate that must not get in is refused, on
//! the SC and on an SPU, with an error that says why.

use runnel_api::{ErrorCode, ListTopicsRequest, SpuHeartbeatRequest};
use runnel_pki::{ClusterCa, hostile};
use runnel_transport::{ClientTls, Connection, TransportConfig, TransportError};
use runnel_types::SpuId;

use super::{PATIENCE, SecureCluster, call, code, issue, now, runtime};

/// One request over TLS without a client certificate.
fn call_anonymous(
    secure: &SecureCluster,
    addr: &str,
    request: &ListTopicsRequest,
) -> Result<Vec<runnel_metadata::Topic>, TransportError> {
    let tls = ClientTls::new(secure.ca.cert_pem().as_bytes(), None, None).expect("client TLS");
    let config = TransportConfig {
        client_tls: Some(tls),
        ..TransportConfig::default()
    };
    runtime().block_on(async {
        let connection = Connection::connect(addr, config).await?;
        tokio::time::timeout(PATIENCE, connection.call(request))
            .await
            .expect("a reply within the test's patience")
    })
}

#[test]
fn certificates_that_must_not_get_in_are_refused_with_clear_errors() {
    let secure = SecureCluster::start(1);
    let sc = secure.listener(0);
    secure.cluster.ok(&["topic", "create", "guarded"]);

    // Each profile: a certificate (or none), the error text it must get,
    // for an SC api (topic list) and an SPU api (produce).
    let stranger_ca =
        ClusterCa::generate("stranger", now(), time::Duration::days(1)).expect("another CA");
    let revoked = secure.issue("carol");
    let cases = [
        (
            "other-ca",
            issue(&stranger_ca, "admin"),
            "not signed by the cluster's CA",
        ),
        (
            "expired",
            hostile::expired(&secure.ca, "admin", now()).expect("issue"),
            "expired",
        ),
        (
            "two-cns",
            hostile::with_two_common_names(&secure.ca, "alice", "admin", now()).expect("issue"),
            "exactly one common name",
        ),
        ("revoked", revoked.clone(), "revoked"),
    ];
    secure
        .cluster
        .ok(&["user", "revoke", "--serial", &revoked.serial]);

    // Without a certificate: the SC serves only login; an SPU refuses the
    // handshake.
    let (refusal, message) = code(call_anonymous(
        &secure,
        &sc,
        &ListTopicsRequest { names: Vec::new() },
    ));
    assert_eq!(refusal, ErrorCode::AUTHENTICATION_REQUIRED, "{message}");
    assert!(message.contains("runnel login"), "{message}");
    match call_anonymous(
        &secure,
        &secure.spu_public(1),
        &ListTopicsRequest { names: Vec::new() },
    ) {
        Err(TransportError::Refused(why)) => assert!(why.contains("client certificate"), "{why}"),
        other => panic!("an SPU served a client without a certificate: {other:?}"),
    }

    for (profile, certificate, why) in &cases {
        secure.add_profile(profile, &sc, certificate);
        let error = secure.fails_as(profile, &["topic", "list"], b"");
        assert!(error.contains(why), "{profile}, topic list: {error}");
        let error = secure.fails_as(profile, &["produce", "guarded"], b"refused\n");
        assert!(error.contains(why), "{profile}, produce: {error}");
    }

    let heartbeat = SpuHeartbeatRequest {
        id: SpuId(1),
        replicas: Vec::new(),
    };

    // The admin's certificate presented to the SC's private listener: a
    // listener for cluster nodes only.
    let admin = secure.issue("admin");
    secure.add_profile("private", &secure.listener(1), &admin);
    let error = secure.fails_as("private", &["topic", "list"], b"");
    assert!(error.contains("cluster nodes only"), "{error}");

    // And to an SPU's private listener.
    match call::<_, ()>(&secure.ca, &admin, &secure.spu_private(1), &heartbeat) {
        Err(runnel_transport::TransportError::Refused(why)) => {
            assert!(why.contains("cluster nodes only"), "{why}")
        }
        other => panic!("a client certificate on a private listener: {other:?}"),
    }

    // A client calling an internal api on a public listener.
    let (refusal, message) = code(call::<_, ()>(&secure.ca, &admin, &sc, &heartbeat));
    assert_eq!(refusal, ErrorCode::UNSUPPORTED_API, "{message}");

    // A node's certificate cannot act for another node.
    let impostor = secure.issue("spu:7");
    let (refusal, message) = code(call::<_, ()>(
        &secure.ca,
        &impostor,
        &secure.listener(1),
        &heartbeat,
    ));
    assert_eq!(refusal, ErrorCode::PERMISSION_DENIED, "{message}");
    assert!(message.contains("spu:7"), "{message}");

    // And the cluster's own admin still gets in.
    assert!(secure.cluster.ok(&["topic", "list"]).contains("guarded"));
}
