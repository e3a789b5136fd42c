//! The polis node runtime: the router (election, gRPC services, routing,
//! sessions, lifecycle), and later the module host and the module SDK.
//!
//! This crate owns process and lifecycle policy. It must not install signal
//! handlers (the binary does, and passes a cancellation token down), and it
//! must not depend on `polis-client`.

pub mod router;

/// What can stop a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The mesh directory failed.
    #[error(transparent)]
    Discovery(#[from] polis_discovery::Error),
    /// The router socket could not be bound.
    #[error("cannot listen on {}: {source}", path.display())]
    Bind {
        /// The socket path.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("router server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
