//! The component interface's configuration side: what every built-in
//! source, transform and sink module provides so that the config loader,
//! `shipper validate`, the runtime and reload handle it without knowing
//! its type.
//!
//! A component module holds its `type` name, its config struct (serde,
//! unknown keys refused), its checks (reported through [`Checks`], which
//! the config loader implements with the key path and line of the file),
//! and how it is built from that config. The list of kinds the loader
//! iterates is `shipper::components`.

mod bytesize;
mod values;

use std::any::Any;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use shipper_core::component::{Sink, Source, Transform};

pub use bytesize::{parse_byte_size, ByteSize};
pub use values::{
    duration_ms, Codec, Compression, DurationMs, FieldValue, FileMode, Pattern, MAX_DURATION_MS,
};

/// Where a component's checks report what is wrong with its config. Keys
/// are relative to the component's table (`&[]`: the table itself).
pub trait Checks {
    /// Reports an error (`error`) or a warning about `keys`.
    fn report(&mut self, error: bool, keys: &[&str], message: String);
}

impl dyn Checks + '_ {
    /// An error about `keys`: the config is refused.
    pub fn error(&mut self, keys: &[&str], message: impl Into<String>) {
        self.report(true, keys, message.into());
    }

    /// A warning about `keys`: reported, the config still runs.
    pub fn warning(&mut self, keys: &[&str], message: impl Into<String>) {
        self.report(false, keys, message.into());
    }
}

/// What building a component is given besides its config.
#[derive(Debug, Clone, Copy)]
pub struct BuildContext<'a> {
    /// The component's name in the config.
    pub name: &'a str,
    /// The data directory: a component may keep small state under
    /// `sinks/` there.
    pub data_dir: &'a Path,
}

/// Why a component could not be built (the runtime prefixes its name).
pub type BuildError = String;

/// A config value that can be cloned and compared behind `dyn` (reload
/// compares the running config with the new one).
pub trait DynConfig: Any + Debug + Send + Sync {
    /// `self` as `Any`, to compare with another of the same type.
    fn as_any(&self) -> &dyn Any;
    /// Whether `other` is the same type with equal values.
    fn same_as(&self, other: &dyn Any) -> bool;
}

// Only for what a config is read into: a `Box<dyn SinkComponent>` (which
// is `PartialEq` too) must not be a `DynConfig` itself, or a call on the
// box would compare or downcast the box instead of the config in it.
impl<T: Any + Debug + Send + Sync + PartialEq + serde::de::DeserializeOwned> DynConfig for T {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn same_as(&self, other: &dyn Any) -> bool {
        other.downcast_ref::<T>() == Some(self)
    }
}

/// A component config's `type`, the value that selects it in a table.
pub trait Named {
    /// The value of `type`.
    const TYPE: &'static str;
}

macro_rules! boxed {
    ($boxed:ident, $trait:ident) => {
        /// What every config of the role gets from [`Named`] and `Clone`:
        /// its `type` and a boxed copy, behind `dyn` (implemented for
        /// every such config; nothing to write).
        pub trait $boxed {
            /// Its `type`.
            fn type_name(&self) -> &'static str;
            /// A copy, boxed.
            fn clone_box(&self) -> Box<dyn $trait>;
        }

        impl<T: $trait + Named + Clone> $boxed for T {
            fn type_name(&self) -> &'static str {
                T::TYPE
            }

            fn clone_box(&self) -> Box<dyn $trait> {
                Box::new(self.clone())
            }
        }
    };
}

boxed!(BoxedSource, SourceComponent);
boxed!(BoxedTransform, TransformComponent);
boxed!(BoxedSink, SinkComponent);

/// A source's config: what `[sources.NAME]` of its type holds.
#[async_trait]
pub trait SourceComponent: DynConfig + BoxedSource {
    /// Reports what is wrong with the config; `shipper run` refuses
    /// whatever `check` reports as an error.
    fn check(&self, checks: &mut dyn Checks) {
        let _ = checks;
    }

    /// The key of the address it listens on and the address, if it
    /// listens: two components on one address are refused.
    fn listener(&self) -> Option<(&'static str, Listener)> {
        None
    }

    /// Whether its listener has TLS or a token: `validate` warns about a
    /// listener beyond loopback that has neither.
    fn secured(&self) -> bool {
        false
    }

    /// Whether a transform can read its records (a source that stores
    /// received chunks as they are, compressed, cannot be).
    fn transformable(&self) -> bool {
        true
    }

    /// The source, built (a listener is bound here).
    async fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError>;
}

/// A transform's config.
pub trait TransformComponent: DynConfig + BoxedTransform {
    /// The sources and transforms it reads.
    fn inputs(&self) -> &[String];

    /// Reports what is wrong with the config.
    fn check(&self, checks: &mut dyn Checks) {
        let _ = checks;
    }

    /// The transform, built.
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Transform>, BuildError>;
}

/// A sink's config.
pub trait SinkComponent: DynConfig + BoxedSink {
    /// The sources and transforms it reads.
    fn inputs(&self) -> &[String];

    /// Reports what is wrong with the config.
    fn check(&self, checks: &mut dyn Checks) {
        let _ = checks;
    }

    /// What it must have to itself, each with the key that names it: two
    /// sinks claiming the same are refused (two nats sinks on one subject
    /// of one server would take each other's records for their own).
    fn exclusive(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// How its batches are gathered, if it says: the delivery loop waits
    /// for a batch below these limits to fill until its oldest record is
    /// `max_age` old.
    fn batch(&self) -> Option<shipper_core::component::BatchPolicy> {
        None
    }

    /// The sink, built.
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError>;
}

macro_rules! boxed_config {
    ($trait:ident) => {
        impl Clone for Box<dyn $trait> {
            fn clone(&self) -> Self {
                self.clone_box()
            }
        }

        impl PartialEq for Box<dyn $trait> {
            fn eq(&self, other: &Self) -> bool {
                // On the configs, not the boxes (a box is a `DynConfig` too).
                (**self).same_as((**other).as_any())
            }
        }
    };
}

boxed_config!(SourceComponent);
boxed_config!(TransformComponent);
boxed_config!(SinkComponent);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
    struct Config(u32);

    impl Named for Config {
        const TYPE: &'static str = "test";
    }

    impl SinkComponent for Config {
        fn inputs(&self) -> &[String] {
            &[]
        }

        fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
            Err("not built".into())
        }
    }

    #[test]
    fn boxed_configs_compare_by_value() {
        let one: Box<dyn SinkComponent> = Box::new(Config(1));
        assert!(one == one.clone());
        assert!(one != Box::new(Config(2)) as Box<dyn SinkComponent>);
        assert!(one.as_any().downcast_ref::<Config>().is_some());
    }
}

/// What a component (or the admin endpoint) listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listener {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A UDP address.
    Udp(SocketAddr),
    /// A Unix socket's path.
    Unix(PathBuf),
}

impl Listener {
    /// Whether binding both would fail (or, for a Unix socket, the second
    /// would replace the first's socket file). Port 0 is any free port.
    /// An unspecified IPv6 address is dual-stack (Linux's default), so it
    /// takes the port on IPv4 too.
    pub fn overlaps(&self, other: &Listener) -> bool {
        let addresses = |a: &SocketAddr, b: &SocketAddr| {
            let covers = |wide: &SocketAddr, narrow: &SocketAddr| {
                wide.ip().is_unspecified() && (wide.is_ipv6() || narrow.is_ipv4())
            };
            a.port() != 0
                && a.port() == b.port()
                && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
        };
        match (self, other) {
            (Listener::Tcp(a), Listener::Tcp(b)) | (Listener::Udp(a), Listener::Udp(b)) => {
                addresses(a, b)
            }
            (Listener::Unix(a), Listener::Unix(b)) => a == b,
            _ => false,
        }
    }
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listener::Tcp(address) => write!(f, "tcp {address}"),
            Listener::Udp(address) => write!(f, "udp {address}"),
            Listener::Unix(path) => write!(f, "unix socket {}", path.display()),
        }
    }
}
