//! `shipper`: the receiving side of shipper's wire protocol
//! ([docs/protocol.md](../../../docs/protocol.md)), which makes a shipper an
//! aggregator: sidecars' `http` sinks POST their stored chunks here, and
//! this source stores them in its own log as they are (same compressed
//! body, new offsets), de-duplicated by each producer's high-water mark,
//! and answers once they are durable.
//!
//! # Where the work happens
//!
//! Each request is checked in its own handler task: headers, token, every
//! frame's CRC, order and declared size, and each body against that size:
//! by default its zstd frame header and block structure ([`Verify::Frame`],
//! no decompression), with `verify = "full"` a bounded decompression (a
//! zstd bomb is refused with 413 before it costs memory either way). The
//! checked request then goes to the source's own task, the only place that
//! reads and moves high-water marks, so two requests of one producer (a
//! retry overtaking the original) can never both store the same chunk. That
//! task appends and hands the waiting for durability to a small task per
//! request, so durable waits of many requests share the log's group commit.
//!
//! # High-water marks
//!
//! Marks are kept per sender: a producer and the sink of it that sends
//! (`Shipper-Sink`), since two sinks of one sidecar interleave in its
//! offsets. Each stored chunk's source position is `<source>/<producer
//! hex>[/<sink>]`, NUL, and the sender's end offset (u64 LE). The log keeps the last of each
//! even after delivered segments are deleted, so at start the marks are
//! read back from it ([`shipper_core::log::Log::source_positions_with_prefix`])
//! and survive any crash: a chunk the log did not keep is not marked either.
//!
//! A request that only repeats what was stored (a retry after a lost
//! answer) is answered once the earlier append it repeats is durable, never
//! before: the sender must not move on while the data could still be lost.
//!
//! A mark moves only across offsets the sender declared: each request
//! names where its data continues from (`Shipper-From`, or `Shipper-After`
//! when pipelined), and one that would jump a known producer's mark over
//! offsets it did not declare is refused with `409` (a forged request with
//! another sender's producer id and a far offset cannot silently make its
//! later chunks look like duplicates). Declared jumps of a known producer
//! are logged and counted.
//!
//! # Limits
//!
//! Connections, request deadlines and the memory request bodies may hold
//! follow [`crate::listen`]; requests parked behind the one they follow
//! hold their bodies too, so at most [`MAX_PARKED`] per producer are kept.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use shipper_core::chunk::{
    check_body, decode_body, record_capacity, ChunkView, ClosedChunk, Decoder,
};
use shipper_core::component::{ComponentError, Source, SourceContext};
use shipper_core::log::{source_position, Log, Offer, ProducerId};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::listen::body::{read_body, BodyBudget, Refused};
use crate::listen::http::{ListenerStats, RequestStats};
use crate::listen::ListenerLimits;
use crate::throttle::Throttle;

/// The content type of a request body of stored chunks.
pub const CONTENT_TYPE: &str = "application/vnd.shipper.chunks";
/// The content type of a dictionary a sender uploads.
pub const DICTIONARY_CONTENT_TYPE: &str = "application/vnd.shipper.dictionary";
/// The largest dictionary accepted.
const MAX_DICTIONARY_BYTES: usize = 1 << 20;

/// The protocol versions this receiver speaks.
pub const PROTOCOL_VERSION: &str = "1";
/// Requests kept waiting for the request they follow, per producer; more
/// are answered `503`.
pub const MAX_PARKED: usize = 64;

/// Options of a [`ShipperSource`].
#[derive(Debug, Clone)]
pub struct ShipperOptions {
    /// Where to listen.
    pub address: SocketAddr,
    /// The path that takes POSTs.
    pub path: String,
    /// Bearer tokens senders must present (each may be bound to
    /// producers), if set.
    pub auth: Option<Arc<crate::listen::auth::Authenticator>>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Largest decompressed body of one chunk.
    pub max_chunk_bytes: usize,
    /// How far each chunk's body is checked before it is stored.
    pub verify: Verify,
    /// How long a request waits for the request it follows
    /// (`Shipper-After`) before it is answered `503`.
    pub parked_at_most: Duration,
    /// Connections, deadlines and the memory budget of request bodies.
    pub limits: ListenerLimits,
    /// TLS, when the listener has a `tls` table.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
}

/// Counters of a shipper source, for `/metrics`.
#[derive(Debug, Default)]
pub struct ShipperStats {
    /// The listener's connections (accepted, refused, timed out).
    pub listener: Arc<ListenerStats>,
    /// Requests answered, by outcome (`conflict`: an overlap, or a jump
    /// over offsets the sender did not declare).
    pub requests: Arc<RequestStats>,
    /// Records skipped as already stored.
    pub duplicate_records: AtomicU64,
    /// Offsets a known producer's mark jumped over that its sender
    /// declared (`Shipper-From` above the mark): acknowledged elsewhere.
    pub declared_gap_records: AtomicU64,
    /// Dictionaries stored.
    pub dictionaries_stored: AtomicU64,
}

/// How far the receiver checks a chunk's body before storing it (its
/// frame's CRC, order and declared size are always checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verify {
    /// The zstd frame's structure and its declared size, without
    /// decompressing ([`shipper_core::chunk::check_body`]): a bomb that
    /// declares its size is refused, one that lies fails wherever it is
    /// decoded, bounded by the size it declared. A body damaged with a
    /// valid CRC is stored, and the sink that cannot decode it puts it in
    /// quarantine.
    #[default]
    Frame,
    /// Decompress every body (bounded): nothing undecodable is stored.
    /// Costs one decompression per chunk.
    Full,
}

impl Default for ShipperOptions {
    fn default() -> Self {
        ShipperOptions {
            address: SocketAddr::from(([127, 0, 0, 1], 8687)),
            path: "/v1/chunks".into(),
            auth: None,
            max_body_bytes: 64 << 20,
            max_chunk_bytes: 64 << 20,
            verify: Verify::default(),
            parked_at_most: Duration::from_secs(30),
            limits: ListenerLimits::default(),
            tls: None,
        }
    }
}

/// Whose acknowledgements a high-water mark tracks: a producer (a
/// sender's log), and the sink of it that sends (`Shipper-Sink`; empty for
/// a sender that does not say). Two sinks of one sidecar sending to one
/// receiver each have their own mark: their chunks interleave in the
/// producer's offsets, and one's mark must not make the other's chunks
/// look like duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SenderId {
    producer: ProducerId,
    sink: String,
}

impl std::fmt::Display for SenderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.sink.is_empty() {
            write!(f, "{}", self.producer)
        } else {
            write!(f, "{}/{}", self.producer, self.sink)
        }
    }
}

/// The marks of every sender, and what waits on them.
type Marks = HashMap<SenderId, Producer>;

/// A checked request on its way to the source's task.
struct Checked {
    producer: ProducerId,
    /// `Shipper-Sink`, or empty.
    sink: String,
    /// `Shipper-After`: store only once the producer's high-water mark has
    /// reached this offset (the sender has earlier requests in flight).
    after: Option<u64>,
    /// `Shipper-From`: the sender's data for this receiver continues from
    /// this offset (nothing for it between there and the first frame).
    from: Option<u64>,
    body: Bytes,
    /// Byte ranges of the frames in `body`.
    frames: Vec<(usize, usize)>,
    reply: oneshot::Sender<Response>,
}

/// What the source knows of one producer.
struct Producer {
    /// End offset (in the sender's log) of the last chunk stored.
    high_water: u64,
    /// A mark was read back from the log or set by a request: gaps above
    /// it must be declared.
    known: bool,
    /// Resolves to the end offset, in this log, of the last append made
    /// for this producer once it is written (`Some(0)`: nothing pending).
    written: watch::Receiver<Option<u64>>,
    /// Requests that arrived before the one they follow (`Shipper-After`
    /// above the high-water mark), with when they arrived.
    parked: Vec<(Checked, Instant)>,
}

impl Producer {
    fn new(high_water: u64) -> Producer {
        Producer {
            high_water,
            known: false,
            written: watch::channel(Some(0)).1,
            parked: Vec::new(),
        }
    }
}

/// Receives chunks from other shippers; see the module docs.
#[derive(Debug)]
pub struct ShipperSource {
    options: ShipperOptions,
    name: String,
    listener: Option<TcpListener>,
    counters: Arc<ShipperStats>,
    gaps: Throttle,
}

impl ShipperSource {
    /// Binds now, so that an address in use is an error at start.
    pub async fn bind(options: ShipperOptions, name: &str) -> Result<Self, ComponentError> {
        let listener = TcpListener::bind(options.address)
            .await
            .map_err(|e| ComponentError::Fatal(format!("listening on {}: {e}", options.address)))?;
        Ok(ShipperSource {
            options,
            name: name.to_owned(),
            listener: Some(listener),
            counters: Arc::default(),
            gaps: Throttle::default(),
        })
    }

    /// The counters, shared with the running source.
    pub fn counters(&self) -> Arc<ShipperStats> {
        self.counters.clone()
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The high-water marks the log holds for this source, by sender
    /// (positions `<source>/<producer hex>` or `.../<sink>`).
    fn load_marks(&self, log: &Log) -> Marks {
        let prefix = format!("{}/", self.name);
        let mut marks = HashMap::new();
        for (source, _component, payload) in log.source_positions_with_prefix(&prefix) {
            let rest = &source[prefix.len()..];
            let (hex, sink) = rest.split_once('/').unwrap_or((rest, ""));
            let Some(producer) = ProducerId::parse(hex) else {
                continue;
            };
            let sender = SenderId {
                producer,
                sink: sink.to_owned(),
            };
            let Ok(end) = <[u8; 8]>::try_from(payload.as_slice()) else {
                tracing::warn!(source = %self.name, %source, "unreadable high-water mark ignored");
                continue;
            };
            let end = u64::from_le_bytes(end);
            let entry = marks.entry(sender).or_insert_with(|| Producer::new(0));
            entry.high_water = entry.high_water.max(end);
            entry.known = true;
        }
        marks
    }
}

#[derive(Clone)]
struct Shared {
    requests: mpsc::Sender<Checked>,
    log: Log,
    options: ShipperOptions,
    /// The (producer, dictionary id) pairs uploaded since start: a
    /// producer's chunks may use exactly these.
    dictionaries: Arc<Mutex<HashSet<(ProducerId, u32)>>>,
    budget: BodyBudget,
    counters: Arc<ShipperStats>,
    refusals: Arc<Throttle>,
}

fn answer(status: StatusCode, message: impl Into<String>) -> Response {
    let mut message = message.into();
    message.push('\n');
    let mut response = (status, message).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A refusal: logged (throttled) and answered (`receive` counts it).
fn refuse(refusals: &Throttle, status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    if let Some(suppressed) = refusals.allow() {
        tracing::warn!(status = status.as_u16(), %message, suppressed, "shipper source refused a request");
    }
    answer(status, message)
}

/// An optional offset header: `Ok(None)` when absent.
fn offset_header(headers: &HeaderMap, name: &str) -> Result<Option<u64>, String> {
    match headers.get(name.to_ascii_lowercase()) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| format!("{name} must be an offset (decimal u64)")),
    }
}

/// Checks a request; on success it goes to the source's task, which answers.
async fn receive(State(shared): State<Shared>, headers: HeaderMap, mut body: Body) -> Response {
    let response = answer_request(&shared, headers, &mut body).await;
    shared.counters.requests.count(response.status());
    if response.status() != StatusCode::OK {
        crate::listen::body::discard(&mut body, shared.options.max_body_bytes).await;
    }
    response
}

async fn answer_request(shared: &Shared, headers: HeaderMap, body: &mut Body) -> Response {
    let refusals = &*shared.refusals;
    let grant = match &shared.options.auth {
        None => None,
        Some(auth) => match auth.check(headers.get(header::AUTHORIZATION)) {
            Some(grant) => Some(grant),
            None => {
                let mut response = refuse(
                    refusals,
                    StatusCode::UNAUTHORIZED,
                    "a valid bearer token is required",
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return response;
            }
        },
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != CONTENT_TYPE && content_type != DICTIONARY_CONTENT_TYPE {
        return refuse(
            refusals,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be {CONTENT_TYPE}, not {content_type:?}"),
        );
    }
    let version = headers
        .get("shipper-protocol")
        .and_then(|v| v.to_str().ok());
    if version != Some(PROTOCOL_VERSION) {
        return refuse(
            refusals,
            StatusCode::BAD_REQUEST,
            format!(
                "Shipper-Protocol {version:?} is not spoken here; versions: {PROTOCOL_VERSION}"
            ),
        );
    }
    let Some(producer) = headers
        .get("shipper-producer")
        .and_then(|v| v.to_str().ok())
        .and_then(ProducerId::parse)
    else {
        return refuse(
            refusals,
            StatusCode::BAD_REQUEST,
            "Shipper-Producer must be 32 hex digits",
        );
    };
    if let Some(grant) = &grant {
        let id = producer.to_string();
        if !grant.allows(&id) {
            return refuse(
                refusals,
                StatusCode::FORBIDDEN,
                format!("this token may not write for producer {id}"),
            );
        }
    }
    let sink = match headers.get("shipper-sink").map(|v| v.to_str()) {
        None => String::new(),
        Some(Ok(name)) if shipper_core::log::validate_cursor_name(name).is_ok() => name.to_owned(),
        Some(_) => {
            return refuse(
                refusals,
                StatusCode::BAD_REQUEST,
                "Shipper-Sink must be a sink name (1-128 of A-Z a-z 0-9 _ . -)",
            )
        }
    };
    let (after, from) = match (
        offset_header(&headers, "Shipper-After"),
        offset_header(&headers, "Shipper-From"),
    ) {
        (Ok(after), Ok(from)) => (after, from),
        (Err(message), _) | (_, Err(message)) => {
            return refuse(refusals, StatusCode::BAD_REQUEST, message)
        }
    };
    let dictionary = content_type == DICTIONARY_CONTENT_TYPE;
    if !dictionary && shared.log.is_full() {
        return refuse(
            refusals,
            StatusCode::SERVICE_UNAVAILABLE,
            "the receiver's log is at its disk budget (or its disk is full); try again later",
        );
    }
    let max = if dictionary {
        MAX_DICTIONARY_BYTES
    } else {
        shared.options.max_body_bytes
    };
    let limits = &shared.options.limits;
    let body = match read_body(body, &headers, max, limits, &shared.budget).await {
        Ok(body) => body,
        Err(Refused { status, message }) => return refuse(refusals, status, message),
    };
    if dictionary {
        return receive_dictionary(shared, producer, &headers, &body);
    }
    let (max_chunk_bytes, verify) = (shared.options.max_chunk_bytes, shared.options.verify);
    let checked = {
        let body = body.clone();
        let known = shared.dictionaries.clone();
        let mut decoder = Decoder::with_dictionaries(shared.log.dictionaries());
        tokio::task::spawn_blocking(move || {
            let known = |id| {
                known
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&(producer, id))
            };
            check_frames(&body, max_chunk_bytes, verify, &known, &mut decoder)
        })
        .await
    };
    let frames = match checked {
        Ok(Ok(frames)) => frames,
        Ok(Err((status, message))) => {
            let mut response = refuse(refusals, status, message.text);
            if let Some(id) = message.need_dictionary {
                response
                    .headers_mut()
                    .insert("shipper-need-dictionary", id.into());
            }
            return response;
        }
        Err(panic) => return answer(StatusCode::INTERNAL_SERVER_ERROR, panic.to_string()),
    };
    let first_offset =
        ChunkView::parse(&body[frames[0].0..frames[0].1]).map_or(0, |view| view.first_offset());
    if let Some(declared) = from.filter(|&declared| declared > first_offset) {
        return refuse(
            refusals,
            StatusCode::BAD_REQUEST,
            format!(
                "the request says its data continues from offset {declared}, but its first chunk starts at {first_offset}"
            ),
        );
    }
    let (reply, answered) = oneshot::channel();
    let request = Checked {
        producer,
        sink,
        after,
        from,
        body,
        frames,
        reply,
    };
    if shared.requests.send(request).await.is_err() {
        return answer(StatusCode::SERVICE_UNAVAILABLE, "the receiver is stopping");
    }
    answered
        .await
        .unwrap_or_else(|_| answer(StatusCode::SERVICE_UNAVAILABLE, "the receiver is stopping"))
}

/// Checks every frame of a body: CRC, order, sizes, and that each body
/// holds its declared size (`verify`). Returns their byte ranges.
fn check_frames(
    body: &[u8],
    max_chunk_bytes: usize,
    verify: Verify,
    known: &dyn Fn(u32) -> bool,
    decoder: &mut Decoder,
) -> Result<Vec<(usize, usize)>, (StatusCode, Refusal)> {
    let bad = |status, text: String| {
        Err((
            status,
            Refusal {
                text,
                need_dictionary: None,
            },
        ))
    };
    if body.is_empty() {
        return bad(StatusCode::BAD_REQUEST, "the body holds no chunk".into());
    }
    let mut frames = Vec::new();
    let mut position = 0;
    let mut previous_end = None;
    while position < body.len() {
        let index = frames.len();
        let view = match ChunkView::parse(&body[position..]) {
            Ok(view) => view,
            Err(error) => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    format!("chunk {index} at byte {position}: {error}"),
                )
            }
        };
        if view.is_loss_marker() || view.record_count() == 0 {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("chunk {index} at byte {position} holds no records"),
            );
        }
        if previous_end.is_some_and(|end| view.first_offset() < end) {
            return bad(
                StatusCode::BAD_REQUEST,
                format!(
                    "chunk {index} at byte {position}: offsets not ascending (starts at {}, the previous ended at {})",
                    view.first_offset(),
                    previous_end.unwrap_or(0)
                ),
            );
        }
        if std::str::from_utf8(view.stream()).is_err() {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("chunk {index} at byte {position}: its stream name is not UTF-8"),
            );
        }
        if view.dict_id() != 0 && !known(view.dict_id()) {
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                Refusal {
                    text: format!(
                        "chunk {index} uses dictionary {}, which this producer has not sent yet",
                        view.dict_id()
                    ),
                    need_dictionary: Some(view.dict_id()),
                },
            ));
        }
        if view.record_count() as usize > record_capacity(&view) {
            // Each record takes an offset here: a header may not claim more
            // than its body can hold.
            return bad(
                StatusCode::BAD_REQUEST,
                format!(
                    "chunk {index} at byte {position} declares {} records, more than its {}-byte body can hold",
                    view.record_count(),
                    view.uncompressed_len()
                ),
            );
        }
        if view.uncompressed_len() > max_chunk_bytes {
            return bad(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "chunk {index} declares {} bytes decompressed, more than {max_chunk_bytes}",
                    view.uncompressed_len()
                ),
            );
        }
        let checked = match verify {
            Verify::Frame => check_body(&view),
            Verify::Full => decode_body(&view, decoder).and_then(|body| {
                let mut records = 0u64;
                for record in body.records() {
                    record.map_err(|e| {
                        shipper_core::Error::Corruption(format!("record {records}: {e:?}"))
                    })?;
                    records += 1;
                }
                if records == u64::from(view.record_count()) {
                    Ok(())
                } else {
                    Err(shipper_core::Error::Corruption(format!(
                        "it declares {} records and holds {records}",
                        view.record_count()
                    )))
                }
            }),
        };
        if let Err(error) = checked {
            return bad(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("chunk {index} at byte {position}: its body does not decompress to its declared size: {error}"),
            );
        }
        previous_end = Some(view.end_offset());
        let len = view.frame().len();
        frames.push((position, position + len));
        position += len;
    }
    Ok(frames)
}

/// Why a request is refused, and the dictionary it lacks, if that is why.
struct Refusal {
    text: String,
    need_dictionary: Option<u32>,
}

/// Stores a dictionary a sender uploads (after a 422 naming it). Its id
/// must be the one this receiver's store gives the same bytes (ids come
/// from content), so chunks keep their id when stored here.
fn receive_dictionary(
    shared: &Shared,
    producer: ProducerId,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let Some(id) = headers
        .get("shipper-dictionary")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|&id| id != 0)
    else {
        return refuse(
            &shared.refusals,
            StatusCode::BAD_REQUEST,
            "Shipper-Dictionary must name the dictionary's id",
        );
    };
    if body.is_empty() || body.len() > MAX_DICTIONARY_BYTES {
        return refuse(
            &shared.refusals,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a dictionary is 1 to {MAX_DICTIONARY_BYTES} bytes"),
        );
    }
    if zstd::bulk::Decompressor::with_dictionary(body).is_err() {
        return refuse(
            &shared.refusals,
            StatusCode::BAD_REQUEST,
            "not a zstd dictionary",
        );
    }
    // The id this store would give these bytes, found before anything is
    // written: a refused upload leaves nothing on disk.
    let here = shared.log.dictionaries().id_for(body);
    if here != id {
        return refuse(
            &shared.refusals,
            StatusCode::CONFLICT,
            format!(
                "dictionary {id} would be stored here as {here}: its id does not match its content"
            ),
        );
    }
    match shared.log.dictionaries().insert(body) {
        Ok(stored) if stored == id => {
            shared
                .dictionaries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((producer, id));
            shared
                .counters
                .dictionaries_stored
                .fetch_add(1, Ordering::Relaxed);
            ok_json(format!("{{\"dictionary\":{id}}}\n"))
        }
        Ok(stored) => refuse(
            &shared.refusals,
            StatusCode::CONFLICT,
            format!(
                "dictionary {id} is stored here as {stored}: its id does not match its content"
            ),
        ),
        Err(error) => refuse(
            &shared.refusals,
            StatusCode::SERVICE_UNAVAILABLE,
            error.to_string(),
        ),
    }
}

#[async_trait]
impl Source for ShipperSource {
    fn metrics(&self) -> Vec<shipper_core::metrics::ComponentMetric> {
        let mut metrics = self.counters.listener.metrics();
        metrics.extend(self.counters.requests.metrics());
        metrics.extend(shipper_core::metrics::counters_of(
            &self.counters,
            &[
                (
                    "shipper_source_duplicate_records_total",
                    "Records received again and skipped: already stored (a sender's retry or replay).",
                    &[],
                    |c| &c.duplicate_records,
                ),
                (
                    "shipper_source_declared_gap_records_total",
                    "Offsets a known producer's mark jumped over because its sender declared them acknowledged elsewhere (Shipper-From).",
                    &[],
                    |c| &c.declared_gap_records,
                ),
                (
                    "shipper_source_dictionaries_total",
                    "Compression dictionaries senders uploaded and the receiver stored.",
                    &[],
                    |c| &c.dictionaries_stored,
                ),
            ],
        ));
        metrics
    }

    async fn run(&mut self, cx: &mut SourceContext) -> Result<(), ComponentError> {
        let listener = self
            .listener
            .take()
            .ok_or_else(|| ComponentError::Fatal("shipper source run twice".into()))?;
        let log = cx.emitter.log().clone();
        let mut producers = self.load_marks(&log);
        tracing::info!(source = %self.name, producers = producers.len(), "receiving chunks");
        let (sender, mut requests) = mpsc::channel::<Checked>(64);
        let shared = Shared {
            requests: sender,
            log: log.clone(),
            options: self.options.clone(),
            dictionaries: Arc::default(),
            budget: BodyBudget::new(self.options.limits.max_buffered_bytes),
            counters: self.counters.clone(),
            refusals: Arc::default(),
        };
        let router = Router::new()
            .route(&self.options.path, post(receive))
            .with_state(shared);
        let server = tokio::spawn(crate::listen::http::serve(
            listener,
            router,
            self.options.limits.clone(),
            self.counters.listener.clone(),
            format!("shipper source {}", self.name),
            self.options.tls.clone(),
            cx.shutdown.clone(),
        ));
        let mut answering = tokio::task::JoinSet::new();
        let parked_at_most = self.options.parked_at_most;
        let mut sweep = tokio::time::interval((parked_at_most / 4).max(Duration::from_millis(10)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => self.receive(cx, &log, &mut producers, request, &mut answering)?,
                    None => break,
                },
                _ = sweep.tick() => sweep_parked(&mut producers, parked_at_most),
                () = cx.shutdown.wait() => break,
            }
            while answering.try_join_next().is_some() {}
        }
        // Requests already checked are stored and answered; the server
        // finishes its open requests and stops.
        while let Ok(request) = requests.try_recv() {
            self.receive(cx, &log, &mut producers, request, &mut answering)?;
        }
        sweep_parked(&mut producers, Duration::ZERO);
        drop(requests);
        let _ = server.await;
        while answering.join_next().await.is_some() {}
        Ok(())
    }
}

/// Answers `503` to the parked requests older than `age` (all with zero)
/// and forgets those whose sender stopped waiting.
fn sweep_parked(producers: &mut Marks, age: Duration) {
    for (sender, state) in producers.iter_mut() {
        let high_water = state.high_water;
        state.parked.retain_mut(|(request, since)| {
            if request.reply.is_closed() {
                return false;
            }
            if since.elapsed() < age {
                return true;
            }
            let after = request.after.unwrap_or(0);
            let (reply, _) = oneshot::channel();
            let reply = std::mem::replace(&mut request.reply, reply);
            let mut response = answer(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this request follows offset {after} of {sender}, but nothing reached it (the high-water mark is {high_water}); send it again"
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, "1".parse().expect("valid"));
            let _ = reply.send(response);
            false
        });
    }
}

impl ShipperSource {
    /// Stores a checked request, or parks it until the request it follows
    /// is stored; then stores the parked requests that this one unblocks.
    fn receive(
        &self,
        cx: &SourceContext,
        log: &Log,
        producers: &mut Marks,
        request: Checked,
        answering: &mut tokio::task::JoinSet<()>,
    ) -> Result<(), ComponentError> {
        let sender = SenderId {
            producer: request.producer,
            sink: request.sink.clone(),
        };
        let state = producers
            .entry(sender.clone())
            .or_insert_with(|| Producer::new(0));
        if request.after.is_some_and(|after| after > state.high_water) {
            state.parked.retain(|(parked, _)| !parked.reply.is_closed());
            if state.parked.len() >= MAX_PARKED {
                let _ = request.reply.send(answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{MAX_PARKED} requests of {sender} already wait for the one they follow; send it again"),
                ));
                return Ok(());
            }
            state.parked.push((request, Instant::now()));
            return Ok(());
        }
        self.store(cx, log, producers, request, answering)?;
        loop {
            let state = producers.get_mut(&sender).expect("inserted above");
            let high_water = state.high_water;
            // The earliest of those it unblocks first: they follow each other.
            let Some((ready, _)) = state
                .parked
                .iter()
                .enumerate()
                .filter_map(|(index, (r, _))| r.after.map(|after| (index, after)))
                .filter(|&(_, after)| after <= high_water)
                .min_by_key(|&(_, after)| after)
            else {
                return Ok(());
            };
            let (request, _) = state.parked.swap_remove(ready);
            if request.reply.is_closed() {
                continue;
            }
            self.store(cx, log, producers, request, answering)?;
        }
    }

    /// De-duplicates and appends one checked request, then leaves the
    /// answer to a task that waits for durability.
    fn store(
        &self,
        cx: &SourceContext,
        log: &Log,
        producers: &mut Marks,
        request: Checked,
        answering: &mut tokio::task::JoinSet<()>,
    ) -> Result<(), ComponentError> {
        let Checked {
            producer,
            sink,
            after,
            from,
            body,
            frames,
            reply,
        } = request;
        let sender = SenderId { producer, sink };
        let state = producers
            .entry(sender.clone())
            .or_insert_with(|| Producer::new(0));
        let views: Vec<ChunkView<'_>> = frames
            .iter()
            .map(|&(from, to)| ChunkView::parse(&body[from..to]).expect("checked by the handler"))
            .collect();
        // First pass: nothing is stored unless the whole request is sound.
        let mut duplicate = 0u64;
        let mut first_new = None;
        for (index, view) in views.iter().enumerate() {
            if view.end_offset() <= state.high_water {
                duplicate += u64::from(view.record_count());
            } else if view.first_offset() < state.high_water {
                let _ = reply.send(conflict(
                    "overlap",
                    format!(
                        "chunk {index} [{}, {}) overlaps the high-water mark {} of {sender}",
                        view.first_offset(),
                        view.end_offset(),
                        state.high_water
                    ),
                ));
                return Ok(());
            } else if first_new.is_none() {
                first_new = Some(view.first_offset());
            }
        }
        // The mark may move over offsets above it only when the sender
        // declared them (see the module docs).
        let declared = from.or(after);
        if let Some(first) = first_new.filter(|&first| first > state.high_water) {
            match declared {
                None if state.known => {
                    let _ = reply.send(conflict(
                        "gap",
                        format!(
                            "{sender}'s data here ends at offset {}; this request starts at {first} without declaring the offsets between (Shipper-From)",
                            state.high_water
                        ),
                    ));
                    return Ok(());
                }
                Some(declared) if state.known && declared > state.high_water => {
                    let records = declared - state.high_water;
                    self.counters
                        .declared_gap_records
                        .fetch_add(records, Ordering::Relaxed);
                    // Normal after a sender restarts with its cursor past
                    // chunks that were not for this receiver; worth a look
                    // when it was acknowledged by no one else.
                    if let Some(suppressed) = self.gaps.allow() {
                        tracing::info!(
                            source = %self.name,
                            %sender,
                            high_water = state.high_water,
                            resumes_at = declared,
                            records,
                            suppressed,
                            "a sender resumes above what it stored here: it declares the offsets in between not for this receiver (other components', or acknowledged elsewhere)"
                        );
                    }
                }
                _ => {}
            }
        }
        state.known = true;
        self.counters
            .duplicate_records
            .fetch_add(duplicate, Ordering::Relaxed);
        let source = format!("{}/{sender}", self.name);
        let mut last_ticket = None;
        let (mut records, mut bytes, mut chunks) = (0u64, 0u64, 0u64);
        let before = state.high_water;
        for view in views.iter().filter(|v| v.end_offset() > before) {
            let position = source_position(&source, &view.end_offset().to_le_bytes());
            let chunk = ClosedChunk::reframe(view, &self.name, &position)?;
            let ticket = match log.offer(chunk)? {
                Offer::Queued(ticket) => ticket,
                Offer::QueueFull(chunk) => tokio::task::block_in_place(|| log.append(chunk))?,
            };
            records += u64::from(view.record_count());
            bytes += view.uncompressed_len() as u64;
            chunks += 1;
            state.high_water = view.end_offset();
            last_ticket = Some(ticket);
        }
        cx.emitter.count_stored(records, bytes, chunks);
        let high_water = state.high_water;
        let body = move || {
            format!(
                "{{\"producer\":\"{producer}\",\"high_water\":{high_water},\"stored\":{records},\"duplicate\":{duplicate}}}\n"
            )
        };
        let log = log.clone();
        match last_ticket {
            Some(ticket) => {
                let (written, receiver) = watch::channel(None);
                state.written = receiver;
                // The sender waits for the answer: flush as soon as this is
                // written instead of at the next interval (requests arriving
                // meanwhile share the flush).
                if !log.request_flush() {
                    let log = log.clone();
                    tokio::task::spawn_blocking(move || log.flush());
                }
                answering.spawn(async move {
                    let outcome = async {
                        let end = ticket.written().await?.end;
                        let _ = written.send(Some(end));
                        log.durable(end).await
                    }
                    .await;
                    let _ = reply.send(match outcome {
                        Ok(()) => ok_json(body()),
                        Err(error) => answer(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
                    });
                });
            }
            None => {
                // Only repeats: answer once what they repeat is durable.
                let mut pending = state.written.clone();
                answering.spawn(async move {
                    let end = match pending.wait_for(Option::is_some).await {
                        Ok(end) => end.unwrap_or(0),
                        // The append it repeats failed; the log reports why.
                        Err(_) => log.next_offset(),
                    };
                    let _ = reply.send(match log.durable(end).await {
                        Ok(()) => ok_json(body()),
                        Err(error) => answer(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
                    });
                });
            }
        }
        Ok(())
    }
}

/// A `409` about a producer's mark; `Shipper-Conflict` says which rule.
fn conflict(kind: &'static str, message: String) -> Response {
    let mut response = answer(StatusCode::CONFLICT, message);
    response
        .headers_mut()
        .insert("shipper-conflict", HeaderValue::from_static(kind));
    response
}

fn ok_json(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// The `shipper` source's config: `[sources.NAME] type = "shipper"`. Every key is described in docs/config.md.
#[allow(missing_docs)]
mod config {
    use std::net::SocketAddr;

    use serde::Deserialize;
    use shipper_core::component::Source;

    use super::{ShipperOptions, ShipperSource, Verify};
    use crate::config::{
        duration_ms, BuildContext, BuildError, ByteSize, Checks, Listener, SourceComponent,
    };
    use crate::listen::auth::{Authenticator, InboundAuth};
    use crate::listen::config::{
        check_route_path, default_body_timeout_ms, default_header_timeout_ms,
        default_max_buffered_bytes, default_max_connections, default_min_body_rate, HttpLimits,
    };
    use crate::tls::TlsListenerConfig;
    use std::sync::Arc;

    /// `type = "shipper"`: receives chunks from other shippers' `http` sinks
    /// (shipper's wire protocol, docs/protocol.md): an aggregator.
    #[derive(Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ShipperSourceConfig {
        /// `IP:port` to listen on.
        pub address: SocketAddr,
        #[serde(default = "default_shipper_path")]
        pub path: String,
        /// A bearer token senders must present (the short form of `auth`).
        #[serde(default)]
        pub token: Option<String>,
        /// Bearer tokens senders must present, each optionally bound to
        /// the producers it may write for.
        #[serde(default)]
        pub auth: Option<InboundAuth>,
        #[serde(default = "default_shipper_max_bytes")]
        pub max_body_bytes: ByteSize,
        /// The largest decompressed body of one chunk.
        #[serde(default = "default_shipper_max_bytes")]
        pub max_chunk_bytes: ByteSize,
        /// How far each chunk's body is checked before it is stored.
        #[serde(default)]
        pub verify: Verify,
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
    }

    impl std::fmt::Debug for ShipperSourceConfig {
        /// The token is a secret: never log it.
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ShipperSourceConfig")
                .field("address", &self.address)
                .field("path", &self.path)
                .field("token", &self.token.as_ref().map(|_| "<redacted>"))
                .field("auth", &self.auth)
                .field("max_body_bytes", &self.max_body_bytes)
                .field("max_chunk_bytes", &self.max_chunk_bytes)
                .field("verify", &self.verify)
                .field("limits", &self.http_limits())
                .field("tls", &self.tls)
                .finish()
        }
    }

    fn default_shipper_path() -> String {
        "/v1/chunks".into()
    }

    fn default_shipper_max_bytes() -> ByteSize {
        ByteSize::mib(64)
    }

    impl ShipperSourceConfig {
        /// The tokens senders must present: `auth`, or `token` as its short form.
        pub fn inbound_auth(&self) -> Option<InboundAuth> {
            self.auth
                .clone()
                .or_else(|| self.token.clone().map(InboundAuth::bearer))
        }

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

    impl crate::config::Named for ShipperSourceConfig {
        const TYPE: &'static str = "shipper";
    }

    #[async_trait::async_trait]
    impl SourceComponent for ShipperSourceConfig {
        fn check(&self, check: &mut dyn Checks) {
            self.http_limits().check(self.max_body_bytes, check);
            check_route_path(check, &self.path);
            if let Some(tls) = &self.tls {
                tls.check(check);
            }
            if self.token.as_deref().is_some_and(str::is_empty) {
                check.error(&["token"], "must not be empty (leave it out for no token)");
            }
            if let Some(auth) = &self.auth {
                if self.token.is_some() {
                    check.error(&["token"], "give `token` or `auth`, not both");
                }
                auth.check(check, true);
            }
            for (key, size) in [
                ("max_body_bytes", self.max_body_bytes),
                ("max_chunk_bytes", self.max_chunk_bytes),
            ] {
                if size.bytes() == 0 || size.bytes() > 1 << 30 {
                    check.error(&[key], "must be between 1 byte and 1GiB");
                }
            }
        }

        fn listener(&self) -> Option<(&'static str, Listener)> {
            Some(("address", Listener::Tcp(self.address)))
        }

        fn secured(&self) -> bool {
            self.tls.is_some() || self.inbound_auth().is_some()
        }

        /// Received chunks are stored as they are, compressed: no
        /// transform can read them.
        fn transformable(&self) -> bool {
            false
        }

        async fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
            let options = ShipperOptions {
                address: self.address,
                path: self.path.clone(),
                auth: self
                    .inbound_auth()
                    .map(|auth| Authenticator::new(&auth).map(Arc::new))
                    .transpose()
                    .map_err(|e| format!("auth: {e}"))?,
                max_body_bytes: usize::try_from(self.max_body_bytes.bytes()).unwrap_or(usize::MAX),
                max_chunk_bytes: usize::try_from(self.max_chunk_bytes.bytes())
                    .unwrap_or(usize::MAX),
                verify: self.verify,
                limits: self.http_limits().limits(),
                tls: crate::tls::server_tls(self.tls.as_ref())?,
                ..ShipperOptions::default()
            };
            let source = ShipperSource::bind(options, cx.name)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Box::new(source))
        }
    }
}

pub use config::ShipperSourceConfig;
