#![forbid(unsafe_code)]
//! Helpers shared by the integration tests and their helper binaries.

pub mod records;

use std::path::Path;

/// Copies a data directory byte for byte (what a crashed process leaves
/// behind). A file that vanishes while copying (a prepared segment the log
/// is discarding) is skipped.
///
/// # Panics
/// On any other I/O error: these are test helpers.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            match std::fs::copy(entry.path(), &target) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("copying {}: {e}", entry.path().display()),
            }
        }
    }
}
