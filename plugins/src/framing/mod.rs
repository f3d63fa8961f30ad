//! Framing: cutting a byte stream, read in arbitrary pieces, into messages.
//!
//! Both framers follow the same shape: `feed(piece)` returns a cursor whose
//! `next()` hands out the messages completed by that piece. A message that
//! lies inside the piece is returned as a slice of it (no copy); only a
//! message spanning two or more pieces is assembled in the framer's own
//! buffer, which never grows past the configured maximum. Each message
//! carries the stream offset just after it, so a source can record "the
//! position after the last durable message" and resume there.

pub mod lines;
pub mod octet;
