//! Readers tail the log while several producers append and a consumer's
//! cursor deletes segments under them: every record arrives once, in each
//! producer's order, with its bytes, and nothing else appears.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shipper_core::chunk::{decode_body, ChunkBuilder, ChunkOptions, Decoder};
use shipper_core::log::{Durability, Log, LogOptions};

const PRODUCERS: u64 = 4;
const RECORDS_PER_PRODUCER: u64 = 20_000;

fn payload(producer: u64, seq: u64) -> Vec<u8> {
    let mut bytes = format!("producer {producer} seq {seq} ").into_bytes();
    let tail = (shipper_tests::records::mix(producer << 32 | seq) % 200) as usize;
    bytes.extend(std::iter::repeat_n(b'a' + (seq % 26) as u8, tail));
    if seq % 11 == 5 {
        bytes.extend_from_slice(b"\nsecond line");
    }
    bytes
}

fn parse(record: &[u8]) -> (u64, u64) {
    let text = std::str::from_utf8(record).expect("records are UTF-8");
    let mut words = text.split(' ');
    assert_eq!(words.next(), Some("producer"));
    let producer = words.next().unwrap().parse().unwrap();
    assert_eq!(words.next(), Some("seq"));
    let seq = words.next().unwrap().parse().unwrap();
    (producer, seq)
}

#[test]
fn readers_tail_concurrent_producers_while_segments_are_deleted() {
    for durability in [
        Durability::Never,
        Durability::Interval(Duration::from_millis(2)),
        Durability::Always,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(
            dir.path(),
            LogOptions {
                segment_bytes: 64 * 1024,
                max_bytes: 64 << 20,
                durability,
                channel_capacity: 4,
                ..LogOptions::default()
            },
        )
        .unwrap();
        log.open_cursor("tail").unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|producer| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let options = ChunkOptions {
                        max_bytes: 4096,
                        ..ChunkOptions::default()
                    };
                    let mut builder =
                        ChunkBuilder::new("s", &format!("p{producer}"), options).unwrap();
                    let mut last = None;
                    for seq in 0..RECORDS_PER_PRODUCER {
                        if let Some(chunk) =
                            builder.push(&payload(producer, seq), seq, None).unwrap()
                        {
                            last = Some(log.append(chunk).unwrap());
                        }
                    }
                    if let Some(chunk) = builder.finish().unwrap() {
                        last = Some(log.append(chunk).unwrap());
                    }
                    last.unwrap().wait_durable().unwrap();
                })
            })
            .collect();
        let tail = {
            let log = log.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut reader = log.reader(0);
                let mut decoder = Decoder::default();
                let mut next_seq: HashMap<u64, u64> = HashMap::new();
                let mut expected_offset = 0;
                let mut total = 0;
                loop {
                    match reader.next() {
                        Some(chunk) => {
                            let chunk = chunk.expect("no damage in a healthy log");
                            assert_eq!(
                                chunk.first_offset(),
                                expected_offset,
                                "offsets are contiguous"
                            );
                            assert!(
                                chunk.end_offset() <= log.durable_offset(),
                                "only durable chunks are read"
                            );
                            let view = chunk.view();
                            let body = decode_body(&view, &mut decoder).unwrap();
                            for record in body.records() {
                                let record = record.unwrap();
                                let (producer, seq) = parse(record);
                                let next = next_seq.entry(producer).or_default();
                                assert_eq!(
                                    seq, *next,
                                    "producer {producer}'s records in order, once"
                                );
                                assert_eq!(record, payload(producer, seq).as_slice());
                                *next += 1;
                                total += 1;
                            }
                            expected_offset = chunk.end_offset();
                            // Acknowledge as we go: segments behind us are
                            // deleted while we (and the writer) keep going.
                            log.commit_cursor("tail", expected_offset).unwrap();
                        }
                        None if done.load(Ordering::Acquire)
                            && expected_offset == log.next_offset() =>
                        {
                            break
                        }
                        None => {
                            reader.wait(Duration::from_millis(50)).unwrap();
                        }
                    }
                }
                assert_eq!(reader.take_gap(), None);
                (total, next_seq)
            })
        };
        for producer in producers {
            producer.join().unwrap();
        }
        log.flush().unwrap();
        done.store(true, Ordering::Release);
        let (total, next_seq) = tail.join().unwrap();
        assert_eq!(total, PRODUCERS * RECORDS_PER_PRODUCER, "{durability:?}");
        assert!(next_seq.values().all(|&n| n == RECORDS_PER_PRODUCER));
        let metrics = log.metrics();
        assert!(metrics.segments_deleted > 10, "{durability:?}: {metrics:?}");
        assert_eq!(metrics.records_dropped, 0);
        log.close().unwrap();
    }
}
