//! The suite is hermetic: nothing of the user's (installed modules, their
//! mesh, their `POLIS_*` settings) leaks into a test, and nothing of a
//! test's leaks out into the user's directories.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use polis_testing::Run;

use crate::util::{ECHO, listing, mesh};

/// Run on its own, it shows that a test sees only its own modules and its
/// own home; run by [`a_users_installed_modules_do_not_leak_into_the_suite`]
/// under a decoy home, that the user's modules stay out.
#[test]
fn a_test_sees_only_its_own_modules_and_home() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let _router = mesh.spawn(&["router"]);
    mesh.wait_router();

    let status = mesh.run(&["status", "--json"]).code(0).json();
    let names: Vec<&str> =
        status["modules"].as_array().unwrap().iter().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!(names, ["echo"], "only the test's own modules are known\n{}", listing(&mesh.dir));

    let missing = mesh.run(&["call", "decoy", "ping"]);
    missing.code(3);
    assert!(missing.stderr().contains("NOT_FOUND"), "{missing}");
    let own_data = mesh.home().join(".local/share/polis/modules");
    assert!(
        missing.stderr().contains(&own_data.display().to_string()),
        "searches the test's data dir\n{missing}"
    );

    assert_eq!(mesh.run(&["call", "echo", "ping"]).code(0).stdout().trim(), "\"pong\"");
    let pid = mesh.run(&["resolve", "echo"]).code(0).json()["pid"].as_u64().unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, Path::new(ECHO).canonicalize().unwrap(), "the test's own echo answered");

    // What the module (started by the router, started by the harness) sees.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let env: Vec<String> =
        environ.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    let want_home = format!("HOME={}", mesh.home().display());
    let want_runtime = format!("XDG_RUNTIME_DIR={}", mesh.runtime_dir().display());
    assert!(env.contains(&want_home) && env.contains(&want_runtime), "a hermetic environment: {env:?}");
    let outer: Vec<&String> = env
        .iter()
        .filter(|v| {
            v.starts_with("POLIS_")
                && !v.starts_with("POLIS_MESH_DIR=")
                && !v.starts_with("POLIS_NODE_ID=")
                && !v.starts_with("POLIS_SERVICE=")
        })
        .collect();
    assert!(outer.is_empty(), "no POLIS_* variable of the outer environment: {outer:?}");
    mesh.run(&["stop"]).code(0);
}

/// Every file below `dir`, relative to it, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path.clone());
            }
            found.push(path.strip_prefix(dir).unwrap().to_owned());
        }
    }
    found.sort();
    found
}

#[test]
fn a_users_installed_modules_do_not_leak_into_the_suite() {
    // A user's home with modules installed, each of whose programs would
    // leave a mark, and a user's runtime dir and mesh settings.
    let decoy = tempfile::Builder::new().prefix("pd").tempdir_in("/tmp").unwrap();
    let home = decoy.path().join("home");
    let installed = home.join(".local/share/polis/modules");
    let marker = decoy.path().join("a-decoy-ran");
    for name in ["echo", "decoy", "pyecho"] {
        let dir = installed.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let manifest =
            format!("name = {name:?}\nversion = \"9.0.0\"\nexec = \"run\"\nprotocol = \"frames\"\n");
        std::fs::write(dir.join("module.toml"), manifest).unwrap();
        std::fs::write(dir.join("run"), format!("#!/bin/sh\necho {name} >> {}\n", marker.display())).unwrap();
        std::fs::set_permissions(dir.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let runtime = decoy.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let before = files(decoy.path());

    // This very test binary, running the test above as that user would.
    let test = "hermetic::a_test_sees_only_its_own_modules_and_home";
    let mut cmd = polis_testing::command(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("POLIS_MODULES_PATH", &installed)
        .env("POLIS_MESH_DIR", decoy.path().join("mesh"))
        .env("POLIS_MESH", "decoy")
        .env("POLIS_LOG", "trace")
        .env("POLIS_LINGER", "1h");
    let run = Run::within(cmd, Duration::from_secs(120), None);
    run.code(0);
    assert!(run.stdout().contains("1 passed"), "the child test ran\n{run}");

    let ran = std::fs::read_to_string(&marker).unwrap_or_default();
    assert!(ran.is_empty(), "the user's modules ran: {ran}\n{run}");
    assert_eq!(files(decoy.path()), before, "nothing was written into the user's directories\n{run}");
}
