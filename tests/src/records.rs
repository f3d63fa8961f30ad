//! Deterministic records for the integration and crash tests, from the
//! `random` corpus of [`shipper_core::corpus`] (the one record generator):
//! the bytes of record `seq` are a pure function of `seq`, so a test can
//! recompute what another process wrote and check every stored record
//! against its offset. They barely compress, so segments fill as fast as
//! the records are long.

use shipper_core::chunk::{
    decode_body, ChunkBuilder, ChunkOptions, ClosedChunk, Compression, Decoder,
};
use shipper_core::corpus::{Corpus, CorpusKind};
use shipper_core::log::Log;

pub use shipper_core::corpus::mix;

/// The seed of every test record.
const SEED: u64 = 0x7e57;

/// The bytes of record `seq`: a `random` corpus record (30-1530 bytes);
/// about one record in seven has a newline in its text, which the log
/// must keep as it is.
pub fn record(seq: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1600);
    Corpus::new(CorpusKind::Random, SEED).record_into(seq, &mut bytes);
    if seq % 7 == 3 {
        // After `{"seq":`; the log treats records as bytes.
        let at = 7 + (mix(seq) >> 40) as usize % (bytes.len() - 7);
        bytes[at] = b'\n';
    }
    bytes
}

/// How many records the chunk starting at record `first` holds (1-40).
pub fn chunk_len(first: u64) -> u64 {
    1 + mix(first ^ 0xC0FF_EE00) % 40
}

/// The chunk of records `first..first + count`, zstd-compressed or not
/// depending on `first`.
pub fn chunk(first: u64, count: u64) -> ClosedChunk {
    let compression = if mix(first) % 2 == 0 {
        Compression::None
    } else {
        Compression::Zstd { level: 1 }
    };
    let options = ChunkOptions {
        max_bytes: 64 << 20,
        compression,
        ..ChunkOptions::default()
    };
    let mut builder = ChunkBuilder::new("tests", "records", options).expect("valid chunk options");
    for seq in first..first + count {
        let closed = builder.push(&record(seq), seq, None).expect("record fits");
        assert!(closed.is_none(), "chunk closed early");
    }
    builder.finish().expect("compresses").expect("not empty")
}

/// The chunk of `count` records of `len` bytes each, uncompressed, so that
/// its frame size is known in advance.
pub fn fixed_chunk(first: u64, count: u64, len: usize) -> ClosedChunk {
    let options = ChunkOptions {
        max_bytes: 64 << 20,
        compression: Compression::None,
        ..ChunkOptions::default()
    };
    let mut builder = ChunkBuilder::new("tests", "fixed", options).expect("valid chunk options");
    for seq in first..first + count {
        builder
            .push(&fixed_record(seq, len), seq, None)
            .expect("record fits");
    }
    builder.finish().expect("encodes").expect("not empty")
}

/// Record `seq` of a [`fixed_chunk`]: a `random` corpus record of exactly
/// `len` bytes (at least 64), no newline.
pub fn fixed_record(seq: u64, len: usize) -> Vec<u8> {
    assert!(len >= 64, "fixed records are at least 64 bytes");
    let mut bytes = Vec::with_capacity(len);
    Corpus::new(CorpusKind::Random, SEED)
        .with_record_bytes(len)
        .record_into(seq, &mut bytes);
    assert_eq!(bytes.len(), len);
    bytes
}

/// Every record the log holds from offset 0, as text (each must be UTF-8).
///
/// # Panics
/// On a chunk that cannot be read or decoded, or a record that is not UTF-8.
pub fn stored(log: &Log) -> Vec<String> {
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    for chunk in log.reader(0) {
        let chunk = chunk.expect("a readable chunk");
        let view = chunk.view();
        for record in decode_body(&view, &mut decoder)
            .expect("a decodable chunk")
            .records()
        {
            let record = record.expect("a record");
            out.push(String::from_utf8(record.to_vec()).expect("a UTF-8 record"));
        }
    }
    out
}

/// What a reader found, checked chunk by chunk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadBack {
    /// Offset of the first record read.
    pub first: Option<u64>,
    /// One past the last record read.
    pub end: Option<u64>,
    /// Records read.
    pub records: u64,
    /// Chunks read.
    pub chunks: u64,
}

/// Reads every durable record of `log` from `from`, checking that chunks
/// are contiguous (no gap, no error) and that the record at each offset
/// equals `expected(offset)`. Panics with the offset on any mismatch.
pub fn read_and_check(log: &Log, from: u64, expected: impl Fn(u64) -> Vec<u8>) -> ReadBack {
    let mut reader = log.reader(from);
    let mut decoder = Decoder::default();
    let mut seen = ReadBack::default();
    for stored in reader.by_ref() {
        let stored = stored.unwrap_or_else(|e| panic!("reading after {:?}: {e}", seen.end));
        if let Some(end) = seen.end {
            assert_eq!(stored.first_offset(), end, "chunks not contiguous");
        }
        seen.first.get_or_insert(stored.first_offset());
        let view = stored.view();
        assert_eq!(view.first_offset(), stored.first_offset());
        let body = decode_body(&view, &mut decoder)
            .unwrap_or_else(|e| panic!("decoding chunk at {}: {e}", stored.first_offset()));
        let mut offset = stored.first_offset();
        for record in body.records() {
            let record = record.unwrap_or_else(|e| panic!("record {offset}: {e:?}"));
            if record != expected(offset).as_slice() {
                panic!(
                    "record at offset {offset} differs: got {:?}",
                    String::from_utf8_lossy(&record[..record.len().min(80)])
                );
            }
            offset += 1;
        }
        assert_eq!(
            offset,
            stored.end_offset(),
            "record count of chunk at {}",
            stored.first_offset()
        );
        seen.records += offset - stored.first_offset();
        seen.chunks += 1;
        seen.end = Some(offset);
    }
    assert_eq!(reader.take_gap(), None, "gap while reading from {from}");
    seen
}
