//! The store's security tables: users and their password hashes, the
//! authorization policy, the certificates issued at login, and the serials
//! of revoked certificates.
//!
//! A security change is a list of [`SecurityMutation`]s written in one
//! transaction of its own: it is no metadata change, so it takes no
//! metadata version. As for the metadata, every write is checked against
//! what the store holds and refused whole if it would leave the tables
//! inconsistent (an issued certificate names a stored user, the policy
//! validates, serials are canonical), and the same checks run on load.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use redb::{
    ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use runnel_auth::Policy;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, corrupt, decode, encode};

/// User name → the user's password hash, a PHC string.
const USERS: TableDefinition<&str, &str> = TableDefinition::new("users");
/// [`POLICY_KEY`] → the [`Policy`]; absent until the first change.
const POLICY: TableDefinition<&str, &[u8]> = TableDefinition::new("policy");
const POLICY_KEY: &str = "policy";
/// Serial → [`IssuedRecord`]: the certificates login issued.
const ISSUED: TableDefinition<&str, &[u8]> = TableDefinition::new("issued_certificates");
/// Serial → the certificate's end of validity (Unix seconds), or
/// [`NOT_AFTER_UNKNOWN`] for a certificate this SC did not issue.
const REVOKED: TableDefinition<&str, i64> = TableDefinition::new("revoked_certificates");

/// The end of validity recorded for a revoked certificate the SC knows
/// nothing of: such a revocation never expires.
pub const NOT_AFTER_UNKNOWN: i64 = i64::MAX;

/// The longest serial, in hex digits: 20 bytes (RFC 5280).
const SERIAL_HEX_LEN_MAX: usize = 2 * runnel_pki::SERIAL_LEN_MAX;

/// A password hash as stored: an argon2id PHC string. Kept out of `Debug`
/// output, so no log line carries what an offline guesser would need.
#[derive(Clone, PartialEq, Eq)]
pub struct HashedPassword(pub String);

impl fmt::Debug for HashedPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashedPassword(<argon2id>)")
    }
}

/// A certificate issued at a login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedRecord {
    pub user: String,
    /// End of validity, Unix seconds.
    pub not_after_unix: i64,
}

/// One change to the security tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityMutation {
    /// Adds a user or sets their password.
    PutUser {
        name: String,
        password: HashedPassword,
    },
    /// Removes a user; their issued certificates must go in the same
    /// change.
    DeleteUser(String),
    /// Replaces the whole policy.
    PutPolicy(Policy),
    PutIssued {
        serial: String,
        record: IssuedRecord,
    },
    DeleteIssued(String),
    PutRevoked {
        serial: String,
        not_after_unix: i64,
    },
    /// Forgets the revocation of a certificate that has expired, which no
    /// node accepts anyway.
    DeleteRevoked(String),
}

impl SecurityMutation {
    /// Records a certificate issued to `user`, valid until `not_after_unix`.
    pub fn issued(serial: &str, user: &str, not_after_unix: i64) -> SecurityMutation {
        SecurityMutation::PutIssued {
            serial: serial.to_string(),
            record: IssuedRecord {
                user: user.to_string(),
                not_after_unix,
            },
        }
    }

    /// Revokes the certificate `serial`, valid until `not_after_unix`.
    pub fn revoked(serial: &str, not_after_unix: i64) -> SecurityMutation {
        SecurityMutation::PutRevoked {
            serial: serial.to_string(),
            not_after_unix,
        }
    }
}

/// The security tables, as read at startup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedSecurity {
    pub users: BTreeMap<String, HashedPassword>,
    pub policy: Policy,
    pub issued: BTreeMap<String, IssuedRecord>,
    /// Serial → end of validity.
    pub revoked: BTreeMap<String, i64>,
}

/// Creates the security tables, so that every read finds them.
pub(super) fn create_tables(transaction: &WriteTransaction) -> Result<(), StoreError> {
    transaction.open_table(USERS)?;
    transaction.open_table(POLICY)?;
    transaction.open_table(ISSUED)?;
    transaction.open_table(REVOKED)?;
    Ok(())
}

impl Store {
    /// Reads the security tables, checking that they are consistent.
    pub fn load_security(&self) -> Result<LoadedSecurity, StoreError> {
        let transaction = self.database.begin_read()?;
        let mut users = BTreeMap::new();
        for entry in transaction.open_table(USERS)?.iter()? {
            let (name, hash) = entry?;
            let password = HashedPassword(hash.value().to_string());
            if let Some(problem) = user_problem(name.value(), &password) {
                return Err(corrupt("users", name.value(), problem));
            }
            users.insert(name.value().to_string(), password);
        }
        let policy = match transaction.open_table(POLICY)?.get(POLICY_KEY)? {
            None => Policy::default(),
            Some(bytes) => {
                let policy: Policy = decode("policy", POLICY_KEY, bytes.value())?;
                if let Err(error) = policy.validate() {
                    return Err(corrupt("policy", POLICY_KEY, error.to_string()));
                }
                policy
            }
        };
        let mut issued = BTreeMap::new();
        for entry in transaction.open_table(ISSUED)?.iter()? {
            let (serial, bytes) = entry?;
            let serial = serial.value();
            let record: IssuedRecord = decode("issued_certificates", serial, bytes.value())?;
            let problem = serial_problem(serial).or_else(|| {
                (!users.contains_key(&record.user))
                    .then(|| format!("it names user '{}', who is not stored", record.user))
            });
            if let Some(problem) = problem {
                return Err(corrupt("issued_certificates", serial, problem));
            }
            issued.insert(serial.to_string(), record);
        }
        let mut revoked = BTreeMap::new();
        for entry in transaction.open_table(REVOKED)?.iter()? {
            let (serial, not_after) = entry?;
            if let Some(problem) = serial_problem(serial.value()) {
                return Err(corrupt("revoked_certificates", serial.value(), problem));
            }
            revoked.insert(serial.value().to_string(), not_after.value());
        }
        Ok(LoadedSecurity {
            users,
            policy,
            issued,
            revoked,
        })
    }

    /// Applies `mutations` in one durable transaction: all of them or, on
    /// any error, none.
    pub fn apply_security(&self, mutations: &[SecurityMutation]) -> Result<(), StoreError> {
        let transaction = self.database.begin_write()?;
        {
            let mut tables = Tables {
                users: transaction.open_table(USERS)?,
                policy: transaction.open_table(POLICY)?,
                issued: transaction.open_table(ISSUED)?,
                revoked: transaction.open_table(REVOKED)?,
            };
            let mut deleted_users = BTreeSet::new();
            for mutation in mutations {
                if let SecurityMutation::DeleteUser(name) = mutation {
                    deleted_users.insert(name.as_str());
                }
                tables.apply(mutation)?;
            }
            tables.check_no_issued_for(&deleted_users)?;
        }
        // Returning early above drops the transaction, which aborts it.
        transaction.commit()?;
        Ok(())
    }

    /// Removes the issued certificates and revocations that ended before
    /// `before_unix`, in one transaction; returns how many went.
    pub fn drop_expired_security(&self, before_unix: i64) -> Result<usize, StoreError> {
        let transaction = self.database.begin_write()?;
        let dropped = {
            let mut issued = transaction.open_table(ISSUED)?;
            let mut expired_issued = Vec::new();
            for entry in issued.iter()? {
                let (serial, bytes) = entry?;
                let record: IssuedRecord =
                    decode("issued_certificates", serial.value(), bytes.value())?;
                if record.not_after_unix < before_unix {
                    expired_issued.push(serial.value().to_string());
                }
            }
            for serial in &expired_issued {
                issued.remove(serial.as_str())?;
            }
            let mut revoked = transaction.open_table(REVOKED)?;
            let count = revoked.len()?;
            revoked.retain(|_, not_after| not_after >= before_unix)?;
            expired_issued.len() + (count - revoked.len()?) as usize
        };
        transaction.commit()?;
        Ok(dropped)
    }
}

/// The security tables inside one write transaction.
struct Tables<'txn> {
    users: redb::Table<'txn, &'static str, &'static str>,
    policy: redb::Table<'txn, &'static str, &'static [u8]>,
    issued: redb::Table<'txn, &'static str, &'static [u8]>,
    revoked: redb::Table<'txn, &'static str, i64>,
}

impl Tables<'_> {
    fn apply(&mut self, mutation: &SecurityMutation) -> Result<(), StoreError> {
        match mutation {
            SecurityMutation::PutUser { name, password } => {
                if let Some(problem) = user_problem(name, password) {
                    return Err(StoreError::Inconsistent(problem));
                }
                self.users.insert(name.as_str(), password.0.as_str())?;
            }
            SecurityMutation::DeleteUser(name) => {
                if self.users.remove(name.as_str())?.is_none() {
                    return Err(StoreError::Inconsistent(format!(
                        "user '{name}' is deleted but not stored"
                    )));
                }
            }
            SecurityMutation::PutPolicy(policy) => {
                if let Err(error) = policy.validate() {
                    return Err(StoreError::Inconsistent(format!(
                        "the policy is invalid: {error}"
                    )));
                }
                self.policy.insert(POLICY_KEY, encode(policy).as_slice())?;
            }
            SecurityMutation::PutIssued { serial, record } => self.put_issued(serial, record)?,
            SecurityMutation::DeleteIssued(serial) => {
                if self.issued.remove(serial.as_str())?.is_none() {
                    return Err(StoreError::Inconsistent(format!(
                        "issued certificate {serial} is deleted but not stored"
                    )));
                }
            }
            SecurityMutation::PutRevoked {
                serial,
                not_after_unix,
            } => {
                if let Some(problem) = serial_problem(serial) {
                    return Err(StoreError::Inconsistent(problem));
                }
                if self
                    .revoked
                    .insert(serial.as_str(), *not_after_unix)?
                    .is_some()
                {
                    return Err(StoreError::Inconsistent(format!(
                        "certificate {serial} is revoked twice"
                    )));
                }
            }
            SecurityMutation::DeleteRevoked(serial) => {
                if self.revoked.remove(serial.as_str())?.is_none() {
                    return Err(StoreError::Inconsistent(format!(
                        "the revocation of certificate {serial} is deleted but not stored"
                    )));
                }
            }
        }
        Ok(())
    }

    fn put_issued(&mut self, serial: &str, record: &IssuedRecord) -> Result<(), StoreError> {
        if let Some(problem) = serial_problem(serial) {
            return Err(StoreError::Inconsistent(problem));
        }
        if self.users.get(record.user.as_str())?.is_none() {
            return Err(StoreError::Inconsistent(format!(
                "certificate {serial} is issued to user '{}', who is not stored",
                record.user
            )));
        }
        if self
            .issued
            .insert(serial, encode(record).as_slice())?
            .is_some()
        {
            return Err(StoreError::Inconsistent(format!(
                "certificate {serial} is issued twice"
            )));
        }
        Ok(())
    }

    /// Refuses a change that deletes users but keeps certificates issued
    /// to them.
    fn check_no_issued_for(&self, deleted: &BTreeSet<&str>) -> Result<(), StoreError> {
        if deleted.is_empty() {
            return Ok(());
        }
        for entry in self.issued.iter()? {
            let (serial, bytes) = entry?;
            let record: IssuedRecord =
                decode("issued_certificates", serial.value(), bytes.value())?;
            if deleted.contains(record.user.as_str()) {
                return Err(StoreError::Inconsistent(format!(
                    "user '{}' is deleted but certificate {} issued to them is kept",
                    record.user,
                    serial.value()
                )));
            }
        }
        Ok(())
    }
}

/// What is wrong with a stored user: a valid name and an argon2id hash.
fn user_problem(name: &str, password: &HashedPassword) -> Option<String> {
    if let Err(error) = runnel_auth::validate_user_name(name) {
        return Some(error.to_string());
    }
    match argon2::PasswordHash::new(&password.0) {
        Ok(hash) if hash.algorithm == argon2::Algorithm::Argon2id.ident() => None,
        Ok(hash) => Some(format!(
            "user '{name}''s password hash uses {}, not argon2id",
            hash.algorithm
        )),
        Err(error) => Some(format!(
            "user '{name}''s password hash is not a PHC string: {error}"
        )),
    }
}

/// What is wrong with a serial as a key: it must be written as
/// `PeerIdentity::serial` writes it (see [`canonical_serial`]).
fn serial_problem(serial: &str) -> Option<String> {
    match canonical_serial(serial) {
        Ok(canonical) if canonical == serial => None,
        Ok(canonical) => Some(format!(
            "serial {serial:?} is not canonical (it is written {canonical})"
        )),
        Err(problem) => Some(problem),
    }
}

/// `text` as a certificate's revocation key: lower-case hex of the serial
/// number, two digits a byte, without leading zero bytes. Accepts upper
/// case, odd lengths and leading zeros, as someone may type them.
pub fn canonical_serial(text: &str) -> Result<String, String> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(format!(
            "serial {:?} is not a hexadecimal number; copy it from `runnel user list`",
            runnel_auth::excerpt(text)
        ));
    }
    let digits = text.trim_start_matches('0').to_ascii_lowercase();
    if digits.is_empty() {
        return Err("serial 0 is no certificate's: serials are positive".to_string());
    }
    let canonical = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits
    };
    if canonical.len() > SERIAL_HEX_LEN_MAX {
        return Err(format!(
            "serial {} is longer than {} bytes, more than any certificate's",
            runnel_auth::excerpt(text),
            runnel_pki::SERIAL_LEN_MAX
        ));
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use runnel_auth::{Action, Binding, ResourcePattern, Role, Rule};

    use super::*;

    /// An argon2id PHC string: the store checks the format, not the hash.
    const HASH: &str = "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$bWbg2m7xOYMX7PNcZVxGIw";

    fn hashed() -> HashedPassword {
        HashedPassword(HASH.to_string())
    }

    fn put_user(name: &str) -> SecurityMutation {
        SecurityMutation::PutUser {
            name: name.to_string(),
            password: hashed(),
        }
    }

    fn policy() -> Policy {
        Policy {
            roles: vec![Role {
                name: "reader".to_string(),
                rules: vec![Rule {
                    effect: runnel_auth::Effect::Allow,
                    actions: vec![Action::Read],
                    resources: vec![
                        "topic:orders-*"
                            .parse::<ResourcePattern>()
                            .expect("pattern"),
                    ],
                }],
            }],
            bindings: vec![Binding {
                principal: "alice".to_string(),
                role: "reader".to_string(),
            }],
        }
    }

    fn open(dir: &tempfile::TempDir) -> Store {
        Store::open(&dir.path().join("metadata.redb")).expect("open")
    }

    #[test]
    fn the_hash_in_these_tests_is_argon2id() {
        assert_eq!(user_problem("alice", &hashed()), None);
    }

    #[test]
    fn security_tables_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = open(&dir);
            assert_eq!(
                store.load_security().expect("load"),
                LoadedSecurity::default()
            );
            store
                .apply_security(&[put_user("alice"), put_user("bob")])
                .expect("users");
            store
                .apply_security(&[SecurityMutation::PutPolicy(policy())])
                .expect("policy");
            store
                .apply_security(&[
                    SecurityMutation::issued("0a01", "alice", 2_000),
                    SecurityMutation::issued("bb", "bob", 3_000),
                ])
                .expect("issued");
            store
                .apply_security(&[
                    SecurityMutation::DeleteIssued("bb".to_string()),
                    SecurityMutation::revoked("bb", 3_000),
                    SecurityMutation::DeleteUser("bob".to_string()),
                    SecurityMutation::revoked("ff", NOT_AFTER_UNKNOWN),
                    SecurityMutation::revoked("cc", 1_000),
                ])
                .expect("delete bob");
            store
                .apply_security(&[SecurityMutation::DeleteRevoked("cc".to_string())])
                .expect("an expired revocation forgotten");
        }
        let loaded = open(&dir).load_security().expect("load");
        assert_eq!(
            loaded,
            LoadedSecurity {
                users: BTreeMap::from([("alice".to_string(), hashed())]),
                policy: policy(),
                issued: BTreeMap::from([(
                    "0a01".to_string(),
                    IssuedRecord {
                        user: "alice".to_string(),
                        not_after_unix: 2_000,
                    }
                )]),
                revoked: BTreeMap::from([
                    ("bb".to_string(), 3_000),
                    ("ff".to_string(), NOT_AFTER_UNKNOWN),
                ]),
            }
        );
    }

    #[test]
    fn an_inconsistent_security_change_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        store
            .apply_security(&[
                put_user("alice"),
                SecurityMutation::issued("01", "alice", 10),
                SecurityMutation::revoked("02", 5),
            ])
            .expect("first change");
        let before = store.load_security().expect("load");
        let mut unknown_role = policy();
        unknown_role.bindings[0].role = "writer".to_string();
        let refused: Vec<Vec<SecurityMutation>> = vec![
            // Names and hashes are checked.
            vec![put_user("bad name")],
            vec![SecurityMutation::PutUser {
                name: "carol".to_string(),
                password: HashedPassword("plain text".to_string()),
            }],
            vec![SecurityMutation::PutUser {
                name: "carol".to_string(),
                password: HashedPassword(HASH.replace("argon2id", "argon2i")),
            }],
            // A certificate for a stranger, twice, or with a bad serial.
            vec![
                put_user("carol"),
                SecurityMutation::issued("03", "dave", 10),
            ],
            vec![SecurityMutation::issued("01", "alice", 10)],
            vec![SecurityMutation::issued("0001", "alice", 10)],
            vec![SecurityMutation::issued("xyz", "alice", 10)],
            // A user deleted with a certificate left, or not stored.
            vec![SecurityMutation::DeleteUser("alice".to_string())],
            vec![SecurityMutation::DeleteUser("dave".to_string())],
            vec![SecurityMutation::DeleteIssued("04".to_string())],
            vec![SecurityMutation::DeleteRevoked("04".to_string())],
            // Revoked twice; an invalid policy.
            vec![put_user("carol"), SecurityMutation::revoked("02", 5)],
            vec![SecurityMutation::PutPolicy(unknown_role)],
        ];
        for mutations in &refused {
            let error = store.apply_security(mutations).expect_err("refused");
            assert!(matches!(error, StoreError::Inconsistent(_)), "{error}");
            assert_eq!(
                store.load_security().expect("load"),
                before,
                "{mutations:?}"
            );
        }
    }

    /// Revocations go by their own end of validity, whether or not a
    /// record of the certificate is left ("03": its user was deleted);
    /// one with no known end stays.
    #[test]
    fn expired_certificates_and_revocations_are_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        store
            .apply_security(&[
                put_user("alice"),
                SecurityMutation::issued("01", "alice", 100),
                SecurityMutation::issued("02", "alice", 200),
                SecurityMutation::revoked("01", 100),
                SecurityMutation::revoked("03", 150),
                SecurityMutation::revoked("04", NOT_AFTER_UNKNOWN),
            ])
            .expect("change");
        assert_eq!(store.drop_expired_security(160).expect("drop"), 3);
        let loaded = store.load_security().expect("load");
        assert_eq!(loaded.issued.keys().collect::<Vec<_>>(), ["02"]);
        assert_eq!(loaded.revoked.keys().collect::<Vec<_>>(), ["04"]);
    }

    #[test]
    fn serials_are_read_as_certificates_write_them() {
        for (text, canonical) in [
            ("0a1b", "0a1b"),
            ("A1B", "0a1b"),
            ("000a1b", "0a1b"),
            ("ff", "ff"),
            ("1", "01"),
        ] {
            assert_eq!(canonical_serial(text).as_deref(), Ok(canonical), "{text}");
        }
        for bad in ["", "0", "000", "0x1f", "12 34", "g1", &"f".repeat(41)] {
            assert!(canonical_serial(bad).is_err(), "{bad:?}");
        }
        assert_eq!(canonical_serial(&"f".repeat(40)).map(|s| s.len()), Ok(40));
    }
}
