//! Certificates made by the tests (rcgen): a CA, server and client
//! certificates it issues, expired ones, written as PEM files.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let ca = shipper_tests::pki::Ca::new(dir.path(), "test-ca");
//! let server = ca.server(dir.path(), "server");
//! assert!(std::fs::read_to_string(&server.crt).unwrap().contains("BEGIN CERTIFICATE"));
//! ```

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate (PEM).
    pub crt: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A server, for `localhost` and `127.0.0.1`.
    Server,
    /// A client, named by its common name.
    Client,
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From yesterday for a year.
    Current,
    /// Ended yesterday.
    Expired,
    /// From yesterday, ending in `days` days.
    EndsIn(i64),
}

/// A certificate authority whose certificate is `DIR/NAME.crt`.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (PEM).
    pub crt: PathBuf,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("crt", &self.crt)
            .finish_non_exhaustive()
    }
}

fn validity(params: &mut CertificateParams, validity: Validity) {
    let now = rcgen::date_time_ymd(2000, 1, 1)
        + std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
        - std::time::Duration::from_secs(946_684_800);
    let day = time_days(1);
    let (from, to) = match validity {
        Validity::Current => (now - day, now + time_days(365)),
        Validity::Expired => (now - time_days(30), now - day),
        Validity::EndsIn(days) => (now - day, now + time_days(days)),
    };
    params.not_before = from;
    params.not_after = to;
}

fn time_days(days: i64) -> std::time::Duration {
    std::time::Duration::from_secs(days.unsigned_abs() * 86_400)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

impl Ca {
    /// A new CA named `name`; its certificate goes to `DIR/NAME.crt`.
    ///
    /// # Panics
    /// When the key cannot be made or the file written.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, Validity::Current);
        let key = KeyPair::generate().expect("a CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("a CA certificate");
        let crt = dir.join(format!("{name}.crt"));
        write(&crt, &issuer.pem());
        Ca { issuer, crt }
    }

    /// A server certificate for `localhost` and `127.0.0.1`, valid now.
    pub fn server(&self, dir: &Path, name: &str) -> Issued {
        self.issue(dir, name, Usage::Server, Validity::Current)
    }

    /// A client certificate with common name `name`, valid now.
    pub fn client(&self, dir: &Path, name: &str) -> Issued {
        self.issue(dir, name, Usage::Client, Validity::Current)
    }

    /// A certificate for `usage`, valid as `validity` says, written to
    /// `DIR/NAME.crt` and `DIR/NAME.key`.
    ///
    /// # Panics
    /// When rcgen refuses or a file cannot be written.
    pub fn issue(&self, dir: &Path, name: &str, usage: Usage, when: Validity) -> Issued {
        let names = match usage {
            Usage::Server => vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            Usage::Client => vec![],
        };
        let mut params = CertificateParams::new(names).expect("certificate params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, when);
        let key = KeyPair::generate().expect("a key");
        let certificate = params.signed_by(&key, &self.issuer).expect("a certificate");
        let issued = Issued {
            crt: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        write(&issued.crt, &certificate.pem());
        write(&issued.key, &key.serialize_pem());
        issued
    }
}

/// A rustls client configuration trusting `ca` (and presenting `client`
/// if given), with the aws-lc-rs provider.
///
/// # Panics
/// When a file does not load.
pub fn client_config(ca: &Path, client: Option<&Issued>) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca).expect("reading the CA file") {
        roots
            .add(certificate.expect("a CA certificate"))
            .expect("a usable CA");
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    std::sync::Arc::new(match client {
        None => builder.with_no_client_auth(),
        Some(issued) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&issued.crt)
                    .expect("reading the client certificate")
                    .map(|c| c.expect("a certificate"))
                    .collect(),
                PrivateKeyDer::from_pem_file(&issued.key).expect("the client key"),
            )
            .expect("a client certificate"),
    })
}
