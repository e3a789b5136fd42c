//! Every frontend finds the same mesh (`polis_discovery::locate`): a Rust
//! client given nothing but its name, and the CLI, read the same
//! environment the same way; a frontend's modules path reaches a router
//! that runs already. (The Lua side is in `neovim.rs`.)

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use polis_testing::Run;

use crate::util::{ECHO, POLIS, TestMesh, mesh};

/// Builds `polis-client`'s example `call` (a Rust frontend that sets no
/// option but its name), once per test binary, and returns it.
fn example_call() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let mut cmd = polis_testing::command(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.args(["build", "-p", "polis-client", "--example", "call"])
            .args(["--message-format=json-render-diagnostics", "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
        let build = Run::within(cmd, Duration::from_secs(600), None);
        assert!(build.status().success(), "cargo build --example call failed\n{build}");
        build
            .stdout()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "call")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .unwrap_or_else(|| panic!("no example executable in cargo's output\n{build}"))
    })
}

/// `greet` (the echo binary under another name) in `<root>/extra`, a
/// directory no router is started with.
fn extra_module(mesh: &TestMesh) -> PathBuf {
    let extra = mesh.root().join("extra");
    std::fs::create_dir_all(extra.join("greet")).expect("extra/greet");
    let manifest = format!("name = \"greet\"\nversion = \"0.1.0\"\nexec = {ECHO:?}\nprotocol = \"frames\"\n");
    std::fs::write(extra.join("greet/module.toml"), manifest).expect("greet's manifest");
    extra
}

#[test]
fn a_rust_client_finds_the_mesh_and_the_modules_through_the_environment_as_the_cli_does() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let mut cmd = mesh.command(example_call());
    cmd.args(["echo", "ping"])
        .env("POLIS_MESH_DIR", &mesh.dir)
        .env("POLIS_MODULES_PATH", &mesh.modules)
        .env("POLIS_BIN", POLIS)
        .env("POLIS_LINGER", "300ms");
    let run = mesh.run_command(cmd);
    run.code(0);
    assert_eq!(run.stdout(), format!("mesh {}\n\"pong\"\n", mesh.dir.display()), "{run}");
    assert!(mesh.dir.join("logs/router.log").exists(), "the launched router logs in POLIS_MESH_DIR");
    mesh.wait_no_processes();

    // POLIS_MESH names a mesh under $XDG_RUNTIME_DIR: the client and the
    // CLI (with no flag) agree on where.
    let mut cmd = mesh.command(example_call());
    cmd.args(["echo", "ping"])
        .env("POLIS_MESH", "work")
        .env("POLIS_MODULES_PATH", &mesh.modules)
        .env("POLIS_BIN", POLIS)
        .env("POLIS_LINGER", "300ms");
    let run = mesh.run_command(cmd);
    run.code(0);
    let work = mesh.runtime_dir().join("polis/work");
    assert_eq!(run.stdout(), format!("mesh {}\n\"pong\"\n", work.display()), "{run}");
    let mut ls = mesh.command(POLIS);
    ls.args(["ls", "--json"]).env("POLIS_MESH", "work");
    let listed = mesh.run_command(ls);
    assert_eq!(listed.code(0).json()["mesh_dir"], work.display().to_string(), "{listed}");
    wait_gone(&work);
}

/// Waits for the router of the mesh at `dir` (not the test's own) to leave.
fn wait_gone(dir: &Path) {
    polis_testing::wait_until(polis_testing::WAIT, dir, "the router to leave after its linger", || {
        (!dir.join("router.json").exists()).then_some(())
    });
}

#[test]
fn polis_attach_brings_its_modules_path_to_a_running_router() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let extra = extra_module(&mesh);
    let _router = mesh.start_router(&[]);
    let missing = mesh.run(&["call", "greet", "ping"]);
    missing.code(3);

    // A Rust frontend (polis_client::Client) with its own path.
    let mut cmd = mesh.command(POLIS);
    cmd.arg("--mesh-dir").arg(&mesh.dir).arg("--modules-path").arg(&extra).args(["attach", "--no-launch"]);
    let mut frontend = mesh.frontend(cmd);
    assert_eq!(frontend.call("greet ping"), "\"pong\"");
    assert_eq!(frontend.call("echo ping"), "\"pong\"", "the router's own path stays first");

    // The same from POLIS_MODULES_PATH, for a directory already added: no
    // error, nothing twice.
    let mut cmd = mesh.command(POLIS);
    cmd.arg("--mesh-dir").arg(&mesh.dir).args(["attach", "--no-launch"]).env("POLIS_MODULES_PATH", &extra);
    let mut second = mesh.frontend(cmd);
    assert_eq!(second.call("greet ping"), "\"pong\"");
    let status = mesh.run(&["status", "--json"]);
    let modules = status.code(0).json()["modules"].clone();
    let greets = modules.as_array().into_iter().flatten().filter(|m| m["name"] == "greet").count();
    assert_eq!(greets, 1, "{modules}");
}
