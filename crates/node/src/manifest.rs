//! Module manifests (`<dir>/<name>/module.toml`, DESIGN.md §6), the search
//! path, and the transitive dependency check.
//!
//! A service name is a name, never a path: it is checked against
//! `[a-z0-9][a-z0-9_-]*` before it touches the filesystem, and nothing
//! outside a manifest's `exec` is ever executed.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

mod sandbox;
pub use sandbox::{DEFAULT_MEMORY_MB, DirGrant, Sandbox, data_dir};

/// How a module speaks on its stdio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Length-delimited protobuf frames (the SDK).
    Frames,
    /// Line-delimited JSON-RPC 2.0, from any language.
    JsonRpc,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Frames => "frames",
            Protocol::JsonRpc => "jsonrpc",
        })
    }
}

/// When the router starts a module again after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Never: a module that exits stays down until loaded by hand.
    Never,
    /// After a crash (a non-zero exit or a broken link), on the next call.
    OnFailure,
    /// After any exit, at once.
    Always,
}

/// A dependency: another module, with an optional semver requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The module's name.
    pub name: String,
    /// The versions accepted; `*` when none is given.
    pub req: semver::VersionReq,
}

/// The services a module may call besides its `depends` (`calls = [...]`
/// or `calls = "*"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Calls {
    /// Only these (none when the key is absent).
    #[default]
    None,
    /// These services, by name.
    Some(Vec<String>),
    /// Any service (`calls = "*"`).
    Any,
}

/// A validated `module.toml`.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The module's name, equal to its directory's name.
    pub name: String,
    /// Its version.
    pub version: semver::Version,
    /// A line for people.
    pub description: String,
    /// The executable, absolute.
    pub exec: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// How it speaks.
    pub protocol: Protocol,
    /// What it needs running first.
    pub depends: Vec<Dependency>,
    /// Whom else it may call (`calls`).
    pub calls: Calls,
    /// Whether the router starts it when the router starts.
    pub autostart: bool,
    /// What happens when it exits.
    pub restart: RestartPolicy,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// The `[config]` table, as JSON, handed over in the handshake.
    pub config: serde_json::Value,
    /// The `module.toml` this came from.
    pub path: PathBuf,
    /// For a WebAssembly module (`exec` ends in `.wasm`), what its
    /// `[sandbox]` grants; `None` for a native one.
    pub sandbox: Option<Sandbox>,
}

impl Manifest {
    /// Whether this module may call `service`: one of its `depends`, or
    /// allowed by its `calls`.
    pub fn may_call(&self, service: &str) -> bool {
        self.depends.iter().any(|d| d.name == service)
            || match &self.calls {
                Calls::None => false,
                Calls::Some(names) => names.iter().any(|n| n == service),
                Calls::Any => true,
            }
    }

    /// The manifest's directory: relative `exec` paths and the module's
    /// working directory start here.
    pub fn dir(&self) -> &Path {
        self.path.parent().expect("a manifest lives in a directory")
    }
}

/// Why a manifest could not be used.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {}: {reason}", path.display())]
    Read {
        /// The manifest file.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// The file is not a valid manifest.
    #[error("invalid manifest {}: {reason}", path.display())]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong, and how to fix it.
        reason: String,
    },
}

impl ManifestError {
    /// The manifest file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ManifestError::Read { path, .. } | ManifestError::Invalid { path, .. } => path,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    #[serde(default)]
    description: String,
    exec: exec::RawExec,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default = "default_protocol")]
    protocol: String,
    #[serde(default)]
    depends: Vec<String>,
    #[serde(default)]
    calls: Option<toml::Value>,
    #[serde(default)]
    autostart: bool,
    #[serde(default = "default_restart")]
    restart: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    config: toml::Table,
    sandbox: Option<sandbox::RawSandbox>,
}

fn default_protocol() -> String {
    "frames".into()
}

fn default_restart() -> String {
    "on-failure".into()
}

/// Checks a service name: `[a-z0-9][a-z0-9_-]*`, at most 64 characters.
pub fn validate_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if first_ok && rest_ok && name.len() <= 64 {
        Ok(())
    } else {
        Err(format!(
            "invalid service name {}: a name is [a-z0-9][a-z0-9_-]* (at most 64 characters), never a path",
            crate::cut::quoted(name)
        ))
    }
}

/// Reads and validates the manifest at `path` (`<dir>/<name>/module.toml`).
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let invalid = |reason: String| ManifestError::Invalid { path: path.to_owned(), reason };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ManifestError::Read { path: path.to_owned(), reason: e.to_string() })?;
    let raw: RawManifest = toml::from_str(&text).map_err(|e| invalid(one_line(&e.to_string())))?;

    validate_name(&raw.name).map_err(&invalid)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if raw.name != dir_name {
        return Err(invalid(format!(
            "name {:?} does not match its directory {dir_name:?}; rename one of them",
            raw.name
        )));
    }
    let version = semver::Version::parse(&raw.version).map_err(|e| {
        invalid(format!("version {:?} is not semver ({e}); write it like \"1.2.3\"", raw.version))
    })?;
    let protocol = match raw.protocol.as_str() {
        "frames" => Protocol::Frames,
        "jsonrpc" => Protocol::JsonRpc,
        other => {
            return Err(invalid(format!("unknown protocol {other:?}; use \"frames\" or \"jsonrpc\"")));
        }
    };
    let restart = match raw.restart.as_str() {
        "never" => RestartPolicy::Never,
        "on-failure" => RestartPolicy::OnFailure,
        "always" => RestartPolicy::Always,
        other => {
            return Err(invalid(format!(
                "unknown restart policy {other:?}; use \"never\", \"on-failure\" or \"always\""
            )));
        }
    };
    let depends =
        raw.depends.iter().map(|d| parse_dependency(d)).collect::<Result<_, _>>().map_err(&invalid)?;
    let calls = parse_calls(raw.calls.as_ref()).map_err(&invalid)?;
    let path_var = std::env::var_os("PATH");
    let exec = exec::resolve(dir, &raw.exec, path_var.as_deref(), |p| check_executable(p, is_wasm(p)))
        .map_err(&invalid)?;
    let sandbox = match (is_wasm(&exec), raw.sandbox) {
        (true, table) => {
            let home = directories::BaseDirs::new().map(|b| b.home_dir().to_owned());
            Some(
                sandbox::parse(table.unwrap_or_default(), home.as_deref(), data_dir(&raw.name))
                    .map_err(&invalid)?,
            )
        }
        (false, Some(_)) => {
            return Err(invalid(format!(
                "[sandbox] applies to WebAssembly modules only (exec ending in .wasm); {} runs natively, with your full rights",
                exec.display()
            )));
        }
        (false, None) => None,
    };
    let config = serde_json::to_value(&raw.config).map_err(|e| invalid(format!("[config]: {e}")))?;

    Ok(Manifest {
        name: raw.name,
        version,
        description: raw.description,
        exec,
        args: raw.args,
        protocol,
        depends,
        calls,
        autostart: raw.autostart,
        restart,
        env: raw.env,
        config,
        path: path.to_owned(),
        sandbox,
    })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse_dependency(spec: &str) -> Result<Dependency, String> {
    let spec = spec.trim();
    let (name, req) = spec.split_once(char::is_whitespace).unwrap_or((spec, "*"));
    validate_name(name).map_err(|e| format!("depends {spec:?}: {e}"))?;
    let req = semver::VersionReq::parse(req.trim())
        .map_err(|e| format!("depends {spec:?}: bad version requirement ({e})"))?;
    Ok(Dependency { name: name.to_owned(), req })
}

fn parse_calls(value: Option<&toml::Value>) -> Result<Calls, String> {
    let wrong = || "calls must be \"*\" or a list of service names, like calls = [\"store\"]".to_owned();
    match value {
        None => Ok(Calls::None),
        Some(toml::Value::String(s)) if s == "*" => Ok(Calls::Any),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|item| {
                let name = item.as_str().ok_or_else(wrong)?;
                validate_name(name).map_err(|e| format!("calls {name:?}: {e}"))?;
                Ok(name.to_owned())
            })
            .collect::<Result<_, String>>()
            .map(Calls::Some),
        Some(_) => Err(wrong()),
    }
}

/// A `.wasm` exec runs in polis-wasm, sandboxed, rather than natively.
fn is_wasm(exec: &Path) -> bool {
    exec.extension().is_some_and(|x| x == "wasm")
}

fn check_executable(exec: &Path, is_wasm: bool) -> Result<(), String> {
    let meta = std::fs::metadata(exec)
        .map_err(|e| format!("exec {} cannot be used ({e}); build it or fix the path", exec.display()))?;
    if !meta.is_file() {
        return Err(format!("exec {} is not a file", exec.display()));
    }
    // polis-wasm runs a .wasm file: it is read, never executed.
    if is_wasm {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(format!(
                "exec {} is not executable; run `chmod +x {}`",
                exec.display(),
                exec.display()
            ));
        }
    }
    Ok(())
}

/// The user's own modules, where `polis module install` puts them and the
/// search path ends: `~/.local/share/polis/modules` on Linux.
pub fn user_dir() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|base| base.data_dir().join("polis").join("modules"))
}

/// Where manifests are looked up, in order.
#[derive(Debug, Clone, Default)]
pub struct ModulePath {
    dirs: Vec<PathBuf>,
}

/// Why a module could not be found or its dependencies not satisfied.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// The name is not a valid service name.
    #[error("{0}")]
    InvalidName(String),
    /// No manifest for the name in any directory of the search path.
    #[error("no module named {}; searched {}", crate::cut::quoted(name), searched(dirs))]
    NotFound {
        /// The name looked up.
        name: String,
        /// The directories searched.
        dirs: Vec<PathBuf>,
    },
    /// A manifest was found but is broken.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A dependency is missing, too old, broken, or part of a cycle.
    #[error("cannot load {}: {reason} (chain: {})", chain[0], chain.join(" -> "))]
    Dependency {
        /// The modules from the one asked for to the failing one.
        chain: Vec<String>,
        /// What is wrong.
        reason: String,
    },
}

fn searched(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "no directories (set --modules-path or POLIS_MODULES_PATH)".into();
    }
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
}

impl ModulePath {
    /// `paths` (`:`-separated, as from `--modules-path`), then the user's
    /// data dir (`~/.local/share/polis/modules` on Linux).
    pub fn new(paths: Option<&str>) -> Self {
        let mut dirs: Vec<PathBuf> = std::env::split_paths(paths.unwrap_or_default())
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| std::path::absolute(&p).unwrap_or(p))
            .collect();
        dirs.extend(user_dir());
        Self { dirs }
    }

    /// Exactly these directories, for tests.
    pub fn from_dirs(dirs: Vec<PathBuf>) -> Self {
        Self { dirs }
    }

    /// The directories, in search order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Appends `dir`, searched last, unless it is searched already;
    /// whether it was added.
    pub fn add(&mut self, dir: PathBuf) -> bool {
        if self.dirs.contains(&dir) {
            return false;
        }
        self.dirs.push(dir);
        true
    }

    /// The manifest of `name`: the first directory that has one wins.
    pub fn find(&self, name: &str) -> Result<Manifest, LookupError> {
        validate_name(name).map_err(LookupError::InvalidName)?;
        for dir in &self.dirs {
            let path = dir.join(name).join("module.toml");
            if path.exists() {
                return Ok(load(&path)?);
            }
        }
        Err(LookupError::NotFound { name: name.to_owned(), dirs: self.dirs.clone() })
    }

    /// Every module on the search path, first found wins; broken ones as errors.
    pub fn scan(&self) -> Vec<Result<Manifest, ManifestError>> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            let mut names: Vec<String> =
                entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
            names.sort();
            for name in names {
                let path = dir.join(&name).join("module.toml");
                if validate_name(&name).is_ok() && path.exists() && seen.insert(name) {
                    out.push(load(&path));
                }
            }
        }
        out
    }

    /// The manifests to start for `name`, dependencies first and `name`
    /// last, after checking the whole graph: every dependency exists, its
    /// version meets the requirement, and there is no cycle. Nothing is
    /// started when any of that fails.
    pub fn load_order(&self, name: &str) -> Result<Vec<Manifest>, LookupError> {
        let root = self.find(name)?;
        let mut order = Vec::new();
        let mut chain = vec![root.name.clone()];
        self.visit(root, &mut chain, &mut order)?;
        Ok(order)
    }

    fn visit(
        &self,
        manifest: Manifest,
        chain: &mut Vec<String>,
        order: &mut Vec<Manifest>,
    ) -> Result<(), LookupError> {
        for dep in &manifest.depends {
            chain.push(dep.name.clone());
            if chain[..chain.len() - 1].contains(&dep.name) {
                return Err(LookupError::Dependency {
                    chain: chain.clone(),
                    reason: "dependency cycle".into(),
                });
            }
            if !order.iter().any(|m: &Manifest| m.name == dep.name) {
                let found = match self.find(&dep.name) {
                    Ok(m) => m,
                    Err(LookupError::NotFound { dirs, .. }) => {
                        let reason = format!("{} is missing; searched {}", dep.name, searched(&dirs));
                        return Err(LookupError::Dependency { chain: chain.clone(), reason });
                    }
                    Err(e) => {
                        let reason = format!("{} is broken: {e}", dep.name);
                        return Err(LookupError::Dependency { chain: chain.clone(), reason });
                    }
                };
                if !dep.req.matches(&found.version) {
                    let reason = format!(
                        "{} {} does not meet the requirement {} of {}",
                        dep.name, found.version, dep.req, manifest.name
                    );
                    return Err(LookupError::Dependency { chain: chain.clone(), reason });
                }
                self.visit(found, chain, order)?;
            } else if let Some(loaded) = order.iter().find(|m| m.name == dep.name)
                && !dep.req.matches(&loaded.version)
            {
                let reason = format!(
                    "{} {} does not meet the requirement {} of {}",
                    dep.name, loaded.version, dep.req, manifest.name
                );
                return Err(LookupError::Dependency { chain: chain.clone(), reason });
            }
            chain.pop();
        }
        order.push(manifest);
        Ok(())
    }
}

mod exec;
#[cfg(test)]
mod tests;
