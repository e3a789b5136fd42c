//! Integration tests: the real `polis` binary, real processes, real locks
//! and sockets, each test in its own temp mesh directory.

// FIXME(issue 9): temporary, until this harness gets its own allowed spawn
// site; polis_mesh::process::command is the only one (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod election;
mod frontends;
mod meshdir;
mod modules;
mod neovim;
mod records;
mod scripts;
mod util;
