//! `postgres`: one row per record into PostgreSQL, by binary `COPY`,
//! exactly once across crashes and retries.
//!
//! # Rows
//!
//! Every record becomes a row of five columns:
//!
//! | column | type | value |
//! |---|---|---|
//! | `ts` | `timestamptz` | the latest record time of the record's chunk (chunks keep a min and max time, not one per record) |
//! | `producer` | `text` | the log's producer id, 32 hex digits |
//! | `stream` | `text` | the record's stream |
//! | `log_offset` | `bigint` | the record's offset in the log |
//! | `payload` | `jsonb` | the record when it is JSON `jsonb` takes, else the record's text as a JSON string |
//!
//! A record is stored as a JSON string when it is not JSON, or is JSON that
//! `jsonb` refuses (the escape `\u0000`, numbers beyond `f64`'s range,
//! lone surrogates, nesting deeper than 128). Invalid
//! UTF-8 is replaced by U+FFFD (and NUL, which `jsonb` cannot hold, too);
//! both are counted in [`PostgresStats`].
//!
//! With [`TableRouting::PerStream`] a record goes to the table named after
//! its stream when the name is a plain identifier ([`check_identifier`]),
//! in the schema of `table`; records of other streams (and of the empty
//! stream) go to `table`.
//!
//! # Exactly once
//!
//! A high-water-mark table holds, per sink name and producer, the end
//! offset of what was stored. A delivery is one transaction: `BEGIN`,
//! `SELECT ... FOR UPDATE` of the mark, `COPY` of the records at or above
//! it, `UPDATE` of the mark to the batch's end offset, `COMMIT`. Whatever
//! stops a delivery — a lost connection, a timeout, SIGKILL before or after
//! the `COMMIT` — either committed rows and mark together or neither; a
//! batch offered again (the runtime persists its cursor only after the
//! acknowledgement) finds the mark past it and stores nothing twice. The
//! row lock serialises two deliveries of the same sink and producer,
//! should a stale one still be running on the server.

mod config;
pub mod tls;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use shipper_core::chunk::{decode_body, Decoder};
use shipper_core::component::{ComponentError, Sink, SinkContext};
use shipper_core::log::StoredChunk;
use tokio_postgres::{Client, NoTls, Statement};

/// Seconds from the unix epoch to PostgreSQL's (2000-01-01T00:00:00Z).
const POSTGRES_EPOCH_SECONDS: i64 = 946_684_800;
/// Bytes of `COPY` data gathered before they are handed to the connection.
const COPY_SEND_BYTES: usize = 256 << 10;
/// The connect timeout when the connection string sets none.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest identifier PostgreSQL keeps without truncating it.
const MAX_IDENTIFIER_BYTES: usize = 63;
/// The columns the sink writes, in `COPY` order.
const COLUMNS: [(&str, ColumnType); 5] = [
    ("ts", ColumnType::Timestamptz),
    ("producer", ColumnType::Text),
    ("stream", ColumnType::Text),
    ("log_offset", ColumnType::Bigint),
    ("payload", ColumnType::Jsonb),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnType {
    Timestamptz,
    Text,
    Bigint,
    Jsonb,
}

impl ColumnType {
    fn sql(self) -> &'static str {
        match self {
            ColumnType::Timestamptz => "timestamptz",
            ColumnType::Text => "text",
            ColumnType::Bigint => "bigint",
            ColumnType::Jsonb => "jsonb",
        }
    }

    /// Whether a column of type `found` (as `format_type` spells it) takes
    /// this type's binary `COPY` representation unchanged.
    fn accepts(self, found: &str) -> bool {
        match self {
            ColumnType::Timestamptz => found == "timestamp with time zone",
            ColumnType::Text => found == "text" || found.starts_with("character varying"),
            ColumnType::Bigint => found == "bigint",
            ColumnType::Jsonb => found == "jsonb",
        }
    }
}

/// Where records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableRouting {
    /// A table per stream, named after it when the name is a plain
    /// identifier; `table` for the others.
    PerStream,
    /// Every record into `table`.
    Single,
}

/// Whether the sink creates missing tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableCreation {
    /// `CREATE TABLE IF NOT EXISTS` for the record tables and the
    /// high-water-mark table.
    IfMissing,
    /// The tables must exist; a missing one is a fatal error.
    Never,
}

/// Options of a [`PostgresSink`].
#[derive(Clone)]
pub struct PostgresSinkOptions {
    /// A libpq connection string (`host=... user=...`) or URL
    /// (`postgres://...`). It may hold a password: never logged.
    pub connection: String,
    /// The table for records (`name` or `schema.name`).
    pub table: String,
    /// Where records go.
    pub routing: TableRouting,
    /// The high-water-mark table; `None`: `shipper_hwm` in the schema of
    /// `table`.
    pub hwm_table: Option<String>,
    /// Whether missing tables are created.
    pub creation: TableCreation,
    /// The longest a delivery (or the start) may take; past it the
    /// connection is dropped and the delivery is retried.
    pub timeout: Duration,
    /// The files of the sink's `tls` table (the connection string's
    /// `sslmode` says how they are used).
    pub tls: Option<crate::tls::TlsClientConfig>,
}

impl PostgresSinkOptions {
    /// Options for `table`, with the defaults: a table per stream, tables
    /// created, a 30 s timeout.
    pub fn new(connection: impl Into<String>, table: impl Into<String>) -> Self {
        PostgresSinkOptions {
            connection: connection.into(),
            table: table.into(),
            routing: TableRouting::PerStream,
            hwm_table: None,
            creation: TableCreation::IfMissing,
            timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

impl std::fmt::Debug for PostgresSinkOptions {
    /// The connection string may hold a password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSinkOptions")
            .field("connection", &"<redacted>")
            .field("table", &self.table)
            .field("routing", &self.routing)
            .field("hwm_table", &self.hwm_table)
            .field("creation", &self.creation)
            .field("timeout", &self.timeout)
            .finish()
    }
}

pub use config::PostgresSinkConfig;

/// Counters of a postgres sink.
#[derive(Debug, Default)]
pub struct PostgresStats {
    /// Rows committed.
    pub rows: AtomicU64,
    /// Records not copied because the high-water mark showed them stored
    /// (a batch offered again after a crash or a lost acknowledgement).
    pub skipped: AtomicU64,
    /// Records stored as a JSON string because they are not JSON `jsonb`
    /// takes.
    pub stored_as_text: AtomicU64,
    /// Records whose invalid UTF-8 (or NUL) was replaced by U+FFFD.
    pub invalid_utf8: AtomicU64,
    /// Transactions committed.
    pub transactions: AtomicU64,
}

impl PostgresStats {
    /// The counters as metrics.
    pub fn metrics(self: &Arc<Self>) -> Vec<shipper_core::metrics::ComponentMetric> {
        const ROWS: &str = "shipper_postgres_rows_total";
        const HELP: &str = "Records the sink handled, by outcome: copied, or skipped (already stored, by the high-water mark).";
        const ALTERED: &str = "shipper_postgres_altered_rows_total";
        const ALTERED_HELP: &str = "Copied records stored altered: as a JSON string (not JSON jsonb takes), or with invalid UTF-8 (or NUL) replaced.";
        shipper_core::metrics::counters_of(
            self,
            &[
                (ROWS, HELP, &[("outcome", "copied")], |c| &c.rows),
                (ROWS, HELP, &[("outcome", "skipped")], |c| &c.skipped),
                (
                    ALTERED,
                    ALTERED_HELP,
                    &[("alteration", "stored_as_text")],
                    |c| &c.stored_as_text,
                ),
                (
                    ALTERED,
                    ALTERED_HELP,
                    &[("alteration", "invalid_utf8_replaced")],
                    |c| &c.invalid_utf8,
                ),
                (
                    "shipper_postgres_transactions_total",
                    "Transactions committed.",
                    &[],
                    |c| &c.transactions,
                ),
            ],
        )
    }
}

/// `name` or `schema.name`, each a plain identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TableName {
    schema: Option<String>,
    name: String,
}

impl TableName {
    fn parse(text: &str) -> Result<TableName, String> {
        let (schema, name) = match text.split_once('.') {
            Some((schema, name)) => (Some(schema), name),
            None => (None, text),
        };
        if let Some(schema) = schema {
            check_identifier(schema).map_err(|e| format!("table {text:?}: schema {e}"))?;
        }
        check_identifier(name).map_err(|e| format!("table {text:?}: {e}"))?;
        Ok(TableName {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    fn in_schema_of(&self, name: &str) -> TableName {
        TableName {
            schema: self.schema.clone(),
            name: name.to_owned(),
        }
    }

    /// The name quoted for SQL.
    fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(&self.name)),
            None => quote(&self.name),
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Checks that `name` is a plain identifier: 1 to 63 bytes of lowercase
/// ASCII letters, digits and `_`, not starting with a digit. Such a name
/// means the same table quoted or not, so users can query it as written.
pub fn check_identifier(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_IDENTIFIER_BYTES {
        return Err(format!("{name:?} must be 1 to 63 bytes"));
    }
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if !plain {
        return Err(format!(
            "{name:?} must be lowercase letters, digits and _, not starting with a digit"
        ));
    }
    Ok(())
}

/// Checks a `table` option: `name` or `schema.name`.
pub fn check_table_name(text: &str) -> Result<(), String> {
    TableName::parse(text).map(|_| ())
}

/// Checks a `hwm_table` option (`None`: the default, `shipper_hwm` in the
/// schema of `table`) against a valid `table`: a valid name, and not the
/// records table.
pub fn check_hwm_table(table: &str, hwm_table: Option<&str>) -> Result<(), String> {
    hwm_table_of(&TableName::parse(table)?, hwm_table).map(|_| ())
}

/// The high-water-mark table for records in `table`.
fn hwm_table_of(table: &TableName, hwm_table: Option<&str>) -> Result<TableName, String> {
    let hwm = match hwm_table {
        Some(name) => TableName::parse(name)?,
        None => table.in_schema_of("shipper_hwm"),
    };
    if hwm != *table {
        return Ok(hwm);
    }
    Err(match hwm_table {
        Some(_) => format!("the high-water-mark table must not be the records table {table}"),
        None => format!(
            "the records table {table} is the default high-water-mark table: name another table, or set hwm_table"
        ),
    })
}

/// Checks a `connection` option as [`PostgresSink::new`] does: a libpq
/// connection string or URL that `tokio_postgres` parses, without TLS.
/// The message names the option at fault, never a value (which may be a
/// password).
pub fn check_connection(connection: &str) -> Result<(), String> {
    parse_connection(connection).map(drop)
}

/// Checks the TLS settings of `connection` and the sink's `tls` table
/// together, as [`PostgresSink::new`] uses them (the files are read).
/// An unparsable connection string is `check_connection`'s to report.
pub fn check_tls(
    connection: &str,
    table: Option<&crate::tls::TlsClientConfig>,
) -> Result<(), String> {
    match parse_connection(connection) {
        Ok((_, tls)) => tls::connector(&tls, table, "postgres").map(drop),
        Err(_) => Ok(()),
    }
}

/// The connection string as tokio-postgres reads it, and its TLS options
/// (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`), which it does not.
fn parse_connection(connection: &str) -> Result<(tokio_postgres::Config, tls::PgTls), String> {
    let (rest, tls) = match tls::split(connection) {
        Ok(split) => split,
        // The driver's own words for a string it cannot parse either.
        Err(reason) => {
            return Err(connection
                .parse::<tokio_postgres::Config>()
                .err()
                .map_or(reason, |e| describe(&e)))
        }
    };
    // The parser's messages name the option, never its value.
    let config: tokio_postgres::Config = rest.parse().map_err(|e| describe(&e))?;
    Ok((config, tls))
}

/// Quotes an identifier for SQL.
fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// What the runtime told [`Sink::open`].
#[derive(Debug, Clone)]
struct Identity {
    sink: String,
    producer: String,
}

/// A connection and, once the high-water-mark table exists, the
/// statements on it.
struct Connection {
    client: Client,
    /// The connection's task; aborted when the connection is dropped.
    task: Option<tokio::task::JoinHandle<()>>,
    hwm: Option<HwmStatements>,
}

#[derive(Clone)]
struct HwmStatements {
    lock: Statement,
    update: Statement,
}

impl Drop for Connection {
    /// Closes the socket at once: the server aborts an open transaction.
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Delivers records as rows; see the module docs.
pub struct PostgresSink {
    config: tokio_postgres::Config,
    /// TLS, unless `sslmode=disable`.
    tls: Option<rustls::ClientConfig>,
    table: TableName,
    hwm_table: TableName,
    routing: TableRouting,
    creation: TableCreation,
    timeout: Duration,
    identity: Option<Identity>,
    connection: Option<Connection>,
    /// Tables created or found fitting (tables outlive connections).
    ready: HashSet<TableName>,
    decoder: Decoder,
    scratch: Vec<u8>,
    stats: Arc<PostgresStats>,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("table", &self.table)
            .field("hwm_table", &self.hwm_table)
            .field("routing", &self.routing)
            .field("connected", &self.connection.is_some())
            .finish()
    }
}

impl PostgresSink {
    /// A sink with `options`; checks the connection string and the table
    /// names (nothing is connected before [`Sink::open`]).
    pub fn new(options: PostgresSinkOptions) -> Result<Self, ComponentError> {
        let (mut config, tls) = parse_connection(&options.connection)
            .map_err(|reason| ComponentError::Fatal(format!("connection: {reason}")))?;
        let tls = tls::connector(&tls, options.tls.as_ref(), "postgres")
            .map_err(|reason| ComponentError::Fatal(format!("tls: {reason}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("shipper");
        }
        let table = TableName::parse(&options.table).map_err(ComponentError::Fatal)?;
        let hwm_table =
            hwm_table_of(&table, options.hwm_table.as_deref()).map_err(ComponentError::Fatal)?;
        if options.timeout.is_zero() {
            return Err(ComponentError::Fatal("timeout must be positive".into()));
        }
        Ok(PostgresSink {
            config,
            tls,
            table,
            hwm_table,
            routing: options.routing,
            creation: options.creation,
            timeout: options.timeout,
            identity: None,
            connection: None,
            ready: HashSet::new(),
            decoder: Decoder::default(),
            scratch: Vec::new(),
            stats: Arc::default(),
        })
    }

    /// The sink's counters.
    pub fn stats(&self) -> Arc<PostgresStats> {
        self.stats.clone()
    }

    /// The table records of `stream` go to.
    fn table_for(&self, stream: &[u8]) -> TableName {
        if self.routing == TableRouting::PerStream {
            if let Ok(name) = std::str::from_utf8(stream) {
                if check_identifier(name).is_ok() && self.hwm_table.name != name {
                    return self.table.in_schema_of(name);
                }
            }
        }
        self.table.clone()
    }

    /// Connects if there is no open connection.
    async fn connect(&mut self) -> Result<(), ComponentError> {
        if self
            .connection
            .as_ref()
            .is_some_and(|c| c.client.is_closed())
        {
            self.connection = None;
        }
        if self.connection.is_none() {
            let ended = |error: tokio_postgres::Error| {
                tracing::debug!(error = %describe(&error), "postgres connection ended");
            };
            let (client, task) = match &self.tls {
                None => {
                    let (client, connection) = self
                        .config
                        .connect(NoTls)
                        .await
                        .map_err(|e| classify("connecting", &e))?;
                    (
                        client,
                        tokio::spawn(async move {
                            connection.await.map_err(ended).ok();
                        }),
                    )
                }
                Some(tls) => {
                    let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls.clone());
                    let (client, connection) = self
                        .config
                        .connect(connector)
                        .await
                        .map_err(|e| classify("connecting", &e))?;
                    (
                        client,
                        tokio::spawn(async move {
                            connection.await.map_err(ended).ok();
                        }),
                    )
                }
            };
            self.connection = Some(Connection {
                client,
                task: Some(task),
                hwm: None,
            });
        }
        Ok(())
    }

    /// The open connection's client; call [`Self::connect`] first.
    fn client(&mut self) -> &mut Client {
        &mut self
            .connection
            .as_mut()
            .expect("connect() opened a connection")
            .client
    }

    /// Creates `table` if missing and allowed, then checks its columns.
    async fn ensure_records_table(&mut self, table: &TableName) -> Result<(), ComponentError> {
        if self.ready.contains(table) {
            return Ok(());
        }
        let creation = self.creation;
        self.connect().await?;
        let client = self.client();
        let columns: Vec<String> = COLUMNS
            .iter()
            .map(|(name, kind)| format!("{name} {} NOT NULL", kind.sql()))
            .collect();
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            table.quoted(),
            columns.join(", ")
        );
        if creation == TableCreation::IfMissing {
            create_serialised(client, &create, table).await?;
        }
        check_columns(client, table).await?;
        self.ready.insert(table.clone());
        Ok(())
    }

    /// Creates the high-water-mark table if missing and allowed, and this
    /// sink's row in it; returns the mark.
    async fn ensure_hwm(&mut self, identity: &Identity) -> Result<u64, ComponentError> {
        let hwm = self.hwm_table.clone();
        let creation = self.creation;
        self.connect().await?;
        let client = self.client();
        if creation == TableCreation::IfMissing {
            let create = format!(
                "CREATE TABLE IF NOT EXISTS {} (sink text NOT NULL, producer text NOT NULL, \
                 high_water bigint NOT NULL, PRIMARY KEY (sink, producer))",
                hwm.quoted()
            );
            create_serialised(client, &create, &hwm).await?;
        } else if !table_exists(client, &hwm).await? {
            return Err(ComponentError::Fatal(format!(
                "high-water-mark table {hwm} does not exist (create_tables = false)"
            )));
        }
        let insert = format!(
            "INSERT INTO {} (sink, producer, high_water) VALUES ($1, $2, 0) \
             ON CONFLICT (sink, producer) DO NOTHING",
            hwm.quoted()
        );
        client
            .execute(&insert, &[&identity.sink, &identity.producer])
            .await
            .map_err(|e| classify(&format!("adding this sink's row to {hwm}"), &e))?;
        let select = format!(
            "SELECT high_water FROM {} WHERE sink = $1 AND producer = $2",
            hwm.quoted()
        );
        let row = client
            .query_one(&select, &[&identity.sink, &identity.producer])
            .await
            .map_err(|e| classify(&format!("reading {hwm}"), &e))?;
        let mark: i64 = row.get(0);
        u64::try_from(mark)
            .map_err(|_| ComponentError::Fatal(format!("{hwm}: negative high-water mark {mark}")))
    }

    async fn open_inner(
        &mut self,
        identity: &Identity,
        committed: u64,
    ) -> Result<(), ComponentError> {
        let table = self.table.clone();
        self.ensure_records_table(&table).await?;
        let mark = self.ensure_hwm(identity).await?;
        tracing::info!(
            sink = %identity.sink,
            table = %self.table,
            hwm_table = %self.hwm_table,
            high_water = mark,
            cursor = committed,
            "postgres sink connected"
        );
        if mark > committed {
            tracing::info!(
                sink = %identity.sink,
                records = mark - committed,
                "records below the high-water mark are stored already; they will be skipped"
            );
        }
        Ok(())
    }

    /// The outcome of an attempt bounded by the timeout; after an error
    /// or the timeout the connection is dropped (the server aborts an open
    /// transaction), so the next attempt starts on a fresh one.
    fn settle(
        &mut self,
        what: &str,
        result: Result<Result<(), ComponentError>, tokio::time::error::Elapsed>,
    ) -> Result<(), ComponentError> {
        let error = match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error,
            Err(_) => {
                ComponentError::Retryable(format!("{what} took longer than {:?}", self.timeout))
            }
        };
        self.connection = None;
        // Look at the tables again: one may have been dropped or altered.
        self.ready.clear();
        Err(error)
    }

    async fn deliver_inner(
        &mut self,
        identity: &Identity,
        chunks: &[StoredChunk],
    ) -> Result<(), ComponentError> {
        let Some(end) = chunks.last().map(StoredChunk::end_offset) else {
            return Ok(());
        };
        // Tables first, each in a transaction of its own: DDL does not
        // belong in the delivery's transaction, which holds the mark's lock.
        let mut groups: Vec<(TableName, Vec<&StoredChunk>)> = Vec::new();
        for chunk in chunks {
            let table = self.table_for(chunk.view().stream());
            match groups.iter_mut().find(|(name, _)| *name == table) {
                Some((_, group)) => group.push(chunk),
                None => groups.push((table, vec![chunk])),
            }
        }
        for (table, _) in &groups {
            self.ensure_records_table(table).await?;
        }
        let hwm = self.hwm_table.clone();
        let stats = self.stats.clone();
        self.connect().await?;
        let connection = self.connection.as_mut().expect("connected above");
        let statements = match &connection.hwm {
            Some(statements) => statements.clone(),
            None => {
                let quoted = hwm.quoted();
                let what = format!("preparing statements on {hwm}");
                let lock = connection
                    .client
                    .prepare(&format!(
                        "SELECT high_water FROM {quoted} \
                         WHERE sink = $1 AND producer = $2 FOR UPDATE"
                    ))
                    .await
                    .map_err(|e| classify(&what, &e))?;
                let update = connection
                    .client
                    .prepare(&format!(
                        "UPDATE {quoted} SET high_water = $3 WHERE sink = $1 AND producer = $2"
                    ))
                    .await
                    .map_err(|e| classify(&what, &e))?;
                connection
                    .hwm
                    .insert(HwmStatements { lock, update })
                    .clone()
            }
        };
        let transaction = connection
            .client
            .transaction()
            .await
            .map_err(|e| classify("BEGIN", &e))?;
        let row = transaction
            .query_opt(&statements.lock, &[&identity.sink, &identity.producer])
            .await
            .map_err(|e| classify(&format!("locking the high-water mark in {hwm}"), &e))?;
        let Some(row) = row else {
            return Err(ComponentError::Fatal(format!(
                "{hwm} lost this sink's row (sink {:?}, producer {})",
                identity.sink, identity.producer
            )));
        };
        let mark = u64::try_from(row.get::<_, i64>(0))
            .map_err(|_| ComponentError::Fatal(format!("{hwm}: negative high-water mark")))?;
        let total: u64 = chunks
            .iter()
            .map(|c| c.end_offset() - c.first_offset())
            .sum();
        if end <= mark {
            // Stored before: the acknowledgement (or the cursor) was lost.
            stats.skipped.fetch_add(total, Ordering::Relaxed);
            tracing::info!(sink = %identity.sink, high_water = mark, end, "batch stored before; skipped");
            return Ok(());
        }
        let mut encoder = RowEncoder {
            producer: identity.producer.as_bytes(),
            mark,
            decoder: &mut self.decoder,
            scratch: &mut self.scratch,
            skipped: 0,
            rows: 0,
            stored_as_text: 0,
            invalid_utf8: 0,
        };
        for (table, group) in &groups {
            if group.iter().all(|chunk| chunk.end_offset() <= mark) {
                encoder.skipped += group
                    .iter()
                    .map(|c| c.end_offset() - c.first_offset())
                    .sum::<u64>();
                continue;
            }
            let statement = format!(
                "COPY {} ({}) FROM STDIN (FORMAT binary)",
                table.quoted(),
                COLUMNS.map(|(name, _)| name).join(", ")
            );
            let sink = transaction
                .copy_in::<_, Bytes>(&statement)
                .await
                .map_err(|e| classify(&format!("COPY into {table}"), &e))?;
            let mut sink = std::pin::pin!(sink);
            let mut buffer = BytesMut::with_capacity(COPY_SEND_BYTES + (64 << 10));
            buffer.put_slice(b"PGCOPY\n\xff\r\n\0");
            buffer.put_i32(0); // flags
            buffer.put_i32(0); // header extension length
            for chunk in group {
                encoder.encode(chunk, &mut buffer)?;
                if buffer.len() >= COPY_SEND_BYTES {
                    sink.send(buffer.split().freeze())
                        .await
                        .map_err(|e| classify(&format!("COPY into {table}"), &e))?;
                }
            }
            buffer.put_i16(-1); // trailer
            sink.send(buffer.split().freeze())
                .await
                .map_err(|e| classify(&format!("COPY into {table}"), &e))?;
            sink.as_mut()
                .finish()
                .await
                .map_err(|e| classify(&format!("COPY into {table}"), &e))?;
        }
        let RowEncoder {
            rows,
            skipped,
            stored_as_text,
            invalid_utf8,
            ..
        } = encoder;
        let end_i64 = i64::try_from(end).expect("offsets stay below 2^62");
        transaction
            .execute(
                &statements.update,
                &[&identity.sink, &identity.producer, &end_i64],
            )
            .await
            .map_err(|e| classify(&format!("updating the high-water mark in {hwm}"), &e))?;
        transaction
            .commit()
            .await
            .map_err(|e| classify("COMMIT", &e))?;
        stats.rows.fetch_add(rows, Ordering::Relaxed);
        stats.skipped.fetch_add(skipped, Ordering::Relaxed);
        stats.transactions.fetch_add(1, Ordering::Relaxed);
        stats
            .stored_as_text
            .fetch_add(stored_as_text, Ordering::Relaxed);
        stats
            .invalid_utf8
            .fetch_add(invalid_utf8, Ordering::Relaxed);
        if skipped > 0 {
            tracing::info!(sink = %identity.sink, skipped, "records below the high-water mark skipped");
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for PostgresSink {
    fn metrics(&self) -> Vec<shipper_core::metrics::ComponentMetric> {
        self.stats.metrics()
    }

    async fn open(&mut self, cx: &SinkContext) -> Result<(), ComponentError> {
        self.decoder = cx.decoder();
        let identity = Identity {
            sink: cx.name.clone(),
            producer: cx.producer_id.to_string(),
        };
        self.identity = Some(identity.clone());
        let timeout = self.timeout;
        let result = tokio::time::timeout(timeout, self.open_inner(&identity, cx.committed)).await;
        self.settle("starting", result)
    }

    async fn deliver(&mut self, chunks: &[StoredChunk]) -> Result<(), ComponentError> {
        let Some(identity) = self.identity.clone() else {
            return Err(ComponentError::Fatal(
                "postgres sink: deliver called before open".into(),
            ));
        };
        let timeout = self.timeout;
        let result = tokio::time::timeout(timeout, self.deliver_inner(&identity, chunks)).await;
        self.settle("the delivery", result)
    }

    async fn close(&mut self) -> Result<(), ComponentError> {
        if let Some(mut connection) = self.connection.take() {
            // Not aborted: without its client the task says goodbye to the
            // server (Terminate) and ends.
            connection.task.take();
        }
        Ok(())
    }
}

/// Turns chunks into binary `COPY` rows.
struct RowEncoder<'a> {
    producer: &'a [u8],
    /// Records below this offset are stored already.
    mark: u64,
    decoder: &'a mut Decoder,
    scratch: &'a mut Vec<u8>,
    skipped: u64,
    rows: u64,
    /// Counted into the stats once the transaction commits.
    stored_as_text: u64,
    invalid_utf8: u64,
}

impl RowEncoder<'_> {
    fn encode(&mut self, chunk: &StoredChunk, out: &mut BytesMut) -> Result<(), ComponentError> {
        let view = chunk.view();
        let first = chunk.first_offset();
        if chunk.end_offset() <= self.mark {
            self.skipped += chunk.end_offset() - first;
            return Ok(());
        }
        if view.is_loss_marker() {
            return Ok(());
        }
        let seconds = (view.max_ts() / 1_000_000_000) as i64;
        let micros = (seconds - POSTGRES_EPOCH_SECONDS) * 1_000_000
            + ((view.max_ts() % 1_000_000_000) / 1_000) as i64;
        let stream = view.stream_str();
        let body =
            decode_body(&view, self.decoder).map_err(|e| ComponentError::undecodable(first, e))?;
        for (index, record) in body.records().enumerate() {
            let record = record.map_err(|e| ComponentError::undecodable(first, e))?;
            let offset = first + index as u64;
            if offset < self.mark {
                self.skipped += 1;
                continue;
            }
            let payload = match Payload::of(record, self.scratch) {
                Payload::Json => record,
                Payload::Text { lossy } => {
                    self.stored_as_text += 1;
                    self.invalid_utf8 += u64::from(lossy);
                    &self.scratch[..]
                }
            };
            out.put_i16(COLUMNS.len() as i16);
            out.put_i32(8);
            out.put_i64(micros);
            put_field(out, self.producer);
            put_field(out, stream.as_bytes());
            out.put_i32(8);
            out.put_i64(offset as i64);
            // jsonb's binary form: a version byte, then the JSON text.
            out.put_i32(i32::try_from(payload.len() + 1).map_err(|_| {
                ComponentError::Fatal(format!(
                    "record at offset {offset} too large for a jsonb value"
                ))
            })?);
            out.put_u8(1);
            out.put_slice(payload);
            self.rows += 1;
        }
        Ok(())
    }
}

fn put_field(out: &mut BytesMut, bytes: &[u8]) {
    out.put_i32(bytes.len() as i32);
    out.put_slice(bytes);
}

/// How a record is stored in the `payload` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    /// As it is: JSON that `jsonb` takes.
    Json,
    /// As a JSON string of its text, written into the caller's buffer;
    /// `lossy` when invalid UTF-8 or NUL was replaced by U+FFFD.
    Text {
        /// Whether bytes were replaced.
        lossy: bool,
    },
}

impl Payload {
    /// Decides how `record` is stored; for [`Payload::Text`] writes the
    /// JSON string into `scratch` (cleared first).
    ///
    /// JSON that serde_json parses, numbers included, and that holds no
    /// `\u0000` escape is what `jsonb` takes: serde_json checks surrogate
    /// escapes and UTF-8 when it parses strings, and refuses numbers beyond
    /// `f64` (PostgreSQL's `numeric` goes further; those become text).
    fn of(record: &[u8], scratch: &mut Vec<u8>) -> Payload {
        let nul_escape = memchr::memmem::find(record, b"\\u0000").is_some();
        if !nul_escape && serde_json::from_slice::<Validated>(record).is_ok() {
            return Payload::Json;
        }
        let text = String::from_utf8_lossy(record);
        let mut lossy = matches!(text, std::borrow::Cow::Owned(_));
        let text = if text.contains('\0') {
            lossy = true;
            std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
        } else {
            text
        };
        scratch.clear();
        serde_json::to_writer(&mut *scratch, &*text).expect("a string serializes into a Vec");
        Payload::Text { lossy }
    }
}

/// A JSON value parsed and dropped: strings and numbers are parsed (not
/// skipped, as `IgnoredAny` would), so bad escapes and overflowing numbers
/// are errors. Allocates nothing beyond serde_json's scratch buffer.
struct Validated;

impl<'de> serde::Deserialize<'de> for Validated {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValidatedVisitor)
    }
}

struct ValidatedVisitor;

impl<'de> serde::de::Visitor<'de> for ValidatedVisitor {
    type Value = Validated;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_str<E>(self, _: &str) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_unit<E>(self) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Validated, A::Error> {
        while seq.next_element::<Validated>()?.is_some() {}
        Ok(Validated)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Validated, A::Error> {
        while map.next_key::<Validated>()?.is_some() {
            map.next_value::<Validated>()?;
        }
        Ok(Validated)
    }
}

/// Runs `create` (a `CREATE ... IF NOT EXISTS`) under a transaction-level
/// advisory lock: concurrent `CREATE TABLE IF NOT EXISTS` of one name can
/// otherwise fail on the catalog's unique index.
async fn create_serialised(
    client: &mut Client,
    create: &str,
    table: &TableName,
) -> Result<(), ComponentError> {
    let what = format!("creating {table}");
    let transaction = client
        .transaction()
        .await
        .map_err(|e| classify(&what, &e))?;
    let result = async {
        transaction
            .batch_execute("SELECT pg_advisory_xact_lock(hashtext('shipper postgres sink DDL'))")
            .await?;
        transaction.batch_execute(create).await?;
        transaction.commit().await
    }
    .await;
    result.map_err(|e| match e.code().map(|c| c.code()) {
        // Lost a creation race after all: the next attempt finds the table.
        Some("23505" | "42P07") => ComponentError::Retryable(format!("{what}: {}", describe(&e))),
        _ => classify(&what, &e),
    })
}

async fn table_exists(client: &Client, table: &TableName) -> Result<bool, ComponentError> {
    let row = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table.quoted()])
        .await
        .map_err(|e| classify(&format!("looking up {table}"), &e))?;
    Ok(row.get(0))
}

/// Checks that `table` exists and takes the sink's rows: the five columns
/// with fitting types, and no other column that needs a value.
async fn check_columns(client: &Client, table: &TableName) -> Result<(), ComponentError> {
    if !table_exists(client, table).await? {
        return Err(ComponentError::Fatal(format!(
            "table {table} does not exist (create_tables = false)"
        )));
    }
    let rows = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod), \
                    attnotnull AND NOT atthasdef AND attidentity = '' \
             FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            &[&table.quoted()],
        )
        .await
        .map_err(|e| classify(&format!("reading the columns of {table}"), &e))?;
    let found: Vec<(String, String, bool)> = rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let mut problems = Vec::new();
    for (name, kind) in COLUMNS {
        match found.iter().find(|(found, _, _)| found == name) {
            None => problems.push(format!("no column {name} ({})", kind.sql())),
            Some((_, found, _)) if !kind.accepts(found) => {
                problems.push(format!("column {name} is {found}, not {}", kind.sql()))
            }
            Some(_) => {}
        }
    }
    for (name, kind, needs_value) in &found {
        if *needs_value && !COLUMNS.iter().any(|(column, _)| column == name) {
            problems.push(format!(
                "column {name} ({kind}) is NOT NULL without a default, and the sink does not write it"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ComponentError::Fatal(format!(
            "table {table} does not fit the postgres sink: {}",
            problems.join("; ")
        )))
    }
}

/// An error as text: the server's message and SQLSTATE, or the client's
/// error and its cause. Never the connection string.
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            // A failing row's values can be long: keep the start.
            let cut = detail
                .char_indices()
                .nth(200)
                .map_or(detail.len(), |(at, _)| at);
            text.push_str(&format!("; {}", &detail[..cut]));
            if cut < detail.len() {
                text.push('…');
            }
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// Whether retrying `error` later can succeed: the connection failed or
/// was lost, the server is short of resources, shutting down, or aborted
/// the transaction for a conflict, or a table went missing. Errors the server gives for the
/// statements or the data (missing table, wrong type, a refused row, bad
/// credentials) are fatal.
fn is_retryable(error: &tokio_postgres::Error) -> bool {
    if let Some(code) = error.code() {
        let code = code.code();
        // 08 connection exception, 40 transaction rollback (serialization,
        // deadlock), 53 insufficient resources, 55 object not in
        // prerequisite state (lock not available), 57 operator intervention
        // (shutdown, starting up, cancelled), 58 system error (I/O), 25006
        // read-only transaction (a standby after a failover).
        return matches!(&code[..2], "08" | "40" | "53" | "55" | "57" | "58")
            || code == "25006"
            // A table dropped while the sink runs: the next attempt creates
            // it again, or says it is missing (create_tables = false).
            || code == "42P01";
    }
    if error.is_closed() {
        return true;
    }
    std::error::Error::source(error).is_some_and(|cause| cause.is::<std::io::Error>())
}

fn classify(what: &str, error: &tokio_postgres::Error) -> ComponentError {
    let message = format!("{what}: {}", describe(error));
    if is_retryable(error) {
        ComponentError::Retryable(message)
    } else {
        ComponentError::Fatal(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_plain_lowercase_names() {
        for good in ["logs", "_x", "a1_b2", &"x".repeat(63)] {
            assert!(check_identifier(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Logs",
            "1abc",
            "a-b",
            "a b",
            "a\"b",
            "é",
            &"x".repeat(64),
        ] {
            assert!(check_identifier(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            TableName::parse("audit.events").unwrap().quoted(),
            "\"audit\".\"events\""
        );
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse(".b").is_err());
        assert_eq!(quote("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn payloads_jsonb_takes_stay_json_the_rest_become_strings() {
        let mut scratch = Vec::new();
        let cases: [(&[u8], Option<&str>, bool); 12] = [
            (br#"{"a":1,"b":[true,null,"x"]}"#, None, false),
            (b" 42 ", None, false),
            (br#""\ud83d\ude00""#, None, false),
            (b"1e300", None, false),
            (b"plain text", Some(r#""plain text""#), false),
            (b"", Some(r#""""#), false),
            (br#"{"a":1"#, Some(r#""{\"a\":1""#), false),
            (br#""\u0000""#, Some(r#""\"\\u0000\"""#), false),
            (br#""\ud800""#, Some(r#""\"\\ud800\"""#), false),
            (b"1e400", Some(r#""1e400""#), false),
            (b"bad \xff utf8", Some("\"bad \u{FFFD} utf8\""), true),
            (b"nul \0 byte", Some("\"nul \u{FFFD} byte\""), true),
        ];
        for (record, text, lossy) in cases {
            let payload = Payload::of(record, &mut scratch);
            match text {
                None => assert_eq!(payload, Payload::Json, "{record:?}"),
                Some(text) => {
                    assert_eq!(payload, Payload::Text { lossy }, "{record:?}");
                    assert_eq!(std::str::from_utf8(&scratch).unwrap(), text);
                }
            }
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(matches!(
            Payload::of(deep.as_bytes(), &mut scratch),
            Payload::Text { lossy: false }
        ));
    }

    #[test]
    fn bad_options_are_fatal_and_never_echo_the_connection_string() {
        let secret = "host=127.0.0.1 user=u password=hunter2 sslmode=verify-ca";
        let error = PostgresSink::new(PostgresSinkOptions::new(secret, "logs")).unwrap_err();
        assert!(
            matches!(&error, ComponentError::Fatal(m) if m.contains("needs a CA file")),
            "{error}"
        );
        assert!(!error.to_string().contains("hunter2"), "{error}");
        let error = PostgresSink::new(PostgresSinkOptions::new(
            "host=127.0.0.1 password=hunter2 bogus=1",
            "logs",
        ))
        .unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        let error =
            PostgresSink::new(PostgresSinkOptions::new("host=127.0.0.1", "Logs")).unwrap_err();
        assert!(error.to_string().contains("lowercase"), "{error}");
        let mut options = PostgresSinkOptions::new("host=127.0.0.1 password=hunter2", "logs");
        options.hwm_table = Some("logs".into());
        assert!(PostgresSink::new(options.clone()).is_err());
        options.hwm_table = None;
        let sink = PostgresSink::new(options.clone()).unwrap();
        assert!(!format!("{sink:?} {options:?}").contains("hunter2"));
        assert_eq!(sink.hwm_table.to_string(), "shipper_hwm");
        options.table = "audit.logs".into();
        let sink = PostgresSink::new(options).unwrap();
        assert_eq!(sink.hwm_table.to_string(), "audit.shipper_hwm");
        assert_eq!(sink.table_for(b"web").to_string(), "audit.web");
        assert_eq!(sink.table_for(b"Web").to_string(), "audit.logs");
        assert_eq!(sink.table_for(b"").to_string(), "audit.logs");
        assert_eq!(sink.table_for(b"shipper_hwm").to_string(), "audit.logs");
    }
}
