//! A listener's TLS: an acceptor whose certificates reload without
//! dropping the listener.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::server::WebPkiClientVerifier;

use super::{load_certificates, TlsError, TlsListenerConfig};

/// The TLS side of one listener.
#[derive(Debug)]
pub struct ServerTls {
    config: TlsListenerConfig,
    alpn: Vec<Vec<u8>>,
    current: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    generation: u64,
    server: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    /// Loads the files of `config`; `alpn` lists the protocols offered
    /// (`http/1.1` for an HTTP listener, none for a raw stream).
    pub fn new(config: &TlsListenerConfig, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let generation = crate::reread::generation();
        let server = build(config, &alpn)?;
        Ok(ServerTls {
            config: config.clone(),
            alpn,
            current: Mutex::new(Loaded { generation, server }),
        })
    }

    /// Whether clients must present a certificate.
    pub fn verifies_clients(&self) -> bool {
        self.config.verify_client
    }

    /// The acceptor for the next connection, with the files as of the
    /// last reload.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let generation = crate::reread::generation();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.generation != generation {
            current.generation = generation;
            match build(&self.config, &self.alpn) {
                Ok(server) => {
                    current.server = server;
                    tracing::info!(
                        crt_file = %self.config.crt_file.display(),
                        "TLS certificate and key reloaded"
                    );
                }
                Err(error) => tracing::warn!(
                    %error,
                    "TLS files not reloaded; the listener keeps the certificate it had"
                ),
            }
        }
        tokio_rustls::TlsAcceptor::from(current.server.clone())
    }
}

fn build(
    config: &TlsListenerConfig,
    alpn: &[Vec<u8>],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    // Refuses a key that does not belong to the certificate.
    let (certified, _) = super::pem::certified_key(&config.crt_file, &config.key_file)?;
    let provider = super::provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(config.min_version.versions())?;
    let builder = match &config.ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in load_certificates(ca)? {
                roots.add(certificate).map_err(|error| TlsError::Invalid {
                    path: ca.clone(),
                    reason: format!("not a usable CA certificate: {error}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if config.verify_client {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|error| TlsError::Invalid {
                path: ca.clone(),
                reason: error.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    server.alpn_protocols = alpn.to_vec();
    Ok(Arc::new(server))
}
