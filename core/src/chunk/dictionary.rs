//! Trained zstd dictionaries.
//!
//! Small chunks (a quiet source closes one every linger time) compress
//! poorly: each starts with an empty window. A dictionary trained on a
//! stream's first records gives them the context up front (on this
//! project's machine: 1.4-1.8× the ratio at 2 KiB chunks, and faster;
//! nothing at 256 KiB, see `benches/benches/dictionary.rs`).
//!
//! A [`ChunkBuilder`](super::ChunkBuilder) with
//! [`ChunkOptions::dictionary`](super::ChunkOptions::dictionary) set keeps
//! copies of its stream's first records, trains a dictionary from them
//! once, stores it here and compresses every later chunk with it; the chunk
//! header names the dictionary's id. Frames are written without zstd's own
//! dictionary id, so the header's id is the only reference.
//!
//! The store keeps each dictionary in `DATA_DIR/dictionaries/<id>.zdict`
//! (8 hex digits), written atomically before any chunk that needs it is
//! compressed, so a reader always finds it. An id is derived from the
//! content (CRC-32C, never 0, the next free one on a collision), so the
//! same dictionary gets the same id in every store.
//!
//! Which dictionary each stream compresses with is kept in
//! `DATA_DIR/dictionaries/streams` (lines of `<id hex> <stream>`, written
//! atomically), so a restarted shipper goes on with its streams'
//! dictionaries instead of training (and storing, and sending) a new one
//! after every restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::{Error, Result};

/// The folder of the data directory that holds dictionaries.
pub const DICTIONARIES_DIR: &str = "dictionaries";
/// The most dictionaries a store keeps.
pub const MAX_DICTIONARIES: usize = 256;
/// The most bytes of dictionaries a store keeps.
pub const MAX_DICTIONARIES_BYTES: u64 = 64 << 20;
const SUFFIX: &str = ".zdict";
/// The file naming each stream's dictionary.
const STREAMS_FILE: &str = "streams";

/// How a builder trains its stream's dictionary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DictionaryTraining {
    /// Records sampled before training (copies are kept until then).
    pub sample_records: usize,
    /// The largest dictionary.
    pub max_bytes: usize,
}

impl Default for DictionaryTraining {
    fn default() -> Self {
        DictionaryTraining {
            sample_records: 2_000,
            max_bytes: 64 << 10,
        }
    }
}

/// Asked before a new dictionary of this many bytes is written: a refusal
/// (the disk budget is spent) keeps it out.
pub type DictionaryBudget = Arc<dyn Fn(u64) -> Result<()> + Send + Sync>;

/// Dictionaries by id, on disk or only in memory. At most
/// [`MAX_DICTIONARIES`] of at most [`MAX_DICTIONARIES_BYTES`] together are
/// kept, and a log counts them against its disk budget.
#[derive(Default)]
pub struct Dictionaries {
    dir: Option<PathBuf>,
    map: RwLock<HashMap<u32, Arc<[u8]>>>,
    /// The dictionary each stream compresses with.
    streams: RwLock<HashMap<String, u32>>,
    budget: RwLock<Option<DictionaryBudget>>,
}

impl std::fmt::Debug for Dictionaries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dictionaries")
            .field("dir", &self.dir)
            .field("count", &self.len())
            .finish()
    }
}

impl Dictionaries {
    /// A store that keeps nothing on disk (tests, tools).
    pub fn in_memory() -> Arc<Dictionaries> {
        Arc::new(Dictionaries::default())
    }

    /// The store in `dir`, created if missing; every readable `*.zdict`
    /// there is loaded. A file that cannot be read is skipped with a
    /// warning (its chunks then fail to decode, each with a clear error).
    pub fn open(dir: &Path) -> Result<Arc<Dictionaries>> {
        crate::log::modes::create_dir(dir).map_err(|e| Error::io("creating", dir, e))?;
        let mut map = HashMap::new();
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io("reading", dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_suffix(SUFFIX)
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .filter(|&id| id != 0)
            else {
                continue;
            };
            match std::fs::read(entry.path()) {
                Ok(bytes) => {
                    map.insert(id, Arc::from(bytes));
                }
                Err(error) => {
                    tracing::warn!(path = %entry.path().display(), %error, "dictionary not loaded")
                }
            }
        }
        let mut streams = HashMap::new();
        let path = dir.join(STREAMS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for line in text.lines() {
                    let parsed = line.split_once(' ').and_then(|(hex, stream)| {
                        let id = u32::from_str_radix(hex, 16).ok()?;
                        map.contains_key(&id).then(|| (stream.to_owned(), id))
                    });
                    match parsed {
                        Some((stream, id)) => {
                            streams.insert(stream, id);
                        }
                        None => {
                            tracing::warn!(path = %path.display(), %line, "a stream's dictionary line ignored (unreadable or its dictionary is missing)")
                        }
                    }
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "streams' dictionaries not loaded; they train again")
            }
        }
        Ok(Arc::new(Dictionaries {
            dir: Some(dir.to_owned()),
            map: RwLock::new(map),
            streams: RwLock::new(streams),
            budget: RwLock::new(None),
        }))
    }

    /// Has `budget` asked before each new dictionary is written.
    pub fn set_budget(&self, budget: DictionaryBudget) {
        *self.budget.write().unwrap_or_else(|e| e.into_inner()) = Some(budget);
    }

    /// Bytes of the dictionaries kept.
    pub fn total_bytes(&self) -> u64 {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|d| d.len() as u64)
            .sum()
    }

    /// The id [`Dictionaries::insert`] gives `bytes`, without storing them.
    pub fn id_for(&self, bytes: &[u8]) -> u32 {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        id_in(&map, bytes)
    }

    /// The dictionary `stream` compresses with, if one was assigned.
    pub fn for_stream(&self, stream: &str) -> Option<(u32, Arc<[u8]>)> {
        let id = *self
            .streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)?;
        Some((id, self.get(id)?))
    }

    /// Makes `id` (stored) the dictionary `stream` compresses with, durably.
    /// A stream name holding a newline is not kept on disk (it trains again
    /// after a restart).
    pub fn assign(&self, stream: &str, id: u32) -> Result<()> {
        let mut streams = self.streams.write().unwrap_or_else(|e| e.into_inner());
        if streams.get(stream) == Some(&id) {
            return Ok(());
        }
        streams.insert(stream.to_owned(), id);
        if let Some(dir) = &self.dir {
            let mut text = String::new();
            for (stream, id) in streams.iter().filter(|(s, _)| !s.contains('\n')) {
                text.push_str(&format!("{id:08x} {stream}\n"));
            }
            crate::log::dir::write_atomically(dir, STREAMS_FILE, text.as_bytes())?;
        }
        Ok(())
    }

    /// The dictionary `id`, if stored.
    pub fn get(&self, id: u32) -> Option<Arc<[u8]>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Stores `bytes` (durably, with a directory) and returns its id; the
    /// same bytes always get the same id. A store at its limits, or whose
    /// log's budget is spent, refuses a new dictionary (nothing written).
    pub fn insert(&self, bytes: &[u8]) -> Result<u32> {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let id = id_in(&map, bytes);
        if map.contains_key(&id) {
            return Ok(id);
        }
        let total: u64 = map.values().map(|d| d.len() as u64).sum();
        if map.len() >= MAX_DICTIONARIES || total + bytes.len() as u64 > MAX_DICTIONARIES_BYTES {
            return Err(Error::Config(format!(
                "the dictionary store is full ({} dictionaries, {total} bytes; at most {MAX_DICTIONARIES} and {MAX_DICTIONARIES_BYTES} bytes)",
                map.len()
            )));
        }
        if let Some(budget) = &*self.budget.read().unwrap_or_else(|e| e.into_inner()) {
            budget(bytes.len() as u64)?;
        }
        if let Some(dir) = &self.dir {
            crate::log::dir::write_atomically(dir, &format!("{id:08x}{SUFFIX}"), bytes)?;
        }
        map.insert(id, Arc::from(bytes));
        Ok(id)
    }

    /// How many dictionaries are stored.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The id `bytes` get in `map`: their CRC-32C (never 0), or the next free
/// one when another dictionary holds it.
fn id_in(map: &HashMap<u32, Arc<[u8]>>, bytes: &[u8]) -> u32 {
    let mut id = crc32c::crc32c(bytes).max(1);
    loop {
        match map.get(&id) {
            Some(existing) if **existing == *bytes => return id,
            Some(_) => id = id.checked_add(1).unwrap_or(1),
            None => return id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_content_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Dictionaries::open(dir.path()).unwrap();
        let a = store.insert(b"dictionary a").unwrap();
        assert_eq!(store.insert(b"dictionary a").unwrap(), a);
        let b = store.insert(b"dictionary b").unwrap();
        assert_ne!(a, b);
        assert_ne!(a, 0);
        std::fs::write(dir.path().join("junk.txt"), b"ignored").unwrap();
        let reopened = Dictionaries::open(dir.path()).unwrap();
        assert_eq!(reopened.len(), 2);
        assert_eq!(&*reopened.get(a).unwrap(), b"dictionary a");
        assert_eq!(reopened.insert(b"dictionary b").unwrap(), b);
    }

    #[test]
    fn a_full_store_refuses_new_dictionaries_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Dictionaries::open(dir.path()).unwrap();
        for i in 0..MAX_DICTIONARIES {
            store.insert(format!("dictionary {i}").as_bytes()).unwrap();
        }
        let error = store.insert(b"one too many").unwrap_err();
        assert!(error.to_string().contains("store is full"), "{error}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            MAX_DICTIONARIES
        );
        // What it holds already is still found.
        assert!(store.insert(b"dictionary 3").is_ok());

        let big = tempfile::tempdir().unwrap();
        let store = Dictionaries::open(big.path()).unwrap();
        let chunk = vec![1u8; (MAX_DICTIONARIES_BYTES / 2) as usize];
        store.insert(&chunk).unwrap();
        let mut other = chunk.clone();
        other[0] = 2;
        store.insert(&other).unwrap();
        other[0] = 3;
        assert!(store.insert(&other).is_err(), "over the bytes limit");
    }

    #[test]
    fn a_budget_that_says_no_keeps_a_dictionary_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Dictionaries::open(dir.path()).unwrap();
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = asked.clone();
        store.set_budget(Arc::new(move |bytes| {
            seen.lock().unwrap().push(bytes);
            Err(Error::Full { max_bytes: 1 })
        }));
        assert!(store.insert(b"refused").is_err());
        assert_eq!(*asked.lock().unwrap(), vec![7]);
        assert_eq!(store.len(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(store.id_for(b"refused"), crc32c::crc32c(b"refused").max(1));
    }

    #[test]
    fn streams_keep_their_dictionary_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Dictionaries::open(dir.path()).unwrap();
        let a = store.insert(b"dictionary a").unwrap();
        let b = store.insert(b"dictionary b").unwrap();
        store.assign("weather", a).unwrap();
        store.assign("app logs", b).unwrap();
        store.assign("weather", b).unwrap();
        store.assign("bad\nname", a).unwrap();
        assert!(store.for_stream("other").is_none());
        let reopened = Dictionaries::open(dir.path()).unwrap();
        let (id, bytes) = reopened.for_stream("weather").unwrap();
        assert_eq!((id, &*bytes), (b, &b"dictionary b"[..]));
        assert_eq!(reopened.for_stream("app logs").unwrap().0, b);
        assert!(
            reopened.for_stream("bad\nname").is_none(),
            "not kept on disk"
        );
        // A line whose dictionary is gone is ignored, not an error.
        std::fs::remove_file(dir.path().join(format!("{b:08x}{SUFFIX}"))).unwrap();
        let without = Dictionaries::open(dir.path()).unwrap();
        assert!(without.for_stream("weather").is_none());
    }
}
