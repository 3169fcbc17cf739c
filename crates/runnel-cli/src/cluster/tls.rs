//! The local cluster's certificates, under `RUNNEL_HOME/local/tls/`: a
//! cluster CA (`ca.pem`, `ca.key`), one certificate per node (`sc.pem`,
//! `spu-N.pem`, naming `sc` and `spu:N`, valid for `localhost` and
//! `127.0.0.1`, where the local cluster listens) and one for the admin
//! (`admin.pem`, naming `admin`, the SC's superuser), each with its key.
//!
//! Created once and reused, so profiles and certificates issued at login
//! stay valid across restarts; only what is missing is created (an SPU
//! added later gets its certificate then). Keys are written with mode
//! 0600, every file through a temporary file and a rename, and a key
//! before its certificate: a certificate that exists is complete.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use runnel_pki::ClusterCa;
use time::{Duration, OffsetDateTime};

use crate::files;

/// The name the CA carries ("local Runnel CA").
const CLUSTER_NAME: &str = "local";
const CA_LIFETIME: Duration = Duration::days(10 * 365);
const LEAF_LIFETIME: Duration = Duration::days(365);
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
    /// `identities` that has none (for all of them with a new CA).
    pub fn ensure(&self, identities: &[Identity]) -> Result<(), Error> {
        files::create_private_dir(&self.dir)?;
        let now = OffsetDateTime::now_utc();
        let (ca, new_ca) = self.load_or_create_ca(now)?;
        for identity in identities {
            if new_ca || !self.cert(&identity.file_stem).exists() {
                self.issue(&ca, identity, now)?;
            }
        }
        Ok(())
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
        Ok((ca, false))
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
        write_file(&self.key(&identity.file_stem), &issued.key_pem, true)?;
        write_file(&self.cert(&identity.file_stem), &issued.cert_pem, false)?;
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

    use runnel_pki::{PeerIdentity, PrincipalSource};
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

    fn principal(path: &Path) -> String {
        let der = CertificateDer::from_pem_file(path).expect("read certificate");
        PeerIdentity::from_der(&der, PrincipalSource::CommonName)
            .expect("readable certificate")
            .principal
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn creates_a_ca_and_one_certificate_per_identity_with_private_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = TlsFiles::new(dir.path().join("tls"));
        files.ensure(&identities(2)).expect("create");
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
        files.ensure(&identities(1)).expect("create");
        let ca = fs::read(files.ca_cert()).expect("CA");
        let sc = fs::read(files.cert("sc")).expect("sc");
        files.ensure(&identities(3)).expect("grow");
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
        files.ensure(&identities(1)).expect("create");
        fs::remove_file(files.ca_key()).expect("remove key");
        let message = files
            .ensure(&identities(2))
            .expect_err("no key")
            .to_string();
        assert!(message.contains("ca.key"), "{message}");
        assert!(message.contains("to create a new CA"), "{message}");
    }
}
