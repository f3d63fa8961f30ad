//! The postgres sink against a real PostgreSQL on 127.0.0.1:5432 (user
//! postgres, trust auth, database test). Without one the tests print why
//! they skip, unless `SHIPPER_REQUIRE_SERVICES=1`, which makes them fail
//! instead. Every test uses tables and sink names of its own (process id
//! and time) and drops its tables at the end, also when it fails.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shipper_components::sinks::postgres::{
    PostgresSink, PostgresSinkOptions, TableCreation, TableRouting,
};
use shipper_core::chunk::{ChunkBuilder, ChunkOptions};
use shipper_core::component::{ComponentError, Sink, SinkContext};
use shipper_core::log::{Log, LogOptions, StoredChunk};
use tokio_postgres::{Client, NoTls};

const SERVER: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
const PATIENCE: Duration = Duration::from_secs(30);

/// A client of the test database, or `None` (skip) when there is none;
/// panics instead of skipping when services are required.
async fn database() -> Option<Client> {
    match tokio_postgres::connect(&format!("{SERVER} connect_timeout=5"), NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            Some(client)
        }
        Err(error) => {
            let reason = format!("PostgreSQL not reachable on 127.0.0.1:5432: {error}");
            shipper_tests::service_missing(&reason);
            None
        }
    }
}

use shipper_tests::unique;

/// Drops its tables when dropped, the test passed or not (on a thread of
/// its own: a destructor cannot await).
struct Tables(Vec<String>);

impl Drop for Tables {
    fn drop(&mut self) {
        let tables = std::mem::take(&mut self.0);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(SERVER, NoTls).await?;
                tokio::spawn(connection);
                for table in &tables {
                    client
                        .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
                        .await?;
                }
                Ok::<_, tokio_postgres::Error>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("dropping the test tables: {error}"),
            Err(_) => eprintln!("dropping the test tables panicked"),
        }
    }
}

/// A log holding one chunk per `(stream, records)`, its chunks, and the
/// directory that holds it.
struct TestLog {
    _dir: tempfile::TempDir,
    log: Log,
    chunks: Vec<StoredChunk>,
}

fn test_log(batches: &[(&str, Vec<Vec<u8>>)]) -> TestLog {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 1 << 20,
        max_bytes: 8 << 20,
        ..LogOptions::default()
    };
    let log = Log::open(dir.path().join("data"), options).unwrap();
    for (index, (stream, records)) in batches.iter().enumerate() {
        let mut builder = ChunkBuilder::new(stream, "in", ChunkOptions::default()).unwrap();
        for record in records {
            if let Some(chunk) = builder.push(record, ts_of(index), None).unwrap() {
                log.append(chunk).unwrap().wait_durable().unwrap();
            }
        }
        if let Some(chunk) = builder.finish().unwrap() {
            log.append(chunk).unwrap().wait_durable().unwrap();
        }
    }
    let chunks = log.reader(0).map(Result::unwrap).collect();
    TestLog {
        _dir: dir,
        log,
        chunks,
    }
}

/// The record time of chunk `index`: 2024-02-29T13:05:00.123456Z plus
/// `index` seconds (nanoseconds below a microsecond are cut by PostgreSQL).
fn ts_of(index: usize) -> u64 {
    1_709_211_900_123_456_789 + index as u64 * 1_000_000_000
}

fn context(log: &Log, sink: &str, committed: u64) -> SinkContext {
    SinkContext::new(sink, log, committed)
}

fn options(table: &str, hwm: &str) -> PostgresSinkOptions {
    let mut options = PostgresSinkOptions::new(SERVER, table);
    options.routing = TableRouting::Single;
    options.hwm_table = Some(hwm.to_owned());
    options
}

async fn opened(options: &PostgresSinkOptions, log: &Log, sink: &str) -> PostgresSink {
    let mut postgres = PostgresSink::new(options.clone()).unwrap();
    postgres.open(&context(log, sink, 0)).await.unwrap();
    postgres
}

fn records(from: usize, to: usize) -> Vec<Vec<u8>> {
    (from..to)
        .map(|seq| format!(r#"{{"seq":{seq},"msg":"record {seq}"}}"#).into_bytes())
        .collect()
}

/// How often each log offset is in `table`.
async fn offsets(client: &Client, table: &str) -> BTreeMap<i64, i64> {
    client
        .query(
            &format!("SELECT log_offset, count(*) FROM {table} GROUP BY log_offset"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

fn once_each(range: std::ops::Range<i64>) -> BTreeMap<i64, i64> {
    range.map(|offset| (offset, 1)).collect()
}

async fn high_water(client: &Client, hwm: &str, sink: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT high_water FROM {hwm} WHERE sink = $1"),
            &[&sink],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_arrive_with_their_columns() {
    let Some(client) = database().await else {
        return;
    };
    let (table, hwm) = (unique("rows"), unique("rows_hwm"));
    let _tables = Tables(vec![table.clone(), hwm.clone()]);
    let test = test_log(&[
        (
            "web",
            vec![
                br#"{"seq":0,"user":{"id":7},"tags":["a","b"]}"#.to_vec(),
                b"plain text, not JSON".to_vec(),
            ],
        ),
        (
            "",
            vec![
                b"bad \xff utf8".to_vec(),
                br#"["multi", "line",
 "record"]"#
                    .to_vec(),
                br#""\u0000 is refused by jsonb""#.to_vec(),
            ],
        ),
    ]);
    let mut sink = opened(&options(&table, &hwm), &test.log, "rows").await;
    let stats = sink.stats();
    sink.deliver(&test.chunks).await.unwrap();
    sink.close().await.unwrap();

    let rows = client
        .query(
            &format!(
                "SELECT (extract(epoch FROM ts) * 1000000)::bigint, producer, stream, \
                 log_offset, payload::text FROM {table} ORDER BY log_offset"
            ),
            &[],
        )
        .await
        .unwrap();
    let producer = test.log.producer_id().to_string();
    let found: Vec<(i64, String, String, i64, Value)> = rows
        .iter()
        .map(|row| {
            let payload: String = row.get(4);
            (
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                serde_json::from_str(&payload).unwrap(),
            )
        })
        .collect();
    let micros = |index: usize| (ts_of(index) / 1_000) as i64;
    let expected = vec![
        (
            micros(0),
            producer.clone(),
            "web".to_owned(),
            0,
            json!({"seq": 0, "user": {"id": 7}, "tags": ["a", "b"]}),
        ),
        (
            micros(0),
            producer.clone(),
            "web".to_owned(),
            1,
            json!("plain text, not JSON"),
        ),
        (
            micros(1),
            producer.clone(),
            String::new(),
            2,
            json!("bad \u{FFFD} utf8"),
        ),
        (
            micros(1),
            producer.clone(),
            String::new(),
            3,
            json!(["multi", "line", "record"]),
        ),
        (
            micros(1),
            producer,
            String::new(),
            4,
            json!(r#""\u0000 is refused by jsonb""#),
        ),
    ];
    assert_eq!(found, expected);
    assert_eq!(high_water(&client, &hwm, "rows").await, 5);
    let count =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(count(&stats.rows), 5);
    assert_eq!(count(&stats.stored_as_text), 3);
    assert_eq!(count(&stats.invalid_utf8), 1);
    assert_eq!(count(&stats.transactions), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_delivered_again_adds_nothing() {
    let Some(client) = database().await else {
        return;
    };
    let (table, hwm) = (unique("again"), unique("again_hwm"));
    let _tables = Tables(vec![table.clone(), hwm.clone()]);
    let test = test_log(&[
        ("s", records(0, 100)),
        ("s", records(100, 250)),
        ("s", records(250, 300)),
    ]);
    let options = options(&table, &hwm);
    let mut sink = opened(&options, &test.log, "again").await;
    sink.deliver(&test.chunks[..2]).await.unwrap();
    // A crash after the COMMIT, before shipper persisted its cursor: a new
    // sink (from cursor 0) is offered the same batch again, then a batch
    // that overlaps it.
    let mut restarted = opened(&options, &test.log, "again").await;
    let stats = restarted.stats();
    restarted.deliver(&test.chunks[..2]).await.unwrap();
    assert_eq!(offsets(&client, &table).await, once_each(0..250));
    restarted.deliver(&test.chunks[1..]).await.unwrap();
    assert_eq!(offsets(&client, &table).await, once_each(0..300));
    assert_eq!(high_water(&client, &hwm, "again").await, 300);
    let skipped = stats.skipped.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(skipped, 250 + 150);
    // Another sink name keeps a mark of its own and stores its own copy.
    let mut other = opened(&options, &test.log, "again_other").await;
    other.deliver(&test.chunks[..1]).await.unwrap();
    assert_eq!(offsets(&client, &table).await.get(&0), Some(&2));
    assert_eq!(high_water(&client, &hwm, "again_other").await, 100);
}

/// Rows and distinct offsets of `producer` in `table`.
async fn rows_of(client: &Client, table: &str, producer: &str) -> (i64, i64) {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT log_offset) FROM {table} WHERE producer = $1"
            ),
            &[&producer],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The backend of the sink's connection once it waits for a lock, by its
/// application name.
async fn blocked_backend(client: &Client, application: &str) -> i32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let row = client
            .query_opt(
                "SELECT pid FROM pg_stat_activity \
                 WHERE application_name = $1 AND wait_event_type = 'Lock'",
                &[&application],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            return row.get(0);
        }
        assert!(
            Instant::now() < deadline,
            "the sink never blocked on the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_delivery_leaves_nothing_and_the_retry_delivers_once() {
    let Some(mut client) = database().await else {
        return;
    };
    let (table, hwm) = (unique("cut"), unique("cut_hwm"));
    let _tables = Tables(vec![table.clone(), hwm.clone()]);
    let application = unique("app");
    let test = test_log(&[("s", records(0, 50)), ("s", records(50, 100))]);
    let mut options = options(&table, &hwm);
    options.connection = format!("{SERVER} application_name={application}");
    let mut sink = opened(&options, &test.log, "cut").await;

    // 1. The COPY fails on a constraint: nothing is stored, the mark
    // stays, and the error is fatal and says why.
    client
        .batch_execute(&format!(
            "ALTER TABLE {table} ADD CONSTRAINT not_seven CHECK (log_offset <> 7)"
        ))
        .await
        .unwrap();
    let error = sink.deliver(&test.chunks[..1]).await.unwrap_err();
    assert!(
        matches!(&error, ComponentError::Fatal(m) if m.contains("not_seven") && m.contains("23514")),
        "{error:?}"
    );
    assert_eq!(offsets(&client, &table).await, BTreeMap::new());
    assert_eq!(high_water(&client, &hwm, "cut").await, 0);
    client
        .batch_execute(&format!("ALTER TABLE {table} DROP CONSTRAINT not_seven"))
        .await
        .unwrap();
    sink.deliver(&test.chunks[..1]).await.unwrap();
    assert_eq!(offsets(&client, &table).await, once_each(0..50));

    // 2. The COPY waits on a lock past the timeout: the sink drops its
    // connection, so the transaction can never commit; the retry (once the
    // lock is gone) stores the batch once.
    options.timeout = Duration::from_millis(500);
    let mut hurried = opened(&options, &test.log, "cut").await;
    let blocker = client.transaction().await.unwrap();
    blocker
        .batch_execute(&format!("LOCK TABLE {table} IN SHARE MODE"))
        .await
        .unwrap();
    let error = hurried.deliver(&test.chunks[1..]).await.unwrap_err();
    assert!(
        matches!(&error, ComponentError::Retryable(m) if m.contains("took longer")),
        "{error:?}"
    );
    blocker.rollback().await.unwrap();
    hurried.deliver(&test.chunks[1..]).await.unwrap();
    assert_eq!(offsets(&client, &table).await, once_each(0..100));

    // 3. The server ends the connection while the COPY waits (after BEGIN
    // and the mark's lock): retryable, nothing stored, the retry reconnects.
    let more = test_log(&[("s", records(0, 100)), ("s", records(100, 160))]);
    let mut fresh = PostgresSink::new(options.clone()).unwrap();
    fresh.open(&context(&more.log, "cut", 0)).await.unwrap();
    fresh.deliver(&more.chunks[..1]).await.unwrap();
    let blocker = client.transaction().await.unwrap();
    blocker
        .batch_execute(&format!("LOCK TABLE {table} IN SHARE MODE"))
        .await
        .unwrap();
    let delivery = tokio::spawn({
        let chunks = more.chunks[1..].to_vec();
        async move {
            let result = fresh.deliver(&chunks).await;
            (fresh, result)
        }
    });
    let observer = database().await.unwrap();
    let backend = blocked_backend(&observer, &application).await;
    observer
        .execute("SELECT pg_terminate_backend($1)", &[&backend])
        .await
        .unwrap();
    let (mut fresh, result) = delivery.await.unwrap();
    assert!(
        matches!(&result, Err(ComponentError::Retryable(_))),
        "{result:?}"
    );
    blocker.rollback().await.unwrap();
    let producer = more.log.producer_id().to_string();
    assert_eq!(rows_of(&client, &table, &producer).await, (100, 100));
    fresh.deliver(&more.chunks[1..]).await.unwrap();
    assert_eq!(rows_of(&client, &table, &producer).await, (160, 160));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_retryable_and_never_shows_the_password() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let test = test_log(&[("s", records(0, 3))]);
    let mut options = PostgresSinkOptions::new(
        format!("postgres://postgres:hunter2@127.0.0.1:{port}/test"),
        "logs",
    );
    options.timeout = Duration::from_secs(5);
    let mut sink = PostgresSink::new(options).unwrap();
    let error = sink
        .open(&context(&test.log, "refused", 0))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ComponentError::Retryable(m) if m.contains("connecting")),
        "{error:?}"
    );
    assert!(!error.to_string().contains("hunter2"), "{error}");
    let error = sink.deliver(&test.chunks).await.unwrap_err();
    assert!(matches!(error, ComponentError::Retryable(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_does_not_fit_is_fatal_with_the_reasons() {
    let Some(client) = database().await else {
        return;
    };
    let (table, hwm, missing) = (unique("unfit"), unique("unfit_hwm"), unique("missing"));
    let _tables = Tables(vec![table.clone(), hwm.clone(), missing.clone()]);
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (ts timestamptz, producer text, stream varchar(40), \
             log_offset integer, payload json, note text NOT NULL)"
        ))
        .await
        .unwrap();
    let test = test_log(&[("s", records(0, 1))]);
    let mut sink = PostgresSink::new(options(&table, &hwm)).unwrap();
    let error = sink
        .open(&context(&test.log, "unfit", 0))
        .await
        .unwrap_err();
    let ComponentError::Fatal(message) = &error else {
        panic!("{error:?}");
    };
    for needle in [
        "column log_offset is integer, not bigint",
        "column payload is json, not jsonb",
        "column note (text) is NOT NULL without a default",
        "no column",
    ] {
        assert_eq!(
            message.contains(needle),
            needle != "no column",
            "{needle:?} in {message}"
        );
    }
    // Not created when creation is off.
    let mut options = options(&missing, &hwm);
    options.creation = TableCreation::Never;
    let mut sink = PostgresSink::new(options).unwrap();
    let error = sink
        .open(&context(&test.log, "unfit", 0))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ComponentError::Fatal(m) if m.contains("does not exist")),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_get_tables_of_their_own() {
    let Some(client) = database().await else {
        return;
    };
    let (table, hwm, stream) = (unique("default"), unique("streams_hwm"), unique("web"));
    let _tables = Tables(vec![table.clone(), hwm.clone(), stream.clone()]);
    let test = test_log(&[
        (stream.as_str(), records(0, 10)),
        ("Not-An-Identifier", records(10, 15)),
        (stream.as_str(), records(15, 20)),
        ("", records(20, 22)),
    ]);
    let mut options = options(&table, &hwm);
    options.routing = TableRouting::PerStream;
    let mut sink = opened(&options, &test.log, "streams").await;
    sink.deliver(&test.chunks).await.unwrap();
    let in_stream = offsets(&client, &stream).await;
    assert_eq!(
        in_stream,
        (0..10).chain(15..20).map(|offset| (offset, 1)).collect()
    );
    let in_default = offsets(&client, &table).await;
    assert_eq!(
        in_default,
        (10..15).chain(20..22).map(|offset| (offset, 1)).collect()
    );
    assert_eq!(high_water(&client, &hwm, "streams").await, 22);
}

/// The local PostgreSQL's certificate: Debian's self-signed "snakeoil"
/// one (package ssl-cert), issued to `localhost`.
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// Whether this sink's connection (by application name) uses TLS.
async fn ssl_in_use(client: &Client, application: &str) -> bool {
    client
        .query_one(
            "SELECT bool_or(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = $1",
            &[&application],
        )
        .await
        .unwrap()
        .get::<_, Option<bool>>(0)
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_arrive_over_tls_with_the_server_certificate_verified() {
    let Some(client) = database().await else {
        return;
    };
    let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    if ssl != "on" || !std::path::Path::new(SNAKEOIL).exists() {
        shipper_tests::service_missing(&format!(
            "PostgreSQL on 127.0.0.1:5432 does not serve TLS with {SNAKEOIL} (ssl = {ssl})"
        ));
        return;
    }
    let (table, hwm) = (unique("tls"), unique("tls_hwm"));
    let _tables = Tables(vec![table.clone(), hwm.clone()]);
    let test = test_log(&[("s", records(0, 50))]);
    let application = unique("tls");

    // verify-full: the certificate chains to the CA and is for `localhost`.
    let mut options = options(&table, &hwm);
    options.connection = format!(
        "host=localhost port=5432 user=postgres dbname=test application_name={application} \
         sslmode=verify-full sslrootcert={SNAKEOIL}"
    );
    let mut sink = opened(&options, &test.log, "tls").await;
    assert!(
        ssl_in_use(&client, &application).await,
        "the connection is not TLS"
    );
    sink.deliver(&test.chunks).await.unwrap();
    assert_eq!(offsets(&client, &table).await, once_each(0..50));
    drop(sink);

    // The same, with the CA in the sink's `tls` table and a URL.
    let mut options = options.clone();
    options.connection = format!(
        "postgres://postgres@localhost:5432/test?application_name={application}&sslmode=verify-full"
    );
    options.tls = Some(shipper_components::tls::TlsClientConfig {
        ca_file: Some(SNAKEOIL.into()),
        ..Default::default()
    });
    let sink = opened(&options, &test.log, "tls").await;
    drop(sink);

    let refused = |connection: String, tls: Option<shipper_components::tls::TlsClientConfig>| {
        let mut options = options.clone();
        options.connection = connection;
        options.tls = tls;
        let log = test.log.clone();
        async move {
            let mut sink = PostgresSink::new(options).unwrap();
            match sink.open(&context(&log, "tls_refused", 0)).await {
                Err(error) => error.to_string(),
                Ok(()) => panic!("connected"),
            }
        }
    };
    // verify-full to 127.0.0.1: the certificate is for localhost.
    let wrong_name = refused(
        format!(
            "host=127.0.0.1 user=postgres dbname=test sslmode=verify-full sslrootcert={SNAKEOIL}"
        ),
        None,
    )
    .await;
    assert!(
        wrong_name.to_lowercase().contains("not valid for name")
            || wrong_name.contains("NotValidForName"),
        "{wrong_name}"
    );
    // verify-ca to 127.0.0.1: the chain is what counts.
    let mut ca_only = options.clone();
    ca_only.connection = format!(
        "host=127.0.0.1 user=postgres dbname=test application_name={application} sslmode=verify-ca sslrootcert={SNAKEOIL}"
    );
    ca_only.tls = None;
    drop(opened(&ca_only, &test.log, "tls").await);
    // A CA that did not issue the server's certificate.
    let pki = tempfile::tempdir().unwrap();
    let stranger = shipper_tests::pki::Ca::new(pki.path(), "stranger");
    let unknown = refused(
        format!(
            "host=localhost user=postgres dbname=test sslmode=verify-full sslrootcert={}",
            stranger.crt.display()
        ),
        None,
    )
    .await;
    assert!(
        unknown.contains("UnknownIssuer") || unknown.to_lowercase().contains("unknown issuer"),
        "{unknown}"
    );
    // require: encrypted, nothing verified (libpq's meaning).
    let mut require = options.clone();
    require.connection = format!(
        "host=127.0.0.1 user=postgres dbname=test application_name={application}-r sslmode=require"
    );
    require.tls = None;
    let _sink = opened(&require, &test.log, "tls").await;
    assert!(ssl_in_use(&client, &format!("{application}-r")).await);
}
