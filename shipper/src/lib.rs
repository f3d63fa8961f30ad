//! The `shipper` library: what the binary is built from beyond the engine
//! in `shipper-core`:
//!
//! * [`components`] — the lists of built-in kinds per role (`SOURCES`,
//!   `TRANSFORMS`, `SINKS`), through which everything below finds a
//!   component's type; each kind's module is in `shipper-components`;
//! * [`config`] — the config file: its loader and its diagnostics, each
//!   with the key path and the line of the file;
//! * [`runtime`] — runs and reloads a config's pipeline: sources into the
//!   log, one delivery task per sink out of it, and the shutdown of sinks;
//! * [`admin`] — the admin endpoint (`/health`, `/metrics`, `POST /reload`);
//! * [`ingest`] — the embedded SDK: an application inserts objects, shipper
//!   stores them in its own log on local disk and the config's sinks ship
//!   them, with no sidecar process;
//! * [`metrics`] — the process's metrics registry (with what belongs to no
//!   component: the log's, the process's, the build's), and reading a
//!   scrape; [`procstat`] — CPU time and memory of a process from `/proc`.
//!
//! Only this crate knows the config file format; `shipper-core` receives
//! plain option structs such as [`shipper_core::log::LogOptions`].

#![forbid(unsafe_code)]

pub mod admin;
pub mod components;
pub mod config;
pub mod harness;
pub mod ingest;
pub mod metrics;
pub mod procstat;
pub mod runtime;
