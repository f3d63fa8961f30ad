//! Built-in sinks.

pub mod blackhole;
pub mod file;
pub mod http;
pub mod nats;
pub mod postgres;
pub mod stdout;
