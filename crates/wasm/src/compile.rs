//! Compiling a module: `polis-wasm-compile`, a binary of its own that links
//! cranelift, so that this one, which starts on every cold start, does not
//! (its `.text` is the compiler's size otherwise, and the kernel and the
//! dynamic loader pay for it at every exec). It is run only on a cache
//! miss, or for every start with `--no-cache`.
//!
//! The compiler is `$POLIS_WASM_COMPILE` if set, else `polis-wasm-compile`
//! beside this executable (where cargo and an install put it), else
//! `polis-wasm-compile` on `PATH`. It reads the module's bytes on stdin
//! (the very bytes this host hashed for the cache key, even if the file is
//! replaced meanwhile), prints the compiled code on stdout and, for a
//! module that is not valid WebAssembly, one line on stderr, which becomes
//! the load's error.

use std::{
    ffi::OsString,
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::Context as _;

/// The compiler's binary.
fn binary() -> OsString {
    if let Some(explicit) = std::env::var_os("POLIS_WASM_COMPILE").filter(|v| !v.is_empty()) {
        return explicit;
    }
    let beside = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.join("polis-wasm-compile")));
    match beside {
        Some(path) if path.is_file() => path.into_os_string(),
        _ => "polis-wasm-compile".into(),
    }
}

/// The compiled code of `wasm` (the module read from `path`), as
/// `Module::serialize` would write it, from the compiler's stdout.
pub(crate) fn compile(path: &Path, wasm: &[u8]) -> anyhow::Result<Vec<u8>> {
    let program = binary();
    // polis-wasm links no polis crate, so it cannot use
    // polis_mesh::process::command; this is that helper's contract by
    // hand: working directory and stdin set explicitly. The compiler stays
    // in this process's group, so the router's kill of the module's group
    // ends it too.
    #[allow(clippy::disallowed_methods)]
    let mut cmd = Command::new(&program);
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let mut child = cmd
        .arg(path)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run the compiler {}", Path::new(&program).display()))?;
    // The compiler reads all of its input before it writes anything, so
    // this cannot block on its full stdout. A write that fails (it exited
    // early) is told by its status and stderr below.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(wasm);
    }
    let out = child.wait_with_output().context("cannot wait for the compiler")?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let why = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
    if out.status.code() == Some(crate::EX_CONFIG.into()) {
        // Not a valid module: the compiler's line says why, and is the reason.
        anyhow::bail!("{why}");
    }
    anyhow::bail!("the compiler {} failed ({}): {why}", Path::new(&program).display(), out.status)
}
