#![forbid(unsafe_code)]
//! Helpers shared by the integration tests and their helper binaries.

pub mod records;
