//! The connection to a cluster: one SC connection for administration and
//! the metadata watch, a pool of SPU connections for data, and the
//! client's copy of the cluster metadata.
//!
//! A background task follows the SC's metadata stream (a snapshot, then
//! deltas) into a shared [`MetadataView`] and wakes everyone waiting on
//! it. When the SC goes away it reconnects with backoff, forever, and the
//! new snapshot replaces the view. The task stops when the last clone of
//! the [`RunnelClient`] (including those held by producers and consumers)
//! is dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use runnel_api::{
    ApiError, CreateTopicRequest, DeleteTopicRequest, ElectPreferredRequest, ElectionResult,
    InitProducerIdRequest, ListOffsetsRequest, ListOffsetsResponse, ListPartitionsRequest,
    ListSpusRequest, ListTopicsRequest, OffsetQuery, ProducerIdentity, RegisterSpuRequest, Request,
    UnregisterSpuRequest, WatchMetadataRequest,
};
use runnel_metadata::{
    MetadataUpdate, MetadataView, Partition, PartitionKey, Spu, SpuSpec, Topic, TopicSpec,
};
use runnel_transport::{
    Backoff, CancellationToken, Connection, ResponseStream, TransportConfig, TransportError,
};
use runnel_types::{PartitionId, SpuId, TopicName};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::pool::SpuPool;
use crate::profile::Profile;
use crate::{ClientError, Consumer, ConsumerConfig, Producer, ProducerConfig};

/// Metadata updates the SC may send ahead of the client's reading.
const METADATA_WINDOW: u32 = 16;

/// A connected client; clones share the connections and the metadata.
#[derive(Debug, Clone)]
pub struct RunnelClient {
    shared: Arc<Shared>,
    /// Dropped with the last clone: stops the metadata task.
    _owner: Arc<OwnerGuard>,
}

#[derive(Debug)]
struct Shared {
    sc_addr: String,
    transport: TransportConfig,
    metadata: watch::Sender<MetadataView>,
    /// The SC connection admin calls use; `None` or closed while the SC
    /// is away.
    sc: Mutex<Option<Connection>>,
    pool: SpuPool,
    shutdown: CancellationToken,
}

#[derive(Debug)]
struct OwnerGuard(CancellationToken);

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl RunnelClient {
    /// Connects to the SC at `sc_addr` with the default transport
    /// settings and waits for the first metadata snapshot.
    pub async fn connect(sc_addr: &str) -> Result<RunnelClient, ClientError> {
        RunnelClient::connect_with(sc_addr, TransportConfig::default()).await
    }

    /// Connects to the SC of `profile`, over TLS with its identity when
    /// it has TLS settings (to the SC and to every SPU).
    pub async fn connect_profile(profile: &Profile) -> Result<RunnelClient, ClientError> {
        RunnelClient::connect_with(&profile.sc_addr, profile.transport()?).await
    }

    /// Like [`RunnelClient::connect`], with these transport settings for
    /// the SC and every SPU connection.
    pub async fn connect_with(
        sc_addr: &str,
        transport: TransportConfig,
    ) -> Result<RunnelClient, ClientError> {
        let connection = Connection::connect(sc_addr, transport.clone())
            .await
            .map_err(|error| ClientError::from_first_connect(sc_addr, error))?;
        let plaintext = transport.client_tls.is_none();
        let mut stream = open_watch(&connection).await.map_err(|error| match error {
            TransportError::Closed if plaintext => ClientError::ClosedUnanswered {
                addr: sc_addr.to_string(),
            },
            other => ClientError::from_sc(sc_addr, other),
        })?;
        // The first item is the snapshot: a client returned from here
        // already knows every topic.
        let first = tokio::time::timeout(transport.request_timeout, stream.next()).await;
        let snapshot = match first {
            Ok(Some(Ok(update))) => update,
            Ok(Some(Err(error))) => return Err(ClientError::from_sc(sc_addr, error)),
            Ok(None) => {
                return Err(ClientError::ScUnavailable {
                    addr: sc_addr.to_string(),
                    reason: "the metadata stream ended before its snapshot".into(),
                });
            }
            Err(_) => {
                return Err(ClientError::ScUnavailable {
                    addr: sc_addr.to_string(),
                    reason: format!("no metadata within {:?}", transport.request_timeout),
                });
            }
        };
        let mut view = MetadataView::default();
        view.apply(snapshot);
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            sc_addr: sc_addr.to_string(),
            pool: SpuPool::new(transport.clone()),
            transport,
            metadata: watch::Sender::new(view),
            sc: Mutex::new(Some(connection)),
            shutdown: shutdown.clone(),
        });
        tokio::spawn(follow_metadata(Arc::clone(&shared), stream));
        Ok(RunnelClient {
            shared,
            _owner: Arc::new(OwnerGuard(shutdown)),
        })
    }

    /// The address of the SC this client talks to.
    pub fn sc_addr(&self) -> &str {
        &self.shared.sc_addr
    }

    pub fn admin(&self) -> Admin {
        Admin {
            client: self.clone(),
        }
    }

    /// A copy of the current metadata.
    pub fn metadata(&self) -> MetadataView {
        self.shared.metadata.borrow().clone()
    }

    /// Waits until `condition` holds for the metadata (checked now and
    /// after every change), and returns the metadata it held for.
    pub async fn wait_for_metadata<F: Fn(&MetadataView) -> bool>(
        &self,
        condition: F,
        timeout: Duration,
    ) -> Result<MetadataView, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut receiver = self.shared.metadata.subscribe();
        loop {
            {
                let view = receiver.borrow_and_update();
                if condition(&view) {
                    return Ok(view.clone());
                }
            }
            match tokio::time::timeout_at(deadline, receiver.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ClientError::Closed),
                Err(_) => return Err(ClientError::MetadataTimeout(timeout)),
            }
        }
    }

    pub async fn producer(
        &self,
        topic: &TopicName,
        config: ProducerConfig,
    ) -> Result<Producer, ClientError> {
        Producer::new(self.clone(), topic, config).await
    }

    pub async fn consumer(
        &self,
        topic: &TopicName,
        config: ConsumerConfig,
    ) -> Result<Consumer, ClientError> {
        Consumer::new(self.clone(), topic, config).await
    }

    /// Asks the leader of a partition for an offset (its start, its end,
    /// or the first at a time) and its bounds.
    pub async fn list_offset(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        query: OffsetQuery,
    ) -> Result<ListOffsetsResponse, ClientError> {
        let count = self.partition_count(topic)?;
        check_partition(topic, partition, count)?;
        let key = PartitionKey {
            topic: topic.clone(),
            partition,
        };
        self.list_offset_of(&key, query).await
    }

    pub(crate) async fn list_offset_of(
        &self,
        key: &PartitionKey,
        query: OffsetQuery,
    ) -> Result<ListOffsetsResponse, ClientError> {
        let request = ListOffsetsRequest {
            topic: key.topic.clone(),
            partition: key.partition,
            query,
        };
        self.call_leader(key, &request, Bytes::new()).await
    }

    /// The current metadata, borrowed: hold it only briefly, never
    /// across an await.
    pub(crate) fn metadata_ref(&self) -> watch::Ref<'_, MetadataView> {
        self.shared.metadata.borrow()
    }

    /// The partition count of `topic`, or advice to create it.
    pub(crate) fn partition_count(&self, topic: &TopicName) -> Result<u32, ClientError> {
        self.shared
            .metadata
            .borrow()
            .topics
            .get(topic)
            .map(|topic| topic.spec.partitions)
            .ok_or_else(|| self.topic_not_found(topic))
    }

    /// The error for a topic missing from the metadata. With TLS the
    /// metadata lists only topics the principal may describe, so the topic
    /// may exist and be hidden.
    pub(crate) fn topic_not_found(&self, topic: &TopicName) -> ClientError {
        if self.shared.transport.client_tls.is_some() {
            ClientError::TopicNotVisible(topic.clone())
        } else {
            ClientError::TopicNotFound(topic.clone())
        }
    }

    pub(crate) fn topic_exists(&self, topic: &TopicName) -> bool {
        self.shared.metadata.borrow().topics.contains_key(topic)
    }

    /// A receiver of metadata changes, for waits between retries.
    pub(crate) fn subscribe_metadata(&self) -> watch::Receiver<MetadataView> {
        self.shared.metadata.subscribe()
    }

    /// The leader, its address and a connection to it. Nothing is sent
    /// yet, so a failure here proves the partition got nothing.
    pub(crate) async fn leader_connection(
        &self,
        key: &PartitionKey,
    ) -> Result<Leader, ClientError> {
        let (spu, addr) = self
            .shared
            .metadata
            .borrow()
            .leader_address(key)
            .map(|(spu, addr)| (spu, addr.to_string()))
            .ok_or_else(|| ClientError::NoLeader(key.clone()))?;
        let connection = self
            .shared
            .pool
            .get(&addr)
            .await
            .map_err(|error| ClientError::from_spu(key, &addr, error))?;
        Ok(Leader {
            spu,
            addr,
            connection,
        })
    }

    /// Forgets the pooled connection to `addr`: for one that timed out
    /// yet still looks open.
    pub(crate) async fn discard_connection(&self, addr: &str) {
        self.shared.pool.discard(addr).await;
    }

    /// Why `key` has no usable leader now, for an error after waiting for
    /// one: the leader the metadata names (if any), and what is wrong with
    /// it and what to do, completing "partition t-2 …". `last_error` is
    /// the last failure seen while trying.
    pub(crate) fn leader_problem(
        &self,
        key: &PartitionKey,
        last_error: &str,
    ) -> (Option<SpuId>, String) {
        let view = self.shared.metadata.borrow();
        let Some(partition) = view.partitions.get(key) else {
            return (
                None,
                format!(
                    "is not in the cluster metadata ({last_error}); check `runnel partition list`"
                ),
            );
        };
        let Some(leader) = partition.status.leader else {
            return (
                None,
                "has no leader: none of its replicas is leading it; check `runnel partition list` and `runnel spu list`".into(),
            );
        };
        let problem = match view.spus.get(&leader) {
            None => format!(
                "has no online leader (SPU {leader} is not registered); check `runnel spu list`"
            ),
            Some(spu) if !spu.online => format!(
                "has no online leader (SPU {leader} is offline); start it with `runnel cluster start`"
            ),
            Some(spu) => format!(
                "cannot be read from its leader, SPU {leader} at {addr} ({last_error}); check that it is running with `runnel spu list`",
                addr = spu.spec.public_addr
            ),
        };
        (Some(leader), problem)
    }

    /// A unary call to the leader of `key`, with `tail` after the message.
    pub(crate) async fn call_leader<R, T>(
        &self,
        key: &PartitionKey,
        request: &R,
        tail: Bytes,
    ) -> Result<T, ClientError>
    where
        R: Request<Response = Result<T, ApiError>>,
        T: DeserializeOwned,
    {
        let leader = self.leader_connection(key).await?;
        match leader.connection.call_with_tail(request, tail).await {
            Ok(reply) => Ok(reply),
            Err(error) => {
                if matches!(error, TransportError::Timeout(_)) {
                    self.discard_connection(&leader.addr).await;
                }
                Err(ClientError::from_spu(key, &leader.addr, error))
            }
        }
    }

    /// A unary call to the SC. While the SC is away this fails with a
    /// retriable [`ClientError::ScUnavailable`]; it does not wait for the
    /// background reconnection, it tries once itself.
    pub(crate) async fn call_sc<R, T>(&self, request: &R) -> Result<T, ClientError>
    where
        R: Request<Response = Result<T, ApiError>>,
        T: DeserializeOwned,
    {
        let addr = &self.shared.sc_addr;
        let connection = self.sc_connection().await?;
        connection
            .call(request)
            .await
            .map_err(|error| ClientError::from_sc(addr, error))
    }

    async fn sc_connection(&self) -> Result<Connection, ClientError> {
        let live = self
            .shared
            .sc
            .lock()
            .expect("sc connection lock")
            .as_ref()
            .filter(|connection| !connection.is_closed())
            .cloned();
        if let Some(connection) = live {
            return Ok(connection);
        }
        let addr = &self.shared.sc_addr;
        let fresh = Connection::connect(addr, self.shared.transport.clone())
            .await
            .map_err(|error| ClientError::from_sc(addr, error))?;
        *self.shared.sc.lock().expect("sc connection lock") = Some(fresh.clone());
        Ok(fresh)
    }
}

/// The leader of a partition and a connection to it.
#[derive(Debug)]
pub(crate) struct Leader {
    pub spu: SpuId,
    pub addr: String,
    pub connection: Connection,
}

/// Fails if `partition` is not one of the `count` partitions of `topic`.
pub(crate) fn check_partition(
    topic: &TopicName,
    partition: PartitionId,
    count: u32,
) -> Result<(), ClientError> {
    if partition.0 >= count {
        return Err(ClientError::PartitionOutOfRange {
            topic: topic.clone(),
            partition,
            count,
        });
    }
    Ok(())
}

async fn open_watch(
    connection: &Connection,
) -> Result<ResponseStream<MetadataUpdate>, TransportError> {
    connection
        .stream(&WatchMetadataRequest {}, METADATA_WINDOW)
        .await
}

/// Applies the metadata stream to the view; when it breaks, reconnects
/// and follows the new one. Runs until the client is dropped.
async fn follow_metadata(shared: Arc<Shared>, mut stream: ResponseStream<MetadataUpdate>) {
    loop {
        loop {
            let item = tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                item = stream.next() => item,
            };
            match item {
                Some(Ok(update)) => shared.metadata.send_modify(|view| view.apply(update)),
                Some(Err(error)) => {
                    info!(sc = %shared.sc_addr, %error, "metadata stream broke; reconnecting");
                    break;
                }
                None => {
                    info!(sc = %shared.sc_addr, "metadata stream ended; reconnecting");
                    break;
                }
            }
        }
        drop(stream);
        stream = match reconnect(&shared).await {
            Some(stream) => stream,
            None => return,
        };
    }
}

/// Connects to the SC again and opens a new metadata stream, waiting
/// before each attempt as [`Backoff::reconnect`] says. `None` once the
/// client is dropped.
async fn reconnect(shared: &Shared) -> Option<ResponseStream<MetadataUpdate>> {
    let mut backoff = Backoff::reconnect();
    loop {
        let delay = backoff.next_delay();
        tokio::select! {
            _ = shared.shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        let attempt = async {
            let connection = Connection::connect(&shared.sc_addr, shared.transport.clone())
                .await
                .map_err(|error| ClientError::from_sc(&shared.sc_addr, error))?;
            let stream = open_watch(&connection)
                .await
                .map_err(|error| ClientError::from_sc(&shared.sc_addr, error))?;
            Ok::<_, ClientError>((connection, stream))
        };
        match attempt.await {
            Ok((connection, stream)) => {
                info!(sc = %shared.sc_addr, "reconnected to the SC");
                *shared.sc.lock().expect("sc connection lock") = Some(connection);
                return Some(stream);
            }
            Err(error) => {
                debug!(sc = %shared.sc_addr, %error, next_delay = ?backoff.peek(), "SC reconnection failed");
            }
        }
    }
}

/// Cluster administration through the SC.
#[derive(Debug, Clone)]
pub struct Admin {
    pub(crate) client: RunnelClient,
}

impl Admin {
    pub async fn create_topic(&self, spec: TopicSpec) -> Result<(), ClientError> {
        self.client.call_sc(&CreateTopicRequest { spec }).await
    }

    pub async fn delete_topic(&self, name: &TopicName) -> Result<(), ClientError> {
        let request = DeleteTopicRequest { name: name.clone() };
        self.client.call_sc(&request).await
    }

    /// The named topics, or every topic when `names` is empty.
    pub async fn list_topics(&self, names: Vec<TopicName>) -> Result<Vec<Topic>, ClientError> {
        self.client.call_sc(&ListTopicsRequest { names }).await
    }

    /// The partitions of `topic`, or of every topic.
    pub async fn list_partitions(
        &self,
        topic: Option<&TopicName>,
    ) -> Result<Vec<Partition>, ClientError> {
        let request = ListPartitionsRequest {
            topic: topic.cloned(),
        };
        self.client.call_sc(&request).await
    }

    pub async fn list_spus(&self) -> Result<Vec<Spu>, ClientError> {
        self.client.call_sc(&ListSpusRequest {}).await
    }

    pub async fn register_spu(&self, spec: SpuSpec) -> Result<(), ClientError> {
        self.client.call_sc(&RegisterSpuRequest { spec }).await
    }

    pub async fn unregister_spu(&self, id: SpuId) -> Result<(), ClientError> {
        self.client.call_sc(&UnregisterSpuRequest { id }).await
    }

    /// A producer id no one else in the cluster has, at epoch 0, for an
    /// idempotent producer.
    pub async fn init_producer_id(&self) -> Result<ProducerIdentity, ClientError> {
        self.client.call_sc(&InitProducerIdRequest {}).await
    }

    /// Moves leadership back to the preferred replica of every partition,
    /// of `topic`'s partitions, or of one of them (`partition` needs
    /// `topic`), where it is online and in sync. One result per
    /// partition; a partition left as it was says why.
    pub async fn elect_preferred(
        &self,
        topic: Option<&TopicName>,
        partition: Option<PartitionId>,
    ) -> Result<Vec<ElectionResult>, ClientError> {
        let request = ElectPreferredRequest {
            topic: topic.cloned(),
            partition,
        };
        self.client.call_sc(&request).await
    }
}
