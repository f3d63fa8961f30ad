//! Built-in sources.

#[cfg(feature = "sources-http")]
pub mod http;
#[cfg(feature = "sources-socket")]
pub mod socket;
#[cfg(feature = "sources-stdin")]
pub mod stdin;
