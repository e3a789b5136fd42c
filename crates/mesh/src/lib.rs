//! The polis wire protocol: the generated protobuf types and gRPC stubs, the
//! length-delimited frame codec spoken on every link (router and modules,
//! frontends and router), and the local-socket transport that carries frame
//! sessions and gRPC on one machine.
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
//! - [`dial`]: a router by the `tcp:`/`tls:` endpoint it published, with the
//!   mesh's token (no downgrade from TLS).
//! - [`preamble`]: the first bytes of a frame session on `router.sock`.
//! - [`process`]: the one constructor of child-process commands.
//! - [`tcp`]: the router's TCP endpoint and its token check.
//! - [`transport`]: listen and connect on a local socket; tell a frame
//!   session from gRPC by its first bytes.
//! - [`versions`]: the session protocol versions and features, negotiated.

pub mod codec;
pub mod dial;
pub mod preamble;
pub mod process;
pub mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
/// Stand-ins for a build without the `tls` feature: none can be made, so
/// a caller can only pass `None` where TLS is optional.
#[cfg(not(feature = "tls"))]
pub mod tls {
    /// The router's TLS identity (this build has no TLS).
    #[derive(Debug, Clone)]
    pub enum ServerTls {}
    /// A frontend's trusted mesh CA (this build has no TLS).
    #[derive(Debug, Clone)]
    pub enum ClientTls {}
}
pub mod transport;
pub mod versions;

/// Generated protobuf messages and gRPC services of `polis.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("polis.v1");

    /// The encoded `FileDescriptorSet` of the polis protos, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/polis_descriptor.bin"));

    impl Frame {
        /// The name of this frame's kind, as `frame.proto` spells it, for messages.
        pub fn kind_name(&self) -> &'static str {
            use frame::Kind;
            match &self.kind {
                Some(Kind::Hello(_)) => "Hello",
                Some(Kind::Welcome(_)) => "Welcome",
                Some(Kind::Request(_)) => "Request",
                Some(Kind::Reply(_)) => "Reply",
                Some(Kind::Cancel(_)) => "Cancel",
                Some(Kind::Shutdown(_)) => "Shutdown",
                Some(Kind::SessionHello(_)) => "SessionHello",
                Some(Kind::SessionWelcome(_)) => "SessionWelcome",
                Some(Kind::Keepalive(_)) => "Keepalive",
                Some(Kind::Goodbye(_)) => "Goodbye",
                Some(Kind::Leaving(_)) => "RouterLeaving",
                Some(Kind::Error(_)) => "Error",
                Some(Kind::Publish(_)) => "Publish",
                Some(Kind::Subscribe(_)) => "Subscribe",
                Some(Kind::Unsubscribe(_)) => "Unsubscribe",
                Some(Kind::Subscribed(_)) => "Subscribed",
                Some(Kind::Event(_)) => "Event",
                Some(Kind::Lagged(_)) => "Lagged",
                None => "empty",
            }
        }
    }
}

/// The frame protocol version this build speaks, sent in `Hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The content type of JSON payloads, the default everywhere.
pub const JSON: &str = "application/json";

/// The gRPC name of `code` (`NOT_FOUND`, `DEADLINE_EXCEEDED`, …), as the
/// CLI prints it and the monitor reports it.
pub fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
