//! Cluster profiles: which SC the CLI and examples talk to, kept in
//! `$RUNNEL_HOME/config.toml`:
//!
//! ```toml
//! current = "local"
//!
//! [profiles.local]
//! sc = "127.0.0.1:9003"
//! ```
//!
//! Settings this version does not know (a newer CLI's) are kept as they
//! are when the file is saved again. Saving writes a temporary file and
//! renames it over the old one, so a crash leaves the old file or the new
//! one, never half of either.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ClientError;

/// Name of the profile file inside the Runnel home directory.
pub const CONFIG_FILE: &str = "config.toml";
/// Largest profile file read: a file this large is not one we wrote.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

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

/// A named cluster: where its SC listens for clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub sc_addr: String,
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
        let directory = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(directory).map_err(|error| io_error("create", directory, &error))?;
        let text = toml::to_string(&self.file).map_err(|error| ClientError::ConfigInvalid {
            path: self.path.clone(),
            reason: error.to_string(),
        })?;
        let temporary = self
            .path
            .with_extension(format!("toml.tmp.{}", std::process::id()));
        let written = fs::File::create(&temporary).and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        });
        if let Err(error) = written {
            let _ = fs::remove_file(&temporary);
            return Err(io_error("write", &temporary, &error));
        }
        if let Err(error) = fs::rename(&temporary, &self.path) {
            let _ = fs::remove_file(&temporary);
            return Err(io_error("replace", &self.path, &error));
        }
        // The rename is durable once the directory is synced; a failure
        // here leaves a valid file either way, so it is not reported.
        if let Ok(directory) = fs::File::open(directory) {
            let _ = directory.sync_all();
        }
        Ok(())
    }

    /// Every profile, by name.
    pub fn list(&self) -> Vec<Profile> {
        self.file
            .profiles
            .iter()
            .map(|(name, entry)| Profile {
                name: name.clone(),
                sc_addr: entry.sc.clone(),
            })
            .collect()
    }

    /// The profile commands use unless told otherwise.
    pub fn current(&self) -> Result<Profile, ClientError> {
        let name = self.file.current.as_ref().ok_or(ClientError::NoProfile)?;
        self.get(name)
    }

    pub fn get(&self, name: &str) -> Result<Profile, ClientError> {
        match self.file.profiles.get(name) {
            Some(entry) => Ok(Profile {
                name: name.to_string(),
                sc_addr: entry.sc.clone(),
            }),
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
    pub fn add(&mut self, name: &str, sc_addr: &str) -> Result<(), ClientError> {
        if self.file.profiles.contains_key(name) {
            return Err(ClientError::ProfileExists(name.to_string()));
        }
        if name.is_empty() {
            return Err(ClientError::EmptyProfileName);
        }
        self.upsert(name, sc_addr);
        Ok(())
    }

    /// Adds a profile or points an existing one at `sc_addr`, keeping its
    /// other settings; with no current profile, it becomes current.
    pub fn upsert(&mut self, name: &str, sc_addr: &str) {
        self.file
            .profiles
            .entry(name.to_string())
            .and_modify(|entry| entry.sc = sc_addr.to_string())
            .or_insert_with(|| ProfileEntry {
                sc: sc_addr.to_string(),
                other: toml::Table::new(),
            });
        if self.file.current.is_none() {
            self.file.current = Some(name.to_string());
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
        profiles.add("local", "127.0.0.1:9003").expect("add local");
        profiles
            .add("staging", "10.0.0.1:9003")
            .expect("add staging");
        profiles.save().expect("save");

        let mut loaded = Profiles::load(home.path()).expect("reload");
        assert_eq!(
            loaded.current().expect("current"),
            Profile {
                name: "local".into(),
                sc_addr: "127.0.0.1:9003".into()
            },
            "the first profile added becomes current"
        );
        let names: Vec<String> = loaded.list().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["local", "staging"]);

        loaded.switch("staging").expect("switch");
        loaded.upsert("staging", "10.0.0.2:9003");
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
            "current = \"local\"\n[profiles.local]\nsc = \"127.0.0.1:9003\"\ntls = true\n",
        )
        .expect("write config");
        let mut profiles = Profiles::load(home.path()).expect("load");
        assert_eq!(
            profiles.current().expect("current").sc_addr,
            "127.0.0.1:9003"
        );
        profiles.upsert("local", "127.0.0.1:9100");
        profiles.save().expect("save");
        let text = fs::read_to_string(home.path().join(CONFIG_FILE)).expect("read");
        let value: toml::Table = toml::from_str(&text).expect("valid toml");
        assert_eq!(value["current"].as_str(), Some("local"));
        assert_eq!(
            value["profiles"]["local"]["sc"].as_str(),
            Some("127.0.0.1:9100")
        );
        assert_eq!(
            value["profiles"]["local"]["tls"].as_bool(),
            Some(true),
            "settings this version does not know are kept"
        );
    }

    #[test]
    fn unknown_profiles_are_named_with_the_known_ones() {
        let home = tempfile::tempdir().expect("temp dir");
        let mut profiles = Profiles::load(home.path()).expect("load");
        profiles.upsert("local", "127.0.0.1:9003");
        profiles.upsert("prod", "10.1.1.1:9003");
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
            profiles.add("local", "x:1"),
            Err(ClientError::ProfileExists(name)) if name == "local"
        ));
        assert!(matches!(
            profiles.add("", "x:1"),
            Err(ClientError::EmptyProfileName)
        ));
    }

    #[test]
    fn deleting_the_current_profile_leaves_none_current() {
        let home = tempfile::tempdir().expect("temp dir");
        let mut profiles = Profiles::load(home.path()).expect("load");
        profiles.upsert("local", "127.0.0.1:9003");
        profiles.delete("local").expect("delete");
        assert!(matches!(profiles.current(), Err(ClientError::NoProfile)));
        profiles.upsert("other", "127.0.0.1:9004");
        assert_eq!(profiles.current().expect("current").name, "other");
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
