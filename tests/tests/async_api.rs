//! The async waits: a tokio task awaits durability and new data without
//! blocking its runtime thread, on a current-thread runtime where a
//! blocking wait would deadlock.

use std::time::Duration;

use shipper_core::chunk::{ChunkBuilder, ChunkOptions, ClosedChunk};
use shipper_core::log::{Durability, Log, LogOptions};
use shipper_core::Error;

fn chunk(text: &str) -> ClosedChunk {
    let mut builder = ChunkBuilder::new("s", "async", ChunkOptions::default()).unwrap();
    builder.push(text.as_bytes(), 1, None).unwrap();
    builder.finish().unwrap().unwrap()
}

fn open(dir: &std::path::Path, durability: Durability) -> Log {
    Log::open(
        dir,
        LogOptions {
            segment_bytes: 1 << 20,
            max_bytes: 8 << 20,
            durability,
            ..LogOptions::default()
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn tickets_and_readers_resolve_without_blocking_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Durability::Interval(Duration::from_millis(30)));
    let mut reader = log.reader(0);
    assert!(reader.next().is_none());

    // The reader's wait and a timer run on the same (only) runtime thread
    // while the append becomes durable.
    let waiting = tokio::spawn({
        let log = log.clone();
        async move {
            let reader = log.reader(0);
            tokio::time::timeout(Duration::from_secs(10), reader.ready())
                .await
                .expect("new data wakes the reader")
                .unwrap();
        }
    });
    let ticket = log.append(chunk("one")).unwrap();
    let range = tokio::time::timeout(Duration::from_secs(10), ticket.durable())
        .await
        .expect("durable within the interval")
        .unwrap();
    assert_eq!(range, 0..1);
    assert!(log.durable_offset() >= 1);
    waiting.await.unwrap();
    assert_eq!(reader.next().unwrap().unwrap().end_offset(), 1);

    let ticket = log.append(chunk("two")).unwrap();
    assert_eq!(ticket.written().await.unwrap(), 1..2);
    log.durable(2).await.unwrap();
    log.close().unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn waits_end_with_an_error_when_the_log_closes() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Durability::Never);
    log.append(chunk("kept")).unwrap().durable().await.unwrap();
    let pending = tokio::spawn({
        let log = log.clone();
        async move { log.durable(1_000).await }
    });
    tokio::task::yield_now().await;
    log.close().unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("closing wakes async waiters")
        .unwrap();
    assert!(matches!(outcome, Err(Error::Closed)), "{outcome:?}");
    assert!(matches!(log.append(chunk("late")), Err(Error::Closed)));
}

#[tokio::test(flavor = "current_thread")]
async fn an_emitter_awaits_durability_of_everything_it_emitted() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Durability::Interval(Duration::from_millis(20)));
    let mut emitter =
        shipper_core::emit::Emitter::new(log.clone(), "http", ChunkOptions::default()).unwrap();
    for i in 0..1000u64 {
        emitter
            .emit(
                if i % 2 == 0 { "a" } else { "b" },
                format!("{{\"n\":{i}}}").as_bytes(),
                i,
                None,
            )
            .unwrap();
    }
    let end = tokio::time::timeout(Duration::from_secs(10), emitter.durable())
        .await
        .expect("durable within the interval")
        .unwrap();
    assert_eq!(end, Some(1000));
    assert!(log.durable_offset() >= 1000);
    drop(emitter);
    log.close().unwrap();
}
