//! A fake SC and an in-process SPU for the integration tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use runnel_api::{
    Acks, ApiError, ApiKey, ErrorCode, FetchItem, ProduceRequest, ProduceResponse,
    SpuConnectRequest, SpuHeartbeatRequest,
};
use runnel_metadata::{
    AssignmentUpdate, PartitionKey, ReplicaAssignment, SecurityState, TopicConfig,
};
use runnel_pki::{ClusterCa, IssuedCert, PrincipalSource};
use runnel_spu::{SpuConfig, SpuError};
use runnel_transport::{
    Admission, CancellationToken, ClientTls, Connection, Handler, IncomingRequest, NodeTls,
    Responder, ResponseStream, Revocations, TransportConfig, TransportError,
};
use runnel_types::{LeaderEpoch, PartitionId, SpuId, TopicName};
use runnel_wire::{BatchBuilder, Compression, DecodeLimits, RecordBatch};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// The bound on every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub const SPU: SpuId = SpuId(1);

/// The cluster id a [`FakeSc`] sends unless told otherwise.
pub const CLUSTER: &str = "0123456789abcdef";

/// Waits for `future`, failing the test if it takes longer than [`WAIT`].
pub async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub fn key(topic: &str, partition: u32) -> PartitionKey {
    PartitionKey {
        topic: TopicName::new(topic).expect("valid topic name"),
        partition: PartitionId(partition),
    }
}

/// An assignment of a partition of the topic with id 1.
pub fn assignment(topic: &str, partition: u32, leader: SpuId, epoch: i32) -> ReplicaAssignment {
    ReplicaAssignment {
        key: key(topic, partition),
        topic_id: 1,
        config: TopicConfig::default(),
        replicas: vec![leader],
        leader: Some(leader),
        leader_epoch: LeaderEpoch(epoch),
        in_sync_replicas: vec![leader],
        leader_addr: None,
    }
}

/// An address nobody listens on right now.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", runnel_testkit::free_port())
}

/// Serves `SpuConnect` (a snapshot of its assignments, then every change
/// made through it) and records the SPU's heartbeats.
#[derive(Debug)]
pub struct FakeSc {
    pub addr: String,
    cluster_id: Mutex<String>,
    /// Cancelled to end every open session.
    sessions: Mutex<CancellationToken>,
    assignments: Mutex<BTreeMap<PartitionKey, ReplicaAssignment>>,
    updates: broadcast::Sender<AssignmentUpdate>,
    /// The latest heartbeat; `None` until one arrives (or after `forget_heartbeats`).
    heartbeat: watch::Sender<Option<SpuHeartbeatRequest>>,
    /// SpuConnect requests received.
    connects: watch::Sender<usize>,
    /// While set, heartbeats are received but never answered.
    stall_heartbeats: AtomicBool,
    /// The security state sent after each snapshot, once set.
    security: Mutex<Option<SecurityState>>,
    /// Marker partitions created so far by `apply_security`.
    markers: AtomicU32,
    shutdown: CancellationToken,
}

impl FakeSc {
    pub async fn start(assignments: Vec<ReplicaAssignment>) -> Arc<FakeSc> {
        FakeSc::start_at("127.0.0.1:0", assignments).await
    }

    pub async fn start_at(addr: &str, assignments: Vec<ReplicaAssignment>) -> Arc<FakeSc> {
        FakeSc::start_cluster(addr, CLUSTER, assignments).await
    }

    /// An SC of the cluster `cluster_id`.
    pub async fn start_cluster(
        addr: &str,
        cluster_id: &str,
        assignments: Vec<ReplicaAssignment>,
    ) -> Arc<FakeSc> {
        FakeSc::start_serving(addr, cluster_id, assignments, TransportConfig::default()).await
    }

    /// An SC whose private listener runs TLS with `tls` (its `sc`
    /// certificate), admitting nodes only.
    pub async fn start_tls(assignments: Vec<ReplicaAssignment>, tls: &NodeTls) -> Arc<FakeSc> {
        let server_tls = tls
            .server(Admission::Nodes, Revocations::default())
            .expect("the fake SC's TLS material");
        let transport = TransportConfig {
            server_tls: Some(server_tls),
            ..TransportConfig::default()
        };
        FakeSc::start_serving("127.0.0.1:0", CLUSTER, assignments, transport).await
    }

    async fn start_serving(
        addr: &str,
        cluster_id: &str,
        assignments: Vec<ReplicaAssignment>,
        transport: TransportConfig,
    ) -> Arc<FakeSc> {
        let listener = TcpListener::bind(addr).await.expect("bind the fake SC");
        let sc = Arc::new(FakeSc {
            addr: listener.local_addr().expect("local address").to_string(),
            cluster_id: Mutex::new(cluster_id.to_string()),
            sessions: Mutex::new(CancellationToken::new()),
            assignments: Mutex::new(
                assignments
                    .into_iter()
                    .map(|assignment| (assignment.key.clone(), assignment))
                    .collect(),
            ),
            updates: broadcast::channel(64).0,
            heartbeat: watch::Sender::new(None),
            connects: watch::Sender::new(0),
            stall_heartbeats: AtomicBool::new(false),
            security: Mutex::new(None),
            markers: AtomicU32::new(0),
            shutdown: CancellationToken::new(),
        });
        tokio::spawn(runnel_transport::serve(
            listener,
            Arc::clone(&sc),
            transport,
            sc.shutdown.clone(),
        ));
        sc
    }

    /// Sends `state` to the SPU and waits until the SPU has applied it:
    /// the SPU applies the SC's updates in order, so once a partition
    /// assigned after the state shows in a heartbeat, so has the state.
    pub async fn apply_security(&self, state: SecurityState) {
        {
            let _assignments = self.assignments.lock().expect("assignments lock");
            *self.security.lock().expect("security lock") = Some(state.clone());
            let _ = self.updates.send(AssignmentUpdate::Security(state));
        }
        let marker = self.markers.fetch_add(1, Ordering::SeqCst);
        self.upsert(assignment("marker", marker, SPU, 0));
        self.heartbeat_where("the SPU to apply the security state", |heartbeat| {
            heartbeat
                .replicas
                .iter()
                .any(|(topic, partition, _)| topic.as_str() == "marker" && partition.0 == marker)
        })
        .await;
    }

    pub fn upsert(&self, assignment: ReplicaAssignment) {
        let mut assignments = self.assignments.lock().expect("assignments lock");
        assignments.insert(assignment.key.clone(), assignment.clone());
        let _ = self.updates.send(AssignmentUpdate::Upsert(assignment));
    }

    pub fn remove(&self, key: &PartitionKey) {
        let mut assignments = self.assignments.lock().expect("assignments lock");
        assignments.remove(key);
        let _ = self.updates.send(AssignmentUpdate::Remove(key.clone()));
    }

    /// Waits for a heartbeat that satisfies `check`.
    pub async fn heartbeat_where(
        &self,
        what: &str,
        check: impl Fn(&SpuHeartbeatRequest) -> bool,
    ) -> SpuHeartbeatRequest {
        let mut heartbeats = self.heartbeat.subscribe();
        let found = bounded(
            what,
            heartbeats.wait_for(|heartbeat| heartbeat.as_ref().is_some_and(&check)),
        )
        .await
        .expect("the fake SC keeps its heartbeat sender");
        found.clone().expect("checked to be a heartbeat")
    }

    /// Waits for a heartbeat that lists exactly these partitions.
    pub async fn heartbeat_listing(&self, keys: &[PartitionKey]) -> SpuHeartbeatRequest {
        let mut wanted: Vec<_> = keys
            .iter()
            .map(|key| (key.topic.clone(), key.partition))
            .collect();
        wanted.sort();
        self.heartbeat_where(&format!("a heartbeat listing {keys:?}"), |heartbeat| {
            let mut listed: Vec<_> = heartbeat
                .replicas
                .iter()
                .map(|(topic, partition, _)| (topic.clone(), *partition))
                .collect();
            listed.sort();
            listed == wanted
        })
        .await
    }

    /// Becomes the SC of another cluster holding `assignments`, as an SC
    /// that lost its store and started over: ends every session, and
    /// sends the new cluster id to the SPUs that connect again.
    pub fn restart_as(&self, cluster_id: &str, assignments: Vec<ReplicaAssignment>) {
        *self.cluster_id.lock().expect("cluster id lock") = cluster_id.to_string();
        *self.assignments.lock().expect("assignments lock") = assignments
            .into_iter()
            .map(|assignment| (assignment.key.clone(), assignment))
            .collect();
        let ended = std::mem::take(&mut *self.sessions.lock().expect("sessions lock"));
        ended.cancel();
    }

    /// SpuConnect requests received so far.
    pub fn connects(&self) -> usize {
        *self.connects.borrow()
    }

    /// Waits until SPUs have opened `count` sessions in all.
    pub async fn connects_reach(&self, count: usize) {
        let mut connects = self.connects.subscribe();
        bounded(
            &format!("{count} SpuConnect requests"),
            connects.wait_for(|connects| *connects >= count),
        )
        .await
        .expect("the fake SC keeps its connect counter");
    }

    /// From now on, heartbeats are left unanswered on open connections,
    /// as by an SC that hangs.
    pub fn stall_heartbeats(&self) {
        self.stall_heartbeats.store(true, Ordering::SeqCst);
    }

    /// Makes the next waits see only heartbeats sent from now on.
    pub fn forget_heartbeats(&self) {
        self.heartbeat.send_replace(None);
    }

    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    async fn serve_spu(&self, request: IncomingRequest, responder: Responder) {
        if let Err(error) = request.decode::<SpuConnectRequest>() {
            let error = ApiError::new(ErrorCode::MALFORMED_REQUEST, error.to_string());
            return responder.reply(&Err::<(), _>(error)).await;
        }
        self.connects.send_modify(|connects| *connects += 1);
        let (snapshot, security, mut updates) = {
            let assignments = self.assignments.lock().expect("assignments lock");
            (
                assignments.values().cloned().collect(),
                self.security.lock().expect("security lock").clone(),
                self.updates.subscribe(),
            )
        };
        let ended = self.sessions.lock().expect("sessions lock").clone();
        let mut stream = responder.into_stream();
        let snapshot = AssignmentUpdate::Snapshot {
            cluster_id: self.cluster_id.lock().expect("cluster id lock").clone(),
            replicas: snapshot,
        };
        if stream.send(&snapshot).await.is_err() {
            return;
        }
        if let Some(state) = security
            && stream
                .send(&AssignmentUpdate::Security(state))
                .await
                .is_err()
        {
            return;
        }
        loop {
            let update = tokio::select! {
                _ = stream.cancelled() => return,
                _ = ended.cancelled() => {
                    let error = ApiError::new(ErrorCode::SHUTTING_DOWN, "the fake SC restarted");
                    return stream.end(Err(error)).await;
                }
                update = updates.recv() => match update {
                    Ok(update) => update,
                    Err(error) => panic!("the fake SC lost updates: {error}"),
                },
            };
            if stream.send(&update).await.is_err() {
                return;
            }
        }
    }
}

impl Handler for FakeSc {
    async fn handle(&self, request: IncomingRequest, responder: Responder) {
        match ApiKey::from_u16(request.header.api_key) {
            Some(ApiKey::SpuConnect) => self.serve_spu(request, responder).await,
            Some(ApiKey::SpuHeartbeat) => {
                if self.stall_heartbeats.load(Ordering::SeqCst) {
                    return self.shutdown.cancelled().await;
                }
                let reply = match request.decode::<SpuHeartbeatRequest>() {
                    Ok(heartbeat) => {
                        self.heartbeat.send_replace(Some(heartbeat));
                        Ok(())
                    }
                    Err(error) => Err(ApiError::new(
                        ErrorCode::MALFORMED_REQUEST,
                        error.to_string(),
                    )),
                };
                responder.reply(&reply).await
            }
            _ => {
                let error = ApiError::new(ErrorCode::UNSUPPORTED_API, "not served by the fake SC");
                responder.reply(&Err::<(), _>(error)).await
            }
        }
    }
}

/// An SPU running in this process.
#[derive(Debug)]
pub struct TestSpu {
    pub public_addr: String,
    pub private_addr: String,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), SpuError>>,
}

impl TestSpu {
    pub fn start(sc_addr: &str, data_dir: &Path) -> TestSpu {
        TestSpu::start_with(sc_addr, data_dir, |_| {})
    }

    /// An SPU whose configuration `edit` changes first.
    pub fn start_with(
        sc_addr: &str,
        data_dir: &Path,
        edit: impl FnOnce(&mut SpuConfig),
    ) -> TestSpu {
        let mut config = SpuConfig {
            id: SPU,
            public_addr: free_addr(),
            private_addr: free_addr(),
            sc_addr: sc_addr.to_string(),
            data_dir: PathBuf::from(data_dir),
            heartbeat_interval: Duration::from_millis(50),
            retention_check_interval: Duration::from_millis(50),
            ..SpuConfig::default()
        };
        edit(&mut config);
        let shutdown = CancellationToken::new();
        TestSpu {
            public_addr: config.public_addr.clone(),
            private_addr: config.private_addr.clone(),
            shutdown: shutdown.clone(),
            task: tokio::spawn(runnel_spu::run(config, shutdown)),
        }
    }

    /// Connects to the public listener. Call it once a heartbeat came:
    /// the SPU binds its listeners before it talks to the SC.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.public_addr, TransportConfig::default())
            .await
            .expect("connect to the SPU")
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        bounded("the SPU to stop", self.task)
            .await
            .expect("the SPU task does not panic")
            .expect("the SPU stops cleanly");
    }
}

/// A cluster CA for TLS tests, and the certificates it issues.
pub struct TestPki {
    ca: ClusterCa,
}

impl TestPki {
    pub fn new() -> TestPki {
        let ca = ClusterCa::generate(
            "test",
            time::OffsetDateTime::now_utc(),
            time::Duration::days(1),
        )
        .expect("generate a CA");
        TestPki { ca }
    }

    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// A certificate naming `principal`, valid for 127.0.0.1 (where every
    /// test listener is).
    pub fn issue(&self, principal: &str) -> IssuedCert {
        self.issue_for(principal, time::Duration::days(1))
    }

    /// A certificate naming `principal` that expires `lifetime` from now.
    pub fn issue_for(&self, principal: &str, lifetime: time::Duration) -> IssuedCert {
        self.ca
            .issue(
                principal,
                &[],
                &[std::net::IpAddr::from([127, 0, 0, 1])],
                time::OffsetDateTime::now_utc(),
                lifetime,
            )
            .expect("issue a certificate")
    }

    /// A node's TLS material, for the certificate naming `principal`.
    pub fn node(&self, principal: &str) -> NodeTls {
        let issued = self.issue(principal);
        NodeTls {
            ca_pem: self.ca.cert_pem().as_bytes().to_vec(),
            cert_pem: issued.cert_pem.into_bytes(),
            key_pem: issued.key_pem.into_bytes(),
            principal_source: PrincipalSource::CommonName,
        }
    }

    /// How a client presenting `certificate` connects.
    pub fn client(&self, certificate: &IssuedCert) -> TransportConfig {
        let identity = (
            certificate.cert_pem.as_bytes(),
            certificate.key_pem.as_bytes(),
        );
        let tls = ClientTls::new(self.ca.cert_pem().as_bytes(), Some(identity), None)
            .expect("client TLS material");
        TransportConfig {
            client_tls: Some(tls),
            ..TransportConfig::default()
        }
    }
}

/// One batch holding `values`, stamped now (so that retention by time
/// keeps it).
pub fn batch(values: &[&str]) -> Bytes {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_millis() as i64;
    let mut builder = BatchBuilder::new(Compression::None);
    for value in values {
        builder.push(now_ms, None, Some(value.as_bytes().to_vec()), Vec::new());
    }
    Bytes::from(builder.build().encode().expect("encodable batch"))
}

pub async fn produce(
    connection: &Connection,
    key: &PartitionKey,
    values: &[&str],
) -> Result<ProduceResponse, TransportError> {
    let request = ProduceRequest {
        topic: key.topic.clone(),
        partition: key.partition,
        acks: Acks::All,
        timeout_ms: 30_000,
    };
    connection.call_with_tail(&request, batch(values)).await
}

/// The `(offset, value)` of every record in a fetch item's tail.
pub fn records(tail: &[u8]) -> Vec<(i64, String)> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < tail.len() {
        let (batch, used) = RecordBatch::decode(&tail[at..], DecodeLimits::default())
            .expect("a whole, valid batch");
        for record in &batch.records {
            let value = record.value.clone().expect("every test record has a value");
            records.push((
                batch.header.base_offset + i64::from(record.offset_delta),
                String::from_utf8(value).expect("UTF-8 values"),
            ));
        }
        at += used;
    }
    records
}

/// The next item of a fetch stream, which must come.
pub async fn next_item(stream: &mut ResponseStream<FetchItem>) -> (FetchItem, Bytes) {
    bounded("a fetch item", stream.next_with_tail())
        .await
        .expect("the stream goes on")
        .expect("a fetch item")
}

/// The error a stream ends with, which must come.
pub async fn stream_error(stream: &mut ResponseStream<FetchItem>) -> ApiError {
    match bounded("the stream to end", stream.next_with_tail()).await {
        Some(Err(TransportError::Api(error))) => error,
        Some(Ok((item, _))) => panic!("expected the stream to end, got {item:?}"),
        Some(Err(error)) => panic!("expected an error from the SPU, got {error}"),
        None => panic!("expected the stream to end with an error, it ended cleanly"),
    }
}
