//! A Python script as a client: `examples/python/polis_call.py` finds the
//! router through the mesh directory, checks its lock, generates its gRPC
//! stubs from `proto/` and calls the router with grpcio (installed by
//! `.ci/run`). Real processes: a `polis router` and `python3`.

use std::{process::Command, time::Duration};

use serde_json::json;

use polis_testing::Run;

use crate::util::{ECHO, Process, TestMesh, listing, mesh};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/polis_call.py");

/// Python's start, protoc and the call; generous for a loaded CI machine.
const SCRIPT_WAIT: Duration = Duration::from_secs(60);

/// A mesh with the `echo` module, and its router running.
fn mesh_with_router() -> (TestMesh, Process) {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let router = mesh.spawn(&["router"]);
    mesh.wait_router();
    (mesh, router)
}

/// `python3 polis_call.py ARGS`, hermetic: no mesh chosen by the environment.
fn script_command(mesh: &TestMesh, args: &[&str]) -> Command {
    let mut cmd = mesh.command("python3");
    cmd.arg(SCRIPT).args(args);
    cmd
}

/// `python3 polis_call.py --mesh-dir <mesh> ARGS`, run to completion.
fn script(mesh: &TestMesh, args: &[&str]) -> Run {
    let mut cmd = script_command(mesh, &["--mesh-dir", mesh.dir.to_str().expect("UTF-8 mesh path")]);
    cmd.args(args);
    run(mesh, cmd)
}

/// Runs `cmd`, killing it (and failing) if it is not done within `SCRIPT_WAIT`.
fn run(mesh: &TestMesh, cmd: Command) -> Run {
    Run::within(cmd, SCRIPT_WAIT, Some(&mesh.dir))
}

#[test]
fn a_python_grpc_script_resolves_the_router_and_calls_echo() {
    let (mesh, _router) = mesh_with_router();

    let params = json!({"from": "python"});
    let echoed = script(&mesh, &["echo", "echo", &params.to_string()]);
    assert_eq!(echoed.code(0).json(), params, "{echoed}");

    let ping = script(&mesh, &["echo", "ping"]);
    assert_eq!(ping.code(0).json(), json!("pong"), "{ping}");

    let missing = script(&mesh, &["nosuch", "ping"]);
    missing.code(3);
    assert!(missing.error_line().starts_with("error: NOT_FOUND: "), "{missing}");

    let no_method = script(&mesh, &["echo", "nosuch"]);
    no_method.code(3);
    assert!(no_method.error_line().starts_with("error: NOT_FOUND: "), "{no_method}");
}

#[test]
fn the_script_finds_the_mesh_as_polis_does() {
    let (mesh, _router) = mesh_with_router();

    // POLIS_MESH_DIR, when no --mesh-dir is given.
    let mut cmd = script_command(&mesh, &["echo", "ping"]);
    cmd.env("POLIS_MESH_DIR", &mesh.dir);
    let by_env = run(&mesh, cmd);
    assert_eq!(by_env.code(0).json(), json!("pong"), "{by_env}");

    // $XDG_RUNTIME_DIR/polis/$POLIS_MESH otherwise (the mesh's own runtime dir).
    let runtime = mesh.runtime_dir();
    std::fs::create_dir_all(runtime.join("polis")).expect("runtime dir");
    std::os::unix::fs::symlink(&mesh.dir, runtime.join("polis").join("work")).expect("symlink");
    let mut cmd = script_command(&mesh, &["echo", "ping"]);
    cmd.env("POLIS_MESH", "work");
    let by_name = run(&mesh, cmd);
    assert_eq!(by_name.code(0).json(), json!("pong"), "{by_name}");
}

#[test]
fn the_grpc_health_service_answers_serving() {
    let (mesh, _router) = mesh_with_router();
    let health = script(&mesh, &["--health"]);
    assert_eq!(health.code(0).stdout().trim(), "SERVING", "{health}");
    let admin = script(&mesh, &["--health", "polis.v1.Admin"]);
    assert_eq!(admin.code(0).stdout().trim(), "SERVING", "{admin}");
}

/// grpcio-reflection's client speaks reflection v1alpha only.
#[test]
fn python_reflection_v1alpha_lists_the_services() {
    let (mesh, _router) = mesh_with_router();
    let list = script(&mesh, &["--list"]);
    let stdout = list.code(0).stdout();
    let services: Vec<&str> = stdout.lines().collect();
    for want in ["grpc.health.v1.Health", "polis.v1.Admin", "polis.v1.Router"] {
        assert!(services.contains(&want), "{want} missing\n{list}");
    }
}

/// The script's channel has grpcio's default options (no authority
/// override): grpcio sends the socket path as `:authority`.
#[test]
fn the_script_uses_grpcio_defaults() {
    let source = std::fs::read_to_string(SCRIPT).expect("read the script");
    assert!(!source.contains("default_authority"), "the script overrides the authority");
}

#[test]
fn a_script_with_no_router_exits_4() {
    let mesh = mesh();
    let run = script(&mesh, &["echo", "ping"]);
    run.code(4);
    let want = format!(
        "error: UNAVAILABLE: no router is running in the mesh at {}; start one with polis router",
        mesh.dir.display()
    );
    assert_eq!(run.error_line(), want, "{run}");
    assert_eq!(run.stdout(), "", "{run}");
}

/// A refusal of the script's own, not the router's, names its code too.
#[test]
fn a_script_refuses_a_mesh_dir_others_can_write_with_a_code() {
    use std::os::unix::fs::PermissionsExt;
    let mesh = mesh();
    std::fs::create_dir_all(&mesh.dir).unwrap();
    std::fs::set_permissions(&mesh.dir, std::fs::Permissions::from_mode(0o770)).unwrap();
    let run = script(&mesh, &["echo", "ping"]);
    run.code(1);
    let want = format!(
        "error: FAILED_PRECONDITION: the mesh directory {} is writable by others",
        mesh.dir.display()
    );
    assert!(run.error_line().starts_with(&want), "{run}");
    std::fs::set_permissions(&mesh.dir, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn a_script_ignores_the_record_of_a_killed_router() {
    let (mesh, mut router) = mesh_with_router();
    router.kill();
    // SIGKILL leaves router.json behind; only its released lock says the router is gone.
    assert!(mesh.dir.join("router.json").exists(), "router.json is left behind\n{}", listing(&mesh.dir));
    let run = script(&mesh, &["echo", "ping"]);
    run.code(4);
    assert!(
        run.error_line().starts_with("error: UNAVAILABLE: no router is running in the mesh at "),
        "{run}"
    );

    let resolve = script(&mesh, &["--resolve", "router"]);
    resolve.code(3);
}

#[test]
fn a_script_streams_one_json_value_per_line() {
    let (mesh, _router) = mesh_with_router();
    let run = script(&mesh, &["--stream", "echo", "stream", r#"{"count":3,"interval_ms":10}"#]);
    run.code(0);
    let stdout = run.stdout();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["0", "1", "2"], "{run}");
}

#[test]
fn the_script_resolves_names_like_polis_resolve() {
    let (mesh, _router) = mesh_with_router();
    let record = mesh.router().expect("a router is running");

    let router = script(&mesh, &["--resolve", "router"]);
    let found = router.code(0).json();
    assert_eq!(found["id"], record.id.to_string(), "{router}");
    assert_eq!(found["epoch"], json!(record.epoch), "{router}");
    assert_eq!(found["endpoint"], json!(record.endpoint), "{router}");

    // A module publishes its record once started: a call starts echo.
    script(&mesh, &["echo", "ping"]).code(0);
    let echo = script(&mesh, &["--resolve", "echo"]);
    let found = echo.code(0).json();
    assert_eq!(found["services"], json!(["echo"]), "{echo}");
    assert_eq!(found["router"], record.id.to_string(), "{echo}");

    let nobody = script(&mesh, &["--resolve", "nosuch"]);
    nobody.code(3);
    assert!(nobody.error_line().starts_with("error: NOT_FOUND: no live node serves \"nosuch\""), "{nobody}");

    // An unreadable record is skipped with a warning, never a crash.
    std::fs::write(mesh.dir.join("nodes").join(format!("{}.json", uuid::Uuid::new_v4())), "{\"format\":1,")
        .expect("write a broken record");
    let skipped = script(&mesh, &["--resolve", "echo"]);
    assert_eq!(skipped.code(0).json()["services"], json!(["echo"]), "{skipped}");
    assert!(skipped.stderr().starts_with("warning: skipping "), "{skipped}");
}
