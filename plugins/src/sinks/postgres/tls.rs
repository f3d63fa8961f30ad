//! TLS to PostgreSQL as libpq does it: `sslmode` (`disable`, `prefer`,
//! `require`, `verify-ca`, `verify-full`) and `sslrootcert`, `sslcert`,
//! `sslkey` in the connection string (key/value or URL), or the files in
//! the sink's `tls` table; through rustls (tokio-postgres-rustls).
//!
//! tokio-postgres knows only `disable`, `prefer` and `require` and none of
//! the file options: [`split`] takes them out of the connection string
//! and [`connector`] builds what verifies the server as the mode says:
//!
//! * `require` (and `prefer`): encrypted, the certificate not checked
//!   (libpq's meaning), unless a CA file is given, which makes it
//!   `verify-ca`, as libpq does;
//! * `verify-ca`: the certificate must chain to the CA file;
//! * `verify-full`: and be issued to the host connected to.

use std::path::PathBuf;
use std::sync::Arc;

use crate::tls::TlsClientConfig;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it (libpq's default).
    Prefer,
    /// TLS, the certificate not checked (unless a CA file is given).
    Require,
    /// TLS, the certificate chained to the CA file.
    VerifyCa,
    /// TLS, the certificate chained to the CA file and issued to the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(
                    "sslmode must be disable, prefer, require, verify-ca or verify-full".into(),
                )
            }
        })
    }
}

/// The TLS options of a connection string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PgTls {
    /// `sslmode`, if given.
    pub mode: Option<SslMode>,
    /// `sslrootcert`.
    pub rootcert: Option<PathBuf>,
    /// `sslcert`.
    pub cert: Option<PathBuf>,
    /// `sslkey`.
    pub key: Option<PathBuf>,
}

impl PgTls {
    fn take(&mut self, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "sslmode" => self.mode = Some(SslMode::parse(value)?),
            "sslrootcert" => self.rootcert = Some(value.into()),
            "sslcert" => self.cert = Some(value.into()),
            "sslkey" => self.key = Some(value.into()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// What tokio-postgres is told.
    fn tokio_mode(&self) -> &'static str {
        match self.mode {
            Some(SslMode::Disable) => "disable",
            None | Some(SslMode::Prefer) => "prefer",
            Some(SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull) => "require",
        }
    }
}

/// Splits `connection` into what tokio-postgres reads (its `sslmode` one
/// of the three it knows) and the TLS options. Messages name options,
/// never values.
pub fn split(connection: &str) -> Result<(String, PgTls), String> {
    let mut tls = PgTls::default();
    if connection.starts_with("postgres://") || connection.starts_with("postgresql://") {
        let mut url = reqwest::Url::parse(connection)
            .map_err(|_| "the connection URL does not parse".to_owned())?;
        let mut kept = Vec::new();
        for (key, value) in url.query_pairs() {
            if !tls.take(&key, &value)? {
                kept.push((key.into_owned(), value.into_owned()));
            }
        }
        kept.push(("sslmode".into(), tls.tokio_mode().into()));
        url.query_pairs_mut().clear().extend_pairs(kept);
        // Form encoding writes a space as `+` (a `+` itself as `%2B`);
        // tokio-postgres percent-decodes and would keep the `+`.
        let query = url.query().map(|query| query.replace('+', "%20"));
        url.set_query(query.as_deref());
        return Ok((url.to_string(), tls));
    }
    let mut kept = String::new();
    for (key, value) in keywords(connection)? {
        if !tls.take(&key, &value)? {
            kept.push_str(&format!(
                "{key}='{}' ",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    kept.push_str(&format!("sslmode={}", tls.tokio_mode()));
    Ok((kept, tls))
}

/// The `key = value` pairs of a libpq connection string: values bare or
/// in single quotes, with `\'` and `\\` escapes.
fn keywords(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("`{key}` has no `=` and value"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("the value of `{key}` has no closing quote")),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// The rustls connector for `tls` (and the sink's `tls` table), or `None`
/// for `sslmode=disable`.
pub fn connector(
    tls: &PgTls,
    table: Option<&TlsClientConfig>,
    component: &str,
) -> Result<Option<rustls::ClientConfig>, String> {
    let pick = |from_string: &Option<PathBuf>, from_table: Option<&PathBuf>, what: &str| match (
        from_string,
        from_table,
    ) {
        (Some(_), Some(_)) => Err(format!(
            "{what} is given twice: in the connection string and in `tls`"
        )),
        (Some(path), None) => Ok(Some(path.clone())),
        (None, path) => Ok(path.cloned()),
    };
    let ca = pick(
        &tls.rootcert,
        table.and_then(|t| t.ca_file.as_ref()),
        "the CA file (sslrootcert)",
    )?;
    let cert = pick(
        &tls.cert,
        table.and_then(|t| t.crt_file.as_ref()),
        "the client certificate (sslcert)",
    )?;
    let key = pick(
        &tls.key,
        table.and_then(|t| t.key_file.as_ref()),
        "the client key (sslkey)",
    )?;
    let mode = match (tls.mode, table) {
        (Some(SslMode::Disable), Some(_)) => {
            return Err("a `tls` table needs sslmode require, verify-ca or verify-full".into())
        }
        (Some(SslMode::Disable), None) => return Ok(None),
        // A `tls` table without sslmode: verified, as its name says.
        (None, Some(_)) => SslMode::VerifyFull,
        (None, None) => SslMode::Prefer,
        (Some(mode), _) => mode,
    };
    let verify = match mode {
        SslMode::Prefer | SslMode::Require if ca.is_none() => Verify::Nothing,
        SslMode::Prefer | SslMode::Require | SslMode::VerifyCa => Verify::Chain,
        SslMode::VerifyFull => Verify::Full,
        SslMode::Disable => unreachable!("returned above"),
    };
    let verify = if table.is_some_and(|t| !t.verify_certificate) {
        Verify::Nothing
    } else {
        verify
    };
    let mut settings = TlsClientConfig {
        ca_file: ca.clone(),
        crt_file: cert,
        key_file: key,
        server_name: table.and_then(|t| t.server_name.clone()),
        verify_certificate: verify != Verify::Nothing,
    };
    if verify == Verify::Nothing {
        // libpq's `require`: encrypted, the certificate taken as it is.
        settings.ca_file = None;
        settings.server_name = None;
        return quiet_accept_any(&settings).map(Some);
    }
    if ca.is_none() && verify == Verify::Chain {
        return Err("sslmode=verify-ca needs a CA file: sslrootcert, or `tls.ca_file`".into());
    }
    // verify-full without a CA file: the platform's roots.
    let config = if verify == Verify::Chain {
        crate::tls::client_config_chain_only(&settings, component)
    } else {
        crate::tls::client_config(&settings, &[], component)
    };
    let config = config.map_err(|e| e.to_string())?;
    Ok(Some(Arc::unwrap_or_clone(config)))
}

/// `require` without a CA: encryption, no verification, as libpq does it
/// (the config says so in `sslmode`; no warning at every connection).
fn quiet_accept_any(settings: &TlsClientConfig) -> Result<rustls::ClientConfig, String> {
    let config = crate::tls::client_config_unverified(settings).map_err(|e| e.to_string())?;
    Ok(Arc::unwrap_or_clone(config))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    Full,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_are_taken_out_of_both_forms_of_connection_string() {
        let (rest, tls) = split(
            "host=127.0.0.1 password='a \\'quoted\\' value' sslmode = verify-full sslrootcert=/etc/ssl/ca.pem dbname=test",
        )
        .unwrap();
        assert_eq!(tls.mode, Some(SslMode::VerifyFull));
        assert_eq!(tls.rootcert, Some("/etc/ssl/ca.pem".into()));
        assert!(rest.ends_with("sslmode=require"), "{rest}");
        assert!(!rest.contains("sslrootcert"), "{rest}");
        let parsed: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(parsed.get_dbname(), Some("test"));
        assert_eq!(parsed.get_password(), Some(&b"a 'quoted' value"[..]));

        let (rest, tls) = split(
            "postgres://u:p@localhost/test?sslmode=verify-ca&sslrootcert=%2Fca.pem&application_name=x%20y%2Bz",
        )
        .unwrap();
        assert_eq!(tls.mode, Some(SslMode::VerifyCa));
        assert_eq!(tls.rootcert, Some("/ca.pem".into()));
        let parsed: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(parsed.get_application_name(), Some("x y+z"));
        assert_eq!(
            parsed.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );

        assert!(split("host=x sslmode=sometimes").is_err());
        assert!(split("host='unclosed").is_err());
        let (_, none) = split("host=x").unwrap();
        assert_eq!(none, PgTls::default());
    }
}
