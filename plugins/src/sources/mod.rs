//! Built-in sources.

#[cfg(feature = "sources-file")]
pub mod file;
#[cfg(feature = "sources-generator")]
pub mod generator;
#[cfg(feature = "sources-http")]
pub mod http;
#[cfg(feature = "sources-mqtt")]
pub mod mqtt;
#[cfg(feature = "sources-shipper")]
pub mod shipper;
#[cfg(feature = "sources-socket")]
pub mod socket;
#[cfg(feature = "sources-stdin")]
pub mod stdin;

/// Resolves when an emitter's open chunk should close: at `deadline`, or
/// never when no chunk is open. Sources select on it beside their input.
pub(crate) async fn linger(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
