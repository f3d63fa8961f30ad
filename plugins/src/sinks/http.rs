//! `http`: POSTs batches of stored chunks to an HTTP(S) endpoint.
//!
//! * `protocol = shipper` sends the stored chunk frames back to back, as
//!   they are, with the producer id (`docs/protocol.md`): the receiver
//!   (a `shipper` source) stores them and answers with its high-water mark.
//! * `ndjson` sends one record per line. With zstd, chunks stored as zstd
//!   lines go as their stored bodies back to back (concatenated zstd frames
//!   are one valid stream), without recompression; other chunks are decoded
//!   and compressed again.
//! * `json` sends one JSON array of the records.
//!
//! Request bodies are `Bytes::from_owner` pieces of the stored chunks (see
//! `encode.rs`): the compressed bytes go from the log's mapping to the
//! socket without a copy by the sink.
//!
//! # Batches, retries and refusals
//!
//! A delivery (up to 256 chunks / 8 MiB from the runtime) is split into
//! requests of at most `max_records` records and `max_bytes` stored bytes,
//! never inside a chunk, and the delivery is acknowledged once all of them
//! were. With the shipper protocol up to `max_in_flight` of them are in
//! flight at once, each after the first naming the end offset of the one
//! before it (`Shipper-After`), so the receiver stores them in order
//! whatever order they arrive in; the first failure ends the pipeline and
//! the sink goes on one request at a time from the request that failed.
//! Other protocols send one request at a time (a generic endpoint has no
//! way to keep order).
//!
//! Retries happen inside the sink, so that `Retry-After` is honoured: a
//! request that fails with a connection error, a timeout, `408`, `429`,
//! `5xx`, a `3xx` (redirects are not followed), or an answer that breaks
//! the protocol is sent again after `Retry-After` (seconds or an HTTP
//! date, at most [`MAX_RETRY_AFTER`]) or else a capped exponential
//! backoff with jitter. After `attempts` tries within one delivery the
//! sink returns [`ComponentError::Retryable`], so the runtime gets control
//! back (to stop or reload the sink) and offers the batch again later;
//! the backoff sequence and any `Retry-After` carry over to that next
//! call. Requests of a delivery that were acknowledged before are not sent
//! again when the runtime offers the same chunks again. Nothing is ever
//! dropped for a retryable failure.
//!
//! A `401`, `403`, `404`, `405`, `407`, `410`, `421` or `426` refuses the
//! sink itself (its credentials, uri or method), not the batch: retried
//! the same way, logged as needing a look, never dead-lettered.
//!
//! With the shipper protocol each request says where the sink's data
//! continues (`Shipper-From`, the end of what was acknowledged), and each
//! answer is checked against the sink's own log: a receiver that claims
//! offsets the log never had (`high_water` beyond its end: a forged or
//! damaged mark, under which every chunk would be answered "duplicate"),
//! counts that do not add up, or a `409` about the mark, stops the sink
//! with a fatal error, counted in `contradictions`; the cursor stays where
//! it is, so nothing is dropped.
//!
//! Any other `4xx` means the backend refuses the batch for good. With
//! `on_rejected = dead_letter` (the default) its records go to the
//! dead-letter file (see `dead_letter.rs`; by default
//! `DATA_DIR/sinks/NAME.dead-letter.ndjson`), an error is logged and
//! counted, and the sink moves on — unless the file would pass
//! `dead_letter_max_bytes`: then the batch is retried, staying in the log; with `retry` it is retried like a
//! `5xx`.

mod config;
mod dead_letter;
mod encode;
mod retry;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use futures_util::StreamExt;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::StatusCode;
use shipper_core::component::{ComponentError, Sink, SinkContext};
use shipper_core::log::StoredChunk;

pub use config::{Auth, AuthStrategy, Batch, HttpSinkConfig, Retry};
pub use encode::{HttpCompression, HttpProtocol};
pub use retry::{RetryOptions, MAX_RETRY_AFTER};
pub use stats::HttpSinkStats;

use encode::{Encoder, Pieces, Request};
use stats::{Event, FailureKind};

/// `Content-Type` of a shipper-protocol request.
pub const SHIPPER_CONTENT_TYPE: &str = "application/vnd.shipper.chunks";
/// The content type of a dictionary sent to a receiver.
pub const DICTIONARY_CONTENT_TYPE: &str = "application/vnd.shipper.dictionary";
/// The protocol version this sink speaks.
pub const SHIPPER_PROTOCOL_VERSION: &str = "1";
/// Answers longer than this are not read further (what was read is kept
/// for the log and the dead-letter file).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Headers a user may not set through `headers`: the sink sets them.
pub const RESERVED_HEADERS: [&str; 8] = [
    "content-type",
    "content-encoding",
    "content-length",
    "transfer-encoding",
    "host",
    "shipper-protocol",
    "shipper-producer",
    "shipper-sink",
];

/// How the sink authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum HttpAuth {
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: String,
    },
    /// `Authorization: Basic <base64(user:password)>`.
    Basic {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
}

impl std::fmt::Debug for HttpAuth {
    /// Secrets never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpAuth::Bearer { .. } => f.write_str("Bearer(<redacted>)"),
            HttpAuth::Basic { user, .. } => write!(f, "Basic({user:?}, <redacted>)"),
        }
    }
}

/// Statuses that refuse every request of the sink whatever it carries: the
/// credentials (`401`, `403`, `407`), the address (`404`, `410`, `421`),
/// the method or protocol (`405`, `426`). The batch is not at fault, so it
/// is retried like a `5xx` (and the error says to check the config), never
/// dead-lettered: a wrong token must not drain the log into a file.
fn refuses_the_sink(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        401 | 403 | 404 | 405 | 407 | 410 | 421 | 426
    )
}

/// What happens to a batch the backend refuses with a `4xx` other than
/// `408`, `429` and those that refuse the sink itself (`401`, `403`,
/// `404`, `405`, `407`, `410`, `421`, `426`: retried like a `5xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRejected {
    /// Write it to the dead-letter file, count it, log it, move on.
    #[default]
    DeadLetter,
    /// Retry it like a `5xx`, for ever (the sink stalls until the backend
    /// or the config changes).
    Retry,
}

/// Options of an [`HttpSink`].
#[derive(Debug, Clone)]
pub struct HttpSinkOptions {
    /// Where requests are POSTed.
    pub uri: String,
    /// The body format.
    pub protocol: HttpProtocol,
    /// Compression of NDJSON and JSON bodies (the shipper protocol sends
    /// chunks as stored).
    pub compression: HttpCompression,
    /// Records per request at most (a larger chunk goes alone).
    pub max_records: u64,
    /// Stored (compressed) chunk bytes per request at most (a larger chunk
    /// goes alone).
    pub max_bytes: u64,
    /// Requests in flight at once (protocol shipper; others send one at a
    /// time).
    pub max_in_flight: usize,
    /// Authentication.
    pub auth: Option<HttpAuth>,
    /// Extra request headers (none of [`RESERVED_HEADERS`]).
    pub headers: Vec<(String, String)>,
    /// Connecting (TCP and TLS) at most this long.
    pub connect_timeout: Duration,
    /// A whole request, answer read, at most this long.
    pub timeout: Duration,
    /// Retries of failed requests.
    pub retry: RetryOptions,
    /// What to do with a batch refused for good.
    pub on_rejected: OnRejected,
    /// The dead-letter file; `None` for `DATA_DIR/sinks/NAME.dead-letter.ndjson`.
    pub dead_letter: Option<PathBuf>,
    /// The dead-letter file's limit: a refused batch that would take it
    /// past this is a retryable error instead (it stays in the log).
    pub dead_letter_max_bytes: u64,
    /// TLS settings for an `https://` uri; `None`: the platform's roots,
    /// no client certificate.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl HttpSinkOptions {
    /// Options with the defaults of the config file: shipper protocol,
    /// 10,000 records / 4 MiB per request, 5 s to connect, 30 s per request.
    pub fn new(uri: impl Into<String>) -> Self {
        HttpSinkOptions {
            uri: uri.into(),
            protocol: HttpProtocol::Shipper,
            compression: HttpCompression::Zstd { level: 3 },
            max_records: 10_000,
            max_bytes: 4 << 20,
            max_in_flight: 4,
            auth: None,
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            retry: RetryOptions::default(),
            on_rejected: OnRejected::DeadLetter,
            dead_letter: None,
            dead_letter_max_bytes: 1 << 30,
            tls: None,
        }
    }
}

/// How one request ended.
enum Outcome {
    /// The backend holds the batch.
    Acked,
    /// The backend refuses it for good.
    Rejected { status: StatusCode, answer: String },
    /// The receiver needs the dictionary with this id first (protocol
    /// `shipper`: `422` with `Shipper-Need-Dictionary`).
    NeedDictionary(u32),
    /// A shipper receiver's answer contradicts this sink's log: it claims
    /// offsets the log never had, or refuses the request over its
    /// high-water mark (`409`). Never retried, never dead-lettered.
    Contradicted(String),
    /// Worth another try.
    Failed {
        reason: String,
        kind: FailureKind,
        retry_after: Option<Duration>,
    },
}

/// The part of a shipper-protocol answer the sender checks.
#[derive(serde::Deserialize)]
struct ShipperAnswer {
    high_water: u64,
    #[serde(default)]
    stored: Option<u64>,
    #[serde(default)]
    duplicate: Option<u64>,
}

/// POSTs stored chunks to an HTTP endpoint; see the module docs.
#[derive(Debug)]
pub struct HttpSink {
    options: HttpSinkOptions,
    client: reqwest::Client,
    url: reqwest::Url,
    /// `url` with any password in it replaced, for logs and the dead-letter file.
    shown_url: reqwest::Url,
    /// Headers of every request, the producer id included once opened.
    headers: HeaderMap,
    name: String,
    dead_letter: PathBuf,
    opened: bool,
    stats: Arc<HttpSinkStats>,
    encoder: Encoder,
    /// Consecutive failed requests (across deliveries); 0 after a success.
    failures: u32,
    /// No request before this (a backoff or `Retry-After` in progress).
    not_before: Option<Instant>,
    /// Every record below this was acknowledged (or dead-lettered): a
    /// delivery offered again skips those chunks.
    acked_through: u64,
    rng: SmallRng,
    /// The log's dictionaries, sent to a receiver that asks for one.
    dictionaries: Option<Arc<shipper_core::chunk::Dictionaries>>,
    /// Where the log ends: a receiver claiming offsets at or above it
    /// contradicts the log.
    log_end: Option<shipper_core::log::LogEnd>,
}

impl HttpSink {
    /// A sink for `options`; refuses a bad URI, header or timeout.
    pub fn new(options: HttpSinkOptions) -> Result<Self, ComponentError> {
        let fatal = |what: String| ComponentError::Fatal(format!("http sink: {what}"));
        let url = reqwest::Url::parse(&options.uri)
            .map_err(|e| fatal(format!("uri {:?}: {e}", options.uri)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(fatal(format!(
                "uri {:?}: must be http:// or https://",
                options.uri
            )));
        }
        if options.max_records == 0 || options.max_bytes == 0 || options.max_in_flight == 0 {
            return Err(fatal(
                "max_records, max_bytes and max_in_flight must be at least 1".into(),
            ));
        }
        if options.timeout.is_zero() || options.connect_timeout.is_zero() {
            return Err(fatal("timeouts must be at least 1 ms".into()));
        }
        if options.retry.attempts == 0 || options.retry.initial.is_zero() {
            return Err(fatal("retry needs at least 1 attempt and 1 ms".into()));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &options.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| fatal(format!("header name {name:?}: {e}")))?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(fatal(format!("header {name:?} is set by the sink")));
            }
            if header == reqwest::header::AUTHORIZATION && options.auth.is_some() {
                return Err(fatal("header authorization and auth together".into()));
            }
            let mut value =
                HeaderValue::from_str(value).map_err(|e| fatal(format!("header {name:?}: {e}")))?;
            if header == reqwest::header::AUTHORIZATION {
                value.set_sensitive(true);
            }
            headers.append(header, value);
        }
        let content_type = match options.protocol {
            HttpProtocol::Shipper => SHIPPER_CONTENT_TYPE,
            HttpProtocol::Ndjson => "application/x-ndjson",
            HttpProtocol::Json => "application/json",
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        match options.protocol {
            HttpProtocol::Shipper => {
                headers.insert(
                    HeaderName::from_static("shipper-protocol"),
                    HeaderValue::from_static(SHIPPER_PROTOCOL_VERSION),
                );
            }
            HttpProtocol::Ndjson | HttpProtocol::Json => {
                if let Some(encoding) = options.compression.content_encoding() {
                    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding));
                }
            }
        }
        if let Some(auth) = &options.auth {
            let value = match auth {
                HttpAuth::Bearer { token } => format!("Bearer {token}"),
                HttpAuth::Basic { user, password } => {
                    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
                }
            };
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| fatal("auth: the credentials are not a valid header value".into()))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut client = reqwest::Client::builder();
        if let Some(tls) = &options.tls {
            client = client.tls_backend_preconfigured(rustls::ClientConfig::clone(tls));
        }
        let client = client
            .user_agent(concat!("shipper/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.connect_timeout)
            .timeout(options.timeout)
            // A redirected POST would lose its (streamed) body: a redirect
            // is a failed request, retried and logged, never followed.
            .redirect(reqwest::redirect::Policy::none())
            .http1_only()
            .build()
            .map_err(|e| fatal(format!("building the HTTP client: {e}")))?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut shown_url = url.clone();
        if shown_url.password().is_some() {
            let _ = shown_url.set_password(Some("REDACTED"));
        }
        Ok(HttpSink {
            url,
            shown_url,
            client,
            headers,
            name: String::from("http"),
            dead_letter: options.dead_letter.clone().unwrap_or_default(),
            opened: false,
            stats: Arc::default(),
            encoder: Encoder::default(),
            failures: 0,
            not_before: None,
            acked_through: 0,
            rng: SmallRng::seed_from_u64(seed),
            dictionaries: None,
            log_end: None,
            options,
        })
    }

    /// The sink's live counters.
    pub fn stats(&self) -> Arc<HttpSinkStats> {
        self.stats.clone()
    }

    /// Sends one request of a delivery until it is acknowledged or
    /// dead-lettered (`Ok`), or `attempts` tries failed (`Retryable`).
    /// `first` is the outcome of a try already made (in a pipeline).
    async fn deliver_request(
        &mut self,
        chunks: &[StoredChunk],
        mut first: Option<Outcome>,
    ) -> Result<(), ComponentError> {
        let (protocol, compression) = (self.options.protocol, self.options.compression);
        let mut request = if encode::needs_work(protocol, compression, chunks) {
            let encoder = &mut self.encoder;
            off_the_workers(|| encoder.encode(protocol, compression, chunks))?
        } else {
            self.encoder.encode(protocol, compression, chunks)?
        };
        if protocol == HttpProtocol::Shipper {
            // One at a time: the data continues from what was acknowledged.
            request.from = Some(self.acked_through);
        }
        let mut attempts = 0;
        let mut uploaded = Vec::new();
        loop {
            if let Some(at) = self.not_before.take() {
                tokio::time::sleep_until(at.into()).await;
            }
            let outcome = match first.take() {
                Some(outcome) => outcome,
                None => self.send(&request, self.failures > 0).await,
            };
            let (reason, kind, retry_after) = match outcome {
                Outcome::Acked => break,
                Outcome::Contradicted(reason) => {
                    Event::AnswerContradicted {
                        reason: &reason,
                        first_offset: request.first_offset,
                        end_offset: request.end_offset,
                    }
                    .emit(&self.name, &self.stats);
                    return Err(ComponentError::Fatal(format!(
                        "http sink {}: the receiver's answer contradicts this log: {reason}; \
                         the sink stopped, every record is kept",
                        self.name
                    )));
                }
                Outcome::NeedDictionary(id) if !uploaded.contains(&id) => {
                    uploaded.push(id);
                    match self.upload_dictionary(id).await {
                        // Sent: the same request again, at once.
                        Ok(()) => continue,
                        Err(reason) => (reason, FailureKind::Protocol, None),
                    }
                }
                Outcome::NeedDictionary(id) => (
                    format!("the receiver asked again for dictionary {id} after it was sent"),
                    FailureKind::Protocol,
                    None,
                ),
                Outcome::Rejected { status, answer } => {
                    if self.options.on_rejected == OnRejected::DeadLetter {
                        self.dead_letter(chunks, &request, status, &answer)?;
                        break;
                    }
                    let retry_after = None;
                    let reason = format!("refused with {status}: {answer}");
                    (reason, FailureKind::Protocol, retry_after)
                }
                Outcome::Failed {
                    reason,
                    kind,
                    retry_after,
                } => (reason, kind, retry_after),
            };
            self.failures = self.failures.saturating_add(1);
            attempts += 1;
            let retry_in = retry_after.unwrap_or_else(|| {
                retry::backoff(&self.options.retry, self.failures, &mut self.rng)
            });
            self.not_before = Some(Instant::now() + retry_in);
            Event::RequestFailed {
                reason: &reason,
                kind,
                retry_in,
                first_offset: request.first_offset,
                end_offset: request.end_offset,
            }
            .emit(&self.name, &self.stats);
            if attempts >= self.options.retry.attempts {
                return Err(ComponentError::Retryable(format!(
                    "http sink {}: {reason} ({attempts} attempts)",
                    self.name
                )));
            }
        }
        self.failures = 0;
        self.acked_through = request.end_offset;
        Ok(())
    }

    /// Sends dictionary `id` to the receiver (docs/protocol.md).
    async fn upload_dictionary(&mut self, id: u32) -> Result<(), String> {
        let dictionary = self
            .dictionaries
            .as_ref()
            .and_then(|d| d.get(id))
            .ok_or_else(|| {
                format!("the receiver needs dictionary {id}, which this log does not hold")
            })?;
        let mut headers = self.headers.clone();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(DICTIONARY_CONTENT_TYPE),
        );
        headers.remove(CONTENT_ENCODING);
        headers.insert(
            HeaderName::from_static("shipper-dictionary"),
            HeaderValue::from(id),
        );
        let response = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(dictionary.to_vec())
            .send()
            .await
            .map_err(|e| format!("sending dictionary {id}: {}", describe(&e)))?;
        let status = response.status();
        if status.is_success() {
            tracing::info!(sink = %self.name, id, bytes = dictionary.len(), "sent a dictionary the receiver asked for");
            Ok(())
        } else {
            let answer = response.text().await.unwrap_or_default();
            Err(format!(
                "dictionary {id} refused with {status}: {}",
                answer.trim()
            ))
        }
    }

    /// Sends `request` once (`retry`: again) and judges the answer.
    async fn send(&self, request: &Request, retry: bool) -> Outcome {
        Event::RequestSent {
            body_bytes: request.len,
            raw_bytes: request.raw_len,
            retry,
        }
        .emit(&self.name, &self.stats);
        let started = Instant::now();
        let mut post = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone());
        if let Some(after) = request.after {
            post = post.header("shipper-after", after);
        }
        if let Some(from) = request.from {
            post = post.header("shipper-from", from);
        }
        let sent = post
            .body(reqwest::Body::wrap(Pieces::new(request)))
            .send()
            .await;
        let outcome = match sent {
            Err(error) => Outcome::Failed {
                reason: describe(&error),
                kind: FailureKind::Unavailable,
                retry_after: None,
            },
            Ok(response) => self.judge(response, request).await,
        };
        Event::RequestFinished {
            elapsed: started.elapsed(),
        }
        .emit(&self.name, &self.stats);
        outcome
    }

    /// What the answer to `request` means.
    async fn judge(&self, mut response: reqwest::Response, request: &Request) -> Outcome {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| retry::parse_retry_after(value.as_bytes(), SystemTime::now()));
        let need_dictionary = response
            .headers()
            .get("shipper-need-dictionary")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u32>().ok());
        let mut answer = Vec::new();
        let read = loop {
            match response.chunk().await {
                Ok(Some(piece)) => {
                    let room = MAX_ANSWER_BYTES - answer.len();
                    answer.extend_from_slice(&piece[..piece.len().min(room)]);
                    if answer.len() == MAX_ANSWER_BYTES {
                        break Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(error) => break Err(describe(&error)),
            }
        };
        let text = || dead_letter::answer_text(&answer);
        let failed = |reason: String, kind| Outcome::Failed {
            reason,
            kind,
            retry_after,
        };
        if status.is_success() {
            if let Err(reason) = read {
                return failed(
                    format!("{status}, then reading the answer: {reason}"),
                    FailureKind::Unavailable,
                );
            }
            if self.options.protocol != HttpProtocol::Shipper {
                return Outcome::Acked;
            }
            return match serde_json::from_slice::<ShipperAnswer>(&answer) {
                Ok(answer) => self.judge_shipper_answer(&answer, request),
                Err(error) => failed(
                    format!("{status} with an unreadable answer ({error}): {}", text()),
                    FailureKind::Protocol,
                ),
            };
        }
        if status == StatusCode::CONFLICT && self.options.protocol == HttpProtocol::Shipper {
            // About the receiver's mark, not this batch's content.
            return Outcome::Contradicted(format!("{status}: {}", text()));
        }
        if status == StatusCode::UNPROCESSABLE_ENTITY
            && self.options.protocol == HttpProtocol::Shipper
        {
            if let Some(id) = need_dictionary {
                return Outcome::NeedDictionary(id);
            }
        }
        let retryable = status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error();
        if refuses_the_sink(status) {
            failed(
                format!(
                    "{status}: the endpoint refuses the sink itself, not this batch \
                     (check the uri and the credentials); retried, never dead-lettered: {}",
                    text()
                ),
                FailureKind::Protocol,
            )
        } else if retryable {
            failed(format!("{status}: {}", text()), FailureKind::Unavailable)
        } else if status.is_client_error() {
            Outcome::Rejected {
                status,
                answer: text(),
            }
        } else {
            // 1xx that hyper did not consume, 3xx (redirects are not followed).
            failed(
                format!("unexpected {status} (redirects are not followed; check the uri)"),
                FailureKind::Protocol,
            )
        }
    }

    /// What a shipper receiver's `200` means. The receiver may say it had
    /// some or all of the records already (a replay), but it can never
    /// hold offsets this log never had: a `high_water` at or beyond the
    /// log's end (a forged or damaged mark, under which every later chunk
    /// would be answered "duplicate" and dropped from the log) stops the
    /// sink instead. So do counts that do not add up to the request.
    fn judge_shipper_answer(&self, answer: &ShipperAnswer, request: &Request) -> Outcome {
        let log_end = self
            .log_end
            .as_ref()
            .map_or(u64::MAX, |end| end.next_offset());
        if answer.high_water > log_end {
            return Outcome::Contradicted(format!(
                "it holds offsets up to {} of this producer, but this log ends at {log_end}",
                answer.high_water
            ));
        }
        if let (Some(stored), Some(duplicate)) = (answer.stored, answer.duplicate) {
            if stored.checked_add(duplicate) != Some(request.records) {
                return Outcome::Contradicted(format!(
                    "it stored {stored} and skipped {duplicate} records of a request of {}",
                    request.records
                ));
            }
        }
        if answer.high_water < request.end_offset {
            return Outcome::Failed {
                reason: format!(
                    "200 with high_water {}, below the batch's end offset {}",
                    answer.high_water, request.end_offset
                ),
                kind: FailureKind::Protocol,
                retry_after: None,
            };
        }
        Outcome::Acked
    }

    /// Writes a refused batch to the dead-letter file and counts it.
    fn dead_letter(
        &mut self,
        chunks: &[StoredChunk],
        request: &Request,
        status: StatusCode,
        answer: &str,
    ) -> Result<(), ComponentError> {
        let refusal = dead_letter::Refusal {
            sink: &self.name,
            uri: self.shown_url.as_str(),
            status: status.as_u16(),
            answer,
        };
        let (path, encoder) = (&self.dead_letter, &mut self.encoder);
        let limit = self.options.dead_letter_max_bytes;
        let records =
            off_the_workers(|| dead_letter::append(path, limit, encoder, chunks, &refusal))?;
        Event::BatchDeadLettered {
            status: status.as_u16(),
            answer,
            records,
            first_offset: request.first_offset,
            end_offset: request.end_offset,
            file: &self.dead_letter,
        }
        .emit(&self.name, &self.stats);
        Ok(())
    }
}

#[async_trait]
impl Sink for HttpSink {
    fn metrics(&self) -> Vec<shipper_core::metrics::ComponentMetric> {
        self.stats.metrics()
    }

    async fn open(&mut self, cx: &SinkContext) -> Result<(), ComponentError> {
        self.name.clone_from(&cx.name);
        self.encoder.set_decoder(cx.decoder());
        self.dictionaries = Some(cx.dictionaries.clone());
        self.log_end = Some(cx.log_end.clone());
        if self.options.dead_letter.is_none() {
            self.dead_letter = cx
                .data_dir
                .join("sinks")
                .join(format!("{}.dead-letter.ndjson", cx.name));
        }
        if self.options.protocol == HttpProtocol::Shipper {
            let producer = HeaderValue::from_str(&cx.producer_id.to_string())
                .expect("hex digits are a valid header value");
            self.headers
                .insert(HeaderName::from_static("shipper-producer"), producer);
            // The receiver keeps one mark per producer and sink: another
            // sink of this log sending to it keeps its own.
            if let Ok(sink) = HeaderValue::from_str(&cx.name) {
                self.headers
                    .insert(HeaderName::from_static("shipper-sink"), sink);
            }
        }
        self.acked_through = self.acked_through.max(cx.committed);
        self.opened = true;
        Ok(())
    }

    async fn deliver(&mut self, chunks: &[StoredChunk]) -> Result<(), ComponentError> {
        if !self.opened {
            return Err(ComponentError::Fatal(
                "http sink: deliver called before open".into(),
            ));
        }
        // Chunks acknowledged by an earlier call that failed later on.
        let start = chunks.partition_point(|chunk| chunk.end_offset() <= self.acked_through);
        let chunks = &chunks[start..];
        let sizes = chunks.iter().map(|chunk| {
            (
                chunk.end_offset() - chunk.first_offset(),
                chunk.frame().len() as u64,
            )
        });
        let ranges = encode::split(sizes, self.options.max_records, self.options.max_bytes);
        let mut pending = ranges.as_slice();
        let pipelined = self.options.protocol == HttpProtocol::Shipper
            && self.options.max_in_flight > 1
            && ranges.len() > 1
            && self.failures == 0
            && self.not_before.is_none();
        if pipelined {
            let (acked, failed) = self.deliver_pipelined(chunks, &ranges).await;
            pending = &ranges[acked..];
            if let Some(outcome) = failed {
                let range = pending[0].clone();
                self.deliver_request(&chunks[range], Some(outcome)).await?;
                pending = &pending[1..];
            }
        }
        for range in pending {
            self.deliver_request(&chunks[range.clone()], None).await?;
        }
        Ok(())
    }
}

impl HttpSink {
    /// Sends the requests of `ranges` with up to `max_in_flight` in flight,
    /// each naming the end of the one before (`Shipper-After`). Returns how
    /// many were acknowledged, in order, and the outcome of the first that
    /// was not (the requests after it are abandoned: the receiver stores
    /// none of them before that one).
    async fn deliver_pipelined(
        &mut self,
        chunks: &[StoredChunk],
        ranges: &[std::ops::Range<usize>],
    ) -> (usize, Option<Outcome>) {
        let mut requests = Vec::with_capacity(ranges.len());
        let mut after = None;
        let from = self.acked_through;
        for range in ranges {
            // Shipper-protocol requests are pieces of the stored chunks: no
            // work, no failure.
            let Ok(mut request) = self.encoder.encode(
                HttpProtocol::Shipper,
                self.options.compression,
                &chunks[range.clone()],
            ) else {
                break;
            };
            // The first continues from what was acknowledged; each later
            // one follows the one before it.
            request.from = after.is_none().then_some(from);
            request.after = after;
            after = Some(request.end_offset);
            requests.push(request);
        }
        let (mut acked, mut failed) = (0usize, None);
        {
            let this = &*self;
            let mut queued = requests.iter();
            let mut window = futures_util::stream::FuturesOrdered::new();
            for request in queued.by_ref().take(this.options.max_in_flight) {
                window.push_back(this.send(request, false));
            }
            while let Some(outcome) = window.next().await {
                if !matches!(outcome, Outcome::Acked) {
                    failed = Some(outcome);
                    break;
                }
                acked += 1;
                if let Some(request) = queued.next() {
                    window.push_back(this.send(request, false));
                }
            }
        }
        if let Some(last) = acked.checked_sub(1) {
            self.acked_through = requests[last].end_offset;
        }
        (acked, failed)
    }
}

/// Runs CPU or disk work (decoding, compressing, a synced write) where it
/// does not hold up the runtime's other tasks: `block_in_place` on a
/// multi-threaded runtime, inline elsewhere.
fn off_the_workers<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// A transport error in one line, with its kind first.
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_body() || error.is_decode() {
        "broken answer"
    } else {
        "request failed"
    };
    // reqwest's Display omits the cause, which says what actually failed.
    let mut text = format!("{kind}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Standard base64 with padding (RFC 4648), for basic auth.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("user:pässword", "dXNlcjpww6Rzc3dvcmQ="),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn bad_options_are_refused_by_name() {
        let with = |change: fn(&mut HttpSinkOptions)| {
            let mut options = HttpSinkOptions::new("http://127.0.0.1:9/v1/chunks");
            change(&mut options);
            match HttpSink::new(options) {
                Ok(_) => String::from("ok"),
                Err(error) => error.to_string(),
            }
        };
        assert_eq!(with(|_| {}), "ok");
        assert_eq!(with(|o| o.uri = "https://127.0.0.1:9/in".into()), "ok");
        type Change = fn(&mut HttpSinkOptions);
        let cases: [(Change, &str); 6] = [
            (|o| o.uri = "ftp://x/".into(), "must be http://"),
            (|o| o.uri = "not a uri".into(), "uri \"not a uri\""),
            (
                |o| o.headers = vec![("Content-Type".into(), "text/plain".into())],
                "is set by the sink",
            ),
            (
                |o| o.headers = vec![("bad header".into(), "x".into())],
                "header name",
            ),
            (|o| o.max_records = 0, "max_records"),
            (|o| o.retry.attempts = 0, "attempt"),
        ];
        for (change, expected) in cases {
            let error = with(change);
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }
}
