//! The `[sandbox]` table of a WebAssembly module: all that it is granted.
//!
//! ```toml
//! [sandbox]
//! dirs = ["~/notes:ro", "data:rw"]   # relative paths are under the module's data dir
//! env = ["LANG"]                     # passed in with the router's values
//! memory_mb = 64                     # the cap on its linear memory (the default)
//! ```
//!
//! A module whose `exec` ends in `.wasm` runs in `polis-wasm` with exactly
//! this (and no sockets, ever); a native module has no sandbox, so the table
//! is refused there rather than silently meaning nothing.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

/// The memory cap when the manifest names none, in MiB.
pub const DEFAULT_MEMORY_MB: u64 = 64;

/// What a WebAssembly module may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// The directories it may open, in the manifest's order.
    pub dirs: Vec<DirGrant>,
    /// The environment variables passed in (with the router's values).
    pub env: Vec<String>,
    /// The cap on its linear memory, in MiB.
    pub memory_mb: u64,
    /// The module's own data directory: relative `dirs` live under it.
    pub data_dir: PathBuf,
}

/// One granted directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// The path as the manifest writes it, and as the module opens it
    /// (`data`, `~/notes`, `/srv/maps`).
    pub guest: String,
    /// Where it is on this machine.
    pub host: PathBuf,
    /// `:rw` (else `:ro`, read-only).
    pub writable: bool,
}

impl DirGrant {
    /// Whether it lives in the module's data dir (and is made on start).
    pub fn is_own(&self, sandbox: &Sandbox) -> bool {
        self.host.starts_with(&sandbox.data_dir)
    }
}

impl Sandbox {
    /// One line for `polis status` and `polis module list`.
    pub fn summary(&self) -> String {
        let dirs: Vec<String> = self
            .dirs
            .iter()
            .map(|d| format!("{}:{}", d.guest, if d.writable { "rw" } else { "ro" }))
            .collect();
        let dirs = if dirs.is_empty() { "no dirs".to_owned() } else { format!("dirs {}", dirs.join(" ")) };
        let env =
            if self.env.is_empty() { "no env".to_owned() } else { format!("env {}", self.env.join(" ")) };
        format!("{dirs}; {env}; memory {} MiB; no network", self.memory_mb)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSandbox {
    #[serde(default)]
    dirs: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    memory_mb: Option<u64>,
}

/// Where the module `name` keeps its data: `$XDG_DATA_HOME/polis/data/NAME`
/// (`~/.local/share/polis/data/NAME` on Linux). Apart from the module's
/// own directory, so that installing a new version or removing the module
/// leaves its data alone.
pub fn data_dir(name: &str) -> PathBuf {
    let base =
        directories::BaseDirs::new().map(|b| b.data_dir().to_owned()).unwrap_or_else(std::env::temp_dir);
    base.join("polis").join("data").join(name)
}

/// Checks the table and resolves its paths, against `home` and `data_dir`.
pub(super) fn parse(raw: RawSandbox, home: Option<&Path>, data_dir: PathBuf) -> Result<Sandbox, String> {
    let mut dirs: Vec<DirGrant> = Vec::new();
    for spec in &raw.dirs {
        let grant = parse_dir(spec, home, &data_dir).map_err(|e| format!("[sandbox] dirs {spec:?}: {e}"))?;
        if dirs.iter().any(|d| d.guest == grant.guest) {
            return Err(format!("[sandbox] dirs: {:?} is granted twice; keep one", grant.guest));
        }
        dirs.push(grant);
    }
    for name in &raw.env {
        let mut chars = name.chars();
        let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(format!(
                "[sandbox] env {name:?}: not a variable name ([A-Za-z_][A-Za-z0-9_]*); list names, not NAME=value"
            ));
        }
    }
    let memory_mb = raw.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
    if !(1..=4096).contains(&memory_mb) {
        return Err(format!(
            "[sandbox] memory_mb = {memory_mb}: must be 1 to 4096 (a 32-bit module's memory is at most 4 GiB)"
        ));
    }
    Ok(Sandbox { dirs, env: raw.env, memory_mb, data_dir })
}

fn parse_dir(spec: &str, home: Option<&Path>, data_dir: &Path) -> Result<DirGrant, String> {
    let (path, writable) = match spec.rsplit_once(':') {
        Some((path, "ro")) => (path, false),
        Some((path, "rw")) => (path, true),
        Some((_, mode)) => return Err(format!("unknown mode {mode:?}; end it with :ro or :rw")),
        None => (spec, false),
    };
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    if path.contains('=') {
        return Err("a path with '=' cannot be granted".into());
    }
    let host = if let Some(rest) = path.strip_prefix("~/").or(if path == "~" { Some("") } else { None }) {
        let home = home.ok_or("~ is used but there is no home directory")?;
        home.join(rest)
    } else if path.starts_with('~') {
        return Err("only ~/ (your own home) is understood, not ~user".into());
    } else if Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        data_dir.join(path)
    };
    if Path::new(path).components().any(|c| c == Component::ParentDir) {
        return Err("'..' is not allowed: name the directory itself".into());
    }
    let guest = match path.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    };
    Ok(DirGrant { guest: guest.to_owned(), host, writable })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(dirs: &[&str], env: &[&str], memory_mb: Option<u64>) -> RawSandbox {
        RawSandbox {
            dirs: dirs.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|s| s.to_string()).collect(),
            memory_mb,
        }
    }

    fn parse_ok(dirs: &[&str]) -> Sandbox {
        parse(raw(dirs, &["LANG"], None), Some(Path::new("/home/u")), PathBuf::from("/d/m")).unwrap()
    }

    fn parse_err(dirs: &[&str], env: &[&str], memory_mb: Option<u64>) -> String {
        parse(raw(dirs, env, memory_mb), Some(Path::new("/home/u")), PathBuf::from("/d/m")).unwrap_err()
    }

    #[test]
    fn dirs_resolve_against_home_and_the_data_dir() {
        let s = parse_ok(&["~/notes:ro", "data:rw", "/srv/maps", "cache/x/:rw"]);
        let got: Vec<(&str, &Path, bool)> =
            s.dirs.iter().map(|d| (d.guest.as_str(), d.host.as_path(), d.writable)).collect();
        assert_eq!(
            got,
            [
                ("~/notes", Path::new("/home/u/notes"), false),
                ("data", Path::new("/d/m/data"), true),
                ("/srv/maps", Path::new("/srv/maps"), false),
                ("cache/x", Path::new("/d/m/cache/x"), true),
            ]
        );
        assert!(s.dirs[1].is_own(&s) && !s.dirs[0].is_own(&s));
        assert_eq!((s.memory_mb, s.env.as_slice()), (DEFAULT_MEMORY_MB, &["LANG".to_owned()][..]));
        assert_eq!(
            s.summary(),
            "dirs ~/notes:ro data:rw /srv/maps:ro cache/x:rw; env LANG; memory 64 MiB; no network"
        );
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        for (dirs, env, mem, needle) in [
            (&["data:rx"][..], &[][..], None, "unknown mode \"rx\""),
            (&[":rw"], &[], None, "the path is empty"),
            (&["../up:rw"], &[], None, "'..' is not allowed"),
            (&["data/../../x"], &[], None, "'..' is not allowed"),
            (&["~bob/x"], &[], None, "not ~user"),
            (&["a=b"], &[], None, "'='"),
            (&["data:ro", "data:rw"], &[], None, "granted twice"),
            (&[], &["LANG=C"], None, "not a variable name"),
            (&[], &["1X"], None, "not a variable name"),
            (&[], &[], Some(0), "memory_mb = 0"),
            (&[], &[], Some(8192), "must be 1 to 4096"),
        ] {
            let err = parse_err(dirs, env, mem);
            assert!(err.contains(needle), "{dirs:?} {env:?} {mem:?}: {err}");
        }
    }

    #[test]
    fn home_is_needed_for_tilde() {
        let err = parse(raw(&["~/x"], &[], None), None, PathBuf::from("/d")).unwrap_err();
        assert!(err.contains("no home directory"), "{err}");
    }
}
