//! `polis resolve NAME`: the live record serving a name, as contract JSON.

use std::process::ExitCode;

use polis_discovery::{Discovery, MeshDir};

use crate::exit::{Failure, NOT_FOUND};

pub(super) fn run(mesh: &MeshDir, name: &str) -> anyhow::Result<ExitCode> {
    match mesh.resolve(name)? {
        Some(record) => {
            say!("{}", record.to_json())?;
            Ok(ExitCode::SUCCESS)
        }
        None => Err(Failure::new(
            NOT_FOUND,
            format!("no live node serves {name:?} in the mesh at {}", mesh.root().display()),
        )
        .into()),
    }
}
