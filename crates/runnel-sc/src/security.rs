//! Users, roles and certificates: what the SC keeps of them, the apis that
//! change them, and the feed of the result to listeners and SPUs.
//!
//! [`Security`] holds the users (argon2id hashes), the policy, the
//! certificates issued at login and the revoked serials, behind one lock
//! that orders every change. A change is committed to the store (one
//! transaction), applied in memory, then published while the lock is
//! still held: the [`Revocations`] shared with both listeners' certificate
//! verifiers are replaced, and the new [`SecurityState`] goes out on a
//! watch channel, which request handlers read for their decisions and
//! every SPU session forwards whole.
//!
//! A login checks the password without the lock (hashing is slow), then
//! signs under it, only if the user's hash is still the one checked. What
//! no user can send (an invalid name, an overlong password or CSR) is
//! refused before any hashing; a superuser's name is refused only after
//! the same check as an unknown user's, so the time to answer does not
//! tell which names are superusers. Each login also drops the user's
//! records of certificates that expired, and every revocation that
//! expired, so short-lived logins and revocations do not pile up until a
//! restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use runnel_api::{
    ApiError, ApplyPolicyResponse, ErrorCode, IssuedCertificate, LoginRequest, LoginResponse,
    Reply, RevokeResponse, RoleBindRequest, RoleCreateRequest, UserAddRequest, UserInfo,
    UserPasswdRequest, UserRevokeRequest,
};
use runnel_auth::{Policy, excerpt};
use runnel_metadata::SecurityState;
use runnel_pki::{CSR_PEM_LEN_MAX, ClusterCa, SignedCert};
use runnel_transport::Revocations;
use time::OffsetDateTime;
use tokio::sync::{Mutex, watch};
use tracing::{error, info, warn};

use crate::controller::shutting_down;
use crate::password::{PASSWORD_LEN_MAX, Passwords, check_new_password};
use crate::store::{
    HashedPassword, IssuedRecord, LoadedSecurity, NOT_AFTER_UNKNOWN, SecurityMutation, Store,
    canonical_serial,
};

/// The most users the SC keeps.
pub const MAX_USERS: usize = 10_000;
/// The most certificates one user may hold unexpired and unrevoked: each
/// login stores one until it expires, so this bounds what a user can make
/// the SC keep.
pub const MAX_CERTIFICATES_PER_USER: usize = 64;
/// The most revocations the SC keeps of certificates it did not issue
/// (by serial): their end of validity is unknown, so they are kept for
/// good, and every revocation goes to each SPU in one frame.
pub const MAX_FOREIGN_REVOCATIONS: usize = 10_000;
/// How long past its end of validity a certificate still counts as
/// unexpired for revocation, so that a node whose clock runs behind still
/// refuses a revoked one.
pub const EXPIRY_GRACE_SECS: i64 = 24 * 60 * 60;
/// The longest policy, encoded: the whole [`SecurityState`] goes to each
/// SPU in one frame, which must stay well within the frame limit.
pub const POLICY_ENCODED_LEN_MAX: usize = 1 << 20;
/// Why a login with a wrong password, or for an unknown user, failed.
const WRONG_PASSWORD: &str = "wrong user name or password";
/// Why a login for a superuser failed.
const SUPERUSER_LOGIN: &str = "the name of a superuser, who may not log in with a password: a \
                               password login would hand out superuser certificates";

/// What the SC's security is configured with.
#[derive(Debug)]
pub struct SecurityConfig {
    /// Principals allowed everything.
    pub superusers: Vec<String>,
    /// Signs login CSRs; without it, logins are refused.
    pub ca: Option<ClusterCa>,
    /// The longest lifetime a login certificate gets.
    pub max_cert_lifetime: time::Duration,
    /// How long a failed login waits before it is answered.
    pub failed_auth_delay: std::time::Duration,
}

/// The SC's users, policy and certificates.
#[derive(Debug)]
pub struct Security {
    config: SecurityConfig,
    revocations: Revocations,
    passwords: Passwords,
    data: Mutex<Data>,
    published: watch::Sender<Arc<SecurityState>>,
}

/// What [`Security`] keeps, behind its lock.
#[derive(Debug)]
struct Data {
    /// Taken on shutdown, so the store file is closed when `run` returns.
    store: Option<Arc<Store>>,
    users: BTreeMap<String, HashedPassword>,
    policy: Policy,
    /// Serial → the certificate issued at a login.
    issued: BTreeMap<String, IssuedRecord>,
    /// Serial → end of validity.
    revoked: BTreeMap<String, i64>,
}

impl Security {
    /// The security kept in `store`, which `loaded` was read from;
    /// `revocations` is the set the listeners' verifiers read.
    pub fn new(
        config: SecurityConfig,
        store: Arc<Store>,
        loaded: LoadedSecurity,
        revocations: Revocations,
    ) -> Security {
        let data = Data {
            store: Some(store),
            users: loaded.users,
            policy: loaded.policy,
            issued: loaded.issued,
            revoked: loaded.revoked,
        };
        revocations.replace(data.revoked.keys().cloned());
        let (published, _) = watch::channel(Arc::new(data.state(&config.superusers, now_unix())));
        Security {
            config,
            revocations,
            passwords: Passwords::new(),
            data: Mutex::new(data),
            published,
        }
    }

    /// The state requests are judged by now.
    pub fn current(&self) -> Arc<SecurityState> {
        Arc::clone(&self.published.borrow())
    }

    /// The state now and each later one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<SecurityState>> {
        self.published.subscribe()
    }

    /// The revoked serials, which requests are authenticated against.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Closes the store; later changes fail with
    /// [`ErrorCode::SHUTTING_DOWN`].
    pub async fn close(&self) {
        self.data.lock().await.store = None;
    }

    // ---- login ----

    /// Checks `request`'s password and signs its CSR for the user.
    pub async fn login(&self, request: LoginRequest) -> Reply<LoginResponse> {
        let ca = self.config.ca.as_ref().ok_or_else(no_ca)?;
        let lifetime = self.lifetime(request.lifetime_secs)?;
        check_csr_length(&request.csr_pem)?;
        let LoginRequest {
            user,
            password,
            csr_pem,
            ..
        } = request;
        if let Some(why) = refusal_before_hashing(&user, &password) {
            return Err(self.failed_login(&user, why).await);
        }
        // A superuser is checked against the stand-in hash, as an unknown
        // user is, even if a user of that name is stored from before the
        // name became a superuser's.
        let superuser = self.published.borrow().is_superuser(&user);
        let stored = if superuser {
            None
        } else {
            self.data.lock().await.users.get(&user).cloned()
        };
        let verified = self.passwords.verify(password, stored.clone()).await?;
        if superuser {
            return Err(self.failed_login(&user, SUPERUSER_LOGIN).await);
        }
        if !verified {
            return Err(self.failed_login(&user, WRONG_PASSWORD).await);
        }
        let mut data = self.data.lock().await;
        // The password was checked without the lock: if it changed, or the
        // user was deleted, meanwhile, the login fails as it would have a
        // moment later.
        if data.users.get(&user) != stored.as_ref() {
            drop(data);
            return Err(self.failed_login(&user, WRONG_PASSWORD).await);
        }
        let signed = self.sign(&mut data, ca, &user, &csr_pem, lifetime).await?;
        Ok(LoginResponse {
            certificate_pem: signed.cert_pem,
            ca_pem: ca.cert_pem().to_string(),
            principal: user,
            serial: signed.serial,
            not_after_unix: signed.not_after_unix,
        })
    }

    /// Signs `csr_pem` for `user` and records the certificate, dropping
    /// the user's records and the revocations that expired meanwhile.
    async fn sign(
        &self,
        data: &mut Data,
        ca: &ClusterCa,
        user: &str,
        csr_pem: &str,
        lifetime: time::Duration,
    ) -> Result<SignedCert, ApiError> {
        let now = now_unix();
        data.check_certificate_room(user, now)?;
        let signed = ca
            .sign_csr(csr_pem, user, OffsetDateTime::now_utc(), lifetime)
            .map_err(|error| ApiError::new(ErrorCode::INVALID_CSR, error.to_string()))?;
        let mut mutations = data.expired_records(user, now);
        let pruned = mutations.len();
        mutations.push(SecurityMutation::issued(
            &signed.serial,
            user,
            signed.not_after_unix,
        ));
        self.commit(data, mutations).await?;
        info!(%user, serial = %signed.serial, not_after_unix = signed.not_after_unix, pruned,
            "certificate issued at login");
        Ok(signed)
    }

    /// The lifetime of a login certificate: as asked, at most the maximum.
    fn lifetime(&self, requested_secs: Option<u64>) -> Result<time::Duration, ApiError> {
        let maximum = self.config.max_cert_lifetime;
        match requested_secs {
            None => Ok(maximum),
            Some(0) => Err(ApiError::new(
                ErrorCode::INVALID_CONFIG,
                "a certificate lifetime of 0 seconds is no lifetime; ask for a positive one, or \
                 none for the SC's maximum",
            )),
            Some(secs) => {
                let requested = time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX));
                Ok(requested.min(maximum))
            }
        }
    }

    /// Waits the failed-authentication delay, then answers the same for a
    /// wrong password, an unknown user and every other refusal, so the
    /// answer tells nothing of the users; the log says `why`.
    async fn failed_login(&self, user: &str, why: &'static str) -> ApiError {
        match runnel_auth::validate_user_name(user) {
            Ok(()) => warn!(%user, why, "login refused"),
            Err(_) => warn!(why, "login refused"),
        }
        tokio::time::sleep(self.config.failed_auth_delay).await;
        ApiError::new(
            ErrorCode::AUTHENTICATION_FAILED,
            "wrong user name or password",
        )
    }

    // ---- users ----

    pub async fn user_add(&self, request: UserAddRequest) -> Reply<()> {
        let UserAddRequest { name, password } = request;
        runnel_auth::validate_user_name(&name).map_err(invalid_input)?;
        if self.published.borrow().is_superuser(&name) {
            return Err(ApiError::new(
                ErrorCode::INVALID_CONFIG,
                format!(
                    "{name} is a superuser of this SC; a password login for it would hand out \
                     superuser certificates, so superusers get certificates from the cluster CA \
                     only; choose another name"
                ),
            ));
        }
        check_new_password(&password)?;
        self.data.lock().await.check_user_room(&name)?;
        let password = self.passwords.hash(password).await?;
        let mut data = self.data.lock().await;
        // Checked again: another request may have added it meanwhile.
        data.check_user_room(&name)?;
        let mutation = SecurityMutation::PutUser {
            name: name.clone(),
            password,
        };
        self.commit(&mut data, vec![mutation]).await?;
        info!(user = %name, "user added");
        Ok(())
    }

    /// Sets a user's password; certificates issued before stay valid.
    pub async fn user_passwd(&self, request: UserPasswdRequest) -> Reply<()> {
        let UserPasswdRequest { name, password } = request;
        self.data.lock().await.check_user_exists(&name)?;
        check_new_password(&password)?;
        let password = self.passwords.hash(password).await?;
        let mut data = self.data.lock().await;
        data.check_user_exists(&name)?;
        let mutation = SecurityMutation::PutUser {
            name: name.clone(),
            password,
        };
        self.commit(&mut data, vec![mutation]).await?;
        info!(user = %name, "password changed");
        Ok(())
    }

    /// Deletes a user, revokes their certificates and removes the bindings
    /// that name them.
    pub async fn user_delete(&self, name: String) -> Reply<()> {
        let mut data = self.data.lock().await;
        data.check_user_exists(&name)?;
        let now = now_unix();
        let revoked = data.revocable_of(&name, now);
        let mut mutations: Vec<SecurityMutation> = data
            .issued_of(&name)
            .map(|serial| SecurityMutation::DeleteIssued(serial.clone()))
            .collect();
        mutations.extend(revoked.iter().map(|serial| revoke(&data, serial)));
        let mut policy = data.policy.clone();
        policy.bindings.retain(|binding| binding.principal != name);
        let unbound = data.policy.bindings.len() - policy.bindings.len();
        if unbound > 0 {
            mutations.push(SecurityMutation::PutPolicy(policy));
        }
        mutations.push(SecurityMutation::DeleteUser(name.clone()));
        self.commit(&mut data, mutations).await?;
        info!(user = %name, revoked = revoked.len(), bindings_removed = unbound, "user deleted");
        Ok(())
    }

    /// Every user, with their roles and unexpired certificates.
    pub async fn user_list(&self) -> Vec<UserInfo> {
        let data = self.data.lock().await;
        let now = now_unix();
        let mut users: BTreeMap<&str, UserInfo> = data
            .users
            .keys()
            .map(|name| {
                let info = UserInfo {
                    name: name.clone(),
                    roles: Vec::new(),
                    certificates: Vec::new(),
                };
                (name.as_str(), info)
            })
            .collect();
        // One pass over the bindings, however many users there are.
        for binding in &data.policy.bindings {
            if let Some(info) = users.get_mut(binding.principal.as_str()) {
                info.roles.push(binding.role.clone());
            }
        }
        for info in users.values_mut() {
            info.roles.sort();
        }
        for (serial, record) in &data.issued {
            if let Some(info) = users.get_mut(record.user.as_str())
                && record.not_after_unix > now
            {
                info.certificates.push(IssuedCertificate {
                    serial: serial.clone(),
                    not_after_unix: record.not_after_unix,
                    revoked: data.revoked.contains_key(serial),
                });
            }
        }
        users.into_values().collect()
    }

    /// Revokes a user's unexpired certificates, or one certificate of the
    /// cluster CA by serial; answers the serials newly revoked.
    pub async fn user_revoke(&self, request: UserRevokeRequest) -> Reply<RevokeResponse> {
        let mut data = self.data.lock().await;
        let serials = match request {
            UserRevokeRequest::User(name) => {
                data.check_user_exists(&name)?;
                data.revocable_of(&name, now_unix())
            }
            UserRevokeRequest::Serial(text) => {
                let serial = canonical_serial(&text)
                    .map_err(|reason| ApiError::new(ErrorCode::INVALID_CONFIG, reason))?;
                if data.revoked.contains_key(&serial) {
                    Vec::new()
                } else {
                    if !data.issued.contains_key(&serial) {
                        data.check_foreign_revocation_room()?;
                    }
                    vec![serial]
                }
            }
        };
        if !serials.is_empty() {
            let mutations = serials.iter().map(|serial| revoke(&data, serial)).collect();
            self.commit(&mut data, mutations).await?;
            info!(serials = %serials.join(","), "certificates revoked");
        }
        Ok(RevokeResponse { revoked: serials })
    }

    // ---- roles ----

    /// Adds a role, or replaces one of the same name when asked to.
    pub async fn role_create(&self, request: RoleCreateRequest) -> Reply<()> {
        let RoleCreateRequest { role, replace } = request;
        let mut data = self.data.lock().await;
        let mut policy = data.policy.clone();
        match policy.roles.iter_mut().find(|held| held.name == role.name) {
            Some(_) if !replace => {
                return Err(ApiError::new(
                    ErrorCode::ROLE_EXISTS,
                    format!(
                        "role '{}' already exists; replace it explicitly, or list roles with \
                         `runnel role list`",
                        role.name
                    ),
                ));
            }
            Some(held) => *held = role.clone(),
            None => policy.roles.push(role.clone()),
        }
        self.commit_policy(&mut data, policy).await?;
        info!(role = %role.name, replaced = replace, "role created");
        Ok(())
    }

    /// Binds a principal to a role, or unbinds it.
    pub async fn role_bind(&self, request: RoleBindRequest) -> Reply<()> {
        let RoleBindRequest { binding, unbind } = request;
        let mut data = self.data.lock().await;
        let mut policy = data.policy.clone();
        let held = policy.bindings.iter().position(|held| *held == binding);
        match (held, unbind) {
            (Some(_), false) => return Ok(()),
            (None, true) => {
                return Err(ApiError::new(
                    ErrorCode::ROLE_NOT_FOUND,
                    format!(
                        "{} is not bound to role '{}'; list bindings with `runnel role list`",
                        excerpt(&binding.principal),
                        excerpt(&binding.role)
                    ),
                ));
            }
            (Some(at), true) => {
                policy.bindings.remove(at);
            }
            (None, false) => {
                if !policy.roles.iter().any(|role| role.name == binding.role) {
                    return Err(ApiError::new(
                        ErrorCode::ROLE_NOT_FOUND,
                        format!(
                            "role '{}' does not exist; create it first, or list roles with \
                             `runnel role list`",
                            excerpt(&binding.role)
                        ),
                    ));
                }
                policy.bindings.push(binding.clone());
            }
        }
        self.commit_policy(&mut data, policy).await?;
        info!(principal = %binding.principal, role = %binding.role, unbind, "role binding changed");
        Ok(())
    }

    pub async fn role_list(&self) -> Policy {
        self.data.lock().await.policy.clone()
    }

    /// Makes `policy` the whole policy.
    pub async fn apply_policy(&self, policy: Policy) -> Reply<ApplyPolicyResponse> {
        let mut data = self.data.lock().await;
        let applied = ApplyPolicyResponse {
            roles: policy.roles.len(),
            bindings: policy.bindings.len(),
        };
        self.commit_policy(&mut data, policy).await?;
        info!(
            roles = applied.roles,
            bindings = applied.bindings,
            "policy applied"
        );
        Ok(applied)
    }

    // ---- changes ----

    async fn commit_policy(&self, data: &mut Data, policy: Policy) -> Reply<()> {
        policy
            .validate()
            .map_err(|error| ApiError::new(ErrorCode::INVALID_POLICY, error.to_string()))?;
        check_policy_len(&policy)?;
        self.commit(data, vec![SecurityMutation::PutPolicy(policy)])
            .await
    }

    /// Writes `mutations` in one transaction, applies them in memory and
    /// publishes the result if it changed what requests are judged by.
    async fn commit(&self, data: &mut Data, mutations: Vec<SecurityMutation>) -> Reply<()> {
        let store = data
            .store
            .as_ref()
            .map(Arc::clone)
            .ok_or_else(shutting_down)?;
        let written = tokio::task::spawn_blocking(move || {
            let result = store.apply_security(&mutations);
            (mutations, result)
        })
        .await;
        let mutations = match written {
            Ok((mutations, Ok(()))) => mutations,
            Ok((_, Err(store_error))) => {
                error!(%store_error, "security change not committed");
                return Err(ApiError::new(
                    ErrorCode::STORAGE,
                    format!("the SC could not commit the change: {store_error}"),
                ));
            }
            Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
        };
        let revoked_before = data.revoked.len();
        let mut published_changed = false;
        for mutation in mutations {
            published_changed |= data.apply(mutation);
        }
        // Expired revocations dropped change no published state, but the
        // listeners' set drops them too.
        if published_changed || data.revoked.len() != revoked_before {
            self.revocations.replace(data.revoked.keys().cloned());
        }
        if published_changed {
            self.published
                .send_replace(Arc::new(data.state(&self.config.superusers, now_unix())));
        }
        Ok(())
    }
}

impl Data {
    /// Applies one committed mutation; whether it changed the policy or
    /// the revocations in force.
    fn apply(&mut self, mutation: SecurityMutation) -> bool {
        match mutation {
            SecurityMutation::PutUser { name, password } => {
                self.users.insert(name, password);
                false
            }
            SecurityMutation::DeleteUser(name) => {
                self.users.remove(&name);
                false
            }
            SecurityMutation::PutPolicy(policy) => {
                self.policy = policy;
                true
            }
            SecurityMutation::PutIssued { serial, record } => {
                self.issued.insert(serial, record);
                false
            }
            SecurityMutation::DeleteIssued(serial) => {
                self.issued.remove(&serial);
                false
            }
            SecurityMutation::PutRevoked {
                serial,
                not_after_unix,
            } => {
                self.revoked.insert(serial, not_after_unix);
                true
            }
            SecurityMutation::DeleteRevoked(serial) => {
                self.revoked.remove(&serial);
                // Only expired revocations are dropped, which `state`
                // leaves out, and a certificate they name is refused as
                // expired anyway: publishing again would only send every
                // watcher a snapshot at each login that prunes.
                false
            }
        }
    }

    /// What the SPUs and request handlers judge by, at `now`.
    fn state(&self, superusers: &[String], now: i64) -> SecurityState {
        SecurityState {
            superusers: superusers.to_vec(),
            policy: self.policy.clone(),
            revoked: self
                .revoked
                .iter()
                .filter(|(_, not_after)| unexpired(**not_after, now))
                .map(|(serial, _)| serial.clone())
                .collect(),
        }
    }

    fn issued_of<'a>(&'a self, user: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.issued
            .iter()
            .filter(move |(_, record)| record.user == user)
            .map(|(serial, _)| serial)
    }

    /// The user's certificates that are unexpired and not revoked yet.
    fn revocable_of(&self, user: &str, now: i64) -> Vec<String> {
        self.issued_of(user)
            .filter(|serial| {
                !self.revoked.contains_key(*serial)
                    && unexpired(self.issued[*serial].not_after_unix, now)
            })
            .cloned()
            .collect()
    }

    /// The mutations dropping the user's certificates that expired, grace
    /// included, and every revocation that expired: each login leaves a
    /// record, and a revocation outlives its certificate's record (`user
    /// delete` drops the record and keeps the revocation); either would
    /// otherwise stay until the SC restarts, however short the
    /// certificate's lifetime. A revoked serial the SC did not issue has no
    /// known end, so its revocation stays.
    fn expired_records(&self, user: &str, now: i64) -> Vec<SecurityMutation> {
        let issued = self
            .issued_of(user)
            .filter(|serial| !unexpired(self.issued[*serial].not_after_unix, now))
            .map(|serial| SecurityMutation::DeleteIssued(serial.clone()));
        let revoked = self
            .revoked
            .iter()
            .filter(|(_, not_after)| !unexpired(**not_after, now))
            .map(|(serial, _)| SecurityMutation::DeleteRevoked(serial.clone()));
        issued.chain(revoked).collect()
    }

    /// The roles bound to `principal`, by name.
    fn check_user_exists(&self, name: &str) -> Result<(), ApiError> {
        if self.users.contains_key(name) {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::USER_NOT_FOUND,
            format!(
                "user '{}' does not exist; list users with `runnel user list`",
                excerpt(name)
            ),
        ))
    }

    fn check_user_room(&self, name: &str) -> Result<(), ApiError> {
        if self.users.contains_key(name) {
            return Err(ApiError::new(
                ErrorCode::USER_EXISTS,
                format!(
                    "user '{name}' already exists; change their password with `runnel user \
                     passwd {name}`"
                ),
            ));
        }
        if self.users.len() >= MAX_USERS {
            return Err(ApiError::new(
                ErrorCode::INVALID_CONFIG,
                format!("the SC already holds {MAX_USERS} users, its most; delete some first"),
            ));
        }
        Ok(())
    }

    fn check_foreign_revocation_room(&self) -> Result<(), ApiError> {
        let kept = self
            .revoked
            .values()
            .filter(|not_after| **not_after == NOT_AFTER_UNKNOWN)
            .count();
        if kept < MAX_FOREIGN_REVOCATIONS {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::INVALID_CONFIG,
            format!(
                "the SC already keeps {MAX_FOREIGN_REVOCATIONS} revocations of certificates it \
                 did not issue, its most (they never expire from its list); revoke certificates \
                 it issued by user (`runnel user revoke NAME`), or replace the cluster CA"
            ),
        ))
    }

    fn check_certificate_room(&self, user: &str, now: i64) -> Result<(), ApiError> {
        if self.revocable_of(user, now).len() < MAX_CERTIFICATES_PER_USER {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::PERMISSION_DENIED,
            format!(
                "{user} already holds {MAX_CERTIFICATES_PER_USER} valid certificates, the most \
                 the SC issues to one user; ask an admin to revoke them (`runnel user revoke`), \
                 then log in again"
            ),
        ))
    }
}

/// Why a login fails without its password being hashed, if it does:
/// what no user can have needs no hashing, and hashing is what a flood of
/// logins costs the SC. A superuser's name is not among them: its quick
/// answer would tell the superusers' names apart.
fn refusal_before_hashing(user: &str, password: &str) -> Option<&'static str> {
    if runnel_auth::validate_user_name(user).is_err() {
        return Some("not a valid user name");
    }
    if password.len() > PASSWORD_LEN_MAX {
        return Some("a password longer than any user's");
    }
    None
}

/// The mutation revoking `serial`, with its end of validity if the SC
/// issued it.
fn revoke(data: &Data, serial: &str) -> SecurityMutation {
    let not_after_unix = data
        .issued
        .get(serial)
        .map_or(NOT_AFTER_UNKNOWN, |record| record.not_after_unix);
    SecurityMutation::revoked(serial, not_after_unix)
}

/// Whether a certificate ending at `not_after` may still be presented at
/// `now`, allowing for clocks that run behind.
pub fn unexpired(not_after: i64, now: i64) -> bool {
    not_after.saturating_add(EXPIRY_GRACE_SECS) >= now
}

pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Refuses a CSR too long to sign before anything is hashed for it.
fn check_csr_length(csr_pem: &str) -> Result<(), ApiError> {
    if csr_pem.len() <= CSR_PEM_LEN_MAX {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::INVALID_CSR,
        format!(
            "the CSR is {} bytes long, more than the {CSR_PEM_LEN_MAX} the SC signs; make one \
             with `runnel login`",
            csr_pem.len()
        ),
    ))
}

/// Refuses a policy longer, encoded, than [`POLICY_ENCODED_LEN_MAX`].
fn check_policy_len(policy: &Policy) -> Result<(), ApiError> {
    let length = runnel_api::encode(policy).len();
    if length <= POLICY_ENCODED_LEN_MAX {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::INVALID_POLICY,
        format!(
            "the policy is {length} bytes encoded, more than the {POLICY_ENCODED_LEN_MAX} bytes \
             a policy may have, since every SPU receives it whole in one message; use fewer \
             roles and bindings, or broader patterns"
        ),
    ))
}

fn no_ca() -> ApiError {
    ApiError::new(
        ErrorCode::SECURITY_DISABLED,
        "this SC cannot issue certificates: it runs without the cluster CA's key; start it with \
         --tls-ca-key, or give users certificates another way",
    )
}

fn invalid_input(error: runnel_auth::PolicyError) -> ApiError {
    ApiError::new(ErrorCode::INVALID_CONFIG, error.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use runnel_auth::{Action, Binding, Effect, ResourcePattern, Role, Rule};

    use super::*;

    const PASSWORD: &str = "correct horse battery";
    const SUPERUSER: &str = "root";

    /// Security over a fresh store in `dir` holding users `users` (all
    /// with [`PASSWORD`]) and then `mutations`, with [`SUPERUSER`].
    async fn security(
        dir: &tempfile::TempDir,
        users: &[&str],
        mutations: Vec<SecurityMutation>,
    ) -> Security {
        let store = Store::open(&dir.path().join(crate::STORE_FILE)).expect("a store");
        let password = Passwords::new()
            .hash(PASSWORD.to_string())
            .await
            .expect("a hash");
        let mut initial: Vec<SecurityMutation> = users
            .iter()
            .map(|name| SecurityMutation::PutUser {
                name: name.to_string(),
                password: password.clone(),
            })
            .collect();
        initial.extend(mutations);
        store.apply_security(&initial).expect("initial security");
        let loaded = store.load_security().expect("loaded");
        let now = OffsetDateTime::now_utc();
        let config = SecurityConfig {
            superusers: vec![SUPERUSER.to_string()],
            ca: Some(ClusterCa::generate("test", now, time::Duration::days(1)).expect("a CA")),
            max_cert_lifetime: time::Duration::hours(1),
            failed_auth_delay: Duration::ZERO,
        };
        Security::new(config, Arc::new(store), loaded, Revocations::default())
    }

    /// Revocations of certificates the SC did not issue never expire, so
    /// their number is bounded; one already kept, or one of a certificate
    /// the SC issued, is still taken at the bound.
    #[tokio::test]
    async fn revocations_of_certificates_not_issued_here_are_bounded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut full: Vec<SecurityMutation> = (0..MAX_FOREIGN_REVOCATIONS)
            .map(|at| {
                SecurityMutation::revoked(&format!("{:08x}", 0x1000_0000 + at), NOT_AFTER_UNKNOWN)
            })
            .collect();
        full.push(SecurityMutation::issued("abcdef01", "alice", i64::MAX - 1));
        let security = security(&dir, &["alice"], full).await;

        let refused = security
            .user_revoke(UserRevokeRequest::Serial("ffffffff".to_string()))
            .await
            .expect_err("past the bound");
        assert_eq!(refused.code, ErrorCode::INVALID_CONFIG, "{refused:?}");
        assert!(
            refused
                .message
                .contains(&format!("{MAX_FOREIGN_REVOCATIONS} revocations")),
            "{refused:?}"
        );
        let again = security
            .user_revoke(UserRevokeRequest::Serial("0010000000".to_string()))
            .await
            .expect("a revocation already kept");
        assert!(again.revoked.is_empty());
        let issued = security
            .user_revoke(UserRevokeRequest::Serial("abcdef01".to_string()))
            .await
            .expect("a certificate the SC issued");
        assert_eq!(issued.revoked, ["abcdef01"]);
    }

    fn login_request(user: &str, password: &str) -> LoginRequest {
        LoginRequest {
            user: user.to_string(),
            password: password.to_string(),
            csr_pem: runnel_pki::generate_csr("what-the-csr-asks")
                .expect("a CSR")
                .csr_pem,
            lifetime_secs: None,
        }
    }

    /// The user's own expired records go, and every expired revocation,
    /// including those whose certificate has no record (a deleted user's);
    /// other users' records wait for their own logins.
    #[tokio::test]
    async fn a_login_drops_the_users_expired_records_and_expired_revocations() {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = now_unix();
        let long_ago = now - EXPIRY_GRACE_SECS - 60;
        let lately = now - 60;
        let security = security(
            &dir,
            &["alice", "bob"],
            vec![
                SecurityMutation::issued("0a01", "alice", long_ago),
                SecurityMutation::revoked("0a01", long_ago),
                SecurityMutation::issued("0a02", "alice", lately),
                SecurityMutation::revoked("0a02", lately),
                SecurityMutation::issued("0b01", "bob", long_ago),
                SecurityMutation::issued("0b02", "bob", long_ago),
                SecurityMutation::revoked("0b02", long_ago),
                SecurityMutation::revoked("0c01", long_ago),
                SecurityMutation::revoked("0c02", lately),
                SecurityMutation::revoked("ff", NOT_AFTER_UNKNOWN),
            ],
        )
        .await;
        assert!(security.revocations().contains("0a01"));
        assert!(security.revocations().contains("0c01"));

        let response = security
            .login(login_request("alice", PASSWORD))
            .await
            .expect("logged in");

        let data = security.data.lock().await;
        let issued: Vec<&str> = data.issued.keys().map(String::as_str).collect();
        let mut expected = vec!["0a02", "0b01", "0b02", response.serial.as_str()];
        expected.sort();
        assert_eq!(issued, expected, "alice's long-expired record is gone");
        let revoked: Vec<&str> = data.revoked.keys().map(String::as_str).collect();
        assert_eq!(
            revoked,
            ["0a02", "0c02", "ff"],
            "revoked within the grace, or with no known end, stays"
        );
        for gone in ["0a01", "0b02", "0c01"] {
            assert!(!security.revocations().contains(gone), "{gone}");
        }
        assert!(security.revocations().contains("0a02"));
        let stored = data
            .store
            .as_ref()
            .expect("open")
            .load_security()
            .expect("loaded");
        assert_eq!(stored.issued, data.issued, "the store dropped them too");
        assert_eq!(stored.revoked, data.revoked);
    }

    /// With no room to hash at all, only what reaches hashing is refused
    /// as busy: everything else is answered before. A superuser's name
    /// reaches hashing, as an unknown name does, so its answer takes as
    /// long.
    #[tokio::test]
    async fn logins_no_user_can_make_are_refused_before_hashing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut security = security(&dir, &["alice", SUPERUSER], vec![]).await;
        security.passwords = Passwords::with_limits(0, 0);
        let oversized_csr = LoginRequest {
            csr_pem: "c".repeat(CSR_PEM_LEN_MAX + 1),
            ..login_request("alice", PASSWORD)
        };
        let cases = [
            (
                login_request("no such/name", PASSWORD),
                ErrorCode::AUTHENTICATION_FAILED,
            ),
            (
                login_request("alice", &"p".repeat(PASSWORD_LEN_MAX + 1)),
                ErrorCode::AUTHENTICATION_FAILED,
            ),
            (oversized_csr, ErrorCode::INVALID_CSR),
            (
                login_request("alice", PASSWORD),
                ErrorCode::TOO_MANY_REQUESTS,
            ),
            (
                login_request("nobody", PASSWORD),
                ErrorCode::TOO_MANY_REQUESTS,
            ),
            (
                login_request(SUPERUSER, PASSWORD),
                ErrorCode::TOO_MANY_REQUESTS,
            ),
        ];
        for (request, code) in cases {
            let user = request.user.clone();
            let error = security.login(request).await.expect_err("refused");
            assert_eq!(error.code, code, "{user}: {error:?}");
        }
    }

    /// Even a user stored under the name before it became a superuser's
    /// cannot log in with the right password; the answer is the one for a
    /// wrong password.
    #[tokio::test]
    async fn a_superuser_cannot_log_in_with_a_password() {
        let dir = tempfile::tempdir().expect("temp dir");
        let security = security(&dir, &[SUPERUSER], vec![]).await;
        let error = security
            .login(login_request(SUPERUSER, PASSWORD))
            .await
            .expect_err("refused");
        assert_eq!(error.code, ErrorCode::AUTHENTICATION_FAILED, "{error:?}");
        assert_eq!(error.message, WRONG_PASSWORD);
        assert!(security.data.lock().await.issued.is_empty());
    }

    #[tokio::test]
    async fn a_superuser_gets_no_password() {
        let dir = tempfile::tempdir().expect("temp dir");
        let security = security(&dir, &[], vec![]).await;
        let request = UserAddRequest {
            name: SUPERUSER.to_string(),
            password: PASSWORD.to_string(),
        };
        let error = security.user_add(request).await.expect_err("refused");
        assert_eq!(error.code, ErrorCode::INVALID_CONFIG, "{error:?}");
        assert!(
            error.message.starts_with(
                "root is a superuser of this SC; a password login for it would hand out \
                 superuser certificates"
            ),
            "{error:?}"
        );
        assert!(security.user_list().await.is_empty());
    }

    /// Each SPU receives the whole policy in one message.
    #[tokio::test]
    async fn a_policy_too_long_to_send_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let security = security(&dir, &[], vec![]).await;
        let role = Role {
            name: "reader".to_string(),
            rules: vec![Rule {
                effect: Effect::Allow,
                actions: vec![Action::Describe],
                resources: vec!["topic:*".parse::<ResourcePattern>().expect("pattern")],
            }],
        };
        let bindings = (0..runnel_auth::MAX_BINDINGS)
            .map(|at| Binding {
                principal: format!("{}{at:05}", "p".repeat(120)),
                role: "reader".to_string(),
            })
            .collect();
        let policy = Policy {
            roles: vec![role],
            bindings,
        };
        policy.validate().expect("valid, only too long");
        let length = runnel_api::encode(&policy).len();
        assert!(length > POLICY_ENCODED_LEN_MAX, "{length}");

        let error = security.apply_policy(policy).await.expect_err("refused");
        assert_eq!(error.code, ErrorCode::INVALID_POLICY, "{error:?}");
        let expected = format!(
            "the policy is {length} bytes encoded, more than the {POLICY_ENCODED_LEN_MAX} bytes"
        );
        assert!(error.message.starts_with(&expected), "{error:?}");
        assert_eq!(security.role_list().await, Policy::default());
        assert_eq!(security.current().policy, Policy::default());
    }
}
