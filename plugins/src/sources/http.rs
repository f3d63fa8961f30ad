//! `http`: records POSTed as NDJSON or as a JSON array, optionally
//! `Content-Encoding: zstd` or `gzip`. The answer is 200 only once the
//! records are durable under the log's policy; 400 names what is wrong
//! with the body (and nothing of it is stored: a body that is not UTF-8,
//! or holds a record that is not JSON, is refused whole); 413 when the
//! body, or what it decompresses to, exceeds `max_body_bytes` (a zstd or
//! gzip bomb costs no more memory than that); 408 when the body arrives
//! too slowly; 503 with `Retry-After` while the log is at its disk budget
//! or the listener holds as many request bodies as its budget allows.
//! Connections, deadlines and memory follow the listener's limits (see
//! [`crate::listen`]).

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use shipper_core::chunk::now_nanos;
use shipper_core::component::{ComponentError, Source, SourceContext};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::listen::auth::Authenticator;
use crate::listen::body::{read_body, BodyBudget, BodyBuffer, Refused, Reservation};
use crate::listen::http::{ListenerStats, RequestStats};
use crate::listen::ListenerLimits;
use crate::throttle::Throttle;
use crate::tls::ServerTls;

/// Options of an [`HttpSource`].
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Where to listen.
    pub address: SocketAddr,
    /// The path that takes POSTs.
    pub path: String,
    /// Largest body, before and after decompression.
    pub max_body_bytes: usize,
    /// Connections, deadlines and the memory budget of request bodies.
    pub limits: ListenerLimits,
    /// TLS, when the listener has a `tls` table.
    pub tls: Option<Arc<ServerTls>>,
    /// Bearer tokens every request must carry, when the source has an
    /// `auth` table.
    pub auth: Option<Arc<Authenticator>>,
}

/// Counters of an http source.
#[derive(Debug, Default)]
pub struct HttpSourceStats {
    /// The listener's connections (accepted, refused, timed out).
    pub listener: Arc<ListenerStats>,
    /// Requests answered, by outcome.
    pub requests: Arc<RequestStats>,
}

/// A parsed request on its way to the log.
struct Request {
    /// The records, back to back; `ends` cut them.
    data: Bytes,
    ends: Vec<(usize, usize)>,
    /// Answers with the end offset once the records are in the log.
    reply: oneshot::Sender<Result<Option<u64>, String>>,
}

/// Listens for POSTs and emits their records.
#[derive(Debug)]
pub struct HttpSource {
    options: HttpOptions,
    stream: String,
    listener: Option<TcpListener>,
    counters: Arc<HttpSourceStats>,
}

impl HttpSource {
    /// Binds now, so that an address in use is an error at start.
    pub async fn bind(options: HttpOptions, stream: &str) -> Result<Self, ComponentError> {
        let listener = TcpListener::bind(options.address)
            .await
            .map_err(|e| ComponentError::Fatal(format!("listening on {}: {e}", options.address)))?;
        Ok(HttpSource {
            options,
            stream: stream.to_owned(),
            listener: Some(listener),
            counters: Arc::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref()?.local_addr().ok()
    }

    /// The counters, shared with the running source.
    pub fn counters(&self) -> Arc<HttpSourceStats> {
        self.counters.clone()
    }
}

#[derive(Clone)]
struct Shared {
    requests: mpsc::Sender<Request>,
    log: shipper_core::log::Log,
    max_body_bytes: usize,
    limits: ListenerLimits,
    budget: BodyBudget,
    counters: Arc<HttpSourceStats>,
    refusals: Arc<Throttle>,
    auth: Option<Arc<Authenticator>>,
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

/// A status and its message, for a refused request.
type Refusal = (StatusCode, String);

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    (status, message.into())
}

/// Decompresses `body` as its `Content-Encoding` says, never past `max`
/// bytes and never past the room `budget` has for it.
fn decode(
    headers: &HeaderMap,
    body: Bytes,
    max: usize,
    budget: &BodyBudget,
) -> Result<Bytes, Refusal> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let limited = |reader: &mut dyn Read| -> Result<Bytes, Refusal> {
        let mut out = BodyBuffer::with_capacity(max).map_err(|e| {
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no memory to decompress the body: {e}"),
            )
        })?;
        let mut reservation: Option<Reservation> = None;
        let mut piece = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut piece).map_err(|e| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    format!("body does not decode as {encoding}: {e}"),
                )
            })?;
            if n == 0 {
                break;
            }
            if out.len() + n > max {
                return Err(refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body decompresses to more than {max} bytes"),
                ));
            }
            let held = reservation.as_ref().map_or(0, Reservation::bytes);
            if (out.len() + n) as u64 > held {
                let more = budget.try_reserve(1 << 20).ok_or_else(|| {
                    refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the receiver holds as many request bodies as it may; send it again shortly",
                    )
                })?;
                match &mut reservation {
                    Some(held) => held.merge(more),
                    None => reservation = Some(more),
                }
            }
            out.extend(&piece[..n]);
        }
        let reservation = reservation.unwrap_or_else(|| {
            budget
                .try_reserve(0)
                .expect("an empty reservation always fits")
        });
        Ok(out.freeze(reservation))
    };
    match encoding.as_str() {
        "identity" | "" => Ok(body),
        "zstd" => {
            let mut decoder = zstd::stream::read::Decoder::new(&body[..])
                .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("zstd: {e}")))?;
            limited(&mut decoder)
        }
        "gzip" => limited(&mut flate2::read::GzDecoder::new(&body[..])),
        other => Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {other:?} is not supported (use zstd, gzip or none)"),
        )),
    }
}

/// Cuts a body into records: a JSON array gives one record per element
/// (compact JSON); anything else is NDJSON, one JSON value per non-empty
/// line, kept in place. A body with any invalid record, or that is not
/// UTF-8 (JSON is UTF-8, RFC 8259), is refused whole.
fn records(body: Bytes) -> Result<(Bytes, Vec<(usize, usize)>), String> {
    if let Err(error) = std::str::from_utf8(&body) {
        let at = error.valid_up_to();
        let line = body[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        return Err(format!(
            "line {line}: invalid UTF-8 at byte {at}; JSON must be UTF-8"
        ));
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let values: Vec<Box<serde_json::value::RawValue>> =
            serde_json::from_slice(&body).map_err(|e| format!("invalid JSON array: {e}"))?;
        let mut data = Vec::with_capacity(body.len());
        let mut ends = Vec::with_capacity(values.len());
        for value in values {
            let compact: serde_json::Value =
                serde_json::from_str(value.get()).map_err(|e| format!("invalid JSON: {e}"))?;
            let start = data.len();
            serde_json::to_writer(&mut data, &compact).map_err(|e| e.to_string())?;
            ends.push((start, data.len()));
        }
        return Ok((Bytes::from(data), ends));
    }
    let mut ends = Vec::new();
    let mut start = 0;
    for (index, line) in body.split(|&b| b == b'\n').enumerate() {
        let (from, to) = (start, start + line.len());
        start = to + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(line) {
            return Err(format!("line {}: invalid JSON: {error}", index + 1));
        }
        ends.push((from, from + line.len()));
        debug_assert!(from + line.len() <= to);
    }
    Ok((body, ends))
}

/// Answers a refused request, logging it (throttled).
fn refused(shared: &Shared, status: StatusCode, message: String) -> Response {
    if let Some(suppressed) = shared.refusals.allow() {
        tracing::warn!(status = status.as_u16(), %message, suppressed, "http source refused a request");
    }
    let mut response = text(status, message);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

async fn ingest(State(shared): State<Shared>, headers: HeaderMap, mut body: Body) -> Response {
    let response = answer_request(&shared, headers, &mut body).await;
    shared.counters.requests.count(response.status());
    if response.status() != StatusCode::OK {
        crate::listen::body::discard(&mut body, shared.max_body_bytes).await;
    }
    response
}

async fn answer_request(shared: &Shared, headers: HeaderMap, body: &mut Body) -> Response {
    let shared = shared.clone();
    if let Some(auth) = &shared.auth {
        if auth.check(headers.get(header::AUTHORIZATION)).is_none() {
            let mut response = refused(
                &shared,
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required".into(),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return response;
        }
    }
    if shared.log.is_full() {
        let reason = if shared.log.disk_full() {
            "the local disk is full; retry later"
        } else {
            "the local log is at its disk budget; retry later"
        };
        let mut response = refused(&shared, StatusCode::SERVICE_UNAVAILABLE, reason.into());
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        return response;
    }
    let max = shared.max_body_bytes;
    let body = match read_body(body, &headers, max, &shared.limits, &shared.budget).await {
        Ok(body) => body,
        Err(Refused { status, message }) => return refused(&shared, status, message),
    };
    let budget = shared.budget.clone();
    let parsed = tokio::task::spawn_blocking(move || {
        let decoded = decode(&headers, body, max, &budget)?;
        records(decoded).map_err(|message| refuse(StatusCode::BAD_REQUEST, message))
    })
    .await;
    let (data, ends) = match parsed {
        Ok(Ok(parsed)) => parsed,
        Ok(Err((status, message))) => return refused(&shared, status, message),
        Err(error) => return text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    };
    let count = ends.len();
    let (reply, answer) = oneshot::channel();
    if shared
        .requests
        .send(Request { data, ends, reply })
        .await
        .is_err()
    {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    let end = match answer.await {
        Ok(Ok(end)) => end,
        Ok(Err(message)) => return refused(&shared, StatusCode::SERVICE_UNAVAILABLE, message),
        Err(_) => return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    };
    if let Some(end) = end {
        if let Err(error) = shared.log.durable(end).await {
            return refused(&shared, StatusCode::SERVICE_UNAVAILABLE, error.to_string());
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"accepted\":{count}}}"),
    )
        .into_response()
}

#[async_trait]
impl Source for HttpSource {
    fn metrics(&self) -> Vec<shipper_core::metrics::ComponentMetric> {
        let mut metrics = self.counters.listener.metrics();
        metrics.extend(self.counters.requests.metrics());
        metrics
    }

    async fn run(&mut self, cx: &mut SourceContext) -> Result<(), ComponentError> {
        let listener = self
            .listener
            .take()
            .ok_or_else(|| ComponentError::Fatal("http source run twice".into()))?;
        let (sender, mut requests) = mpsc::channel::<Request>(64);
        let shared = Shared {
            requests: sender,
            log: cx.emitter.log().clone(),
            max_body_bytes: self.options.max_body_bytes,
            limits: self.options.limits.clone(),
            budget: BodyBudget::new(self.options.limits.max_buffered_bytes),
            counters: self.counters.clone(),
            refusals: Arc::default(),
            auth: self.options.auth.clone(),
        };
        let router = Router::new()
            .route(&self.options.path, post(ingest))
            .with_state(shared);
        let server = tokio::spawn(crate::listen::http::serve(
            listener,
            router,
            self.options.limits.clone(),
            self.counters.listener.clone(),
            format!("http source {}", self.stream),
            self.options.tls.clone(),
            cx.shutdown.clone(),
        ));
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => self.store(cx, request).await,
                    None => break,
                },
                () = cx.shutdown.wait() => break,
            }
        }
        // Requests already parsed are stored and answered; the server
        // finishes its open requests and stops.
        while let Ok(request) = requests.try_recv() {
            self.store(cx, request).await;
        }
        drop(requests);
        let _ = server.await;
        cx.emitter.durable().await?;
        Ok(())
    }
}

impl HttpSource {
    async fn store(&self, cx: &mut SourceContext, request: Request) {
        let now = now_nanos();
        let mut outcome = Ok(());
        for &(start, end) in &request.ends {
            if let Err(error) = cx
                .emitter
                .emit(&self.stream, &request.data[start..end], now, None)
            {
                outcome = Err(error.to_string());
                break;
            }
        }
        let answer = match outcome {
            Ok(()) => cx.emitter.written().await.map_err(|e| e.to_string()),
            Err(message) => Err(message),
        };
        let _ = request.reply.send(answer);
    }
}

/// The `http` source's config: `[sources.NAME] type = "http"`. Every key is described in docs/config.md.
#[allow(missing_docs)]
mod config {
    use std::net::SocketAddr;

    use serde::Deserialize;
    use shipper_core::component::Source;

    use super::{HttpOptions, HttpSource};
    use crate::config::{
        duration_ms, BuildContext, BuildError, ByteSize, Checks, Listener, SourceComponent,
    };
    use crate::listen::auth::{Authenticator, InboundAuth};
    use crate::listen::config::{
        check_route_path, default_body_timeout_ms, default_header_timeout_ms,
        default_max_buffered_bytes, default_max_connections, default_min_body_rate, HttpLimits,
    };
    use crate::tls::{server_tls, TlsListenerConfig};

    fn default_http_path() -> String {
        "/".to_owned()
    }

    fn default_max_body_bytes() -> ByteSize {
        ByteSize::mib(10)
    }

    /// `type = "http"`: accepts POSTs of NDJSON or JSON arrays.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HttpSourceConfig {
        /// `IP:port` to listen on.
        pub address: SocketAddr,
        #[serde(default = "default_http_path")]
        pub path: String,
        #[serde(default = "default_max_body_bytes")]
        pub max_body_bytes: ByteSize,
        #[serde(default = "default_max_connections")]
        pub max_connections: u32,
        #[serde(
            default = "default_header_timeout_ms",
            deserialize_with = "duration_ms"
        )]
        pub header_timeout_ms: u64,
        #[serde(default = "default_body_timeout_ms", deserialize_with = "duration_ms")]
        pub body_timeout_ms: u64,
        #[serde(default = "default_min_body_rate")]
        pub min_body_rate: ByteSize,
        #[serde(default = "default_max_buffered_bytes")]
        pub max_buffered_bytes: ByteSize,
        /// TLS for the listener.
        #[serde(default)]
        pub tls: Option<TlsListenerConfig>,
        /// Bearer tokens every request must carry.
        #[serde(default)]
        pub auth: Option<InboundAuth>,
    }

    impl HttpSourceConfig {
        /// Its listener's limits.
        pub fn http_limits(&self) -> HttpLimits {
            HttpLimits {
                max_connections: self.max_connections,
                header_timeout_ms: self.header_timeout_ms,
                body_timeout_ms: self.body_timeout_ms,
                min_body_rate: self.min_body_rate,
                max_buffered_bytes: self.max_buffered_bytes,
            }
        }
    }

    impl crate::config::Named for HttpSourceConfig {
        const TYPE: &'static str = "http";
    }

    #[async_trait::async_trait]
    impl SourceComponent for HttpSourceConfig {
        fn check(&self, check: &mut dyn Checks) {
            check_route_path(check, &self.path);
            if self.max_body_bytes.bytes() == 0 || self.max_body_bytes.bytes() > 1 << 30 {
                check.error(&["max_body_bytes"], "must be between 1 byte and 1GiB");
            }
            self.http_limits().check(self.max_body_bytes, check);
            if let Some(tls) = &self.tls {
                tls.check(check);
            }
            if let Some(auth) = &self.auth {
                auth.check(check, false);
            }
        }

        fn listener(&self) -> Option<(&'static str, Listener)> {
            Some(("address", Listener::Tcp(self.address)))
        }

        fn secured(&self) -> bool {
            self.tls.is_some() || self.auth.is_some()
        }

        async fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
            let options = HttpOptions {
                address: self.address,
                path: self.path.clone(),
                max_body_bytes: usize::try_from(self.max_body_bytes.0).unwrap_or(usize::MAX),
                limits: self.http_limits().limits(),
                tls: server_tls(self.tls.as_ref())?,
                auth: self
                    .auth
                    .as_ref()
                    .map(|auth| Authenticator::new(auth).map(std::sync::Arc::new))
                    .transpose()
                    .map_err(|e| format!("auth: {e}"))?,
            };
            let source = HttpSource::bind(options, cx.name)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Box::new(source))
        }
    }
}

pub use config::HttpSourceConfig;
