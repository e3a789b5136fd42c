//! Hostile or broken local setups (issue 11): files planted in the mesh
//! directory hang nobody, and an unsafe or unusable mesh directory is
//! refused with exit code 5 and an `error:` line that names it.

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use super::util::{POLIS, mesh};
use polis_testing::{Run, TestMesh};

fn mkfifo(path: &Path) {
    rustix::fs::mkfifoat(rustix::fs::CWD, path, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
}

fn dir_with_mode(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// `polis --mesh-dir DIR ARGS` with the hermetic environment of `mesh`, but
/// aimed at a directory of the test's making, run to its end (bounded).
fn run_at(mesh: &TestMesh, dir: &Path, args: &[&str]) -> Run {
    let mut cmd = mesh.command(POLIS);
    cmd.arg("--mesh-dir").arg(dir).args(args);
    mesh.run_command(cmd)
}

// ---- finding 3: a FIFO in the mesh directory hangs nobody ----

#[test]
fn ls_and_resolve_finish_with_a_warning_when_a_fifo_is_a_record() {
    let mesh = mesh();
    mesh.run(&["ls"]).code(0); // creates the directory and nodes/
    let fifo = mesh.dir.join("nodes").join("9b2f4c1e-6a55-4f0b-9e64-3f7c2d8a1b00.json");
    mkfifo(&fifo);
    let warning = format!("warning: skipping {}: not a regular file but a FIFO", fifo.display());

    let run = mesh.run(&["ls"]);
    run.code(0);
    assert!(run.stderr().contains(&warning), "{}", run.stderr());
    assert!(run.stdout().contains("no live nodes"), "{}", run.stdout());

    let run = mesh.run(&["ls", "--json"]);
    run.code(0);
    assert!(run.stderr().contains(&warning), "{}", run.stderr());
    // The warning goes to stderr: stdout stays one JSON document.
    let json: serde_json::Value = serde_json::from_str(run.stdout().trim()).unwrap();
    assert_eq!(json["nodes"], serde_json::json!([]));

    let run = mesh.run(&["resolve", "x"]);
    run.code(3);
    assert!(run.stderr().contains(&warning), "{}", run.stderr());
    assert!(run.stderr().contains("error: NOT_FOUND: no live node serves \"x\""), "{}", run.stderr());
}

#[test]
fn ls_and_resolve_router_finish_with_a_warning_when_router_json_is_a_fifo() {
    let mesh = mesh();
    mesh.run(&["ls"]).code(0);
    let fifo = mesh.dir.join("router.json");
    mkfifo(&fifo);
    let warning = format!("warning: skipping {}: not a regular file but a FIFO", fifo.display());

    let run = mesh.run(&["ls"]);
    run.code(0);
    assert!(run.stderr().contains(&warning), "{}", run.stderr());
    assert!(run.stdout().contains("router none"), "{}", run.stdout());

    let run = mesh.run(&["resolve", "router"]);
    run.code(3);
    assert!(run.stderr().contains(&warning), "{}", run.stderr());
}

#[test]
fn a_fifo_as_a_node_lock_is_skipped_with_a_warning() {
    let mesh = mesh();
    mesh.run(&["ls"]).code(0);
    let id = "9b2f4c1e-6a55-4f0b-9e64-3f7c2d8a1b00";
    let nodes = mesh.dir.join("nodes");
    fs::write(
        nodes.join(format!("{id}.json")),
        format!(
            r#"{{"format":1,"id":"{id}","role":"module","name":"echo","services":["echo"],"pid":1,"started_at":"2026-11-21T10:00:00Z"}}"#
        ),
    )
    .unwrap();
    let lock = nodes.join(format!("{id}.lock"));
    mkfifo(&lock);

    let run = mesh.run(&["resolve", "echo"]);
    run.code(3);
    let warning = format!("warning: skipping {}: not a regular file but a FIFO", lock.display());
    assert!(run.stderr().contains(&warning), "{}", run.stderr());
}

#[test]
fn a_huge_record_is_skipped_as_too_large() {
    let mesh = mesh();
    mesh.run(&["ls"]).code(0);
    let big = mesh.dir.join("nodes").join("9b2f4c1e-6a55-4f0b-9e64-3f7c2d8a1b00.json");
    fs::write(&big, vec![b' '; 10 << 20]).unwrap();
    let run = mesh.run(&["ls"]);
    run.code(0);
    let warning = format!("warning: skipping {}: too large (10485760 bytes", big.display());
    assert!(run.stderr().contains(&warning), "{}", run.stderr());
}

// ---- findings 7 and 11: unsafe or unusable local setup exits 5 ----

#[test]
fn a_mesh_dir_under_a_world_writable_parent_without_the_sticky_bit_exits_5() {
    let mesh = mesh();
    let open = mesh.root().join("open");
    dir_with_mode(&open, 0o777);
    let dir = open.join("m");
    let out = run_at(&mesh, &dir, &["ls"]);
    assert_eq!(out.status().code(), Some(5), "{}", out.stderr());
    let stderr = out.stderr();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let name = open.display();
    assert!(stderr.contains(&format!("directory {name} above the mesh directory has mode 0777")), "{stderr}");
    assert!(stderr.contains(&format!("`chmod go-w {name}` or `chmod +t {name}`")), "{stderr}");
    assert!(!dir.exists(), "nothing is created under a refused parent");
}

#[test]
fn a_mesh_dir_under_a_group_writable_parent_exits_5() {
    let mesh = mesh();
    let open = mesh.root().join("group");
    dir_with_mode(&open, 0o775);
    let dir = open.join("m");
    let out = run_at(&mesh, &dir, &["ls"]);
    assert_eq!(out.status().code(), Some(5), "{}", out.stderr());
    assert!(out.stderr().contains(&open.display().to_string()));
}

#[test]
fn a_mesh_dir_under_a_sticky_world_writable_parent_is_accepted() {
    let mesh = mesh();
    let sticky = mesh.root().join("sticky");
    dir_with_mode(&sticky, 0o1777); // as /tmp is
    let dir = sticky.join("m");
    let out = run_at(&mesh, &dir, &["ls"]);
    assert_eq!(out.status().code(), Some(0), "{}", out.stderr());
    assert!(dir.join("nodes").is_dir());
}

#[test]
fn a_world_writable_mesh_dir_exits_5_not_1() {
    let mesh = mesh();
    let dir = mesh.root().join("m");
    dir_with_mode(&dir, 0o777);
    let out = run_at(&mesh, &dir, &["ls"]);
    assert_eq!(out.status().code(), Some(5), "{}", out.stderr());
    let stderr = out.stderr();
    assert!(stderr.starts_with("error: ") && stderr.contains("chmod 700"), "{stderr}");
}

#[test]
fn a_file_as_the_mesh_dir_exits_5() {
    let mesh = mesh();
    let file = mesh.root().join("f");
    fs::write(&file, b"").unwrap();
    let out = run_at(&mesh, &file, &["ls"]);
    assert_eq!(out.status().code(), Some(5), "{}", out.stderr());
    assert!(out.stderr().contains("is not a directory"));
}

#[test]
fn a_symlink_to_a_private_directory_is_followed() {
    let mesh = mesh();
    let real = mesh.root().join("real");
    dir_with_mode(&real, 0o700);
    let link = mesh.root().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = run_at(&mesh, &link, &["ls"]);
    assert_eq!(out.status().code(), Some(0), "{}", out.stderr());
    assert!(out.stdout().contains(&format!("mesh   {}", link.display())), "{}", out.stdout());
    assert!(real.join("nodes").is_dir());
}

#[test]
fn a_symlink_to_a_world_writable_directory_exits_5_naming_both() {
    let mesh = mesh();
    let open = mesh.root().join("open");
    dir_with_mode(&open, 0o777);
    let link = mesh.root().join("link");
    std::os::unix::fs::symlink(&open, &link).unwrap();
    let out = run_at(&mesh, &link, &["ls"]);
    assert_eq!(out.status().code(), Some(5), "{}", out.stderr());
    let stderr = out.stderr();
    let want = format!("{} is a symbolic link to {}", link.display(), open.display());
    assert!(stderr.starts_with("error: ") && stderr.contains(&want), "{stderr}");
}

#[test]
fn a_dangling_symlink_exits_5_naming_both() {
    let mesh = mesh();
    let gone = mesh.root().join("gone");
    let link = mesh.root().join("link");
    std::os::unix::fs::symlink(&gone, &link).unwrap();
    let out = run_at(&mesh, &link, &["ls"]);
    assert_eq!(out.status().code(), Some(5), "{}", out.stderr());
    let stderr = out.stderr();
    let want = format!("{} is a symbolic link to {}, which does not exist", link.display(), gone.display());
    assert!(stderr.contains(&want), "{stderr}");
    assert!(!gone.exists(), "nothing is created through a dangling link");
}
