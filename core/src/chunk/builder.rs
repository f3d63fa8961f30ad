//! The chunk builder: collects records without a per-record allocation and
//! closes a chunk at a size or a linger time, compressing it once, with a
//! context it keeps (in the producing thread, or handed to the emitter's
//! compression pool as an `OpenChunk`).

use std::time::{Duration, Instant};

use super::dictionary::{Dictionaries, DictionaryTraining};
use super::frame::{BodyLayout, ChunkView, HeaderFields, MAX_FRAME_LEN};
use super::{Codec, Compression};
use crate::{Error, Result};
use std::sync::{Arc, Mutex};

/// Limits and codec of a [`ChunkBuilder`].
#[derive(Debug, Clone)]
pub struct ChunkOptions {
    /// A chunk closes once its uncompressed body reaches this size.
    pub max_bytes: usize,
    /// A chunk closes this long after its first record (see [`ChunkBuilder::poll`]).
    pub linger: Duration,
    /// Codec and level.
    pub compression: Compression,
    /// Larger records are refused with [`Error::RecordTooLarge`].
    pub max_record_bytes: usize,
    /// Train a zstd dictionary from the stream's first records and compress
    /// later chunks with it (see [`super::dictionary`]); needs a store
    /// ([`ChunkBuilder::set_dictionaries`]) and zstd.
    pub dictionary: Option<DictionaryTraining>,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions {
            max_bytes: 256 * 1024,
            linger: Duration::from_millis(5),
            compression: Compression::default(),
            max_record_bytes: 16 * 1024 * 1024,
            dictionary: None,
        }
    }
}

/// A closed, compressed chunk on its way to the log: a complete frame whose
/// first offset and CRC the log writer stamps when it appends it.
#[derive(Debug)]
pub struct ClosedChunk {
    frame: Vec<u8>,
    /// CRC of the frame after the offset field, computed here, in the
    /// producing thread, so the single writer thread does not have to.
    tail_crc: u32,
    record_count: u32,
    uncompressed_len: usize,
}

impl ClosedChunk {
    /// Records in the chunk.
    pub fn record_count(&self) -> u32 {
        self.record_count
    }
    /// Bytes of the uncompressed body (record bytes plus framing).
    pub fn uncompressed_len(&self) -> usize {
        self.uncompressed_len
    }
    /// Bytes of the frame as it will be stored.
    pub fn frame_len(&self) -> usize {
        self.frame.len()
    }
    /// How its records are laid out in the body (the frame's flag byte).
    pub fn layout(&self) -> super::frame::BodyLayout {
        if self.frame[15] & super::frame::FLAG_LENGTH_PREFIXED != 0 {
            super::frame::BodyLayout::LengthPrefixed
        } else {
            super::frame::BodyLayout::Lines
        }
    }
    /// The frame (offset and CRC not yet stamped).
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }
    /// Takes the frame.
    pub fn into_frame(self) -> Vec<u8> {
        self.frame
    }
    /// A chunk made from `view`, a chunk of another log (received by an
    /// aggregator): the same stream, timestamps, codec, layout and
    /// compressed body, now under `component` and with `source_position`.
    /// The log gives it its own offsets when it is appended; nothing is
    /// decompressed or recompressed.
    pub fn reframe(
        view: &ChunkView<'_>,
        component: &str,
        source_position: &[u8],
    ) -> Result<ClosedChunk> {
        if view.is_loss_marker() {
            return Err(Error::Config("a loss marker cannot be stored again".into()));
        }
        check_name(component, "component names are at most 255 bytes")?;
        if source_position.len() > u16::MAX as usize {
            return Err(Error::Config(format!(
                "source position of {} bytes exceeds 65535",
                source_position.len()
            )));
        }
        let stream = std::str::from_utf8(view.stream())
            .map_err(|_| Error::Config("the chunk's stream name is not UTF-8".into()))?;
        let body = view.body();
        let header = HeaderFields {
            codec: view.codec(),
            layout: view.layout(),
            record_count: view.record_count(),
            dict_id: view.dict_id(),
            min_ts: view.min_ts(),
            max_ts: view.max_ts(),
            uncompressed_len: view.uncompressed_len() as u32,
            stream,
            component,
            source_position,
        };
        let mut frame = Vec::with_capacity(header.header_len() + body.len());
        header.write(body.len(), &mut frame);
        frame.extend_from_slice(body);
        Ok(ClosedChunk {
            tail_crc: super::frame::tail_crc(&frame),
            frame,
            record_count: view.record_count(),
            uncompressed_len: view.uncompressed_len(),
        })
    }

    pub(crate) fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.frame
    }
    pub(crate) fn tail_crc(&self) -> u32 {
        self.tail_crc
    }
}

/// Collects the records of one stream into chunks.
///
/// Records that are single lines (no `\n`) are stored newline-terminated so
/// that a stored body is NDJSON as it is; the first multi-line record turns
/// the chunk being built into a length-prefixed one (converted once, in place).
pub struct ChunkBuilder {
    options: ChunkOptions,
    stream: String,
    component: String,
    body: Vec<u8>,
    layout: BodyLayout,
    record_count: u32,
    min_ts: u64,
    max_ts: u64,
    source_position: Vec<u8>,
    opened_at: Option<Instant>,
    /// Shared with whoever compresses this builder's chunks (the builder
    /// itself in [`ChunkBuilder::finish`], or an emitter's compression
    /// thread); replaced when a dictionary is trained.
    compressor: Option<Arc<Mutex<zstd::bulk::Compressor<'static>>>>,
    level: i32,
    scratch: Vec<u8>,
    /// A body buffer given back after compression, for the next chunk.
    spare: Vec<Vec<u8>>,
    /// Where a trained dictionary goes, when training is on.
    dictionaries: Option<Arc<Dictionaries>>,
    /// Copies of the first records, back to back, and their lengths, until
    /// the dictionary is trained.
    samples: Option<(Vec<u8>, Vec<usize>)>,
    /// The dictionary the compressor uses (0: none), and its bytes.
    dict_id: u32,
    dictionary: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for ChunkBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkBuilder")
            .field("stream", &self.stream)
            .field("component", &self.component)
            .field("records", &self.record_count)
            .field("bytes", &self.body.len())
            .finish()
    }
}

fn check_name(name: &str, what: &'static str) -> Result<()> {
    if name.len() > u8::MAX as usize {
        return Err(Error::InvalidName {
            name: name.to_owned(),
            reason: what,
        });
    }
    Ok(())
}

impl ChunkBuilder {
    /// A builder for `stream`, produced by `component` (a source or transform name).
    pub fn new(stream: &str, component: &str, options: ChunkOptions) -> Result<Self> {
        check_name(stream, "stream names are at most 255 bytes")?;
        check_name(component, "component names are at most 255 bytes")?;
        if options.max_bytes == 0 || options.max_bytes > 64 * 1024 * 1024 {
            return Err(Error::Config(format!(
                "chunk max_bytes must be between 1 byte and 64 MiB, got {}",
                options.max_bytes
            )));
        }
        let max_record = MAX_FRAME_LEN / 2;
        if options.max_record_bytes > max_record {
            return Err(Error::Config(format!(
                "max_record_bytes must be at most {max_record}, got {}",
                options.max_record_bytes
            )));
        }
        let (compressor, level) = match options.compression {
            Compression::None => (None, 0),
            Compression::Zstd { level } => {
                let compressor = zstd::bulk::Compressor::new(level)
                    .map_err(|e| Error::Codec(format!("zstd level {level}: {e}")))?;
                (Some(Arc::new(Mutex::new(compressor))), level)
            }
        };
        Ok(ChunkBuilder {
            body: Vec::with_capacity(options.max_bytes + options.max_bytes / 8),
            options,
            stream: stream.to_owned(),
            component: component.to_owned(),
            layout: BodyLayout::Lines,
            record_count: 0,
            min_ts: u64::MAX,
            max_ts: 0,
            source_position: Vec::new(),
            opened_at: None,
            compressor,
            level,
            scratch: Vec::new(),
            spare: Vec::new(),
            dictionaries: None,
            samples: None,
            dict_id: 0,
            dictionary: None,
        })
    }

    /// Gives the builder a dictionary store: with
    /// [`ChunkOptions::dictionary`] set and zstd compression, it starts
    /// sampling records to train its stream's dictionary.
    ///
    /// A stream that already has a dictionary in the store (trained before
    /// a restart) goes on with it instead of training a new one.
    pub fn set_dictionaries(&mut self, dictionaries: Arc<Dictionaries>) {
        if self.options.dictionary.is_none() || self.compressor.is_none() || self.dict_id != 0 {
            return;
        }
        if let Some((id, dict)) = dictionaries.for_stream(&self.stream) {
            match dictionary_compressor(self.level, &dict) {
                Ok(compressor) => {
                    self.compressor = Some(Arc::new(Mutex::new(compressor)));
                    self.dictionary = Some(dict);
                    self.dict_id = id;
                    return;
                }
                Err(error) => {
                    tracing::warn!(stream = %self.stream, id, %error, "the stream's dictionary cannot be loaded; training a new one");
                }
            }
        }
        self.samples = Some((Vec::new(), Vec::new()));
        self.dictionaries = Some(dictionaries);
    }

    /// The dictionary later chunks are compressed with (0: none yet).
    pub fn dictionary_id(&self) -> u32 {
        self.dict_id
    }

    /// Keeps a copy of `payload` for training; trains once enough are kept.
    fn sample(&mut self, payload: &[u8]) {
        let Some(training) = self.options.dictionary else {
            return;
        };
        let Some((bytes, sizes)) = self.samples.as_mut() else {
            return;
        };
        // zstd wants samples of at most 128 KiB; the total stays bounded.
        if !payload.is_empty() && payload.len() <= 128 << 10 {
            bytes.extend_from_slice(payload);
            sizes.push(payload.len());
        }
        if sizes.len() >= training.sample_records || bytes.len() >= 64 << 20 {
            self.train(training);
        }
    }

    /// Trains the dictionary from the samples and switches the compressor
    /// to it. A failure (too few or too uniform samples) leaves the builder
    /// compressing without one, for good.
    fn train(&mut self, training: DictionaryTraining) {
        let Some((bytes, sizes)) = self.samples.take() else {
            return;
        };
        let Some(dictionaries) = self.dictionaries.take() else {
            return;
        };
        let trained = zstd::dict::from_continuous(&bytes, &sizes, training.max_bytes)
            .map_err(|e| e.to_string())
            .and_then(|dict| {
                let id = dictionaries.insert(&dict).map_err(|e| e.to_string())?;
                dictionaries
                    .assign(&self.stream, id)
                    .map_err(|e| e.to_string())?;
                let compressor =
                    dictionary_compressor(self.level, &dict).map_err(|e| e.to_string())?;
                Ok((id, compressor, dict))
            });
        match trained {
            Ok((id, compressor, dict)) => {
                let len = dict.len();
                self.dictionary = Some(Arc::from(dict));
                tracing::debug!(stream = %self.stream, id, bytes = len, samples = sizes.len(), "trained a zstd dictionary");
                self.compressor = Some(Arc::new(Mutex::new(compressor)));
                self.dict_id = id;
            }
            Err(error) => {
                tracing::debug!(stream = %self.stream, %error, samples = sizes.len(), "no dictionary: training failed");
            }
        }
    }

    /// The stream this builder collects.
    pub fn stream(&self) -> &str {
        &self.stream
    }
    /// Records in the open chunk.
    pub fn record_count(&self) -> u32 {
        self.record_count
    }
    /// Uncompressed bytes in the open chunk.
    pub fn buffered_bytes(&self) -> usize {
        self.body.len()
    }
    /// True when no chunk is open.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }
    /// When the open chunk's linger time ends, if a chunk is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|t| t + self.options.linger)
    }

    /// Adds a record: `payload` bytes, a timestamp in unix nanoseconds and
    /// the source position after it, if the source has one. Returns the
    /// chunk it closed, if it reached the size limit.
    ///
    /// A record over `max_record_bytes` is refused and nothing else changes.
    pub fn push(
        &mut self,
        payload: &[u8],
        timestamp: u64,
        source_position: Option<&[u8]>,
    ) -> Result<Option<ClosedChunk>> {
        if self.add(payload, timestamp, source_position)? {
            return self.finish();
        }
        Ok(None)
    }

    /// [`ChunkBuilder::push`] that returns the chunk it closed uncompressed
    /// ([`ChunkBuilder::take_open`]), for compression elsewhere.
    pub fn push_open(
        &mut self,
        payload: &[u8],
        timestamp: u64,
        source_position: Option<&[u8]>,
    ) -> Result<Option<OpenChunk>> {
        if self.add(payload, timestamp, source_position)? {
            return Ok(self.take_open());
        }
        Ok(None)
    }

    /// [`ChunkBuilder::push_open`] of a record that `write` appends to the
    /// vector it is given, the chunk's body itself, instead of one copied
    /// from the caller's buffer. `write` must only append. What it
    /// appended is taken back if it fails, or if it is over
    /// `max_record_bytes` (that error); a record with a newline is moved to
    /// the length-prefixed layout like any other. Returns the chunk it
    /// closed, if any, and the record's length.
    pub fn push_open_with<E: From<Error>>(
        &mut self,
        timestamp: u64,
        write: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(Option<OpenChunk>, usize), E> {
        if self.samples.is_some() {
            // Training a dictionary wants the record on its own.
            let mut record = Vec::new();
            write(&mut record)?;
            return Ok((self.push_open(&record, timestamp, None)?, record.len()));
        }
        let start = self.body.len();
        let prefixed = self.layout == BodyLayout::LengthPrefixed;
        if prefixed {
            self.body.extend_from_slice(&[0; 4]);
        }
        let payload = self.body.len();
        {
            // Takes back what `write` appended if it fails or panics.
            struct Rollback<'a>(&'a mut Vec<u8>, usize);
            impl Drop for Rollback<'_> {
                fn drop(&mut self) {
                    self.0.truncate(self.1);
                }
            }
            let mut rollback = Rollback(&mut self.body, start);
            write(rollback.0)?;
            // Kept: truncating to past the end changes nothing.
            rollback.1 = usize::MAX;
        }
        let len = self.body.len() - payload;
        if len > self.options.max_record_bytes {
            self.body.truncate(start);
            return Err(Error::RecordTooLarge {
                len,
                max: self.options.max_record_bytes,
            }
            .into());
        }
        if prefixed {
            self.body[start..payload].copy_from_slice(&(len as u32).to_le_bytes());
        } else if memchr::memchr(b'\n', &self.body[payload..]).is_some() {
            let record = self.body.split_off(payload);
            self.convert_to_length_prefixed();
            self.push_length_prefixed(&record);
        } else {
            self.body.push(b'\n');
        }
        let closed = if self.counted(timestamp) {
            self.take_open()
        } else {
            None
        };
        Ok((closed, len))
    }

    /// [`ChunkBuilder::poll`] that returns the chunk uncompressed.
    pub fn poll_open(&mut self, now: Instant) -> Option<OpenChunk> {
        match self.deadline() {
            Some(deadline) if now >= deadline => self.take_open(),
            _ => None,
        }
    }

    /// Adds a record; returns whether the chunk reached its size.
    fn add(
        &mut self,
        payload: &[u8],
        timestamp: u64,
        source_position: Option<&[u8]>,
    ) -> Result<bool> {
        if payload.len() > self.options.max_record_bytes {
            return Err(Error::RecordTooLarge {
                len: payload.len(),
                max: self.options.max_record_bytes,
            });
        }
        if let Some(position) = source_position {
            if position.len() > u16::MAX as usize {
                return Err(Error::Config(format!(
                    "source position of {} bytes exceeds 65535",
                    position.len()
                )));
            }
        }
        if self.samples.is_some() {
            self.sample(payload);
        }
        match self.layout {
            BodyLayout::Lines if memchr::memchr(b'\n', payload).is_none() => {
                self.body.extend_from_slice(payload);
                self.body.push(b'\n');
            }
            BodyLayout::Lines => {
                self.convert_to_length_prefixed();
                self.push_length_prefixed(payload);
            }
            BodyLayout::LengthPrefixed => self.push_length_prefixed(payload),
        }
        if let Some(position) = source_position {
            self.source_position.clear();
            self.source_position.extend_from_slice(position);
        }
        Ok(self.counted(timestamp))
    }

    /// Counts a record just added to the body at `timestamp`; returns
    /// whether the chunk reached its size.
    fn counted(&mut self, timestamp: u64) -> bool {
        if self.record_count == 0 {
            self.opened_at = Some(Instant::now());
        }
        self.record_count += 1;
        self.min_ts = self.min_ts.min(timestamp);
        self.max_ts = self.max_ts.max(timestamp);
        self.body.len() >= self.options.max_bytes
    }

    fn push_length_prefixed(&mut self, payload: &[u8]) {
        self.body
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.body.extend_from_slice(payload);
    }

    /// Rewrites the newline-terminated records built so far as length-prefixed ones.
    fn convert_to_length_prefixed(&mut self) {
        let lines = std::mem::take(&mut self.body);
        let mut converted = Vec::with_capacity(
            self.body
                .capacity()
                .max(lines.len() + 4 * self.record_count as usize + 64),
        );
        for line in lines.split_inclusive(|&b| b == b'\n') {
            let record = &line[..line.len() - 1];
            converted.extend_from_slice(&(record.len() as u32).to_le_bytes());
            converted.extend_from_slice(record);
        }
        self.body = converted;
        self.layout = BodyLayout::LengthPrefixed;
    }

    /// Closes the open chunk if its linger time has passed at `now`.
    pub fn poll(&mut self, now: Instant) -> Result<Option<ClosedChunk>> {
        match self.deadline() {
            Some(deadline) if now >= deadline => self.finish(),
            _ => Ok(None),
        }
    }

    /// Closes the open chunk, if any, and compresses it.
    pub fn finish(&mut self) -> Result<Option<ClosedChunk>> {
        match self.take_open() {
            Some(open) => {
                let (chunk, body) = open.compress(&mut self.scratch)?;
                self.give_back(body);
                Ok(Some(chunk))
            }
            None => Ok(None),
        }
    }

    /// Closes the open chunk, if any, without compressing it: the returned
    /// [`OpenChunk`] is compressed by [`OpenChunk::compress`], on any
    /// thread, with this builder's compressor. The builder goes on with a
    /// fresh body (hand the old one back with [`ChunkBuilder::give_back`]).
    pub fn take_open(&mut self) -> Option<OpenChunk> {
        if self.record_count == 0 {
            return None;
        }
        let spare = self.spare.pop().unwrap_or_default();
        let body = std::mem::replace(&mut self.body, spare);
        let open = OpenChunk {
            body,
            layout: self.layout,
            record_count: self.record_count,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
            stream: self.stream.clone(),
            component: self.component.clone(),
            source_position: self.source_position.clone(),
            compressor: self.compressor.clone(),
            dict_id: self.dict_id,
            dictionary: self.dictionary.clone(),
            level: self.level,
        };
        self.body.clear();
        if self.body.capacity() == 0 {
            self.body
                .reserve(self.options.max_bytes + self.options.max_bytes / 8);
        }
        self.layout = BodyLayout::Lines;
        self.record_count = 0;
        self.min_ts = u64::MAX;
        self.max_ts = 0;
        self.source_position.clear();
        self.opened_at = None;
        Some(open)
    }

    /// Returns a body buffer after its chunk was compressed, so the next
    /// chunk reuses its allocation.
    pub fn give_back(&mut self, mut body: Vec<u8>) {
        // As many as can be in flight at once (see the emitter's
        // compression threads), so none is allocated again.
        if self.spare.len() < 8 && body.capacity() > 0 {
            body.clear();
            self.spare.push(body);
        }
    }
}

/// A compression context with `dictionary` loaded. The chunk header names
/// the dictionary: zstd's own id stays out of the frame, so a receiver may
/// store the dictionary under another id.
fn dictionary_compressor(level: i32, dictionary: &[u8]) -> Result<zstd::bulk::Compressor<'static>> {
    let mut compressor = zstd::bulk::Compressor::with_dictionary(level, dictionary)
        .map_err(|e| Error::Codec(format!("zstd dictionary: {e}")))?;
    compressor
        .set_parameter(zstd::zstd_safe::CParameter::DictIdFlag(false))
        .map_err(|e| Error::Codec(format!("zstd dictionary: {e}")))?;
    Ok(compressor)
}

/// A closed but not yet compressed chunk; see [`ChunkBuilder::take_open`].
pub struct OpenChunk {
    body: Vec<u8>,
    layout: BodyLayout,
    record_count: u32,
    min_ts: u64,
    max_ts: u64,
    stream: String,
    component: String,
    source_position: Vec<u8>,
    compressor: Option<Arc<Mutex<zstd::bulk::Compressor<'static>>>>,
    dict_id: u32,
    dictionary: Option<Arc<[u8]>>,
    level: i32,
}

/// Compression contexts of one compressing thread, by level and dictionary.
#[derive(Default)]
pub struct Compressors {
    contexts: std::collections::HashMap<(i32, u32), zstd::bulk::Compressor<'static>>,
}

impl std::fmt::Debug for Compressors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressors")
            .field("contexts", &self.contexts.len())
            .finish()
    }
}

impl std::fmt::Debug for OpenChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenChunk")
            .field("stream", &self.stream)
            .field("records", &self.record_count)
            .field("bytes", &self.body.len())
            .finish()
    }
}

impl OpenChunk {
    /// Compresses the chunk with its builder's context (using `scratch` as
    /// room) and returns it with its body buffer, for
    /// [`ChunkBuilder::give_back`].
    pub fn compress(self, scratch: &mut Vec<u8>) -> Result<(ClosedChunk, Vec<u8>)> {
        let stored_len = match &self.compressor {
            None => None,
            Some(compressor) => {
                let mut compressor = compressor.lock().unwrap_or_else(|e| e.into_inner());
                Some(self.compress_into(&mut compressor, scratch)?)
            }
        };
        self.seal(stored_len, scratch)
    }

    /// [`OpenChunk::compress`] with a context of `compressors` (one per
    /// level and dictionary), so several threads compress chunks of one
    /// builder at once.
    pub fn compress_with(
        self,
        compressors: &mut Compressors,
        scratch: &mut Vec<u8>,
    ) -> Result<(ClosedChunk, Vec<u8>)> {
        if self.compressor.is_none() {
            return self.seal(None, scratch);
        }
        let key = (self.level, self.dict_id);
        let context = match compressors.contexts.entry(key) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let context = match &self.dictionary {
                    Some(dictionary) if self.dict_id != 0 => {
                        dictionary_compressor(self.level, dictionary)?
                    }
                    _ => zstd::bulk::Compressor::new(self.level)
                        .map_err(|e| Error::Codec(format!("zstd level {}: {e}", self.level)))?,
                };
                entry.insert(context)
            }
        };
        let stored_len = self.compress_into(context, scratch)?;
        self.seal(Some(stored_len), scratch)
    }

    fn compress_into(
        &self,
        compressor: &mut zstd::bulk::Compressor<'static>,
        scratch: &mut Vec<u8>,
    ) -> Result<usize> {
        let bound = zstd::zstd_safe::compress_bound(self.body.len());
        if scratch.len() < bound {
            scratch.resize(bound, 0);
        }
        compressor
            .compress_to_buffer(&self.body, &mut scratch[..])
            .map_err(|e| Error::Codec(format!("zstd level {}: {e}", self.level)))
    }

    /// The frame, from the compressed body in `scratch` (`Some(len)`) or
    /// the body as it is.
    fn seal(self, stored: Option<usize>, scratch: &[u8]) -> Result<(ClosedChunk, Vec<u8>)> {
        let (codec, stored_len) = match stored {
            Some(len) => (Codec::Zstd, len),
            None => (Codec::None, self.body.len()),
        };
        let header = HeaderFields {
            codec,
            layout: self.layout,
            record_count: self.record_count,
            dict_id: if codec == Codec::Zstd {
                self.dict_id
            } else {
                0
            },
            min_ts: self.min_ts,
            max_ts: self.max_ts,
            uncompressed_len: self.body.len() as u32,
            stream: &self.stream,
            component: &self.component,
            source_position: &self.source_position,
        };
        let mut frame = Vec::with_capacity(header.header_len() + stored_len);
        header.write(stored_len, &mut frame);
        match codec {
            Codec::None => frame.extend_from_slice(&self.body),
            Codec::Zstd => frame.extend_from_slice(&scratch[..stored_len]),
        }
        let chunk = ClosedChunk {
            tail_crc: super::frame::tail_crc(&frame),
            frame,
            record_count: self.record_count,
            uncompressed_len: self.body.len(),
        };
        Ok((chunk, self.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{decode_body, seal_for_test, ChunkView, Decoder};

    fn records_of(chunk: ClosedChunk) -> (BodyLayout, Vec<Vec<u8>>) {
        let mut frame = chunk.into_frame();
        seal_for_test(&mut frame, 7);
        let view = ChunkView::parse(&frame).unwrap();
        let mut decoder = Decoder::default();
        let body = decode_body(&view, &mut decoder).unwrap();
        let records = body.records().map(|r| r.unwrap().to_vec()).collect();
        (view.layout(), records)
    }

    /// `records` through `push_open_with`, then closed.
    fn written_in_place(options: &ChunkOptions, records: &[&[u8]]) -> ClosedChunk {
        let mut builder = ChunkBuilder::new("s", "c", options.clone()).unwrap();
        for (ts, record) in records.iter().enumerate() {
            let (closed, len) = builder
                .push_open_with(ts as u64, |out: &mut Vec<u8>| {
                    out.extend_from_slice(record);
                    Ok::<(), Error>(())
                })
                .unwrap();
            assert!(closed.is_none());
            assert_eq!(len, record.len());
        }
        builder.finish().unwrap().unwrap()
    }

    #[test]
    fn records_written_in_place_read_back_as_pushed_ones() {
        let options = ChunkOptions::default();
        for records in [
            &[&b"{\"a\":1}"[..], b"", b"{\"b\":2}"][..],
            // A newline moves the chunk to length-prefixed records, before
            // and after it.
            &[b"one", b"two\nlines", b"three", b"four\n"],
        ] {
            let mut pushed = ChunkBuilder::new("s", "c", options.clone()).unwrap();
            for (ts, record) in records.iter().enumerate() {
                pushed.push(record, ts as u64, None).unwrap();
            }
            let expected = records_of(pushed.finish().unwrap().unwrap());
            assert_eq!(records_of(written_in_place(&options, records)), expected);
            assert_eq!(
                expected.1,
                records.iter().map(|r| r.to_vec()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn a_failed_oversized_or_panicking_write_leaves_nothing_behind() {
        let options = ChunkOptions {
            max_record_bytes: 8,
            ..ChunkOptions::default()
        };
        let mut builder = ChunkBuilder::new("s", "c", options).unwrap();
        let write = |bytes: &'static [u8]| {
            move |out: &mut Vec<u8>| {
                out.extend_from_slice(bytes);
                Ok::<(), Error>(())
            }
        };
        builder.push_open_with(1, write(b"first")).unwrap();
        let failed = builder.push_open_with(2, |out: &mut Vec<u8>| {
            out.extend_from_slice(b"half");
            Err(Error::Closed)
        });
        assert!(matches!(failed, Err(Error::Closed)));
        let oversized = builder.push_open_with(3, write(b"nine bytes"));
        assert!(matches!(
            oversized,
            Err(Error::RecordTooLarge { len: 10, max: 8 })
        ));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = builder.push_open_with(4, |out: &mut Vec<u8>| -> Result<()> {
                out.extend_from_slice(b"torn");
                panic!("the writer panics");
            });
        }));
        assert!(panicked.is_err());
        builder.push_open_with(5, write(b"last")).unwrap();
        let (_, records) = records_of(builder.finish().unwrap().unwrap());
        assert_eq!(records, [b"first".to_vec(), b"last".to_vec()]);
    }

    #[test]
    fn single_lines_stay_ndjson_and_multiline_switches_layout() {
        for compression in [
            Compression::None,
            Compression::Zstd { level: 1 },
            Compression::Zstd { level: 3 },
        ] {
            let options = ChunkOptions {
                compression,
                ..ChunkOptions::default()
            };
            let mut builder = ChunkBuilder::new("s", "c", options.clone()).unwrap();
            builder.push(b"{\"a\":1}", 5, None).unwrap();
            builder.push(b"", 6, None).unwrap();
            let chunk = builder.finish().unwrap().unwrap();
            assert_eq!(
                records_of(chunk),
                (BodyLayout::Lines, vec![b"{\"a\":1}".to_vec(), vec![]])
            );

            let mut builder = ChunkBuilder::new("s", "c", options).unwrap();
            builder.push(b"one", 1, Some(b"pos-1")).unwrap();
            builder.push(b"two\nlines", 3, None).unwrap();
            builder.push(b"three", 2, Some(b"pos-3")).unwrap();
            let chunk = builder.finish().unwrap().unwrap();
            let mut frame = chunk.frame().to_vec();
            seal_for_test(&mut frame, 0);
            let view = ChunkView::parse(&frame).unwrap();
            assert_eq!((view.min_ts(), view.max_ts()), (1, 3));
            assert_eq!(view.source_position(), Some(&b"pos-3"[..]));
            assert_eq!(view.stream(), b"s");
            assert_eq!(view.component(), b"c");
            assert_eq!(
                records_of(chunk),
                (
                    BodyLayout::LengthPrefixed,
                    vec![b"one".to_vec(), b"two\nlines".to_vec(), b"three".to_vec()]
                )
            );
            assert!(builder.is_empty() && builder.finish().unwrap().is_none());
        }
    }

    #[test]
    fn closes_at_size_and_linger() {
        let options = ChunkOptions {
            max_bytes: 1000,
            linger: Duration::from_millis(5),
            ..ChunkOptions::default()
        };
        let mut builder = ChunkBuilder::new("s", "c", options).unwrap();
        let mut closed = 0;
        for i in 0..100 {
            if builder
                .push(format!("record number {i:05}").as_bytes(), 0, None)
                .unwrap()
                .is_some()
            {
                closed += 1;
            }
        }
        assert_eq!(closed, 100 * 20 / 1000);
        assert!(builder.is_empty());
        builder.push(b"late", 0, None).unwrap();
        let deadline = builder.deadline().unwrap();
        assert!(builder
            .poll(deadline - Duration::from_millis(1))
            .unwrap()
            .is_none());
        assert_eq!(builder.poll(deadline).unwrap().unwrap().record_count(), 1);
    }

    #[test]
    fn oversized_record_is_refused_and_nothing_else_changes() {
        let options = ChunkOptions {
            max_record_bytes: 10,
            ..ChunkOptions::default()
        };
        let mut builder = ChunkBuilder::new("s", "c", options).unwrap();
        builder.push(b"small", 0, None).unwrap();
        let error = builder.push(&[b'x'; 11], 0, None).unwrap_err();
        assert!(
            matches!(error, Error::RecordTooLarge { len: 11, max: 10 }),
            "{error}"
        );
        let (_, records) = records_of(builder.finish().unwrap().unwrap());
        assert_eq!(records, vec![b"small".to_vec()]);
    }

    #[test]
    fn invalid_names_and_options_are_errors() {
        assert!(ChunkBuilder::new(&"s".repeat(256), "c", ChunkOptions::default()).is_err());
        let zero = ChunkOptions {
            max_bytes: 0,
            ..ChunkOptions::default()
        };
        assert!(ChunkBuilder::new("s", "c", zero).is_err());
    }
}

#[cfg(test)]
mod crc_tests {
    use super::*;
    use crate::chunk::frame::{seal_frame, seal_frame_with};

    #[test]
    fn producer_side_crc_combines_to_the_full_crc() {
        let mut builder =
            ChunkBuilder::new("stream", "component", ChunkOptions::default()).unwrap();
        for i in 0..1000 {
            builder
                .push(format!("line {i}").as_bytes(), i, Some(b"pos"))
                .unwrap();
        }
        let chunk = builder.finish().unwrap().unwrap();
        let tail_crc = chunk.tail_crc();
        let mut combined = chunk.into_frame();
        let mut full = combined.clone();
        seal_frame_with(&mut combined, 123_456, tail_crc);
        seal_frame(&mut full, 123_456);
        assert_eq!(combined, full);
        // The documented order: bytes [24, len) then [8, 24).
        let mut ordered = combined[24..].to_vec();
        ordered.extend_from_slice(&combined[8..24]);
        assert_eq!(
            u32::from_le_bytes(combined[4..8].try_into().unwrap()),
            crc32c::crc32c(&ordered)
        );
    }
}
