//! An SPU run with TLS: who its listeners admit, and what each principal
//! may do, request by request, under the security state the SC sends.

use runnel_api::{
    ErrorCode, FetchEpochEndRequest, OffsetQuery, ReplicaPosition, ReplicaPositionsRequest,
};
use runnel_auth::{Action, Binding, Effect, Policy, Role, Rule};
use runnel_metadata::{PartitionKey, ReplicaAssignment, SecurityState};
use runnel_pki::IssuedCert;
use runnel_transport::{Connection, TransportConfig, TransportError};
use runnel_types::{LeaderEpoch, Offset, SpuId};

use super::{
    api_error, assert_not_a_replica, expected, fetch, first_synced, followed_by_spu_2,
    list_offsets, produce_to_leader, sync_from_start,
};
use crate::support::*;

/// An SPU with TLS, its fake SC, and the CA behind both.
struct SecureCluster {
    pki: TestPki,
    sc: std::sync::Arc<FakeSc>,
    spu: TestSpu,
    _data: tempfile::TempDir,
}

impl SecureCluster {
    /// Starts both and waits until the SPU holds `assignments`; no
    /// security state is sent yet.
    async fn start(assignments: Vec<ReplicaAssignment>) -> SecureCluster {
        SecureCluster::start_with(assignments, |_| {}).await
    }

    /// Like [`SecureCluster::start`], with the SPU's configuration
    /// changed by `edit` first.
    async fn start_with(
        assignments: Vec<ReplicaAssignment>,
        edit: impl FnOnce(&mut runnel_spu::SpuConfig),
    ) -> SecureCluster {
        let pki = TestPki::new();
        let data = tempfile::tempdir().expect("temp dir");
        let keys: Vec<PartitionKey> = assignments.iter().map(|a| a.key.clone()).collect();
        let sc = FakeSc::start_tls(assignments, &pki.node("sc")).await;
        let tls = pki.node("spu:1");
        let spu = TestSpu::start_with(&sc.addr, data.path(), |config| {
            config.tls = Some(tls);
            edit(config);
        });
        sc.heartbeat_listing(&keys).await;
        SecureCluster {
            pki,
            sc,
            spu,
            _data: data,
        }
    }

    async fn connect(&self, certificate: &IssuedCert) -> Connection {
        Connection::connect(&self.spu.public_addr, self.pki.client(certificate))
            .await
            .expect("connect with a certificate")
    }

    async fn connect_private(&self, certificate: &IssuedCert) -> Connection {
        Connection::connect(&self.spu.private_addr, self.pki.client(certificate))
            .await
            .expect("connect to the private listener")
    }
}

fn rule(effect: Effect, actions: &[Action], pattern: &str) -> Rule {
    Rule {
        effect,
        actions: actions.to_vec(),
        resources: vec![pattern.parse().expect("valid pattern")],
    }
}

fn bind(principal: &str, role: &str) -> Binding {
    Binding {
        principal: principal.to_string(),
        role: role.to_string(),
    }
}

/// alice may write and read `events`; bob holds the same role and one
/// that denies him everything on it; carol holds nothing; root is a
/// superuser.
fn policy() -> SecurityState {
    SecurityState {
        superusers: vec!["root".to_string()],
        policy: Policy {
            roles: vec![
                Role {
                    name: "events-rw".to_string(),
                    rules: vec![rule(
                        Effect::Allow,
                        &[Action::Write, Action::Read],
                        "topic:events",
                    )],
                },
                Role {
                    name: "no-events".to_string(),
                    rules: vec![rule(
                        Effect::Deny,
                        &[Action::Write, Action::Read, Action::Describe],
                        "topic:ev*",
                    )],
                },
            ],
            bindings: vec![
                bind("alice", "events-rw"),
                bind("bob", "events-rw"),
                bind("bob", "no-events"),
            ],
        },
        revoked: Vec::new(),
    }
}

/// The error code of a fetch stream refused at once.
async fn fetch_refusal(connection: &Connection, key: &PartitionKey) -> runnel_api::ApiError {
    let mut stream = connection
        .stream(&fetch(key, 0, 1 << 20), 4)
        .await
        .expect("open a fetch stream");
    stream_error(&mut stream).await
}

async fn list_refusal(connection: &Connection, key: &PartitionKey) -> runnel_api::ApiError {
    let request = runnel_api::ListOffsetsRequest {
        topic: key.topic.clone(),
        partition: key.partition,
        query: OffsetQuery::End,
    };
    api_error(connection.call(&request).await)
}

/// How a connection to `addr` with `transport` is refused: at connect,
/// or on its first request (a TLS 1.3 server judges the client's
/// certificate after the client considers the handshake done).
async fn refusal(addr: &str, transport: TransportConfig) -> TransportError {
    let connection = match Connection::connect(addr, transport).await {
        Err(error) => return error,
        Ok(connection) => connection,
    };
    let request = runnel_api::ApiVersionsRequest {};
    bounded("the refusal", connection.call(&request))
        .await
        .expect_err("the connection was served")
}

/// Asserts that `error` is the server refusing this side's certificate
/// at the handshake, for the reason `why`.
fn assert_refused(error: &TransportError, why: &str) {
    match error {
        TransportError::Refused(reason) => assert!(reason.contains(why), "{reason}"),
        other => panic!("expected a refused handshake ({why}), got {other}"),
    }
}

#[tokio::test]
async fn the_tls_public_listener_refuses_plaintext_and_serves_certificates() {
    let events = key("events", 0);
    let cluster = SecureCluster::start(vec![assignment("events", 0, SPU, 0)]).await;
    cluster.sc.apply_security(policy()).await;

    // A plaintext client's connection is closed, its request unanswered.
    let plaintext = refusal(&cluster.spu.public_addr, TransportConfig::default()).await;
    assert!(
        matches!(plaintext, TransportError::Closed | TransportError::Io(_)),
        "{plaintext:?}"
    );

    let anonymous = runnel_transport::ClientTls::new(cluster.pki.ca_pem().as_bytes(), None, None)
        .expect("client TLS without a certificate");
    let anonymous = TransportConfig {
        client_tls: Some(anonymous),
        ..TransportConfig::default()
    };
    let refused = refusal(&cluster.spu.public_addr, anonymous).await;
    assert_refused(&refused, "requires a client certificate");

    let alice = cluster.pki.issue("alice");
    let connection = cluster.connect(&alice).await;
    let produced = produce(&connection, &events, &["a", "b"])
        .await
        .expect("alice produces over TLS");
    assert_eq!(produced.log_end_offset, Offset(2));
    let mut stream = connection
        .stream(&fetch(&events, 0, 1 << 20), 4)
        .await
        .expect("open a fetch stream");
    let (_, tail) = next_item(&mut stream).await;
    assert_eq!(
        records(&tail),
        vec![(0, "a".to_string()), (1, "b".to_string())]
    );
    let end = list_offsets(&connection, &events, OffsetQuery::End).await;
    assert_eq!(end.offset, Offset(2));
    cluster.spu.stop().await;
}

#[tokio::test]
async fn every_request_is_authorized_by_the_policy() {
    let events = key("events", 0);
    let cluster = SecureCluster::start(vec![assignment("events", 0, SPU, 0)]).await;
    let [alice, bob, carol, root] = ["alice", "bob", "carol", "root"].map(|p| cluster.pki.issue(p));

    // Before the SC's first security state, everyone is refused.
    let early = cluster.connect(&root).await;
    let refused = api_error(produce(&early, &events, &["x"]).await);
    assert_eq!(refused.code, ErrorCode::PERMISSION_DENIED);
    assert!(
        refused.message.contains("authorization policy"),
        "{refused}"
    );
    assert_eq!(
        fetch_refusal(&early, &events).await.code,
        ErrorCode::PERMISSION_DENIED
    );
    assert_eq!(
        list_refusal(&early, &events).await.code,
        ErrorCode::PERMISSION_DENIED
    );

    cluster.sc.apply_security(policy()).await;
    for allowed in [&alice, &root] {
        let connection = cluster.connect(allowed).await;
        produce(&connection, &events, &["ok"])
            .await
            .expect("an allowed principal produces");
        let mut stream = connection
            .stream(&fetch(&events, 0, 1 << 20), 4)
            .await
            .expect("open a fetch stream");
        next_item(&mut stream).await;
        list_offsets(&connection, &events, OffsetQuery::End).await;
    }
    // Holding no role grants nothing; a deny rule overrides an allow.
    for (denied, who) in [(&bob, "bob"), (&carol, "carol")] {
        let connection = cluster.connect(denied).await;
        let cases = [
            (
                api_error(produce(&connection, &events, &["no"]).await),
                "write",
            ),
            (fetch_refusal(&connection, &events).await, "read"),
            (list_refusal(&connection, &events).await, "describe"),
        ];
        for (refused, action) in cases {
            assert_eq!(refused.code, ErrorCode::PERMISSION_DENIED, "{who} {action}");
            assert_eq!(
                refused.message,
                format!("permission denied: {who} may not {action} topic:events")
            );
        }
    }
    // Only the two allowed produces were appended.
    let connection = cluster.connect(&root).await;
    let end = list_offsets(&connection, &events, OffsetQuery::End).await;
    assert_eq!(end.offset, Offset(2));
    cluster.spu.stop().await;
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_on_its_next_request() {
    let events = key("events", 0);
    let cluster = SecureCluster::start(vec![assignment("events", 0, SPU, 0)]).await;
    cluster.sc.apply_security(policy()).await;
    let alice = cluster.pki.issue("alice");
    let connection = cluster.connect(&alice).await;
    produce(&connection, &events, &["before"])
        .await
        .expect("produce before the revocation");
    let mut idle = open_and_drain(&connection, &events, 1).await;

    cluster
        .sc
        .apply_security(SecurityState {
            revoked: vec![alice.serial.clone()],
            ..policy()
        })
        .await;
    // The open stream ends with no record to send.
    let ended = stream_error(&mut idle).await;
    assert_eq!(ended.code, ErrorCode::AUTHENTICATION_FAILED, "{ended}");
    assert!(ended.message.contains(&alice.serial), "{ended}");
    let refused = api_error(produce(&connection, &events, &["after"]).await);
    assert_eq!(refused.code, ErrorCode::AUTHENTICATION_FAILED);
    assert!(refused.message.contains("revoked"), "{refused}");
    assert!(refused.message.contains(&alice.serial), "{refused}");
    // New connections are refused at the handshake.
    let again = refusal(&cluster.spu.public_addr, cluster.pki.client(&alice)).await;
    assert_refused(&again, "revoked");

    let root = cluster.connect(&cluster.pki.issue("root")).await;
    let end = list_offsets(&root, &events, OffsetQuery::End).await;
    assert_eq!(end.offset, Offset(1));
    cluster.spu.stop().await;
}

#[tokio::test]
async fn an_spu_replicates_only_as_itself() {
    let shared = key("shared", 0);
    let cluster = SecureCluster::start(vec![followed_by_spu_2()]).await;
    let spu2 = cluster.connect_private(&cluster.pki.issue("spu:2")).await;
    let spu3 = cluster.connect_private(&cluster.pki.issue("spu:3")).await;

    // Before the SC's first security state, no peer is trusted: its
    // certificate may have been revoked.
    let mut early = sync_from_start(&spu2, SpuId(2), &shared).await;
    let refused = sync_error(&mut early).await;
    assert_eq!(refused.code, ErrorCode::PERMISSION_DENIED);
    assert!(
        refused.message.contains("authorization policy"),
        "{refused}"
    );
    cluster.sc.apply_security(policy()).await;

    let mut stream = sync_from_start(&spu2, SpuId(3), &shared).await;
    let refused = match bounded("the stream's refusal", stream.next_with_tail()).await {
        Some(Err(TransportError::Api(error))) => error,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(refused.code, ErrorCode::PERMISSION_DENIED);
    assert!(refused.message.contains("spu:2"), "{refused}");
    assert!(refused.message.contains("follower 3"), "{refused}");

    let positions = |follower| ReplicaPositionsRequest {
        follower,
        positions: vec![ReplicaPosition {
            key: shared.clone(),
            leader_epoch: LeaderEpoch(0),
            log_end_offset: Offset(0),
        }],
    };
    let refused = api_error(spu2.call(&positions(SpuId(3))).await);
    assert_eq!(refused.code, ErrorCode::PERMISSION_DENIED);
    spu2.call(&positions(SpuId(2)))
        .await
        .expect("spu:2 reports as itself");

    let question = FetchEpochEndRequest {
        key: shared.clone(),
        leader_epoch: LeaderEpoch(0),
        epoch: LeaderEpoch(0),
    };
    spu2.call(&question)
        .await
        .expect("a follower asks about its partition");
    let refused = api_error(spu3.call(&question).await);
    assert_eq!(refused.code, ErrorCode::PERMISSION_DENIED);
    assert!(refused.message.contains("spu:3"), "{refused}");

    // The SC's certificate is a node's, but not an SPU's: it is refused
    // before the partition is looked up, so it learns nothing of it.
    let sc = cluster.connect_private(&cluster.pki.issue("sc")).await;
    let unknown = FetchEpochEndRequest {
        key: key("unknown", 0),
        ..question.clone()
    };
    let refused = api_error(sc.call(&unknown).await);
    assert_eq!(refused.code, ErrorCode::PERMISSION_DENIED, "{refused}");
    assert!(refused.message.contains("only SPUs"), "{refused}");

    // Clients never reach the private listener, superusers included.
    let client = cluster.pki.client(&cluster.pki.issue("root"));
    let refused = refusal(&cluster.spu.private_addr, client).await;
    assert_refused(&refused, "cluster nodes only");
    cluster.spu.stop().await;
}

/// A valid node certificate, speaking as itself, syncs only partitions
/// its SPU replicates: being an SPU does not open every topic's data.
#[tokio::test]
async fn an_spu_syncs_only_partitions_it_replicates() {
    let shared = key("shared", 0);
    let cluster = SecureCluster::start(vec![followed_by_spu_2()]).await;
    cluster.sc.apply_security(policy()).await;
    let root = cluster.connect(&cluster.pki.issue("root")).await;
    produce_to_leader(&root, &shared, &["a", "b"]).await;

    let spu3 = cluster.connect_private(&cluster.pki.issue("spu:3")).await;
    let mut stream = sync_from_start(&spu3, SpuId(3), &shared).await;
    assert_not_a_replica(&mut stream, SpuId(3), &shared).await;

    let spu2 = cluster.connect_private(&cluster.pki.issue("spu:2")).await;
    let mut stream = sync_from_start(&spu2, SpuId(2), &shared).await;
    assert_eq!(
        first_synced(&mut stream).await,
        expected(&[(0, "a"), (1, "b")])
    );
    cluster.spu.stop().await;
}

#[tokio::test]
async fn unusable_tls_material_stops_the_start() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().expect("temp dir");
    let mut tls = pki.node("spu:1");
    tls.key_pem =
        b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n".to_vec();
    let config = runnel_spu::SpuConfig {
        public_addr: free_addr(),
        private_addr: free_addr(),
        sc_addr: free_addr(),
        data_dir: data.path().to_path_buf(),
        tls: Some(tls),
        ..runnel_spu::SpuConfig::default()
    };
    let started = bounded(
        "the start to fail",
        runnel_spu::run(config, runnel_transport::CancellationToken::new()),
    )
    .await;
    let error = started
        .expect_err("an SPU with a broken key started")
        .to_string();
    assert!(
        error.starts_with("cannot set up TLS for the public listener: "),
        "{error}"
    );
    assert!(error.contains("key"), "{error}");
}

/// The error a replication stream ends with, which must come.
async fn sync_error(
    stream: &mut runnel_transport::ResponseStream<runnel_api::SyncItem>,
) -> runnel_api::ApiError {
    match bounded("the replication stream to end", stream.next_with_tail()).await {
        Some(Err(TransportError::Api(error))) => error,
        other => panic!("expected the stream to end with an error, got {other:?}"),
    }
}

/// A fetch stream from offset 0 that has sent the `count` batches of
/// `key` and waits, idle, for more.
async fn open_and_drain(
    connection: &Connection,
    key: &PartitionKey,
    count: i64,
) -> runnel_transport::ResponseStream<runnel_api::FetchItem> {
    let mut stream = connection
        .stream(&fetch(key, 0, 1), 8)
        .await
        .expect("open a fetch stream");
    for offset in 0..count {
        let (item, _) = next_item(&mut stream).await;
        assert_eq!(item.first_offset, Offset(offset));
    }
    stream
}

/// `policy()` without alice's binding.
fn without_alice() -> SecurityState {
    let mut state = policy();
    state
        .policy
        .bindings
        .retain(|binding| binding.principal != "alice");
    state
}

#[tokio::test]
async fn open_fetch_streams_end_when_the_policy_withdraws_read() {
    let events = key("events", 0);
    let cluster = SecureCluster::start(vec![assignment("events", 0, SPU, 0)]).await;
    cluster.sc.apply_security(policy()).await;
    let alice = cluster.connect(&cluster.pki.issue("alice")).await;
    let values = ["0", "1", "2", "3", "4"];
    for value in values {
        produce(&alice, &events, &[value])
            .await
            .expect("alice produces");
    }
    // Waits for records; the policy change must end it by itself.
    let mut idle = open_and_drain(&alice, &events, values.len() as i64).await;
    // One batch per item and a window of four: the SPU sends four items
    // and waits for credit to send the fifth. The first taken returns none.
    let mut blocked = alice
        .stream(&fetch(&events, 0, 1), 4)
        .await
        .expect("open a fetch stream");
    let (first, _) = next_item(&mut blocked).await;
    assert_eq!(first.first_offset, Offset(0));
    // A new state that keeps alice's permission leaves both streams
    // open; the SPU fills the window meanwhile.
    cluster.sc.apply_security(policy()).await;

    cluster.sc.apply_security(without_alice()).await;
    let ended = stream_error(&mut idle).await;
    assert_eq!(ended.code, ErrorCode::PERMISSION_DENIED);
    assert_eq!(
        ended.message,
        "permission denied: alice may not read topic:events"
    );
    // What was sent before the change arrives; nothing after it, though
    // taking it returns credit for more.
    let mut received = Vec::new();
    let ended = loop {
        match bounded("the blocked stream to end", blocked.next_with_tail()).await {
            Some(Ok((item, _))) => received.push(item.first_offset.0),
            Some(Err(TransportError::Api(error))) => break error,
            other => panic!("expected items then a refusal, got {other:?}"),
        }
    };
    assert!(
        [1, 2, 3].starts_with(&received),
        "items sent after the change: {received:?}"
    );
    assert_eq!(ended.code, ErrorCode::PERMISSION_DENIED, "{ended}");
    cluster.spu.stop().await;
}

#[tokio::test]
async fn an_expired_certificate_ends_its_streams_and_requests() {
    let events = key("events", 0);
    let cluster = SecureCluster::start(vec![assignment("events", 0, SPU, 0)]).await;
    cluster.sc.apply_security(policy()).await;
    // Long enough to connect and open a stream on a loaded machine.
    let alice = cluster.pki.issue_for("alice", time::Duration::seconds(4));
    let connection = cluster.connect(&alice).await;
    produce(&connection, &events, &["a"])
        .await
        .expect("alice produces before the expiry");
    let mut idle = open_and_drain(&connection, &events, 1).await;

    let ended = stream_error(&mut idle).await;
    assert_eq!(ended.code, ErrorCode::AUTHENTICATION_FAILED, "{ended}");
    assert!(
        ended
            .message
            .starts_with("the certificate naming alice expired at "),
        "{ended}"
    );
    assert!(ended.message.contains("`runnel login`"), "{ended}");
    // The connection outlives the certificate; its requests do not pass.
    let refused = api_error(produce(&connection, &events, &["b"]).await);
    assert_eq!(refused.code, ErrorCode::AUTHENTICATION_FAILED, "{refused}");
    cluster.spu.stop().await;
}

#[tokio::test]
async fn a_revoked_spu_stops_replicating_at_once() {
    let shared = key("shared", 0);
    let cluster = SecureCluster::start(vec![followed_by_spu_2()]).await;
    cluster.sc.apply_security(policy()).await;
    let certificate = cluster.pki.issue("spu:2");
    let spu2 = cluster.connect_private(&certificate).await;
    let mut stream = sync_from_start(&spu2, SpuId(2), &shared).await;
    // The leader tells the new follower its high watermark, then waits
    // for appends.
    bounded("the first replication item", stream.next_with_tail())
        .await
        .expect("the stream goes on")
        .expect("a replication item");

    cluster
        .sc
        .apply_security(SecurityState {
            revoked: vec![certificate.serial.clone()],
            ..policy()
        })
        .await;
    let ended = sync_error(&mut stream).await;
    assert_eq!(ended.code, ErrorCode::AUTHENTICATION_FAILED, "{ended}");
    assert!(ended.message.contains(&certificate.serial), "{ended}");

    // Refused for who it is, before any partition is looked up: the
    // answer is the same for a partition this SPU does not host.
    for asked in [shared, key("unknown", 0)] {
        let question = FetchEpochEndRequest {
            key: asked,
            leader_epoch: LeaderEpoch(0),
            epoch: LeaderEpoch(0),
        };
        let refused = api_error(spu2.call(&question).await);
        assert_eq!(refused.code, ErrorCode::AUTHENTICATION_FAILED, "{refused}");
    }
    cluster.spu.stop().await;
}

#[tokio::test]
async fn a_revoked_spu_holding_back_credit_gets_nothing_more() {
    let shared = key("shared", 0);
    // Room for one small batch per replication item.
    let cluster = SecureCluster::start_with(vec![followed_by_spu_2()], |config| {
        config.transport.max_frame_bytes = 1024 + 64;
    })
    .await;
    cluster.sc.apply_security(policy()).await;
    let root = cluster.connect(&cluster.pki.issue("root")).await;
    // With one of two replicas in sync, only the leader can acknowledge.
    let request = runnel_api::ProduceRequest {
        topic: shared.topic.clone(),
        partition: shared.partition,
        acks: runnel_api::Acks::Leader,
        timeout_ms: 30_000,
    };
    for value in ["0", "1", "2", "3", "4", "5"] {
        root.call_with_tail(&request, batch(&[value]))
            .await
            .expect("root produces");
    }
    let certificate = cluster.pki.issue("spu:2");
    let spu2 = cluster.connect_private(&certificate).await;
    // A window of four: the leader sends four items and waits for credit
    // to send the rest. The first taken returns none.
    let mut stream = sync_from_start(&spu2, SpuId(2), &shared).await;
    bounded("the first replication item", stream.next_with_tail())
        .await
        .expect("the stream goes on")
        .expect("a replication item");
    // A new state that keeps spu:2's permission leaves the stream open;
    // the leader fills the window meanwhile.
    cluster.sc.apply_security(policy()).await;

    cluster
        .sc
        .apply_security(SecurityState {
            revoked: vec![certificate.serial.clone()],
            ..policy()
        })
        .await;
    // What was sent before the revocation arrives; nothing after it,
    // though taking it returns credit for more.
    let mut taken = 1;
    let ended = loop {
        match bounded("the stream to end", stream.next_with_tail()).await {
            Some(Ok(_)) => taken += 1,
            Some(Err(TransportError::Api(error))) => break error,
            other => panic!("expected items then a refusal, got {other:?}"),
        }
    };
    assert!(
        taken <= 4,
        "{taken} items, past the credit given before the revocation"
    );
    assert_eq!(ended.code, ErrorCode::AUTHENTICATION_FAILED, "{ended}");
    cluster.spu.stop().await;
}
