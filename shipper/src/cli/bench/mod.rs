//! `shipper bench`: the ingest benchmark. A built-in load generator feeds
//! a real pipeline — a `shipper run` child process for the `file` and
//! `tcp` scenarios (its sink a blackhole), or an embedded
//! [`shipper::ingest::Ingestor`] in this process for `sdk` — and the bench
//! reads the pipeline's own metrics (`/metrics` of the child's admin
//! endpoint; the sink's cursor for `sdk`) every few milliseconds until the
//! sink has acknowledged every record.
//!
//! The report: records/s and MB/s in, compressed MB/s out and the ratio,
//! CPU seconds per GB (user + system of the shipper process), its peak
//! RSS, and end-to-end latency (written by the generator → acknowledged by
//! the sink) percentiles, estimated from the two counters' time series.
//! Beside each, baselines measured in the same run on the same bytes:
//! memcpy, `write(2)` to the same filesystem, zstd at the same level on
//! one thread. `--json` prints it all as one object.

mod chart;
mod report;
mod user_config;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use shipper::harness::{baseline, free_port, scrape, Process};
use shipper_core::corpus::{Corpus, CorpusKind};

use crate::Outcome;
use report::Report;

/// Which pipeline the bench drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// Lines appended to a file, tailed by a `file` source → blackhole.
    File,
    /// Lines over TCP connections to a `socket` source → blackhole.
    Tcp,
    /// `Ingestor::insert_bytes` in this process → blackhole.
    Sdk,
    /// Your own config (`--config FILE`): the bench feeds one of its
    /// sources and follows its sinks.
    Config,
    /// Lines appended to a file → zstd chunks → `http` sink → a second
    /// `shipper run` (the aggregator: a `shipper` source) → blackhole.
    Http,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::File => "file → blackhole",
            Scenario::Tcp => "tcp → blackhole",
            Scenario::Sdk => "sdk insert → blackhole",
            Scenario::Http => "file → zstd → http → aggregator → blackhole",
            Scenario::Config => "config",
        }
    }
}

/// `[log] durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Durability {
    Always,
    Interval,
    Never,
}

impl Durability {
    fn name(self) -> &'static str {
        match self {
            Durability::Always => "always",
            Durability::Interval => "interval",
            Durability::Never => "never",
        }
    }
}

/// Arguments of `shipper bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// The pipeline to drive.
    #[arg(long, value_enum, default_value = "file")]
    scenario: Scenario,
    /// The generated records: access_log, events, iot or random
    /// (incompressible).
    #[arg(long, default_value = "access_log", value_parser = parse_corpus)]
    corpus: CorpusKind,
    /// Send this file's lines (cycled) instead of a generated corpus.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Pad or trim generated records to this many bytes, or to a size
    /// drawn uniformly from MIN..MAX for each record (from the seed).
    #[arg(long, value_name = "BYTES|MIN..MAX", value_parser = parse_record_bytes)]
    record_bytes: Option<RecordBytes>,
    /// Records to send.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Send for this many seconds at `--rate` instead of a record count.
    #[arg(
        long,
        value_name = "SECONDS",
        requires = "rate",
        conflicts_with = "records"
    )]
    duration: Option<f64>,
    /// Records per second (default: as fast as the pipeline takes them).
    #[arg(long)]
    rate: Option<u64>,
    /// With `--scenario config`: the config file to run (a copy, with the
    /// bench's own data directory and admin port).
    #[arg(long, value_name = "FILE", required_if_eq("scenario", "config"))]
    config: Option<PathBuf>,
    /// With `--scenario config`: the source to feed (default: the first
    /// `file`, TCP `socket` or `http` source).
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
    /// `[log] durability` of the pipeline.
    #[arg(long, value_enum, default_value = "interval")]
    durability: Durability,
    /// `[log] zstd_level` of the pipeline (and of the zstd baseline).
    #[arg(long, default_value_t = 1)]
    zstd_level: i32,
    /// TCP connections (`tcp`) or inserting threads (`sdk`).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Seed of the generated corpus.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the report as one JSON object.
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// Print the report as a Markdown table (header and one row), as the
    /// README's performance section shows it.
    #[arg(long)]
    markdown: bool,
    /// Write throughput and latency over the run as an SVG chart here.
    #[arg(long, value_name = "FILE")]
    chart: Option<PathBuf>,
    /// Give up waiting for the acknowledgements after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

/// `--record-bytes`: one size, or a range sizes are drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordBytes {
    Fixed(usize),
    Uniform(usize, usize),
}

impl RecordBytes {
    /// The size of record `seq`.
    fn of(self, seed: u64, seq: u64) -> usize {
        match self {
            RecordBytes::Fixed(bytes) => bytes,
            RecordBytes::Uniform(min, max) => {
                // splitmix64 of (seed, seq): deterministic, no state.
                let mut z = seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                min + (z % (max - min + 1) as u64) as usize
            }
        }
    }
}

fn parse_record_bytes(text: &str) -> Result<RecordBytes, String> {
    let number = |n: &str| {
        n.trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{n}` is not a positive number of bytes"))
    };
    match text.split_once("..") {
        None => Ok(RecordBytes::Fixed(number(text)?)),
        Some((min, max)) => {
            let (min, max) = (number(min)?, number(max)?);
            if min > max {
                return Err(format!("{min}..{max}: the smallest size comes first"));
            }
            Ok(RecordBytes::Uniform(min, max))
        }
    }
}

fn parse_corpus(name: &str) -> Result<CorpusKind, String> {
    name.parse()
        .map_err(|e: shipper_core::corpus::UnknownCorpus| e.to_string())
}

/// The records to send, one after another, newline-terminated.
struct Workload {
    ndjson: Vec<u8>,
    records: u64,
}

impl Workload {
    fn build(args: &BenchArgs) -> anyhow::Result<Workload> {
        let mut ndjson = Vec::new();
        match &args.input {
            Some(path) => {
                let text =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let lines: Vec<&[u8]> = text
                    .split(|b| *b == b'\n')
                    .filter(|line| !line.is_empty())
                    .collect();
                if lines.is_empty() {
                    bail!("{} holds no lines", path.display());
                }
                for line in lines.iter().cycle().take(args.records as usize) {
                    ndjson.extend_from_slice(line);
                    ndjson.push(b'\n');
                }
            }
            None => {
                let corpus = Corpus::new(args.corpus, args.seed);
                let mut record = Vec::new();
                for seq in 0..args.records {
                    record.clear();
                    match args.record_bytes {
                        None => corpus.record_into(seq, &mut record),
                        Some(size) => corpus
                            .clone()
                            .with_record_bytes(size.of(args.seed, seq))
                            .record_into(seq, &mut record),
                    };
                    ndjson.extend_from_slice(&record);
                    ndjson.push(b'\n');
                }
            }
        }
        Ok(Workload {
            ndjson,
            records: args.records,
        })
    }

    /// The records, without their newlines.
    fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.ndjson
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
    }
}

/// One observation of the two counters.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    written: u64,
    acknowledged: u64,
}

/// What one run of a pipeline gave.
struct Measured {
    samples: Vec<Sample>,
    elapsed: Duration,
    stored_bytes: u64,
    cpu_seconds: f64,
    /// CPU seconds of this process's load generator (child scenarios; for
    /// `sdk` the inserting threads are the pipeline's producers and count
    /// in `cpu_seconds`).
    generator_cpu_seconds: f64,
    peak_rss: u64,
}

pub(crate) fn run(mut args: BenchArgs) -> anyhow::Result<Outcome> {
    if let (Some(seconds), Some(rate)) = (args.duration, args.rate) {
        if !(seconds > 0.0 && seconds.is_finite()) {
            bail!("--duration must be a positive number of seconds");
        }
        args.records = (seconds * rate as f64).round() as u64;
    }
    if !(1..=19).contains(&args.zstd_level) {
        bail!("--zstd-level must be 1 to 19");
    }
    if args.records == 0 {
        bail!("--records must be at least 1");
    }
    let dir = tempfile::Builder::new()
        .prefix("shipper-bench-")
        .tempdir()
        .context("creating the bench's data directory")?;
    let workload = Workload::build(&args)?;
    let progress = Progress::new(args.records, args.json || args.markdown);
    let mut scenario = args.scenario.name().to_owned();
    let measured = match args.scenario {
        Scenario::File | Scenario::Tcp | Scenario::Http => {
            run_children(&args, dir.path(), &workload, &progress)?
        }
        Scenario::Sdk => run_embedded(&args, dir.path(), &workload, &progress)?,
        Scenario::Config => {
            let config = args.config.as_deref().expect("clap requires --config");
            let prepared = user_config::prepare(config, dir.path(), args.source.as_deref())?;
            scenario = format!(
                "{} (source {}, sinks {})",
                config.display(),
                prepared.source,
                prepared.sinks.join(", ")
            );
            let observe = || user_config::observe(&prepared);
            let plans = [prepared.plan.clone()];
            let measured = drive(
                &args,
                dir.path(),
                &workload,
                &progress,
                &plans,
                &prepared.feed,
                &observe,
            );
            if let Feed::File(input) = &prepared.feed {
                let _ = std::fs::remove_file(input);
            }
            measured?
        }
    };
    progress.finish();
    let baselines = baseline::measure(&workload.ndjson, dir.path(), args.zstd_level)
        .context("measuring the baselines")?;
    let report = Report::new(scenario.clone(), &args, &workload, &measured, baselines);
    if let Some(path) = &args.chart {
        let title = format!("shipper bench: {scenario}");
        std::fs::write(path, chart::svg(&title, &measured.samples))
            .with_context(|| format!("writing the chart to {}", path.display()))?;
    }
    if args.markdown {
        print!("{}{}", Report::markdown_header(), report.markdown_row());
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(Outcome::Success)
}

/// The top of every config the bench writes: data directory, `[log]` as
/// the flags say, quiet logging.
fn log_section(args: &BenchArgs, data: &Path) -> String {
    format!(
        "data_dir = \"{}\"\n[log]\ndurability = \"{}\"\nzstd_level = {}\n[logging]\nlevel = \"warn\"\n",
        data.display(),
        args.durability.name(),
        args.zstd_level,
    )
}

/// A `shipper run` process of the scenario: its name, config and admin port.
#[derive(Clone)]
struct ChildPlan {
    name: &'static str,
    config: String,
    admin: u16,
}

/// Where the bench reads a counter: an admin port and a sink name.
#[derive(Clone, Copy)]
struct SinkAt {
    admin: u16,
    sink: &'static str,
}

/// The `shipper run` processes of the `file`, `tcp` and `http` scenarios,
/// in start order; where their sink acknowledges records; and where
/// the stored (compressed) bytes are counted.
fn child_plans(
    args: &BenchArgs,
    dir: &Path,
    tcp: u16,
) -> anyhow::Result<(Vec<ChildPlan>, SinkAt, SinkAt)> {
    let log = |data: &str| log_section(args, &dir.join(data));
    let file_source = format!(
        "[sources.bench]\ntype = \"file\"\ninclude = [\"{}/*.log\"]\nread_from = \"beginning\"\nglob_interval_ms = 50\nmax_line_bytes = \"16MiB\"\n",
        dir.join("input").display()
    );
    let admin = free_port()?;
    let blackhole =
        |input: &str| format!("[sinks.void]\ntype = \"blackhole\"\ninputs = [\"{input}\"]\n");
    let with_admin = |text: String, port: u16| format!("{text}{}", Process::admin_section(port));
    Ok(match args.scenario {
        Scenario::Http => {
            let (aggregator_admin, listen) = (free_port()?, free_port()?);
            let aggregator = with_admin(
                format!(
                    "{}[sources.sidecars]\ntype = \"shipper\"\naddress = \"127.0.0.1:{listen}\"\n{}",
                    log("aggregator"),
                    blackhole("sidecars")
                ),
                aggregator_admin,
            );
            let sidecar = with_admin(
                format!(
                    "{}{file_source}[sinks.up]\ntype = \"http\"\ninputs = [\"bench\"]\nuri = \"http://127.0.0.1:{listen}/v1/chunks\"\nprotocol = \"shipper\"\n",
                    log("data")
                ),
                admin,
            );
            (
                vec![
                    ChildPlan {
                        name: "aggregator",
                        config: aggregator,
                        admin: aggregator_admin,
                    },
                    ChildPlan {
                        name: "sidecar",
                        config: sidecar,
                        admin,
                    },
                ],
                SinkAt {
                    admin: aggregator_admin,
                    sink: "void",
                },
                SinkAt { admin, sink: "up" },
            )
        }
        Scenario::File | Scenario::Tcp | Scenario::Sdk | Scenario::Config => {
            let source = if args.scenario == Scenario::File {
                file_source
            } else {
                format!(
                    "[sources.bench]\ntype = \"socket\"\nmode = \"tcp\"\naddress = \"127.0.0.1:{tcp}\"\nmax_connections = {}\n",
                    args.connections.max(1) + 1
                )
            };
            let config = with_admin(
                format!("{}{source}{}", log("data"), blackhole("bench")),
                admin,
            );
            let at = SinkAt {
                admin,
                sink: "void",
            };
            (
                vec![ChildPlan {
                    name: "shipper",
                    config,
                    admin,
                }],
                at,
                at,
            )
        }
    })
}

/// Starts `shipper run` on `plan`'s config and waits until its admin
/// endpoint answers.
fn start_child(dir: &Path, plan: &ChildPlan) -> anyhow::Result<Process> {
    let exe = std::env::current_exe().context("finding the shipper binary")?;
    let mut process = Process::start(&exe, dir, plan.name, &plan.config, plan.admin)
        .with_context(|| format!("starting `shipper run` ({})", plan.name))?;
    process.wait_ready(Duration::from_secs(30))?;
    Ok(process)
}

/// Where the generator sends the workload.
#[derive(Debug, Clone)]
enum Feed {
    /// Appends to this file.
    File(PathBuf),
    /// Lines over TCP connections to this address.
    Tcp(std::net::SocketAddr),
    /// NDJSON POSTs to this address and path.
    Http(std::net::SocketAddr, String),
}

/// What the bench reads from the pipeline at each sample: records
/// acknowledged, stored (compressed) bytes acknowledged.
type Observe<'a> = dyn Fn() -> anyhow::Result<(u64, u64)> + Sync + 'a;

/// Runs the scenario's `shipper run` processes, feeds the first stage,
/// and follows the metrics until the last sink has acknowledged every
/// record.
fn run_children(
    args: &BenchArgs,
    dir: &Path,
    workload: &Workload,
    progress: &Progress,
) -> anyhow::Result<Measured> {
    std::fs::create_dir_all(dir.join("input"))?;
    let tcp = free_port()?;
    let (plans, acknowledged_at, stored_at) = child_plans(args, dir, tcp)?;
    let feed = match args.scenario {
        Scenario::Tcp => Feed::Tcp(([127, 0, 0, 1], tcp).into()),
        _ => Feed::File(dir.join("input/bench.log")),
    };
    let observe = || -> anyhow::Result<(u64, u64)> {
        let text = scrape(acknowledged_at.admin)?;
        let acknowledged = counters(&text, acknowledged_at.sink)?.acknowledged;
        // One scrape when both counters are in the same process.
        let stored = if stored_at.admin == acknowledged_at.admin {
            counters(&text, stored_at.sink)?
        } else {
            counters(&scrape(stored_at.admin)?, stored_at.sink)?
        };
        Ok((acknowledged, stored.stored_bytes))
    };
    drive(args, dir, workload, progress, &plans, &feed, &observe)
}

/// Starts `plans`' processes in order, feeds `feed` from a generator
/// thread, samples `observe` and the processes' CPU and peak RSS every
/// ~10 ms until every record is acknowledged, then stops the processes.
fn drive(
    args: &BenchArgs,
    dir: &Path,
    workload: &Workload,
    progress: &Progress,
    plans: &[ChildPlan],
    feed: &Feed,
    observe: &Observe<'_>,
) -> anyhow::Result<Measured> {
    let mut children = Vec::new();
    for plan in plans {
        children.push(start_child(dir, plan)?);
    }
    let written = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let generator_before = shipper::procstat::usage("self").cpu_seconds;
    let started = Instant::now();
    let measured = std::thread::scope(|scope| -> anyhow::Result<Measured> {
        let generator = {
            let written = written.clone();
            let failed = failed.clone();
            scope.spawn(move || {
                let sent = match feed {
                    Feed::File(path) => feed_file(path, workload, args.rate, &written),
                    Feed::Tcp(address) => {
                        feed_tcp(*address, workload, args.rate, args.connections, &written)
                    }
                    Feed::Http(address, path) => {
                        feed_http(*address, path, workload, args.rate, &written)
                    }
                };
                if sent.is_err() {
                    failed.store(true, Ordering::Release);
                }
                sent
            })
        };
        let mut samples = Vec::new();
        let deadline = started + Duration::from_secs(args.timeout);
        let pids: Vec<u32> = children.iter().map(Process::pid).collect();
        let (mut cpu_seconds, mut peak_rss, mut stored_bytes);
        loop {
            let (acknowledged, stored) = observe()?;
            stored_bytes = stored;
            // Read while the processes are alive: CPU and peak RSS so far,
            // summed over every process of the pipeline.
            (cpu_seconds, peak_rss) = pids.iter().fold((0.0, 0), |(cpu, rss), pid| {
                let (more_cpu, more_rss) = process_usage(*pid);
                (cpu + more_cpu, rss + more_rss)
            });
            let sample = Sample {
                at: started.elapsed(),
                written: written.load(Ordering::Acquire),
                acknowledged,
            };
            progress.set(sample.acknowledged, sample.at);
            samples.push(sample);
            if sample.acknowledged >= workload.records {
                break;
            }
            if failed.load(Ordering::Acquire)
                || generator.is_finished() && sample.written < workload.records
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the sinks acknowledged {} of {} records within {} s",
                    sample.acknowledged,
                    workload.records,
                    args.timeout
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let elapsed = started.elapsed();
        generator
            .join()
            .map_err(|_| anyhow::anyhow!("the load generator panicked"))??;
        Ok(Measured {
            samples,
            elapsed,
            stored_bytes,
            cpu_seconds,
            generator_cpu_seconds: shipper::procstat::usage("self").cpu_seconds - generator_before,
            peak_rss,
        })
    })?;
    // The last stage first: it acknowledges what the first still sends.
    for child in children.into_iter().rev() {
        let name = child.name().to_owned();
        if let Err(error) = child.stop() {
            eprintln!("shipper bench: {name}: {error}");
        }
    }
    Ok(measured)
}

/// Appends the workload to `path` (at `rate` records/s if given).
fn feed_file(
    path: &Path,
    workload: &Workload,
    rate: Option<u64>,
    written: &AtomicU64,
) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    feed(workload, rate, written, |bytes| Ok(file.write_all(bytes)?))
}

/// Sends the workload over `connections` TCP connections, round robin.
fn feed_tcp(
    address: std::net::SocketAddr,
    workload: &Workload,
    rate: Option<u64>,
    connections: usize,
    written: &AtomicU64,
) -> anyhow::Result<()> {
    let mut streams = (0..connections.max(1))
        .map(|_| {
            let stream = std::net::TcpStream::connect(address)?;
            stream.set_nodelay(true)?;
            Ok(std::io::BufWriter::with_capacity(256 * 1024, stream))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .context("connecting to the tcp source")?;
    let mut next = 0;
    feed(workload, rate, written, |bytes| {
        let count = streams.len();
        let stream = &mut streams[next % count];
        next += 1;
        stream.write_all(bytes)?;
        stream.flush()?;
        Ok(())
    })
}

/// POSTs the workload as NDJSON bodies of about 64 KiB to an `http`
/// source; each must be answered 2xx (the source's acknowledgement).
fn feed_http(
    address: std::net::SocketAddr,
    path: &str,
    workload: &Workload,
    rate: Option<u64>,
    written: &AtomicU64,
) -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader, Read};
    let mut stream = BufReader::new(
        std::net::TcpStream::connect(address).context("connecting to the http source")?,
    );
    feed(workload, rate, written, |body| {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let socket = stream.get_mut();
        socket.write_all(head.as_bytes())?;
        socket.write_all(body)?;
        let mut status = String::new();
        stream.read_line(&mut status)?;
        let code: u16 = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut length = 0;
        loop {
            let mut line = String::new();
            stream.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut answer = vec![0; length];
        stream.read_exact(&mut answer)?;
        if !(200..300).contains(&code) {
            bail!(
                "the http source answered {}: {}",
                status.trim(),
                String::from_utf8_lossy(&answer)
            );
        }
        Ok(())
    })
}

/// Hands the workload to `send` in batches of whole lines (about 64 KiB,
/// or what `rate` allows per millisecond), counting the records sent.
fn feed(
    workload: &Workload,
    rate: Option<u64>,
    written: &AtomicU64,
    mut send: impl FnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut lines = workload.lines().peekable();
    let mut batch = Vec::with_capacity(80 * 1024);
    let mut sent = 0u64;
    while lines.peek().is_some() {
        let allowed = match rate {
            Some(rate) => {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64 + 1;
                if due <= sent {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                due - sent
            }
            None => u64::MAX,
        };
        batch.clear();
        let mut count = 0;
        while count < allowed && batch.len() < 64 * 1024 {
            let Some(line) = lines.next() else { break };
            batch.extend_from_slice(line);
            batch.push(b'\n');
            count += 1;
        }
        send(&batch)?;
        sent += count;
        written.store(sent, Ordering::Release);
    }
    Ok(())
}

/// Runs the workload through an embedded ingestor with a blackhole sink.
fn run_embedded(
    args: &BenchArgs,
    dir: &Path,
    workload: &Workload,
    progress: &Progress,
) -> anyhow::Result<Measured> {
    let config = format!(
        "{}[sources.bench]\ntype = \"sdk\"\n[sinks.void]\ntype = \"blackhole\"\ninputs = [\"bench\"]\n",
        log_section(args, &dir.join("data")),
    );
    let ingestor = shipper::ingest::Ingestor::open_toml(&config)?;
    let (cpu_before, _) = process_usage(std::process::id());
    // The workload lives in this process: count only what the pipeline
    // adds to it.
    shipper::procstat::reset_peak();
    let resident_before = shipper::procstat::usage("self").vm_rss;
    let lines: Vec<&[u8]> = workload.lines().collect();
    let threads = args.connections.max(1);
    let per_thread = lines.len().div_ceil(threads);
    let written = AtomicU64::new(0);
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut stored_bytes = 0;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = lines
            .chunks(per_thread)
            .map(|part| {
                let ingestor = ingestor.clone();
                let written = &written;
                scope.spawn(move || -> anyhow::Result<()> {
                    let mut counted = 0;
                    for (n, record) in part.iter().enumerate() {
                        if let Some(rate) = args.rate {
                            pace(started, n as u64, rate / threads as u64);
                        }
                        ingestor.insert_bytes("bench", record)?;
                        counted += 1;
                        if counted == 1024 {
                            written.fetch_add(counted, Ordering::AcqRel);
                            counted = 0;
                        }
                    }
                    written.fetch_add(counted, Ordering::AcqRel);
                    Ok(())
                })
            })
            .collect();
        let flusher = ingestor.clone();
        let deadline = started + Duration::from_secs(args.timeout);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut flushed = false;
        loop {
            let inserted = written.load(Ordering::Acquire);
            if inserted >= workload.records && !flushed {
                // The last chunks would close at their linger time: now.
                runtime.block_on(flusher.flush())?;
                flushed = true;
            }
            let (acknowledged, stored) = ingestor.delivered("void").unwrap_or((0, 0));
            stored_bytes = stored;
            let sample = Sample {
                at: started.elapsed(),
                written: inserted,
                acknowledged,
            };
            progress.set(acknowledged, sample.at);
            samples.push(sample);
            if acknowledged >= workload.records {
                break;
            }
            if workers.iter().all(|w| w.is_finished()) && inserted < workload.records {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the sink acknowledged {acknowledged} of {} records within {} s",
                    workload.records,
                    args.timeout
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("an inserting thread panicked"))??;
        }
        Ok(())
    })?;
    let elapsed = started.elapsed();
    let (cpu_after, peak_rss) = process_usage(std::process::id());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(ingestor.close())?;
    Ok(Measured {
        samples,
        elapsed,
        stored_bytes,
        cpu_seconds: cpu_after - cpu_before,
        generator_cpu_seconds: 0.0,
        peak_rss: peak_rss.saturating_sub(resident_before),
    })
}

/// Sleeps until record `n` is due at `rate` records/s.
fn pace(started: Instant, n: u64, rate: u64) {
    let due = Duration::from_secs_f64(n as f64 / rate.max(1) as f64);
    if let Some(wait) = due.checked_sub(started.elapsed()) {
        std::thread::sleep(wait);
    }
}

/// The counters the bench follows.
struct Counters {
    acknowledged: u64,
    stored_bytes: u64,
}

/// The value of sample `family{labels}` in a `/metrics` text.
fn sample_of(text: &str, family: &str, component: &str) -> Option<u64> {
    shipper::harness::sample(text, family, component).map(|value| value as u64)
}

/// Sink `sink`'s counters in a `/metrics` text.
fn counters(text: &str, sink: &str) -> anyhow::Result<Counters> {
    Ok(Counters {
        acknowledged: sample_of(text, "shipper_component_sent_records_total", sink)
            .context("no shipper_component_sent_records_total in /metrics")?,
        stored_bytes: sample_of(text, "shipper_component_sent_bytes_total", sink).unwrap_or(0),
    })
}

/// User + system CPU seconds and peak RSS (bytes) of process `pid`.
fn process_usage(pid: u32) -> (f64, u64) {
    let usage = shipper::procstat::usage(&pid.to_string());
    (usage.cpu_seconds, usage.vm_hwm)
}

/// A progress bar on stderr with the current rate, when stderr is a
/// terminal and the report is not JSON.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(total: u64, json: bool) -> Progress {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} records acknowledged, {msg}",
                )
                .expect("a valid template"),
            );
            bar
        });
        Progress { bar }
    }

    fn set(&self, acknowledged: u64, at: Duration) {
        if let Some(bar) = &self.bar {
            bar.set_position(acknowledged);
            let rate = acknowledged as f64 / at.as_secs_f64().max(1e-3);
            bar.set_message(format!("{:.2} M records/s", rate / 1e6));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
