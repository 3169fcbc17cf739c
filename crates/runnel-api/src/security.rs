//! The SC's security apis: logging in for a certificate, users, roles and
//! their bindings. All but [`LoginRequest`] need `admin` on the cluster.

use runnel_auth::{Binding, Policy, Role};
use serde::{Deserialize, Serialize};

use crate::{ApiKey, Reply, Request};

/// A user proves their password and gets a client certificate for the
/// key behind `csr_pem`, which never leaves their machine. Served to
/// connections without a certificate too: it is how a user gets one.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRequest {
    pub user: String,
    pub password: String,
    /// A PKCS#10 certificate signing request, PEM. Only its public key is
    /// used: the certificate names the user, whatever the CSR asks for.
    pub csr_pem: String,
    /// A shorter lifetime than the SC's maximum, in seconds.
    pub lifetime_secs: Option<u64>,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResponse {
    /// The user's certificate, signed by the cluster CA, PEM.
    pub certificate_pem: String,
    /// The cluster CA's certificate, PEM: what the profile trusts.
    pub ca_pem: String,
    /// The principal the certificate names.
    pub principal: String,
    /// The certificate's serial number (lower-case hex): what
    /// `runnel user revoke --serial` takes.
    pub serial: String,
    /// When the certificate expires, in seconds since the Unix epoch.
    pub not_after_unix: i64,
}

impl Request for LoginRequest {
    const API_KEY: ApiKey = ApiKey::Login;
    type Response = Reply<LoginResponse>;
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAddRequest {
    pub name: String,
    pub password: String,
}

impl std::fmt::Debug for UserAddRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserAddRequest")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Request for UserAddRequest {
    const API_KEY: ApiKey = ApiKey::UserAdd;
    type Response = Reply<()>;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserListRequest {}

/// A certificate the SC issued at a login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCertificate {
    pub serial: String,
    pub not_after_unix: i64,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    /// The roles bound to the user's principal.
    pub roles: Vec<String>,
    /// Certificates issued to the user that have not expired.
    pub certificates: Vec<IssuedCertificate>,
}

impl Request for UserListRequest {
    const API_KEY: ApiKey = ApiKey::UserList;
    type Response = Reply<Vec<UserInfo>>;
}

/// Deletes a user and revokes every certificate issued to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDeleteRequest {
    pub name: String,
}

impl Request for UserDeleteRequest {
    const API_KEY: ApiKey = ApiKey::UserDelete;
    type Response = Reply<()>;
}

/// Sets a user's password. Certificates issued before stay valid until
/// revoked or expired.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPasswdRequest {
    pub name: String,
    pub password: String,
}

impl std::fmt::Debug for UserPasswdRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserPasswdRequest")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Request for UserPasswdRequest {
    const API_KEY: ApiKey = ApiKey::UserPasswd;
    type Response = Reply<()>;
}

/// Revokes certificates: every unexpired one issued to `user`, or the one
/// with `serial` (any certificate of the cluster CA, the admin's and the
/// nodes' included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserRevokeRequest {
    User(String),
    Serial(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeResponse {
    /// Serials newly revoked.
    pub revoked: Vec<String>,
}

impl Request for UserRevokeRequest {
    const API_KEY: ApiKey = ApiKey::UserRevoke;
    type Response = Reply<RevokeResponse>;
}

/// Creates a role, or replaces one of the same name when `replace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleCreateRequest {
    pub role: Role,
    pub replace: bool,
}

impl Request for RoleCreateRequest {
    const API_KEY: ApiKey = ApiKey::RoleCreate;
    type Response = Reply<()>;
}

/// Binds a principal to a role, or unbinds it when `unbind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleBindRequest {
    pub binding: Binding,
    pub unbind: bool,
}

impl Request for RoleBindRequest {
    const API_KEY: ApiKey = ApiKey::RoleBind;
    type Response = Reply<()>;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleListRequest {}

impl Request for RoleListRequest {
    const API_KEY: ApiKey = ApiKey::RoleList;
    type Response = Reply<Policy>;
}

/// Makes `policy` the cluster's whole policy: roles and bindings not in it
/// are removed (declarative, as `runnel apply -f`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyPolicyRequest {
    pub policy: Policy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyPolicyResponse {
    pub roles: usize,
    pub bindings: usize,
}

impl Request for ApplyPolicyRequest {
    const API_KEY: ApiKey = ApiKey::ApplyPolicy;
    type Response = Reply<ApplyPolicyResponse>;
}
