//! `http`: records POSTed as NDJSON or as a JSON array, optionally
//! `Content-Encoding: zstd` or `gzip`. The answer is 200 only once the
//! records are durable under the log's policy; 400 names what is wrong
//! with the body (and nothing of it is stored); 413 when the body, or what
//! it decompresses to, exceeds `max_body_bytes` (a zstd or gzip bomb costs
//! no more memory than that); 503 with `Retry-After` while the log is at
//! its disk budget.

use std::io::Read;
use std::net::SocketAddr;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use shipper_core::chunk::now_nanos;
use shipper_core::plugin::{PluginError, Source, SourceContext};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// Options of an [`HttpSource`].
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Where to listen.
    pub address: SocketAddr,
    /// The path that takes POSTs.
    pub path: String,
    /// Largest body, before and after decompression.
    pub max_body_bytes: usize,
}

/// A parsed request on its way to the log.
struct Request {
    data: Vec<u8>,
    ends: Vec<usize>,
    /// Answers with the end offset once the records are in the log.
    reply: oneshot::Sender<Result<Option<u64>, String>>,
}

/// Listens for POSTs and emits their records.
#[derive(Debug)]
pub struct HttpSource {
    options: HttpOptions,
    stream: String,
    listener: Option<TcpListener>,
}

impl HttpSource {
    /// Binds now, so that an address in use is an error at start.
    pub async fn bind(options: HttpOptions, stream: &str) -> Result<Self, PluginError> {
        let listener = TcpListener::bind(options.address)
            .await
            .map_err(|e| PluginError::Fatal(format!("listening on {}: {e}", options.address)))?;
        Ok(HttpSource {
            options,
            stream: stream.to_owned(),
            listener: Some(listener),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref()?.local_addr().ok()
    }
}

#[derive(Clone)]
struct Shared {
    requests: mpsc::Sender<Request>,
    log: shipper_core::log::Log,
    max_body_bytes: usize,
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

/// Decompresses `body` as its `Content-Encoding` says, never past `max`.
fn decode(headers: &HeaderMap, body: &[u8], max: usize) -> Result<Vec<u8>, Refusal> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let limited = |reader: &mut dyn Read| -> Result<Vec<u8>, Refusal> {
        let mut out = Vec::new();
        reader
            .take(max as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    format!("body does not decode as {encoding}: {e}"),
                )
            })?;
        if out.len() > max {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body decompresses to more than {max} bytes"),
            ));
        }
        Ok(out)
    };
    match encoding.as_str() {
        "identity" | "" => Ok(body.to_vec()),
        "zstd" => {
            let mut decoder = zstd::stream::read::Decoder::new(body)
                .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("zstd: {e}")))?;
            limited(&mut decoder)
        }
        "gzip" => limited(&mut flate2::read::GzDecoder::new(body)),
        other => Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {other:?} is not supported (use zstd, gzip or none)"),
        )),
    }
}

/// Cuts a body into records: a JSON array gives one record per element
/// (compact JSON); anything else is NDJSON, one JSON value per non-empty
/// line. A body with any invalid record is refused whole.
fn records(body: &[u8]) -> Result<(Vec<u8>, Vec<usize>), String> {
    let mut data = Vec::with_capacity(body.len());
    let mut ends = Vec::new();
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let values: Vec<Box<serde_json::value::RawValue>> =
            serde_json::from_slice(body).map_err(|e| format!("invalid JSON array: {e}"))?;
        for value in values {
            let compact: serde_json::Value =
                serde_json::from_str(value.get()).map_err(|e| format!("invalid JSON: {e}"))?;
            serde_json::to_writer(&mut data, &compact).map_err(|e| e.to_string())?;
            ends.push(data.len());
        }
    } else {
        for (index, line) in body.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(line) {
                return Err(format!("line {}: invalid JSON: {error}", index + 1));
            }
            data.extend_from_slice(line);
            ends.push(data.len());
        }
    }
    Ok((data, ends))
}

async fn ingest(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if shared.log.is_full() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "the local log is at its disk budget; retry later",
        )
            .into_response();
    }
    let max = shared.max_body_bytes;
    let decoded = match tokio::task::spawn_blocking(move || decode(&headers, &body, max)).await {
        Ok(Ok(decoded)) => decoded,
        Ok(Err((status, message))) => return text(status, message),
        Err(error) => return text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    };
    let (data, ends) = match records(&decoded) {
        Ok(parsed) => parsed,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
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
        Ok(Err(message)) => return text(StatusCode::SERVICE_UNAVAILABLE, message),
        Err(_) => return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    };
    if let Some(end) = end {
        if let Err(error) = shared.log.durable(end).await {
            return text(StatusCode::SERVICE_UNAVAILABLE, error.to_string());
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
    async fn run(&mut self, cx: &mut SourceContext) -> Result<(), PluginError> {
        let listener = self
            .listener
            .take()
            .ok_or_else(|| PluginError::Fatal("http source run twice".into()))?;
        let (sender, mut requests) = mpsc::channel::<Request>(64);
        let shared = Shared {
            requests: sender,
            log: cx.emitter.log().clone(),
            max_body_bytes: self.options.max_body_bytes,
        };
        let router = Router::new()
            .route(&self.options.path, post(ingest))
            .layer(DefaultBodyLimit::max(self.options.max_body_bytes))
            .with_state(shared);
        let stop = cx.shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.wait().await })
                .await
        });
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
        let mut start = 0;
        let mut outcome = Ok(());
        for &end in &request.ends {
            if let Err(error) = cx
                .emitter
                .emit(&self.stream, &request.data[start..end], now, None)
            {
                outcome = Err(error.to_string());
                break;
            }
            start = end;
        }
        let answer = match outcome {
            Ok(()) => cx.emitter.written().await.map_err(|e| e.to_string()),
            Err(message) => Err(message),
        };
        let _ = request.reply.send(answer);
    }
}
