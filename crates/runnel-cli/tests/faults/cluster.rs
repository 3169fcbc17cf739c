//! A cluster of real `runnel` processes for one scenario: an SC and three
//! SPUs on loopback, in a temporary directory, with a fault-injecting proxy
//! in front of every listener a node reaches:
//!
//! ```text
//! client ──▶ [sc public] ──▶ SC public
//! client ──▶ [spu N public] ──▶ SPU N public          (advertised to clients)
//! SPU M  ──▶ [spu N private] ──▶ SPU N private        (advertised to peers)
//! SPU N  ──▶ [spu N → sc] ──▶ SC private              (one per SPU)
//! ```
//!
//! Replication streams are opened by followers to the leader's private
//! listener, so cutting an SPU's private and SC proxies isolates it from
//! the SC and its followers while its clients stay connected.
//!
//! Every process is killed on drop, even when the scenario panics; then
//! the tail of each node's log is printed.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use runnel_client::RunnelClient;
use runnel_metadata::{Partition, TopicConfig, TopicSpec};
use runnel_testkit::reserve_port;
use runnel_transport::TransportConfig;
use runnel_types::{ByteSize, FlushPolicy, PartitionId, SpuId, TopicName};
use tokio::net::TcpStream;

use crate::disk::Tmpfs;
use crate::history::Clock;
use crate::process::Node;
use crate::proxy::Proxy;

pub const SPUS: u32 = 3;
pub const PARTITIONS: u32 = 3;
pub const REPLICATION_FACTOR: u16 = 3;
pub const MIN_IN_SYNC_REPLICAS: u16 = 2;
/// An SPU silent this long is offline; the issue's default.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(3);
/// Small, so that a scenario of a few seconds seals segments.
pub const SEGMENT_BYTES: u64 = 8 << 10;
/// Log lines of each node printed when a scenario fails.
const LOG_TAIL_LINES: usize = 40;
/// Bounds waiting for a process to listen; never a measurement.
const STARTUP_PATIENCE: Duration = Duration::from_secs(20);
/// Between two polls of the SC's partition list.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub struct ClusterOptions {
    /// An SPU whose data directory is a tmpfs of this many bytes.
    pub small_disk: Option<(SpuId, u64)>,
}

#[derive(Debug)]
struct Spu {
    node: Node,
    public: Proxy,
    private: Proxy,
    sc_link: Proxy,
    data_dir: PathBuf,
}

#[derive(Debug)]
pub struct Cluster {
    client: RunnelClient,
    clock: Clock,
    sc: Node,
    sc_public: Proxy,
    spus: BTreeMap<SpuId, Spu>,
    /// Unmounted once the processes are gone, before the directory is
    /// removed.
    disks: Vec<Tmpfs>,
    root: tempfile::TempDir,
}

fn addr_of(reservation: &TcpListener) -> SocketAddr {
    reservation
        .local_addr()
        .expect("a bound listener has an address")
}

fn args(parts: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    parts
        .iter()
        .map(|part| part.as_ref().to_os_string())
        .collect()
}

impl Cluster {
    pub async fn start(options: ClusterOptions) -> Cluster {
        let root = tempfile::tempdir().expect("a temporary directory");
        let binary = Path::new(env!("CARGO_BIN_EXE_runnel"));
        let sc_public_port = reserve_port();
        let sc_private_port = reserve_port();
        let sc_public_addr = addr_of(&sc_public_port);
        let sc_private_addr = addr_of(&sc_private_port);
        let sc_public = Proxy::start("sc public", sc_public_addr).await;
        let mut reservations = vec![sc_public_port, sc_private_port];
        let mut planned = Vec::new();
        for id in 1..=SPUS {
            let public_port = reserve_port();
            let private_port = reserve_port();
            let public_addr = addr_of(&public_port);
            let private_addr = addr_of(&private_port);
            reservations.extend([public_port, private_port]);
            let public = Proxy::start(&format!("spu {id} public"), public_addr).await;
            let private = Proxy::start(&format!("spu {id} private"), private_addr).await;
            let sc_link = Proxy::start(&format!("spu {id} to sc"), sc_private_addr).await;
            planned.push((
                SpuId(id),
                public_addr,
                private_addr,
                public,
                private,
                sc_link,
            ));
        }
        // Every proxy has its port: the processes may take theirs now.
        drop(reservations);

        let sc = Node::start(
            "sc",
            binary,
            args(&[
                &"run",
                &"sc",
                &"--data-dir",
                &root.path().join("sc"),
                &"--public-addr",
                &sc_public_addr.to_string(),
                &"--private-addr",
                &sc_private_addr.to_string(),
                &"--session-timeout",
                &format!("{}ms", SESSION_TIMEOUT.as_millis()),
            ]),
            root.path().join("sc.log"),
        );
        let mut disks = Vec::new();
        let mut spus = BTreeMap::new();
        for (id, public_addr, private_addr, public, private, sc_link) in planned {
            let data_dir = root.path().join(format!("spu-{id}"));
            if let Some((small, size)) = options.small_disk
                && small == id
            {
                disks.push(Tmpfs::mount(&data_dir, size));
            }
            let node = Node::start(
                &format!("spu {id}"),
                binary,
                args(&[
                    &"run",
                    &"spu",
                    &"--id",
                    &id.0.to_string(),
                    &"--public-addr",
                    &public_addr.to_string(),
                    &"--private-addr",
                    &private_addr.to_string(),
                    &"--advertise-public-addr",
                    &public.addr().to_string(),
                    &"--advertise-private-addr",
                    &private.addr().to_string(),
                    &"--sc-addr",
                    &sc_link.addr().to_string(),
                    &"--data-dir",
                    &data_dir,
                ]),
                root.path().join(format!("spu-{id}.log")),
            );
            spus.insert(
                id,
                Spu {
                    node,
                    public,
                    private,
                    sc_link,
                    data_dir,
                },
            );
        }
        let mut sc = sc;
        wait_listening(&mut sc, sc_public_addr).await;
        let client = connect(sc_public.addr()).await;
        let cluster = Cluster {
            client,
            clock: Clock::start(),
            sc,
            sc_public,
            spus,
            disks,
            root,
        };
        cluster.wait_spus_online().await;
        cluster
    }

    async fn wait_spus_online(&self) {
        let wanted: BTreeSet<SpuId> = self.spus.keys().copied().collect();
        self.client
            .wait_for_metadata(
                |view| {
                    let online: BTreeSet<SpuId> = view
                        .spus
                        .values()
                        .filter(|spu| spu.online)
                        .map(|spu| spu.spec.id)
                        .collect();
                    online == wanted
                },
                STARTUP_PATIENCE,
            )
            .await
            .unwrap_or_else(|error| panic!("the SPUs did not all come online: {error}"));
    }

    pub fn client(&self) -> &RunnelClient {
        &self.client
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    pub fn spu_ids(&self) -> Vec<SpuId> {
        self.spus.keys().copied().collect()
    }

    fn spu(&mut self, id: SpuId) -> &mut Spu {
        self.spus
            .get_mut(&id)
            .unwrap_or_else(|| panic!("there is no SPU {id} in this cluster"))
    }

    pub fn data_dir(&self, id: SpuId) -> PathBuf {
        self.spus[&id].data_dir.clone()
    }

    pub fn replica_dir(&self, id: SpuId, topic: &TopicName, partition: PartitionId) -> PathBuf {
        self.data_dir(id).join(format!("{topic}-{partition}"))
    }

    pub fn kill_spu(&mut self, id: SpuId) {
        self.spu(id).node.kill();
    }

    pub fn restart_spu(&mut self, id: SpuId) {
        self.spu(id).node.restart();
    }

    pub fn pause_spu(&mut self, id: SpuId) {
        self.spu(id).node.pause();
    }

    pub fn resume_spu(&mut self, id: SpuId) {
        self.spu(id).node.resume();
    }

    pub fn spu_is_running(&mut self, id: SpuId) -> bool {
        self.spu(id).node.is_running()
    }

    pub fn kill_sc(&mut self) {
        self.sc.kill();
    }

    pub fn restart_sc(&mut self) {
        self.sc.restart();
    }

    /// Cuts an SPU off from the SC and from its peers (the followers of
    /// its partitions connect to it); its clients stay connected.
    pub fn isolate_spu(&self, id: SpuId) {
        let spu = &self.spus[&id];
        spu.private.cut();
        spu.sc_link.cut();
    }

    /// Delays every replication connection by `delay` each way.
    pub fn delay_replication(&self, delay: Duration) {
        for spu in self.spus.values() {
            spu.private.set_delay(delay);
        }
    }

    /// Ends every cut and delay.
    pub fn heal_network(&self) {
        self.sc_public.heal();
        for spu in self.spus.values() {
            spu.public.heal();
            spu.private.heal();
            spu.sc_link.heal();
        }
    }

    /// A topic of [`PARTITIONS`] partitions, [`REPLICATION_FACTOR`]
    /// replicas, [`MIN_IN_SYNC_REPLICAS`], fsync on every append, small
    /// segments, kept forever; returns once every replica is in sync.
    pub async fn create_topic(&self, name: &str) -> TopicName {
        let topic = TopicName::new(name).expect("a valid topic name");
        let spec = TopicSpec {
            name: topic.clone(),
            partitions: PARTITIONS,
            replication_factor: REPLICATION_FACTOR,
            config: TopicConfig {
                retention_time: None,
                segment_size: ByteSize(SEGMENT_BYTES),
                flush: FlushPolicy::Always,
                min_in_sync_replicas: Some(MIN_IN_SYNC_REPLICAS),
                unclean_election: false,
                ..TopicConfig::default()
            },
        };
        self.client
            .admin()
            .create_topic(spec)
            .await
            .unwrap_or_else(|error| panic!("creating topic {topic}: {error}"));
        self.client
            .wait_for_metadata(
                |view| {
                    (0..PARTITIONS).all(|partition| {
                        view.leader_address(&runnel_metadata::PartitionKey {
                            topic: topic.clone(),
                            partition: PartitionId(partition),
                        })
                        .is_some()
                    })
                },
                Duration::from_secs(20),
            )
            .await
            .unwrap_or_else(|error| {
                panic!("the partitions of {topic} got no online leader: {error}")
            });
        self.wait_settled(&topic, Duration::from_secs(30)).await;
        topic
    }

    /// The partitions of `topic` as the SC reports them (with each
    /// replica's last heartbeat); `None` while the SC does not answer.
    pub async fn partitions(&self, topic: &TopicName) -> Option<Vec<Partition>> {
        let admin = self.client.admin();
        let listing = admin.list_partitions(Some(topic));
        match tokio::time::timeout(Duration::from_secs(2), listing).await {
            Ok(Ok(partitions)) => Some(partitions),
            _ => None,
        }
    }

    /// Polls the partition list until `condition` holds, for at most
    /// `timeout`; returns how long it took and the partitions it held for.
    /// Panics naming `what` and showing the last list otherwise.
    pub async fn wait_for(
        &self,
        topic: &TopicName,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&[Partition]) -> bool,
    ) -> (Duration, Vec<Partition>) {
        let started = tokio::time::Instant::now();
        let mut last = None;
        loop {
            if let Some(partitions) = self.partitions(topic).await {
                if condition(&partitions) {
                    return (started.elapsed(), partitions);
                }
                last = Some(partitions);
            }
            if started.elapsed() >= timeout {
                panic!(
                    "waited {timeout:?} for {what} on {topic}; the partitions were last:\n{}",
                    last.map_or_else(
                        || "(the SC never answered)".to_string(),
                        |partitions| { describe(&partitions) }
                    )
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until every partition has a leader and all its replicas in
    /// sync (records may still be flowing); returns how long it took.
    pub async fn wait_in_sync(&self, topic: &TopicName, timeout: Duration) -> Duration {
        let (took, _) = self
            .wait_for(topic, "every replica in sync", timeout, |partitions| {
                partitions.iter().all(all_in_sync)
            })
            .await;
        took
    }

    /// Waits until every replica is in sync and at the leader's log end,
    /// and the high watermark is there too: nothing in flight.
    pub async fn wait_settled(&self, topic: &TopicName, timeout: Duration) -> Vec<Partition> {
        let what = "every replica in sync at the leader's log end and high watermark";
        let (_, partitions) = self
            .wait_for(topic, what, timeout, |partitions| {
                partitions.iter().all(settled)
            })
            .await;
        partitions
    }

    /// The online leader of `partition` as the clients' metadata shows it,
    /// once there is one (and it is not `other_than`).
    pub async fn wait_leader(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        other_than: Option<SpuId>,
        timeout: Duration,
    ) -> SpuId {
        let key = runnel_metadata::PartitionKey {
            topic: topic.clone(),
            partition,
        };
        let view = self
            .client
            .wait_for_metadata(
                |view| {
                    view.leader_address(&key)
                        .is_some_and(|(leader, _)| Some(leader) != other_than)
                },
                timeout,
            )
            .await
            .unwrap_or_else(|error| {
                let partitions = self.client.metadata().partitions;
                panic!(
                    "partition {key} got no online leader other than {other_than:?}: {error}; the client's metadata shows {:?}",
                    partitions.get(&key).map(|partition| &partition.status)
                )
            });
        let (leader, _) = view.leader_address(&key).expect("the condition held");
        leader
    }

    /// SIGTERM to every process still running, SPUs first; returns what
    /// did not stop cleanly.
    pub async fn stop(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut nodes: Vec<&mut Node> = self.spus.values_mut().map(|spu| &mut spu.node).collect();
        nodes.push(&mut self.sc);
        for node in nodes {
            if !node.is_running() {
                continue;
            }
            match node.terminate().await {
                Ok(status) if status.success() => {}
                Ok(status) => problems.push(format!("{} exited with {status}", node.name())),
                Err(problem) => problems.push(problem),
            }
        }
        problems
    }

    /// The last lines of every node's log.
    pub fn log_tails(&self) -> String {
        let mut text = String::new();
        let nodes = std::iter::once(&self.sc).chain(self.spus.values().map(|spu| &spu.node));
        for node in nodes {
            text.push_str(&format!(
                "----- last {LOG_TAIL_LINES} lines of {} ({}) -----\n{}\n",
                node.name(),
                self.root.path().display(),
                node.log_tail(LOG_TAIL_LINES)
            ));
        }
        text
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails());
        }
        for spu in self.spus.values_mut() {
            spu.node.kill();
        }
        self.sc.kill();
        self.disks.clear();
    }
}

/// A leader, and every replica in the ISR.
fn all_in_sync(partition: &Partition) -> bool {
    let replicas: BTreeSet<SpuId> = partition.spec.replicas.iter().copied().collect();
    let in_sync: BTreeSet<SpuId> = partition.status.in_sync_replicas.iter().copied().collect();
    partition.status.leader.is_some() && in_sync == replicas
}

/// All in sync, every replica's log end the leader's, and the high
/// watermark there too.
fn settled(partition: &Partition) -> bool {
    let Some(leader) = partition.leader_status() else {
        return false;
    };
    all_in_sync(partition)
        && leader.high_watermark == leader.log_end_offset
        && partition.spec.replicas.iter().all(|spu| {
            partition.status.replicas.iter().any(|replica| {
                replica.spu == *spu && replica.log_end_offset == leader.log_end_offset
            })
        })
}

/// One line per partition: leader, epoch, ISR, each replica's positions.
pub fn describe(partitions: &[Partition]) -> String {
    partitions
        .iter()
        .map(|partition| {
            let replicas: Vec<String> = partition
                .status
                .replicas
                .iter()
                .map(|replica| {
                    format!(
                        "SPU {} leo {} hw {}",
                        replica.spu, replica.log_end_offset, replica.high_watermark
                    )
                })
                .collect();
            format!(
                "  partition {}: replicas {:?} leader {:?} epoch {} isr {:?}; {}",
                partition.spec.key.partition,
                partition
                    .spec
                    .replicas
                    .iter()
                    .map(|spu| spu.0)
                    .collect::<Vec<_>>(),
                partition.status.leader.map(|spu| spu.0),
                partition.status.leader_epoch,
                partition
                    .status
                    .in_sync_replicas
                    .iter()
                    .map(|spu| spu.0)
                    .collect::<Vec<_>>(),
                replicas.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until `addr` accepts connections; panics with the node's log if
/// the process exits or takes too long.
async fn wait_listening(node: &mut Node, addr: SocketAddr) {
    let started = tokio::time::Instant::now();
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        assert!(
            node.is_running(),
            "{} exited before listening on {addr}:\n{}",
            node.name(),
            node.log_tail(LOG_TAIL_LINES)
        );
        assert!(
            started.elapsed() < STARTUP_PATIENCE,
            "{} does not listen on {addr} after {STARTUP_PATIENCE:?}:\n{}",
            node.name(),
            node.log_tail(LOG_TAIL_LINES)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Clients' transport: timeouts short enough for a scenario, long enough
/// for fsyncs on a busy machine.
pub fn transport() -> TransportConfig {
    TransportConfig {
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        ..TransportConfig::default()
    }
}

async fn connect(sc_addr: SocketAddr) -> RunnelClient {
    let started = tokio::time::Instant::now();
    loop {
        match RunnelClient::connect_with(&sc_addr.to_string(), transport()).await {
            Ok(client) => return client,
            Err(error) if started.elapsed() >= STARTUP_PATIENCE => {
                panic!("cannot connect a client to the SC through {sc_addr}: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
