//! The `postgres` sink's config: `[sinks.NAME] type = "postgres"`.

// Every key is described in docs/config.md, the one place they are documented.
#![allow(missing_docs)]

use std::time::Duration;

use serde::Deserialize;
use shipper_core::component::Sink;

use super::{
    check_connection, check_hwm_table, check_table_name, PostgresSink, PostgresSinkOptions,
    TableCreation, TableRouting,
};
use crate::config::{duration_ms, BuildContext, BuildError, Checks, SinkComponent};

fn default_timeout_ms() -> u64 {
    30_000
}

/// `type = "postgres"`: inserts rows, exactly once.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    #[serde(default)]
    pub inputs: Vec<String>,
    /// A libpq connection string or URL; it may hold a password.
    pub connection: String,
    /// The table for records (`name` or `schema.name`).
    pub table: String,
    /// A table per stream, named after it when the name is a plain
    /// identifier; `false`: every record into `table`.
    #[serde(default = "PostgresSinkConfig::default_true")]
    pub table_per_stream: bool,
    /// The high-water-mark table; default `shipper_hwm` in `table`'s schema.
    #[serde(default)]
    pub hwm_table: Option<String>,
    /// `CREATE TABLE IF NOT EXISTS` the tables the sink needs.
    #[serde(default = "PostgresSinkConfig::default_true")]
    pub create_tables: bool,
    #[serde(default = "default_timeout_ms", deserialize_with = "duration_ms")]
    pub timeout_ms: u64,
    /// CA and client certificate files for TLS (`sslmode` in `connection`
    /// says how they are used).
    #[serde(default)]
    pub tls: Option<crate::tls::TlsClientConfig>,
}

impl PostgresSinkConfig {
    fn default_true() -> bool {
        true
    }

    fn check_config(&self, check: &mut dyn Checks) {
        if self.connection.is_empty() {
            check.error(&["connection"], "must not be empty");
        } else if let Err(reason) = check_connection(&self.connection) {
            check.error(&["connection"], reason);
        }
        let table = check_table_name(&self.table);
        if let Err(reason) = &table {
            check.error(&["table"], reason);
        }
        let hwm_table = self.hwm_table.as_deref().map_or(Ok(()), check_table_name);
        if let Err(reason) = &hwm_table {
            check.error(&["hwm_table"], reason);
        }
        if table.is_ok() && hwm_table.is_ok() {
            if let Err(reason) = check_hwm_table(&self.table, self.hwm_table.as_deref()) {
                // Without `hwm_table` the default collides with `table`.
                let key = if self.hwm_table.is_some() {
                    "hwm_table"
                } else {
                    "table"
                };
                check.error(&[key], reason);
            }
        }
        if self.timeout_ms == 0 {
            check.error(&["timeout_ms"], "must be at least 1");
        }
        if let Some(tls) = &self.tls {
            tls.check(check);
        }
        if let Err(reason) = super::check_tls(&self.connection, self.tls.as_ref()) {
            let key = if self.tls.is_some() {
                "tls"
            } else {
                "connection"
            };
            check.error(&[key], reason);
        }
    }
}

impl std::fmt::Debug for PostgresSinkConfig {
    /// The connection string may hold a password: never log it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSinkConfig")
            .field("inputs", &self.inputs)
            .field("connection", &"<redacted>")
            .field("table", &self.table)
            .field("table_per_stream", &self.table_per_stream)
            .field("hwm_table", &self.hwm_table)
            .field("create_tables", &self.create_tables)
            .field("timeout_ms", &self.timeout_ms)
            .field("tls", &self.tls)
            .finish()
    }
}

impl crate::config::Named for PostgresSinkConfig {
    const TYPE: &'static str = "postgres";
}

impl SinkComponent for PostgresSinkConfig {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }

    fn check(&self, checks: &mut dyn Checks) {
        self.check_config(checks);
    }

    fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        let options = PostgresSinkOptions {
            connection: self.connection.clone(),
            table: self.table.clone(),
            routing: if self.table_per_stream {
                TableRouting::PerStream
            } else {
                TableRouting::Single
            },
            hwm_table: self.hwm_table.clone(),
            creation: if self.create_tables {
                TableCreation::IfMissing
            } else {
                TableCreation::Never
            },
            timeout: Duration::from_millis(self.timeout_ms),
            tls: self.tls.clone(),
        };
        Ok(Box::new(
            PostgresSink::new(options).map_err(|e| e.to_string())?,
        ))
    }
}
