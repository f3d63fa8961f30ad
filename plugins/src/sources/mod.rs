//! Built-in sources.

#[cfg(feature = "sources-stdin")]
pub mod stdin;
