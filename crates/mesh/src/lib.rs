//! The polis wire protocol: the generated protobuf types and gRPC stubs, the
//! length-delimited frame codec spoken between router and modules, and the
//! local-socket transport that carries gRPC on one machine.
//!
//! This crate knows bytes, frames and sockets, and how a child process is
//! started ([`process`]: the mechanism shared by every crate that starts
//! one). It must not know about the mesh directory or any policy, such as
//! which processes run, when, or with what: those live in `polis-discovery`
//! and `polis-node`.
//!
//! # Layout
//! - [`pb`]: generated messages (`polis.v1`) and tonic clients and servers.
//! - [`codec`]: frames as `u32` big-endian length + protobuf, with a size limit.
//! - [`transport`]: listen and connect on a local socket, for tonic.
//! - [`process`]: the one constructor of child-process commands.

pub mod codec;
pub mod process;
pub mod transport;

/// Generated protobuf messages and gRPC services of `polis.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("polis.v1");

    /// The encoded `FileDescriptorSet` of the polis protos, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/polis_descriptor.bin"));
}

/// The frame protocol version this build speaks, sent in `Hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The content type of JSON payloads, the default everywhere.
pub const JSON: &str = "application/json";
