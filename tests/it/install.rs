//! Modules a user installs: `polis module new / install / remove`, `exec`
//! found on PATH or among candidates, and broken manifests shown with their
//! error, all with the real binaries in a hermetic home.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use polis_testing::{Run, procs::is_running};

use crate::util::{ECHO, POLIS, TestMesh, mesh};

/// `~/.local/share/polis/modules` of the test's hermetic home.
fn user_modules(mesh: &TestMesh) -> PathBuf {
    mesh.home().join(".local/share/polis/modules")
}

fn module_info(mesh: &TestMesh, args: &[&str], name: &str) -> serde_json::Value {
    let out = mesh.run(args).code(0).json();
    let modules = if out.is_array() { out } else { out["modules"].clone() };
    modules.as_array().into_iter().flatten().find(|m| m["name"] == name).cloned().unwrap_or_default()
}

/// A `polis` command with `dirs` put in front of PATH.
fn with_path(mesh: &TestMesh, args: &[&str], dirs: &[&Path]) -> std::process::Command {
    let mut cmd = mesh.polis(args);
    let old = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(dirs.iter().map(|d| d.to_path_buf()).chain(std::env::split_paths(&old)));
    cmd.env("PATH", path.expect("a PATH"));
    cmd
}

#[test]
fn a_python_skeleton_passes_its_test_installs_runs_and_is_removed() {
    let mesh = mesh();
    let src = mesh.root().join("src/demo");
    let made = mesh.run(&["module", "new", "demo", "--lang", "python", "--dir", src.to_str().unwrap()]);
    made.code(0);
    assert!(made.stdout().contains("made module demo"), "{made}");

    // The skeleton's own test, as its author runs it.
    let mut test = mesh.command("python3");
    test.args(["-m", "unittest", "-v"]).current_dir(&src);
    let run = mesh.run_command(test);
    run.code(0);
    assert!(run.stderr().contains("test_methods") && run.stderr().contains("OK"), "{run}");

    let installed = mesh.run(&["module", "install", src.to_str().unwrap()]);
    installed.code(0);
    let dest = user_modules(&mesh).join("demo");
    assert_eq!(installed.stdout().trim(), format!("installed demo 0.1.0 in {}", dest.display()));
    assert!(dest.join("module.toml").is_file() && dest.join("demo.py").is_file());
    let leftovers: Vec<_> =
        std::fs::read_dir(user_modules(&mesh)).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(leftovers, ["demo"], "nothing but the module in the data dir");

    let _router = mesh.start_router(&[]);
    let hello = mesh.run(&["call", "demo", "hello", r#"{"name":"polis"}"#]);
    assert_eq!(hello.code(0).stdout().trim(), "\"hello, polis\"");
    let pid = module_info(&mesh, &["status", "--json"], "demo")["pid"].as_u64().expect("demo runs") as u32;

    // A new version while the old one runs replaces it (after its calls in
    // flight: tests/it/wasm.rs has the test with calls in flight).
    let manifest = src.join("module.toml");
    let greet = |from: &str, to: &str| {
        let text = std::fs::read_to_string(&manifest).unwrap().replace(from, to);
        std::fs::write(&manifest, text).unwrap();
    };
    greet("greeting = \"hello\"", "greeting = \"hi\"");
    let replaced = mesh.run(&["module", "install", src.to_str().unwrap()]);
    assert!(replaced.code(0).stderr().contains(&format!("replaced demo 0.1.0 (pid {pid})")), "{replaced}");
    assert!(std::fs::read_to_string(dest.join("module.toml")).unwrap().contains("\"hi\""));
    assert!(!is_running(pid), "the old demo was stopped before the install returned");
    let hello = mesh.run(&["call", "demo", "hello", r#"{"name":"polis"}"#]);
    assert_eq!(hello.code(0).stdout().trim(), "\"hi, polis\"");
    let pid = module_info(&mesh, &["status", "--json"], "demo")["pid"].as_u64().expect("demo runs") as u32;

    // --force stops it at once, swaps the files, and the next call starts the new one.
    greet("greeting = \"hi\"", "greeting = \"hey\"");
    let forced = mesh.run(&["module", "install", "--force", src.to_str().unwrap()]);
    assert!(forced.code(0).stderr().contains(&format!("stopped demo (pid {pid})")), "{forced}");
    assert!(std::fs::read_to_string(dest.join("module.toml")).unwrap().contains("\"hey\""));
    mesh.wait_for("the old demo to exit", || (!is_running(pid)).then_some(()));
    let hello = mesh.run(&["call", "demo", "hello", r#"{"name":"polis"}"#]);
    assert_eq!(hello.code(0).stdout().trim(), "\"hey, polis\"");
    let pid = module_info(&mesh, &["status", "--json"], "demo")["pid"].as_u64().expect("demo runs") as u32;

    // Remove stops it first, and then it is gone from the search path.
    mesh.run(&["module", "remove", "demo"]).code(0);
    assert!(!dest.exists(), "removed from the data dir");
    mesh.wait_for("demo to exit", || (!is_running(pid)).then_some(()));
    let list = mesh.run(&["module", "list", "--json"]).code(0).json();
    assert!(list.as_array().unwrap().iter().all(|m| m["name"] != "demo"), "{list}");
    let call = mesh.run(&["call", "demo", "ping"]);
    assert!(call.code(3).error_line().starts_with("error: NOT_FOUND: "), "{call}");
    let again = mesh.run(&["module", "remove", "demo"]);
    assert!(
        again.code(3).error_line().starts_with("error: NOT_FOUND: no module \"demo\" is installed"),
        "{again}"
    );
    let bad = mesh.run(&["module", "new", "Bad/Name", "--lang", "python"]);
    assert!(bad.code(2).error_line().starts_with("error: INVALID_ARGUMENT: invalid service name"), "{bad}");
}

#[test]
fn a_module_that_would_not_load_is_not_installed() {
    let mesh = mesh();
    let src = mesh.root().join("src");
    // Not semver.
    let broken = src.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("module.toml"),
        "name = \"broken\"\nversion = \"one\"\nexec = \"/bin/true\"\n",
    )
    .unwrap();
    let run = mesh.run(&["module", "install", broken.to_str().unwrap()]);
    let line = run.code(2).error_line();
    assert!(
        line.starts_with("error: INVALID_ARGUMENT: cannot install") && line.contains("not semver"),
        "{line}"
    );

    // Its exec points outside its directory: fine where it is, not once copied.
    let outside = src.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(
        outside.join("module.toml"),
        "name = \"outside\"\nversion = \"0.1.0\"\nexec = \"../tool\"\n",
    )
    .unwrap();
    std::fs::copy(ECHO, src.join("tool")).unwrap();
    let run = mesh.run(&["module", "install", outside.to_str().unwrap()]);
    let line = run.code(2).error_line();
    assert!(line.contains("would not load") && line.contains("cannot be used"), "{line}");

    let left: Vec<_> =
        std::fs::read_dir(user_modules(&mesh)).map(|d| d.flatten().count()).into_iter().collect();
    assert!(left.iter().all(|&n| n == 0), "nothing left in the data dir: {left:?}");
}

/// A bare `exec` (no `/`) is looked up in the module's directory, then on
/// the router's PATH, like systemd's ExecStart; one found nowhere is a
/// broken manifest that says where it looked.
#[test]
fn a_bare_exec_is_found_on_path() {
    let mesh = mesh();
    let bin = mesh.root().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy(ECHO, bin.join("my-echo-tool")).unwrap();
    mesh.module("viapath", "my-echo-tool", "");
    mesh.module("nowhere", "no-such-tool-anywhere", "");

    let router = mesh.start(with_path(&mesh, &["router"], &[&bin]));
    let pid = router.pid();
    mesh.wait_for("the router", || mesh.router().filter(|r| r.pid == pid));
    mesh.run(&["call", "viapath", "ping"]).code(0);
    let exe = std::fs::read_link(format!(
        "/proc/{}/exe",
        module_info(&mesh, &["status", "--json"], "viapath")["pid"].as_u64().expect("running")
    ))
    .unwrap();
    assert_eq!(exe, bin.join("my-echo-tool"), "the program found on PATH runs");

    let nowhere = module_info(&mesh, &["module", "list", "--json"], "nowhere");
    assert_eq!(nowhere["state"], "broken", "{nowhere}");
    let error = nowhere["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("nor no-such-tool-anywhere on PATH"), "{error}");
}

#[test]
fn broken_manifests_show_in_status_and_module_list() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    mesh.manifest("bad", "exec = \"/bin/true\"\nprotocol = \"smoke-signals\"");
    let _router = mesh.start_router(&[]);

    for args in [&["status", "--json"][..], &["module", "list", "--json"]] {
        let bad = module_info(&mesh, args, "bad");
        assert_eq!(bad["state"], "broken", "{args:?}: {bad}");
        let error = bad["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("unknown protocol \"smoke-signals\""), "{args:?}: {error}");
        assert!(bad["manifest"].as_str().unwrap_or_default().ends_with("bad/module.toml"), "{bad}");
        assert_eq!(module_info(&mesh, args, "echo")["state"], "available", "the others are unharmed");
    }
    let text = mesh.run(&["status"]).code(0).stdout();
    assert!(text.contains("bad") && text.contains("broken") && text.contains("unknown protocol"), "{text}");
    let list = mesh.run(&["module", "list"]).code(0).stdout();
    assert!(list.starts_with("MODULE "), "no blank line first: {list:?}");
    assert!(list.contains("broken") && list.contains("last error: invalid manifest"), "{list}");
}

/// The repository's example manifests list the debug and the release build
/// as candidates: either build alone is enough.
#[test]
fn the_example_manifests_work_after_a_debug_or_a_release_build() {
    let mesh = mesh();
    let checkout = mesh.root().join("co");
    let modules = checkout.join("modules");
    std::fs::create_dir_all(modules.join("echo")).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(repo.join("modules/echo/module.toml"), modules.join("echo/module.toml")).unwrap();
    let call = |mesh: &TestMesh| {
        let mut cmd = mesh.command(POLIS);
        cmd.args(["--mesh-dir"]).arg(&mesh.dir).arg("--modules-path").arg(&modules);
        cmd.args(["call", "echo", "ping"]);
        mesh.run_command(cmd)
    };
    let none = call(&mesh);
    let line = none.code(1).error_line();
    assert!(line.starts_with("error: FAILED_PRECONDITION: "), "{line}");
    assert!(
        line.contains("target/debug/polis-echo, ") && line.contains("target/release/polis-echo"),
        "{line}"
    );

    for profile in ["release", "debug"] {
        std::fs::create_dir_all(checkout.join("target").join(profile)).unwrap();
        std::os::unix::fs::symlink(ECHO, checkout.join("target").join(profile).join("polis-echo")).unwrap();
        assert_eq!(call(&mesh).code(0).stdout().trim(), "\"pong\"", "with the {profile} build");
        mesh.run(&["stop"]).code(0);
    }
}

/// The Rust skeleton: its own `cargo test` passes, and once built it runs
/// from PATH, as after `cargo install --path .`. It builds polis-sdk and its
/// dependencies (offline, from cargo's cache) into a target dir of its own
/// beside this one, kept between runs; the first build is slow.
#[test]
fn a_rust_skeleton_passes_its_test_and_runs_from_path() {
    let mesh = mesh();
    let src = mesh.root().join("src/hello-rs");
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/sdk");
    let args = ["module", "new", "hello-rs", "--lang", "rust", "--dir", src.to_str().unwrap()];
    mesh.run(&[&args[..], &["--sdk", sdk.to_str().unwrap()]].concat()).code(0);

    let target = Path::new(POLIS).parent().and_then(Path::parent).unwrap().join("skeleton");
    let cargo = |what: &str| {
        // The user's own cargo and toolchain: a build tool, not under test.
        let mut cmd = mesh.command(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.args([what, "--offline"]).current_dir(&src).env("CARGO_TARGET_DIR", &target);
        // cargo's own home and cache: the hermetic HOME has none.
        if let Some(home) = std::env::var_os("CARGO_HOME")
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo").into_os_string()))
        {
            cmd.env("CARGO_HOME", home);
        }
        if let Some(rustup) = std::env::var_os("RUSTUP_HOME")
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustup").into_os_string()))
        {
            cmd.env("RUSTUP_HOME", rustup);
        }
        Run::within(cmd, Duration::from_secs(1800), None)
    };
    let test = cargo("test");
    assert!(test.status().success(), "the skeleton's cargo test\n{test}");
    assert!(test.stdout().contains("hello_greets_by_name ... ok"), "{test}");
    let build = cargo("build");
    assert!(build.status().success(), "the skeleton's cargo build\n{build}");

    // Installed with its binary on PATH, as `cargo install --path .` leaves it.
    let bin = target.join("debug");
    let install = mesh.run_command(with_path(&mesh, &["module", "install", src.to_str().unwrap()], &[&bin]));
    install.code(0);
    assert!(!user_modules(&mesh).join("hello-rs/target").exists(), "build output is not installed");
    let router = mesh.start(with_path(&mesh, &["router"], &[&bin]));
    let pid = router.pid();
    mesh.wait_for("the router", || mesh.router().filter(|r| r.pid == pid));
    let hello = mesh.run(&["call", "hello-rs", "hello", r#"{"name":"rust"}"#]);
    assert_eq!(hello.code(0).stdout().trim(), "\"hello, rust\"");
}
