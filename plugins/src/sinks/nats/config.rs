//! The `nats` sink's config: `[sinks.NAME] type = "nats"`.

// Every key is described in docs/config.md, the one place they are documented.
#![allow(missing_docs)]

use std::time::Duration;

use serde::Deserialize;
use shipper_core::component::Sink;

use super::{check_stream_name, check_subject, check_url, MessagePer, NatsSink, NatsSinkOptions};
use crate::config::{duration_ms, BuildContext, BuildError, Checks, SinkComponent};

/// `type = "nats"`: publishes to NATS JetStream, exactly once, on the
/// subject `<subject>.<producer id>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    #[serde(default)]
    pub inputs: Vec<String>,
    pub url: String,
    pub subject: String,
    #[serde(default)]
    pub stream: Option<String>,
    /// Create the stream when no stream captures `<subject>.*`.
    #[serde(default = "NatsSinkConfig::default_create_stream")]
    pub create_stream: bool,
    /// The duplicate window of a stream the sink creates.
    #[serde(
        default = "NatsSinkConfig::default_duplicate_window_ms",
        deserialize_with = "duration_ms"
    )]
    pub duplicate_window_ms: u64,
    #[serde(default)]
    pub message: MessagePer,
    /// Messages published and not yet acknowledged, at most.
    #[serde(default = "NatsSinkConfig::default_max_pending")]
    pub max_pending: usize,
    #[serde(
        default = "NatsSinkConfig::default_timeout_ms",
        deserialize_with = "duration_ms"
    )]
    pub timeout_ms: u64,
    /// TLS to the server (required when set).
    #[serde(default)]
    pub tls: Option<crate::tls::TlsClientConfig>,
    /// A NATS credentials file (a user JWT and its nkey seed).
    #[serde(default)]
    pub credentials_file: Option<std::path::PathBuf>,
}

impl NatsSinkConfig {
    fn default_create_stream() -> bool {
        true
    }

    fn default_duplicate_window_ms() -> u64 {
        120_000
    }

    fn default_max_pending() -> usize {
        1024
    }

    fn default_timeout_ms() -> u64 {
        10_000
    }

    fn check_config(&self, check: &mut dyn Checks) {
        // The client is built without websockets.
        if !["nats://", "tls://"]
            .iter()
            .any(|scheme| self.url.starts_with(scheme))
        {
            check.error(&["url"], "must start with nats:// or tls://");
        } else if let Err(message) = check_url(&self.url) {
            check.error(&["url"], message);
        }
        if let Err(message) = check_subject(&self.subject) {
            check.error(&["subject"], message);
        }
        if let Some(Err(message)) = self.stream.as_deref().map(check_stream_name) {
            check.error(&["stream"], message);
        }
        if self.duplicate_window_ms == 0 {
            check.error(&["duplicate_window_ms"], "must be at least 1");
        }
        if self.max_pending == 0 {
            check.error(&["max_pending"], "must be at least 1");
        }
        if self.timeout_ms == 0 {
            check.error(&["timeout_ms"], "must be at least 1");
        }
        if let Some(tls) = &self.tls {
            tls.check(check);
        }
        if let Some(path) = &self.credentials_file {
            if let Err(error) = std::fs::metadata(path).and_then(|_| std::fs::File::open(path)) {
                check.error(
                    &["credentials_file"],
                    format!("{}: {error}", path.display()),
                );
            }
        }
    }
}

impl crate::config::Named for NatsSinkConfig {
    const TYPE: &'static str = "nats";
}

impl SinkComponent for NatsSinkConfig {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }

    fn check(&self, checks: &mut dyn Checks) {
        self.check_config(checks);
    }

    /// A nats sink finds what it stored on `<subject>.<producer>`: two
    /// sinks sharing it would take each other's records for their own.
    fn exclusive(&self) -> Vec<(&'static str, String)> {
        vec![(
            "subject",
            format!("subject {} on {}", self.subject, self.url),
        )]
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        let tls = self
            .tls
            .as_ref()
            .map(|tls| crate::tls::client_config(tls, &[], cx.name))
            .transpose()
            .map_err(|e| format!("tls: {e}"))?;
        let options = NatsSinkOptions {
            url: self.url.clone(),
            subject: self.subject.clone(),
            stream: self.stream.clone(),
            create_stream: self.create_stream,
            duplicate_window: Duration::from_millis(self.duplicate_window_ms),
            message: self.message,
            max_pending: self.max_pending,
            timeout: Duration::from_millis(self.timeout_ms),
            tls,
            credentials_file: self.credentials_file.clone(),
        };
        Ok(Box::new(NatsSink::new(options).map_err(|e| e.to_string())?))
    }
}
