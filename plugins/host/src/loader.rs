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
//!
//! Loading a library runs its code in shipper, so only root and the user
//! shipper runs as may be able to change what a path loads:
//!
//! * The path is resolved here, one entry at a time from `/`, following
//!   symlinks, and every entry on the way (each directory, symlink, and the
//!   library) must be owned by root or by shipper's effective uid: an owner
//!   can change the entry or what is in it.
//! * No directory on the way may be writable by group or others, unless it
//!   has the sticky bit (`/tmp`): there an entry can be renamed or removed
//!   only by its owner, the directory's owner or root, who are all trusted
//!   by the rule above.
//! * The library itself must be a regular file not writable by group or
//!   others.
//!
//! The file is opened once; its checks and its identity come from `fstat`
//! of that descriptor, and the dynamic loader opens the same file through
//! `/proc/self/fd/N`, so nobody can swap it between the check and the load.
//! The dynamic loader remembers a library by the name it was opened by and
//! returns that library for the same name later, so the descriptor stays
//! open for as long as the library is mapped, which is for ever: `N` never
//! names another file.

#![allow(unsafe_code)] // See the crate docs: this module is a C boundary.

use std::collections::BTreeMap;
use std::ffi::{CStr, OsString};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
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
    #[error(
        "plugin {path}: refusing it: the directory {dir} on its path is writable by others than \
         its owner (mode {mode:o}) and not sticky, so they could put another library in its \
         place: `chmod go-w {dir}`, or install the library where only root or shipper's user \
         can write"
    )]
    InsecureDirectory {
        path: PathBuf,
        dir: PathBuf,
        mode: u32,
    },
    #[error(
        "plugin {path}: refusing it: {entry} is owned by uid {owner}; only root and the user \
         shipper runs as (uid {euid}) may own the library and the directories and symlinks on \
         its path, since an owner can change what it loads: `chown root {entry}`, or install \
         the library where root or uid {euid} owns every entry"
    )]
    NotOwned {
        path: PathBuf,
        entry: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error(
        "plugin {path}: cannot open the library through /proc/self/fd ({reason}); \
         shipper loads plugins from the descriptor it checked: mount /proc"
    )]
    NoProcFs { path: PathBuf, reason: String },
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

/// A library mapped from a canonical path.
#[derive(Debug)]
struct Loaded {
    /// The file it was, from `fstat` of `file`.
    identity: FileIdentity,
    mapped: Mapped,
    /// The descriptor it was opened through (`/proc/self/fd/N`), kept open
    /// for ever: the dynamic loader would hand this library back for that
    /// name, so `N` must never name another file.
    file: File,
}

/// Every library mapped so far, by canonical path.
static LOADED: Mutex<BTreeMap<PathBuf, Loaded>> = Mutex::new(BTreeMap::new());

/// The most symlinks followed on one path (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

extern "C" {
    /// `geteuid(2)`, from the C library every Rust program on Linux links.
    fn geteuid() -> u32;
}

/// The user this process acts as.
fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory of ours and
    // cannot fail.
    unsafe { geteuid() }
}

/// Loads the plugin library at `path` (once per process; see the module
/// docs) and checks it: a path only root and shipper's user can change
/// (see the module docs), a regular file not writable by group or others,
/// a shared library exporting `shipper_plugin_entry`, whose descriptor has
/// this host's ABI version, a known kind, a UTF-8 name and version, and the
/// functions of its kind.
pub fn load(path: &Path) -> Result<Arc<Plugin>, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    let euid = effective_uid();
    let canonical = resolve(path, euid)?;
    // Opened once (read-only, close-on-exec); everything below is about
    // this descriptor, whatever the path names by then.
    let file = File::open(&canonical).map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    if !metadata.is_file() {
        return Err(LoadError::NotAFile {
            path: path.to_owned(),
        });
    }
    check_owner(path, &canonical, &metadata, euid)?;
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
    if let Some(known) = loaded.get(&canonical) {
        if known.identity != identity {
            return Err(LoadError::ChangedOnDisk {
                path: path.to_owned(),
            });
        }
        return match &known.mapped {
            Mapped::Plugin(plugin) => Ok(plugin.clone()),
            // The same refused file: checked again (through the descriptor
            // it was mapped by, so the loader hands back that mapping),
            // refused again.
            Mapped::Refused => open(path, &known.file, &metadata)
                .and_then(|descriptor| check(path, &canonical, descriptor))
                .map(Arc::new),
        };
    }
    let mapped = match open(path, &file, &metadata) {
        // Not mapped: nothing to remember, and the descriptor may close.
        Err(error @ (LoadError::NotALibrary { .. } | LoadError::NoProcFs { .. })) => {
            return Err(error)
        }
        opened => opened
            .and_then(|descriptor| check(path, &canonical, descriptor))
            .map(Arc::new),
    };
    let entry = Loaded {
        identity,
        mapped: match &mapped {
            Ok(plugin) => Mapped::Plugin(plugin.clone()),
            Err(_) => Mapped::Refused,
        },
        file,
    };
    loaded.insert(canonical, entry);
    mapped
}

/// Resolves `path` to the library's canonical path, one entry at a time
/// from `/`, and checks every entry on the way: each directory, symlink and
/// the last entry owned by root or `euid`, and no directory writable by
/// group or others unless sticky. Symlinks are followed as the kernel
/// follows them (relative to the directory they are in; `..` of the
/// directory reached), so the entries checked are the ones the path goes
/// through.
fn resolve(path: &Path, euid: u32) -> Result<PathBuf, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().map_err(io)?.join(path)
    };
    // Components still to walk, the next one last.
    let mut pending: Vec<OsString> = Vec::new();
    push_components(&mut pending, &absolute);
    let mut resolved = PathBuf::from("/");
    check_directory(
        path,
        &resolved,
        &std::fs::metadata(&resolved).map_err(io)?,
        euid,
    )?;
    let mut symlinks = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            // `resolved` is a real directory: its parent was checked on
            // the way down.
            resolved.pop();
            continue;
        }
        let next = resolved.join(&name);
        let metadata = std::fs::symlink_metadata(&next).map_err(io)?;
        check_owner(path, &next, &metadata, euid)?;
        if metadata.file_type().is_symlink() {
            symlinks += 1;
            if symlinks > MAX_SYMLINKS {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("more than {MAX_SYMLINKS} symlinks on the way"),
                )));
            }
            let target = std::fs::read_link(&next).map_err(io)?;
            if target.is_absolute() {
                resolved = PathBuf::from("/");
            }
            push_components(&mut pending, &target);
        } else if metadata.is_dir() {
            check_directory(path, &next, &metadata, euid)?;
            resolved = next;
        } else if pending.is_empty() {
            resolved = next;
        } else {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is not a directory", next.display()),
            )));
        }
    }
    Ok(resolved)
}

/// Puts the components of `path` on `pending`, the first one last.
fn push_components(pending: &mut Vec<OsString>, path: &Path) {
    let start = pending.len();
    for component in path.components() {
        match component {
            Component::Normal(name) => pending.push(name.to_owned()),
            Component::ParentDir => pending.push(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    pending[start..].reverse();
}

/// An entry on the way to a library must be owned by root or `euid`.
fn check_owner(
    path: &Path,
    entry: &Path,
    metadata: &std::fs::Metadata,
    euid: u32,
) -> Result<(), LoadError> {
    let owner = metadata.uid();
    if owner == 0 || owner == euid {
        return Ok(());
    }
    Err(LoadError::NotOwned {
        path: path.to_owned(),
        entry: entry.to_owned(),
        owner,
        euid,
    })
}

/// A directory on the way to a library: owned by root or `euid`, and not
/// writable by group or others unless sticky (see the module docs).
fn check_directory(
    path: &Path,
    dir: &Path,
    metadata: &std::fs::Metadata,
    euid: u32,
) -> Result<(), LoadError> {
    check_owner(path, dir, metadata, euid)?;
    let mode = metadata.permissions().mode();
    const STICKY: u32 = 0o1000;
    if mode & 0o022 != 0 && mode & STICKY == 0 {
        return Err(LoadError::InsecureDirectory {
            path: path.to_owned(),
            dir: dir.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Opens the library checked as `metadata` through its descriptor `file`
/// and calls its entry function; checks the ABI version before anything
/// else in the descriptor is read.
fn open(
    path: &Path,
    file: &File,
    metadata: &std::fs::Metadata,
) -> Result<&'static Descriptor, LoadError> {
    use libloading::os::unix::{Library, Symbol, RTLD_LOCAL, RTLD_NOW};
    let through = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    // Without procfs the name would not open, or could name another file.
    match std::fs::metadata(&through) {
        Ok(found) if found.dev() == metadata.dev() && found.ino() == metadata.ino() => {}
        Ok(_) => {
            return Err(LoadError::NoProcFs {
                path: path.to_owned(),
                reason: format!("{} names another file", through.display()),
            })
        }
        Err(error) => {
            return Err(LoadError::NoProcFs {
                path: path.to_owned(),
                reason: format!("{}: {error}", through.display()),
            })
        }
    }
    // RTLD_NOW: an undefined symbol fails here, at load, not in the middle
    // of a delivery. RTLD_LOCAL: one plugin's symbols never resolve
    // another's.
    // SAFETY: opening a library runs its initializers: plugins are trusted
    // code by configuration, and `load` checked that only root and this
    // process's user could have put this file (the one `file` is open on)
    // where it is.
    let library = unsafe { Library::open(Some(&through), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| {
        LoadError::NotALibrary {
            path: path.to_owned(),
            reason: e.to_string(),
        }
    })?;
    // SAFETY: the symbol is declared by the ABI as `EntryFn`; a library
    // that exports the name with another type breaks the ABI's contract.
    let entry: Result<Symbol<EntryFn>, _> = unsafe { library.get(abi::ENTRY_SYMBOL) };
    let entry = entry.map(|entry| *entry);
    // Never unloaded, refused or not: its initializers ran, and the
    // descriptor and its functions stay valid for ever.
    std::mem::forget(library);
    let entry = match entry {
        Ok(entry) => entry,
        Err(e) => {
            return Err(LoadError::MissingSymbol {
                path: path.to_owned(),
                reason: e.to_string(),
            })
        }
    };
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
