//! TLS for every listener and client, one shared piece: the `tls` table
//! of a listener ([`TlsListenerConfig`]) and of a client
//! ([`TlsClientConfig`]), their checks for `shipper validate` (readable,
//! parseable PEM, a key that belongs to its certificate, not expired, a
//! warning within 30 days of expiry), and what they build: a
//! [`ServerTls`] acceptor whose certificates reload on SIGHUP /
//! `POST /reload` without dropping the listener, and a rustls client
//! configuration ([`client_config`]).
//!
//! rustls with the aws-lc-rs provider, always named explicitly (reqwest
//! and async-nats bring the same provider; with two in one rustls neither
//! would be the default). No OpenSSL.

mod client;
mod config;
mod pem;
mod server;

pub use client::{client_config, client_config_chain_only, client_config_unverified};
pub use config::{TlsClientConfig, TlsListenerConfig, TlsVersion};
pub use pem::{check_certificate_pair, load_certificates, load_key, not_after, EXPIRY_WARNING};
pub use server::ServerTls;

use std::path::PathBuf;
use std::sync::Arc;

/// Why a TLS setting cannot be used: the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM certificate.
    #[error("{path} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A file holds no PEM private key.
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A file holds something that is not what it should be.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error("the private key in {key} does not belong to the certificate in {crt}")]
    Mismatch {
        /// The certificate file.
        crt: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate has expired.
    #[error("the certificate in {path} expired {ago} ago")]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// How long ago, for people.
        ago: String,
    },
    /// rustls refused the settings.
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The [`ServerTls`] of an HTTP listener's `tls` table, if it has one, as
/// a build error (`tls: ...`) when its files do not load.
pub fn server_tls(
    config: Option<&TlsListenerConfig>,
) -> Result<Option<Arc<ServerTls>>, crate::config::BuildError> {
    config
        .map(|tls| {
            ServerTls::new(tls, &[b"http/1.1"])
                .map(Arc::new)
                .map_err(|error| format!("tls: {error}"))
        })
        .transpose()
}

/// The crypto provider every TLS setting of shipper uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
