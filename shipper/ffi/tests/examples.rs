//! The C ABI from C and from Python: examples/c/sensor.c compiled with `cc`
//! against this package's libshipper.so and run (four threads inserting),
//! and examples/python/sensor.py through ctypes; each reading must reach
//! the file sink exactly once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds libshipper.so (cargo does not build a cdylib for a package's
/// tests) into this test's target directory and profile, once, and returns
/// the folder that holds it (`target/<profile>`).
fn library_dir() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            // target/<profile>/deps/<test binary>
            let profile_dir = exe.parent().unwrap().parent().unwrap().to_owned();
            let target_dir = profile_dir.parent().unwrap();
            let mut build = Command::new(env!("CARGO"));
            build
                .args([
                    "build",
                    "--locked",
                    "--lib",
                    "-p",
                    "shipper-ffi",
                    "--manifest-path",
                ])
                .arg(repository().join("Cargo.toml"))
                .arg("--target-dir")
                .arg(target_dir);
            if profile_dir.ends_with("release") {
                build.arg("--release");
            }
            let built = build
                .output()
                .expect("running cargo to build libshipper.so");
            assert!(
                built.status.success(),
                "cargo build -p shipper-ffi failed:\n{}",
                String::from_utf8_lossy(&built.stderr)
            );
            assert!(
                profile_dir.join("libshipper.so").exists(),
                "no libshipper.so in {}",
                profile_dir.display()
            );
            profile_dir
        })
        .clone()
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("sensor.toml");
    std::fs::write(
        &path,
        format!(
            r#"data_dir = "{data}"
[log]
durability = "interval"
interval_ms = 20
[sources.readings]
type = "sdk"
[sinks.out]
type = "file"
inputs = ["readings"]
path = "{out}"
"#,
            data = dir.join("data").display(),
            out = dir.join("out/records.ndjson").display(),
        ),
    )
    .unwrap();
    path
}

/// Every `seq` in the output, checking each appears once.
fn seqs(dir: &Path) -> BTreeSet<u64> {
    let text = std::fs::read_to_string(dir.join("out/records.ndjson")).unwrap();
    let mut seqs = BTreeSet::new();
    for line in text.lines() {
        let seq = line
            .split("\"seq\":")
            .nth(1)
            .and_then(|rest| rest.split([',', '}']).next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no seq in {line:?}"));
        assert!(seqs.insert(seq), "seq {seq} twice");
    }
    seqs
}

#[test]
fn the_c_example_inserts_from_four_threads_and_every_reading_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let library = library_dir();
    let binary = dir.path().join("sensor");
    let compiled = Command::new("cc")
        .arg("-o")
        .arg(&binary)
        .arg(repository().join("examples/c/sensor.c"))
        .arg("-I")
        .arg(repository().join("shipper/ffi/include"))
        .arg("-L")
        .arg(&library)
        .arg("-lshipper")
        .arg(format!("-Wl,-rpath,{}", library.display()))
        .arg("-lpthread")
        .args([
            "-Wall",
            "-Wextra",
            "-Werror",
            "-std=c11",
            "-D_POSIX_C_SOURCE=200809L",
        ])
        .output()
        .expect("a C compiler (cc) to build examples/c/sensor.c");
    assert!(
        compiled.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let config = write_config(dir.path());
    let ran = Command::new(&binary)
        .arg(&config)
        .arg("40000")
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "the C sensor failed:\n{}{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(String::from_utf8_lossy(&ran.stdout).contains("40000 readings inserted from 4 threads"));
    assert_eq!(seqs(dir.path()), (0..40_000).collect());
}

#[test]
fn the_python_example_ships_through_ctypes() {
    let Ok(python) = Command::new("python3").arg("--version").output() else {
        eprintln!("skipped: python3 is not installed");
        return;
    };
    assert!(python.status.success());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let ran = Command::new("python3")
        .arg(repository().join("examples/python/sensor.py"))
        .arg(library_dir().join("libshipper.so"))
        .arg(&config)
        .arg("2000")
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "the Python sensor failed:\n{}{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(seqs(dir.path()), (0..2_000).collect());
}

/// The library itself, loaded as any program would: error codes with
/// messages, NULLs refused.
#[test]
fn errors_come_back_as_codes_with_messages() {
    use std::ffi::{c_char, CStr, CString};
    type Open = unsafe extern "C" fn(*const c_char, *mut *mut u8) -> i32;
    type Flush = unsafe extern "C" fn(*mut u8) -> i32;
    type LastError = unsafe extern "C" fn() -> *const c_char;
    type Version = unsafe extern "C" fn() -> u32;

    // SAFETY: loading our own library, whose initialisers do nothing, and
    // looking up symbols with the signatures shipper.h declares.
    unsafe {
        let library = libloading::Library::new(library_dir().join("libshipper.so")).unwrap();
        let open: libloading::Symbol<'_, Open> = library.get(b"shipper_open").unwrap();
        let flush: libloading::Symbol<'_, Flush> = library.get(b"shipper_flush").unwrap();
        let close: libloading::Symbol<'_, Flush> = library.get(b"shipper_close").unwrap();
        let last_error: libloading::Symbol<'_, LastError> =
            library.get(b"shipper_last_error").unwrap();
        let version: libloading::Symbol<'_, Version> = library.get(b"shipper_abi_version").unwrap();
        let message = || CStr::from_ptr(last_error()).to_string_lossy().into_owned();

        assert_eq!(version(), 1);
        let mut handle = std::ptr::null_mut();
        let bad = CString::new("data_dir = 7").unwrap();
        assert_eq!(open(bad.as_ptr(), &mut handle), 2, "SHIPPER_ERR_CONFIG");
        assert!(message().contains("data_dir"), "{}", message());
        assert!(handle.is_null());
        assert_eq!(
            open(std::ptr::null(), &mut handle),
            1,
            "SHIPPER_ERR_ARGUMENT"
        );
        assert!(message().contains("config_toml is NULL"), "{}", message());
        assert_eq!(flush(std::ptr::null_mut()), 1);
        assert_eq!(close(std::ptr::null_mut()), 0, "NULL is accepted");
        assert_eq!(message(), "", "a call that succeeds clears the message");
    }
}
