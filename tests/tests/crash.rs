//! Crash tests: a child process appends to a log and is killed with SIGKILL
//! at a random moment, over and over on the same directory, under every
//! durability policy. After each kill the directory is opened again and
//! must hold every record the child saw acknowledged durable, byte for
//! byte, at contiguous offsets, and nothing that is not a valid record for
//! its offset.
//!
//! A SIGKILL is not a power loss: the kernel keeps the page cache, so even
//! `never` must not lose an acknowledged record here.
//!
//! The seed of the kill schedule is printed; set `SHIPPER_CRASH_SEED` to
//! replay one.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shipper_core::log::{Log, LogOptions};
use shipper_core::Error;
use shipper_tests::records;

const APPENDER: &str = env!("CARGO_BIN_EXE_shipper-crash-appender");
const POLICIES: [&str; 3] = ["always", "interval", "never"];
const CYCLES: usize = 21;

/// A running appender and the thread that collects its acknowledgements.
struct Appender {
    child: Child,
    /// The offset the child started appending at.
    start: u64,
    acks: JoinHandle<Option<u64>>,
    /// Every acknowledged end, as it arrives.
    acked: mpsc::Receiver<u64>,
}

impl Appender {
    fn start(dir: &Path, policy: &str) -> Appender {
        let mut child = Command::new(APPENDER)
            .arg(dir)
            .arg(policy)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning the appender");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut ready = String::new();
        stdout.read_line(&mut ready).expect("reading the appender");
        let fields: Vec<&str> = ready.split_whitespace().collect();
        let start = match fields.as_slice() {
            ["ready", pid, next] if pid.parse() == Ok(child.id()) => {
                next.parse().expect("next offset")
            }
            _ => {
                let status = child.wait().expect("waiting for the appender");
                panic!("appender did not start ({status}): {ready:?}");
            }
        };
        let (tx, acked) = mpsc::channel();
        let acks = std::thread::spawn(move || {
            let mut last = None;
            let mut line = String::new();
            loop {
                line.clear();
                match stdout.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    // A line cut by the kill has no newline: not an acknowledgement.
                    Ok(_) if !line.ends_with('\n') => break,
                    Ok(_) => {
                        let end: u64 = line.trim().parse().expect("an offset per line");
                        assert!(last.is_none_or(|last| end > last), "acks go forward");
                        last = Some(end);
                        let _ = tx.send(end);
                    }
                }
            }
            last
        });
        Appender {
            child,
            start,
            acks,
            acked,
        }
    }

    /// Waits until the child acknowledges an append (bounded, to fail
    /// rather than hang if it never does).
    fn wait_for_ack(&self) -> u64 {
        self.acked
            .recv_timeout(Duration::from_secs(30))
            .expect("the appender acknowledged nothing within 30 s")
    }

    /// Kills the child with SIGKILL and returns the last acknowledged end.
    fn kill(mut self) -> Option<u64> {
        self.child.kill().expect("killing the appender");
        let status = self.child.wait().expect("waiting for the appender");
        assert_eq!(
            status.signal(),
            Some(9),
            "the appender must die of the kill, not before it: {status}"
        );
        self.acks.join().expect("ack reader")
    }
}

/// The appender's options (its segments are this size too), so that the
/// test's opens never add a segment of another size.
fn options() -> LogOptions {
    LogOptions {
        segment_bytes: 256 << 10,
        max_bytes: 4 << 30,
        ..LogOptions::default()
    }
}

fn seed() -> u64 {
    match std::env::var("SHIPPER_CRASH_SEED") {
        Ok(seed) => seed.parse().expect("SHIPPER_CRASH_SEED is a number"),
        Err(_) => records::mix(std::process::id() as u64 ^ shipper_core::chunk::now_nanos()),
    }
}

/// Opens the killed directory and checks it against what was acknowledged.
/// Returns the log's next offset.
fn verify(dir: &Path, verified: u64, acknowledged: u64, cycle: usize) -> u64 {
    let log = Log::open(dir, options())
        .unwrap_or_else(|e| panic!("cycle {cycle}: reopening after the kill: {e}"));
    let report = log.recovery_report();
    // A kill can tear the chunk being copied, nothing else: no holes, no
    // lost offsets, nothing quarantined.
    assert!(
        report.skipped.is_empty()
            && report.lost_offsets.is_empty()
            && report.quarantined.is_empty()
            && report.damaged_headers.is_empty()
            && report.cursor_repairs.is_empty()
            && report.producer_id_replaced.is_none(),
        "cycle {cycle}: recovery after a kill found damage: {report}"
    );
    if !report.is_clean() {
        eprintln!("cycle {cycle}: recovery: {report}");
    }
    let start = log.start_offset();
    let next = log.next_offset();
    assert!(
        start <= verified,
        "cycle {cycle}: deleted beyond the cursor ({start} > {verified})"
    );
    assert!(
        next >= acknowledged,
        "cycle {cycle}: acknowledged up to {acknowledged}, recovered only up to {next}"
    );
    assert_eq!(log.durable_offset(), next);
    let seen = records::read_and_check(&log, start, records::record);
    assert_eq!(
        seen.first.unwrap_or(next),
        start,
        "cycle {cycle}: first record"
    );
    assert_eq!(
        seen.end.unwrap_or(start),
        next,
        "cycle {cycle}: last record"
    );
    assert_eq!(seen.records, next - start);
    // Keep one cycle of history, so that recovery always sees several
    // segments from several lives; delete the rest.
    log.commit_cursor("verified", verified).expect("commit");
    log.close().expect("close");
    next
}

#[test]
fn acknowledged_records_survive_repeated_kills() {
    let seed = seed();
    eprintln!("crash schedule seed {seed} (SHIPPER_CRASH_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");

    let mut acknowledged = 0; // every record below it was acknowledged durable
    let mut recovered = 0; // next offset of the last verification
    let mut verified = 0; // the verification before that
    let mut appended_runs = 0;
    let mut reopened_at = None; // next offset when the test last closed the log
    for cycle in 0..CYCLES {
        let policy = POLICIES[cycle % POLICIES.len()];
        let appender = Appender::start(&dir, policy);
        // Offsets continue where the last life ended: no gap, no reuse.
        assert!(
            appender.start >= acknowledged && appender.start >= recovered,
            "cycle {cycle}: restarted at {} below acknowledged {acknowledged} / recovered {recovered}",
            appender.start
        );
        if let Some(next) = reopened_at.take() {
            assert_eq!(appender.start, next, "cycle {cycle}: restarted elsewhere");
        }
        if cycle == 0 || rng.random_bool(0.3) {
            match Log::open(&dir, options()) {
                Err(Error::Locked { dir: locked, pid }) => {
                    assert_eq!(locked, dir);
                    assert_eq!(pid, appender.child.id().to_string());
                }
                other => panic!("cycle {cycle}: opening a live directory: {other:?}"),
            }
        }
        let run = Duration::from_millis(rng.random_range(50..=300));
        std::thread::sleep(run); // the kill lands at a random moment: not synchronisation
        let start = appender.start;
        let acked = appender.kill();
        if let Some(end) = acked {
            assert!(end > start);
            acknowledged = acknowledged.max(end);
            appended_runs += 1;
        }
        eprintln!("cycle {cycle}: {policy}, {run:?}: started at {start}, acknowledged {acked:?}");
        // Now and then the next child recovers the killed directory itself.
        if cycle + 1 == CYCLES || rng.random_bool(0.75) {
            let next = verify(&dir, verified, acknowledged, cycle);
            assert!(next >= recovered);
            verified = recovered;
            recovered = next;
            reopened_at = Some(next);
        }
    }
    assert!(
        appended_runs >= CYCLES / 2,
        "only {appended_runs} of {CYCLES} lives acknowledged anything"
    );
    // A last life after all the kills still appends.
    let appender = Appender::start(&dir, "always");
    let start = appender.start;
    assert_eq!(start, recovered);
    let first = appender.wait_for_ack();
    assert!(first > start);
    let acked = appender.kill();
    eprintln!("last life: started at {start}, acknowledged {acked:?}");
    verify(
        &dir,
        recovered,
        acked.unwrap_or(0).max(acknowledged),
        CYCLES,
    );
}
