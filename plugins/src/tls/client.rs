//! A client's TLS: whom it trusts and what it presents.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use rustls_platform_verifier::BuilderVerifierExt;

use super::{load_certificates, TlsClientConfig, TlsError};

/// The rustls client configuration of `config`, offering `alpn`.
/// `component` names the client in the warning `verify_certificate =
/// false` logs.
pub fn client_config(
    config: &TlsClientConfig,
    alpn: &[&[u8]],
    component: &str,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    build(config, alpn, Some(component), true)
}

/// As [`client_config`], but the server's certificate only has to chain
/// to `ca_file` (which it needs), whatever name it is issued to:
/// PostgreSQL's `sslmode=verify-ca`.
pub fn client_config_chain_only(
    config: &TlsClientConfig,
    component: &str,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    build(config, &[], Some(component), false)
}

/// A client configuration that accepts any server certificate, without
/// the warning [`client_config`] logs for it: for a setting whose own
/// name says so (PostgreSQL's `sslmode=require`).
pub fn client_config_unverified(
    config: &TlsClientConfig,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let config = TlsClientConfig {
        verify_certificate: false,
        ..config.clone()
    };
    build(&config, &[], None, true)
}

fn build(
    config: &TlsClientConfig,
    alpn: &[&[u8]],
    warn_as: Option<&str>,
    check_name: bool,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = super::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if !config.verify_certificate {
        if let Some(component) = warn_as {
            tracing::warn!(
                component,
                "tls.verify_certificate = false: any server certificate is accepted; what is sent can be read and changed by anyone on the path"
            );
        }
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
    } else if let Some(ca) = &config.ca_file {
        let name = config.server_name.as_deref().map(server_name).transpose()?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(FileVerifier::new(
                ca.clone(),
                name,
                check_name,
            )?))
    } else {
        if config.server_name.is_some() {
            // The platform verifier checks the name it is given; a name
            // other than the host needs a CA file to verify against.
            return Err(TlsError::Invalid {
                path: "tls.server_name".into(),
                reason: "needs `ca_file` (the platform's roots verify the host connected to)"
                    .into(),
            });
        }
        builder.with_platform_verifier()?
    };
    let mut client = match (&config.crt_file, &config.key_file) {
        (Some(crt), Some(key)) => builder
            .with_client_cert_resolver(Arc::new(FileClientCert::new(crt.clone(), key.clone())?)),
        _ => builder.with_no_client_auth(),
    };
    client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(client))
}

fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::Invalid {
        path: "tls.server_name".into(),
        reason: format!("`{name}` is not a DNS name or an IP address"),
    })
}

/// Verifies the server's certificate against the CA file (read again
/// after a reload), and against `name` instead of the host connected to
/// when `tls.server_name` is set; not against any name without
/// `check_name`.
#[derive(Debug)]
struct FileVerifier {
    ca: PathBuf,
    name: Option<ServerName<'static>>,
    check_name: bool,
    current: Mutex<(u64, Arc<WebPkiServerVerifier>)>,
}

fn ca_verifier(ca: &Path) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in load_certificates(ca)? {
        roots.add(certificate).map_err(|error| TlsError::Invalid {
            path: ca.to_owned(),
            reason: format!("not a usable CA certificate: {error}"),
        })?;
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), super::provider())
        .build()
        .map_err(|error| TlsError::Invalid {
            path: ca.to_owned(),
            reason: error.to_string(),
        })
}

impl FileVerifier {
    fn new(
        ca: PathBuf,
        name: Option<ServerName<'static>>,
        check_name: bool,
    ) -> Result<Self, TlsError> {
        let verifier = ca_verifier(&ca)?;
        Ok(FileVerifier {
            ca,
            name,
            check_name,
            current: Mutex::new((crate::reread::generation(), verifier)),
        })
    }

    fn verifier(&self) -> Arc<WebPkiServerVerifier> {
        let generation = crate::reread::generation();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.0 != generation {
            current.0 = generation;
            match ca_verifier(&self.ca) {
                Ok(verifier) => current.1 = verifier,
                Err(error) => {
                    tracing::warn!(%error, "tls.ca_file not read again; the CA loaded before stays in use")
                }
            }
        }
        current.1.clone()
    }
}

impl ServerCertVerifier for FileVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = self.name.as_ref().unwrap_or(server_name);
        let verified =
            self.verifier()
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now);
        match verified {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

/// The client certificate and key of `crt_file` / `key_file`, read again
/// after a reload (a pair that does not load then leaves the one in use).
#[derive(Debug)]
struct FileClientCert {
    crt: PathBuf,
    key: PathBuf,
    current: Mutex<(u64, Arc<rustls::sign::CertifiedKey>)>,
}

impl FileClientCert {
    fn new(crt: PathBuf, key: PathBuf) -> Result<Self, TlsError> {
        let (certified, _) = super::pem::certified_key(&crt, &key)?;
        Ok(FileClientCert {
            crt,
            key,
            current: Mutex::new((crate::reread::generation(), Arc::new(certified))),
        })
    }
}

impl rustls::client::ResolvesClientCert for FileClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let generation = crate::reread::generation();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.0 != generation {
            current.0 = generation;
            match super::pem::certified_key(&self.crt, &self.key) {
                Ok((certified, _)) => current.1 = Arc::new(certified),
                Err(error) => {
                    tracing::warn!(%error, "tls client certificate not read again; the one loaded before stays in use")
                }
            }
        }
        Some(current.1.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `verify_certificate = false`: any certificate, though the handshake's
/// signatures are still checked (the peer holds the key it shows).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
