//! `polis_node::manifest::load` on arbitrary `module.toml` text.
//!
//! `load` is the public entry point and reads a file, so each input is
//! written to `modules/<name>/module.toml` in a tree on tmpfs that holds the
//! executables the example manifests name (`../../target/debug/polis-echo`,
//! `pyecho.py`, ...), so that valid manifests get all the way through. The
//! directory is the first known name quoted in the text, so that the
//! name-matches-directory check can pass. `load` never panics, and what it
//! accepts is what its docs promise.
#![no_main]

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::LazyLock,
};

use libfuzzer_sys::fuzz_target;
use polis_node::manifest::{self, Manifest};

const NAMES: [&str; 4] = ["echo", "counter", "pyecho", "m"];

struct Tree {
    _root: tempfile::TempDir,
    modules: PathBuf,
}

static TREE: LazyLock<Tree> = LazyLock::new(|| {
    let shm = Path::new("/dev/shm");
    let root = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    let executable = |path: PathBuf| {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    };
    executable(root.path().join("target/debug/polis-echo"));
    executable(root.path().join("target/debug/polis-counter"));
    let modules = root.path().join("modules");
    for name in NAMES {
        executable(modules.join(name).join(format!("{name}.py")));
    }
    // A file that exists but may not be executed.
    fs::write(modules.join("m/data"), "").unwrap();
    Tree { _root: root, modules }
});

fn check(m: &Manifest, path: &Path, dir: &str) {
    assert_eq!(m.name, dir, "the name is the directory's");
    assert!(manifest::validate_name(&m.name).is_ok());
    assert_eq!(m.path, path);
    assert!(m.dir().ends_with(dir));
    assert!(m.exec.is_file(), "exec {} was checked", m.exec.display());
    assert!(m.config.is_object(), "[config] is a table: {}", m.config);
    for d in &m.depends {
        assert!(manifest::validate_name(&d.name).is_ok(), "dependency {:?}", d.name);
    }
}

fuzz_target!(|text: &str| {
    let dir = NAMES.iter().copied().find(|n| text.contains(&format!("\"{n}\""))).unwrap_or("m");
    let path = TREE.modules.join(dir).join("module.toml");
    fs::write(&path, text).unwrap();
    match manifest::load(&path) {
        Ok(m) => check(&m, &path, dir),
        Err(e) => {
            // One line, naming the file, whatever toml said.
            let message = e.to_string();
            assert!(message.contains(&*path.to_string_lossy()), "{message}");
        }
    }
});
