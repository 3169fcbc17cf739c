//! The SC's two listeners: which api each serves, who may call it, request
//! decoding, and the long-lived streams (metadata watches, SPU sessions).
//!
//! The public listener serves clients (administration, metadata watches,
//! producer ids, users and roles); the private one serves SPUs (connect,
//! heartbeat, ISR changes). Each refuses the other's apis, so a client
//! cannot pose as an SPU by reaching the wrong port. With security on,
//! every request is authenticated and authorized first (`access`).

use std::sync::Arc;

use runnel_api::{
    AlterIsrRequest, ApiError, ApiKey, ApiVersionsRequest, ApplyPolicyRequest, CreateTopicRequest,
    DeleteTopicRequest, ElectPreferredRequest, ErrorCode, InitProducerIdRequest,
    ListPartitionsRequest, ListSpusRequest, ListTopicsRequest, Listener, LoginRequest,
    RegisterSpuRequest, Reply, Request, RoleBindRequest, RoleCreateRequest, RoleListRequest,
    SpuConnectRequest, SpuHeartbeatRequest, UnregisterSpuRequest, UserAddRequest,
    UserDeleteRequest, UserListRequest, UserPasswdRequest, UserRevokeRequest, WatchMetadataRequest,
};
use runnel_auth::{Action, Resource};
use runnel_metadata::{AssignmentUpdate, MetadataUpdate, SecurityState};
use runnel_pki::PeerIdentity;
use runnel_transport::{Handler, IncomingRequest, Responder, StreamSender};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::access::{self, Caller};
use crate::controller::{Controller, Session, shutting_down};
use crate::security::Security;

/// Serves one of the SC's listeners.
#[derive(Debug)]
pub struct Service {
    /// The apis this listener answers: its own and the `Any` ones.
    served: [Listener; 2],
    /// Names the listener in refusals.
    name: &'static str,
    controller: Arc<Controller>,
    /// `None` when security is off.
    security: Option<Arc<Security>>,
    shutdown: CancellationToken,
}

/// How an SPU session ended.
enum SessionEnd {
    /// The SPU went away; says how.
    BySpu(&'static str),
    /// The SC ended it (replaced, timed out, shutting down).
    BySc,
    /// The SPU's certificate was revoked, or expired.
    Unauthenticated(ApiError),
}

impl Service {
    /// Serves `listener`, which is [`Listener::ScPublic`] or
    /// [`Listener::ScPrivate`].
    pub fn new(
        listener: Listener,
        controller: Arc<Controller>,
        security: Option<Arc<Security>>,
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
            security,
            shutdown,
        }
    }

    /// Topics, partitions, SPUs and producer ids.
    async fn metadata_api(
        &self,
        key: ApiKey,
        caller: &Caller,
        request: &IncomingRequest,
        responder: Responder,
    ) {
        let controller = &self.controller;
        match key {
            ApiKey::CreateTopic => {
                unary(
                    request,
                    responder,
                    |message: CreateTopicRequest| async move {
                        caller.require(Action::Create, topic(&message.spec.name))?;
                        controller.create_topic(message.spec).await
                    },
                )
                .await
            }
            ApiKey::DeleteTopic => {
                unary(
                    request,
                    responder,
                    |message: DeleteTopicRequest| async move {
                        caller.require(Action::Delete, topic(&message.name))?;
                        controller.delete_topic(message.name).await
                    },
                )
                .await
            }
            ApiKey::ListTopics => {
                unary(
                    request,
                    responder,
                    |message: ListTopicsRequest| async move {
                        // Named topics are checked before they are looked up, so
                        // a refusal does not tell whether the topic exists.
                        for name in &message.names {
                            caller.require(Action::Describe, topic(name))?;
                        }
                        let topics = controller.list_topics(message.names).await?;
                        Ok(caller.visible_topics(topics))
                    },
                )
                .await
            }
            ApiKey::ListPartitions => {
                unary(
                    request,
                    responder,
                    |message: ListPartitionsRequest| async move {
                        if let Some(name) = &message.topic {
                            caller.require(Action::Describe, topic(name))?;
                        }
                        let partitions = controller.list_partitions(message.topic).await?;
                        Ok(caller.visible_partitions(partitions))
                    },
                )
                .await
            }
            ApiKey::ListSpus => {
                unary(request, responder, |ListSpusRequest {}| async move {
                    caller.require(Action::Describe, Resource::Cluster)?;
                    Ok(controller.list_spus().await)
                })
                .await
            }
            ApiKey::RegisterSpu => {
                unary(
                    request,
                    responder,
                    |message: RegisterSpuRequest| async move {
                        caller.require(Action::Admin, Resource::Cluster)?;
                        controller.register_spu(message.spec).await
                    },
                )
                .await
            }
            ApiKey::UnregisterSpu => {
                unary(
                    request,
                    responder,
                    |message: UnregisterSpuRequest| async move {
                        caller.require(Action::Admin, Resource::Cluster)?;
                        controller.unregister_spu(message.id).await
                    },
                )
                .await
            }
            ApiKey::InitProducerId => {
                unary(request, responder, |InitProducerIdRequest {}| async move {
                    caller.require_write_somewhere()?;
                    controller.init_producer_id().await
                })
                .await
            }
            ApiKey::ElectPreferred => {
                unary(
                    request,
                    responder,
                    |message: ElectPreferredRequest| async move {
                        caller.require(Action::Admin, Resource::Cluster)?;
                        controller
                            .elect_preferred(message.topic, message.partition)
                            .await
                    },
                )
                .await
            }
            _ => unreachable!("{key:?} is no metadata api"),
        }
    }

    /// Login, users and roles. All but login need admin on the cluster,
    /// checked before the request is even decoded.
    async fn security_api(
        &self,
        key: ApiKey,
        caller: &Caller,
        request: &IncomingRequest,
        responder: Responder,
    ) {
        let Some(security) = self.security.as_deref() else {
            let error = ApiError::new(
                ErrorCode::SECURITY_DISABLED,
                "security is off on this cluster, so it has no users, roles or logins; start \
                 the cluster with --tls",
            );
            return refuse(request.header.api_key, responder, error).await;
        };
        if key != ApiKey::Login
            && let Err(error) = caller.require(Action::Admin, Resource::Cluster)
        {
            return refuse(request.header.api_key, responder, error).await;
        }
        match key {
            ApiKey::Login => {
                unary(request, responder, |message: LoginRequest| {
                    security.login(message)
                })
                .await
            }
            ApiKey::UserAdd => {
                unary(request, responder, |message: UserAddRequest| {
                    security.user_add(message)
                })
                .await
            }
            ApiKey::UserList => {
                unary(request, responder, |UserListRequest {}| async {
                    Ok(security.user_list().await)
                })
                .await
            }
            ApiKey::UserDelete => {
                unary(request, responder, |message: UserDeleteRequest| {
                    security.user_delete(message.name)
                })
                .await
            }
            ApiKey::UserPasswd => {
                unary(request, responder, |message: UserPasswdRequest| {
                    security.user_passwd(message)
                })
                .await
            }
            ApiKey::UserRevoke => {
                unary(request, responder, |message: UserRevokeRequest| {
                    security.user_revoke(message)
                })
                .await
            }
            ApiKey::RoleCreate => {
                unary(request, responder, |message: RoleCreateRequest| {
                    security.role_create(message)
                })
                .await
            }
            ApiKey::RoleBind => {
                unary(request, responder, |message: RoleBindRequest| {
                    security.role_bind(message)
                })
                .await
            }
            ApiKey::RoleList => {
                unary(request, responder, |RoleListRequest {}| async {
                    Ok(security.role_list().await)
                })
                .await
            }
            ApiKey::ApplyPolicy => {
                unary(request, responder, |message: ApplyPolicyRequest| {
                    security.apply_policy(message.policy)
                })
                .await
            }
            _ => unreachable!("{key:?} is no security api"),
        }
    }

    /// An SPU's heartbeats and ISR changes, each only from that SPU.
    async fn spu_api(
        &self,
        key: ApiKey,
        caller: &Caller,
        request: &IncomingRequest,
        responder: Responder,
    ) {
        let controller = &self.controller;
        match key {
            ApiKey::SpuHeartbeat => {
                unary(
                    request,
                    responder,
                    |message: SpuHeartbeatRequest| async move {
                        caller.require_spu(message.id)?;
                        controller.heartbeat(message.id, message.replicas).await
                    },
                )
                .await
            }
            ApiKey::AlterIsr => {
                unary(request, responder, |message: AlterIsrRequest| async move {
                    caller.require_spu(message.spu)?;
                    controller.alter_isr(message).await
                })
                .await
            }
            _ => unreachable!("{key:?} is no SPU request"),
        }
    }

    async fn open_watch(&self, request: &IncomingRequest, responder: Responder) {
        let stream = responder.into_stream();
        match decoded::<WatchMetadataRequest>(request) {
            Ok(WatchMetadataRequest {}) => {
                self.watch_metadata(request.identity.clone(), stream).await
            }
            Err(error) => stream.end(Err(error)).await,
        }
    }

    /// Sends a snapshot, then every change, until the watcher cancels or
    /// the SC shuts down. A watcher that falls further behind than the
    /// change feed holds gets a new snapshot, and so does one whose
    /// permissions may have changed; one whose certificate is revoked or
    /// expires is ended. It sees only the topics and partitions it may
    /// describe, and no change that is empty once filtered: its version
    /// alone would tell of activity on hidden topics. An item waiting for
    /// the watcher's credit when the permissions may have changed does not
    /// go: the snapshot under the new permissions replaces it, so a
    /// watcher that holds back credit gets nothing its new permissions
    /// hide.
    async fn watch_metadata(&self, identity: Option<Arc<PeerIdentity>>, mut stream: StreamSender) {
        let mut security = self.security.as_ref().map(|security| security.subscribe());
        // Judged from here on against the state just subscribed to, so no
        // change since the request was authenticated goes unnoticed.
        let mut caller = match self.reauthenticate(identity.as_deref(), ApiKey::WatchMetadata) {
            Ok(caller) => caller,
            Err(error) => {
                stream.end(Err(error)).await;
                return;
            }
        };
        let (snapshot, mut changes) = self.controller.watch().await;
        let mut next: MetadataUpdate = snapshot;
        loop {
            let visible = caller.visible_update(next);
            let delivery = if is_empty_delta(&visible) {
                Delivery::Sent
            } else {
                deliver(
                    &mut stream,
                    &visible,
                    self.shutdown.cancelled(),
                    &mut security,
                    identity.as_deref(),
                    || {
                        caller = self.reauthenticate(identity.as_deref(), ApiKey::WatchMetadata)?;
                        // The snapshot that follows shows all of the item
                        // the new permissions do, so the item need not go.
                        Ok(false)
                    },
                )
                .await
            };
            match delivery {
                Delivery::Sent => {}
                // The permissions may have changed while the item waited
                // to go: a snapshot under the new ones replaces it.
                Delivery::Withdrawn => {
                    let (snapshot, fresh) = self.controller.watch().await;
                    changes = fresh;
                    next = snapshot;
                    continue;
                }
                Delivery::Closed => return,
                Delivery::Interrupted => {
                    stream.end(Err(shutting_down())).await;
                    return;
                }
                Delivery::Refused(error) => {
                    stream.end(Err(error)).await;
                    return;
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
                () = recheck_due(&mut security, identity.as_deref()) => {
                    caller = match self.reauthenticate(identity.as_deref(), ApiKey::WatchMetadata) {
                        Ok(caller) => caller,
                        Err(error) => {
                            stream.end(Err(error)).await;
                            return;
                        }
                    };
                    let (snapshot, fresh) = self.controller.watch().await;
                    changes = fresh;
                    snapshot
                }
            };
        }
    }

    /// The caller of a stream, authenticated again with the security
    /// state of now.
    fn reauthenticate(
        &self,
        identity: Option<&PeerIdentity>,
        key: ApiKey,
    ) -> Result<Caller, ApiError> {
        access::authenticate(self.security.as_deref(), identity, key)
    }

    async fn open_session(&self, caller: Caller, request: &IncomingRequest, responder: Responder) {
        let stream = responder.into_stream();
        let session = async {
            let message = decoded::<SpuConnectRequest>(request)?;
            caller.require_spu(message.spec.id)?;
            self.controller.connect_spu(message.spec).await
        };
        match session.await {
            Ok(session) => {
                self.spu_session(session, request.identity.clone(), stream)
                    .await
            }
            Err(error) => stream.end(Err(error)).await,
        }
    }

    /// Serves an SPU's session: its assignments, then each change to them,
    /// and with security on the security state after each snapshot and
    /// whenever it changes, until the SPU goes away, the SC ends the
    /// session, or the SPU's certificate is revoked or expires. An update
    /// waiting for the SPU's credit goes only if the certificate is still
    /// good when it leaves.
    async fn spu_session(
        &self,
        session: Arc<Session>,
        identity: Option<Arc<PeerIdentity>>,
        mut stream: StreamSender,
    ) {
        let mut security = self.security.as_ref().map(|security| security.subscribe());
        // Nothing goes before the first snapshot, which carries the latest
        // security state anyway.
        let mut snapshot_sent = false;
        // The security state changed while an update waited to go: the
        // latest goes next.
        let mut security_stale = false;
        let end = 'serve: {
            // Judged from here on against the state just subscribed to, so
            // no change since the request was authenticated goes unnoticed.
            if let Err(error) = self.reauthenticate(identity.as_deref(), ApiKey::SpuConnect) {
                break 'serve SessionEnd::Unauthenticated(error);
            }
            loop {
                let updates = if std::mem::take(&mut security_stale) {
                    security.as_mut().map(latest_security).into_iter().collect()
                } else {
                    tokio::select! {
                        _ = session.ended() => break 'serve SessionEnd::BySc,
                        _ = stream.cancelled() => break 'serve SessionEnd::BySpu("its connection closed"),
                        updates = self.controller.next_assignments(&session) => {
                            // The first call returns the snapshot.
                            snapshot_sent = true;
                            with_security_after_snapshot(updates, security.as_mut())
                        }
                        () = recheck_due(&mut security, identity.as_deref()), if snapshot_sent => {
                            if let Err(error) = self.reauthenticate(identity.as_deref(), ApiKey::SpuConnect) {
                                break 'serve SessionEnd::Unauthenticated(error);
                            }
                            security.as_mut().map(latest_security).into_iter().collect()
                        }
                    }
                };
                for update in &updates {
                    let delivery = deliver(
                        &mut stream,
                        update,
                        session.ended(),
                        &mut security,
                        identity.as_deref(),
                        || {
                            self.reauthenticate(identity.as_deref(), ApiKey::SpuConnect)?;
                            security_stale = true;
                            // An SPU's updates are not filtered by permissions.
                            Ok(true)
                        },
                    )
                    .await;
                    match delivery {
                        Delivery::Sent => {}
                        Delivery::Closed => {
                            break 'serve SessionEnd::BySpu("its connection closed");
                        }
                        Delivery::Interrupted => break 'serve SessionEnd::BySc,
                        Delivery::Refused(error) => {
                            break 'serve SessionEnd::Unauthenticated(error);
                        }
                        Delivery::Withdrawn => unreachable!("an SPU's updates are never withdrawn"),
                    }
                }
            }
        };
        let why = match &end {
            SessionEnd::BySpu(why) => why,
            SessionEnd::BySc => "the SC ended its session",
            SessionEnd::Unauthenticated(_) => "its certificate was revoked or has expired",
        };
        self.controller.disconnect(&session, why).await;
        match end {
            SessionEnd::BySpu(_) => {}
            SessionEnd::BySc => stream.end(Err(session.end_reason())).await,
            SessionEnd::Unauthenticated(error) => stream.end(Err(error)).await,
        }
    }
}

impl Handler for Service {
    async fn handle(&self, request: IncomingRequest, responder: Responder) {
        let api_key = request.header.api_key;
        let served =
            runnel_api::check_served(api_key, request.header.api_version, &self.served, self.name);
        let key = match served {
            Ok(key) => key,
            Err(error) => {
                info!(peer = %request.peer, api_key, %error, "request refused");
                return refuse(api_key, responder, error).await;
            }
        };
        let authenticated =
            access::authenticate(self.security.as_deref(), request.identity.as_deref(), key);
        let caller = match authenticated {
            Ok(caller) => caller,
            Err(error) => {
                if error.code == ErrorCode::AUTHENTICATION_FAILED {
                    warn!(peer = %request.peer, api = ?key, %error, "request refused");
                } else {
                    info!(peer = %request.peer, api = ?key, %error, "request refused");
                }
                return refuse(api_key, responder, error).await;
            }
        };
        if let Err(error) = caller.require_api(key) {
            return refuse(api_key, responder, error).await;
        }
        match key {
            ApiKey::ApiVersions => {
                unary(&request, responder, |ApiVersionsRequest {}| async {
                    Ok(runnel_api::api_versions(&self.served))
                })
                .await
            }
            ApiKey::CreateTopic
            | ApiKey::DeleteTopic
            | ApiKey::ListTopics
            | ApiKey::ListPartitions
            | ApiKey::ListSpus
            | ApiKey::RegisterSpu
            | ApiKey::UnregisterSpu
            | ApiKey::InitProducerId
            | ApiKey::ElectPreferred => self.metadata_api(key, &caller, &request, responder).await,
            ApiKey::WatchMetadata => self.open_watch(&request, responder).await,
            ApiKey::Login
            | ApiKey::UserAdd
            | ApiKey::UserList
            | ApiKey::UserDelete
            | ApiKey::UserPasswd
            | ApiKey::UserRevoke
            | ApiKey::RoleCreate
            | ApiKey::RoleBind
            | ApiKey::RoleList
            | ApiKey::ApplyPolicy => self.security_api(key, &caller, &request, responder).await,
            ApiKey::SpuConnect => self.open_session(caller, &request, responder).await,
            ApiKey::SpuHeartbeat | ApiKey::AlterIsr => {
                self.spu_api(key, &caller, &request, responder).await
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
                refuse(api_key, responder, error).await;
            }
        }
    }
}

/// Decodes a unary request of type `R`, serves it, and replies with
/// exactly `R`'s response type, so a reply always decodes as what the
/// requester expects.
async fn unary<R, T, F>(request: &IncomingRequest, responder: Responder, serve: impl FnOnce(R) -> F)
where
    R: Request<Response = Reply<T>>,
    T: Serialize,
    F: Future<Output = Reply<T>>,
{
    let reply = match decoded::<R>(request) {
        Ok(message) => serve(message).await,
        Err(error) => Err(error),
    };
    responder.reply(&reply).await;
}

/// Resolves when the security state changes; never without security.
async fn security_changed(security: &mut Option<watch::Receiver<Arc<SecurityState>>>) {
    let Some(receiver) = security else {
        return std::future::pending().await;
    };
    if receiver.changed().await.is_err() {
        std::future::pending().await
    }
}

/// Resolves when a stream's caller must be authenticated again: the
/// security state changed, or the certificate expired.
async fn recheck_due(
    security: &mut Option<watch::Receiver<Arc<SecurityState>>>,
    identity: Option<&PeerIdentity>,
) {
    tokio::select! {
        () = security_changed(security) => {}
        () = access::expiry(identity) => {}
    }
}

/// How sending one stream item ended.
enum Delivery {
    Sent,
    /// The requester cancelled, or its connection closed.
    Closed,
    /// What the item waited on besides credit happened first (shutdown,
    /// the session's end).
    Interrupted,
    /// The caller failed authentication while the item waited.
    Refused(ApiError),
    /// The caller was judged again and the item is to be replaced by a
    /// fresh one, so it did not go.
    Withdrawn,
}

/// Sends `item` once the requester grants credit for it, unless `stop`
/// resolves first. A requester can hold credit back as long as it likes,
/// so whenever the security state changes or the certificate expires
/// meanwhile, `judge` authenticates the caller again and says whether the
/// item may still go; it is the last look before the item leaves.
async fn deliver<T: Serialize>(
    stream: &mut StreamSender,
    item: &T,
    stop: impl Future<Output = ()>,
    security: &mut Option<watch::Receiver<Arc<SecurityState>>>,
    identity: Option<&PeerIdentity>,
    mut judge: impl FnMut() -> Result<bool, ApiError>,
) -> Delivery {
    let send = stream.send(item);
    tokio::pin!(send, stop);
    // Ends: each turn either returns or consumes a security change or the
    // certificate's expiry, after which `judge` refuses it.
    loop {
        tokio::select! {
            // A due re-check goes before the send, so an item never leaves
            // judged by a state that is already stale.
            biased;
            () = &mut stop => return Delivery::Interrupted,
            () = recheck_due(security, identity) => match judge() {
                Ok(true) => {}
                Ok(false) => return Delivery::Withdrawn,
                Err(error) => return Delivery::Refused(error),
            },
            sent = &mut send => {
                return match sent {
                    Ok(()) => Delivery::Sent,
                    Err(_) => Delivery::Closed,
                };
            }
        }
    }
}

/// Whether `update` is a change with nothing in it.
fn is_empty_delta(update: &MetadataUpdate) -> bool {
    matches!(update, MetadataUpdate::Delta { changes, .. } if changes.is_empty())
}

/// The latest security state, as an SPU receives it. Not marked as seen:
/// only [`recheck_due`] consumes a change, and it re-authenticates the SPU
/// first, so a revocation that arrives with a snapshot is still judged
/// (the SPU may get the same state twice).
fn latest_security(receiver: &mut watch::Receiver<Arc<SecurityState>>) -> AssignmentUpdate {
    AssignmentUpdate::Security(SecurityState::clone(&receiver.borrow()))
}

/// `updates`, and the security state right after a snapshot among them:
/// an SPU starts over from a snapshot, security included.
fn with_security_after_snapshot(
    mut updates: Vec<AssignmentUpdate>,
    security: Option<&mut watch::Receiver<Arc<SecurityState>>>,
) -> Vec<AssignmentUpdate> {
    let snapshot = updates
        .iter()
        .rposition(|update| matches!(update, AssignmentUpdate::Snapshot { .. }));
    if let (Some(at), Some(receiver)) = (snapshot, security) {
        updates.insert(at + 1, latest_security(receiver));
    }
    updates
}

fn topic(name: &runnel_types::TopicName) -> Resource {
    Resource::Topic(name.to_string())
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
