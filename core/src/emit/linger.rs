//! The linger thread: closes the chunks every emitter of the process left
//! open past their linger time, whatever its source is doing (reading,
//! blocked on its input, stopped in a plugin call). A source never keeps a
//! timer of its own for it.
//!
//! It holds each emitter weakly and only `try_lock`s it: a source busy in
//! its emitter is emitting, and its chunks close by size or at its next
//! call; the thread comes back a few milliseconds later. It sleeps until the
//! earliest deadline, and an emitter that opens a new chunk wakes it.

use std::sync::{Arc, Mutex, OnceLock, PoisonError, TryLockError, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::Core;

struct Lingerer {
    emitters: Mutex<Vec<Weak<Mutex<Core>>>>,
    thread: Thread,
}

static LINGERER: OnceLock<Lingerer> = OnceLock::new();

/// How soon an emitter its source holds is tried again: a source in its
/// emitter is emitting, and closes its chunks itself.
const BUSY_RETRY: Duration = Duration::from_millis(5);

fn lingerer() -> &'static Lingerer {
    LINGERER.get_or_init(|| {
        let handle = std::thread::Builder::new()
            .name("shipper-linger".into())
            .spawn(run)
            .expect("starting the linger thread");
        Lingerer {
            emitters: Mutex::new(Vec::new()),
            thread: handle.thread().clone(),
        }
    })
}

/// Watches `core` from now on.
pub(super) fn register(core: &Arc<Mutex<Core>>) {
    let lingerer = lingerer();
    lingerer
        .emitters
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arc::downgrade(core));
}

/// An emitter opened a chunk: its deadline may be earlier than the one the
/// thread sleeps until.
pub(super) fn wake() {
    if let Some(lingerer) = LINGERER.get() {
        lingerer.thread.unpark();
    }
}

fn run() {
    // The thread starts inside `get_or_init`; wait until it is set.
    let lingerer = loop {
        if let Some(lingerer) = LINGERER.get() {
            break lingerer;
        }
        std::thread::park_timeout(Duration::from_millis(1));
    };
    loop {
        let emitters: Vec<Weak<Mutex<Core>>> = {
            let mut emitters = lingerer
                .emitters
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            emitters.retain(|weak| weak.strong_count() > 0);
            emitters.clone()
        };
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for weak in emitters {
            let Some(core) = weak.upgrade() else { continue };
            let deadline = match core.try_lock() {
                Ok(mut core) => linger(&mut core, now),
                Err(TryLockError::Poisoned(poisoned)) => linger(&mut poisoned.into_inner(), now),
                Err(TryLockError::WouldBlock) => Some(now + BUSY_RETRY),
            };
            next = match (next, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        match next {
            Some(deadline) => {
                std::thread::park_timeout(deadline.saturating_duration_since(Instant::now()))
            }
            None => std::thread::park(),
        }
    }
}

/// Closes what is due in `core` and appends what the pool has compressed
/// for it; returns its next deadline.
fn linger(core: &mut Core, now: Instant) -> Option<Instant> {
    if core.deadline().is_some() {
        core.linger(now);
    }
    // An error waits for the source's next call, which wakes the thread:
    // until then there is nothing to do here (the chunks it left open
    // would only fail again).
    if core.deferred.is_some() {
        return None;
    }
    core.deadline()
}
