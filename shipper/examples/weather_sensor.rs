//! A weather sensor that embeds shipper: it inserts readings at a steady
//! rate while its backend — an aggregator (a shipper with a `shipper`
//! source and a `postgres` sink, run in this process for the demo) — is
//! stopped and started again. The readings wait on the sensor's disk while
//! the aggregator is down and upload when it is back; at the end the
//! sensor checks PostgreSQL: every reading exactly once, and its own disk
//! empty again.
//!
//! ```sh
//! cargo run --release -p shipper --example weather_sensor            # PostgreSQL on 127.0.0.1:5432
//! cargo run -p shipper --example weather_sensor -- --readings 3000 --rate 1000
//! ```
//!
//! Options: `--readings N` (default 20000), `--rate PER_SECOND` (5000),
//! `--postgres "host=… user=… dbname=…"` (`host=127.0.0.1 user=postgres
//! dbname=test`). Exits 1 if a reading is missing or repeated.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use shipper::ingest::{Ingest, Ingestor};
use shipper::runtime::Reloads;
use shipper_core::component::Shutdown;

#[derive(serde::Serialize, Ingest)]
#[ingest(stream = "weather")]
struct Reading {
    seq: u64,
    station: &'static str,
    celsius: f64,
    humidity: f64,
}

struct Args {
    readings: u64,
    rate: u64,
    postgres: String,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        readings: 20_000,
        rate: 5_000,
        postgres: "host=127.0.0.1 user=postgres dbname=test".into(),
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--readings" => args.readings = value.parse().context("--readings")?,
            "--rate" => args.rate = value.parse().context("--rate")?,
            "--postgres" => args.postgres = value,
            _ => bail!("unknown option {flag} (--readings, --rate, --postgres)"),
        }
    }
    if args.readings == 0 || args.rate == 0 {
        bail!("--readings and --rate must be at least 1");
    }
    Ok(args)
}

/// The aggregator, in this process: receives the sensor's chunks, COPYs
/// them into PostgreSQL exactly once.
struct Aggregator {
    shutdown: Shutdown,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Aggregator {
    fn start(dir: &Path, address: SocketAddr, postgres: &str, table: &str) -> anyhow::Result<Self> {
        let text = format!(
            r#"data_dir = "{data}"
shutdown_timeout_ms = 5000
[admin]
address = "127.0.0.1:0"
[sources.sensors]
type = "shipper"
address = "{address}"
[sinks.database]
type = "postgres"
inputs = ["sensors"]
connection = "{postgres} connect_timeout=5"
table = "{table}"
table_per_stream = false
hwm_table = "{table}_hwm"
"#,
            data = dir.display(),
        );
        let config_file = dir.with_extension("toml");
        std::fs::write(&config_file, &text)?;
        let loaded = shipper::config::parse(&text, &|name| std::env::var(name).ok())
            .map_err(|invalid| anyhow::anyhow!("{invalid}"))?;
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            runtime.block_on(shipper::runtime::run(
                config_file,
                loaded.config,
                stop,
                Reloads::new(),
            ))
        });
        Ok(Aggregator { shutdown, thread })
    }

    fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the aggregator panicked"))?
    }
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("segments")).map_or(0, Iterator::count)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let dir = tempfile::tempdir()?;
    let sensor_dir = dir.path().join("sensor");
    let address: SocketAddr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?
    };
    let table = format!("weather_demo_{}", std::process::id());
    let (client, connection) = tokio_postgres::connect(&args.postgres, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL ({})", args.postgres))?;
    tokio::spawn(connection);

    let sensor = Ingestor::open_toml(&format!(
        r#"data_dir = "{data}"
[log]
durability = "interval"
segment_bytes = "256KiB"
[sources.readings]
type = "sdk"
[sinks.aggregator]
type = "http"
inputs = ["readings"]
uri = "http://{address}/v1/chunks"
timeout_ms = 2000
retry = {{ initial_ms = 100, max_ms = 500 }}
"#,
        data = sensor_dir.display(),
    ))?;
    println!(
        "sensor: {} readings at {}/s; the aggregator is down for the middle third",
        args.readings, args.rate
    );
    let mut aggregator = Some(Aggregator::start(
        &dir.path().join("aggregator"),
        address,
        &args.postgres,
        &table,
    )?);
    let started = Instant::now();
    let third = args.readings / 3;
    for seq in 0..args.readings {
        if seq == third {
            aggregator.take().map(Aggregator::stop).transpose()?;
            println!(
                "{:>6.2} s  aggregator stopped; readings wait on the sensor's disk",
                started.elapsed().as_secs_f64()
            );
        }
        if seq == 2 * third {
            println!(
                "{:>6.2} s  aggregator started again; {} segments on the sensor's disk",
                started.elapsed().as_secs_f64(),
                segments(&sensor_dir)
            );
            aggregator = Some(Aggregator::start(
                &dir.path().join("aggregator"),
                address,
                &args.postgres,
                &table,
            )?);
        }
        sensor.insert(&Reading {
            seq,
            station: "north-field",
            celsius: 12.0 + (seq % 150) as f64 / 10.0,
            humidity: 55.0 + (seq % 300) as f64 / 10.0,
        })?;
        // A steady rate: sleep whenever ahead of schedule.
        let due = Duration::from_secs_f64((seq + 1) as f64 / args.rate as f64);
        if let Some(ahead) = due.checked_sub(started.elapsed()) {
            if ahead > Duration::from_millis(1) {
                tokio::time::sleep(ahead).await;
            }
        }
    }
    let uploaded = sensor.wait_for_upload(Duration::from_secs(120)).await?;
    println!(
        "{:>6.2} s  all inserted; uploaded and acknowledged: {uploaded}",
        started.elapsed().as_secs_f64()
    );
    let left = segments(&sensor_dir);
    sensor.close().await?;
    // The aggregator acknowledged the sensor once its log held the
    // readings; wait for its sink to have COPYed them.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (rows, distinct) = loop {
        let row = client
            .query_opt(
                &format!("SELECT count(*), count(DISTINCT (payload->>'seq')::bigint) FROM {table}"),
                &[],
            )
            .await;
        let (rows, distinct): (i64, i64) = match row {
            Ok(Some(row)) => (row.get(0), row.get(1)),
            _ => (0, 0),
        };
        if rows as u64 >= args.readings || Instant::now() > deadline {
            break (rows, distinct);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if let Some(aggregator) = aggregator {
        aggregator.stop()?;
    }
    for drop in [
        format!("DROP TABLE IF EXISTS {table}"),
        format!("DROP TABLE IF EXISTS {table}_hwm"),
    ] {
        client.batch_execute(&drop).await?;
    }
    println!(
        "PostgreSQL: {rows} rows, {distinct} distinct readings of {} inserted; the sensor's disk holds {left} segment file(s): the active one and the next, preallocated",
        args.readings
    );
    if rows as u64 != args.readings || distinct as u64 != args.readings || !uploaded {
        bail!(
            "not exactly once: {rows} rows, {distinct} distinct, {} inserted",
            args.readings
        );
    }
    println!("every reading arrived exactly once");
    Ok(())
}
