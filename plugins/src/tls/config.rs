//! The `tls` table of listeners and clients.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::Checks;

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

impl TlsVersion {
    /// The versions rustls is given.
    pub fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        match self {
            TlsVersion::Tls12 => rustls::ALL_VERSIONS,
            TlsVersion::Tls13 => TLS13_ONLY,
        }
    }
}

/// A listener's `tls` table: its certificate and key, and, for mutual
/// TLS, the CA its clients' certificates must chain to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    /// The certificate chain (PEM), the listener's own certificate first.
    pub crt_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) client certificates are verified against;
    /// with it, a client that presents a certificate must present a valid
    /// one.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate that chains to `ca_file`
    /// (mutual TLS).
    #[serde(default)]
    pub verify_client: bool,
    /// The lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: TlsVersion,
}

impl TlsListenerConfig {
    /// Reports what `validate` says about the table, its keys under
    /// `tls.`: files readable and parseable, a key that belongs to its
    /// certificate, certificates not expired (a warning within 30 days).
    pub fn check(&self, check: &mut dyn Checks) {
        if self.verify_client && self.ca_file.is_none() {
            check.error(
                &["tls", "verify_client"],
                "needs `ca_file`: the CA client certificates must chain to",
            );
        }
        check_pair(check, &self.crt_file, &self.key_file, "crt_file");
        if let Some(ca) = &self.ca_file {
            check_ca(check, ca);
        }
    }
}

/// A client's `tls` table: whom it trusts, the certificate it presents,
/// the name it expects.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsClientConfig {
    /// CA certificates (PEM) the server's certificate must chain to;
    /// without it, the platform's trusted roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain (PEM) for mutual TLS; needs `key_file`.
    #[serde(default)]
    pub crt_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must be issued to, when it is not
    /// the host the client connects to.
    #[serde(default)]
    pub server_name: Option<String>,
    /// `false` accepts any server certificate: an explicit, loudly logged
    /// choice for tests, never for production.
    #[serde(default = "yes")]
    pub verify_certificate: bool,
}

fn yes() -> bool {
    true
}

impl Default for TlsClientConfig {
    fn default() -> Self {
        TlsClientConfig {
            ca_file: None,
            crt_file: None,
            key_file: None,
            server_name: None,
            verify_certificate: true,
        }
    }
}

impl TlsClientConfig {
    /// Reports what `validate` says about the table, its keys under `tls.`.
    pub fn check(&self, check: &mut dyn Checks) {
        match (&self.crt_file, &self.key_file) {
            (Some(crt), Some(key)) => check_pair(check, crt, key, "crt_file"),
            (Some(_), None) => check.error(&["tls", "key_file"], "`crt_file` needs `key_file`"),
            (None, Some(_)) => check.error(&["tls", "crt_file"], "`key_file` needs `crt_file`"),
            (None, None) => {}
        }
        if let Some(ca) = &self.ca_file {
            check_ca(check, ca);
        }
        if let Some(name) = &self.server_name {
            if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
                check.error(
                    &["tls", "server_name"],
                    format!("`{name}` is not a DNS name or an IP address"),
                );
            }
        }
        if !self.verify_certificate {
            check.warning(
                &["tls", "verify_certificate"],
                "false: any server certificate is accepted, so anyone between shipper and the server can read and change what is sent",
            );
        }
    }
}

/// Checks a certificate and its key, reporting under `tls.KEY`.
fn check_pair(check: &mut dyn Checks, crt: &Path, key: &Path, crt_key: &str) {
    match super::check_certificate_pair(crt, key) {
        Ok(certificates) => expiry(check, crt, crt_key, &certificates),
        Err(error) => {
            let at = match error {
                super::TlsError::NoKey { .. } | super::TlsError::Mismatch { .. } => "key_file",
                super::TlsError::Read { ref path, .. }
                | super::TlsError::Invalid { ref path, .. }
                    if path == key =>
                {
                    "key_file"
                }
                _ => crt_key,
            };
            check.error(&["tls", at], error.to_string());
        }
    }
}

fn check_ca(check: &mut dyn Checks, ca: &Path) {
    match super::load_certificates(ca) {
        Ok(certificates) => expiry(check, ca, "ca_file", &certificates),
        Err(error) => check.error(&["tls", "ca_file"], error.to_string()),
    }
}

/// An error for an expired certificate, a warning for one that expires
/// within [`super::EXPIRY_WARNING`].
fn expiry(
    check: &mut dyn Checks,
    path: &Path,
    key: &str,
    certificates: &[rustls_pki_types::CertificateDer<'static>],
) {
    let now = std::time::SystemTime::now();
    for certificate in certificates {
        let Ok(not_after) = super::not_after(certificate) else {
            continue;
        };
        match not_after.duration_since(now) {
            Err(ago) => {
                let days = ago.duration().as_secs() / 86_400;
                check.error(
                    &["tls", key],
                    format!(
                        "a certificate in {} expired {days} days ago",
                        path.display()
                    ),
                );
                return;
            }
            Ok(left) if left < super::EXPIRY_WARNING => {
                let days = left.as_secs() / 86_400;
                check.warning(
                    &["tls", key],
                    format!("a certificate in {} expires in {days} days", path.display()),
                );
            }
            Ok(_) => {}
        }
    }
}
