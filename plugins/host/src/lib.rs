//! The host side of shipper's dynamic plugins: loads a shared library
//! that speaks the C ABI of [`shipper_plugin::abi`], checks it, and runs
//! its plugin behind the engine's own traits: [`DynamicSource`] is a
//! [`shipper_core::component::Source`], [`DynamicTransform`] a
//! [`shipper_core::component::Transform`], [`DynamicSink`] a
//! [`shipper_core::component::Sink`]. `docs/plugins.md` describes the ABI.
//!
//! ```no_run
//! let plugin = shipper_plugin_host::load(std::path::Path::new("./libredact.so"))?;
//! println!("{} {} ({}), ABI {}", plugin.name(), plugin.version(), plugin.kind(), plugin.abi_version());
//! # Ok::<(), shipper_plugin_host::LoadError>(())
//! ```
//!
//! Where the unsafe code is, and what it relies on:
//!
//! * `loader.rs` opens libraries (`dlopen` runs their initializers: a
//!   library is trusted code, which is why it must be a file that only
//!   root and shipper's user can change, on a path only they can change,
//!   and is loaded from the descriptor it was checked through) and reads
//!   the descriptor only after its ABI version matched. Libraries are
//!   never unloaded, so the descriptor and every function pointer in it
//!   stay valid for the life of the process.
//! * `instance.rs` holds a plugin instance and makes every call into it:
//!   the ABI's rules (borrowed inputs live for the call; a replacement
//!   lives until the next call on the instance; calls on one instance never
//!   overlap) are kept there, by `&mut self`.
//! * `source.rs` implements the host callbacks a source calls back into;
//!   none of them unwinds into the plugin.
//!
//! The host owns the threads: sources run on a thread of their own, sinks'
//! calls run on tokio's blocking pool, and transforms run inline in the
//! source they are attached to (the runtime runs sources with a dynamic
//! transform off the async workers). A plugin never needs a runtime.

#![deny(unsafe_code)]

mod instance;
mod loader;
mod sink;
mod source;
mod stats;
mod transform;

pub use instance::{check_config, CallError};
pub use loader::{load, Kind, LoadError, Plugin};
pub use sink::DynamicSink;
pub use source::DynamicSource;
pub use stats::PluginStats;
pub use transform::DynamicTransform;
