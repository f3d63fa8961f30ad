//! Connection slots: one per connection, from the listener's own cap and
//! from the process's, which stays below the open-files limit.

use std::sync::{Arc, OnceLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// File descriptors kept for everything but client connections: the log
/// (its folder, files being created, cursors), sink files and sockets,
/// plugin libraries, standard streams.
pub const RESERVED_FDS: usize = 256;

/// The process-wide connection slots: the soft open-files limit less
/// [`RESERVED_FDS`] (at least 64). Read once, on first use: `shipper`
/// raises its soft limit to the hard one before that.
pub fn process_connection_slots() -> Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SLOTS
        .get_or_init(|| {
            let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .current
                .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
            let slots = limit
                .saturating_sub(RESERVED_FDS)
                .clamp(64, Semaphore::MAX_PERMITS);
            Arc::new(Semaphore::new(slots))
        })
        .clone()
}

/// The slots of one listener.
#[derive(Debug, Clone)]
pub struct ConnectionSlots {
    own: Arc<Semaphore>,
    process: Arc<Semaphore>,
}

/// A connection's right to be served; dropped when it closes.
#[derive(Debug)]
pub struct ConnectionSlot {
    _own: OwnedSemaphorePermit,
    _process: OwnedSemaphorePermit,
}

impl ConnectionSlots {
    /// Slots for `max_connections`, within the process's.
    pub fn new(max_connections: usize) -> Self {
        ConnectionSlots {
            own: Arc::new(Semaphore::new(
                max_connections.clamp(1, Semaphore::MAX_PERMITS),
            )),
            process: process_connection_slots(),
        }
    }

    /// A slot, if both the listener and the process have one free.
    pub fn try_acquire(&self) -> Option<ConnectionSlot> {
        let own = self.own.clone().try_acquire_owned().ok()?;
        let process = self.process.clone().try_acquire_owned().ok()?;
        Some(ConnectionSlot {
            _own: own,
            _process: process,
        })
    }

    /// A slot, waiting up to `patience` for one to free.
    pub async fn acquire_within(&self, patience: std::time::Duration) -> Option<ConnectionSlot> {
        tokio::time::timeout(patience, async {
            let own = self.own.clone().acquire_owned().await.ok()?;
            let process = self.process.clone().acquire_owned().await.ok()?;
            Some(ConnectionSlot {
                _own: own,
                _process: process,
            })
        })
        .await
        .ok()
        .flatten()
    }

    /// Slots in use by this listener.
    pub fn in_use(&self, max_connections: usize) -> usize {
        max_connections.saturating_sub(self.own.available_permits())
    }
}
