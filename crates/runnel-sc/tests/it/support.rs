//! Test harness: an SC running in this process on loopback ports, clients
//! and fake SPUs talking to it over real connections, and bounded waits.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use runnel_api::{
    AlterIsrRequest, ApiError, ApiVersionsRequest, ErrorCode, SpuConnectRequest,
    SpuHeartbeatRequest, WatchMetadataRequest,
};
use runnel_metadata::{
    AssignmentUpdate, MetadataUpdate, MetadataView, PartitionKey, ReplicaStatus, SpuSpec,
    TopicConfig, TopicSpec,
};
use runnel_sc::{ScConfig, ScError};
pub use runnel_testkit::free_port;
use runnel_transport::{Connection, ResponseStream, TransportConfig, TransportError};
use runnel_types::{LeaderEpoch, Offset, PartitionId, SpuId, TopicName};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest any single step of a test may take.
pub const STEP: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`STEP`].
pub async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Starts an SC with `config`, trying fresh ports (from `fresh`) while
/// another process took the ones drawn, and returns once `ready` resolves
/// for its addresses; fails at once with the SC's own error if `run`
/// returns while starting for any other reason.
pub async fn start_sc<R: Future<Output = ()>>(
    mut config: ScConfig,
    fresh: bool,
    ready: impl Fn(String, String) -> R,
) -> (ScConfig, CancellationToken, JoinHandle<Result<(), ScError>>) {
    for _ in 0..5 {
        let shutdown = CancellationToken::new();
        let mut task = tokio::spawn(runnel_sc::run(config.clone(), shutdown.clone()));
        let ready = ready(config.public_addr.clone(), config.private_addr.clone());
        let ended = tokio::select! {
            biased;
            ended = &mut task => ended,
            () = ready => {
                // Another server on a taken port may have answered.
                if !task.is_finished() {
                    return (config, shutdown, task);
                }
                (&mut task).await
            }
        };
        match ended {
            Ok(Err(ScError::AddressInUse { .. })) if fresh => {
                config.public_addr = format!("127.0.0.1:{}", free_port());
                config.private_addr = format!("127.0.0.1:{}", free_port());
            }
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            ended => panic!("the SC stopped while starting: {ended:?}"),
        }
    }
    panic!("the SC found its ports taken five times");
}

/// An SC running in this process.
#[derive(Debug)]
pub struct Sc {
    pub public_addr: String,
    pub private_addr: String,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ScError>>,
}

impl Sc {
    /// Starts an SC on fresh ports.
    pub async fn start(data_dir: &Path, session_timeout: Duration) -> Sc {
        Sc::launch(Sc::config(data_dir, session_timeout), true).await
    }

    /// Starts an SC on these addresses (a restart on its old ones).
    pub async fn start_on(
        data_dir: &Path,
        session_timeout: Duration,
        public_addr: String,
        private_addr: String,
    ) -> Sc {
        let config = ScConfig {
            public_addr,
            private_addr,
            ..Sc::config(data_dir, session_timeout)
        };
        Sc::launch(config, false).await
    }

    fn config(data_dir: &Path, session_timeout: Duration) -> ScConfig {
        ScConfig {
            data_dir: data_dir.to_path_buf(),
            public_addr: format!("127.0.0.1:{}", free_port()),
            private_addr: format!("127.0.0.1:{}", free_port()),
            session_timeout,
            transport: TransportConfig::default(),
            ..ScConfig::default()
        }
    }

    async fn launch(config: ScConfig, fresh: bool) -> Sc {
        // Ready once both listeners accept.
        let (config, shutdown, task) = start_sc(config, fresh, |public, private| async move {
            connect(&public).await;
            connect(&private).await;
        })
        .await;
        Sc {
            public_addr: config.public_addr,
            private_addr: config.private_addr,
            shutdown,
            task,
        }
    }

    /// Stops the SC and waits until `run` has returned.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = bounded("the SC to stop", self.task).await;
        result.expect("the SC task").expect("the SC stops cleanly");
    }

    /// A connection to the public (client) listener.
    pub async fn client(&self) -> Connection {
        connect(&self.public_addr).await
    }

    /// A connection to the private (SPU) listener.
    pub async fn spu_link(&self) -> Connection {
        connect(&self.private_addr).await
    }

    /// Connects a fake SPU with id `id`.
    pub async fn spu(&self, id: u32) -> FakeSpu {
        let connection = self.spu_link().await;
        let assignments = bounded(
            "SpuConnect",
            connection.stream(&SpuConnectRequest { spec: spu_spec(id) }, 64),
        )
        .await
        .expect("SpuConnect opens");
        FakeSpu {
            id: SpuId(id),
            connection,
            assignments,
        }
    }
}

/// Connects, retrying while the listener is not up yet.
/// A connection that has answered an api-versions call, retrying while the
/// listener is not up yet.
async fn connect(addr: &str) -> Connection {
    bounded(&format!("a connection to {addr}"), async {
        loop {
            if let Ok(connection) = Connection::connect(addr, TransportConfig::default()).await
                && connection.call(&ApiVersionsRequest {}).await.is_ok()
            {
                return connection;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

pub fn spu_spec(id: u32) -> SpuSpec {
    SpuSpec {
        id: SpuId(id),
        public_addr: format!("127.0.0.1:{}", 20_000 + id),
        private_addr: format!("127.0.0.1:{}", 21_000 + id),
        rack: None,
    }
}

pub fn name(text: &str) -> TopicName {
    TopicName::new(text).expect("valid test topic name")
}

pub fn topic_spec(text: &str, partitions: u32, replication_factor: u16) -> TopicSpec {
    TopicSpec {
        name: name(text),
        partitions,
        replication_factor,
        config: TopicConfig::default(),
    }
}

/// The API error inside a failed call.
pub fn api_error<T: std::fmt::Debug>(result: Result<T, TransportError>) -> ApiError {
    match result {
        Err(TransportError::Api(error)) => error,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// Asserts that `result` is an error reply with `code` whose message
/// contains `text`.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<T, TransportError>,
    code: ErrorCode,
    text: &str,
) {
    let error = api_error(result);
    assert_eq!(error.code, code, "{error:?}");
    assert!(
        error.message.contains(text),
        "{:?} lacks {text:?}",
        error.message
    );
}

/// An SPU as the SC sees it: a connect stream and heartbeats.
#[derive(Debug)]
pub struct FakeSpu {
    pub id: SpuId,
    pub connection: Connection,
    pub assignments: ResponseStream<AssignmentUpdate>,
}

impl FakeSpu {
    /// The next assignment update.
    pub async fn next(&mut self) -> AssignmentUpdate {
        let what = format!("an assignment update for SPU {}", self.id);
        match bounded(&what, self.assignments.next()).await {
            Some(Ok(update)) => update,
            other => panic!(
                "SPU {}'s stream: expected an update, got {other:?}",
                self.id
            ),
        }
    }

    /// How the stream ended.
    pub async fn ended(&mut self) -> Option<ApiError> {
        let what = format!("SPU {}'s stream to end", self.id);
        loop {
            match bounded(&what, self.assignments.next()).await {
                Some(Ok(_)) => continue,
                None => return None,
                Some(Err(TransportError::Api(error))) => return Some(error),
                Some(Err(other)) => panic!("SPU {}'s stream failed: {other}", self.id),
            }
        }
    }

    pub async fn heartbeat(
        &self,
        replicas: Vec<(TopicName, PartitionId, ReplicaStatus)>,
    ) -> Result<(), TransportError> {
        let request = SpuHeartbeatRequest {
            id: self.id,
            replicas,
        };
        bounded("a heartbeat", self.connection.call(&request)).await
    }

    /// Asks the SC, as this SPU, to change `key`'s ISR from `current` to
    /// `new` at `epoch`.
    pub async fn alter_isr(
        &self,
        key: &PartitionKey,
        epoch: i32,
        current: &[u32],
        new: &[u32],
    ) -> Result<Vec<SpuId>, TransportError> {
        let request = AlterIsrRequest {
            spu: self.id,
            key: key.clone(),
            leader_epoch: LeaderEpoch(epoch),
            current_isr: spu_ids(current),
            new_isr: spu_ids(new),
        };
        bounded("AlterIsr", self.connection.call(&request)).await
    }

    /// Heartbeats (with no replica reports) every `interval` until the
    /// returned guard is dropped or a heartbeat is refused, so the SC
    /// keeps this SPU online under a short session timeout.
    pub fn keep_alive(&self, interval: Duration) -> KeepAlive {
        let connection = self.connection.clone();
        let id = self.id;
        KeepAlive(tokio::spawn(async move {
            loop {
                let request = SpuHeartbeatRequest {
                    id,
                    replicas: vec![],
                };
                if connection.call(&request).await.is_err() {
                    return;
                }
                tokio::time::sleep(interval).await;
            }
        }))
    }

    /// A report of one replica of this SPU.
    pub fn report(&self, end: i64) -> ReplicaStatus {
        ReplicaStatus {
            spu: self.id,
            log_start_offset: Offset(0),
            log_end_offset: Offset(end),
            high_watermark: Offset(end),
            size_bytes: 100 * end as u64,
            damaged: false,
        }
    }
}

/// Heartbeats of a fake SPU; they stop when this is dropped.
#[derive(Debug)]
pub struct KeepAlive(JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn spu_ids(list: &[u32]) -> Vec<SpuId> {
    list.iter().copied().map(SpuId).collect()
}

pub fn key(topic: &str, partition: u32) -> PartitionKey {
    PartitionKey {
        topic: name(topic),
        partition: PartitionId(partition),
    }
}

/// A metadata watch and the view it keeps.
#[derive(Debug)]
pub struct Watcher {
    pub stream: ResponseStream<MetadataUpdate>,
    pub view: MetadataView,
    /// Every update received, in order.
    pub updates: Vec<MetadataUpdate>,
}

impl Watcher {
    pub async fn open(client: &Connection) -> Watcher {
        let stream = bounded("WatchMetadata", client.stream(&WatchMetadataRequest {}, 64))
            .await
            .expect("WatchMetadata opens");
        let mut watcher = Watcher {
            stream,
            view: MetadataView::default(),
            updates: Vec::new(),
        };
        watcher.receive().await;
        watcher
    }

    async fn receive(&mut self) {
        let update = match bounded("a metadata update", self.stream.next()).await {
            Some(Ok(update)) => update,
            other => panic!("metadata watch: expected an update, got {other:?}"),
        };
        self.updates.push(update.clone());
        self.view.apply(update);
    }

    /// Applies updates until `done` holds for the view.
    pub async fn until(&mut self, what: &str, done: impl Fn(&MetadataView) -> bool) {
        bounded(what, async {
            while !done(&self.view) {
                self.receive().await;
            }
        })
        .await
    }
}
