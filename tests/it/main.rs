//! Integration tests: the real `polis` binary, real processes, real locks
//! and sockets, each test in its own temp mesh directory.

mod calls;
mod cli;
mod election;
// The mesh on etcd: built with the `etcd` feature (CI's test command has it).
#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
mod etcd_commands;
// Partitions of a host in a network namespace (needs root and iproute2).
#[cfg(feature = "etcd")]
mod etcd_partition;
#[cfg(feature = "etcd")]
mod etcd_reattach;
mod events;
mod exec;
mod frames;
mod frontends;
mod grpc;
mod hardening;
mod hermetic;
mod install;
mod introspect;
mod locate;
mod logs;
mod meshdir;
mod modules;
mod neovim;
mod notes;
mod notes_clients;
mod notes_nvim;
mod plugin;
mod races;
mod records;
mod scripts;
mod util;
mod wasm;
