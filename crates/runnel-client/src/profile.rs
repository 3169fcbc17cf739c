//! Cluster profiles: which SC the CLI and examples talk to, and with which
//! TLS identity, kept in `$RUNNEL_HOME/config.toml`:
//!
//! ```toml
//! current = "local"
//!
//! [profiles.local]
//! sc = "127.0.0.1:9003"
//!
//! [profiles.local.tls]
//! ca = "local/tls/ca.pem"
//! cert = "local/tls/admin.pem"
//! key = "local/tls/admin.key"
//! domain = "sc.example.com"   # optional
//! ```
//!
//! A profile with a `tls` table connects to the SC and to every SPU over
//! TLS 1.3, trusting only `ca` and presenting `cert` and `key`; `domain`,
//! when set, is the name verified in servers' certificates instead of the
//! host dialled. Relative paths are relative to the directory holding
//! `config.toml`, so a Runnel home can be moved whole.
//!
//! Settings this version does not know (a newer CLI's) are kept as they
//! are when the file is saved again. Saving writes a temporary file and
//! renames it over the old one, so a crash leaves the old file or the new
//! one, never half of either.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use runnel_transport::{ClientTls, TlsError, TransportConfig};
use serde::{Deserialize, Serialize};

use crate::ClientError;

/// Name of the profile file inside the Runnel home directory.
pub const CONFIG_FILE: &str = "config.toml";
/// Largest profile file read: a file this large is not one we wrote.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Largest PEM file read: a CA bundle, a certificate chain or a key is
/// far smaller.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// The Runnel home directory: `$RUNNEL_HOME`, or `$HOME/.runnel`.
pub fn runnel_home() -> Result<PathBuf, ClientError> {
    home_from(
        std::env::var_os("RUNNEL_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

/// [`runnel_home`] from given values, so tests need not touch the
/// process environment.
fn home_from(runnel_home: Option<PathBuf>, home: Option<PathBuf>) -> Result<PathBuf, ClientError> {
    match (runnel_home, home) {
        (Some(dir), _) if !dir.as_os_str().is_empty() => Ok(dir),
        (_, Some(home)) if !home.as_os_str().is_empty() => Ok(home.join(".runnel")),
        _ => Err(ClientError::NoHome),
    }
}

/// A named cluster: where its SC listens for clients, and the TLS
/// identity to connect with, if the cluster runs with TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub sc_addr: String,
    pub tls: Option<ProfileTls>,
}

impl Profile {
    /// A profile without TLS.
    pub fn plaintext(name: &str, sc_addr: &str) -> Profile {
        Profile {
            name: name.to_string(),
            sc_addr: sc_addr.to_string(),
            tls: None,
        }
    }

    /// The transport settings for every connection of this profile: the
    /// defaults, with TLS when the profile has it. Reads the TLS files.
    pub fn transport(&self) -> Result<TransportConfig, ClientError> {
        let client_tls = self.tls.as_ref().map(ProfileTls::client_tls).transpose()?;
        Ok(TransportConfig {
            client_tls,
            ..TransportConfig::default()
        })
    }
}

/// A profile's TLS settings: the files of its identity, and the name to
/// verify in servers' certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileTls {
    /// The cluster CA's certificate: servers must present a certificate
    /// it signed.
    pub ca: PathBuf,
    /// This client's certificate, signed by the cluster CA; it names the
    /// principal the cluster authorizes.
    pub cert: PathBuf,
    /// The private key of `cert`.
    pub key: PathBuf,
    /// Verified in servers' certificates instead of the host dialled (a
    /// certificate issued for a DNS name, reached by IP address).
    pub domain: Option<String>,
}

impl ProfileTls {
    /// Reads the three files and builds the client side of TLS 1.3 with
    /// them. Errors name the file at fault.
    pub fn client_tls(&self) -> Result<ClientTls, ClientError> {
        let ca = read_pem("CA certificate", &self.ca)?;
        let cert = read_pem("certificate", &self.cert)?;
        let key = read_pem("private key", &self.key)?;
        let domain = self.domain.as_deref();
        ClientTls::new(&ca, Some((&cert, &key)), domain).map_err(|error| self.unusable(&ca, error))
    }

    /// Which setting `error` is about: the domain, else the CA if it fails
    /// alone, else the certificate and key.
    fn unusable(&self, ca: &[u8], error: TlsError) -> ClientError {
        let setting = match &error {
            TlsError::ServerName(name) => format!("TLS domain '{name}'"),
            _ if ClientTls::new(ca, None, None).is_err() => {
                format!("CA certificate {}", self.ca.display())
            }
            _ => format!(
                "certificate {} with key {}",
                self.cert.display(),
                self.key.display()
            ),
        };
        ClientError::TlsUnusable {
            setting,
            reason: error.to_string(),
        }
    }
}

/// Reads a PEM file of a profile, refusing one too large to be one.
fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    let unreadable = |reason: String| ClientError::TlsFile {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let length = fs::metadata(path)
        .map_err(|error| unreadable(error.to_string()))?
        .len();
    if length > MAX_PEM_BYTES {
        return Err(unreadable(format!(
            "it is {length} bytes long; a PEM file is at most {MAX_PEM_BYTES} bytes"
        )));
    }
    fs::read(path).map_err(|error| unreadable(error.to_string()))
}

/// The profile file as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current: Option<String>,
    #[serde(default)]
    profiles: BTreeMap<String, ProfileEntry>,
    /// Settings of newer versions, kept unchanged.
    #[serde(flatten)]
    other: toml::Table,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProfileEntry {
    sc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls: Option<TlsEntry>,
    #[serde(flatten)]
    other: toml::Table,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TlsEntry {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    domain: Option<String>,
    #[serde(flatten)]
    other: toml::Table,
}

/// The profiles of one Runnel home, loaded into memory; changes are
/// written by [`Profiles::save`].
#[derive(Debug, Clone)]
pub struct Profiles {
    path: PathBuf,
    file: ConfigFile,
}

impl Profiles {
    /// Reads `home/config.toml`; a missing file is no profiles yet.
    pub fn load(home: &Path) -> Result<Profiles, ClientError> {
        let path = home.join(CONFIG_FILE);
        let file = match fs::metadata(&path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => ConfigFile::default(),
            Err(error) => return Err(io_error("read", &path, &error)),
            Ok(metadata) if metadata.len() > MAX_CONFIG_BYTES => {
                return Err(ClientError::ConfigInvalid {
                    path,
                    reason: format!(
                        "it is {} bytes long; a profile file is at most {MAX_CONFIG_BYTES} bytes",
                        metadata.len()
                    ),
                });
            }
            Ok(_) => {
                let text =
                    fs::read_to_string(&path).map_err(|error| io_error("read", &path, &error))?;
                toml::from_str(&text).map_err(|error| ClientError::ConfigInvalid {
                    path: path.clone(),
                    reason: error.message().to_string(),
                })?
            }
        };
        Ok(Profiles { path, file })
    }

    /// Where these profiles are saved.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the profiles atomically: a temporary file beside the real
    /// one, synced, then renamed over it.
    pub fn save(&self) -> Result<(), ClientError> {
        let directory = self.directory();
        fs::create_dir_all(directory).map_err(|error| io_error("create", directory, &error))?;
        let text = toml::to_string(&self.file).map_err(|error| ClientError::ConfigInvalid {
            path: self.path.clone(),
            reason: error.to_string(),
        })?;
        write_whole(&self.path, text.as_bytes(), 0o644)
            .map_err(|error| io_error("write", &self.path, &error))
    }

    /// Every profile, by name.
    pub fn list(&self) -> Vec<Profile> {
        self.file
            .profiles
            .iter()
            .map(|(name, entry)| self.profile(name, entry))
            .collect()
    }

    /// The profile commands use unless told otherwise.
    pub fn current(&self) -> Result<Profile, ClientError> {
        let name = self.file.current.as_ref().ok_or(ClientError::NoProfile)?;
        self.get(name)
    }

    pub fn get(&self, name: &str) -> Result<Profile, ClientError> {
        match self.file.profiles.get(name) {
            Some(entry) => Ok(self.profile(name, entry)),
            None => Err(self.unknown(name)),
        }
    }

    /// Makes `name` the current profile.
    pub fn switch(&mut self, name: &str) -> Result<(), ClientError> {
        if !self.file.profiles.contains_key(name) {
            return Err(self.unknown(name));
        }
        self.file.current = Some(name.to_string());
        Ok(())
    }

    /// Adds a new profile; the first one becomes current.
    pub fn add(&mut self, profile: Profile) -> Result<(), ClientError> {
        if self.file.profiles.contains_key(&profile.name) {
            return Err(ClientError::ProfileExists(profile.name));
        }
        if profile.name.is_empty() {
            return Err(ClientError::EmptyProfileName);
        }
        self.upsert(profile);
        Ok(())
    }

    /// Adds a profile, or points an existing one at the profile's SC with
    /// its TLS settings, keeping settings this version does not know; with
    /// no current profile, it becomes current.
    pub fn upsert(&mut self, profile: Profile) {
        let entry = self
            .file
            .profiles
            .entry(profile.name.clone())
            .or_insert_with(|| ProfileEntry {
                sc: String::new(),
                tls: None,
                other: toml::Table::new(),
            });
        entry.sc = profile.sc_addr;
        entry.tls = profile.tls.map(|tls| TlsEntry {
            ca: tls.ca,
            cert: tls.cert,
            key: tls.key,
            domain: tls.domain,
            other: entry
                .tls
                .take()
                .map(|previous| previous.other)
                .unwrap_or_default(),
        });
        if self.file.current.is_none() {
            self.file.current = Some(profile.name);
        }
    }

    /// Deletes a profile; deleting the current one leaves none current.
    pub fn delete(&mut self, name: &str) -> Result<(), ClientError> {
        if self.file.profiles.remove(name).is_none() {
            return Err(self.unknown(name));
        }
        if self.file.current.as_deref() == Some(name) {
            self.file.current = None;
        }
        Ok(())
    }

    /// The directory holding the profile file; relative TLS paths start
    /// there.
    fn directory(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    fn profile(&self, name: &str, entry: &ProfileEntry) -> Profile {
        let directory = self.directory();
        Profile {
            name: name.to_string(),
            sc_addr: entry.sc.clone(),
            tls: entry.tls.as_ref().map(|tls| ProfileTls {
                ca: directory.join(&tls.ca),
                cert: directory.join(&tls.cert),
                key: directory.join(&tls.key),
                domain: tls.domain.clone(),
            }),
        }
    }

    fn unknown(&self, name: &str) -> ClientError {
        let known = if self.file.profiles.is_empty() {
            "none; add one with `runnel profile add NAME ADDRESS`".to_string()
        } else {
            self.file
                .profiles
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        ClientError::UnknownProfile {
            name: name.to_string(),
            known,
        }
    }
}

/// Writes `contents` to `path` whole, created with `mode` from the first
/// byte on: a temporary file beside it (named for this process, so two
/// writers never share one), synced, renamed over it, and the directory
/// synced so the rename lasts.
pub fn write_whole(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temporary, path));
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    // A failure here leaves a valid file either way, so it is not
    // reported.
    if let Some(directory) = path.parent()
        && let Ok(directory) = fs::File::open(directory)
    {
        let _ = directory.sync_all();
    }
    Ok(())
}

fn io_error(action: &'static str, path: &Path, error: &std::io::Error) -> ClientError {
    ClientError::ConfigIo {
        action,
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_prefers_runnel_home_then_home() {
        let home = |runnel: Option<&str>, home: Option<&str>| {
            home_from(runnel.map(PathBuf::from), home.map(PathBuf::from))
        };
        assert_eq!(home(Some("/r"), Some("/h")).ok(), Some(PathBuf::from("/r")));
        assert_eq!(
            home(None, Some("/h")).ok(),
            Some(PathBuf::from("/h/.runnel"))
        );
        assert_eq!(
            home(Some(""), Some("/h")).ok(),
            Some(PathBuf::from("/h/.runnel"))
        );
        assert!(matches!(home(None, None), Err(ClientError::NoHome)));
    }

    #[test]
    fn no_file_means_no_profile_with_advice() {
        let home = tempfile::tempdir().expect("temp dir");
        let profiles = Profiles::load(home.path()).expect("load");
        assert!(profiles.list().is_empty());
        let error = profiles.current().expect_err("no current profile");
        assert!(matches!(error, ClientError::NoProfile));
        let message = error.to_string();
        assert!(message.contains("runnel cluster start"), "{message}");
        assert!(
            message.contains("runnel profile add NAME ADDRESS"),
            "{message}"
        );
    }

    #[test]
    fn profiles_survive_save_and_load() {
        let home = tempfile::tempdir().expect("temp dir");
        let mut profiles = Profiles::load(home.path()).expect("load");
        profiles
            .add(Profile::plaintext("local", "127.0.0.1:9003"))
            .expect("add local");
        profiles
            .add(Profile::plaintext("staging", "10.0.0.1:9003"))
            .expect("add staging");
        profiles.save().expect("save");

        let mut loaded = Profiles::load(home.path()).expect("reload");
        assert_eq!(
            loaded.current().expect("current"),
            Profile::plaintext("local", "127.0.0.1:9003"),
            "the first profile added becomes current"
        );
        let names: Vec<String> = loaded.list().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["local", "staging"]);

        loaded.switch("staging").expect("switch");
        loaded.upsert(Profile::plaintext("staging", "10.0.0.2:9003"));
        loaded.save().expect("save again");
        let reloaded = Profiles::load(home.path()).expect("reload again");
        assert_eq!(
            reloaded.current().expect("current").sc_addr,
            "10.0.0.2:9003"
        );
        let leftovers: Vec<_> = fs::read_dir(home.path())
            .expect("list home")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers, [CONFIG_FILE], "no temporary file is left");
    }

    #[test]
    fn the_file_format_is_the_documented_one() {
        let home = tempfile::tempdir().expect("temp dir");
        fs::write(
            home.path().join(CONFIG_FILE),
            "current = \"local\"\n[profiles.local]\nsc = \"127.0.0.1:9003\"\ncolor = true\n",
        )
        .expect("write config");
        let mut profiles = Profiles::load(home.path()).expect("load");
        assert_eq!(
            profiles.current().expect("current").sc_addr,
            "127.0.0.1:9003"
        );
        profiles.upsert(Profile::plaintext("local", "127.0.0.1:9100"));
        profiles.save().expect("save");
        let text = fs::read_to_string(home.path().join(CONFIG_FILE)).expect("read");
        let value: toml::Table = toml::from_str(&text).expect("valid toml");
        assert_eq!(value["current"].as_str(), Some("local"));
        assert_eq!(
            value["profiles"]["local"]["sc"].as_str(),
            Some("127.0.0.1:9100")
        );
        assert_eq!(
            value["profiles"]["local"]["color"].as_bool(),
            Some(true),
            "settings this version does not know are kept"
        );
    }

    #[test]
    fn unknown_profiles_are_named_with_the_known_ones() {
        let home = tempfile::tempdir().expect("temp dir");
        let mut profiles = Profiles::load(home.path()).expect("load");
        profiles.upsert(Profile::plaintext("local", "127.0.0.1:9003"));
        profiles.upsert(Profile::plaintext("prod", "10.1.1.1:9003"));
        for error in [
            profiles.clone().switch("stage").expect_err("switch"),
            profiles.clone().delete("stage").expect_err("delete"),
            profiles.get("stage").expect_err("get"),
        ] {
            let message = error.to_string();
            assert!(message.contains("'stage'"), "{message}");
            assert!(message.contains("local, prod"), "{message}");
        }
        assert!(matches!(
            profiles.add(Profile::plaintext("local", "x:1")),
            Err(ClientError::ProfileExists(name)) if name == "local"
        ));
        assert!(matches!(
            profiles.add(Profile::plaintext("", "x:1")),
            Err(ClientError::EmptyProfileName)
        ));
    }

    #[test]
    fn deleting_the_current_profile_leaves_none_current() {
        let home = tempfile::tempdir().expect("temp dir");
        let mut profiles = Profiles::load(home.path()).expect("load");
        profiles.upsert(Profile::plaintext("local", "127.0.0.1:9003"));
        profiles.delete("local").expect("delete");
        assert!(matches!(profiles.current(), Err(ClientError::NoProfile)));
        profiles.upsert(Profile::plaintext("other", "127.0.0.1:9004"));
        assert_eq!(profiles.current().expect("current").name, "other");
    }

    /// A CA and a client certificate signed by it, written to `dir` as
    /// `ca.pem`, `alice.pem` and `alice.key`.
    fn write_identity(dir: &Path) -> ProfileTls {
        let now = time::OffsetDateTime::now_utc();
        let ca = runnel_pki::ClusterCa::generate("test", now, time::Duration::days(1))
            .expect("generate CA");
        let alice = ca
            .issue("alice", &[], &[], now, time::Duration::days(1))
            .expect("issue certificate");
        let tls = ProfileTls {
            ca: dir.join("ca.pem"),
            cert: dir.join("alice.pem"),
            key: dir.join("alice.key"),
            domain: None,
        };
        fs::write(&tls.ca, ca.cert_pem()).expect("write CA");
        fs::write(&tls.cert, &alice.cert_pem).expect("write certificate");
        fs::write(&tls.key, &alice.key_pem).expect("write key");
        tls
    }

    fn tls_profile(name: &str, tls: ProfileTls) -> Profile {
        Profile {
            tls: Some(tls),
            ..Profile::plaintext(name, "127.0.0.1:9003")
        }
    }

    #[test]
    fn tls_settings_survive_save_and_load() {
        let home = tempfile::tempdir().expect("temp dir");
        let tls = ProfileTls {
            domain: Some("sc.example.com".into()),
            ..write_identity(home.path())
        };
        let mut profiles = Profiles::load(home.path()).expect("load");
        profiles
            .add(tls_profile("secure", tls.clone()))
            .expect("add");
        profiles
            .add(Profile::plaintext("plain", "10.0.0.1:9003"))
            .expect("add");
        profiles.save().expect("save");

        let loaded = Profiles::load(home.path()).expect("reload");
        assert_eq!(
            loaded.get("secure").expect("secure"),
            tls_profile("secure", tls.clone())
        );
        assert_eq!(loaded.get("plain").expect("plain").tls, None);
        let text = fs::read_to_string(home.path().join(CONFIG_FILE)).expect("read");
        let value: toml::Table = toml::from_str(&text).expect("valid toml");
        let stored = &value["profiles"]["secure"]["tls"];
        assert_eq!(stored["ca"].as_str(), tls.ca.to_str());
        assert_eq!(stored["cert"].as_str(), tls.cert.to_str());
        assert_eq!(stored["key"].as_str(), tls.key.to_str());
        assert_eq!(stored["domain"].as_str(), Some("sc.example.com"));
        assert!(
            value["profiles"]["plain"].get("tls").is_none(),
            "a plaintext profile has no tls table: {text}"
        );

        let transport = loaded
            .get("secure")
            .expect("secure")
            .transport()
            .expect("transport");
        assert!(
            transport.client_tls.is_some(),
            "a TLS profile connects with TLS"
        );
        let transport = loaded
            .get("plain")
            .expect("plain")
            .transport()
            .expect("transport");
        assert!(
            transport.client_tls.is_none(),
            "a plaintext profile does not"
        );
    }

    #[test]
    fn relative_tls_paths_start_at_the_runnel_home() {
        let home = tempfile::tempdir().expect("temp dir");
        fs::write(
            home.path().join(CONFIG_FILE),
            "current = \"a\"\n[profiles.a]\nsc = \"127.0.0.1:9003\"\n\
             [profiles.a.tls]\nca = \"tls/ca.pem\"\ncert = \"/abs/a.pem\"\nkey = \"tls/a.key\"\n",
        )
        .expect("write config");
        let tls = Profiles::load(home.path())
            .expect("load")
            .current()
            .expect("current")
            .tls
            .expect("tls settings");
        assert_eq!(tls.ca, home.path().join("tls/ca.pem"));
        assert_eq!(tls.cert, PathBuf::from("/abs/a.pem"));
        assert_eq!(tls.key, home.path().join("tls/a.key"));
        assert_eq!(tls.domain, None);
    }

    #[test]
    fn unknown_tls_settings_are_kept_until_tls_is_removed() {
        let home = tempfile::tempdir().expect("temp dir");
        fs::write(
            home.path().join(CONFIG_FILE),
            "[profiles.a]\nsc = \"x:1\"\n[profiles.a.tls]\nca = \"ca.pem\"\n\
             cert = \"a.pem\"\nkey = \"a.key\"\npin = \"abc\"\n",
        )
        .expect("write config");
        let stored = |home: &Path| -> toml::Table {
            toml::from_str(&fs::read_to_string(home.join(CONFIG_FILE)).expect("read"))
                .expect("valid toml")
        };
        let mut profiles = Profiles::load(home.path()).expect("load");
        let tls = ProfileTls {
            ca: "/other/ca.pem".into(),
            cert: "/other/a.pem".into(),
            key: "/other/a.key".into(),
            domain: None,
        };
        profiles.upsert(tls_profile("a", tls));
        profiles.save().expect("save");
        let value = stored(home.path());
        assert_eq!(value["profiles"]["a"]["tls"]["pin"].as_str(), Some("abc"));
        assert_eq!(
            value["profiles"]["a"]["tls"]["ca"].as_str(),
            Some("/other/ca.pem")
        );

        profiles.upsert(Profile::plaintext("a", "x:1"));
        profiles.save().expect("save");
        assert!(stored(home.path())["profiles"]["a"].get("tls").is_none());
    }

    #[test]
    fn missing_tls_files_are_named() {
        let home = tempfile::tempdir().expect("temp dir");
        let tls = write_identity(home.path());
        for (file, what) in [
            (&tls.ca, "CA certificate"),
            (&tls.cert, "certificate"),
            (&tls.key, "private key"),
        ] {
            let moved = file.with_extension("moved");
            fs::rename(file, &moved).expect("hide the file");
            let error = tls.client_tls().expect_err("a file is missing");
            fs::rename(&moved, file).expect("restore the file");
            let message = error.to_string();
            assert!(
                matches!(&error, ClientError::TlsFile { what: named, path, .. }
                    if *named == what && path == file),
                "{message}"
            );
            assert!(
                message.starts_with(&format!("cannot read the {what} {}: ", file.display())),
                "{message}"
            );
        }
        tls.client_tls().expect("all files back");
    }

    #[test]
    fn unusable_tls_files_are_named() {
        let home = tempfile::tempdir().expect("temp dir");
        let tls = write_identity(home.path());
        let garbage = home.path().join("garbage.pem");
        fs::write(&garbage, "not a PEM file").expect("write");
        let cases = [
            (
                ProfileTls {
                    ca: garbage.clone(),
                    ..tls.clone()
                },
                format!("CA certificate {}", garbage.display()),
            ),
            (
                ProfileTls {
                    key: garbage.clone(),
                    ..tls.clone()
                },
                format!(
                    "certificate {} with key {}",
                    tls.cert.display(),
                    garbage.display()
                ),
            ),
            (
                ProfileTls {
                    cert: garbage.clone(),
                    ..tls.clone()
                },
                format!(
                    "certificate {} with key {}",
                    garbage.display(),
                    tls.key.display()
                ),
            ),
            (
                ProfileTls {
                    domain: Some("not a name".into()),
                    ..tls.clone()
                },
                "TLS domain 'not a name'".to_string(),
            ),
        ];
        for (settings, named) in cases {
            let error = settings.client_tls().expect_err("unusable");
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("the {named} cannot be used for TLS: ")),
                "{message}"
            );
        }
    }

    #[test]
    fn a_broken_file_is_reported_with_its_path() {
        let home = tempfile::tempdir().expect("temp dir");
        fs::write(home.path().join(CONFIG_FILE), "current = [").expect("write");
        let error = Profiles::load(home.path()).expect_err("invalid file");
        let message = error.to_string();
        assert!(message.contains(CONFIG_FILE), "{message}");
        assert!(message.contains("not a valid profile file"), "{message}");
    }
}
