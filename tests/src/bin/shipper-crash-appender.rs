//! Helper of `tests/tests/crash.rs`: appends deterministic records to a log
//! until it is killed, and prints the end of every range acknowledged
//! durable, one line each, flushed.
//!
//! Usage: `shipper-crash-appender DIR always|interval|never`
//!
//! The first line is `ready <pid> <next_offset>` once the log is open. Record
//! `n` is `shipper_tests::records::record(n)`; numbering continues from
//! `log.next_offset()` after a restart, so the record at offset `o` is
//! always `record(o)`.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, Instant};

use shipper_core::log::{Durability, Log, LogOptions};
use shipper_tests::records;

/// Appends in flight before the oldest is waited for, so that some chunks
/// are written but not yet durable when the kill comes.
const IN_FLIGHT: usize = 8;
/// Stops by itself after this long, should the test that started it be gone.
const LIFETIME: Duration = Duration::from_secs(60);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, policy] = args.as_slice() else {
        eprintln!("usage: shipper-crash-appender DIR always|interval|never");
        std::process::exit(2);
    };
    let durability = match policy.as_str() {
        "always" => Durability::Always,
        "interval" => Durability::Interval(Duration::from_millis(5)),
        "never" => Durability::Never,
        other => {
            eprintln!("unknown durability {other:?}");
            std::process::exit(2);
        }
    };
    let options = LogOptions {
        segment_bytes: 256 << 10,
        max_bytes: 4 << 30,
        durability,
        ..LogOptions::default()
    };
    let log = match Log::open(dir, options) {
        Ok(log) => log,
        Err(error) => {
            eprintln!("shipper-crash-appender: opening {dir}: {error}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout().lock();
    let mut next = log.next_offset();
    writeln!(out, "ready {} {next}", std::process::id()).expect("stdout");
    out.flush().expect("stdout");

    let started = Instant::now();
    let mut pending = VecDeque::new();
    while started.elapsed() < LIFETIME {
        let count = records::chunk_len(next);
        let ticket = log
            .append(records::chunk(next, count))
            .expect("append accepted");
        pending.push_back((next..next + count, ticket));
        next += count;
        if pending.len() >= IN_FLIGHT {
            let (expected, ticket) = pending.pop_front().expect("not empty");
            let range = ticket.wait_durable().expect("append durable");
            assert_eq!(range, expected, "offsets differ from record numbers");
            writeln!(out, "{}", range.end).expect("stdout");
            out.flush().expect("stdout");
        }
    }
    log.close().expect("close");
}
