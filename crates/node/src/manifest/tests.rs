use super::*;

struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self { tmp: tempfile::tempdir().unwrap() }
    }

    fn path(&self) -> ModulePath {
        ModulePath::from_dirs(vec![self.tmp.path().to_owned()])
    }

    /// Writes `<name>/module.toml` with an executable `run` beside it.
    fn module(&self, name: &str, extra: &str) -> PathBuf {
        self.raw(name, &format!("name = \"{name}\"\nversion = \"1.0.0\"\nexec = \"run\"\n{extra}"))
    }

    fn raw(&self, dir: &str, toml: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.tmp.path().join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let exec = dir.join("run");
        std::fs::write(&exec, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exec, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("module.toml");
        std::fs::write(&path, toml).unwrap();
        path
    }
}

#[test]
fn a_full_manifest_loads() {
    let f = Fixture::new();
    f.module(
        "store",
        "description = \"notes\"\nargs = [\"-q\"]\nprotocol = \"jsonrpc\"\nautostart = true\n\
         restart = \"always\"\n[env]\nA = \"1\"\n[config]\nroot = \"~/notes\"\ndepth = 3\n",
    );
    let m = f.path().find("store").unwrap();
    assert_eq!(m.version, semver::Version::new(1, 0, 0));
    assert_eq!(m.protocol, Protocol::JsonRpc);
    assert_eq!(m.restart, RestartPolicy::Always);
    assert!(m.autostart);
    assert_eq!(m.args, ["-q"]);
    assert_eq!(m.env["A"], "1");
    assert_eq!(m.config, serde_json::json!({"root": "~/notes", "depth": 3}));
    assert!(m.exec.is_absolute() && m.exec.ends_with("store/run"));
}

#[test]
fn broken_manifests_say_what_is_wrong() {
    let cases = [
        ("bad-toml", "name = \"bad-toml\"\nversion = ", "invalid manifest"),
        (
            "mismatch",
            "name = \"other\"\nversion = \"1.0.0\"\nexec = \"run\"\n",
            "does not match its directory",
        ),
        ("nover", "name = \"nover\"\nversion = \"one\"\nexec = \"run\"\n", "is not semver"),
        (
            "proto",
            "name = \"proto\"\nversion = \"1.0.0\"\nexec = \"run\"\nprotocol = \"soap\"\n",
            "unknown protocol \"soap\"",
        ),
        ("noexec", "name = \"noexec\"\nversion = \"1.0.0\"\nexec = \"missing\"\n", "cannot be used"),
        ("typo", "name = \"typo\"\nversion = \"1.0.0\"\nexec = \"run\"\nautostrat = true\n", "unknown field"),
    ];
    let f = Fixture::new();
    for (dir, toml, want) in cases {
        f.raw(dir, toml);
        let err = f.path().find(dir).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains("module.toml"), "{dir}: {err}");
    }
}

#[test]
fn a_non_executable_exec_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let path = f.module("plain", "");
    let exec = path.parent().unwrap().join("run");
    std::fs::set_permissions(&exec, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = f.path().find("plain").unwrap_err().to_string();
    assert!(err.contains("is not executable") && err.contains("chmod +x"), "{err}");
}

#[test]
fn names_are_never_paths() {
    let f = Fixture::new();
    for name in ["../x", "/bin/sh", "a/b", "", ".", "-x", "Echo", "a b"] {
        let err = f.path().find(name).unwrap_err();
        assert!(matches!(err, LookupError::InvalidName(_)), "{name:?}: {err}");
    }
}

#[test]
fn not_found_lists_the_directories_searched() {
    let f = Fixture::new();
    let err = f.path().find("nope").unwrap_err().to_string();
    assert!(err.contains(&f.tmp.path().display().to_string()), "{err}");
}

#[test]
fn dependencies_come_first_and_are_checked_transitively() {
    let f = Fixture::new();
    f.module("a", "depends = [\"b >=1\", \"c\"]");
    f.module("b", "depends = [\"c ^1.0\"]");
    f.module("c", "");
    let order: Vec<String> = f.path().load_order("a").unwrap().into_iter().map(|m| m.name).collect();
    assert_eq!(order, ["c", "b", "a"]);
}

#[test]
fn missing_cyclic_and_unmet_dependencies_name_the_chain() {
    let f = Fixture::new();
    f.module("top", "depends = [\"mid\"]");
    f.module("mid", "depends = [\"gone\"]");
    let err = f.path().load_order("top").unwrap_err().to_string();
    assert!(err.contains("top -> mid -> gone") && err.contains("gone is missing"), "{err}");

    f.module("x", "depends = [\"y\"]");
    f.module("y", "depends = [\"z\"]");
    f.module("z", "depends = [\"x\"]");
    let err = f.path().load_order("x").unwrap_err().to_string();
    assert!(err.contains("x -> y -> z -> x") && err.contains("cycle"), "{err}");

    f.module("new", "depends = [\"old >=2\"]");
    f.module("old", "");
    let err = f.path().load_order("new").unwrap_err().to_string();
    assert!(
        err.contains("new -> old") && err.contains("old 1.0.0 does not meet the requirement >=2"),
        "{err}"
    );
}

#[test]
fn calls_lists_whom_a_module_may_call() {
    let f = Fixture::new();
    f.module("store", "");
    f.module("any", "calls = \"*\"\n");
    f.module("some", "depends = [\"store\"]\ncalls = [\"index\", \"mail\"]\n");
    let path = f.path();
    let any = path.find("any").unwrap();
    assert_eq!(any.calls, Calls::Any);
    assert!(any.may_call("whatever"));
    let some = path.find("some").unwrap();
    assert_eq!(some.calls, Calls::Some(vec!["index".into(), "mail".into()]));
    assert!(some.may_call("store") && some.may_call("index") && some.may_call("mail"));
    assert!(!some.may_call("other"));
    let store = path.find("store").unwrap();
    assert_eq!(store.calls, Calls::None);
    assert!(!store.may_call("any"));
}

#[test]
fn bad_calls_say_what_is_wrong() {
    for (name, extra, expected) in [
        ("star-only", "calls = \"all\"\n", "calls must be \"*\" or a list"),
        ("numbers", "calls = [1]\n", "calls must be \"*\" or a list"),
        ("paths", "calls = [\"../x\"]\n", "calls \"../x\": invalid service name"),
        ("table", "[calls]\na = 1\n", "calls must be \"*\" or a list"),
    ] {
        let f = Fixture::new();
        f.module(name, extra);
        let err = f.path().find(name).unwrap_err().to_string();
        assert!(err.contains(expected), "{name}: {err}");
    }
}

#[test]
fn a_wasm_module_gets_a_sandbox_and_a_native_one_may_not_have_one() {
    let f = Fixture::new();
    let dir = f.tmp.path().join("wmod");
    std::fs::create_dir_all(&dir).unwrap();
    // Not executable: polis-wasm reads a .wasm file, it never runs it.
    std::fs::write(dir.join("m.wasm"), b"\0asm").unwrap();
    std::fs::write(
        dir.join("module.toml"),
        "name = \"wmod\"\nversion = \"1.0.0\"\nexec = \"m.wasm\"\nprotocol = \"jsonrpc\"\n\
         [sandbox]\ndirs = [\"data:rw\"]\nenv = [\"LANG\"]\nmemory_mb = 16\n",
    )
    .unwrap();
    let m = f.path().find("wmod").unwrap();
    let sandbox = m.sandbox.expect("a .wasm exec has a sandbox");
    assert_eq!(sandbox.memory_mb, 16);
    assert_eq!(sandbox.dirs[0].host, data_dir("wmod").join("data"));

    // No table: the default sandbox, which grants nothing but memory.
    std::fs::write(dir.join("module.toml"), "name = \"wmod\"\nversion = \"1.0.0\"\nexec = \"m.wasm\"\n")
        .unwrap();
    let sandbox = f.path().find("wmod").unwrap().sandbox.unwrap();
    assert!(sandbox.dirs.is_empty() && sandbox.env.is_empty());
    assert_eq!(sandbox.memory_mb, DEFAULT_MEMORY_MB);

    f.module("native", "[sandbox]\nenv = [\"LANG\"]\n");
    let err = f.path().find("native").unwrap_err().to_string();
    assert!(err.contains("[sandbox] applies to WebAssembly modules only"), "{err}");
    assert!(f.path().find("native").is_err());

    f.module("bad", "[sandbox]\nnet = true\n");
    let err = f.path().find("bad").unwrap_err().to_string();
    assert!(err.contains("unknown field `net`"), "{err}");
}
