//! File modes of the data directory: `0700` for it and every directory in
//! it, `0600` for every file, whatever the umask, so that what shipper
//! holds is readable by its own user only. Files and directories are
//! created with these modes ([`create_dir`], [`file_options`]); a
//! directory found with looser ones (made by an older version, or by
//! hand) is tightened when the log opens it ([`tighten`]).

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode of the data directory and every directory in it.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file in the data directory.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and its missing parents with [`DIR_MODE`].
pub fn create_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Options that create a file with [`FILE_MODE`] (the umask can only take
/// bits away).
pub fn file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Sets `path` to `mode` if it has bits beyond it; whether it did.
fn restrict(path: &Path, mode: u32) -> io::Result<bool> {
    let metadata = std::fs::symlink_metadata(path)?;
    let current = metadata.permissions().mode() & 0o777;
    if current & !mode == 0 || metadata.file_type().is_symlink() {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(current & mode))?;
    Ok(true)
}

/// Takes group and other permissions off `dir`, the directories in it
/// and their files (three levels: the data directory's layout), and
/// returns what it changed. Symbolic links are left alone.
pub fn tighten(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    if restrict(dir, DIR_MODE)? {
        changed.push(dir.to_owned());
    }
    let mut folders = vec![(dir.to_owned(), 0)];
    while let Some((folder, depth)) = folders.pop() {
        for entry in std::fs::read_dir(&folder)?.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            let mode = if kind.is_dir() { DIR_MODE } else { FILE_MODE };
            if !kind.is_symlink() && restrict(&path, mode).unwrap_or(false) {
                changed.push(path.clone());
            }
            if kind.is_dir() && depth < 2 {
                folders.push((path, depth + 1));
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn loose_modes_are_tightened_and_tight_ones_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        create_dir(&data.join("segments")).unwrap();
        std::fs::write(data.join("segments/a.seg"), b"x").unwrap();
        std::fs::set_permissions(
            data.join("segments/a.seg"),
            PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        std::fs::set_permissions(&data, PermissionsExt::from_mode(0o755)).unwrap();
        let private = file_options()
            .write(true)
            .create(true)
            .open(data.join("private"))
            .unwrap();
        drop(private);
        let changed = tighten(&data).unwrap();
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("segments")), 0o700);
        assert_eq!(mode(&data.join("segments/a.seg")), 0o600);
        assert_eq!(mode(&data.join("private")), 0o600);
        assert!(tighten(&data).unwrap().is_empty());
    }
}
