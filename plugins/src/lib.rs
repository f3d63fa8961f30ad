//! shipper's built-in components and the building blocks they share.
//!
//! Each built-in source ([`sources`]), transform ([`transform`]) and sink
//! ([`sinks`]) is one module that holds all of it: its `type` name (`TYPE`
//! on its config struct), its config struct (serde, unknown keys refused),
//! its checks, how it is built from that config, and its metrics (the
//! implementation's `Source::metrics`, `Transform::metrics` or
//! `Sink::metrics`). [`config`] is the config side of the component
//! interface those config structs implement (`SourceComponent`,
//! `TransformComponent`, `SinkComponent`, `Checks`, `BuildContext`,
//! `Listener`) and the value types they share (`ByteSize`, `DurationMs`,
//! `Compression`, ...); the lists of kinds are in `shipper::components`.
//!
//! The building blocks, each small, allocation-conscious and tested on its
//! own:
//!
//! * [`framing::lines`] — a newline splitter for byte streams read in
//!   arbitrary pieces, with a bounded line length and stream offsets;
//! * [`framing::octet`] — RFC 6587 octet-counting framing (`<len> <msg>`);
//! * [`parse::syslog`] — RFC 5424 and RFC 3164 parsing into borrowed fields,
//!   and conversion to a JSON record;
//! * [`multiline::Joiner`] — joins lines into records by a start-of-record
//!   regex, with a size limit and a timeout;
//! * [`listen`] — what every listener shares: connection caps, an HTTP/1.1
//!   server with deadlines, request bodies read against a memory budget,
//!   and the keys every listener's config shares ([`listen::config`]);
//! * [`throttle`] — an event that can repeat thousands of times a second
//!   counted every time and logged at most once per interval;
//! * [`transform`] — the `filter`, `sample` and `remap` record transforms
//!   over JSON-object records, with the field paths and counters they share.
//!
//! Every module is always built: the crate has no cargo features.
//!
//! ```
//! use shipper_components::framing::lines::{LineOptions, LineSplitter};
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

pub mod config;
pub mod framing;
pub mod listen;
pub mod multiline;
pub mod parse;
pub mod reread;
pub mod sinks;
pub mod sources;
pub mod throttle;
pub mod tls;
pub mod transform;
