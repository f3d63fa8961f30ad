//! Built-in sources.

pub mod file;
pub mod generator;
pub mod http;
pub mod mqtt;
pub mod sdk;
pub mod shipper;
pub mod socket;
pub mod stdin;

/// Resolves when an emitter's open chunk should close: at `deadline`, or
/// never when no chunk is open. Sources select on it beside their input.
pub(crate) async fn linger(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
