//! Built-in sources.

#[cfg(feature = "sources-socket")]
pub mod socket;
#[cfg(feature = "sources-stdin")]
pub mod stdin;
