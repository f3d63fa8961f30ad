//! The disk budget and segment deletion.
//!
//! Segment files (the active one, sealed ones and a prepared next one)
//! count against `max_bytes`. A sealed segment is deleted once every cursor
//! has passed its last record; a log without cursors keeps everything. When
//! a new segment would exceed the budget, `block` waits for deletions and
//! `drop_oldest` deletes the oldest segment unacknowledged, counting the
//! records in `records_dropped` and logging it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::positions::Positions;
use super::segment::Segment;
use super::{Shared, WhenFull};
use crate::{Error, Result};

/// Adds `bytes` to the disk usage if it stays within the budget.
pub(crate) fn try_reserve(shared: &Shared, bytes: u64) -> bool {
    let max = shared.options.max_bytes;
    shared
        .disk_bytes
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            used.checked_add(bytes).filter(|&total| total <= max)
        })
        .is_ok()
}

/// Reserves `bytes` for a new segment, applying the `when_full` policy.
/// `flush` is called before waiting so that waiters on durability progress.
pub(crate) fn reserve(shared: &Shared, bytes: u64, mut flush: impl FnMut()) -> Result<()> {
    loop {
        collect(shared);
        if try_reserve(shared, bytes) {
            if shared.full.swap(false, Ordering::AcqRel) {
                tracing::info!(dir = %shared.dir.display(), "log below its disk budget again; appends resume");
            }
            return Ok(());
        }
        match shared.options.when_full {
            WhenFull::DropOldest => {
                if !drop_oldest(shared) {
                    return Err(Error::Full {
                        max_bytes: shared.options.max_bytes,
                    });
                }
            }
            WhenFull::Block => {
                if shared.closing.load(Ordering::Acquire) {
                    return Err(Error::Closed);
                }
                if !shared.full.swap(true, Ordering::AcqRel) {
                    shared.counters.full_waits.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        dir = %shared.dir.display(),
                        max_bytes = shared.options.max_bytes,
                        "log full: appends wait until consumers acknowledge"
                    );
                }
                flush();
                let guard = shared.space.lock().unwrap_or_else(|e| e.into_inner());
                let _ = shared
                    .space_freed
                    .wait_timeout(guard, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

/// Deletes the sealed segments every cursor has passed.
///
/// The source positions of their chunks are saved first (see
/// `positions`): a segment whose positions could not be saved is kept.
pub(crate) fn collect(shared: &Shared) {
    let min = {
        let cursors = shared.cursors.lock().unwrap_or_else(|e| e.into_inner());
        match cursors.values().min() {
            Some(&min) => min,
            None => return,
        }
    };
    // Held throughout: deletions happen one at a time, in order.
    let mut positions = shared
        .deleted_positions
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let doomed: Vec<Arc<Segment>> = {
        let segments = shared.segments.read().unwrap_or_else(|e| e.into_inner());
        segments
            .windows(2)
            .take_while(|pair| pair[1].base_offset <= min)
            .map(|pair| pair[0].clone())
            .collect()
    };
    if doomed.is_empty() || !save_positions(shared, &mut positions, &doomed) {
        return;
    }
    let mut deleted = 0;
    {
        let mut segments = shared.segments.write().unwrap_or_else(|e| e.into_inner());
        for segment in &doomed {
            if segments.len() <= 1 || !Arc::ptr_eq(&segments[0], segment) {
                break;
            }
            match std::fs::remove_file(&segment.path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::error!(path = %segment.path.display(), %error, "cannot delete segment");
                    break;
                }
            }
            segments.remove(0);
            shared
                .disk_bytes
                .fetch_sub(segment.budget_bytes(), Ordering::AcqRel);
            shared
                .counters
                .segments_deleted
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(path = %segment.path.display(), base = segment.base_offset, "segment deleted");
            deleted += 1;
        }
    }
    if deleted > 0 {
        // Make the deletions durable, so deleted segments do not come back
        // after a power loss (they would be replayed: duplicates, not loss).
        if let Err(error) = shared.segments_dir_handle.sync_all() {
            tracing::warn!(%error, "syncing the segments folder after deleting segments");
        }
        let _guard = shared.space.lock().unwrap_or_else(|e| e.into_inner());
        shared.space_freed.notify_all();
    }
}

/// Notes the source positions of `doomed` and saves them if they changed.
/// Returns whether the segments may be deleted.
fn save_positions(shared: &Shared, positions: &mut Positions, doomed: &[Arc<Segment>]) -> bool {
    let mut updated = positions.clone();
    let durable = shared.durable_offset.load(Ordering::Acquire);
    for segment in doomed {
        updated.note_segment(segment, durable);
    }
    if updated == *positions {
        return true;
    }
    match updated.store(&shared.dir) {
        Ok(()) => {
            *positions = updated;
            true
        }
        Err(error) => {
            tracing::error!(%error, "cannot save the source positions of acknowledged segments; keeping them");
            false
        }
    }
}

/// Deletes the oldest segment that holds records, whether or not it was
/// acknowledged, and records its offsets on disk as lost: together with
/// the loss segments before it, it becomes one loss segment named like
/// the oldest (renamed over it, so the loss is never absent from disk).
/// Falls back to a plain deletion when not even that small file can be
/// written; the next open then reports the hole itself.
pub(crate) fn drop_oldest(shared: &Shared) -> bool {
    let mut positions = shared
        .deleted_positions
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let (victims, to) = {
        let segments = shared.segments.read().unwrap_or_else(|e| e.into_inner());
        let Some(index) = segments.iter().position(|s| !s.loss) else {
            return false;
        };
        // The active segment (the last) is never dropped.
        let Some(next) = segments.get(index + 1) else {
            return false;
        };
        (segments[..=index].to_vec(), next.base_offset)
    };
    let victim = victims.last().expect("at least the data segment").clone();
    // The records are lost, but their source must not read them again
    // after a restart: that would bring back what was reported dropped.
    if !save_positions(shared, &mut positions, std::slice::from_ref(&victim)) {
        return false;
    }
    let from = victims[0].base_offset;
    let loss = super::segment::PreparedSegment::create(
        shared
            .segments_dir
            .join(format!("drop{}", super::segment::PREPARED_SUFFIX)),
        super::segment::SEGMENT_HEADER_LEN as u64,
        &shared.options.faults,
    )
    .and_then(|prepared| {
        prepared.activate_loss(&shared.segments_dir, from, to, shared.producer_id.0)
    });
    let mut segments = shared.segments.write().unwrap_or_else(|e| e.into_inner());
    if segments.len() <= victims.len()
        || !victims
            .iter()
            .zip(segments.iter())
            .all(|(victim, segment)| Arc::ptr_eq(victim, segment))
    {
        // Changed meanwhile (only the writer drops, so this does not
        // happen); leave it to the next attempt.
        if let Ok((loss, _)) = loss {
            let _ = std::fs::remove_file(&loss.path);
        }
        return true;
    }
    // The first victim's file was replaced by the loss segment (same name)
    // if it could be written; every other victim's file goes.
    let replaced = loss.is_ok();
    for (index, segment) in victims.iter().enumerate() {
        if index == 0 && replaced {
            continue;
        }
        if let Err(error) = std::fs::remove_file(&segment.path) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::error!(path = %segment.path.display(), %error, "cannot delete segment");
                return false;
            }
        }
    }
    segments.drain(..victims.len());
    let freed: u64 = victims.iter().map(|s| s.budget_bytes()).sum();
    shared.disk_bytes.fetch_sub(freed, Ordering::AcqRel);
    match loss {
        Ok((loss, _writer)) => {
            segments.insert(0, loss);
        }
        Err(error) => {
            tracing::error!(%error, from, to, "cannot write down the dropped offsets; the next open reports them lost");
        }
    }
    drop(segments);
    if let Err(error) = shared.segments_dir_handle.sync_all() {
        tracing::warn!(%error, "syncing the segments folder after dropping a segment");
    }
    let records = to - victim.base_offset;
    shared
        .counters
        .records_dropped
        .fetch_add(records, Ordering::Relaxed);
    shared
        .counters
        .segments_dropped
        .fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        path = %victim.path.display(),
        from = victim.base_offset,
        to,
        records,
        "records dropped: log full and when_full = drop_oldest"
    );
    true
}
