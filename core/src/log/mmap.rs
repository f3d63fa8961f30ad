//! The only unsafe code of the log: a shared, writable memory map of a
//! segment file.
//!
//! What the mapping relies on, and how each point is enforced:
//!
//! * **Only this process writes these files.** The data directory lock
//!   (`lock`, an exclusive `flock`) keeps a second shipper out; nothing else
//!   is supposed to touch `segments/`.
//! * **A write into the map never extends the file.** Segments are
//!   preallocated with `fallocate` before they are mapped, to at least the
//!   mapped length, and never shrunk while mapped; so a full disk is an error
//!   at creation instead of a SIGBUS while writing.
//! * **No data race between the writer and readers.** The map keeps a
//!   `published` watermark. Bytes below it are immutable; readers may only
//!   borrow bytes below it ([`SegmentMap::published_bytes`]). Bytes at or
//!   above it belong to the one [`MapWriter`], which is not `Clone` and is
//!   created at most once per map; it writes only at or above the watermark
//!   and moves the watermark up with release ordering after the bytes are in
//!   place.
//! * **The head is the writer's alone.** The first `head` bytes of a map (a
//!   segment's header) are never lent to readers, published or not: the
//!   writer rewrites them in place ([`MapWriter::write_head`]) while readers
//!   borrow what lies between the head and the watermark.

#![allow(unsafe_code)]

use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use memmap2::{Advice, MmapRaw, UncheckedAdvice};

/// A mapped segment file, shared by the writer and any number of readers.
pub(crate) struct SegmentMap {
    map: MmapRaw,
    /// Bytes `[0, head)` are never lent to readers.
    head: usize,
    published: AtomicUsize,
}

impl std::fmt::Debug for SegmentMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentMap")
            .field("len", &self.map.len())
            .field("head", &self.head)
            .field("published", &self.published.load(Ordering::Relaxed))
            .finish()
    }
}

/// The published bytes of a map, indexed by their position in the map.
/// Positions below the head are not part of it.
#[derive(Clone, Copy)]
pub(crate) struct Published<'a> {
    bytes: &'a [u8],
    head: usize,
}

impl<'a> Published<'a> {
    /// One past the last published position.
    pub(crate) fn len(&self) -> usize {
        self.head + self.bytes.len()
    }

    /// The published bytes from `position` on.
    ///
    /// # Panics
    /// If `position` is inside the head or beyond the watermark.
    pub(crate) fn from(&self, position: usize) -> &'a [u8] {
        &self.bytes[position - self.head..]
    }

    /// The published bytes `[start, end)`.
    ///
    /// # Panics
    /// As [`Published::from`], for either end.
    pub(crate) fn range(&self, start: usize, end: usize) -> &'a [u8] {
        &self.bytes[start - self.head..end - self.head]
    }
}

/// The unique right to write above the published watermark of one map.
#[derive(Debug)]
pub(crate) struct MapWriter {
    map: Arc<SegmentMap>,
}

impl SegmentMap {
    /// Maps the first `len` bytes of `file` shared and writable, with the
    /// watermark at `published` and the first `head` bytes kept from
    /// readers, and returns the map with its only writer. The file must be
    /// at least `len` bytes long and stay so (see the module docs).
    pub(crate) fn map(
        file: &File,
        len: usize,
        head: usize,
        published: usize,
    ) -> std::io::Result<(Arc<SegmentMap>, MapWriter)> {
        let file_len = file.metadata()?.len();
        if (file_len as u128) < len as u128 || published > len || head > len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("cannot map {len} bytes of a {file_len}-byte file"),
            ));
        }
        let map = memmap2::MmapOptions::new().len(len).map_raw(file)?;
        let map = Arc::new(SegmentMap {
            map,
            head,
            published: AtomicUsize::new(published),
        });
        let writer = MapWriter { map: map.clone() };
        Ok((map, writer))
    }

    /// Length of the mapping.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The watermark: bytes below it are complete and never change.
    pub(crate) fn published(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// Borrows the published bytes `[head, published)`.
    pub(crate) fn published_bytes(&self) -> Published<'_> {
        let end = self.published().max(self.head);
        // SAFETY: the mapping is valid for `self.map.len()` bytes for the
        // lifetime of `self` and the file is never shrunk below it (module
        // docs); `head <= end <= len` because `map` checks the head and the
        // writer only publishes inside the map; bytes between the head and
        // the watermark are never written again, and the Acquire load pairs
        // with the writer's Release store, so the bytes are initialised and
        // no write races with this shared borrow. The head, which the
        // writer rewrites, is outside the borrow.
        let bytes = unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().add(self.head), end - self.head)
        };
        Published {
            bytes,
            head: self.head,
        }
    }

    /// msync(MS_SYNC) of a byte range: on Linux this is fdatasync of the range.
    pub(crate) fn flush(&self, from: usize, to: usize) -> std::io::Result<()> {
        if to > from {
            self.map.flush_range(from, to - from)?;
        }
        Ok(())
    }

    /// Faults in the whole mapping writable ahead of the writer, so appends
    /// do not take page faults. Failure (old kernels) only costs speed.
    ///
    /// Measured with `cargo bench -p shipper-benches -- append`: appends
    /// (`never`) run at 1.0-1.2x write(2) with this, ~0.6x without, and
    /// ~0.25x with MADV_POPULATE_READ (the first write still takes a
    /// write-protect fault per page). The price: the faulted pages are dirty
    /// zeros that writeback may write once before the records overwrite them.
    /// Writing with pwrite(2) instead of through the map, with readers on a
    /// read-only map, measured slower still on ext4 (0.41-0.49x write(2)):
    /// writes into fallocated extents map their blocks page by page.
    pub(crate) fn prefault(&self) {
        let _ = self.map.advise(Advice::PopulateWrite);
    }

    /// Drops the mapping's pages from this process's memory (its resident
    /// set), leaving them in the page cache: a sealed, flushed segment that
    /// waits for its readers costs no resident memory, and a reader that
    /// comes to it faults in what it reads (minor faults, no I/O while the
    /// page cache holds the file). Failure only costs memory.
    pub(crate) fn release_pages(&self) {
        // SAFETY: MADV_DONTNEED on a *shared* file mapping discards no
        // data: the pages stay in the page cache (dirty ones are still
        // written back) and the next access maps the same bytes again. So
        // bytes borrowed from the map (`published_bytes`) keep their
        // content, and nothing above the watermark is ever released
        // while written: this is called on sealed segments only, which no
        // writer writes any more.
        let _ = unsafe { self.map.unchecked_advise(UncheckedAdvice::DontNeed) };
    }

    /// Faults in `[from, len)` writable: the unwritten rest of a segment the
    /// writer continues. Pages already holding data are left alone (faulting
    /// them writable would mark them dirty and write them again).
    pub(crate) fn prefault_from(&self, from: usize) {
        let page = 4096;
        let start = from.div_ceil(page) * page;
        if start < self.map.len() {
            let _ = self
                .map
                .advise_range(Advice::PopulateWrite, start, self.map.len() - start);
        }
    }
}

impl MapWriter {
    /// The map this writer writes.
    pub(crate) fn map(&self) -> &Arc<SegmentMap> {
        &self.map
    }

    /// Copies `bytes` to `at`, which must be at or above the watermark.
    ///
    /// # Panics
    /// If the range is below the watermark or outside the map: both are
    /// broken invariants of the log writer, never caused by data.
    pub(crate) fn write(&mut self, at: usize, bytes: &[u8]) {
        let published = self.map.published.load(Ordering::Relaxed);
        assert!(at >= published, "write at {at} below watermark {published}");
        let end = at.checked_add(bytes.len()).expect("write range overflows");
        assert!(
            end <= self.map.len(),
            "write to {end} beyond map of {}",
            self.map.len()
        );
        // SAFETY: `[at, end)` lies inside the mapping (checked above), which
        // stays valid while `self.map` lives. It is at or above the watermark,
        // so no reader borrows it (readers borrow only below the watermark),
        // and this `MapWriter` is the only one for the map and is borrowed
        // mutably, so no other write overlaps. `bytes` is a separate
        // allocation, never inside the map region being written.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.map.as_mut_ptr().add(at),
                bytes.len(),
            );
        }
    }

    /// Copies `bytes` into the head at `at`: the part of the map no reader
    /// ever borrows, so it may be rewritten at any time.
    ///
    /// # Panics
    /// If the range leaves the head: a broken invariant of the log writer.
    pub(crate) fn write_head(&mut self, at: usize, bytes: &[u8]) {
        let end = at.checked_add(bytes.len()).expect("write range overflows");
        assert!(
            end <= self.map.head,
            "head write to {end} beyond the head of {}",
            self.map.head
        );
        // SAFETY: `[at, end)` lies inside the head, inside the mapping
        // (`map` checks `head <= len`). Readers never borrow the head
        // (`published_bytes` starts after it), and this `MapWriter` is the
        // only one for the map and is borrowed mutably, so nothing else
        // reads or writes these bytes through the map meanwhile.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.map.as_mut_ptr().add(at),
                bytes.len(),
            );
        }
    }

    /// Sets `[at, to)` to zero, at or above the watermark.
    ///
    /// # Panics
    /// As [`MapWriter::write`].
    pub(crate) fn zero(&mut self, at: usize, to: usize) {
        let published = self.map.published.load(Ordering::Relaxed);
        assert!(
            at >= published && to <= self.map.len() && at <= to,
            "zero {at}..{to} out of range"
        );
        // SAFETY: same reasoning as in `write`: inside the map, above the
        // watermark, exclusive through `&mut self`.
        unsafe {
            std::ptr::write_bytes(self.map.map.as_mut_ptr().add(at), 0, to - at);
        }
    }

    /// Reads back unpublished bytes the writer itself wrote (`[at, to)`).
    pub(crate) fn read_own(&self, at: usize, to: usize) -> &[u8] {
        assert!(
            at <= to && to <= self.map.len(),
            "read {at}..{to} out of range"
        );
        // SAFETY: inside the map; only this writer writes there, and `&self`
        // excludes a concurrent `&mut self` write; readers never write.
        unsafe { std::slice::from_raw_parts(self.map.map.as_ptr().add(at), to - at) }
    }

    /// Moves the watermark up to `to`: `[old, to)` becomes visible and immutable.
    ///
    /// # Panics
    /// If `to` is below the current watermark or beyond the map.
    pub(crate) fn publish(&mut self, to: usize) {
        let published = self.map.published.load(Ordering::Relaxed);
        assert!(
            to >= published && to <= self.map.len(),
            "publish {to} out of range"
        );
        self.map.published.store(to, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(len: u64) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("m"))
            .unwrap();
        file.set_len(len).unwrap();
        (dir, file)
    }

    #[test]
    fn readers_see_only_published_bytes() {
        let (_dir, file) = file_of(4096);
        let (map, mut writer) = SegmentMap::map(&file, 4096, 0, 0).unwrap();
        writer.write(0, b"hello");
        assert!(map.published_bytes().from(0).is_empty());
        writer.publish(5);
        assert_eq!(map.published_bytes().from(0), b"hello");
        writer.write(5, b" world");
        assert_eq!(writer.read_own(0, 11), b"hello world");
        writer.zero(5, 11);
        assert_eq!(writer.read_own(5, 11), &[0; 6]);
        map.flush(0, 11).unwrap();
    }

    /// The resident size of the mapping that starts at `start`, from
    /// /proc/self/smaps; `None` under valgrind, whose smaps shows its own
    /// layout rather than the program's.
    fn resident_bytes(start: *const u8) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let head = format!("{:x}-", start as usize);
        let mut lines = smaps.lines().skip_while(|line| !line.starts_with(&head));
        if lines.next().is_none() {
            let valgrind = std::env::var("LD_PRELOAD").is_ok_and(|p| p.contains("valgrind"));
            assert!(
                valgrind,
                "the mapping at {start:?} is not in /proc/self/smaps"
            );
            return None;
        }
        let rss = lines.find(|line| line.starts_with("Rss:")).unwrap();
        let kib: u64 = rss.split_whitespace().nth(1).unwrap().parse().unwrap();
        Some(kib * 1024)
    }

    #[test]
    fn released_pages_leave_the_resident_set_and_keep_their_bytes() {
        let len = 1 << 20;
        let (_dir, file) = file_of(len as u64);
        let (map, mut writer) = SegmentMap::map(&file, len, 0, 0).unwrap();
        let pattern: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        writer.write(0, &pattern);
        writer.publish(len);
        let before = resident_bytes(map.map.as_ptr());
        // Not flushed: the pages are dirty, and released all the same.
        map.release_pages();
        if let (Some(before), Some(after)) = (before, resident_bytes(map.map.as_ptr())) {
            assert!(before >= len as u64 / 2, "resident before: {before}");
            assert!(after < len as u64 / 8, "released: {after} bytes resident");
        }
        assert_eq!(
            map.published_bytes().from(0),
            &pattern[..],
            "same bytes, faulted back"
        );
        map.flush(0, len).unwrap();
        drop((map, writer));
        let path = _dir.path().join("m");
        assert_eq!(std::fs::read(path).unwrap(), pattern, "the file holds them");
    }

    #[test]
    #[should_panic(expected = "below watermark")]
    fn writing_below_the_watermark_is_refused() {
        let (_dir, file) = file_of(4096);
        let (_map, mut writer) = SegmentMap::map(&file, 4096, 0, 10).unwrap();
        writer.write(4, b"x");
    }

    #[test]
    fn mapping_beyond_the_file_is_an_error() {
        let (_dir, file) = file_of(100);
        assert!(SegmentMap::map(&file, 4096, 0, 0).is_err());
        let (_dir, file) = file_of(4096);
        assert!(SegmentMap::map(&file, 4096, 4097, 0).is_err());
    }

    #[test]
    fn concurrent_reader_sees_consistent_prefix() {
        let (_dir, file) = file_of(1 << 16);
        let (map, mut writer) = SegmentMap::map(&file, 1 << 16, 0, 0).unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = 0;
            while last < 1 << 16 {
                let bytes = map.published_bytes();
                let bytes = bytes.from(0);
                assert!(bytes.iter().enumerate().all(|(i, &b)| b == (i / 256) as u8));
                last = bytes.len();
            }
        });
        for block in 0..256usize {
            writer.write(block * 256, &[block as u8; 256]);
            writer.publish((block + 1) * 256);
        }
        reader.join().unwrap();
    }

    /// The head is rewritten while readers read what follows it: they
    /// never see it, and what they see is the published body.
    #[test]
    fn the_head_is_rewritten_while_readers_read_the_body() {
        let (_dir, file) = file_of(1 << 16);
        let (map, mut writer) = SegmentMap::map(&file, 1 << 16, 64, 0).unwrap();
        writer.write_head(0, &[1; 64]);
        writer.write(64, &[7; 4032]);
        writer.publish(4096);
        let reader = {
            let map = map.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    let bytes = map.published_bytes();
                    assert_eq!(bytes.len(), 4096);
                    assert!(bytes.from(64).iter().all(|&b| b == 7));
                    assert_eq!(bytes.range(64, 72), &[7; 8]);
                }
            })
        };
        for round in 0..1000u32 {
            writer.write_head(8, &round.to_le_bytes());
        }
        reader.join().unwrap();
        assert_eq!(writer.read_own(8, 12), &999u32.to_le_bytes());
        map.flush(0, 4096).unwrap();
        let on_disk = std::fs::read(_dir.path().join("m")).unwrap();
        assert_eq!(&on_disk[8..12], &999u32.to_le_bytes());
    }

    #[test]
    #[should_panic(expected = "beyond the head")]
    fn head_writes_stay_in_the_head() {
        let (_dir, file) = file_of(4096);
        let (_map, mut writer) = SegmentMap::map(&file, 4096, 64, 64).unwrap();
        writer.write_head(60, &[0; 8]);
    }
}
