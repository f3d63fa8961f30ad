//! Built-in sinks.

#[cfg(feature = "sinks-blackhole")]
pub mod blackhole;
#[cfg(feature = "sinks-file")]
pub mod file;
#[cfg(feature = "sinks-http")]
pub mod http;
#[cfg(feature = "sinks-nats")]
pub mod nats;
#[cfg(feature = "sinks-postgres")]
pub mod postgres;
#[cfg(feature = "sinks-stdout")]
pub mod stdout;
