//! The local cluster's certificates, under `RUNNEL_HOME/local/tls/`: a
//! cluster CA (`ca.pem`, `ca.key`), one certificate per node (`sc.pem`,
//! `spu-N.pem`, naming `sc` and `spu:N`, valid for `localhost` and
//! `127.0.0.1`, where the local cluster listens) and one for the admin
//! (`admin.pem`, naming `admin`, the SC's superuser), each with its key.
//!
//! The CA is created once and reused, so profiles and certificates issued
//! at login stay valid across restarts. Node and admin certificates are
//! issued when missing (an SPU added later gets its certificate then) and
//! issued again, with a new key, when they cannot be used or expire within
//! [`RENEW_BEFORE`], so that a cluster started a year later does not run
//! on expired certificates. The CA is never replaced here: a new CA would
//! invalidate every certificate users obtained with `runnel login`.
//!
//! Keys are written with mode 0600, every file through a temporary file
//! and a rename, and a key before its certificate (an old certificate is
//! removed first): a certificate that exists is complete.

use std::fs;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use runnel_pki::{ClusterCa, PeerIdentity, PrincipalSource};
use time::{Duration, OffsetDateTime};

use crate::files;
use runnel_pki::utc_text;

/// The name the CA carries ("local Runnel CA").
const CLUSTER_NAME: &str = "local";
const CA_LIFETIME: Duration = Duration::days(10 * 365);
const LEAF_LIFETIME: Duration = Duration::days(365);
/// A node or admin certificate expiring within this is issued again; a CA
/// expiring within this is refused. A month leaves time to act on the
/// refusal before anything stops working.
pub const RENEW_BEFORE: Duration = Duration::days(30);
/// The principal of the admin certificate, made a superuser of the SC.
pub const ADMIN: &str = "admin";

type Error = Box<dyn std::error::Error>;

/// A certificate to have: its files' stem and the principal it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub file_stem: String,
    pub common_name: String,
    /// Nodes serve listeners, so their certificates name the hosts
    /// clients dial.
    pub node: bool,
}

/// A certificate file [`TlsFiles::ensure`] replaced, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    pub file_stem: String,
    /// Why the old one could not stay, e.g. "it expires at ... UTC".
    pub reason: String,
}

/// What [`TlsFiles::ensure`] does with one certificate.
enum LeafState {
    Keep,
    Missing,
    Replace(String),
}

/// The files of the cluster's TLS directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    dir: PathBuf,
}

impl TlsFiles {
    pub fn new(dir: PathBuf) -> TlsFiles {
        TlsFiles { dir }
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    pub fn cert(&self, file_stem: &str) -> PathBuf {
        self.dir.join(format!("{file_stem}.pem"))
    }

    pub fn key(&self, file_stem: &str) -> PathBuf {
        self.dir.join(format!("{file_stem}.key"))
    }

    /// Creates the CA if there is none, and a certificate for each of
    /// `identities` that has none (for all of them with a new CA), and
    /// issues again those that cannot be used or expire within
    /// [`RENEW_BEFORE`] of `now`. Returns the certificates that replaced
    /// existing files. Refuses a CA that expires within [`RENEW_BEFORE`].
    pub fn ensure(
        &self,
        identities: &[Identity],
        now: OffsetDateTime,
    ) -> Result<Vec<Renewal>, Error> {
        files::create_private_dir(&self.dir)?;
        let (ca, new_ca) = self.load_or_create_ca(now)?;
        let mut renewals = Vec::new();
        for identity in identities {
            let state = if !new_ca {
                self.leaf_state(identity, now)
            } else if self.cert(&identity.file_stem).exists() {
                LeafState::Replace("the cluster CA is new".to_string())
            } else {
                LeafState::Missing
            };
            match state {
                LeafState::Keep => {}
                LeafState::Missing => self.issue(&ca, identity, now)?,
                LeafState::Replace(reason) => {
                    self.issue(&ca, identity, now)?;
                    renewals.push(Renewal {
                        file_stem: identity.file_stem.clone(),
                        reason,
                    });
                }
            }
        }
        Ok(renewals)
    }

    fn load_or_create_ca(&self, now: OffsetDateTime) -> Result<(ClusterCa, bool), Error> {
        let cert_path = self.ca_cert();
        if !cert_path.exists() {
            let ca = ClusterCa::generate(CLUSTER_NAME, now, CA_LIFETIME)?;
            write_file(&self.ca_key(), ca.key_pem(), true)?;
            write_file(&cert_path, ca.cert_pem(), false)?;
            return Ok((ca, true));
        }
        let cert = read(&cert_path)?;
        let key = read(&self.ca_key()).map_err(|error| {
            format!(
                "{error}; restore it, or remove {} to create a new CA and new certificates \
                 (certificates issued by the old CA stop working)",
                self.dir.display()
            )
        })?;
        let ca = ClusterCa::from_pem(&cert, &key)
            .map_err(|error| format!("the CA in {} cannot be used: {error}", self.dir.display()))?;
        self.check_ca_expiry(&ca, now)?;
        Ok((ca, false))
    }

    /// Refuses a CA about to expire rather than replace it, since a new CA
    /// invalidates every certificate the old one signed, users' included:
    /// that must be the operator's decision.
    fn check_ca_expiry(&self, ca: &ClusterCa, now: OffsetDateTime) -> Result<(), String> {
        let not_after = ca.not_after_unix();
        if not_after > (now + RENEW_BEFORE).unix_timestamp() {
            return Ok(());
        }
        let when = if not_after <= now.unix_timestamp() {
            "expired"
        } else {
            "expires"
        };
        Err(format!(
            "the cluster CA {} {when} at {}, and it is not replaced automatically: a new CA \
             invalidates every certificate the old one signed, including those users obtained \
             with `runnel login`. To make a new CA with new node and admin certificates, run \
             `runnel cluster stop`, remove {}, and run `runnel cluster start` again; then every \
             user must run `runnel login` again",
            self.ca_cert().display(),
            utc_text(not_after),
            self.dir.display()
        ))
    }

    /// Whether the certificate of `identity` can stay: it must be readable,
    /// have its key next to it, name the identity's principal and be valid
    /// for at least [`RENEW_BEFORE`] after `now`.
    fn leaf_state(&self, identity: &Identity, now: OffsetDateTime) -> LeafState {
        let path = self.cert(&identity.file_stem);
        let pem = match fs::read(&path) {
            Ok(pem) => pem,
            Err(error) if error.kind() == ErrorKind::NotFound => return LeafState::Missing,
            Err(error) => return LeafState::Replace(format!("it cannot be read: {error}")),
        };
        let key_path = self.key(&identity.file_stem);
        if let Err(error) = fs::File::open(&key_path) {
            return LeafState::Replace(format!(
                "its key {} cannot be read: {error}",
                key_path.display()
            ));
        }
        let read = match PeerIdentity::from_pem(&pem, PrincipalSource::CommonName) {
            Ok(read) => read,
            Err(reason) => return LeafState::Replace(format!("it cannot be used: {reason}")),
        };
        if read.principal != identity.common_name {
            return LeafState::Replace(format!(
                "it names {:?}, not {:?}",
                read.principal, identity.common_name
            ));
        }
        if read.not_after_unix <= now.unix_timestamp() {
            return LeafState::Replace(format!("it expired at {}", utc_text(read.not_after_unix)));
        }
        if read.not_after_unix <= (now + RENEW_BEFORE).unix_timestamp() {
            return LeafState::Replace(format!("it expires at {}", utc_text(read.not_after_unix)));
        }
        LeafState::Keep
    }

    fn issue(&self, ca: &ClusterCa, identity: &Identity, now: OffsetDateTime) -> Result<(), Error> {
        let (dns_names, ip_addrs) = if identity.node {
            (
                vec!["localhost".to_string()],
                vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let issued = ca.issue(
            &identity.common_name,
            &dns_names,
            &ip_addrs,
            now,
            LEAF_LIFETIME,
        )?;
        let cert_path = self.cert(&identity.file_stem);
        // Gone before the new key is written, so that a run interrupted
        // between the two leaves no certificate beside a key not its own.
        match fs::remove_file(&cert_path) {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => {
                return Err(format!("cannot remove {}: {error}", cert_path.display()).into());
            }
        }
        write_file(&self.key(&identity.file_stem), &issued.key_pem, true)?;
        write_file(&cert_path, &issued.cert_pem, false)?;
        Ok(())
    }
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
}

/// Writes a key (private) or a certificate (public) whole.
fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), Error> {
    let mode = if secret {
        files::PRIVATE
    } else {
        files::PUBLIC
    };
    Ok(files::write_whole(path, contents.as_bytes(), mode)?)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    use super::*;

    fn identities(spus: u32) -> Vec<Identity> {
        let mut identities = vec![
            Identity {
                file_stem: "sc".into(),
                common_name: "sc".into(),
                node: true,
            },
            Identity {
                file_stem: ADMIN.into(),
                common_name: ADMIN.into(),
                node: false,
            },
        ];
        identities.extend((1..=spus).map(|id| Identity {
            file_stem: format!("spu-{id}"),
            common_name: format!("spu:{id}"),
            node: true,
        }));
        identities
    }

    fn read_identity(path: &Path) -> PeerIdentity {
        let der = CertificateDer::from_pem_file(path).expect("read certificate");
        PeerIdentity::from_der(&der, PrincipalSource::CommonName).expect("readable certificate")
    }

    fn principal(path: &Path) -> String {
        read_identity(path).principal
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn load_ca(files: &TlsFiles) -> ClusterCa {
        ClusterCa::from_pem(
            &fs::read_to_string(files.ca_cert()).expect("CA certificate"),
            &fs::read_to_string(files.ca_key()).expect("CA key"),
        )
        .expect("CA")
    }

    /// Puts `cert_pem` and `key_pem` in place of `file_stem`'s files.
    fn replace_files(files: &TlsFiles, file_stem: &str, cert_pem: &str, key_pem: &str) {
        fs::write(files.key(file_stem), key_pem).expect("write key");
        fs::write(files.cert(file_stem), cert_pem).expect("write certificate");
    }

    fn renewed_stems(renewals: &[Renewal]) -> Vec<&str> {
        renewals
            .iter()
            .map(|renewal| renewal.file_stem.as_str())
            .collect()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn creates_a_ca_and_one_certificate_per_identity_with_private_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = TlsFiles::new(dir.path().join("tls"));
        files.ensure(&identities(2), now()).expect("create");
        assert_eq!(mode(&files.ca_key()), 0o600);
        for identity in identities(2) {
            assert_eq!(
                principal(&files.cert(&identity.file_stem)),
                identity.common_name
            );
            assert_eq!(mode(&files.key(&identity.file_stem)), 0o600);
        }
        assert_eq!(mode(dir.path().join("tls").as_path()), 0o700);
    }

    #[test]
    fn later_runs_keep_what_exists_and_add_what_is_missing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = TlsFiles::new(dir.path().join("tls"));
        files.ensure(&identities(1), now()).expect("create");
        let ca = fs::read(files.ca_cert()).expect("CA");
        let sc = fs::read(files.cert("sc")).expect("sc");
        let renewals = files.ensure(&identities(3), now()).expect("grow");
        assert_eq!(renewals, Vec::new(), "adding is not renewing");
        assert_eq!(fs::read(files.ca_cert()).expect("CA"), ca, "the CA is kept");
        assert_eq!(
            fs::read(files.cert("sc")).expect("sc"),
            sc,
            "the SC's is kept"
        );
        assert_eq!(principal(&files.cert("spu-3")), "spu:3");
    }

    #[test]
    fn a_ca_without_its_key_is_reported_with_advice() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = TlsFiles::new(dir.path().join("tls"));
        files.ensure(&identities(1), now()).expect("create");
        fs::remove_file(files.ca_key()).expect("remove key");
        let message = files
            .ensure(&identities(2), now())
            .expect_err("no key")
            .to_string();
        assert!(message.contains("ca.key"), "{message}");
        assert!(message.contains("to create a new CA"), "{message}");
    }

    #[test]
    fn a_certificate_about_to_expire_is_issued_again_and_a_fresh_one_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = TlsFiles::new(dir.path().join("tls"));
        let now = now();
        files.ensure(&identities(2), now).expect("create");
        // Issued 340 days ago for a year: 25 days left.
        let ca = load_ca(&files);
        let old = ca
            .issue(
                "spu:1",
                &["localhost".to_string()],
                &[],
                now - Duration::days(340),
                LEAF_LIFETIME,
            )
            .expect("issue");
        replace_files(&files, "spu-1", &old.cert_pem, &old.key_pem);
        let ca_before = fs::read(files.ca_cert()).expect("CA");
        let sc_before = fs::read(files.cert("sc")).expect("sc");
        let sc_key_before = fs::read(files.key("sc")).expect("sc key");

        let renewals = files.ensure(&identities(2), now).expect("renew");

        assert_eq!(renewed_stems(&renewals), ["spu-1"]);
        assert!(
            renewals[0].reason.starts_with("it expires at "),
            "{}",
            renewals[0].reason
        );
        let renewed = read_identity(&files.cert("spu-1"));
        assert_eq!(renewed.principal, "spu:1");
        assert_ne!(renewed.serial, old.serial);
        assert!(
            renewed.not_after_unix > (now + LEAF_LIFETIME - Duration::days(1)).unix_timestamp(),
            "renewed for a whole lifetime, until {}",
            renewed.not_after_unix
        );
        assert_ne!(
            fs::read_to_string(files.key("spu-1")).expect("key"),
            old.key_pem,
            "with a new key"
        );
        assert_eq!(mode(&files.key("spu-1")), 0o600);
        assert_eq!(fs::read(files.cert("sc")).expect("sc"), sc_before);
        assert_eq!(fs::read(files.key("sc")).expect("sc key"), sc_key_before);
        assert_eq!(fs::read(files.ca_cert()).expect("CA"), ca_before);
    }

    #[test]
    fn expired_unreadable_misnamed_or_keyless_certificates_are_issued_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = TlsFiles::new(dir.path().join("tls"));
        let now = now();
        files.ensure(&identities(3), now).expect("create");
        let ca = load_ca(&files);
        let expired = runnel_pki::hostile::expired(&ca, "sc", now).expect("expired");
        replace_files(&files, "sc", &expired.cert_pem, &expired.key_pem);
        fs::write(files.cert(ADMIN), "not a certificate").expect("garbage");
        let other = ca
            .issue("spu:1", &[], &[], now, LEAF_LIFETIME)
            .expect("issue");
        replace_files(&files, "spu-2", &other.cert_pem, &other.key_pem);
        fs::remove_file(files.key("spu-3")).expect("remove key");

        let renewals = files.ensure(&identities(3), now).expect("renew");

        assert_eq!(
            renewed_stems(&renewals),
            ["sc", ADMIN, "spu-2", "spu-3"],
            "{renewals:?}"
        );
        assert!(
            renewals[0].reason.starts_with("it expired at "),
            "{renewals:?}"
        );
        assert!(
            renewals[1].reason.contains("cannot be used"),
            "{renewals:?}"
        );
        assert!(renewals[2].reason.contains("\"spu:1\""), "{renewals:?}");
        assert!(renewals[3].reason.contains("spu-3.key"), "{renewals:?}");
        for identity in identities(3) {
            let read = read_identity(&files.cert(&identity.file_stem));
            assert_eq!(read.principal, identity.common_name);
            assert!(read.not_after_unix > (now + RENEW_BEFORE).unix_timestamp());
            assert!(files.key(&identity.file_stem).exists());
        }
        assert_eq!(
            files.ensure(&identities(3), now).expect("again"),
            Vec::new(),
            "renewed certificates are kept"
        );
    }

    #[test]
    fn a_year_later_every_certificate_is_renewed_under_the_same_ca() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = TlsFiles::new(dir.path().join("tls"));
        let then = now();
        files.ensure(&identities(1), then).expect("create");
        let ca_before = fs::read(files.ca_cert()).expect("CA");

        let later = then + LEAF_LIFETIME - Duration::days(10);
        let renewals = files.ensure(&identities(1), later).expect("renew");

        assert_eq!(renewed_stems(&renewals), ["sc", ADMIN, "spu-1"]);
        assert_eq!(fs::read(files.ca_cert()).expect("CA"), ca_before);
        for identity in identities(1) {
            let read = read_identity(&files.cert(&identity.file_stem));
            assert!(read.not_after_unix > (later + RENEW_BEFORE).unix_timestamp());
        }
    }

    #[test]
    fn a_ca_about_to_expire_is_refused_and_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = TlsFiles::new(dir.path().join("tls"));
        let now = now();
        files.ensure(&identities(1), now).expect("create");
        let short = ClusterCa::generate(CLUSTER_NAME, now, Duration::days(20)).expect("CA");
        fs::write(files.ca_key(), short.key_pem()).expect("write CA key");
        fs::write(files.ca_cert(), short.cert_pem()).expect("write CA");
        let sc_before = fs::read(files.cert("sc")).expect("sc");

        let message = files
            .ensure(&identities(1), now)
            .expect_err("CA about to expire")
            .to_string();

        assert!(message.contains("ca.pem expires at"), "{message}");
        assert!(message.contains("not replaced automatically"), "{message}");
        assert!(message.contains("runnel login"), "{message}");
        assert_eq!(
            fs::read(files.ca_cert()).expect("CA"),
            short.cert_pem().as_bytes()
        );
        assert_eq!(fs::read(files.cert("sc")).expect("sc"), sc_before);
    }
}
