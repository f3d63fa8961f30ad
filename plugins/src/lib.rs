//! Reusable building blocks of shipper's built-in sources.
//!
//! The sources themselves (file, socket, HTTP, ...) arrive with the
//! pipeline; this crate holds the parts they share, each small, allocation-
//! conscious and tested on its own:
//!
//! * [`framing::lines`] — a newline splitter for byte streams read in
//!   arbitrary pieces, with a bounded line length and stream offsets;
//! * [`framing::octet`] — RFC 6587 octet-counting framing (`<len> <msg>`);
//! * [`parse::syslog`] — RFC 5424 and RFC 3164 parsing into borrowed fields,
//!   and conversion to a JSON record;
//! * [`multiline::Joiner`] — joins lines into records by a start-of-record
//!   regex, with a size limit and a timeout;
//! * [`transform`] — the `filter`, `sample` and `remap` record transforms
//!   over JSON-object records;
//! * [`corpus`] — seeded, deterministic generators of realistic JSON
//!   records (access logs, application events, sensor readings), which the
//!   `generator` source, `shipper demo` and the benchmarks use.
//!
//! Each group sits behind its own cargo feature (`framing`, `syslog`,
//! `multiline`, `transforms`, `corpus`), all on by default.
//!
//! ```
//! use shipper_plugins::framing::lines::{LineOptions, LineSplitter};
//!
//! let mut splitter = LineSplitter::new(LineOptions::default());
//! let mut lines = Vec::new();
//! for piece in [&b"first li"[..], b"ne\nsecond\nthi", b"rd"] {
//!     let mut cursor = splitter.feed(piece);
//!     while let Some(line) = cursor.next() {
//!         lines.push((line.bytes.to_vec(), line.end_offset));
//!     }
//! }
//! if let Some(last) = splitter.finish() {
//!     lines.push((last.bytes.to_vec(), last.end_offset));
//! }
//! assert_eq!(
//!     lines,
//!     [(b"first line".to_vec(), 11), (b"second".to_vec(), 18), (b"third".to_vec(), 23)]
//! );
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod component;
pub mod corpus;
pub mod framing;
pub mod listen;
pub mod multiline;
pub mod parse;
pub mod sinks;
pub mod sources;
pub mod throttle;
pub mod transform;
