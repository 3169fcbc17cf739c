//! The SC's two listeners: which api each serves, request decoding, and
//! the long-lived streams (metadata watches, SPU sessions).
//!
//! The public listener serves clients (administration, metadata watches,
//! producer ids); the private one serves SPUs (connect, heartbeat, ISR
//! changes). Each refuses the other's apis, so a client cannot pose as an
//! SPU by reaching the wrong port.

use std::sync::Arc;

use runnel_api::{
    AlterIsrRequest, ApiError, ApiKey, ApiVersionsRequest, CreateTopicRequest, DeleteTopicRequest,
    ElectPreferredRequest, ErrorCode, InitProducerIdRequest, ListPartitionsRequest,
    ListSpusRequest, ListTopicsRequest, Listener, RegisterSpuRequest, Request, SpuConnectRequest,
    SpuHeartbeatRequest, UnregisterSpuRequest, WatchMetadataRequest,
};
use runnel_metadata::MetadataUpdate;
use runnel_transport::{Handler, IncomingRequest, Responder, StreamSender};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::controller::{Controller, Session, shutting_down};

/// Serves one of the SC's listeners.
#[derive(Debug)]
pub struct Service {
    /// The apis this listener answers: its own and the `Any` ones.
    served: [Listener; 2],
    /// Names the listener in refusals.
    name: &'static str,
    controller: Arc<Controller>,
    shutdown: CancellationToken,
}

impl Service {
    /// Serves `listener`, which is [`Listener::ScPublic`] or
    /// [`Listener::ScPrivate`].
    pub fn new(
        listener: Listener,
        controller: Arc<Controller>,
        shutdown: CancellationToken,
    ) -> Service {
        let name = match listener {
            Listener::ScPrivate => "the SC's private listener",
            _ => "the SC's public listener",
        };
        Service {
            served: [Listener::Any, listener],
            name,
            controller,
            shutdown,
        }
    }

    /// Sends a snapshot, then every change, until the watcher cancels or
    /// the SC shuts down. A watcher that falls further behind than the
    /// change feed holds gets a new snapshot.
    async fn watch_metadata(&self, mut stream: StreamSender) {
        let (snapshot, mut changes) = self.controller.watch().await;
        let mut next: MetadataUpdate = snapshot;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    stream.end(Err(shutting_down())).await;
                    return;
                }
                sent = stream.send(&next) => {
                    if sent.is_err() {
                        return;
                    }
                }
            }
            next = tokio::select! {
                _ = self.shutdown.cancelled() => {
                    stream.end(Err(shutting_down())).await;
                    return;
                }
                _ = stream.cancelled() => return,
                received = changes.recv() => match received {
                    Ok(delta) => MetadataUpdate::Delta {
                        version: delta.version,
                        changes: delta.changes.clone(),
                    },
                    Err(RecvError::Lagged(missed)) => {
                        debug!(missed, "metadata watcher fell behind; sending a new snapshot");
                        let (snapshot, fresh) = self.controller.watch().await;
                        changes = fresh;
                        snapshot
                    }
                    Err(RecvError::Closed) => return,
                },
            };
        }
    }

    /// Serves an SPU's session: its assignments, then each change to them,
    /// until the SPU goes away or the SC ends the session.
    async fn spu_session(&self, session: Arc<Session>, mut stream: StreamSender) {
        // `None`: the SC ended the session (replaced, timed out, shutting
        // down) and the SPU is told why.
        let closed_by_spu = 'serve: loop {
            let updates = tokio::select! {
                _ = session.ended() => break 'serve None,
                _ = stream.cancelled() => break 'serve Some("its connection closed"),
                updates = self.controller.next_assignments(&session) => updates,
            };
            for update in &updates {
                tokio::select! {
                    _ = session.ended() => break 'serve None,
                    sent = stream.send(update) => {
                        if sent.is_err() {
                            break 'serve Some("its connection closed");
                        }
                    }
                }
            }
        };
        let why = closed_by_spu.unwrap_or("the SC ended its session");
        self.controller.disconnect(&session, why).await;
        if closed_by_spu.is_none() {
            stream.end(Err(session.end_reason())).await;
        }
    }
}

impl Handler for Service {
    async fn handle(&self, request: IncomingRequest, responder: Responder) {
        let served = runnel_api::check_served(
            request.header.api_key,
            request.header.api_version,
            &self.served,
            self.name,
        );
        let key = match served {
            Ok(key) => key,
            Err(error) => {
                info!(peer = %request.peer, api_key = request.header.api_key, %error, "request refused");
                return refuse(request.header.api_key, responder, error).await;
            }
        };
        let controller = &self.controller;
        match key {
            ApiKey::ApiVersions => {
                let reply = decoded::<ApiVersionsRequest>(&request)
                    .map(|_| runnel_api::api_versions(&self.served));
                reply_to::<ApiVersionsRequest>(responder, &reply).await;
            }
            ApiKey::CreateTopic => {
                let reply = async {
                    let request = decoded::<CreateTopicRequest>(&request)?;
                    controller.create_topic(request.spec).await
                };
                reply_to::<CreateTopicRequest>(responder, &reply.await).await;
            }
            ApiKey::DeleteTopic => {
                let reply = async {
                    let request = decoded::<DeleteTopicRequest>(&request)?;
                    controller.delete_topic(request.name).await
                };
                reply_to::<DeleteTopicRequest>(responder, &reply.await).await;
            }
            ApiKey::ListTopics => {
                let reply = async {
                    let request = decoded::<ListTopicsRequest>(&request)?;
                    controller.list_topics(request.names).await
                };
                reply_to::<ListTopicsRequest>(responder, &reply.await).await;
            }
            ApiKey::ListPartitions => {
                let reply = async {
                    let request = decoded::<ListPartitionsRequest>(&request)?;
                    controller.list_partitions(request.topic).await
                };
                reply_to::<ListPartitionsRequest>(responder, &reply.await).await;
            }
            ApiKey::ListSpus => {
                let reply = async {
                    decoded::<ListSpusRequest>(&request)?;
                    Ok(controller.list_spus().await)
                };
                reply_to::<ListSpusRequest>(responder, &reply.await).await;
            }
            ApiKey::RegisterSpu => {
                let reply = async {
                    let request = decoded::<RegisterSpuRequest>(&request)?;
                    controller.register_spu(request.spec).await
                };
                reply_to::<RegisterSpuRequest>(responder, &reply.await).await;
            }
            ApiKey::UnregisterSpu => {
                let reply = async {
                    let request = decoded::<UnregisterSpuRequest>(&request)?;
                    controller.unregister_spu(request.id).await
                };
                reply_to::<UnregisterSpuRequest>(responder, &reply.await).await;
            }
            ApiKey::WatchMetadata => {
                let stream = responder.into_stream();
                match decoded::<WatchMetadataRequest>(&request) {
                    Ok(WatchMetadataRequest {}) => self.watch_metadata(stream).await,
                    Err(error) => stream.end(Err(error)).await,
                }
            }
            ApiKey::SpuConnect => {
                let stream = responder.into_stream();
                let session = async {
                    let request = decoded::<SpuConnectRequest>(&request)?;
                    controller.connect_spu(request.spec).await
                };
                match session.await {
                    Ok(session) => self.spu_session(session, stream).await,
                    Err(error) => stream.end(Err(error)).await,
                }
            }
            ApiKey::SpuHeartbeat => {
                let reply = async {
                    let request = decoded::<SpuHeartbeatRequest>(&request)?;
                    controller.heartbeat(request.id, request.replicas).await
                };
                reply_to::<SpuHeartbeatRequest>(responder, &reply.await).await;
            }
            ApiKey::InitProducerId => {
                let reply = async {
                    decoded::<InitProducerIdRequest>(&request)?;
                    controller.init_producer_id().await
                };
                reply_to::<InitProducerIdRequest>(responder, &reply.await).await;
            }
            ApiKey::ElectPreferred => {
                let reply = async {
                    let request = decoded::<ElectPreferredRequest>(&request)?;
                    controller
                        .elect_preferred(request.topic, request.partition)
                        .await
                };
                reply_to::<ElectPreferredRequest>(responder, &reply.await).await;
            }
            ApiKey::AlterIsr => {
                let reply = async {
                    let request = decoded::<AlterIsrRequest>(&request)?;
                    controller.alter_isr(request).await
                };
                reply_to::<AlterIsrRequest>(responder, &reply.await).await;
            }
            ApiKey::Produce
            | ApiKey::StreamFetch
            | ApiKey::ListOffsets
            | ApiKey::ReplicaSync
            | ApiKey::ReplicaPositions
            | ApiKey::FetchEpochEnd => {
                // `check_served` refuses these already; answering keeps it
                // so if that ever changes.
                let error = ApiError::new(
                    ErrorCode::UNSUPPORTED_API,
                    format!("{key:?} is served by SPUs, not the SC"),
                );
                refuse(request.header.api_key, responder, error).await;
            }
        }
    }
}

/// Answers a refused request; a refusal of a streaming api ends the
/// stream, so the requester sees the error where it waits for items.
async fn refuse(api_key: u16, responder: Responder, error: ApiError) {
    let streaming = ApiKey::from_u16(api_key).is_some_and(ApiKey::is_streaming);
    if streaming {
        responder.into_stream().end(Err(error)).await;
    } else {
        responder.reply(&Err::<(), ApiError>(error)).await;
    }
}

/// Replies with exactly the response type of `R`, so a reply always
/// decodes as what the requester expects.
async fn reply_to<R: Request>(responder: Responder, reply: &R::Response) {
    responder.reply(reply).await;
}

fn decoded<R: Request>(request: &IncomingRequest) -> Result<R, ApiError> {
    request.decode::<R>().map_err(|error| {
        ApiError::new(
            ErrorCode::MALFORMED_REQUEST,
            format!(
                "cannot decode the {:?} request: {error}; are client and SC the same version?",
                R::API_KEY
            ),
        )
    })
}
