//! The SC's two listeners: which api each serves, request decoding, and
//! the long-lived streams (metadata watches, SPU sessions).
//!
//! The public listener serves clients (administration and metadata
//! watches); the private one serves SPUs (connect and heartbeat). Each
//! refuses the other's apis, so a client cannot pose as an SPU by
//! reaching the wrong port.

use std::sync::Arc;

use runnel_api::{
    ApiError, ApiKey, ApiVersion, ApiVersionsRequest, ApiVersionsResponse, CreateTopicRequest,
    DeleteTopicRequest, ErrorCode, ListOffsetsRequest, ListPartitionsRequest, ListSpusRequest,
    ListTopicsRequest, Listener, ProduceRequest, RegisterSpuRequest, Request, SpuConnectRequest,
    SpuHeartbeatRequest, StreamFetchRequest, UnregisterSpuRequest, WatchMetadataRequest,
};
use runnel_metadata::MetadataUpdate;
use runnel_transport::{Handler, IncomingRequest, Responder, StreamSender};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::controller::{Controller, Session};

/// Serves one of the SC's listeners.
#[derive(Debug)]
pub struct Service {
    listener: Listener,
    controller: Arc<Controller>,
    shutdown: CancellationToken,
}

impl Service {
    pub fn new(
        listener: Listener,
        controller: Arc<Controller>,
        shutdown: CancellationToken,
    ) -> Service {
        Service {
            listener,
            controller,
            shutdown,
        }
    }

    /// The api of `request` if this listener serves it at the version asked.
    fn served(&self, request: &IncomingRequest) -> Result<ApiKey, ApiError> {
        let code = request.header.api_key;
        let Some(key) = ApiKey::from_u16(code) else {
            return Err(ApiError::new(
                ErrorCode::UNSUPPORTED_API,
                format!("api key {code} is unknown to this SC; is the client newer than the SC?"),
            ));
        };
        if !serves(self.listener, key) {
            let hint = match key.listener() {
                Listener::ScPublic => "send it to the SC's public address",
                Listener::ScPrivate => "only SPUs use it, on the SC's private address",
                Listener::SpuPublic => "send it to the SPU leading the partition",
                Listener::Any => "retry it on any listener",
            };
            return Err(ApiError::new(
                ErrorCode::UNSUPPORTED_API,
                format!("{key:?} is not served on this listener; {hint}"),
            ));
        }
        let (oldest, newest) = key.versions();
        let version = request.header.api_version;
        if !(oldest..=newest).contains(&version) {
            return Err(ApiError::new(
                ErrorCode::UNSUPPORTED_API,
                format!(
                    "{key:?} version {version} is not supported; this SC speaks versions {oldest} to {newest}"
                ),
            ));
        }
        Ok(key)
    }

    async fn api_versions(
        &self,
        request: &IncomingRequest,
    ) -> <ApiVersionsRequest as Request>::Response {
        decoded::<ApiVersionsRequest>(request)?;
        let versions = ApiKey::ALL
            .iter()
            .filter(|key| serves(self.listener, **key))
            .map(|key| {
                let (min_version, max_version) = key.versions();
                ApiVersion {
                    api_key: *key as u16,
                    min_version,
                    max_version,
                }
            })
            .collect();
        Ok(ApiVersionsResponse { versions })
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
        let key = match self.served(&request) {
            Ok(key) => key,
            Err(error) => {
                info!(peer = %request.peer, api_key = request.header.api_key, %error, "request refused");
                return refuse(request.header.api_key, responder, error).await;
            }
        };
        let controller = &self.controller;
        match key {
            ApiKey::ApiVersions => {
                let reply = self.api_versions(&request).await;
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
            ApiKey::Produce | ApiKey::StreamFetch | ApiKey::ListOffsets => {
                // `served` refuses these already; answering keeps it so if
                // that ever changes.
                let error = ApiError::new(
                    ErrorCode::UNSUPPORTED_API,
                    format!("{key:?} is served by SPUs, not the SC"),
                );
                refuse(request.header.api_key, responder, error).await;
            }
        }
    }
}

/// Whether `listener` serves `key`.
fn serves(listener: Listener, key: ApiKey) -> bool {
    let home = key.listener();
    home == listener || home == Listener::Any
}

/// Whether `key`'s answer is a stream; a refusal of a streaming api ends
/// the stream, so the requester sees the error where it waits for items.
fn streams(key: ApiKey) -> bool {
    match key {
        ApiKey::ApiVersions => ApiVersionsRequest::STREAMING,
        ApiKey::CreateTopic => CreateTopicRequest::STREAMING,
        ApiKey::DeleteTopic => DeleteTopicRequest::STREAMING,
        ApiKey::ListTopics => ListTopicsRequest::STREAMING,
        ApiKey::ListPartitions => ListPartitionsRequest::STREAMING,
        ApiKey::ListSpus => ListSpusRequest::STREAMING,
        ApiKey::RegisterSpu => RegisterSpuRequest::STREAMING,
        ApiKey::UnregisterSpu => UnregisterSpuRequest::STREAMING,
        ApiKey::WatchMetadata => WatchMetadataRequest::STREAMING,
        ApiKey::SpuConnect => SpuConnectRequest::STREAMING,
        ApiKey::SpuHeartbeat => SpuHeartbeatRequest::STREAMING,
        ApiKey::Produce => ProduceRequest::STREAMING,
        ApiKey::StreamFetch => StreamFetchRequest::STREAMING,
        ApiKey::ListOffsets => ListOffsetsRequest::STREAMING,
    }
}

async fn refuse(api_key: u16, responder: Responder, error: ApiError) {
    let streaming = ApiKey::from_u16(api_key).is_some_and(streams);
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

fn shutting_down() -> ApiError {
    ApiError::new(
        ErrorCode::SHUTTING_DOWN,
        "the SC is shutting down; watch again once it is back",
    )
}
