//! The data directory: its lock, its producer id and its sub-folders.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use super::segment::sync_dir;
use crate::{Error, Result};

/// Sub-folder with the segments.
pub const SEGMENTS_DIR: &str = "segments";
/// Sub-folder with the cursors.
pub const CURSORS_DIR: &str = "cursors";
/// Sub-folder where unreadable files are moved.
pub const QUARANTINE_DIR: &str = "quarantine";
/// The lock file.
pub const LOCK_FILE: &str = "lock";
/// The producer id file.
pub const PRODUCER_ID_FILE: &str = "producer_id";

/// An exclusive lock on a data directory, held while the log is open.
/// The kernel releases it when the process dies, so a crash never leaves a
/// stale lock behind.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        if path.symlink_metadata().is_ok_and(|m| !m.is_file()) {
            // A directory or link where the lock file belongs: set it aside.
            let moved_to = quarantine(dir, &path)?;
            tracing::error!(path = %path.display(), moved_to = %moved_to.display(), "lock path was not a file; quarantined");
        }
        let mut file = super::modes::file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("opening lock file", &path, e))?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(Error::Locked {
                    dir: dir.to_owned(),
                    pid: lock_holder(dir).unwrap_or_else(|| "unknown".into()),
                })
            }
            Err(errno) => {
                return Err(Error::io(
                    "locking",
                    &path,
                    std::io::Error::from_raw_os_error(errno.raw_os_error()),
                ))
            }
        }
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(|e| Error::io("writing lock file", &path, e))?;
        Ok(DirLock { _file: file })
    }
}

/// The pid written in a data directory's lock file, if a live process holds
/// the lock. `None` when nobody holds it.
pub fn lock_holder(dir: &Path) -> Option<String> {
    let path = dir.join(LOCK_FILE);
    let file = File::open(&path).ok()?;
    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => {
            let _ = rustix::fs::flock(&file, FlockOperation::Unlock);
            None
        }
        Err(_) => {
            let mut pid = String::new();
            (&file).read_to_string(&mut pid).ok()?;
            Some(pid.trim().to_owned())
                .filter(|p| !p.is_empty())
                .or(Some("unknown".into()))
        }
    }
}

/// A 16-byte random identity of a data directory, created on first open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerId(pub [u8; 16]);

impl std::fmt::Display for ProducerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl ProducerId {
    /// Parses 32 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.len() != 32 || !text.is_ascii() {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ProducerId(id))
    }

    fn random() -> Result<Self> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id)
            .map_err(|e| Error::Config(format!("no randomness for a producer id: {e}")))?;
        Ok(ProducerId(id))
    }
}

/// Reads the producer id of `dir` without creating one.
pub fn read_producer_id(dir: &Path) -> Option<ProducerId> {
    std::fs::read_to_string(dir.join(PRODUCER_ID_FILE))
        .ok()
        .and_then(|text| ProducerId::parse(&text))
}

/// What opening the producer id did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProducerIdOutcome {
    Existing,
    Created,
    /// The file was unreadable; it was moved aside and a new id created.
    Replaced {
        moved_to: PathBuf,
    },
}

pub(crate) fn load_or_create_producer_id(dir: &Path) -> Result<(ProducerId, ProducerIdOutcome)> {
    let path = dir.join(PRODUCER_ID_FILE);
    let outcome = match std::fs::read(&path) {
        Ok(bytes) => match std::str::from_utf8(&bytes).ok().and_then(ProducerId::parse) {
            Some(id) => return Ok((id, ProducerIdOutcome::Existing)),
            None => ProducerIdOutcome::Replaced {
                moved_to: quarantine(dir, &path)?,
            },
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ProducerIdOutcome::Created,
        Err(_) => ProducerIdOutcome::Replaced {
            moved_to: quarantine(dir, &path)?,
        },
    };
    let id = ProducerId::random()?;
    write_atomically(dir, PRODUCER_ID_FILE, format!("{id}\n").as_bytes())?;
    Ok((id, outcome))
}

/// Writes `name` in `dir` atomically: temp file, fsync, rename, fsync dir.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut file = super::modes::file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io("creating", &tmp, e))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| Error::io("writing", &tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("renaming", &tmp, e))?;
    sync_dir(dir)
}

/// Where `path` goes in the data directory's quarantine folder (created if
/// missing): its name, the time, and `suffix`.
fn quarantine_target(dir: &Path, path: &Path, suffix: &str) -> Result<(PathBuf, PathBuf)> {
    let folder = dir.join(QUARANTINE_DIR);
    super::modes::create_dir(&folder).map_err(|e| Error::io("creating", &folder, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stamp = crate::chunk::now_nanos();
    let target = folder.join(format!("{name}.{stamp}{suffix}"));
    Ok((folder, target))
}

/// Moves `path` into the data directory's quarantine folder under a unique
/// name and returns where it went.
pub(crate) fn quarantine(dir: &Path, path: &Path) -> Result<PathBuf> {
    let (folder, target) = quarantine_target(dir, path, "")?;
    std::fs::rename(path, &target).map_err(|e| Error::io("moving to quarantine", path, e))?;
    let _ = sync_dir(&folder);
    let _ = path.parent().map(sync_dir);
    Ok(target)
}

/// Copies `path` into the quarantine folder under a unique name (synced)
/// and returns where the copy is: the original stays where it is.
pub(crate) fn quarantine_copy(dir: &Path, path: &Path) -> Result<PathBuf> {
    let (folder, target) = quarantine_target(dir, path, ".before-repair")?;
    std::fs::copy(path, &target).map_err(|e| Error::io("copying to quarantine", path, e))?;
    // The copy has the original's mode: private, like every file here.
    std::fs::set_permissions(
        &target,
        std::os::unix::fs::PermissionsExt::from_mode(super::modes::FILE_MODE),
    )
    .map_err(|e| Error::io("restricting", &target, e))?;
    File::open(&target)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("syncing", &target, e))?;
    sync_dir(&folder)?;
    Ok(target)
}

/// Creates the data directory layout if missing. Something other than a
/// directory where a folder belongs is moved to quarantine first; the moves
/// are returned as `(path, moved_to)`.
pub(crate) fn create_layout(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut moved = Vec::new();
    for sub in [SEGMENTS_DIR, CURSORS_DIR] {
        let path = dir.join(sub);
        if path.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
            let moved_to = quarantine(dir, &path)?;
            moved.push((path.clone(), moved_to));
        }
        super::modes::create_dir(&path).map_err(|e| Error::io("creating", &path, e))?;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_id_is_stable_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let (id, outcome) = load_or_create_producer_id(dir.path()).unwrap();
        assert_eq!(outcome, ProducerIdOutcome::Created);
        let (again, outcome) = load_or_create_producer_id(dir.path()).unwrap();
        assert_eq!((again, outcome), (id, ProducerIdOutcome::Existing));
        std::fs::write(dir.path().join(PRODUCER_ID_FILE), b"\xff garbage").unwrap();
        let (new, outcome) = load_or_create_producer_id(dir.path()).unwrap();
        assert_ne!(new, id);
        assert!(matches!(outcome, ProducerIdOutcome::Replaced { moved_to } if moved_to.exists()));
        assert_eq!(read_producer_id(dir.path()), Some(new));
    }

    #[test]
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DirLock::acquire(dir.path()).unwrap();
        let error = DirLock::acquire(dir.path()).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&std::process::id().to_string()),
            "{message}"
        );
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert_eq!(
            lock_holder(dir.path()),
            Some(std::process::id().to_string())
        );
    }
}
