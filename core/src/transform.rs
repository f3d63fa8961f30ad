//! The transform side of the component interface (re-exported from
//! [`crate::component`]): one record in, keep, drop or replace out. Its own
//! module because the emitter runs transforms, and the rest of the
//! component interface names the emitter.

/// What a transform did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransformOutcome<'a> {
    /// The record goes on unchanged: the input bytes.
    Keep(&'a [u8]),
    /// The record is dropped.
    Drop,
    /// The record goes on as these bytes (in the caller's scratch buffer).
    Replace(&'a [u8]),
}

impl<'a> TransformOutcome<'a> {
    /// The bytes that go on, if the record was not dropped.
    pub fn bytes(&self) -> Option<&'a [u8]> {
        match *self {
            TransformOutcome::Keep(bytes) | TransformOutcome::Replace(bytes) => Some(bytes),
            TransformOutcome::Drop => None,
        }
    }
}

/// A transform of single records. It runs on the producing side, in the
/// source's task, before the chunk is compressed; a record it keeps or
/// rewrites is stored in chunks tagged with the transform's name.
pub trait Transform: Send {
    /// Transforms one record; `scratch` is a buffer reused across calls.
    fn apply<'a>(&mut self, record: &'a [u8], scratch: &'a mut Vec<u8>) -> TransformOutcome<'a>;

    /// [`Transform::apply`] with the record's stream and timestamp (unix
    /// nanoseconds), for transforms that use them (a dynamic plugin is
    /// given both). The emitter calls this one.
    fn apply_record<'a>(
        &mut self,
        stream: &str,
        timestamp: u64,
        record: &'a [u8],
        scratch: &'a mut Vec<u8>,
    ) -> TransformOutcome<'a> {
        let _ = (stream, timestamp);
        self.apply(record, scratch)
    }

    /// The transform's own metrics (records dropped, unreadable), read at
    /// each scrape of `/metrics`; asked once, when it is built.
    fn metrics(&self) -> Vec<crate::metrics::ComponentMetric> {
        Vec::new()
    }
}
