//! The `shipper` library: what the binary is built from beyond the engine
//! in `shipper-core`. Today that is the config file ([`config`]); the
//! runtime, the admin API and the app SDK join it with later issues.
//!
//! Only this crate knows the config file format; `shipper-core` receives
//! plain option structs such as [`shipper_core::log::LogOptions`].

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod runtime;
