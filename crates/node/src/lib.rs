//! The polis node runtime: the router (election, gRPC services, routing,
//! lifecycle) and the module host (manifests, spawning, supervision). The
//! module SDK is `polis-sdk`, so that a module binary never links the router.
//!
//! This crate owns process and lifecycle policy. It must not install signal
//! handlers (the binary does, and passes a cancellation token down), and it
//! must not depend on `polis-client`.
//!
//! # Layout
//! - [`manifest`]: `module.toml`, the search path, dependency order.
//! - `bus`: events, publish / subscribe across every link.
//! - `host`: starting, linking, supervising and stopping modules.
//! - [`router`]: the gRPC services and the router's life.

mod bus;
mod cut;
mod host;
pub mod manifest;
pub mod router;

pub use host::{BoxFuture, Changes, HostConfig, Sightings};

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
    /// The reflection service could not be built.
    #[error("cannot build the reflection service: {0}")]
    Reflection(String),
    /// A task of the router failed.
    #[error("router task failed: {0}")]
    Task(String),
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
