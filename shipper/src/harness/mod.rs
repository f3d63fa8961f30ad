//! The end-to-end benchmark harness: what `shipper bench` and the e2e
//! benchmark (`shipper/benches/e2e.rs`) both use to run real pipelines
//! and measure them.
//!
//! * [`Process`]: a `shipper run` child on a config the harness writes,
//!   followed through its admin endpoint's `/metrics` and `/proc`
//!   (CPU, peak and current memory), stopped with SIGTERM and checked to
//!   exit cleanly, killed if the harness fails first;
//! * [`baseline`]: what the same bytes cost without shipper, measured in
//!   the same run (memcpy, `write(2)`, one-thread zstd).
//!
//! The records come from [`shipper_core::corpus`].

pub mod baseline;
mod process;

pub use process::{free_port, sample, scrape, Process};
