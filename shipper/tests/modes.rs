//! File modes whatever the umask: `shipper run` under `umask 000` keeps its
//! data directory `0700` with every file in it `0600`, tightens a data
//! directory it finds readable by others (and says so), writes sink output
//! with the file sink's `mode` and creates a unix socket with
//! `socket_mode`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::SHIPPER;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every directory under `dir` (and `dir`) and every file, with its mode.
fn walk(dir: &Path, out: &mut Vec<(std::path::PathBuf, bool, u32)>) {
    out.push((dir.to_owned(), true, mode(dir)));
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            walk(&path, out);
        } else if !kind.is_symlink() {
            out.push((path.clone(), false, mode(&path)));
        }
    }
}

#[test]
fn under_umask_000_the_data_directory_stays_private_and_outputs_take_their_modes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A data directory an older version (or a person) left open to all.
    std::fs::create_dir_all(data.join("cursors")).unwrap();
    std::fs::write(data.join("cursors/old"), b"").unwrap();
    std::fs::set_permissions(&data, PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(data.join("cursors/old"), PermissionsExt::from_mode(0o644)).unwrap();
    let logs = dir.path().join("app.log");
    std::fs::write(&logs, "{\"seq\":0}\n{\"seq\":1}\n").unwrap();
    let socket = dir.path().join("app.sock");
    let out = dir.path().join("out/records.ndjson");
    let config = dir.path().join("shipper.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:0"

[sources.app]
type = "file"
include = ["{logs}"]

[sources.local]
type = "socket"
mode = "unix"
path = "{socket}"

[sinks.out]
type = "file"
inputs = ["app"]
path = "{out}"
"#,
            data = data.display(),
            logs = logs.display(),
            socket = socket.display(),
            out = out.display(),
        ),
    )
    .unwrap();
    let stderr_path = dir.path().join("shipper.stderr");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("umask 000; exec {SHIPPER} run -c \"$0\""))
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A sink-side file (the quarantine's folder) and the socket exist now.
    assert_eq!(mode(&socket), 0o660, "socket_mode");
    assert_eq!(mode(&out), 0o640, "the file sink's mode");

    let mut entries = Vec::new();
    walk(&data, &mut entries);
    assert!(entries.len() > 4, "{entries:?}");
    for (path, is_dir, found) in &entries {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*found, want, "{}: {found:o}", path.display());
    }

    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(child.wait().unwrap().success());
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        stderr.contains("the data directory was readable by others"),
        "{stderr}"
    );
}
