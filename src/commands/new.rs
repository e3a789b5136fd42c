//! `polis module new NAME --lang rust|python`: a module's skeleton that
//! works as it is: a manifest, the code (methods `ping` and `hello`), and a
//! test, in `./NAME` (or `--dir`).
//!
//! The Python one speaks JSON-RPC with the standard library and its test
//! runs it as the router would (`python3 -m unittest`). The Rust one uses
//! the SDK by path: `--sdk`, else `POLIS_SDK_PATH`, else the `crates/sdk`
//! of the source tree this `polis` was built from, when it is still there;
//! its `exec` is a bare name, found on PATH once `cargo install --path .`
//! has put it there (so `polis module install .` needs no build output).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::exit::{Failure, USAGE};

#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// The module's name: [a-z0-9][a-z0-9_-]*
    name: String,
    /// The language of the skeleton
    #[arg(long, value_enum)]
    lang: Lang,
    /// Where to make it [default: ./NAME]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The polis-sdk crate the Rust skeleton depends on, by path
    #[arg(long, value_name = "PATH", env = "POLIS_SDK_PATH")]
    sdk: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Lang {
    Rust,
    Python,
}

pub(crate) fn run(args: &NewArgs) -> anyhow::Result<ExitCode> {
    polis_node::manifest::validate_name(&args.name).map_err(|e| Failure::new(USAGE, e))?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() {
        return Err(
            Failure::new(USAGE, format!("{} exists already; pick another --dir", dir.display())).into()
        );
    }
    let files = match args.lang {
        Lang::Python => python(&args.name),
        Lang::Rust => rust(&args.name, &sdk_path(args.sdk.as_deref())?),
    };
    for (path, text, executable) in &files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(&dir))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        #[cfg(unix)]
        if *executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    let next = match args.lang {
        Lang::Python => format!("cd {0} && python3 -m unittest && polis module install .", dir.display()),
        Lang::Rust => {
            format!("cd {0} && cargo test && cargo install --path . && polis module install .", dir.display())
        }
    };
    say!(
        "made module {} in {}; next: {next}; then `polis call {} hello`",
        args.name,
        dir.display(),
        args.name
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The SDK's path, absolute, checked to be the polis-sdk crate.
fn sdk_path(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/sdk");
    let path = given.map(Path::to_owned).unwrap_or(built_from);
    let manifest = std::fs::read_to_string(path.join("Cargo.toml")).unwrap_or_default();
    if !manifest.contains("name = \"polis-sdk\"") {
        return Err(Failure::new(
            USAGE,
            format!(
                "no polis-sdk crate at {}; pass --sdk (or POLIS_SDK_PATH) naming crates/sdk of a polis checkout",
                path.display()
            ),
        )
        .into());
    }
    Ok(path.canonicalize().unwrap_or(path))
}

/// A file of the skeleton: its path in the module's directory, its text,
/// and whether it is executable.
type File = (String, String, bool);

fn python(name: &str) -> Vec<File> {
    let manifest = format!(
        r#"# A polis module speaking JSON-RPC 2.0, one object per line on stdio.
name = "{name}"
version = "0.1.0"
description = "says hello"
exec = "{name}.py"
protocol = "jsonrpc"
restart = "on-failure"

# Handed to the module in `initialize`.
[config]
greeting = "hello"
"#
    );
    let module = include_str!("new/module.py").replace("NAME", name);
    let test = include_str!("new/test_module.py").replace("NAME", name);
    vec![
        ("module.toml".into(), manifest, false),
        (format!("{name}.py"), module, true),
        (format!("test_{}.py", name.replace('-', "_")), test, false),
    ]
}

fn rust(name: &str, sdk: &Path) -> Vec<File> {
    let manifest = format!(
        r#"# A polis module built on the SDK. `exec` is a bare name: the router looks
# it up in this directory, then on PATH (where `cargo install --path .` puts it).
name = "{name}"
version = "0.1.0"
description = "says hello"
exec = "polis-{name}"
protocol = "frames"
restart = "on-failure"

# Handed to the module in Welcome, as `Call::config()`.
[config]
greeting = "hello"
"#
    );
    let cargo = format!(
        r#"[package]
name = "polis-{name}"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
polis-sdk = {{ path = {sdk:?} }}
serde_json = "1"
tokio = {{ version = "1", features = ["macros", "rt"] }}

# A project of its own, even inside another workspace.
[workspace]
"#,
        sdk = sdk.display().to_string()
    );
    let main = include_str!("new/main.rs").replace("NAME", name);
    vec![
        ("module.toml".into(), manifest, false),
        ("Cargo.toml".into(), cargo, false),
        ("src/main.rs".into(), main, false),
        (".gitignore".into(), "/target\n".into(), false),
    ]
}
