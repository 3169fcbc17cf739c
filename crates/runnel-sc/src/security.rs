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
//! signs under it, only if the user's hash is still the one checked.

use std::collections::BTreeMap;
use std::sync::Arc;

use runnel_api::{
    ApiError, ApplyPolicyResponse, ErrorCode, IssuedCertificate, LoginRequest, LoginResponse,
    Reply, RevokeResponse, RoleBindRequest, RoleCreateRequest, UserAddRequest, UserInfo,
    UserPasswdRequest, UserRevokeRequest,
};
use runnel_auth::Policy;
use runnel_metadata::SecurityState;
use runnel_pki::ClusterCa;
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
/// How long past its end of validity a certificate still counts as
/// unexpired for revocation, so that a node whose clock runs behind still
/// refuses a revoked one.
pub const EXPIRY_GRACE_SECS: i64 = 24 * 60 * 60;

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

    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revocations.contains(serial)
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
        let LoginRequest {
            user,
            password,
            csr_pem,
            ..
        } = request;
        let stored = self.data.lock().await.users.get(&user).cloned();
        // A password no user can have is wrong without hashing it: the
        // length bound is what keeps hashing cheap.
        let verified = password.len() <= PASSWORD_LEN_MAX
            && self.passwords.verify(password, stored.clone()).await;
        if !verified {
            return Err(self.failed_login(&user).await);
        }
        let mut data = self.data.lock().await;
        // The password was checked without the lock: if it changed, or the
        // user was deleted, meanwhile, the login fails as it would have a
        // moment later.
        if data.users.get(&user) != stored.as_ref() {
            drop(data);
            return Err(self.failed_login(&user).await);
        }
        data.check_certificate_room(&user, now_unix())?;
        let signed = ca
            .sign_csr(&csr_pem, &user, OffsetDateTime::now_utc(), lifetime)
            .map_err(|error| ApiError::new(ErrorCode::INVALID_CSR, error.to_string()))?;
        let record = IssuedRecord {
            user: user.clone(),
            not_after_unix: signed.not_after_unix,
        };
        let mutation = SecurityMutation::PutIssued {
            serial: signed.serial.clone(),
            record,
        };
        self.commit(&mut data, vec![mutation]).await?;
        info!(%user, serial = %signed.serial, not_after_unix = signed.not_after_unix,
            "certificate issued at login");
        Ok(LoginResponse {
            certificate_pem: signed.cert_pem,
            ca_pem: ca.cert_pem().to_string(),
            principal: user,
            serial: signed.serial,
            not_after_unix: signed.not_after_unix,
        })
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
    /// wrong password and an unknown user.
    async fn failed_login(&self, user: &str) -> ApiError {
        match runnel_auth::validate_user_name(user) {
            Ok(()) => warn!(%user, "login refused: wrong user name or password"),
            Err(_) => warn!("login refused: not a valid user name"),
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
                    roles: data.roles_of(name),
                    certificates: Vec::new(),
                };
                (name.as_str(), info)
            })
            .collect();
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
                        binding.principal, binding.role
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
                            binding.role
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
        let mut published_changed = false;
        for mutation in mutations {
            published_changed |= data.apply(mutation);
        }
        if published_changed {
            self.revocations.replace(data.revoked.keys().cloned());
            self.published
                .send_replace(Arc::new(data.state(&self.config.superusers, now_unix())));
        }
        Ok(())
    }
}

impl Data {
    /// Applies one committed mutation; whether it changed the policy or
    /// the revocations.
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

    /// The roles bound to `principal`, by name.
    fn roles_of(&self, principal: &str) -> Vec<String> {
        let mut roles: Vec<String> = self
            .policy
            .bindings
            .iter()
            .filter(|binding| binding.principal == principal)
            .map(|binding| binding.role.clone())
            .collect();
        roles.sort();
        roles
    }

    fn check_user_exists(&self, name: &str) -> Result<(), ApiError> {
        if self.users.contains_key(name) {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::USER_NOT_FOUND,
            format!("user '{name}' does not exist; list users with `runnel user list`"),
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

/// The mutation revoking `serial`, with its end of validity if the SC
/// issued it.
fn revoke(data: &Data, serial: &str) -> SecurityMutation {
    SecurityMutation::PutRevoked {
        serial: serial.to_string(),
        not_after_unix: data
            .issued
            .get(serial)
            .map_or(NOT_AFTER_UNKNOWN, |record| record.not_after_unix),
    }
}

/// Whether a certificate ending at `not_after` may still be presented at
/// `now`, allowing for clocks that run behind.
pub fn unexpired(not_after: i64, now: i64) -> bool {
    not_after.saturating_add(EXPIRY_GRACE_SECS) >= now
}

pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
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
