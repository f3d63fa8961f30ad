//! The `shipper` library: what the binary is built from beyond the engine
//! in `shipper-core`: the config file ([`config`]), the runtime that runs
//! and reloads a config's pipeline ([`runtime`]) and the admin endpoint
//! ([`admin`]). The app SDK joins them with a later issue.
//!
//! Only this crate knows the config file format; `shipper-core` receives
//! plain option structs such as [`shipper_core::log::LogOptions`].

#![forbid(unsafe_code)]

pub mod admin;
pub mod components;
pub mod config;
pub mod ingest;
pub mod metrics;
pub mod procstat;
pub mod runtime;
