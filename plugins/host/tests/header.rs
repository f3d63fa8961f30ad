//! The C header and the Rust ABI must agree byte for byte, and the loader
//! must treat a library it has loaded as loaded for good: both checked
//! with C compiled here by `cc`.

use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use shipper_core::component::{Transform, TransformOutcome};
use shipper_plugin::abi;

fn header_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/include")
}

/// Compiles `source` with `cc` and `args` into `out`.
fn cc(source: &str, out: &Path, args: &[&str]) {
    let dir = out.parent().unwrap();
    let file = dir.join(format!("{}.c", out.file_stem().unwrap().to_string_lossy()));
    std::fs::write(&file, source).unwrap();
    let compiled = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror"])
        .args(args)
        .arg("-I")
        .arg(header_dir())
        .arg("-o")
        .arg(out)
        .arg(&file)
        .output()
        .expect("running cc");
    assert!(
        compiled.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
}

#[test]
fn the_c_header_lays_out_every_struct_as_the_rust_abi_does() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("layout");
    let fields: &[(&str, &[&str])] = &[
        ("shipper_slice", &["ptr", "len"]),
        (
            "shipper_record",
            &["payload", "stream", "timestamp_ns", "offset"],
        ),
        ("shipper_error", &["host", "set"]),
        (
            "shipper_sink_context",
            &["name", "producer_id", "data_dir", "committed"],
        ),
        (
            "shipper_source_host",
            &["host", "emit", "wait_durable", "wait_stop"],
        ),
        (
            "shipper_plugin_descriptor",
            &[
                "abi_version",
                "size",
                "kind",
                "name",
                "version",
                "create",
                "destroy",
                "transform",
                "sink_open",
                "sink_deliver",
                "sink_close",
                "source_run",
            ],
        ),
    ];
    let mut source = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"shipper_plugin.h\"\nint main(void) {\n",
    );
    for (name, members) in fields {
        source.push_str(&format!("    printf(\"{name} %zu\\n\", sizeof({name}));\n"));
        for member in *members {
            source.push_str(&format!(
                "    printf(\"{name}.{member} %zu\\n\", offsetof({name}, {member}));\n"
            ));
        }
    }
    source.push_str(
        "    printf(\"constants %u %d %d %d %d %u %u %u %u %u %u\\n\", SHIPPER_PLUGIN_ABI_VERSION, \
         SHIPPER_OK, SHIPPER_RETRY, SHIPPER_FATAL, SHIPPER_PANICKED, SHIPPER_KEEP, SHIPPER_DROP, \
         SHIPPER_REPLACE, SHIPPER_KIND_SOURCE, SHIPPER_KIND_TRANSFORM, SHIPPER_KIND_SINK);\n",
    );
    source.push_str("    return 0;\n}\n");
    cc(&source, &program, &[]);
    let output = Command::new(&program).output().unwrap();
    let c = String::from_utf8(output.stdout).unwrap();

    let mut rust = String::new();
    macro_rules! layout {
        ($c:literal, $ty:ty, [$($field:ident),*]) => {
            rust.push_str(&format!("{} {}\n", $c, size_of::<$ty>()));
            $(rust.push_str(&format!("{}.{} {}\n", $c, stringify!($field), offset_of!($ty, $field)));)*
        };
    }
    layout!("shipper_slice", abi::Slice, [ptr, len]);
    layout!(
        "shipper_record",
        abi::Record,
        [payload, stream, timestamp_ns, offset]
    );
    layout!("shipper_error", abi::ErrorOut, [host, set]);
    layout!(
        "shipper_sink_context",
        abi::SinkContext,
        [name, producer_id, data_dir, committed]
    );
    layout!(
        "shipper_source_host",
        abi::SourceHost,
        [host, emit, wait_durable, wait_stop]
    );
    layout!(
        "shipper_plugin_descriptor",
        abi::Descriptor,
        [
            abi_version,
            size,
            kind,
            name,
            version,
            create,
            destroy,
            transform,
            sink_open,
            sink_deliver,
            sink_close,
            source_run
        ]
    );
    rust.push_str(&format!(
        "constants {} {} {} {} {} {} {} {} {} {} {}\n",
        abi::ABI_VERSION,
        abi::STATUS_OK,
        abi::STATUS_RETRY,
        abi::STATUS_FATAL,
        abi::STATUS_PANICKED,
        abi::ACTION_KEEP,
        abi::ACTION_DROP,
        abi::ACTION_REPLACE,
        abi::KIND_SOURCE,
        abi::KIND_TRANSFORM,
        abi::KIND_SINK
    ));
    assert_eq!(c, rust);
}

/// A C transform that keeps every record; `marker` changes its bytes.
fn keep_everything(marker: &str) -> String {
    format!(
        r#"#include <stdlib.h>
#include "shipper_plugin.h"
static void *create(shipper_slice config, const shipper_error *error) {{
    (void)config; (void)error;
    return malloc(1);
}}
static void destroy(void *instance) {{ free(instance); }}
static int32_t transform(void *instance, const shipper_record *record, uint32_t *action,
                         shipper_slice *replacement, const shipper_error *error) {{
    (void)instance; (void)record; (void)replacement; (void)error;
    *action = SHIPPER_KEEP;
    return SHIPPER_OK;
}}
static const shipper_plugin_descriptor DESCRIPTOR = {{
    SHIPPER_PLUGIN_ABI_VERSION, sizeof(shipper_plugin_descriptor), SHIPPER_KIND_TRANSFORM,
    "keep", "{marker}", create, destroy, transform, NULL, NULL, NULL, NULL,
}};
const shipper_plugin_descriptor *shipper_plugin_entry(void) {{ return &DESCRIPTOR; }}
"#
    )
}

#[test]
fn a_loaded_library_stays_loaded_and_a_changed_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("libkeep.so");
    cc(
        &keep_everything("1.0"),
        &library,
        &["-fPIC", "-shared", "-O1"],
    );
    let first = shipper_plugin_host::load(&library).unwrap();
    assert_eq!(
        (first.name(), first.version(), first.kind()),
        ("keep", "1.0", shipper_plugin_host::Kind::Transform)
    );
    let again = shipper_plugin_host::load(&library).unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &again), "loaded once");
    let mut transform = shipper_plugin_host::DynamicTransform::new("keep", &first, "{}").unwrap();
    let mut scratch = Vec::new();
    assert_eq!(
        transform.apply_record("s", 1, b"{\"a\":1}", &mut scratch),
        TransformOutcome::Keep(b"{\"a\":1}")
    );
    let wrong_kind = shipper_plugin_host::DynamicSink::new("keep", &first, "{}").unwrap_err();
    assert!(
        wrong_kind
            .to_string()
            .contains("is a transform plugin, not a sink"),
        "{wrong_kind}"
    );

    // A rebuild in place cannot replace loaded code: refused, with advice.
    std::fs::remove_file(&library).unwrap();
    cc(
        &keep_everything("2.0-rebuilt"),
        &library,
        &["-fPIC", "-shared", "-O1"],
    );
    let error = shipper_plugin_host::load(&library).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("install the new build under a new file name"),
        "{error}"
    );
    // Under a new name it loads, beside the old one.
    let renamed = dir.path().join("libkeep-2.so");
    std::fs::rename(&library, &renamed).unwrap();
    let second = shipper_plugin_host::load(&renamed).unwrap();
    assert_eq!(second.version(), "2.0-rebuilt");
    assert_eq!(first.version(), "1.0");
}

/// A C transform that rewrites each record to the number of its instance,
/// fails the record "fail", and reports a broken invariant on "panic".
const NUMBERED: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shipper_plugin.h"
static int created = 0;
typedef struct { int number; char text[32]; } instance_t;
static void *create(shipper_slice config, const shipper_error *error) {
    (void)config; (void)error;
    instance_t *instance = calloc(1, sizeof(instance_t));
    if (instance != NULL) instance->number = ++created;
    return instance;
}
static void destroy(void *instance) { free(instance); }
static int is(const shipper_record *record, const char *text) {
    return record->payload.len == strlen(text) && memcmp(record->payload.ptr, text, record->payload.len) == 0;
}
static int32_t transform(void *raw, const shipper_record *record, uint32_t *action,
                         shipper_slice *replacement, const shipper_error *error) {
    instance_t *instance = raw;
    if (is(record, "fail")) return shipper_fail(error, SHIPPER_RETRY, "cannot now");
    if (is(record, "panic")) return shipper_fail(error, SHIPPER_PANICKED, "invariant broken");
    int len = snprintf(instance->text, sizeof instance->text, "instance %d", instance->number);
    replacement->ptr = (const uint8_t *)instance->text;
    replacement->len = (size_t)len;
    *action = SHIPPER_REPLACE;
    return SHIPPER_OK;
}
static const shipper_plugin_descriptor DESCRIPTOR = {
    SHIPPER_PLUGIN_ABI_VERSION, sizeof(shipper_plugin_descriptor), SHIPPER_KIND_TRANSFORM,
    "numbered", "1", create, destroy, transform, NULL, NULL, NULL, NULL,
};
const shipper_plugin_descriptor *shipper_plugin_entry(void) { return &DESCRIPTOR; }
"#;

#[test]
fn a_failed_transform_call_drops_the_record_and_a_panic_replaces_the_instance() {
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("libnumbered.so");
    cc(
        NUMBERED,
        &library,
        &["-fPIC", "-shared", "-D_POSIX_C_SOURCE=200809L"],
    );
    let plugin = shipper_plugin_host::load(&library).unwrap();
    let mut transform =
        shipper_plugin_host::DynamicTransform::new("numbered-test", &plugin, "{}").unwrap();
    let mut apply = |record: &[u8]| {
        let mut scratch = Vec::new();
        match transform.apply_record("s", 1, record, &mut scratch) {
            TransformOutcome::Replace(bytes) => Some(String::from_utf8(bytes.to_vec()).unwrap()),
            TransformOutcome::Drop => None,
            TransformOutcome::Keep(_) => panic!("the plugin never keeps"),
        }
    };
    assert_eq!(apply(b"a").as_deref(), Some("instance 1"));
    assert_eq!(apply(b"fail"), None, "a failed call drops its record");
    assert_eq!(
        apply(b"b").as_deref(),
        Some("instance 1"),
        "and keeps the instance"
    );
    assert_eq!(apply(b"panic"), None);
    assert_eq!(
        apply(b"c").as_deref(),
        Some("instance 2"),
        "a panic replaces it"
    );
    let value = |name: &str| {
        transform
            .metrics()
            .iter()
            .find(|metric| metric.name == name)
            .map(|metric| metric.value())
    };
    assert_eq!(
        (
            value("shipper_plugin_errors_total"),
            value("shipper_plugin_panics_total"),
            value("shipper_plugin_dropped_records_total")
        ),
        (Some(2), Some(1), Some(2))
    );
}

#[test]
fn a_refused_library_rebuilt_at_the_same_path_is_refused_with_advice_not_the_old_error() {
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("libupgraded.so");
    let old_abi =
        keep_everything("1.0").replace("SHIPPER_PLUGIN_ABI_VERSION, sizeof", "999u, sizeof");
    cc(&old_abi, &library, &["-fPIC", "-shared"]);
    let error = shipper_plugin_host::load(&library).unwrap_err();
    assert!(error.to_string().contains("ABI version 999"), "{error}");
    std::fs::remove_file(&library).unwrap();
    cc(&keep_everything("2.0"), &library, &["-fPIC", "-shared"]);
    // dlopen would hand back the mapping of the old file: say so.
    let error = shipper_plugin_host::load(&library).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("install the new build under a new file name"),
        "{error}"
    );
}

/// A directory `name` in `parent` with `mode`, and in it the keep-everything
/// library `file`; returns the library's path.
fn library_in(parent: &Path, name: &str, mode: u32, file: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent.join(name);
    std::fs::create_dir(&dir).unwrap();
    let library = dir.join(file);
    cc(&keep_everything(name), &library, &["-fPIC", "-shared"]);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    library
}

#[test]
fn a_library_in_a_directory_others_can_write_is_refused_unless_it_is_sticky() {
    let dir = tempfile::tempdir().unwrap();
    for (name, mode) in [("world", 0o777), ("group", 0o775)] {
        let library = library_in(dir.path(), name, mode, "libkeep.so");
        let error = shipper_plugin_host::load(&library).unwrap_err().to_string();
        let expected = format!(
            "plugin {}: refusing it: the directory {} on its path is writable by others than its owner (mode {mode:o}) and not sticky",
            library.display(),
            dir.path().join(name).display()
        );
        assert!(error.starts_with(&expected), "{error}");
        assert!(
            error.contains(&format!("`chmod go-w {}`", dir.path().join(name).display())),
            "{error}"
        );
    }
    // Like /tmp: entries in it can be replaced only by their owners, and
    // every entry on the way is root's or ours.
    let library = library_in(dir.path(), "sticky", 0o1777, "libkeep.so");
    let plugin = shipper_plugin_host::load(&library).unwrap();
    assert_eq!(plugin.version(), "sticky");
}

#[test]
fn a_library_or_directory_owned_by_another_user_is_refused() {
    // The tests run as root: root may give files away.
    const OTHER: u32 = 12345;
    let dir = tempfile::tempdir().unwrap();
    let library = library_in(dir.path(), "given", 0o755, "libkeep.so");
    std::os::unix::fs::chown(&library, Some(OTHER), None).unwrap();
    let error = shipper_plugin_host::load(&library).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "plugin {0}: refusing it: {0} is owned by uid {OTHER}",
            library.display()
        )),
        "{error}"
    );
    assert!(
        error.contains(&format!("`chown root {}`", library.display())),
        "{error}"
    );
    // Given back to root (the user the tests run as), it loads.
    std::os::unix::fs::chown(&library, Some(0), None).unwrap();
    assert_eq!(
        shipper_plugin_host::load(&library).unwrap().version(),
        "given"
    );

    // A directory on the way that another user owns could be emptied and
    // refilled by them.
    let library = library_in(dir.path(), "theirs", 0o755, "libkeep.so");
    std::os::unix::fs::chown(library.parent().unwrap(), Some(OTHER), None).unwrap();
    let error = shipper_plugin_host::load(&library).unwrap_err().to_string();
    assert!(
        error.contains(&format!(
            ": refusing it: {} is owned by uid {OTHER}",
            library.parent().unwrap().display()
        )),
        "{error}"
    );
}

#[test]
fn a_library_reached_through_symlinks_loads_when_every_entry_on_the_way_is_safe() {
    let dir = tempfile::tempdir().unwrap();
    let library = library_in(dir.path(), "real", 0o755, "libkeep.so");
    let real = library.parent().unwrap();
    // A symlinked directory, and a relative symlink to the file.
    let linked = dir.path().join("linked");
    std::os::unix::fs::symlink(real, &linked).unwrap();
    std::os::unix::fs::symlink("real/libkeep.so", dir.path().join("libkeep.so")).unwrap();
    for path in [
        linked.join("libkeep.so"),
        dir.path().join("libkeep.so"),
        linked.join("../real/./libkeep.so"),
    ] {
        let plugin = shipper_plugin_host::load(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert_eq!(plugin.path(), library.canonicalize().unwrap());
        assert_eq!(plugin.version(), "real");
    }

    // The directory holding a symlink is on the way too: a world-writable
    // one could point the symlink anywhere.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::os::unix::fs::symlink(&library, open.join("libkeep.so")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let error = shipper_plugin_host::load(&open.join("libkeep.so"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!(
            "the directory {} on its path is writable",
            open.display()
        )),
        "{error}"
    );

    // So is the symlink itself: in a sticky directory, its owner may
    // replace it.
    let sticky = dir.path().join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    let theirs = sticky.join("libkeep.so");
    std::os::unix::fs::symlink(&library, &theirs).unwrap();
    std::os::unix::fs::lchown(&theirs, Some(12345), None).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    let error = shipper_plugin_host::load(&theirs).unwrap_err().to_string();
    assert!(
        error.contains(&format!(
            "refusing it: {} is owned by uid 12345",
            theirs.display()
        )),
        "{error}"
    );
}

#[test]
fn libraries_loaded_one_after_another_are_each_their_own() {
    // Each is opened through /proc/self/fd/N, the name the dynamic loader
    // remembers it by: were N closed and reused, the next library would
    // come back as the one before.
    let dir = tempfile::tempdir().unwrap();
    for version in ["first", "second", "third"] {
        let library = library_in(dir.path(), version, 0o755, "libkeep.so");
        let plugin = shipper_plugin_host::load(&library).unwrap();
        assert_eq!(plugin.version(), version);
    }
}
