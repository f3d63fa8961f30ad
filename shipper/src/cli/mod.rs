//! The subcommands, one module each.

pub(crate) mod bench;
pub(crate) mod demo;
pub(crate) mod inspect;
pub(crate) mod plugin;
pub(crate) mod run;
pub(crate) mod units;
pub(crate) mod validate;
