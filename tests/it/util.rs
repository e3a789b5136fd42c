//! What the integration tests share beyond the harness (`polis_testing`):
//! the binaries of this package, and a temp mesh that runs them.

pub(crate) use polis_testing::{Process, TestMesh, WAIT, listing, wait_until};

pub(crate) const POLIS: &str = env!("CARGO_BIN_EXE_polis");
/// The example modules, a package of their own (`modules/examples`, so that
/// `cargo install --path .` leaves them out), built beside `polis`: their
/// paths are known at compile time, and [`mesh`] builds them if needed.
pub(crate) const ECHO: &str = concat!(env!("CARGO_BIN_EXE_polis"), "-echo");
pub(crate) const COUNTER: &str = concat!(env!("CARGO_BIN_EXE_polis"), "-counter");
pub(crate) const RELAY: &str = concat!(env!("CARGO_BIN_EXE_polis"), "-relay");
pub(crate) const FENCE: &str = concat!(env!("CARGO_BIN_EXE_polis"), "-fence");

/// A fresh hermetic temp mesh run by this package's `polis`.
pub(crate) fn mesh() -> TestMesh {
    examples();
    TestMesh::new(POLIS).expect("create a temp mesh")
}

/// Builds `polis-examples` once per test binary, with the same cargo and
/// profile, into the target dir `polis` is in: `cargo test --test it` alone
/// does not build another package's binaries.
pub(crate) fn examples() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        use std::path::Path;
        let bin_dir = Path::new(POLIS).parent().expect("polis is in a directory");
        let target = bin_dir.parent().expect("the profile dir is in the target dir");
        // The user's own cargo and toolchain: a build tool, not under test.
        let mut cmd = polis_testing::command(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.args(["build", "-p", "polis-examples", "--bins", "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target);
        // On etcd, modules re-attach across machines (polis-sdk's `etcd`).
        if cfg!(feature = "etcd") {
            cmd.args(["--features", "etcd"]);
        }
        match bin_dir.file_name().and_then(|p| p.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(other) => {
                cmd.args(["--profile", other]);
            }
        }
        let build = polis_testing::Run::within(cmd, std::time::Duration::from_secs(600), None);
        assert!(build.status().success(), "cargo build -p polis-examples failed\n{build}");
        for exe in [ECHO, COUNTER, RELAY, FENCE] {
            assert!(Path::new(exe).is_file(), "{exe} was not built");
        }
    });
}

/// A JSON-RPC module that never answers `wait`, and appends the id of every
/// `$/cancel` it receives to `cancels` in its directory.
pub(crate) const WAITER: &str = r#"#!/usr/bin/env python3
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "initialize":
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {}}), flush=True)
    elif msg.get("method") == "$/cancel":
        with open("cancels", "a") as f:
            f.write("%d\n" % msg["params"]["id"])
"#;

/// `polis --mesh-dir THEIRS` run as uid 65534 (`setpriv`, from util-linux)
/// against this mesh's router, and the lock that makes the router's record
/// live in THEIRS (hold it while the command runs). The modes that normally
/// keep other users out are loosened, so that the router's uid check is
/// what has to refuse them.
pub(crate) fn as_another_uid(mesh: &TestMesh) -> (std::process::Command, std::fs::File) {
    use std::os::unix::fs::{PermissionsExt, chown};
    let record = mesh.router().expect("a router in office");
    let nobody = 65534;
    let mode = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    mode(mesh.root(), 0o711);
    mode(&mesh.dir, 0o711);
    mode(&mesh.dir.join("router.sock"), 0o666);
    // The other user's own mesh directory points at our router.
    let theirs = mesh.root().join("theirs");
    std::fs::create_dir_all(theirs.join("nodes")).unwrap();
    std::fs::create_dir_all(theirs.join("logs")).unwrap();
    std::fs::write(theirs.join("router.json"), record.to_json()).unwrap();
    let lock_path = theirs.join(format!("nodes/{}.lock", record.id));
    let lock = std::fs::File::create(&lock_path).unwrap();
    lock.lock().unwrap();
    for path in
        [&theirs, &theirs.join("nodes"), &theirs.join("logs"), &theirs.join("router.json"), &lock_path]
    {
        chown(path, Some(nobody), Some(nobody)).unwrap();
    }
    mode(&theirs, 0o700);
    let mut cmd = mesh.command("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", POLIS]).arg("--mesh-dir").arg(&theirs);
    (cmd, lock)
}
