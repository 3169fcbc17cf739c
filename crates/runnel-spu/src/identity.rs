//! Which data on this SPU's disk belongs to what: the cluster the whole
//! data directory belongs to (`cluster.id`), and the topic incarnation
//! each replica directory was created for (`replica.id`).
//!
//! Both guard deletions. The SC is authoritative only within its own
//! cluster: an SC with another id (a wrong `--sc-addr`, or one that lost
//! its store and started a new cluster) must not make this SPU delete the
//! replicas it does not know. And a replica directory is named after its
//! topic and partition only, so a topic deleted while this SPU was away
//! and created again under the same name would find the old topic's
//! records; the marker tells the two apart.
//!
//! Both files are written atomically (temporary file, fsync, rename,
//! fsync of the directory), so a crash leaves the old content or the new,
//! never a torn one. Everything here is blocking I/O.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// In the data directory: the id of the cluster whose SC this SPU takes
/// assignments from.
pub(crate) const CLUSTER_ID_FILE: &str = "cluster.id";
/// In each replica directory: the topic id the directory was created for.
pub(crate) const REPLICA_ID_FILE: &str = "replica.id";
/// Longest cluster id accepted from an SC (ours are 32 hex digits).
const MAX_CLUSTER_ID_LEN: usize = 64;
/// Longest marker file read; ours hold one decimal number.
const MAX_MARKER_LEN: u64 = 128;

/// Why this SPU does not take assignments from an SC.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClusterRefusal {
    #[error(
        "this SPU's data belongs to cluster {ours}, but the SC it reached is cluster {offered}; point it at that cluster's SC or give it an empty --data-dir"
    )]
    Foreign { ours: String, offered: String },
    #[error(
        "the SC sent the cluster id {offered:?}, which is not 1 to {MAX_CLUSTER_ID_LEN} letters, digits, '-' or '_'; is it a Runnel SC of the same version?"
    )]
    Invalid { offered: String },
    #[error(
        "{path} does not hold a cluster id ({reason}); if this data directory is this cluster's, write the SC's cluster id into it, otherwise give the SPU an empty --data-dir"
    )]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "cannot record the cluster id in {path}: {source}; check the data directory's permissions and free space"
    )]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How the cluster id an SC offered compares with this SPU's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClusterCheck {
    /// The data directory belongs to that cluster already.
    Same,
    /// The data directory belonged to no cluster; it belongs to this one
    /// from now on.
    Adopted,
}

/// Checks that the data in `data_dir` belongs to the cluster `offered`,
/// recording it as the owner if no cluster owns the data yet.
pub(crate) fn claim_cluster(
    data_dir: &Path,
    offered: &str,
) -> Result<ClusterCheck, ClusterRefusal> {
    let valid = !offered.is_empty()
        && offered.len() <= MAX_CLUSTER_ID_LEN
        && offered
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if !valid {
        let offered: String = offered.chars().take(MAX_CLUSTER_ID_LEN).collect();
        return Err(ClusterRefusal::Invalid { offered });
    }
    let path = data_dir.join(CLUSTER_ID_FILE);
    match read_small(&path) {
        Ok(Some(text)) => {
            let ours = text.trim();
            if ours == offered {
                Ok(ClusterCheck::Same)
            } else if ours.is_empty() {
                Err(ClusterRefusal::Unreadable {
                    path,
                    reason: "it is empty".to_string(),
                })
            } else {
                Err(ClusterRefusal::Foreign {
                    ours: ours.to_string(),
                    offered: offered.to_string(),
                })
            }
        }
        Ok(None) => {
            write_atomically(data_dir, CLUSTER_ID_FILE, &format!("{offered}\n"))
                .map_err(|source| ClusterRefusal::Io { path, source })?;
            Ok(ClusterCheck::Adopted)
        }
        Err(reason) => Err(ClusterRefusal::Unreadable { path, reason }),
    }
}

/// What a replica directory's marker says about its topic incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incarnation {
    /// No directory yet.
    Absent,
    /// Created for the topic id asked about.
    Matches,
    /// Created for another topic id: an older topic of the same name.
    Other(u64),
    /// A directory without a marker, or with one that cannot be read:
    /// not known to be the current topic's.
    Unknown(String),
    /// Something that is not a directory is in the way.
    NotADirectory,
}

/// Reads the marker of the replica directory `dir` against `topic_id`.
pub(crate) fn incarnation(dir: &Path, topic_id: u64) -> Incarnation {
    match fs::symlink_metadata(dir) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Incarnation::Absent,
        Err(error) => return Incarnation::Unknown(format!("cannot inspect it: {error}")),
        Ok(metadata) if !metadata.is_dir() => return Incarnation::NotADirectory,
        Ok(_) => {}
    }
    let text = match read_small(&dir.join(REPLICA_ID_FILE)) {
        Ok(Some(text)) => text,
        Ok(None) => return Incarnation::Unknown(format!("it has no {REPLICA_ID_FILE}")),
        Err(reason) => return Incarnation::Unknown(reason),
    };
    match text.trim().parse::<u64>() {
        Ok(found) if found == topic_id => Incarnation::Matches,
        Ok(found) => Incarnation::Other(found),
        Err(_) => Incarnation::Unknown(format!("its {REPLICA_ID_FILE} holds {:?}", text.trim())),
    }
}

/// Creates the replica directory `dir` for `topic_id` with its marker,
/// durably: the marker exists before any record is written there.
pub(crate) fn create_replica_dir(dir: &Path, topic_id: u64) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    write_atomically(dir, REPLICA_ID_FILE, &format!("{topic_id}\n"))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// The content of `path` if it exists; an error message if it cannot be
/// read or is larger than any file of ours.
fn read_small(path: &Path) -> Result<Option<String>, String> {
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    if metadata.len() > MAX_MARKER_LEN {
        return Err(format!(
            "{} is {} bytes long, not an id",
            path.display(),
            metadata.len()
        ));
    }
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

/// Replaces `dir/name` with `contents`: a crash leaves either the old file
/// or the whole new one.
fn write_atomically(dir: &Path, name: &str, contents: &str) -> io::Result<()> {
    let temporary = dir.join(format!("{name}.tmp"));
    {
        let mut file = File::create(&temporary)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
    }
    fs::rename(&temporary, dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_cluster_is_adopted_and_another_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(
            claim_cluster(dir.path(), "abc123").expect("adopted"),
            ClusterCheck::Adopted
        );
        assert_eq!(
            fs::read_to_string(dir.path().join(CLUSTER_ID_FILE)).expect("written"),
            "abc123\n"
        );
        assert!(!dir.path().join("cluster.id.tmp").exists());
        assert_eq!(
            claim_cluster(dir.path(), "abc123").expect("same"),
            ClusterCheck::Same
        );

        let refusal = claim_cluster(dir.path(), "def456").expect_err("foreign");
        let message = refusal.to_string();
        assert!(
            matches!(refusal, ClusterRefusal::Foreign { .. }),
            "{message}"
        );
        assert!(message.contains("cluster abc123"), "{message}");
        assert!(message.contains("cluster def456"), "{message}");
        assert!(message.contains("give it an empty --data-dir"), "{message}");
        assert_eq!(
            fs::read_to_string(dir.path().join(CLUSTER_ID_FILE)).expect("kept"),
            "abc123\n",
            "a foreign SC does not take the data over"
        );

        for bad in ["", "has space", &"x".repeat(65), "../etc"] {
            let refusal = claim_cluster(dir.path(), bad).expect_err("invalid");
            assert!(matches!(refusal, ClusterRefusal::Invalid { .. }), "{bad:?}");
        }
        fs::write(dir.path().join(CLUSTER_ID_FILE), "\n").expect("emptied");
        let refusal = claim_cluster(dir.path(), "abc123").expect_err("unreadable");
        assert!(
            matches!(refusal, ClusterRefusal::Unreadable { .. }),
            "{refusal}"
        );
    }

    #[test]
    fn a_replica_marker_tells_incarnations_apart() {
        let data = tempfile::tempdir().expect("temp dir");
        let dir = data.path().join("events-0");
        assert_eq!(incarnation(&dir, 7), Incarnation::Absent);
        create_replica_dir(&dir, 7).expect("created");
        assert_eq!(incarnation(&dir, 7), Incarnation::Matches);
        assert_eq!(incarnation(&dir, 9), Incarnation::Other(7));

        fs::write(dir.join(REPLICA_ID_FILE), "seven").expect("garbled");
        assert!(matches!(incarnation(&dir, 7), Incarnation::Unknown(_)));
        fs::remove_file(dir.join(REPLICA_ID_FILE)).expect("removed");
        assert!(matches!(incarnation(&dir, 7), Incarnation::Unknown(_)));

        let file = data.path().join("events-1");
        fs::write(&file, b"in the way").expect("file");
        assert_eq!(incarnation(&file, 7), Incarnation::NotADirectory);
    }
}
