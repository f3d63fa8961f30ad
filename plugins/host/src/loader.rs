//! Opening a plugin library and checking what it exports.
//!
//! A library is opened once per path and never unloaded: dlclose would
//! invalidate the descriptor and every function pointer in it, and plugin
//! instances, threads or thread-local destructors of the library may still
//! be alive. Opening the same path again returns the same [`Plugin`] — as
//! long as the file did not change; a changed file cannot replace code that
//! is already mapped (the dynamic loader would hand back the old library),
//! so it is refused with an error saying to install it under a new name.
//! That holds for a library refused after it was mapped (a wrong ABI
//! version, say) as well: its rebuild needs a new name too.

#![allow(unsafe_code)] // See the crate docs: this module is a C boundary.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use shipper_plugin::abi::{self, Descriptor, EntryFn};

/// What a plugin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Source,
    Transform,
    Sink,
}

impl Kind {
    /// `source`, `transform` or `sink`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Transform => "transform",
            Kind::Sink => "sink",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a library cannot be used as a plugin. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin {path}: not a regular file")]
    NotAFile { path: PathBuf },
    #[error(
        "plugin {path}: refusing a library writable by others than its owner (mode {mode:o}); \
         loading it runs its code in shipper: `chmod go-w {path}`"
    )]
    Insecure { path: PathBuf, mode: u32 },
    #[error("plugin {path}: not a loadable shared library: {reason}")]
    NotALibrary { path: PathBuf, reason: String },
    #[error(
        "plugin {path}: the library does not export `shipper_plugin_entry`; \
         is it a shipper plugin (export_plugin! in Rust, shipper_plugin.h in C)? ({reason})"
    )]
    MissingSymbol { path: PathBuf, reason: String },
    #[error(
        "plugin {path}: built for plugin ABI version {found}; this shipper speaks version {expected}: \
         rebuild the plugin against a matching shipper-plugin crate or shipper_plugin.h"
    )]
    AbiMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("plugin {path}: invalid descriptor: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "plugin {path}: the file changed since shipper loaded it, and a loaded library is never \
         unloaded: install the new build under a new file name (e.g. libfoo-2.so) and point the \
         config at it, or restart shipper"
    )]
    ChangedOnDisk { path: PathBuf },
}

/// A loaded plugin library: what its descriptor says, and the descriptor.
#[derive(Debug)]
pub struct Plugin {
    path: PathBuf,
    name: String,
    version: String,
    kind: Kind,
    abi_version: u32,
    descriptor: &'static Descriptor,
}

impl Plugin {
    /// The file it was loaded from (canonical).
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The plugin's own name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The plugin's own version.
    pub fn version(&self) -> &str {
        &self.version
    }
    /// Source, transform or sink.
    pub fn kind(&self) -> Kind {
        self.kind
    }
    /// The ABI version it was built for (equal to the host's).
    pub fn abi_version(&self) -> u32 {
        self.abi_version
    }
    pub(crate) fn descriptor(&self) -> &'static Descriptor {
        self.descriptor
    }
}

/// What identifies a file's contents well enough to notice a rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
    len: u64,
    modified: (i64, i64),
}

impl FileIdentity {
    fn of(metadata: &std::fs::Metadata) -> Self {
        FileIdentity {
            device: metadata.dev(),
            inode: metadata.ino(),
            len: metadata.len(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
        }
    }
}

/// A library the loader has mapped: a plugin, or one it refused after
/// `dlopen` (it stays mapped too, and the loader would return that mapping
/// for the same path however the file changes).
#[derive(Debug)]
enum Mapped {
    Plugin(Arc<Plugin>),
    Refused,
}

/// Every library mapped so far, by canonical path, with the file it was.
static LOADED: Mutex<BTreeMap<PathBuf, (FileIdentity, Mapped)>> = Mutex::new(BTreeMap::new());

/// Loads the plugin library at `path` (once per process; see the module
/// docs) and checks it: a regular file not writable by group or others, a
/// shared library exporting `shipper_plugin_entry`, whose descriptor has
/// this host's ABI version, a known kind, a UTF-8 name and version, and the
/// functions of its kind.
pub fn load(path: &Path) -> Result<Arc<Plugin>, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    let canonical = path.canonicalize().map_err(io)?;
    let metadata = std::fs::metadata(&canonical).map_err(io)?;
    if !metadata.is_file() {
        return Err(LoadError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = metadata.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(LoadError::Insecure {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    let identity = FileIdentity::of(&metadata);
    let mut loaded = LOADED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match loaded.get(&canonical) {
        Some((known, _)) if *known != identity => {
            return Err(LoadError::ChangedOnDisk {
                path: path.to_owned(),
            })
        }
        Some((_, Mapped::Plugin(plugin))) => return Ok(plugin.clone()),
        // The same refused file: checked again, refused again.
        Some((_, Mapped::Refused)) | None => {}
    }
    let checked = open(path, &canonical)
        .and_then(|descriptor| check(path, &canonical, descriptor).map(Arc::new));
    match &checked {
        Ok(plugin) => {
            loaded.insert(canonical, (identity, Mapped::Plugin(plugin.clone())));
        }
        // Not mapped: nothing to remember.
        Err(LoadError::NotALibrary { .. }) => {}
        Err(_) => {
            loaded.insert(canonical, (identity, Mapped::Refused));
        }
    }
    checked
}

/// Opens the library and calls its entry function; checks the ABI version
/// before anything else in the descriptor is read.
fn open(path: &Path, canonical: &Path) -> Result<&'static Descriptor, LoadError> {
    use libloading::os::unix::{Library, Symbol, RTLD_LOCAL, RTLD_NOW};
    // RTLD_NOW: an undefined symbol fails here, at load, not in the middle
    // of a delivery. RTLD_LOCAL: one plugin's symbols never resolve
    // another's.
    // SAFETY: opening a library runs its initializers: plugins are trusted
    // code by configuration (and `load` refused files others can write).
    let library =
        unsafe { Library::open(Some(canonical), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| {
            LoadError::NotALibrary {
                path: path.to_owned(),
                reason: e.to_string(),
            }
        })?;
    // SAFETY: the symbol is declared by the ABI as `EntryFn`; a library
    // that exports the name with another type breaks the ABI's contract.
    let entry: Result<Symbol<EntryFn>, _> = unsafe { library.get(abi::ENTRY_SYMBOL) };
    let entry = match entry {
        Ok(entry) => *entry,
        Err(e) => {
            return Err(LoadError::MissingSymbol {
                path: path.to_owned(),
                reason: e.to_string(),
            })
        }
    };
    // Never unloaded: the descriptor and its functions stay valid forever.
    std::mem::forget(library);
    // SAFETY: `entry` is the library's entry function (above), which takes
    // nothing and returns a pointer to static data.
    let descriptor = unsafe { entry() };
    if descriptor.is_null() {
        return Err(LoadError::Invalid {
            path: path.to_owned(),
            reason: "shipper_plugin_entry returned NULL".into(),
        });
    }
    // Every ABI version starts with `uint32_t abi_version`: read only that
    // until it is known to be ours.
    // SAFETY: the entry function returned a non-null pointer to a
    // descriptor, whose first field is a u32 in every version.
    let found = unsafe { descriptor.cast::<u32>().read() };
    if found != abi::ABI_VERSION {
        return Err(LoadError::AbiMismatch {
            path: path.to_owned(),
            found,
            expected: abi::ABI_VERSION,
        });
    }
    // SAFETY: the second field is `uint32_t size` in version 1.
    let size = unsafe { descriptor.cast::<u32>().add(1).read() };
    if (size as usize) < std::mem::size_of::<Descriptor>() {
        return Err(LoadError::Invalid {
            path: path.to_owned(),
            reason: format!(
                "its size field says {size} bytes; an ABI {} descriptor has {}",
                abi::ABI_VERSION,
                std::mem::size_of::<Descriptor>()
            ),
        });
    }
    // SAFETY: a version-1 descriptor of at least our size, in a library
    // that is never unloaded: valid for 'static, and immutable.
    Ok(unsafe { &*descriptor })
}

/// Checks the fields of a version-matched descriptor.
fn check(
    path: &Path,
    canonical: &Path,
    descriptor: &'static Descriptor,
) -> Result<Plugin, LoadError> {
    let invalid = |reason: String| LoadError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let text = |field: &str, pointer: *const std::ffi::c_char| {
        if pointer.is_null() {
            return Err(invalid(format!("its {field} is NULL")));
        }
        // SAFETY: the ABI says name and version are NUL-terminated static
        // strings; the pointer is not null.
        let text = unsafe { CStr::from_ptr(pointer) };
        text.to_str()
            .map(str::to_owned)
            .map_err(|_| invalid(format!("its {field} is not UTF-8")))
    };
    let name = text("name", descriptor.name)?;
    let version = text("version", descriptor.version)?;
    if name.is_empty() {
        return Err(invalid("its name is empty".into()));
    }
    let kind = match descriptor.kind {
        abi::KIND_SOURCE => Kind::Source,
        abi::KIND_TRANSFORM => Kind::Transform,
        abi::KIND_SINK => Kind::Sink,
        other => return Err(invalid(format!("unknown kind {other}"))),
    };
    let mut needed = vec![
        ("create", descriptor.create.is_none()),
        ("destroy", descriptor.destroy.is_none()),
    ];
    match kind {
        Kind::Source => needed.push(("source_run", descriptor.source_run.is_none())),
        Kind::Transform => needed.push(("transform", descriptor.transform.is_none())),
        Kind::Sink => needed.extend([
            ("sink_open", descriptor.sink_open.is_none()),
            ("sink_deliver", descriptor.sink_deliver.is_none()),
            ("sink_close", descriptor.sink_close.is_none()),
        ]),
    }
    let missing: Vec<&str> = needed
        .into_iter()
        .filter_map(|(function, absent)| absent.then_some(function))
        .collect();
    if !missing.is_empty() {
        return Err(invalid(format!(
            "a {kind} plugin needs {}, which is NULL",
            missing.join(", ")
        )));
    }
    Ok(Plugin {
        path: canonical.to_owned(),
        name,
        version,
        kind,
        abi_version: descriptor.abi_version,
        descriptor,
    })
}
