//! WebAssembly modules: a manifest whose `exec` ends in `.wasm` is run by
//! `polis-wasm` (crates/wasm), with the grants of its `[sandbox]` table as
//! arguments, and nothing else. The router never links wasmtime: the host
//! is a process like any module's, so a crash or a runaway guest ends that
//! process alone.

use std::{ffi::OsString, io, os::unix::fs::DirBuilderExt, path::PathBuf};

use polis_mesh::process::{self, Group};

use crate::manifest::{Manifest, Sandbox};

/// The exit status with which `polis-wasm` says it could not load the
/// module (sysexits' `EX_CONFIG`): reported as `FAILED_PRECONDITION`.
pub(crate) const EX_CONFIG: i32 = 78;

/// Added to the handshake's deadline: the first start compiles the module.
pub(crate) const COMPILE_ALLOWANCE: std::time::Duration = std::time::Duration::from_secs(60);

/// The host binary: `$POLIS_WASM`, else `polis-wasm` beside the running
/// executable (where cargo and an install put it), else `polis-wasm` on
/// `PATH`.
pub(crate) fn host_binary() -> OsString {
    if let Some(explicit) = std::env::var_os("POLIS_WASM").filter(|v| !v.is_empty()) {
        return explicit;
    }
    let beside = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.join("polis-wasm")));
    match beside {
        Some(path) if path.is_file() => path.into_os_string(),
        _ => "polis-wasm".into(),
    }
}

/// The `polis-wasm` command for `manifest`: every grant an argument, the
/// directories of the module's own data dir made (0700) if missing.
pub(crate) fn command(manifest: &Manifest, sandbox: &Sandbox) -> io::Result<tokio::process::Command> {
    let mut cmd = process::command(host_binary(), manifest.dir(), Group::Own);
    for dir in &sandbox.dirs {
        if dir.is_own(sandbox) {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir.host)?;
        }
        let flag = if dir.writable { "--dir-rw" } else { "--dir-ro" };
        let mut grant = OsString::from(&dir.guest);
        grant.push("=");
        grant.push(&dir.host);
        cmd.arg(flag).arg(grant);
    }
    // The names granted, then what the manifest and the router set for it:
    // those are the module's own, not the user's.
    let own = manifest.env.keys().map(String::as_str).chain(["POLIS_SERVICE", "POLIS_NODE_ID"]);
    for name in sandbox.env.iter().map(String::as_str).chain(own) {
        cmd.arg("--env").arg(name);
    }
    cmd.arg("--memory-mb").arg(sandbox.memory_mb.to_string());
    cmd.arg("--protocol").arg(manifest.protocol.to_string());
    cmd.arg("--name").arg(&manifest.name);
    cmd.arg(PathBuf::from(&manifest.exec));
    cmd.arg("--").args(&manifest.args);
    Ok(cmd)
}
