//! Everything the measurements run: polis's release binaries, and
//! Norgopolis (the server from crates.io, the peer module and client from
//! `bench/norgopolis`). Each step says what it does on stderr; the cargo
//! steps are no-ops when nothing changed.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::progress;

/// The norgopolis-server version the issue names.
pub(crate) const NORGOPOLIS_SERVER_VERSION: &str = "0.1.4";

/// polis's side.
#[derive(Debug)]
pub(crate) struct Polis {
    /// `target/release/polis`.
    pub(crate) polis: PathBuf,
    /// `target/release/polis-echo`: the `frames` echo module.
    pub(crate) echo: PathBuf,
    /// `target/release/polis-relay`: the module that calls other modules.
    pub(crate) relay: PathBuf,
    /// `modules/pyecho/pyecho.py`: the `jsonrpc` echo module, when python3 is there.
    pub(crate) pyecho: Option<PathBuf>,
}

/// Norgopolis's side.
#[derive(Debug)]
pub(crate) struct Norgopolis {
    /// The installed `norgopolis-server`.
    pub(crate) server: PathBuf,
    /// The echo module (`bench/norgopolis/src/echo.rs`).
    pub(crate) echo: PathBuf,
    /// The bench client (`bench/norgopolis/src/client.rs`).
    pub(crate) client: PathBuf,
}

/// The workspace root, as it was when this binary was built.
pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the workspace root exists")
}

/// The cargo target directory this binary lives in (`<target>/release/polis-bench`).
fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_owned)
        .context("this executable is not in a cargo target directory")
}

fn cargo() -> Command {
    // `cargo run` says which cargo it is; run the same one.
    polis_testing::command(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(what: &str, cmd: &mut Command) -> anyhow::Result<()> {
    progress(&format!("{what}: {cmd:?}"));
    let status = cmd.status().with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); the command was {cmd:?}");
    }
    Ok(())
}

/// Builds polis's release binaries (unless `build` is false) and finds them.
pub(crate) fn polis(build: bool) -> anyhow::Result<Polis> {
    let target = target_dir()?;
    if build {
        run(
            "building polis's release binaries",
            cargo()
                .current_dir(workspace())
                .args(["build", "--release", "-p", "polis", "-p", "polis-examples", "--bins", "--target-dir"])
                .arg(&target),
        )?;
    }
    // Beside this binary when it runs from another profile with
    // `--no-build` (a debug bench measures the debug binaries, for ratios).
    let beside = std::env::current_exe()?.parent().map(Path::to_owned).filter(|_| !build);
    let release = beside.unwrap_or_else(|| target.join("release"));
    let found = |name: &str| -> anyhow::Result<PathBuf> {
        let path = release.join(name);
        anyhow::ensure!(path.is_file(), "{} is missing: run `cargo build --release` first", path.display());
        Ok(path)
    };
    let pyecho = workspace().join("modules/pyecho/pyecho.py");
    let python =
        polis_testing::command("python3").arg("--version").output().is_ok_and(|o| o.status.success());
    if !python {
        progress("python3 not found: the jsonrpc row will say so");
    }
    Ok(Polis {
        polis: found("polis")?,
        echo: found("polis-echo")?,
        relay: found("polis-relay")?,
        pyecho: python.then_some(pyecho),
    })
}

/// Installs norgopolis-server and builds the peer crates, installing
/// Debian's `protobuf-compiler` first when `protoc` is missing.
pub(crate) fn norgopolis() -> anyhow::Result<Norgopolis> {
    let target = target_dir()?;
    ensure_protoc()?;

    // A root of its own under the target directory: a temp root that
    // survives reruns, so the 3-minute build happens once.
    let root = target.join(format!("norgopolis-server-{NORGOPOLIS_SERVER_VERSION}"));
    let server = root.join("bin/norgopolis-server");
    if server.is_file() {
        progress(&format!(
            "norgopolis-server {NORGOPOLIS_SERVER_VERSION} already installed at {}",
            server.display()
        ));
    } else {
        run(
            &format!(
                "installing norgopolis-server {NORGOPOLIS_SERVER_VERSION} from crates.io (takes minutes)"
            ),
            cargo().args(["install", "--root"]).arg(&root).args([
                "norgopolis-server",
                "--version",
                NORGOPOLIS_SERVER_VERSION,
            ]),
        )?;
    }

    let peer_target = target.join("norgopolis-peer");
    run(
        "building the Norgopolis echo module and bench client",
        cargo()
            .args(["build", "--release", "--locked", "--manifest-path"])
            .arg(workspace().join("bench/norgopolis/Cargo.toml"))
            .arg("--target-dir")
            .arg(&peer_target),
    )?;
    let release = peer_target.join("release");
    Ok(Norgopolis {
        server,
        echo: release.join("norgopolis-echo"),
        client: release.join("norgopolis-bench-client"),
    })
}

fn ensure_protoc() -> anyhow::Result<()> {
    let protoc = std::env::var_os("PROTOC").unwrap_or_else(|| "protoc".into());
    if polis_testing::command(&protoc).arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    let install =
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler";
    if !rustix::process::geteuid().is_root() {
        bail!("protoc is missing (norgopolis's crates compile .proto files with it); run as root: {install}");
    }
    run("installing Debian's protobuf-compiler (protoc)", polis_testing::command("sh").args(["-c", install]))
}
