//! Crash-safe files: write to a temporary file in the same directory, fsync it, rename it
//! over the target, fsync the directory. After a crash at any point the target holds either
//! the old or the new content, never a mix.

use crate::state::{PersistedConfig, STATE_FORMAT, STATE_VERSION};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The temporary file used while `path` is rewritten.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    path.with_file_name(format!(".{name}.tmp"))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replace `path` with `bytes` atomically and durably. With `durable` false the fsyncs are
/// skipped (still atomic for readers, not across power loss).
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let tmp = temp_path(path);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, path)?;
    if durable {
        File::open(parent_dir(path))?.sync_all()?;
    }
    Ok(())
}

/// Read the state file. `Ok(None)`: there is none (first start).
pub fn load_state(path: &Path) -> Result<Option<PersistedConfig>, String> {
    // A leftover temporary file is a write that was never acknowledged.
    let _ = fs::remove_file(temp_path(path));
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read state file {}: {e}", path.display())),
    };
    let cfg: PersistedConfig = serde_json::from_slice(&bytes)
        .map_err(|e| format!("state file {} is not valid: {e}", path.display()))?;
    if cfg.format != STATE_FORMAT {
        return Err(format!(
            "state file {} has format {:?}, expected {STATE_FORMAT:?}",
            path.display(),
            cfg.format
        ));
    }
    // A newer rvs may have written what this one cannot honour: refuse rather than drop it.
    if cfg.version > STATE_VERSION {
        return Err(format!(
            "state file {} has version {}, newer than this rvs understands ({STATE_VERSION})",
            path.display(),
            cfg.version
        ));
    }
    Ok(Some(cfg))
}

/// Write the state file durably.
pub fn save_state(path: &Path, cfg: &PersistedConfig) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(cfg).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;

    #[test]
    fn save_load_and_garbage() {
        let dir = std::env::temp_dir().join(format!("rvs-persist-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("state.json");
        assert_eq!(load_state(&p).unwrap(), None);
        let cfg = State::new().config();
        save_state(&p, &cfg).unwrap();
        assert_eq!(load_state(&p).unwrap(), Some(cfg));
        // a half-written temporary file is ignored and removed
        fs::write(temp_path(&p), b"{\"format\":").unwrap();
        assert!(load_state(&p).unwrap().is_some());
        assert!(!temp_path(&p).exists());
        fs::write(&p, b"not json").unwrap();
        assert!(load_state(&p).is_err());
        // a file from a newer rvs is refused, not half-understood
        let mut newer = State::new().config();
        newer.version = STATE_VERSION + 1;
        save_state(&p, &newer).unwrap();
        assert!(load_state(&p).unwrap_err().contains("newer"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
