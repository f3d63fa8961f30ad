#![forbid(unsafe_code)]
//! Helpers shared by the integration tests and their helper binaries.

pub mod mqtt;
pub mod net;
pub mod pki;
pub mod records;

pub use net::{free_port, http, https, unique};

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// A small tmpfs mounted for a test, so the test can fill a real disk;
/// unmounted when dropped.
#[derive(Debug)]
pub struct TmpfsMount {
    path: PathBuf,
}

impl TmpfsMount {
    /// Mounts a tmpfs of `size` (`mount`'s syntax, `"2m"`) on `path`
    /// (created if missing). Needs root: the error says why not, for the
    /// test to print as its reason to skip.
    pub fn mount(path: &Path, size: &str) -> Result<TmpfsMount, String> {
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("Uid:"))
                    .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_owned))
            });
        if uid.as_deref() != Some("0") {
            return Err(format!("not running as root (effective uid {uid:?})"));
        }
        std::fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(TmpfsMount {
            path: path.to_owned(),
        })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            eprintln!("umount {} failed; detaching it lazily", self.path.display());
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Whether `service` answers on `address` (`IP:port`, TCP). When it does
/// not, a test that needs it prints why it skips; with
/// `SHIPPER_REQUIRE_SERVICES=1` (as `.ci/run` sets it) that is a failure
/// instead.
///
/// # Panics
/// When the service is not reachable and services are required.
pub fn service_available(service: &str, address: &str) -> bool {
    let socket = address.parse().expect("an IP:port");
    match std::net::TcpStream::connect_timeout(&socket, std::time::Duration::from_secs(2)) {
        Ok(_) => true,
        Err(error) => service_missing(&format!("{service} not reachable on {address}: {error}")),
    }
}

/// The rule for a test whose service is missing (`reason` says which and
/// why): it prints that it skips and returns false, or, with
/// `SHIPPER_REQUIRE_SERVICES=1`, fails.
///
/// # Panics
/// When services are required.
pub fn service_missing(reason: &str) -> bool {
    if std::env::var("SHIPPER_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{reason}");
    }
    eprintln!("skipped: {reason} (SHIPPER_REQUIRE_SERVICES=1 makes this a failure)");
    false
}
