//! Bearer tokens on inbound data: the `auth` table of the `http` and
//! `shipper` sources, one shared piece.
//!
//! ```toml
//! auth = { strategy = "bearer", token_file = "/run/secrets/shipper-token" }
//! # several tokens, each bound to the producers it may write for:
//! auth = { strategy = "bearer", tokens = [
//!   { token_file = "/run/secrets/web-1", producers = ["0123456789abcdef0123456789abcdef"] },
//!   { token = "${BATCH_TOKEN}" },
//! ] }
//! ```
//!
//! A token is given in the config (`token`, where `${VAR}` takes it from
//! the environment) or in a file (`token_file`, its content without the
//! trailing newline, read again on SIGHUP / `POST /reload`). The scheme is
//! matched without regard to case (RFC 7235) and every configured token
//! is compared in constant time ([`subtle`]), so the time taken says
//! neither which token nor how much of one matched.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::HeaderValue;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::config::Checks;

/// The one strategy inbound `auth` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InboundStrategy {
    /// `Authorization: Bearer TOKEN`.
    Bearer,
}

/// One token of an `auth` table.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The token itself (`${VAR}` reads it from the environment).
    #[serde(default)]
    pub token: Option<String>,
    /// A file whose content is the token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The producer ids (32 hex digits) the token may write for: `shipper`
    /// source only; none given: any producer.
    #[serde(default)]
    pub producers: Option<Vec<String>>,
}

impl std::fmt::Debug for TokenConfig {
    /// Secrets never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("producers", &self.producers)
            .finish()
    }
}

/// A listener's `auth` table.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundAuth {
    /// `"bearer"`.
    pub strategy: InboundStrategy,
    /// One token.
    #[serde(default)]
    pub token: Option<String>,
    /// One token, from a file.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Several tokens.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

impl std::fmt::Debug for InboundAuth {
    /// Secrets never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundAuth")
            .field("strategy", &self.strategy)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl InboundAuth {
    /// `auth = { strategy = "bearer", token = TOKEN }`.
    pub fn bearer(token: impl Into<String>) -> Self {
        InboundAuth {
            strategy: InboundStrategy::Bearer,
            token: Some(token.into()),
            token_file: None,
            tokens: Vec::new(),
        }
    }

    /// Every token entry: the table's own (`token` / `token_file`) first.
    fn entries(&self) -> Vec<TokenConfig> {
        let own = (self.token.is_some() || self.token_file.is_some()).then(|| TokenConfig {
            token: self.token.clone(),
            token_file: self.token_file.clone(),
            producers: None,
        });
        own.into_iter().chain(self.tokens.iter().cloned()).collect()
    }

    /// Reports what `validate` says about the table, its keys under
    /// `auth.`; `producers` tells whether tokens may be bound to
    /// producers (the `shipper` source).
    pub fn check(&self, check: &mut dyn Checks, producers: bool) {
        if self.token.is_some() && self.token_file.is_some() {
            check.error(
                &["auth", "token_file"],
                "give `token` or `token_file`, not both",
            );
        }
        let entries = self.entries();
        if entries.is_empty() {
            check.error(
                &["auth"],
                "no token: give `token`, `token_file` or `tokens`",
            );
        }
        let listed = usize::from(self.token.is_some() || self.token_file.is_some());
        for (index, entry) in entries.iter().enumerate() {
            let at = index.checked_sub(listed).map(|i| format!("tokens[{i}]"));
            let key = |name: &'static str| -> Vec<String> {
                match &at {
                    Some(at) => vec!["auth".into(), at.clone(), name.into()],
                    None => vec!["auth".into(), name.into()],
                }
            };
            let report = |check: &mut dyn Checks, name: &'static str, message: String| {
                let keys = key(name);
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                check.error(&keys, message);
            };
            if index >= listed && entry.token.is_some() == entry.token_file.is_some() {
                report(
                    check,
                    "token",
                    "give exactly one of `token` and `token_file`".into(),
                );
            }
            match (&entry.token, &entry.token_file) {
                (Some(token), _) if token.trim().is_empty() => {
                    report(check, "token", "must not be empty".into());
                }
                (None, Some(path)) => {
                    if let Err(error) = read_token(path) {
                        report(check, "token_file", error);
                    }
                }
                _ => {}
            }
            if let Some(ids) = &entry.producers {
                if !producers {
                    report(
                        check,
                        "producers",
                        "only a `shipper` source knows producers; leave it out".into(),
                    );
                }
                for id in ids {
                    if shipper_core::log::ProducerId::parse(id).is_none() {
                        report(
                            check,
                            "producers",
                            format!("`{id}` is not a producer id (32 hex digits, as `shipper inspect` shows)"),
                        );
                    }
                }
            }
        }
    }
}

/// The token in `path`: its content without surrounding whitespace.
fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("reading {}: {error}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(token.to_owned())
}

/// One loaded token.
struct Token {
    secret: Vec<u8>,
    producers: Option<Arc<[String]>>,
}

/// What a request's credentials allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    producers: Option<Arc<[String]>>,
}

impl Grant {
    /// Whether the token may write for `producer` (32 hex digits).
    pub fn allows(&self, producer: &str) -> bool {
        self.producers
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|id| id.eq_ignore_ascii_case(producer)))
    }
}

/// Checks the `Authorization` header of requests against the tokens of an
/// [`InboundAuth`], reading token files again after a reload.
pub struct Authenticator {
    config: InboundAuth,
    loaded: Mutex<(u64, Arc<Vec<Token>>)>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn load(config: &InboundAuth) -> Result<Vec<Token>, String> {
    config
        .entries()
        .into_iter()
        .map(|entry| {
            let secret = match (&entry.token, &entry.token_file) {
                (Some(token), _) => token.trim().to_owned(),
                (None, Some(path)) => read_token(path)?,
                (None, None) => return Err("a token entry without `token` or `token_file`".into()),
            };
            if secret.is_empty() {
                return Err("an empty token".into());
            }
            Ok(Token {
                secret: secret.into_bytes(),
                producers: entry.producers.map(Arc::from),
            })
        })
        .collect()
}

impl Authenticator {
    /// Loads the tokens of `config` (reading its token files).
    pub fn new(config: &InboundAuth) -> Result<Self, String> {
        let tokens = load(config)?;
        Ok(Authenticator {
            config: config.clone(),
            loaded: Mutex::new((crate::reread::generation(), Arc::new(tokens))),
        })
    }

    fn tokens(&self) -> Arc<Vec<Token>> {
        let generation = crate::reread::generation();
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if loaded.0 != generation {
            loaded.0 = generation;
            match load(&self.config) {
                Ok(tokens) => {
                    loaded.1 = Arc::new(tokens);
                    tracing::info!("auth: tokens read again");
                }
                Err(error) => tracing::warn!(
                    %error,
                    "auth: token files not read again; the tokens loaded before stay in use"
                ),
            }
        }
        loaded.1.clone()
    }

    /// What the `Authorization` header `presented` allows, or `None` when
    /// it carries no valid bearer token.
    pub fn check(&self, presented: Option<&HeaderValue>) -> Option<Grant> {
        let presented = presented.and_then(|v| v.to_str().ok())?;
        let (scheme, credentials) = presented.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let credentials = credentials.trim().as_bytes();
        // Every token is compared, whichever matches.
        let mut grant = None;
        for token in self.tokens().iter() {
            let equal: bool = token.secret.as_slice().ct_eq(credentials).into();
            if equal && grant.is_none() {
                grant = Some(Grant {
                    producers: token.producers.clone(),
                });
            }
        }
        grant
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).unwrap()
    }

    #[test]
    fn tokens_match_by_scheme_without_case_and_bind_producers() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let producer = "0123456789abcdef0123456789abcdef";
        let config = InboundAuth {
            strategy: InboundStrategy::Bearer,
            token: None,
            token_file: None,
            tokens: vec![
                TokenConfig {
                    token: Some("bound".into()),
                    token_file: None,
                    producers: Some(vec![producer.into()]),
                },
                TokenConfig {
                    token: None,
                    token_file: Some(file.clone()),
                    producers: None,
                },
            ],
        };
        let auth = Authenticator::new(&config).unwrap();
        assert!(auth.check(None).is_none());
        assert!(auth.check(Some(&header("Bearer wrong"))).is_none());
        assert!(auth.check(Some(&header("Basic Ym91bmQ="))).is_none());
        assert!(auth.check(Some(&header("Bearer bound-and-more"))).is_none());
        let bound = auth.check(Some(&header("bEaReR bound"))).unwrap();
        assert!(bound.allows(producer));
        assert!(bound.allows(&producer.to_uppercase()));
        assert!(!bound.allows("ffffffffffffffffffffffffffffffff"));
        let any = auth.check(Some(&header("Bearer from-a-file"))).unwrap();
        assert!(any.allows("ffffffffffffffffffffffffffffffff"));

        // A new token file, read at the next check after a reload.
        std::fs::write(&file, "rotated").unwrap();
        assert!(auth.check(Some(&header("Bearer rotated"))).is_none());
        crate::reread::request();
        assert!(auth.check(Some(&header("Bearer rotated"))).is_some());
        assert!(auth.check(Some(&header("Bearer from-a-file"))).is_none());
        // A file that cannot be read then keeps the tokens in use.
        std::fs::remove_file(&file).unwrap();
        crate::reread::request();
        assert!(auth.check(Some(&header("Bearer rotated"))).is_some());
    }
}
