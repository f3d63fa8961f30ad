//! `nats`: publishes records to a NATS JetStream stream, exactly once.
//!
//! # Messages
//!
//! By default every record becomes one JetStream message: the payload is
//! the record's bytes, and the headers say where it comes from:
//!
//! | header | value |
//! | --- | --- |
//! | `Nats-Msg-Id` | `<producer>-<offset>` |
//! | `Shipper-Producer` | the producer id (32 hex digits) |
//! | `Shipper-Offset` | the record's offset in the producer's log |
//! | `Shipper-Stream` | the record's stream (collection) name |
//!
//! With [`MessagePer::Chunk`] every stored chunk becomes one message
//! instead: the frame as stored (see `docs/format.md`), `Nats-Msg-Id`
//! `<producer>-<first>-<end>`, `Shipper-Offset` the first offset and
//! `Shipper-End-Offset` one past the last.
//!
//! A sink publishes to the subject `<subject>.<producer>`, one subject per
//! producer, so that a stream capturing `<subject>.*` collects every
//! shipper's records and the stream itself can say what one producer has
//! stored. A created stream captures `<subject>.*`.
//!
//! Publishing is pipelined: up to `max_pending` messages are in flight
//! before the sink awaits the oldest acknowledgement, and a delivery is
//! acknowledged to the runtime only once every message of it is
//! acknowledged by JetStream (a `duplicate` acknowledgement counts: the
//! message is stored). A timeout or a lost connection is retryable.
//!
//! # Exactly once
//!
//! Two mechanisms, one inside the other.
//!
//! * **The duplicate window.** `Nats-Msg-Id` is a function of the record
//!   (producer and offset), so JetStream drops a republished message whose
//!   first copy it stored less than the stream's duplicate window ago. That
//!   covers the common case, a batch offered again seconds later (a retry,
//!   a restart), and messages still in flight when the sink looks.
//! * **The stream as the high-water mark.** A republish later than the
//!   window would be stored twice, so the sink does not rely on the window
//!   alone. Before the first delivery (in `open`) and before retrying a
//!   failed one, it reads back what the stream already holds of this
//!   producer from the batch's first offset `F` on, and skips those
//!   records. Everything below `F` was acknowledged before anything at or
//!   above `F` was published, so the messages at or above `F` form the tail
//!   of the producer's subject: the sink reads the subject's last message
//!   (`STREAM.MSG.GET` with `last_by_subj`); if its offset is below `F`
//!   nothing is stored and that single request was all. Otherwise it finds,
//!   going back in doubling steps with `next_by_subj`, a sequence before
//!   the tail, and reads the tail's headers with an ordered consumer. The
//!   tail is at most one delivery long.
//!
//! The answer is a set of offsets, not one number: pipelined publishes can
//! leave a hole (a message lost with a connection while later ones, sent
//! after the client reconnected, were stored), and the set fills exactly
//! the holes. The state lives in the stream, next to the data, so a kill
//! at any point — between a publish and its acknowledgement, or between
//! the acknowledgement and the runtime's cursor commit — leaves nothing to
//! disagree with.
//!
//! Two sinks of one shipper must not publish the same subject on one server
//! (the configuration refuses it): they would read each other's tails.

mod config;

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use async_nats::header::{HeaderName, NATS_MESSAGE_ID};
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::context::{
    GetStreamByNameErrorKind, GetStreamErrorKind, PublishAckFuture,
};
use async_nats::jetstream::stream::{Config as StreamConfig, LastRawMessageErrorKind, StorageType};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, stream::Stream};
use async_nats::{HeaderMap, HeaderValue, Subject};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use shipper_core::chunk::{decode_body, Decoder};
use shipper_core::component::{ComponentError, Sink, SinkContext};
use shipper_core::log::StoredChunk;

/// Header naming the producer (32 hex digits).
pub const PRODUCER_HEADER: &str = "Shipper-Producer";
/// Header with the record's offset (of a chunk message: its first offset).
pub const OFFSET_HEADER: &str = "Shipper-Offset";
/// Header of a chunk message: one past its last offset.
pub const END_OFFSET_HEADER: &str = "Shipper-End-Offset";
/// Header with the record's stream (collection) name.
pub const STREAM_HEADER: &str = "Shipper-Stream";

pub use config::NatsSinkConfig;

/// What one JetStream message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessagePer {
    /// One record, as its payload.
    #[default]
    Record,
    /// One stored chunk, its frame as is (compressed).
    Chunk,
}

/// Options of a [`NatsSink`].
#[derive(Debug, Clone)]
pub struct NatsSinkOptions {
    /// Server URL, `nats://host:port` or `tls://host:port`; several,
    /// comma-separated, for a cluster.
    pub url: String,
    /// The subject prefix: the sink publishes to `<subject>.<producer>`.
    pub subject: String,
    /// The stream. Without a name: the stream that captures the subject, or
    /// when one is created, the subject with `.` replaced by `_`.
    pub stream: Option<String>,
    /// Create the stream (file storage, capturing `<subject>.*`) when no
    /// stream captures the subject.
    pub create_stream: bool,
    /// The duplicate window of a stream the sink creates.
    pub duplicate_window: Duration,
    /// Record or chunk messages.
    pub message: MessagePer,
    /// Messages published and not yet acknowledged, at most.
    pub max_pending: usize,
    /// Bound on connecting, on each JetStream request and on waiting for an
    /// acknowledgement.
    pub timeout: Duration,
    /// TLS (required when set): whom to trust, a client certificate.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// A NATS credentials file (JWT and nkey seed).
    pub credentials_file: Option<std::path::PathBuf>,
}

impl NatsSinkOptions {
    /// Options with the defaults: the stream created if missing with a two
    /// minute duplicate window, one message per record, 1024 in flight, a
    /// ten second timeout.
    pub fn new(url: impl Into<String>, subject: impl Into<String>) -> Self {
        NatsSinkOptions {
            url: url.into(),
            subject: subject.into(),
            stream: None,
            create_stream: true,
            duplicate_window: Duration::from_secs(120),
            message: MessagePer::Record,
            max_pending: 1024,
            timeout: Duration::from_secs(10),
            tls: None,
            credentials_file: None,
        }
    }

    /// The name of the stream the sink creates when none is configured.
    pub fn default_stream_name(&self) -> String {
        self.subject.replace(['.', '/', '\\'], "_")
    }
}

/// Publishes to NATS JetStream; see the module docs.
pub struct NatsSink {
    options: NatsSinkOptions,
    decoder: Decoder,
    connection: Option<Connection>,
    /// What the stream holds of this producer from the next delivery's
    /// first offset on: read by `open`, emptied by a delivery that
    /// succeeded, unknown (`None`) after one that failed.
    stored: Option<StoredRanges>,
}

impl fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSink")
            .field("options", &self.options)
            .field("subject", &self.connection.as_ref().map(|c| &c.subject))
            .field("stored", &self.stored)
            .finish_non_exhaustive()
    }
}

/// An open connection and what the sink publishes to.
struct Connection {
    jetstream: jetstream::Context,
    stream: Stream,
    /// `<subject>.<producer>`.
    subject: Subject,
    producer: String,
    /// The server's largest message (payload and headers).
    max_payload: usize,
}

impl NatsSink {
    /// A sink with `options`; checks the url, the subject and stream names.
    pub fn new(options: NatsSinkOptions) -> Result<Self, ComponentError> {
        check_url(&options.url).map_err(ComponentError::Fatal)?;
        check_subject(&options.subject).map_err(ComponentError::Fatal)?;
        if let Some(stream) = &options.stream {
            check_stream_name(stream).map_err(ComponentError::Fatal)?;
        }
        if options.max_pending == 0 {
            return Err(ComponentError::Fatal(
                "max_pending must be at least 1".into(),
            ));
        }
        Ok(NatsSink {
            options,
            decoder: Decoder::default(),
            connection: None,
            stored: None,
        })
    }
}

/// The stream that stores `subject`, created if `options` allow.
async fn stream_for(
    options: &NatsSinkOptions,
    jetstream: &jetstream::Context,
    subject: &str,
) -> Result<Stream, ComponentError> {
    match jetstream.stream_by_subject(subject).await {
        Ok(name) => {
            if let Some(wanted) = options.stream.as_deref().filter(|w| *w != name) {
                return Err(ComponentError::Fatal(format!(
                        "subject {subject} is stored by stream {name}, not by the configured stream {wanted}"
                    )));
            }
            jetstream
                .get_stream(&name)
                .await
                .map_err(|e| retryable(&format!("looking up stream {name}"), e))
        }
        Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => {
            let name = options
                .stream
                .clone()
                .unwrap_or_else(|| options.default_stream_name());
            let capture = format!("{}.*", options.subject);
            match jetstream.get_stream(&name).await {
                    Ok(_) => {
                        return Err(ComponentError::Fatal(format!(
                            "stream {name} exists but does not capture subject {subject}: its subjects must include {capture} (or {}.>)",
                            options.subject
                        )))
                    }
                    Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => {}
                    Err(e) => return Err(retryable(&format!("looking up stream {name}"), e)),
                }
            if !options.create_stream {
                return Err(ComponentError::Fatal(format!(
                        "no stream captures subject {subject} and create_stream is false: create one whose subjects include {capture}"
                    )));
            }
            let created = jetstream
                .create_stream(StreamConfig {
                    name: name.clone(),
                    subjects: vec![capture.clone()],
                    storage: StorageType::File,
                    duplicate_window: options.duplicate_window,
                    ..StreamConfig::default()
                })
                .await;
            match created {
                Ok(stream) => {
                    tracing::info!(stream = %name, subjects = %capture, duplicate_window = ?options.duplicate_window, "nats sink: stream created");
                    Ok(stream)
                }
                // A server that refuses the stream (overlapping subjects, a
                // name in use) will refuse it again.
                Err(e)
                    if matches!(
                        e.kind(),
                        jetstream::context::CreateStreamErrorKind::JetStream(_)
                    ) =>
                {
                    Err(ComponentError::Fatal(format!(
                        "creating stream {name} for {capture}: {e}"
                    )))
                }
                Err(e) => Err(retryable(&format!("creating stream {name}"), e)),
            }
        }
        Err(e) => Err(retryable(
            &format!("looking up the stream of subject {subject}"),
            e,
        )),
    }
}

#[async_trait]
impl Sink for NatsSink {
    async fn open(&mut self, cx: &SinkContext) -> Result<(), ComponentError> {
        self.decoder = cx.decoder();
        let options = &self.options;
        let producer = cx.producer_id.to_string();
        let subject = format!("{}.{producer}", options.subject);
        let mut connect = async_nats::ConnectOptions::new();
        if let Some(path) = &options.credentials_file {
            connect = connect.credentials_file(path).await.map_err(|e| {
                ComponentError::Fatal(format!("credentials_file {}: {e}", path.display()))
            })?;
        }
        if let Some(tls) = &options.tls {
            connect = connect
                .require_tls(true)
                .tls_client_config(rustls::ClientConfig::clone(tls));
        }
        let client = connect
            .name(format!("shipper sink {}", cx.name))
            .connection_timeout(options.timeout)
            .request_timeout(Some(options.timeout))
            .connect(options.url.as_str())
            .await
            .map_err(|e| {
                let message = format!("connecting to {}: {e}", options.url);
                if e.kind() == async_nats::ConnectErrorKind::ServerParse {
                    ComponentError::Fatal(message)
                } else {
                    ComponentError::Retryable(message)
                }
            })?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(options.timeout)
            .ack_timeout(options.timeout)
            .max_ack_inflight(options.max_pending)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let stream = stream_for(options, &jetstream, &subject).await?;
        let connection = Connection {
            jetstream,
            stream,
            subject: Subject::from(subject),
            producer,
            max_payload: client.server_info().max_payload,
        };
        self.stored = None;
        let connection = self.connection.insert(connection);
        let stored = connection
            .read_stored(cx.committed, self.options.timeout)
            .await?;
        if !stored.is_empty() {
            tracing::info!(sink = %cx.name, subject = %connection.subject, records = stored.len(), "nats sink: records at or above the cursor are stored already and will be skipped");
        }
        self.stored = Some(stored);
        Ok(())
    }

    async fn deliver(&mut self, chunks: &[StoredChunk]) -> Result<(), ComponentError> {
        let Some(first) = chunks.first().map(StoredChunk::first_offset) else {
            return Ok(());
        };
        let Some(connection) = &mut self.connection else {
            return Err(ComponentError::Fatal(
                "nats sink: deliver before open".into(),
            ));
        };
        let stored = match self.stored.take() {
            Some(stored) => stored,
            None => {
                // After a failure: the stream may have been deleted or
                // replaced meanwhile, and may hold part of this delivery.
                connection.stream = stream_for(
                    &self.options,
                    &connection.jetstream,
                    connection.subject.as_str(),
                )
                .await?;
                connection.read_stored(first, self.options.timeout).await?
            }
        };
        let connection = &*connection;
        let mut publisher = Publisher {
            connection,
            pending: VecDeque::new(),
            max_pending: self.options.max_pending,
            timeout: self.options.timeout,
            duplicates: 0,
        };
        let mut skipped = 0;
        for chunk in chunks {
            let view = chunk.view();
            if view.is_loss_marker() {
                continue;
            }
            let offsets = chunk.first_offset()..chunk.end_offset();
            let coverage = stored.coverage(offsets.clone());
            if coverage == Coverage::Full {
                skipped += offsets.end - offsets.start;
                continue;
            }
            if self.options.message == MessagePer::Chunk {
                if coverage == Coverage::None {
                    publisher
                        .publish(
                            offsets.start,
                            chunk_headers(&connection.producer, &view.stream_str(), offsets),
                            Bytes::copy_from_slice(chunk.frame()),
                        )
                        .await?;
                    continue;
                }
                // Only after `message` changed from "record" to "chunk"
                // across a crash: part of the chunk is stored as records.
                tracing::warn!(subject = %connection.subject, first = offsets.start, end = offsets.end, "nats sink: chunk partly stored as record messages; its other records go out as record messages too");
            }
            let body = decode_body(&view, &mut self.decoder)
                .map_err(|e| ComponentError::undecodable(offsets.start, e))?;
            let bytes = Bytes::copy_from_slice(body.bytes());
            let base = body.bytes().as_ptr() as usize;
            let stream = HeaderValue::from(view.stream_str().into_owned());
            for (offset, record) in offsets.clone().zip(body.records()) {
                let record = record.map_err(|e| ComponentError::undecodable(offsets.start, e))?;
                if stored.contains(offset) {
                    skipped += 1;
                    continue;
                }
                let start = record.as_ptr() as usize - base;
                let payload = bytes.slice(start..start + record.len());
                publisher
                    .publish(
                        offset,
                        record_headers(&connection.producer, &stream, offset),
                        payload,
                    )
                    .await?;
            }
        }
        let duplicates = publisher.finish().await?;
        if skipped > 0 || duplicates > 0 {
            tracing::info!(subject = %connection.subject, skipped, duplicates, "nats sink: records already stored were not stored again");
        }
        // Nothing at or above the next delivery's first offset is published yet.
        self.stored = Some(StoredRanges::default());
        Ok(())
    }

    async fn close(&mut self) -> Result<(), ComponentError> {
        // Every delivery awaited its acknowledgements: nothing is in flight.
        self.connection = None;
        Ok(())
    }
}

/// Pipelined publishes of one delivery.
struct Publisher<'a> {
    connection: &'a Connection,
    /// Published, acknowledgement not yet awaited: (offset, its future).
    pending: VecDeque<(u64, PublishAckFuture)>,
    max_pending: usize,
    timeout: Duration,
    duplicates: u64,
}

impl Publisher<'_> {
    /// Publishes one message; awaits the oldest acknowledgement when
    /// `max_pending` are in flight.
    async fn publish(
        &mut self,
        offset: u64,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), ComponentError> {
        let size = payload.len() + encoded_len(&headers);
        if size > self.connection.max_payload {
            return Err(ComponentError::Fatal(format!(
                "the message for offset {offset} is {size} bytes with its headers; the server takes {} at most (raise max_payload)",
                self.connection.max_payload
            )));
        }
        let published = tokio::time::timeout(
            self.timeout,
            self.connection.jetstream.publish_with_headers(
                self.connection.subject.clone(),
                headers,
                payload,
            ),
        )
        .await
        .map_err(|_| ComponentError::Retryable(format!("publishing offset {offset}: timed out")))?
        .map_err(|e| retryable(&format!("publishing offset {offset}"), e))?;
        self.pending.push_back((offset, published));
        if self.pending.len() >= self.max_pending {
            self.await_oldest().await?;
        }
        Ok(())
    }

    async fn await_oldest(&mut self) -> Result<(), ComponentError> {
        if let Some((offset, pending)) = self.pending.pop_front() {
            let ack = pending.await.map_err(|e| {
                retryable(&format!("JetStream acknowledgement of offset {offset}"), e)
            })?;
            if ack.duplicate {
                self.duplicates += 1;
            }
        }
        Ok(())
    }

    /// Awaits every acknowledgement; returns how many were duplicates.
    async fn finish(mut self) -> Result<u64, ComponentError> {
        while !self.pending.is_empty() {
            self.await_oldest().await?;
        }
        Ok(self.duplicates)
    }
}

impl Connection {
    /// The offsets at or above `from` that the stream holds on this
    /// producer's subject (see "Exactly once" in the module docs).
    async fn read_stored(
        &self,
        from: u64,
        timeout: Duration,
    ) -> Result<StoredRanges, ComponentError> {
        let subject = self.subject.as_str();
        let last = match self.stream.get_last_raw_message_by_subject(subject).await {
            Ok(message) => message,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                return Ok(StoredRanges::default())
            }
            Err(e) => {
                return Err(retryable(
                    &format!("reading the last message of {subject}"),
                    e,
                ))
            }
        };
        let last_offsets = message_offsets(&last.headers, last.sequence)?;
        if last_offsets.end <= from {
            return Ok(StoredRanges::default());
        }
        // A sequence before the first message at or above `from`: the tail
        // holds at least `end - from` sequences of this subject, and other
        // producers' messages may sit between them.
        let mut step = last_offsets.end - from;
        let start = loop {
            let probe = last.sequence.saturating_sub(step).max(1);
            if probe == 1 {
                break 1;
            }
            let message = self
                .stream
                .raw_message_builder()
                .sequence(probe)
                .next_by_subject(subject.to_owned())
                .send()
                .await
                .map_err(|e| retryable(&format!("reading {subject} from sequence {probe}"), e))?;
            if message_offsets(&message.headers, message.sequence)?.start < from {
                break message.sequence;
            }
            step = step.saturating_mul(2);
        };
        let consumer = self
            .stream
            .create_consumer(OrderedConfig {
                filter_subject: subject.to_owned(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                headers_only: true,
                ..OrderedConfig::default()
            })
            .await
            .map_err(|e| retryable(&format!("reading {subject}"), e))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| retryable(&format!("reading {subject}"), e))?;
        let mut stored = Vec::new();
        loop {
            let message = tokio::time::timeout(timeout, messages.next())
                .await
                .map_err(|_| ComponentError::Retryable(format!("reading {subject}: timed out")))?
                .ok_or_else(|| {
                    ComponentError::Retryable(format!("reading {subject}: the consumer ended"))
                })?
                .map_err(|e| retryable(&format!("reading {subject}"), e))?;
            let sequence = message
                .info()
                .map_err(|e| retryable(&format!("reading {subject}"), e))?
                .stream_sequence;
            let headers = message.headers.clone().unwrap_or_default();
            let offsets = message_offsets(&headers, sequence)?;
            if offsets.end > from {
                stored.push(offsets);
            }
            if sequence >= last.sequence {
                break;
            }
        }
        Ok(StoredRanges::from_unsorted(stored))
    }
}

/// The offsets a stored message names, from its headers.
fn message_offsets(headers: &HeaderMap, sequence: u64) -> Result<Range<u64>, ComponentError> {
    offset_range(headers).ok_or_else(|| {
        ComponentError::Fatal(format!(
            "message {sequence} on this producer's subject has no valid {OFFSET_HEADER} header: something other than this shipper publishes to it"
        ))
    })
}

fn offset_range(headers: &HeaderMap) -> Option<Range<u64>> {
    let number = |name: &str| -> Option<Option<u64>> {
        match headers.get(name) {
            None => Some(None),
            Some(value) => value.as_str().parse().ok().map(Some),
        }
    };
    let first = number(OFFSET_HEADER)??;
    let end = number(END_OFFSET_HEADER)?.unwrap_or(first + 1);
    (first < end).then_some(first..end)
}

fn record_headers(producer: &str, stream: &HeaderValue, offset: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(NATS_MESSAGE_ID, format!("{producer}-{offset}"));
    headers.insert(HeaderName::from_static(PRODUCER_HEADER), producer);
    headers.insert(HeaderName::from_static(OFFSET_HEADER), offset.to_string());
    headers.insert(HeaderName::from_static(STREAM_HEADER), stream.clone());
    headers
}

fn chunk_headers(producer: &str, stream: &str, offsets: Range<u64>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        NATS_MESSAGE_ID,
        format!("{producer}-{}-{}", offsets.start, offsets.end),
    );
    headers.insert(HeaderName::from_static(PRODUCER_HEADER), producer);
    headers.insert(
        HeaderName::from_static(OFFSET_HEADER),
        offsets.start.to_string(),
    );
    headers.insert(
        HeaderName::from_static(END_OFFSET_HEADER),
        offsets.end.to_string(),
    );
    headers.insert(HeaderName::from_static(STREAM_HEADER), stream);
    headers
}

/// An upper bound on the bytes `headers` take on the wire
/// (`NATS/1.0\r\n`, `Name: value\r\n` each, `\r\n`).
fn encoded_len(headers: &HeaderMap) -> usize {
    let fields: usize = headers
        .iter()
        .map(|(name, values)| {
            values
                .iter()
                .map(|value| AsRef::<[u8]>::as_ref(name).len() + value.as_str().len() + 4)
                .sum::<usize>()
        })
        .sum();
    12 + fields
}

fn retryable(what: &str, error: impl fmt::Display) -> ComponentError {
    ComponentError::Retryable(format!("{what}: {error}"))
}

/// A server url the client connects to: parsed as `connect` parses it
/// (which refuses a url it cannot parse for good, at the first `open`).
/// One server: `connect` takes the text as one url, not a list.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.contains(',') {
        return Err(format!(
            "url {url:?}: one server url, not a list (the client does not split it at commas)"
        ));
    }
    url.parse::<async_nats::ServerAddr>()
        .map(drop)
        .map_err(|error| format!("url {url:?}: {error}"))
}

/// A subject the sink can append `.<producer>` to: no wildcards, no
/// whitespace, no empty tokens.
pub fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("subject must not be empty".into());
    }
    if subject.chars().any(char::is_whitespace) {
        return Err(format!("subject {subject:?} must not contain whitespace"));
    }
    for token in subject.split('.') {
        match token {
            "" => return Err(format!("subject {subject:?} has an empty token")),
            "*" | ">" => {
                return Err(format!(
                    "subject {subject:?} must not hold wildcards: the sink publishes to <subject>.<producer>"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// A valid JetStream stream name.
pub fn check_stream_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("stream must not be empty".into());
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c))
    {
        return Err(format!(
            "stream {name:?} must not contain whitespace, '.', '*', '>', '/' or '\\'"
        ));
    }
    Ok(())
}

/// How much of an offset range is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coverage {
    None,
    Partial,
    Full,
}

/// Offset ranges, sorted, disjoint and not adjacent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct StoredRanges(Vec<Range<u64>>);

impl StoredRanges {
    fn from_unsorted(mut ranges: Vec<Range<u64>>) -> Self {
        ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
        for range in ranges {
            match merged.last_mut() {
                Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
                _ => merged.push(range),
            }
        }
        StoredRanges(merged)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of offsets.
    fn len(&self) -> u64 {
        self.0.iter().map(|r| r.end - r.start).sum()
    }

    /// The first range that ends after `offset`.
    fn after(&self, offset: u64) -> Option<&Range<u64>> {
        self.0.get(self.0.partition_point(|r| r.end <= offset))
    }

    fn contains(&self, offset: u64) -> bool {
        self.after(offset).is_some_and(|r| r.start <= offset)
    }

    fn coverage(&self, offsets: Range<u64>) -> Coverage {
        match self.after(offsets.start) {
            Some(r) if r.start <= offsets.start && offsets.end <= r.end => Coverage::Full,
            Some(r) if r.start < offsets.end => Coverage::Partial,
            _ => Coverage::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_as_connect_parses_them() {
        for good in [
            "nats://127.0.0.1:4222",
            "tls://nats.example.com:4222",
            "nats://[::1]:4222",
        ] {
            assert_eq!(check_url(good), Ok(()), "{good}");
        }
        for bad in [
            "nats://host:port",
            "nats://a:4222,nats://b:4222",
            "http://x:4222",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stored_ranges_merge_and_answer_coverage() {
        let stored = StoredRanges::from_unsorted(vec![12..13, 10..11, 11..12, 20..25, 14..15]);
        assert_eq!(stored.0, [10..13, 14..15, 20..25]);
        assert_eq!(stored.len(), 9);
        for (offset, expected) in [
            (9, false),
            (10, true),
            (12, true),
            (13, false),
            (14, true),
            (24, true),
            (25, false),
        ] {
            assert_eq!(stored.contains(offset), expected, "{offset}");
        }
        let cases = [
            (0..10, Coverage::None),
            (10..13, Coverage::Full),
            (11..12, Coverage::Full),
            (12..14, Coverage::Partial),
            (13..14, Coverage::None),
            (13..21, Coverage::Partial),
            (20..25, Coverage::Full),
            (25..30, Coverage::None),
        ];
        for (range, expected) in cases {
            assert_eq!(stored.coverage(range.clone()), expected, "{range:?}");
        }
        assert_eq!(StoredRanges::default().coverage(0..5), Coverage::None);
    }

    #[test]
    fn offsets_come_from_record_and_chunk_headers() {
        let stream = HeaderValue::from("app".to_owned());
        let record = record_headers("ab", &stream, 41);
        assert_eq!(offset_range(&record), Some(41..42));
        assert_eq!(record.get(NATS_MESSAGE_ID).unwrap().as_str(), "ab-41");
        let chunk = chunk_headers("ab", "app", 7..19);
        assert_eq!(offset_range(&chunk), Some(7..19));
        assert_eq!(chunk.get(NATS_MESSAGE_ID).unwrap().as_str(), "ab-7-19");
        let mut bad = HeaderMap::new();
        bad.insert(OFFSET_HEADER, "x");
        assert_eq!(offset_range(&bad), None);
        assert_eq!(offset_range(&HeaderMap::new()), None);
    }

    #[test]
    fn subjects_and_stream_names_are_checked() {
        for good in ["logs", "logs.app", "a-b_c.d"] {
            assert_eq!(check_subject(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "logs.*",
            "logs.>",
            "logs..app",
            ".logs",
            "logs.",
            "lo gs",
        ] {
            assert!(check_subject(bad).is_err(), "{bad}");
        }
        assert_eq!(check_stream_name("LOGS_app-1"), Ok(()));
        for bad in ["", "a.b", "a b", "a*", "a/b"] {
            assert!(check_stream_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            NatsSinkOptions::new("nats://x", "logs.app").default_stream_name(),
            "logs_app"
        );
    }
}
