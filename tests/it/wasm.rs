//! Sandboxed WebAssembly modules: real WASI modules, built here from C with
//! Zig (`python3 -m ziglang cc --target=wasm32-wasi`, see `.ci/run`), run by
//! the real `polis-wasm` host, which the test builds with cargo (it is a
//! crate of its own, so `cargo test --test it` does not build it).
//!
//! Each sandbox refusal is an error inside the module, reported in its
//! reply, and polis goes on: the next call is served.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use polis_client::{Client, ClientOptions};
use polis_testing::{Run, TestMesh};

use crate::util::{POLIS, RELAY, WAIT, mesh};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds `polis-wasm` and its compiler `polis-wasm-compile` (once per test
/// binary) with the same cargo and profile; the router finds the host beside
/// `polis`, and the host its compiler beside itself. Two cargo runs, so that
/// the host is built without cranelift, as it ships (one run of both would
/// unify wasmtime's features and link the compiler into the host too).
fn host() -> &'static Path {
    static HOST: OnceLock<PathBuf> = OnceLock::new();
    HOST.get_or_init(|| {
        for package in ["polis-wasm", "polis-wasm-compile"] {
            cargo_build(package);
        }
        let host = Path::new(POLIS).with_file_name("polis-wasm");
        assert!(host.is_file(), "polis-wasm is not beside polis at {}", host.display());
        assert!(
            host.with_file_name("polis-wasm-compile").is_file(),
            "no polis-wasm-compile beside {}",
            host.display()
        );
        host
    })
}

fn cargo_build(package: &str) {
    let mut cmd = polis_testing::command(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "-p", package, "--bin", package, "--manifest-path"]).arg(repo().join("Cargo.toml"));
    // The test binary is target/<profile>/deps/it-<hash>.
    let exe = std::env::current_exe().expect("the test binary's path");
    match exe.parent().and_then(Path::parent).and_then(Path::file_name).and_then(|p| p.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    let build = Run::within(cmd, Duration::from_secs(1200), None);
    assert!(build.status().success(), "cargo build -p {package} failed\n{build}");
}

/// Compiles the C file `source` to a WASI module (cached by name in
/// cargo's temp dir for this run), with Zig's cache there too.
fn build_wasm(name: &str, source: &Path) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm");
    std::fs::create_dir_all(&dir).expect("make the build dir");
    let out = dir.join(format!("{name}.wasm"));
    let mut cmd = zig_cc(&dir);
    cmd.args(["--target=wasm32-wasi", "-O2", "-s", "-o"]).arg(&out).arg(source);
    let build = Run::within(cmd, Duration::from_secs(600), None);
    assert!(build.status().success(), "zig cc failed for {}\n{build}", source.display());
    out
}

fn zig_cc(dir: &Path) -> Command {
    let mut cmd = polis_testing::command("python3");
    cmd.args(["-m", "ziglang", "cc"])
        .env("ZIG_GLOBAL_CACHE_DIR", dir.join("zig-cache"))
        .env("ZIG_LOCAL_CACHE_DIR", dir.join("zig-cache"));
    cmd
}

/// The test peer (`tests/it/wasm/peer.c`: `$/call`, `$/publish`, held
/// calls, sockets) built with `-DVERSION="<version>"`, once per version.
fn peer(version: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm");
    std::fs::create_dir_all(&dir).expect("make the build dir");
    let out = dir.join(format!("peer-{version}.wasm"));
    let mut cmd = zig_cc(&dir);
    cmd.args(["--target=wasm32-wasi", "-O2", "-s"])
        .arg(format!("-DVERSION=\"{version}\""))
        .arg("-o")
        .arg(&out)
        .arg(repo().join("tests/it/wasm/peer.c"));
    let build = Run::within(cmd, Duration::from_secs(600), None);
    assert!(build.status().success(), "zig cc failed for peer.c\n{build}");
    out
}

/// The shipped example, built once.
fn wasm_echo() -> &'static Path {
    static ECHO: OnceLock<PathBuf> = OnceLock::new();
    ECHO.get_or_init(|| build_wasm("wasm-echo", &repo().join("modules/wasm-echo/wasm-echo.c")))
}

/// Installs `wasm` as module `name` with manifest `body` (after name and
/// version), and makes sure the host is built.
fn install(mesh: &TestMesh, name: &str, wasm: &Path, body: &str) {
    host();
    let manifest = mesh.manifest(name, body);
    std::fs::copy(wasm, manifest.with_file_name("module.wasm")).expect("copy the module");
}

fn module_log(mesh: &TestMesh, name: &str) -> String {
    std::fs::read_to_string(mesh.dir.join("logs").join(format!("{name}.log"))).unwrap_or_default()
}

#[test]
fn the_example_answers_polis_call_and_a_rust_frontend_and_shows_its_grants() {
    let mesh = mesh();
    host();
    // The shipped directory as a user has it after ./build.sh.
    let dir = mesh.modules.join("wasm-echo");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(repo().join("modules/wasm-echo/module.toml"), dir.join("module.toml")).unwrap();
    std::fs::copy(wasm_echo(), dir.join("wasm-echo.wasm")).unwrap();

    assert_eq!(mesh.run(&["call", "wasm-echo", "ping"]).code(0).stdout().trim(), "\"pong\"");
    let echoed = mesh.run(&["call", "wasm-echo", "echo", r#"{"k":[1,"two",{"x":null}]}"#]).code(0).json();
    assert_eq!(echoed, serde_json::json!({"k": [1, "two", {"x": null}]}));
    let run = mesh.run(&["call", "wasm-echo", "nope"]);
    assert!(run.code(3).error_line().contains("no method \"nope\""), "{run}");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let options = ClientOptions {
            mesh_dir: Some(mesh.dir.clone()),
            launch: None,
            ..ClientOptions::new("wasm-test")
        };
        let client = Client::connect(options).await.expect("connect to the router");
        let reply = client
            .call_json("wasm-echo", "echo", &serde_json::json!({"from": "rust"}), None)
            .await
            .expect("echo from a Rust frontend");
        assert_eq!(reply, serde_json::json!({"from": "rust"}));
        client.close().await;
    });

    let status = mesh.run(&["status", "--json"]).code(0).json();
    let module = status["modules"].as_array().unwrap().iter().find(|m| m["name"] == "wasm-echo").unwrap();
    assert_eq!(module["state"], "running", "{status}");
    assert_eq!(module["sandbox"], "dirs data:rw; env LANG; memory 64 MiB; no network", "{status}");
    let list = mesh.run(&["module", "list"]).code(0).stdout();
    assert!(list.contains("sandbox: dirs data:rw; env LANG; memory 64 MiB; no network"), "{list}");
    // Its own data dir was made for the `data` grant.
    assert!(mesh.home().join(".local/share/polis/data/wasm-echo/data").is_dir());
}

#[test]
fn the_sandbox_refuses_what_was_not_granted_and_polis_stays_up() {
    let mesh = mesh();
    let home = mesh.home();
    std::fs::create_dir_all(home.join("notes")).unwrap();
    std::fs::write(home.join("notes/n.txt"), "granted").unwrap();
    let secret = mesh.root().join("secret.txt");
    std::fs::write(&secret, "not for modules").unwrap();
    install(
        &mesh,
        "sbx",
        wasm_echo(),
        "exec = \"module.wasm\"\nprotocol = \"jsonrpc\"\n\
         [sandbox]\ndirs = [\"~/notes:ro\", \"data:rw\"]\nenv = [\"LANG\"]\nmemory_mb = 32\n",
    );
    // The router (launched by the first call) inherits these; only LANG is granted.
    let call = |args: &[&str]| {
        let mut cmd = mesh.polis(&[&["call", "sbx"], args].concat());
        cmd.env("LANG", "C.UTF-8").env("SECRET_TOKEN", "hunter2");
        mesh.run_command(cmd)
    };
    let ok = |method: &str, params: &str| call(&[method, params]).code(0).json();
    let refused = |method: &str, params: &str| {
        let run = call(&[method, params]);
        let line = run.code(1).error_line();
        assert!(line.contains("FAILED_PRECONDITION") && line.contains("errno"), "{method} {params}: {run}");
        line
    };

    // What is granted works.
    assert_eq!(ok("read", r#"{"path":"~/notes/n.txt"}"#), "granted");
    assert_eq!(ok("write", r#"{"path":"data/out.txt","text":"hello"}"#), true);
    assert_eq!(ok("read", r#"{"path":"data/out.txt"}"#), "hello");
    let written = home.join(".local/share/polis/data/sbx/data/out.txt");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "hello");
    assert_eq!(ok("env", r#"{"name":"LANG"}"#), "C.UTF-8");
    assert_eq!(ok("alloc", r#"{"mb":8}"#), serde_json::json!({"allocated": true}));

    // What is not granted is an errno in the module.
    let outside = format!(r#"{{"path":{:?}}}"#, secret.display().to_string());
    assert!(refused("read", &outside).contains("open"));
    refused("read", r#"{"path":"data/../../../../secret.txt"}"#);
    refused("write", r#"{"path":"~/notes/new.txt","text":"x"}"#);
    assert!(!home.join("notes/new.txt").exists(), "a read-only dir was written");
    refused(
        "write",
        &format!(r#"{{"path":{:?},"text":"x"}}"#, mesh.root().join("new.txt").display().to_string()),
    );
    assert!(!mesh.root().join("new.txt").exists());
    assert_eq!(ok("env", r#"{"name":"SECRET_TOKEN"}"#), serde_json::Value::Null);
    assert_eq!(ok("env", r#"{"name":"HOME"}"#), serde_json::Value::Null);
    assert_eq!(ok("env", r#"{"name":"PATH"}"#), serde_json::Value::Null);
    // 64 MiB is past memory_mb = 32: malloc says NULL.
    assert_eq!(ok("alloc", r#"{"mb":64}"#), serde_json::json!({"allocated": false}));

    // None of that hurt the module or the router.
    assert_eq!(ok("ping", "null"), "pong");
    let status = mesh.run(&["status", "--json"]).code(0).json();
    let module = status["modules"].as_array().unwrap().iter().find(|m| m["name"] == "sbx").unwrap();
    assert_eq!(
        (module["state"].as_str(), module["restarts"].as_u64()),
        (Some("running"), Some(0)),
        "{status}"
    );
}

#[test]
fn a_module_that_spins_is_stopped_at_the_deadline_and_the_next_call_works() {
    let mesh = mesh();
    install(&mesh, "spinner", wasm_echo(), "exec = \"module.wasm\"\nprotocol = \"jsonrpc\"\n");
    assert_eq!(mesh.run(&["call", "spinner", "ping"]).code(0).stdout().trim(), "\"pong\"");
    let run = mesh.run(&["call", "--timeout", "300", "spinner", "spin"]);
    assert!(run.code(4).error_line().contains("DEADLINE_EXCEEDED"), "{run}");
    // The host interrupts the guest, which cannot read its cancel, and exits.
    mesh.wait_for("the host to interrupt the spinning module", || {
        module_log(&mesh, "spinner").contains("interrupted: a call was cancelled").then_some(())
    });
    mesh.wait_for("the module to be restartable", || {
        let run = mesh.run(&["call", "spinner", "ping"]);
        (run.status().code() == Some(0)).then(|| assert_eq!(run.stdout().trim(), "\"pong\""))
    });
    let status = mesh.run(&["status", "--json"]).code(0).json();
    let module = status["modules"].as_array().unwrap().iter().find(|m| m["name"] == "spinner").unwrap();
    assert_eq!(module["restarts"], 1, "{status}");
}

#[test]
fn a_file_that_is_not_webassembly_fails_its_load_with_failed_precondition() {
    let mesh = mesh();
    let garbage = mesh.root().join("garbage.wasm");
    std::fs::write(&garbage, b"#!/bin/sh\necho not wasm\n").unwrap();
    install(&mesh, "garbage", &garbage, "exec = \"module.wasm\"\nprotocol = \"jsonrpc\"\n");
    let run = mesh.run(&["call", "garbage", "ping"]);
    let line = run.code(1).error_line();
    assert!(
        line.contains("FAILED_PRECONDITION") && line.contains("is not a valid WebAssembly module"),
        "{run}"
    );
    // The router is unhurt: another module answers.
    install(&mesh, "fine", wasm_echo(), "exec = \"module.wasm\"\nprotocol = \"jsonrpc\"\n");
    assert_eq!(mesh.run(&["call", "fine", "ping"]).code(0).stdout().trim(), "\"pong\"");
}

#[test]
fn an_import_the_host_lacks_fails_the_load_naming_it() {
    let mesh = mesh();
    let source = mesh.root().join("imports.c");
    std::fs::write(
        &source,
        "__attribute__((import_module(\"env\"), import_name(\"polis_magic\"))) int polis_magic(void);\n\
         __attribute__((import_module(\"wasi_snapshot_preview1\"), import_name(\"sock_open\")))\n\
         int sock_open(int, int, int *);\n\
         int main(void) { int fd; return polis_magic() + sock_open(1, 1, &fd); }\n",
    )
    .unwrap();
    let wasm = build_wasm("imports", &source);
    install(&mesh, "imports", &wasm, "exec = \"module.wasm\"\nprotocol = \"jsonrpc\"\n");
    let run = mesh.run(&["call", "imports", "ping"]);
    let line = run.code(1).error_line();
    // Both named: one the host never heard of, and WasmEdge's socket call,
    // which preview 1 does not have and polis-wasm does not add.
    assert!(
        line.contains("FAILED_PRECONDITION")
            && line.contains("it imports env::polis_magic, wasi_snapshot_preview1::sock_open,"),
        "{run}"
    );
}

#[test]
fn the_second_start_loads_compiled_code_from_the_cache() {
    let mesh = mesh();
    install(&mesh, "cached", wasm_echo(), "exec = \"module.wasm\"\nprotocol = \"jsonrpc\"\n");
    assert_eq!(mesh.run(&["call", "cached", "ping"]).code(0).stdout().trim(), "\"pong\"");
    mesh.run(&["module", "unload", "cached"]).code(0);
    assert_eq!(mesh.run(&["call", "cached", "ping"]).code(0).stdout().trim(), "\"pong\"");
    let log = module_log(&mesh, "cached");
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!((count("polis-wasm: compiled"), count("from cache")), (1, 1), "{log}");
    let cache = mesh.home().join(".cache/polis/wasm");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1, "one compiled module in {}", cache.display());
}

fn module_status(mesh: &TestMesh, name: &str) -> serde_json::Value {
    let status = mesh.run(&["status", "--json"]).code(0).json();
    status["modules"].as_array().unwrap().iter().find(|m| m["name"] == name).cloned().unwrap_or_default()
}

#[test]
fn a_wasi_module_calls_a_native_module_which_calls_it_back() {
    let mesh = mesh();
    install(
        &mesh,
        "peer",
        &peer("1.0.0"),
        "exec = \"module.wasm\"\nprotocol = \"jsonrpc\"\ncalls = [\"relay\"]\n",
    );
    mesh.module("relay", RELAY, "calls = [\"peer\"]");
    let _router = mesh.start_router(&[]);
    let call = |params: serde_json::Value| mesh.run(&["call", "peer", "relay", &params.to_string()]);
    // WASI -> native, and the answer back.
    assert_eq!(call(serde_json::json!({"service": "relay", "method": "ping"})).code(0).json(), "pong");
    // The native module sees the WASI module as its caller.
    assert_eq!(call(serde_json::json!({"service": "relay", "method": "whoami"})).code(0).json(), "peer");
    // WASI -> native -> WASI again, while the first call waits for its answer.
    let back = serde_json::json!({"service": "relay", "method": "relay",
        "params": {"service": "peer", "method": "version"}});
    assert_eq!(call(back).code(0).json(), "1.0.0");
    // An error on the way comes back as the error it was.
    let run = call(serde_json::json!({"service": "relay", "method": "nope"}));
    assert!(run.code(3).error_line().contains("NOT_FOUND"), "{run}");
    // A call its manifest does not grant is refused by the router.
    mesh.module("other", RELAY, "");
    let run = call(serde_json::json!({"service": "other", "method": "ping"}));
    assert!(
        run.code(1).error_line().contains("PERMISSION_DENIED: module \"peer\" may not call \"other\""),
        "{run}"
    );
    assert_eq!(module_status(&mesh, "peer")["restarts"], 0);
}

#[test]
fn an_event_a_wasi_module_publishes_reaches_polis_watch() {
    let mesh = mesh();
    install(&mesh, "peer", &peer("1.0.0"), "exec = \"module.wasm\"\nprotocol = \"jsonrpc\"\n");
    let _router = mesh.start_router(&[]);
    let mut watcher = mesh.spawn(&["watch", "notes.*", "--no-launch"]);
    mesh.wait_for("polis watch to subscribe", || watcher.stderr().contains("watching").then_some(()));
    let params = r#"{"topic":"notes.changed","value":{"file":"a.norg","n":1}}"#;
    assert_eq!(mesh.run(&["call", "peer", "publish", params]).code(0).json(), true);
    let line: serde_json::Value = serde_json::from_str(&watcher.line()).unwrap();
    assert_eq!(line, serde_json::json!({"topic": "notes.changed", "value": {"file": "a.norg", "n": 1}}));
    // The router keeps `polis.` to itself, for WASI modules too: the bad
    // publish is dropped, and the module goes on.
    let bad = r#"{"topic":"polis.module.started","value":1}"#;
    assert_eq!(mesh.run(&["call", "peer", "publish", bad]).code(0).json(), true);
    assert_eq!(mesh.run(&["call", "peer", "version"]).code(0).json(), "1.0.0");
}

#[test]
fn a_wasi_module_has_no_socket_to_use() {
    let mesh = mesh();
    install(
        &mesh,
        "peer",
        &peer("1.0.0"),
        "exec = \"module.wasm\"\nprotocol = \"jsonrpc\"\n[sandbox]\ndirs = [\"data:rw\"]\n",
    );
    // WASI preview 1 has no socket(): the only socket calls work on
    // descriptors the host hands over, and it hands over none. accept() on
    // each descriptor it has (stdio, the preopened dir) and past them fails.
    let errnos = mesh.run(&["call", "peer", "socket"]).code(0).json();
    let errnos: Vec<i64> = errnos.as_array().unwrap().iter().map(|e| e.as_i64().unwrap()).collect();
    const ENOTSOCK: i64 = 57;
    const EBADF: i64 = 8;
    assert_eq!(errnos[..4], [ENOTSOCK; 4], "{errnos:?}");
    assert!(errnos[4..].iter().all(|&e| e == EBADF), "{errnos:?}");
    assert_eq!(mesh.run(&["call", "peer", "version"]).code(0).json(), "1.0.0");
}

#[test]
fn an_update_while_calls_are_in_flight_fails_no_call_and_the_new_version_answers() {
    let mesh = mesh();
    host();
    let src = mesh.root().join("src/peer");
    std::fs::create_dir_all(&src).unwrap();
    let manifest = |version: &str| {
        format!(
            "name = \"peer\"\nversion = \"{version}\"\nexec = \"peer.wasm\"\nprotocol = \"jsonrpc\"\n\
             [sandbox]\ndirs = [\"data:rw\"]\n"
        )
    };
    std::fs::write(src.join("module.toml"), manifest("1.0.0")).unwrap();
    std::fs::copy(peer("1.0.0"), src.join("peer.wasm")).unwrap();
    let v2 = peer("2.0.0");
    let installed = mesh.run(&["module", "install", src.to_str().unwrap()]).code(0).stdout();
    assert!(installed.starts_with("installed peer 1.0.0 in "), "{installed}");

    // A grace of 10 ms: a module stopped with calls in flight would be
    // killed at once, failing them; only the drain lets them finish.
    let router = mesh.start_router(&["--grace", "10ms"]);
    assert_eq!(mesh.run(&["call", "peer", "version"]).code(0).json(), "1.0.0");
    let old = module_status(&mesh, "peer")["pid"].as_u64().expect("peer runs") as u32;
    // Four calls held in the module (sent or queued) until data/release exists.
    let mut held: Vec<_> = (0..4).map(|_| mesh.spawn(&["call", "peer", "hold"])).collect();
    mesh.wait_for("the held calls to reach the module", || {
        (module_status(&mesh, "peer")["calls"].as_u64() == Some(5)).then_some(())
    });

    // The new version, installed while they are in flight.
    std::fs::write(src.join("module.toml"), manifest("2.0.0")).unwrap();
    std::fs::copy(&v2, src.join("peer.wasm")).unwrap();
    let mut install = mesh.spawn(&["module", "install", src.to_str().unwrap()]);
    mesh.wait_for("the old version to drain", || {
        (module_status(&mesh, "peer")["state"] == "stopping").then_some(())
    });
    // A call made now waits for the new version rather than failing.
    let mut during = mesh.spawn(&["call", "peer", "version"]);
    assert!(polis_testing::procs::is_running(old), "the old version stopped with calls in flight");
    assert_eq!(during.try_exit(), None, "a call made while draining ended before the drain");

    let release = mesh.home().join(".local/share/polis/data/peer/data/release");
    std::fs::write(&release, "").unwrap();
    for call in &mut held {
        let (status, stderr) = call.wait(WAIT);
        assert!(status.success(), "a call in flight failed: {stderr}");
        assert_eq!(call.line(), "\"1.0.0\"", "the old version answers the calls it had");
    }
    let (status, stderr) = install.wait(WAIT);
    assert!(status.success(), "{stderr}");
    assert_eq!(
        install.line(),
        format!("installed peer 2.0.0 in {}", mesh.home().join(".local/share/polis/modules/peer").display())
    );
    assert!(stderr.contains("replaced peer 1.0.0 (pid "), "{stderr}");
    let (status, stderr) = during.wait(WAIT);
    assert!(status.success(), "{stderr}");
    assert_eq!(during.line(), "\"2.0.0\"");

    // The new version runs, in a new process, under the same router.
    assert_eq!(mesh.run(&["call", "peer", "version"]).code(0).json(), "2.0.0");
    let now = module_status(&mesh, "peer");
    assert_eq!((now["state"].as_str(), now["version"].as_str()), (Some("running"), Some("2.0.0")), "{now}");
    let new = now["pid"].as_u64().unwrap() as u32;
    assert_ne!(new, old);
    mesh.wait_for("the old version to exit", || (!polis_testing::procs::is_running(old)).then_some(()));
    assert_eq!(mesh.router().map(|r| r.pid), Some(router.pid()), "the router was not restarted");

    // Remove stops it first.
    mesh.run(&["module", "remove", "peer"]).code(0);
    mesh.wait_for("the module to exit", || (!polis_testing::procs::is_running(new)).then_some(()));
    let run = mesh.run(&["call", "peer", "version"]);
    assert!(run.code(3).error_line().contains("NOT_FOUND"), "{run}");
}
