//! The process's compression threads, shared by every emitter: one pool
//! sized by the cores, whatever the number of sources, transform routes
//! and inserting threads. Each emitter numbers the chunks it hands over
//! and puts the answers back in order before it appends them, so chunks
//! reach the log in order per stream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::chunk::{Compressors, OpenChunk};
use crate::Error;

use super::CompressedResult;

/// A chunk to compress and where its answer goes.
pub(super) struct Job {
    /// The emitter's sequence number of the chunk.
    pub seq: u64,
    /// The emitter's builder it came from.
    pub index: usize,
    pub open: OpenChunk,
    pub reply: crossbeam_channel::Sender<CompressedResult>,
}

/// Threads of the pool; 0: one per core.
static THREADS: AtomicUsize = AtomicUsize::new(0);
static POOL: OnceLock<crossbeam_channel::Sender<Job>> = OnceLock::new();

/// Starts the process's compression pool with `threads` threads (0: one
/// per core, the default). Only the first start counts: returns false
/// when the pool was running already (another pipeline or ingestor of the
/// process started it, or an emitter compressed in the background).
pub fn set_compression_threads(threads: usize) -> bool {
    let mut applied = false;
    POOL.get_or_init(|| {
        THREADS.store(threads, Ordering::Relaxed);
        applied = true;
        start()
    });
    applied
}

/// The pool's threads (started at first use).
pub(super) fn threads() -> usize {
    POOL.get_or_init(start);
    THREADS.load(Ordering::Relaxed)
}

/// Hands `job` to the pool (started at first use).
pub(super) fn submit(job: Job) {
    let jobs = POOL.get_or_init(start);
    // The pool's threads never end, so its queue never closes.
    let _ = jobs.send(job);
}

fn start() -> crossbeam_channel::Sender<Job> {
    let threads = match THREADS.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    THREADS.store(threads, Ordering::Relaxed);
    let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
    for n in 0..threads {
        let queue = queue.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("shipper-zstd-{n}"))
            .spawn(move || compress(&queue));
        if let Err(error) = spawned {
            // Fewer threads than asked is slower, not wrong, as long as
            // there is one.
            tracing::warn!(%error, "could not start a compression thread");
            if n == 0 {
                panic!("no compression thread could be started: {error}");
            }
        }
    }
    jobs
}

fn compress(queue: &crossbeam_channel::Receiver<Job>) {
    let mut compressors = Compressors::default();
    let mut scratch = Vec::new();
    for job in queue {
        // A panic becomes this chunk's error: the emitter waits for every
        // sequence number, so none may go missing.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            job.open.compress_with(&mut compressors, &mut scratch)
        }))
        .unwrap_or_else(|_| {
            compressors = Compressors::default();
            Err(Error::Codec("the compression thread panicked".into()))
        });
        // An emitter dropped meanwhile no longer listens.
        let _ = job.reply.send((job.seq, job.index, result));
    }
}
