//! Who may do what on this SPU, when it runs with TLS: the latest
//! security state the SC sent (superusers, policy, revoked serials), and
//! the decisions both listeners ask of it, request by request.
//!
//! Deny by default: until the SC's first security state arrives, every
//! request is refused, from clients and peer SPUs alike. Checks run
//! before any work, so a refused request appends nothing and opens no
//! stream.
//!
//! A certificate is checked on every request (revoked? expired?), since a
//! connection outlives both events. A stream is a request that never
//! ends, so it holds a [`Grant`]: its permission, checked again whenever
//! the security state changes and when the certificate expires, before
//! the stream sends anything more.

use std::sync::{Arc, RwLock};

use runnel_api::{ApiError, ErrorCode};
use runnel_auth::{Action, Resource};
use runnel_metadata::{PartitionKey, SecurityState};
use runnel_pki::PeerIdentity;
use runnel_transport::{Revocations, expiry_deadline};
use runnel_types::{SpuId, TopicName};
use tokio::sync::watch;
use tracing::warn;

use crate::now_ms;

#[derive(Debug)]
pub(crate) struct Authorizer {
    /// This SPU, named in refusals.
    spu: SpuId,
    /// Whether the SPU runs with TLS; without it nothing is checked
    /// (there are no identities to check).
    enabled: bool,
    /// Shared with the listeners' certificate verifiers: a revoked
    /// certificate is refused at the handshake of new connections, and
    /// here on the next request of connections made before.
    revocations: Revocations,
    /// `None` until the SC sends the first state.
    state: RwLock<Option<Arc<SecurityState>>>,
    /// Counts the states taken: open streams wait on it to authorize
    /// again, since a change may withdraw what they were granted.
    changes: watch::Sender<u64>,
}

/// What a stream needs for as long as it is open.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Permission<'a> {
    /// A client's `action` on a topic.
    Topic(Action, &'a TopicName),
    /// A peer replicating as this follower.
    Follower(SpuId),
}

/// An open stream's authorization. The stream races [`Grant::revoked`]
/// against each send and each wait, and ends with its refusal, so a
/// revocation, a narrower policy or an expiry stops it before its next
/// item and even while it has nothing to send.
#[derive(Debug)]
pub(crate) struct Grant<'a> {
    authorizer: &'a Authorizer,
    identity: Option<&'a PeerIdentity>,
    permission: Permission<'a>,
    /// Marks the security state the last check saw.
    changes: watch::Receiver<u64>,
    /// When the certificate starts to be refused, computed once with the
    /// grant: `revoked` runs ahead of every item a stream sends.
    expires: Option<tokio::time::Instant>,
}

impl Authorizer {
    pub fn new(spu: SpuId, enabled: bool) -> Authorizer {
        Authorizer {
            spu,
            enabled,
            revocations: Revocations::default(),
            state: RwLock::new(None),
            changes: watch::Sender::new(0),
        }
    }

    /// The revoked serials, for the listeners' certificate verifiers.
    pub fn revocations(&self) -> Revocations {
        self.revocations.clone()
    }

    /// Takes the SC's latest security state, whole.
    pub fn update(&self, state: SecurityState) {
        self.revocations.replace(state.revoked.iter().cloned());
        *self.state.write().expect("security state lock") = Some(Arc::new(state));
        // After the state is in place: a stream woken by the count reads
        // a state at least this new.
        self.changes
            .send_modify(|changes| *changes = changes.wrapping_add(1));
    }

    /// Authorizes a stream at its opening, and keeps the permission
    /// for it to check again while it is open.
    pub fn grant<'a>(
        &'a self,
        identity: Option<&'a PeerIdentity>,
        permission: Permission<'a>,
    ) -> Result<Grant<'a>, ApiError> {
        let mut grant = Grant {
            authorizer: self,
            identity,
            permission,
            changes: self.changes.subscribe(),
            expires: identity.and_then(expiry_deadline),
        };
        grant.check()?;
        Ok(grant)
    }

    fn authorize(
        &self,
        identity: Option<&PeerIdentity>,
        permission: Permission<'_>,
    ) -> Result<(), ApiError> {
        match permission {
            Permission::Topic(action, topic) => self.authorize_topic(identity, action, topic),
            Permission::Follower(follower) => self.authorize_follower(identity, follower),
        }
    }

    /// Whether the client behind `identity` may do `action` on `topic`.
    pub fn authorize_topic(
        &self,
        identity: Option<&PeerIdentity>,
        action: Action,
        topic: &TopicName,
    ) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let identity = self.authenticate(identity)?;
        let Some(state) = self.state() else {
            return Err(self.no_policy_yet(&identity.principal));
        };
        let resource = Resource::Topic(topic.to_string());
        state.decide(&identity.principal, action, &resource).map_err(|denied| {
            warn!(principal = %denied.principal, action = %denied.action, resource = %denied.resource, "request denied");
            ApiError::new(ErrorCode::PERMISSION_DENIED, denied.to_string())
        })
    }

    /// Whether the peer behind `identity` may speak as follower
    /// `follower`: only SPU `follower` itself may.
    pub fn authorize_follower(
        &self,
        identity: Option<&PeerIdentity>,
        follower: SpuId,
    ) -> Result<(), ApiError> {
        let Some(asker) = self.requesting_spu(identity)? else {
            return Ok(());
        };
        if asker == follower {
            return Ok(());
        }
        warn!(principal = %principal_of(asker), %follower, "replication request denied: an SPU spoke for another");
        Err(ApiError::new(
            ErrorCode::PERMISSION_DENIED,
            format!(
                "permission denied: {} may not act as follower {follower} on SPU {}; an SPU replicates only as itself",
                principal_of(asker),
                self.spu
            ),
        ))
    }

    /// Whether `asker`, from [`Authorizer::requesting_spu`], may ask
    /// about partition `key`, held by `replicas`: only another SPU holding
    /// it may.
    pub fn authorize_replica(
        &self,
        asker: Option<SpuId>,
        key: &PartitionKey,
        replicas: &[SpuId],
    ) -> Result<(), ApiError> {
        let Some(asker) = asker else {
            return Ok(());
        };
        if asker != self.spu && replicas.contains(&asker) {
            return Ok(());
        }
        warn!(principal = %principal_of(asker), partition = %key, "replication request denied: not a follower of the partition");
        Err(ApiError::new(
            ErrorCode::PERMISSION_DENIED,
            format!(
                "permission denied: {} is not a follower of partition {key} (replicas {replicas:?}) on SPU {}; only its followers may ask about it",
                principal_of(asker),
                self.spu
            ),
        ))
    }

    /// The SPU behind `identity` on the private listener; `None` when
    /// security is off. Until the SC's first state arrives no peer is
    /// trusted: this SPU cannot know yet whether its certificate was
    /// revoked.
    pub fn requesting_spu(
        &self,
        identity: Option<&PeerIdentity>,
    ) -> Result<Option<SpuId>, ApiError> {
        if !self.enabled {
            return Ok(None);
        }
        let identity = self.authenticate(identity)?;
        if self.state().is_none() {
            return Err(self.no_policy_yet(&identity.principal));
        }
        match spu_of(&identity.principal) {
            Some(spu) => Ok(Some(spu)),
            None => {
                warn!(principal = %identity.principal, "replication request denied: not an SPU");
                Err(ApiError::new(
                    ErrorCode::PERMISSION_DENIED,
                    format!(
                        "permission denied: {} may not use the replication apis of SPU {}; only SPUs (spu:<id>) replicate",
                        identity.principal, self.spu
                    ),
                ))
            }
        }
    }

    /// The identity of a connection whose certificate is still good: not
    /// revoked, not expired. The handshake checked both, but a connection
    /// outlives them.
    fn authenticate<'a>(
        &self,
        identity: Option<&'a PeerIdentity>,
    ) -> Result<&'a PeerIdentity, ApiError> {
        self.revocations
            .authenticate(identity, now_ms().div_euclid(1000))
    }

    fn state(&self) -> Option<Arc<SecurityState>> {
        self.state.read().expect("security state lock").clone()
    }

    fn no_policy_yet(&self, principal: &str) -> ApiError {
        warn!(%principal, "request denied: no security state from the SC yet");
        ApiError::new(
            ErrorCode::PERMISSION_DENIED,
            format!(
                "permission denied: SPU {} has not received the cluster's authorization policy from the SC yet, and refuses every request until it does; retry once the SPU is connected to the SC",
                self.spu
            ),
        )
    }
}

/// The SPU a principal names, if it is `spu:<id>` in the one spelling
/// certificates use.
fn spu_of(principal: &str) -> Option<SpuId> {
    runnel_auth::spu_id_of(principal).map(SpuId)
}

fn principal_of(spu: SpuId) -> String {
    runnel_auth::spu_principal(spu.0)
}

impl Grant<'_> {
    /// Whether the permission still holds under the latest state.
    pub fn check(&mut self) -> Result<(), ApiError> {
        // Before reading the state: a change after this wakes `revoked`.
        self.changes.borrow_and_update();
        self.authorizer.authorize(self.identity, self.permission)
    }

    /// Resolves, with the refusal, once the permission no longer holds:
    /// checked again after every new security state and when the
    /// certificate expires. Cancel-safe: a state seen by no check wakes
    /// the next call at once.
    pub async fn revoked(&mut self) -> ApiError {
        if !self.authorizer.enabled {
            return std::future::pending().await;
        }
        loop {
            let expires = self.expires;
            let expired = async {
                match expires {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.changes.changed() => {
                    changed.expect("a grant borrows the authorizer, which keeps the sender");
                }
                () = expired => {
                    // The check reads the wall clock: if it was set back
                    // and still accepts the certificate, wait anew from
                    // it rather than spin on the passed deadline.
                    self.expires = self
                        .identity
                        .and_then(expiry_deadline);
                }
            }
            if let Err(error) = self.check() {
                return error;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use runnel_auth::{Binding, Effect, Policy, Role, Rule};

    use super::*;

    fn identity(principal: &str, serial: &str) -> PeerIdentity {
        PeerIdentity {
            principal: principal.to_string(),
            serial: serial.to_string(),
            not_after_unix: i64::MAX,
        }
    }

    fn topic(name: &str) -> TopicName {
        TopicName::new(name).expect("valid topic name")
    }

    fn readers_of_orders() -> SecurityState {
        SecurityState {
            superusers: vec!["root".to_string()],
            policy: Policy {
                roles: vec![Role {
                    name: "reader".to_string(),
                    rules: vec![Rule {
                        effect: Effect::Allow,
                        actions: vec![Action::Read],
                        resources: vec!["topic:orders".parse().expect("valid pattern")],
                    }],
                }],
                bindings: vec![
                    Binding {
                        principal: "alice".to_string(),
                        role: "reader".to_string(),
                    },
                    Binding {
                        principal: "spu:2".to_string(),
                        role: "reader".to_string(),
                    },
                ],
            },
            revoked: vec!["bad".to_string()],
        }
    }

    #[test]
    fn spu_principals_are_read_in_their_one_spelling() {
        assert_eq!(spu_of("spu:7"), Some(SpuId(7)));
        assert_eq!(spu_of("spu:0"), Some(SpuId(0)));
        for other in ["sc", "spu:07", "spu:", "spu:-1", "alice", "spu:4294967296"] {
            assert_eq!(spu_of(other), None, "{other}");
        }
    }

    #[test]
    fn topic_decisions() {
        let authorizer = Authorizer::new(SpuId(1), true);
        let alice = identity("alice", "a1");
        let orders = topic("orders");
        let refused = authorizer
            .authorize_topic(Some(&alice), Action::Read, &orders)
            .expect_err("no state yet");
        assert_eq!(refused.code, ErrorCode::PERMISSION_DENIED);

        authorizer.update(readers_of_orders());
        let cases = [
            (identity("alice", "a1"), Action::Read, "orders", None),
            (identity("alice", "a1"), Action::Describe, "orders", None),
            (
                identity("alice", "a1"),
                Action::Write,
                "orders",
                Some(ErrorCode::PERMISSION_DENIED),
            ),
            (
                identity("alice", "a1"),
                Action::Read,
                "payments",
                Some(ErrorCode::PERMISSION_DENIED),
            ),
            (identity("root", "r1"), Action::Write, "payments", None),
            (
                identity("root", "bad"),
                Action::Read,
                "orders",
                Some(ErrorCode::AUTHENTICATION_FAILED),
            ),
            // Bound to a role, but a node uses the private apis only.
            (
                identity("spu:2", "s2"),
                Action::Read,
                "orders",
                Some(ErrorCode::PERMISSION_DENIED),
            ),
        ];
        for (who, action, name, expected) in cases {
            let decision = authorizer.authorize_topic(Some(&who), action, &topic(name));
            assert_eq!(
                decision.err().map(|error| error.code),
                expected,
                "{} {action} {name}",
                who.principal
            );
        }
        let denied = authorizer
            .authorize_topic(Some(&alice), Action::Write, &orders)
            .expect_err("alice only reads");
        assert_eq!(
            denied.message,
            "permission denied: alice may not write topic:orders"
        );
        let anonymous = authorizer
            .authorize_topic(None, Action::Read, &orders)
            .expect_err("no certificate");
        assert_eq!(anonymous.code, ErrorCode::AUTHENTICATION_REQUIRED);
    }

    #[test]
    fn without_tls_nothing_is_checked() {
        let authorizer = Authorizer::new(SpuId(1), false);
        let orders = topic("orders");
        assert!(
            authorizer
                .authorize_topic(None, Action::Write, &orders)
                .is_ok()
        );
        assert!(authorizer.authorize_follower(None, SpuId(3)).is_ok());
        assert_eq!(authorizer.requesting_spu(None).ok(), Some(None));
        assert!(
            authorizer
                .authorize_replica(
                    None,
                    &PartitionKey {
                        topic: orders,
                        partition: runnel_types::PartitionId(0)
                    },
                    &[]
                )
                .is_ok()
        );
    }

    #[test]
    fn spus_speak_only_for_themselves() {
        let authorizer = Authorizer::new(SpuId(1), true);
        let spu2 = identity("spu:2", "s2");
        // Whether spu:2 was revoked is unknown until the SC's state comes.
        let early = authorizer
            .authorize_follower(Some(&spu2), SpuId(2))
            .expect_err("no state yet");
        assert_eq!(early.code, ErrorCode::PERMISSION_DENIED);
        assert!(
            early.message.contains("authorization policy"),
            "{}",
            early.message
        );
        assert_eq!(
            authorizer
                .requesting_spu(Some(&spu2))
                .expect_err("no state yet")
                .code,
            ErrorCode::PERMISSION_DENIED
        );

        authorizer.update(SecurityState::default());
        assert!(authorizer.authorize_follower(Some(&spu2), SpuId(2)).is_ok());
        let denied = authorizer
            .authorize_follower(Some(&spu2), SpuId(3))
            .expect_err("spu:2 is not follower 3");
        assert_eq!(denied.code, ErrorCode::PERMISSION_DENIED);
        assert!(denied.message.contains("spu:2"), "{}", denied.message);
        assert!(denied.message.contains("follower 3"), "{}", denied.message);
        for other in ["sc", "alice"] {
            let denied = authorizer
                .authorize_follower(Some(&identity(other, "x")), SpuId(2))
                .expect_err("not an SPU");
            assert_eq!(denied.code, ErrorCode::PERMISSION_DENIED, "{other}");
        }

        let key = PartitionKey {
            topic: topic("orders"),
            partition: runnel_types::PartitionId(0),
        };
        let replicas = [SpuId(1), SpuId(2)];
        let asker = authorizer
            .requesting_spu(Some(&spu2))
            .expect("spu:2 is an SPU");
        assert_eq!(asker, Some(SpuId(2)));
        assert!(authorizer.authorize_replica(asker, &key, &replicas).is_ok());
        for outsider in ["spu:3", "spu:1"] {
            let asker = authorizer
                .requesting_spu(Some(&identity(outsider, "x")))
                .expect("an SPU");
            let denied = authorizer
                .authorize_replica(asker, &key, &replicas)
                .expect_err("not a follower");
            assert_eq!(denied.code, ErrorCode::PERMISSION_DENIED, "{outsider}");
        }

        authorizer.update(SecurityState {
            revoked: vec!["s2".to_string()],
            ..SecurityState::default()
        });
        let revoked = authorizer
            .authorize_follower(Some(&spu2), SpuId(2))
            .expect_err("revoked");
        assert_eq!(revoked.code, ErrorCode::AUTHENTICATION_FAILED);
    }

    #[test]
    fn an_expired_certificate_is_refused_on_every_request() {
        let authorizer = Authorizer::new(SpuId(1), true);
        authorizer.update(readers_of_orders());
        let expired = PeerIdentity {
            not_after_unix: 1_000,
            ..identity("root", "r1")
        };
        let refused = authorizer
            .authorize_topic(Some(&expired), Action::Read, &topic("orders"))
            .expect_err("expired");
        assert_eq!(refused.code, ErrorCode::AUTHENTICATION_FAILED);
        assert_eq!(
            refused.message,
            "the certificate naming root expired at 1970-01-01 00:16:40 UTC; get a new one with `runnel login`"
        );
        let expired_spu = PeerIdentity {
            not_after_unix: 1_000,
            ..identity("spu:2", "s2")
        };
        assert_eq!(
            authorizer
                .authorize_follower(Some(&expired_spu), SpuId(2))
                .expect_err("expired")
                .code,
            ErrorCode::AUTHENTICATION_FAILED
        );
    }

    /// Whether `grant.revoked()` has resolved once everything pending is
    /// handled; its refusal if so.
    async fn revoked_now(grant: &mut Grant<'_>) -> Option<ApiError> {
        tokio::select! {
            biased;
            refused = grant.revoked() => Some(refused),
            () = std::future::ready(()) => None,
        }
    }

    #[tokio::test]
    async fn a_grant_is_revoked_by_the_state_that_withdraws_it() {
        let authorizer = Authorizer::new(SpuId(1), true);
        authorizer.update(readers_of_orders());
        let alice = identity("alice", "a1");
        let orders = topic("orders");
        let mut grant = authorizer
            .grant(Some(&alice), Permission::Topic(Action::Read, &orders))
            .expect("alice reads orders");
        assert!(revoked_now(&mut grant).await.is_none());

        // A change that keeps alice's permission leaves the stream open.
        let mut kept = readers_of_orders();
        kept.superusers.clear();
        authorizer.update(kept.clone());
        assert!(revoked_now(&mut grant).await.is_none());
        assert!(grant.check().is_ok());

        let mut narrower = kept.clone();
        narrower
            .policy
            .bindings
            .retain(|binding| binding.principal != "alice");
        authorizer.update(narrower);
        let refused = revoked_now(&mut grant).await.expect("alice lost read");
        assert_eq!(refused.code, ErrorCode::PERMISSION_DENIED);
        assert_eq!(
            refused.message,
            "permission denied: alice may not read topic:orders"
        );

        let spu2 = identity("spu:2", "s2");
        let mut follower = authorizer
            .grant(Some(&spu2), Permission::Follower(SpuId(2)))
            .expect("spu:2 follows as itself");
        authorizer.update(SecurityState {
            revoked: vec!["s2".to_string()],
            ..kept
        });
        let refused = revoked_now(&mut follower).await.expect("spu:2 revoked");
        assert_eq!(refused.code, ErrorCode::AUTHENTICATION_FAILED);
    }

    #[tokio::test]
    async fn a_grant_is_revoked_when_its_certificate_expires() {
        let authorizer = Authorizer::new(SpuId(1), true);
        authorizer.update(readers_of_orders());
        // Valid through the next whole second, refused after it.
        let short_lived = PeerIdentity {
            not_after_unix: now_ms().div_euclid(1000) + 1,
            ..identity("alice", "a1")
        };
        let orders = topic("orders");
        let mut grant = authorizer
            .grant(Some(&short_lived), Permission::Topic(Action::Read, &orders))
            .expect("not expired yet");
        let refused = tokio::time::timeout(Duration::from_secs(10), grant.revoked())
            .await
            .expect("the grant ends at the certificate's expiry");
        assert_eq!(refused.code, ErrorCode::AUTHENTICATION_FAILED);
        assert!(refused.message.contains("expired"), "{}", refused.message);
    }
}
