//! Compiled modules on disk, so that a second cold start does not compile.
//!
//! A compiled module is `<cache>/<sha256 of the .wasm>-<settings hash>.cwasm`,
//! the output of `polis-wasm-compile` (compile.rs) written to a temp file
//! and renamed into place. The settings hash is that of
//! `engine::FINGERPRINT` (this binary has no compiler, so wasmtime's own
//! `precompile_compatibility_hash` is not in it); wasmtime checks each file's
//! header against the engine when it loads it, so an entry made with other
//! settings or another wasmtime is never run: it fails that check and is
//! compiled again and replaced.
//!
//! The directory is `--cache-dir`, else `$XDG_CACHE_HOME/polis/wasm`, else
//! `~/.cache/polis/wasm`; it is made 0700 and used only if this user owns
//! it and nobody else may write to it, since its files become native code.

use std::{
    hash::{Hash, Hasher},
    io::Write,
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

use crate::engine::FINGERPRINT;

/// The default cache directory, from the environment.
pub(crate) fn default_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = xdg.or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("polis").join("wasm"))
}

/// Where `bytes` would be cached in `dir`.
fn entry(dir: &Path, bytes: &[u8]) -> PathBuf {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    // DefaultHasher::new() is SipHash with fixed keys: the same in every run.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    FINGERPRINT.hash(&mut hasher);
    dir.join(format!("{hex}-{:016x}.cwasm", hasher.finish()))
}

/// Makes `dir` if needed and checks that it is private to this user.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if meta.uid() != rustix::process::getuid().as_raw() {
        anyhow::bail!("{} belongs to another user", dir.display());
    }
    if meta.permissions().mode() & 0o022 != 0 {
        anyhow::bail!("others may write to {}; run `chmod 700 {}`", dir.display(), dir.display());
    }
    Ok(())
}

/// The module in `path`: loaded from the cache when it has been compiled
/// before, else compiled (and cached, when `dir` is usable). Logs one line
/// saying which, for people and tests.
pub(crate) fn load(engine: &Engine, path: &Path, dir: Option<&Path>) -> anyhow::Result<Module> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path.display();
    let dir = dir.and_then(|d| match private_dir(d) {
        Ok(()) => Some(d),
        Err(e) => {
            eprintln!("polis-wasm: not caching compiled code: {e:#}");
            None
        }
    });
    let cached = dir.map(|d| entry(d, &bytes));
    if let Some(cached) = cached.as_deref()
        && cached.is_file()
    {
        // SAFETY: wasmtime runs a deserialized module's native code as is,
        // so the file must be one that wasmtime's serializer wrote. It is:
        // the cache directory is private to this user (checked above),
        // entries are only ever written by `store` below (a temp file
        // renamed into place, so never half-written) with what our own
        // compiler printed, and the name carries the hash of the `.wasm` and
        // of the engine's settings, which wasmtime checks again against the
        // file's header.
        #[allow(unsafe_code)]
        let module = unsafe { Module::deserialize_file(engine, cached) };
        match module {
            Ok(module) => {
                eprintln!("polis-wasm: loaded {name} from cache");
                return Ok(module);
            }
            Err(e) => eprintln!("polis-wasm: ignoring cached {}: {e:#}", cached.display()),
        }
    }
    let started = Instant::now();
    let code = crate::compile::compile(path, &bytes)?;
    eprintln!("polis-wasm: compiled {name} in {} ms", started.elapsed().as_millis());
    if let Some(cached) = cached.as_deref()
        && let Err(e) = store(&code, cached)
    {
        eprintln!("polis-wasm: cannot cache compiled code at {}: {e:#}", cached.display());
    }
    // SAFETY: as above: `code` is what our own compiler printed just now,
    // and wasmtime checks its header against this engine.
    #[allow(unsafe_code)]
    let module = unsafe { Module::deserialize(engine, &code) };
    module.context("cannot load the code the compiler made")
}

fn store(code: &[u8], path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().expect("a cache entry lives in the cache directory");
    let temp =
        dir.join(format!(".{}.{}", std::process::id(), path.file_name().unwrap_or_default().display()));
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp)?;
    let written = file.write_all(code).and_then(|()| file.sync_all());
    if let Err(e) = written.and_then(|()| std::fs::rename(&temp, path)) {
        let _ = std::fs::remove_file(&temp);
        return Err(e.into());
    }
    Ok(())
}
