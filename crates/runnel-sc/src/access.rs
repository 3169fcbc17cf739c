//! Who sent a request, and whether they may: the SC's half of the security
//! model (the SPUs hold the other half).
//!
//! With security on, every request is authenticated anew: a certificate
//! revoked, or expired, after its connection opened fails the next
//! request. Then:
//! superusers may do everything; node identities (`sc`, `spu:<id>`) may
//! use the private apis only, and an SPU only for itself; anyone else is
//! judged by the policy, deny by default. A connection without a
//! certificate may only ask for api versions and log in. With security
//! off there are no identities and nothing is checked.

use std::fmt;
use std::sync::Arc;

use runnel_api::{ApiError, ApiKey, ErrorCode, Listener};
use runnel_auth::{Action, Resource};
use runnel_metadata::{Change, MetadataUpdate, Object, ObjectKey, Partition, SecurityState, Topic};
use runnel_pki::PeerIdentity;
use runnel_transport::certificate_required;
use runnel_types::{SpuId, TopicName};
use tracing::warn;

use crate::security::{Security, now_unix};

/// The sender of a request, as far as authorization goes.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Security is off: every request is served.
    Unchecked,
    /// A connection without a client certificate.
    Anonymous,
    /// One of the SC's superusers.
    Superuser,
    /// A cluster node: `sc` or `spu:<id>`.
    Node(String),
    /// Anyone else, with the security state their requests are judged by.
    Principal {
        name: String,
        state: Arc<SecurityState>,
    },
}

/// Who sent a request for `key` on a connection with `identity`; refuses a
/// revoked or expired certificate, and anything but api versions and login
/// without one.
pub fn authenticate(
    security: Option<&Security>,
    identity: Option<&PeerIdentity>,
    key: ApiKey,
) -> Result<Caller, ApiError> {
    let Some(security) = security else {
        return Ok(Caller::Unchecked);
    };
    if identity.is_none() && matches!(key, ApiKey::ApiVersions | ApiKey::Login) {
        return Ok(Caller::Anonymous);
    }
    let identity = security.revocations().authenticate(identity, now_unix())?;
    Ok(Caller::identify(&identity.principal, security.current()))
}

/// Resolves once `identity`'s certificate has expired: streams that
/// outlive it end then. Never resolves without a certificate.
pub async fn expiry(identity: Option<&PeerIdentity>) {
    match identity.and_then(runnel_transport::expiry_deadline) {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Caller {
    /// The caller `principal` is under `state`.
    pub fn identify(principal: &str, state: Arc<SecurityState>) -> Caller {
        if state.is_superuser(principal) {
            Caller::Superuser
        } else if runnel_auth::is_node_identity(principal) {
            Caller::Node(principal.to_string())
        } else {
            Caller::Principal {
                name: principal.to_string(),
                state,
            }
        }
    }

    /// Allows `action` on `resource`, or answers why not. A denial is
    /// logged.
    pub fn require(&self, action: Action, resource: Resource) -> Result<(), ApiError> {
        match self {
            Caller::Unchecked | Caller::Superuser => Ok(()),
            Caller::Anonymous => Err(certificate_required()),
            Caller::Node(name) => Err(node_on_public_api(name, action.as_str(), &resource)),
            Caller::Principal { name, state } => state
                .policy
                .check(name, action, &resource)
                .map_err(|denial| denied(name, action.as_str(), &resource, denial.to_string())),
        }
    }

    /// Whether `action` on `resource` is allowed, without logging: for
    /// leaving out what the caller may not see.
    pub fn may(&self, action: Action, resource: &Resource) -> bool {
        match self {
            Caller::Unchecked | Caller::Superuser => true,
            Caller::Anonymous | Caller::Node(_) => false,
            Caller::Principal { name, state } => state.policy.check(name, action, resource).is_ok(),
        }
    }

    /// Allows producer ids to a caller that may write some topic: each
    /// produce is still checked against its own topic.
    pub fn require_write_somewhere(&self) -> Result<(), ApiError> {
        match self {
            Caller::Principal { name, state } => {
                if state.policy.allows_on_any_topic(name, Action::Write) {
                    return Ok(());
                }
                Err(denied(
                    name,
                    Action::Write.as_str(),
                    &"any topic",
                    format!("permission denied: {name} may not write any topic"),
                ))
            }
            _ => self.require(Action::Write, Resource::Topic("*".to_string())),
        }
    }

    /// Keeps node identities to the private apis (and api versions).
    pub fn require_api(&self, key: ApiKey) -> Result<(), ApiError> {
        match self {
            Caller::Node(name) if key.listener() == Listener::ScPublic => {
                Err(node_on_public_api(name, "use", &format!("{key:?}")))
            }
            _ => Ok(()),
        }
    }

    /// Allows acting as SPU `spu` only to that SPU's node identity.
    pub fn require_spu(&self, spu: SpuId) -> Result<(), ApiError> {
        let name = match self {
            Caller::Unchecked | Caller::Superuser => return Ok(()),
            Caller::Anonymous => return Err(certificate_required()),
            Caller::Node(name) if *name == runnel_auth::spu_principal(spu.0) => return Ok(()),
            Caller::Node(name) | Caller::Principal { name, .. } => name,
        };
        Err(denied(
            name,
            "act as",
            &format!("SPU {spu}"),
            format!("permission denied: {name} may not act as SPU {spu}"),
        ))
    }

    pub fn may_describe(&self, topic: &TopicName) -> bool {
        self.may(Action::Describe, &Resource::Topic(topic.to_string()))
    }

    /// `topics` without those the caller may not describe.
    pub fn visible_topics(&self, mut topics: Vec<Topic>) -> Vec<Topic> {
        topics.retain(|topic| self.may_describe(&topic.spec.name));
        topics
    }

    /// `partitions` without those of topics the caller may not describe.
    pub fn visible_partitions(&self, mut partitions: Vec<Partition>) -> Vec<Partition> {
        partitions.retain(|partition| self.may_describe(&partition.spec.key.topic));
        partitions
    }

    /// `update` without the topics and partitions the caller may not
    /// describe, deletions included: a deleted name is a name too.
    pub fn visible_update(&self, update: MetadataUpdate) -> MetadataUpdate {
        if matches!(self, Caller::Unchecked | Caller::Superuser) {
            return update;
        }
        match update {
            MetadataUpdate::Snapshot { version, objects } => MetadataUpdate::Snapshot {
                version,
                objects: objects
                    .into_iter()
                    .filter(|object| self.may_see_object(object))
                    .collect(),
            },
            MetadataUpdate::Delta { version, changes } => MetadataUpdate::Delta {
                version,
                changes: changes
                    .into_iter()
                    .filter(|change| self.may_see_change(change))
                    .collect(),
            },
        }
    }

    fn may_see_object(&self, object: &Object) -> bool {
        match object {
            Object::Topic(topic) => self.may_describe(&topic.spec.name),
            Object::Partition(partition) => self.may_describe(&partition.spec.key.topic),
            Object::Spu(_) => true,
        }
    }

    fn may_see_change(&self, change: &Change) -> bool {
        match change {
            Change::Upsert(object) => self.may_see_object(object),
            Change::Delete(ObjectKey::Topic(name)) => self.may_describe(name),
            Change::Delete(ObjectKey::Partition(key)) => self.may_describe(&key.topic),
            Change::Delete(ObjectKey::Spu(_)) => true,
        }
    }
}

/// A node identity asking for a client's api.
fn node_on_public_api(name: &str, action: &str, resource: &dyn fmt::Display) -> ApiError {
    denied(
        name,
        action,
        resource,
        format!(
            "permission denied: {name} is a cluster node identity, which may use only the \
             private apis"
        ),
    )
}

/// A refusal, logged with who asked to do what to which resource.
fn denied(principal: &str, action: &str, resource: &dyn fmt::Display, message: String) -> ApiError {
    warn!(%principal, %action, %resource, "permission denied");
    ApiError::new(ErrorCode::PERMISSION_DENIED, message)
}
