//! Fault injection: a seam for tests to make the log's I/O fail on purpose.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::{Error, Result};

/// Faults to inject into a log's I/O. Cloning shares the plan, so a test
/// keeps a clone and arms it while the log runs.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Plan>);

#[derive(Debug, Default)]
struct Plan {
    fail_flushes: AtomicBool,
    flushes_before_failure: AtomicU64,
    disk_full: AtomicBool,
    panic_on_flush: AtomicBool,
    /// Segment creations still to fail with `creation_errno`.
    failing_creations: AtomicU64,
    creation_errno: std::sync::atomic::AtomicI32,
}

impl Faults {
    /// Makes every flush after the next `after` ones fail with EIO.
    pub fn fail_flush_after(&self, after: u64) {
        self.0.flushes_before_failure.store(after, Ordering::SeqCst);
        self.0.fail_flushes.store(true, Ordering::SeqCst);
    }

    /// Makes segment creation fail as on a full disk (or stop failing).
    pub fn set_disk_full(&self, full: bool) {
        self.0.disk_full.store(full, Ordering::SeqCst);
    }

    /// Makes the next `times` segment creations fail with the OS error
    /// `errno` (say EMFILE, as when the process is out of descriptors).
    pub fn fail_creations_with(&self, errno: i32, times: u64) {
        self.0.creation_errno.store(errno, Ordering::SeqCst);
        self.0.failing_creations.store(times, Ordering::SeqCst);
    }

    /// Makes the writer thread panic at its next flush (a stand-in for a
    /// bug in the writer), to test that waiters are released.
    pub fn panic_on_flush(&self) {
        self.0.panic_on_flush.store(true, Ordering::SeqCst);
    }

    pub(crate) fn before_flush(&self) -> Result<()> {
        assert!(
            !self.0.panic_on_flush.load(Ordering::SeqCst),
            "injected panic in the log writer"
        );
        if !self.0.fail_flushes.load(Ordering::SeqCst) {
            return Ok(());
        }
        let left = self.0.flushes_before_failure.load(Ordering::SeqCst);
        if left > 0 {
            self.0
                .flushes_before_failure
                .store(left - 1, Ordering::SeqCst);
            return Ok(());
        }
        Err(Error::io(
            "flushing segment (injected fault)",
            "<fault>",
            std::io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error()),
        ))
    }

    pub(crate) fn before_allocate(&self, path: &std::path::Path, bytes: u64) -> Result<()> {
        let failing =
            self.0
                .failing_creations
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                });
        if failing.is_ok() {
            return Err(Error::io(
                "creating segment (injected fault)",
                path,
                std::io::Error::from_raw_os_error(self.0.creation_errno.load(Ordering::SeqCst)),
            ));
        }
        if self.0.disk_full.load(Ordering::SeqCst) {
            return Err(Error::DiskFull {
                path: path.to_owned(),
                bytes,
                source: std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()),
            });
        }
        Ok(())
    }
}
