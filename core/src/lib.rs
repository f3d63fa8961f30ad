//! shipper's engine: records grouped into compressed chunks where they are
//! produced ([`chunk`]), and the memory-mapped segmented log that keeps them
//! on local disk until every consumer has acknowledged them ([`log`]).
//!
//! Unsafe code lives in one module only, `log::mmap`; see its docs for
//! what the mapping relies on.

#![deny(unsafe_code)]

pub mod chunk;
pub mod component;
pub mod corpus;
pub mod emit;
mod error;
pub mod log;
pub mod metrics;
pub mod time;
mod transform;

pub use error::{is_transient_io, Error, Result};
