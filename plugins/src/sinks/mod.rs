//! Built-in sinks.

#[cfg(feature = "sinks-blackhole")]
pub mod blackhole;
#[cfg(feature = "sinks-file")]
pub mod file;
