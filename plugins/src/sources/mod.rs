//! Built-in sources.

pub mod file;
pub mod generator;
pub mod http;
pub mod mqtt;
pub mod sdk;
pub mod shipper;
pub mod socket;
pub mod stdin;
