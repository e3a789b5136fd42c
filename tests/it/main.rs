//! Integration tests: the real `polis` binary, real processes, real locks
//! and sockets, each test in its own temp mesh directory.

mod cli;
mod election;
mod frames;
mod frontends;
mod grpc;
mod hardening;
mod hermetic;
mod meshdir;
mod modules;
mod neovim;
mod races;
mod records;
mod scripts;
mod util;
