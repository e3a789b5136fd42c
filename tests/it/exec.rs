//! `polis exec -- APP`: APP with a private mesh that goes when APP goes,
//! and APP's exit status as polis's.

use std::path::Path;

use polis_testing::procs::is_running;

use crate::util::{ECHO, POLIS, TestMesh, mesh};

/// `polis --modules-path <mods> exec ARGS`, with `polis` on PATH for APP.
fn exec(mesh: &TestMesh, args: &[&str]) -> polis_testing::Run {
    let mut cmd = mesh.command(POLIS);
    cmd.arg("--modules-path").arg(&mesh.modules).arg("exec").args(args);
    let bin = Path::new(POLIS).parent().unwrap().to_path_buf();
    let old = std::env::var_os("PATH").unwrap_or_default();
    cmd.env("PATH", std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&old))).unwrap());
    mesh.run_command(cmd)
}

/// What `polis exec` leaves in the runtime dir (where its mesh was).
fn private_meshes(mesh: &TestMesh) -> Vec<String> {
    let entries = std::fs::read_dir(mesh.runtime_dir()).unwrap().flatten();
    entries
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("polis-exec"))
        .collect()
}

#[test]
fn exec_runs_app_in_a_private_mesh_returns_its_status_and_leaves_nothing() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let script = r#"polis call echo ping && echo "$POLIS_MESH_DIR" && polis status --json && exit 3"#;
    let run = exec(&mesh, &["--module", "echo", "--", "sh", "-c", script]);
    run.code(3);
    let stdout = run.stdout();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("\"pong\""), "{run}");
    let dir = lines.next().expect("the mesh dir").to_owned();
    let status: serde_json::Value = serde_json::from_str(lines.next().expect("status")).expect("status JSON");
    assert_eq!(status["mesh_dir"], dir.as_str(), "APP's polis found the private mesh");
    assert_ne!(Path::new(&dir), mesh.dir, "not the test's mesh");
    let router = status["router"]["pid"].as_u64().expect("a router pid") as u32;
    let echo = status["modules"].as_array().unwrap().iter().find(|m| m["name"] == "echo").unwrap();
    let echo = echo["pid"].as_u64().expect("echo was loaded before APP ran") as u32;

    assert!(!Path::new(&dir).exists(), "the private mesh dir is removed");
    assert!(private_meshes(&mesh).is_empty(), "{:?}", private_meshes(&mesh));
    assert!(!is_running(router), "the router is gone");
    assert!(!is_running(echo), "its module is gone");
    assert!(mesh.router().is_none(), "the test's own mesh was never touched");
}

#[test]
fn exec_reports_a_signal_as_128_plus_n_and_a_plain_status_as_it_is() {
    let mesh = mesh();
    exec(&mesh, &["--", "sh", "-c", "kill -TERM $$"]).code(143);
    exec(&mesh, &["--", "sh", "-c", "exit 0"]).code(0);
    exec(&mesh, &["--", "false"]).code(1);
    assert!(private_meshes(&mesh).is_empty());
}

#[test]
fn exec_fails_before_app_runs_when_a_module_cannot_load_or_app_cannot_run() {
    let mesh = mesh();
    let marker = mesh.root().join("ran");
    let touch = format!("touch {}", marker.display());
    let run = exec(&mesh, &["--module", "nosuch", "--", "sh", "-c", &touch]);
    assert!(run.code(3).error_line().starts_with("error: NOT_FOUND: no module named \"nosuch\""), "{run}");
    assert!(!marker.exists(), "APP did not run");
    let run = exec(&mesh, &["--", "/no/such/app"]);
    assert!(run.code(3).error_line().starts_with("error: NOT_FOUND: cannot run /no/such/app"), "{run}");
    let run = exec(&mesh, &["--module", "../x", "--", "true"]);
    assert!(run.code(2).error_line().starts_with("error: INVALID_ARGUMENT: invalid service name"), "{run}");
    let run = exec(&mesh, &[]);
    assert!(run.code(2).stderr().starts_with("error: INVALID_ARGUMENT: "), "{run}");
    assert!(private_meshes(&mesh).is_empty(), "{:?}", private_meshes(&mesh));
}
