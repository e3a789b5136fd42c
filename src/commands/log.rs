//! `polis log [NAME] [-f]`: the router's log, or a module's, from the
//! mesh's `logs/` (the older rotated file first, then the current one).

use std::{
    io::{Read, Seek, SeekFrom, Write},
    path::Path,
    process::ExitCode,
    time::Duration,
};

use clap::Args;
use polis_discovery::MeshDir;

use crate::exit::{Failure, NOT_FOUND, USAGE};

#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// A module's name; the router's log when none is given
    #[arg(default_value = "router")]
    name: String,
    /// Keep printing what is written, across rotations, until interrupted
    #[arg(short, long)]
    follow: bool,
}

/// How often a followed log is looked at.
const POLL: Duration = Duration::from_millis(200);

pub(crate) async fn run(mesh: &MeshDir, args: &LogArgs) -> anyhow::Result<ExitCode> {
    if args.name != "router" {
        polis_node::manifest::validate_name(&args.name).map_err(|e| Failure::new(USAGE, e))?;
    }
    let log = mesh.logs_dir().join(format!("{}.log", args.name));
    let old = crate::logs::rotated(&log);
    if !args.follow && !log.exists() && !old.exists() {
        let whose = if args.name == "router" {
            "the router's log is written when a frontend launches it (`polis router` in a terminal logs to stderr)"
                .to_owned()
        } else {
            format!("module {}'s log is written when the router starts it", args.name)
        };
        return Err(Failure::new(NOT_FOUND, format!("no log at {}: {whose}", log.display())).into());
    }
    let mut out = std::io::stdout().lock();
    if old.exists() {
        copy_from(&old, 0, &mut out)?;
    }
    let mut at = if log.exists() { copy_from(&log, 0, &mut out)? } else { 0 };
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::time::sleep(POLL).await;
        let Ok(meta) = std::fs::metadata(&log) else { continue };
        // Emptied by a rotation: what it held is in NAME.log.1 now, and
        // printed already, up to the copy.
        if meta.len() < at {
            at = 0;
        }
        if meta.len() > at {
            at = copy_from(&log, at, &mut out)?;
        }
    }
}

/// Writes `path` from `offset` to `out`; returns where it ended.
fn copy_from(path: &Path, offset: u64, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(offset),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    out.write_all(&bytes)?;
    out.flush()?;
    Ok(offset + bytes.len() as u64)
}
