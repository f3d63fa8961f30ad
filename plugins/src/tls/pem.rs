//! PEM files: certificates, keys, and what `validate` checks about them.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// `validate` warns about a certificate that expires within this.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in the PEM file at `path`, in order; an error if it
/// holds none.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Invalid {
            path: path.to_owned(),
            reason: format!("not PEM certificates: {error}"),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    for certificate in &certificates {
        not_after(certificate).map_err(|reason| TlsError::Invalid {
            path: path.to_owned(),
            reason,
        })?;
    }
    Ok(certificates)
}

/// The first private key in the PEM file at `path`.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read(path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|error| match error {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        error => TlsError::Invalid {
            path: path.to_owned(),
            reason: format!("not a PEM private key: {error}"),
        },
    })
}

/// Loads a certificate chain and its key and checks that the key belongs
/// to the first certificate; the chain.
pub fn check_certificate_pair(
    crt: &Path,
    key: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certified_key(crt, key).map(|(_, certificates)| certificates)
}

/// The chain at `crt` with the key at `key`, checked to belong together.
pub(super) fn certified_key(
    crt: &Path,
    key: &Path,
) -> Result<(rustls::sign::CertifiedKey, Vec<CertificateDer<'static>>), TlsError> {
    let certificates = load_certificates(crt)?;
    let private = load_key(key)?;
    let signing = super::provider()
        .key_provider
        .load_private_key(private)
        .map_err(|error| TlsError::Invalid {
            path: key.to_owned(),
            reason: format!("unusable private key: {error}"),
        })?;
    let certified = rustls::sign::CertifiedKey::new(certificates.clone(), signing);
    match certified.keys_match() {
        Ok(()) => Ok((certified, certificates)),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch {
            crt: crt.to_owned(),
            key: key.to_owned(),
        }),
        // A key whose public half rustls cannot tell: it is checked in the
        // first handshake instead.
        Err(_) => Ok((certified, certificates)),
    }
}

/// When `certificate` stops being valid.
pub fn not_after(certificate: &CertificateDer<'_>) -> Result<SystemTime, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref())
        .map_err(|error| format!("not an X.509 certificate: {error}"))?;
    let seconds = parsed.validity().not_after.timestamp();
    Ok(if seconds >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds as u64)
    } else {
        SystemTime::UNIX_EPOCH
    })
}
