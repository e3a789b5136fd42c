//! The mesh directory's safety checks, through the CLI.

use std::os::unix::fs::PermissionsExt;

use crate::util::{POLIS, mesh};

#[test]
fn a_fresh_mesh_dir_is_private() {
    let mesh = mesh();
    mesh.run(&["ls"]).code(0);
    let mode = std::fs::metadata(&mesh.dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn group_or_world_writable_mesh_dirs_are_refused() {
    for mode in [0o770, 0o702, 0o777] {
        let mesh = mesh();
        std::fs::create_dir(&mesh.dir).unwrap();
        std::fs::set_permissions(&mesh.dir, std::fs::Permissions::from_mode(mode)).unwrap();
        for args in [&["ls"][..], &["router"][..], &["resolve", "router"][..]] {
            let run = mesh.run(args);
            run.code(5);
            let err = run.stderr();
            assert!(err.starts_with("error: ") && err.lines().count() == 1, "{run}");
            assert!(err.contains(&mesh.dir.display().to_string()), "names the path\n{run}");
            assert!(err.contains(&format!("chmod 700 {}", mesh.dir.display())), "says how to fix it\n{run}");
        }
        assert!(!mesh.dir.join("router.lock").exists(), "nothing was created in a refused dir");
    }
}

#[test]
fn a_mesh_dir_owned_by_another_user_is_refused() {
    let mesh = mesh();
    std::fs::create_dir(&mesh.dir).unwrap();
    std::fs::set_permissions(&mesh.dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let dir = if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(&mesh.dir, Some(65534), Some(65534)).unwrap();
        mesh.dir.clone()
    } else {
        // Without root we cannot give a directory away; one of root's will do.
        "/usr".into()
    };
    let mut cmd = mesh.command(POLIS);
    cmd.arg("--mesh-dir").arg(&dir).arg("ls");
    let run = mesh.run_command(cmd);
    run.code(5);
    let err = run.stderr();
    assert!(err.contains(&dir.display().to_string()) && err.contains("is owned by uid"), "{run}");
}
