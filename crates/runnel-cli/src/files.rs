//! Files the CLI writes that hold keys and certificates: written whole
//! (a temporary file, synced, renamed over the old one), keys readable by
//! their owner only.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// Mode of a private key file.
pub const PRIVATE: u32 = 0o600;
/// Mode of a certificate file.
pub const PUBLIC: u32 = 0o644;

/// Creates `dir` and its parents; the last one readable by its owner
/// only, as it holds keys.
pub fn create_private_dir(dir: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))
}

/// Writes `contents` to `path` whole, with `mode` from the first byte on.
pub fn write_whole(path: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
    runnel_client::write_whole(path, contents, mode)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}
