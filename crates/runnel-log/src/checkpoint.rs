//! Small state files written atomically: write a temporary file, fsync it,
//! rename it over the old one, fsync the directory. A reader sees the old
//! file or the new one, never a mix, and a trailing CRC catches media
//! corruption.
//!
//! ```text
//! runnel-checkpoint 1 <kind>
//! <entry count>
//! <i64> <i64>          (one line per entry)
//! crc32c <8 hex digits over every byte above>
//! ```

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::LogError;

const MAGIC: &str = "runnel-checkpoint 1";
/// Entry counts above this are treated as corruption rather than allocated.
const MAX_ENTRIES: usize = 1 << 20;

/// Writes `entries` to `path` atomically and durably.
pub fn write(path: &Path, kind: &str, entries: &[(i64, i64)]) -> Result<(), LogError> {
    let mut text = format!("{MAGIC} {kind}\n{}\n", entries.len());
    for (first, second) in entries {
        text.push_str(&format!("{first} {second}\n"));
    }
    let crc = runnel_wire::batch::crc32c(text.as_bytes());
    text.push_str(&format!("crc32c {crc:08x}\n"));

    let temporary = temporary_path(path);
    let mut file =
        File::create(&temporary).map_err(LogError::io("creating checkpoint", &temporary))?;
    file.write_all(text.as_bytes())
        .map_err(LogError::io("writing checkpoint", &temporary))?;
    file.sync_all()
        .map_err(LogError::io("syncing checkpoint", &temporary))?;
    fs::rename(&temporary, path).map_err(LogError::io("renaming checkpoint into", path))?;
    sync_parent(path)
}

/// Reads the entries of a checkpoint, or `None` if it does not exist.
pub fn read(path: &Path, kind: &str) -> Result<Option<Vec<(i64, i64)>>, LogError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(LogError::Io {
                context: "reading checkpoint",
                path: path.to_path_buf(),
                source: error,
            });
        }
    };
    parse(&text, kind)
        .map(Some)
        .map_err(|reason| LogError::CorruptCheckpoint {
            path: path.to_path_buf(),
            reason,
        })
}

fn parse(text: &str, kind: &str) -> Result<Vec<(i64, i64)>, String> {
    let body_end = text
        .rfind("crc32c ")
        .ok_or_else(|| "the crc32c line is missing".to_string())?;
    let (body, crc_line) = text.split_at(body_end);
    let stored = crc_line
        .trim_end()
        .strip_prefix("crc32c ")
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| format!("bad crc32c line {crc_line:?}"))?;
    let computed = runnel_wire::batch::crc32c(body.as_bytes());
    if stored != computed {
        return Err(format!(
            "CRC mismatch: stored {stored:08x}, computed {computed:08x}"
        ));
    }
    let mut lines = body.lines();
    let header = lines.next().unwrap_or_default();
    if header != format!("{MAGIC} {kind}") {
        return Err(format!(
            "expected header {:?}, found {header:?}",
            format!("{MAGIC} {kind}")
        ));
    }
    let count: usize = lines
        .next()
        .and_then(|line| line.parse().ok())
        .ok_or_else(|| "bad entry count".to_string())?;
    if count > MAX_ENTRIES {
        return Err(format!("entry count {count} exceeds {MAX_ENTRIES}"));
    }
    let entries = lines
        .map(|line| {
            let (first, second) = line
                .split_once(' ')
                .ok_or_else(|| format!("bad entry {line:?}"))?;
            let parse = |value: &str| {
                value
                    .parse::<i64>()
                    .map_err(|_| format!("bad entry {line:?}"))
            };
            Ok((parse(first)?, parse(second)?))
        })
        .collect::<Result<Vec<_>, String>>()?;
    if entries.len() != count {
        return Err(format!(
            "header says {count} entries, found {}",
            entries.len()
        ));
    }
    Ok(entries)
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Makes a rename or a new file in `path`'s directory durable.
pub(crate) fn sync_parent(path: &Path) -> Result<(), LogError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    sync_dir(parent)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|dir_handle| dir_handle.sync_all())
        .map_err(LogError::io("syncing directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leader-epochs");
        assert!(read(&path, "leader-epochs").unwrap().is_none());
        let entries = vec![(0, 0), (3, 120), (7, -1)];
        write(&path, "leader-epochs", &entries).unwrap();
        assert_eq!(read(&path, "leader-epochs").unwrap(), Some(entries));
        assert!(!temporary_path(&path).exists());

        assert!(matches!(
            read(&path, "log-start-offset"),
            Err(LogError::CorruptCheckpoint { .. })
        ));
        let mut bytes = fs::read(&path).unwrap();
        bytes[25] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read(&path, "leader-epochs"),
            Err(LogError::CorruptCheckpoint { .. })
        ));
        fs::write(&path, b"").unwrap();
        assert!(matches!(
            read(&path, "leader-epochs"),
            Err(LogError::CorruptCheckpoint { .. })
        ));
    }
}
