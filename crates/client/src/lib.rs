//! The frontend API of polis: connect to the mesh's router (launching one
//! when none runs), hold a session, call and stream, and re-attach by
//! itself when the router changes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), polis_client::ClientError> {
//! use polis_client::{Client, ClientOptions};
//!
//! let client = Client::connect(ClientOptions::new("my-editor")).await?;
//! let pong = client.call_json("echo", "ping", &serde_json::Value::Null, None).await?;
//! assert_eq!(pong, "pong");
//! client.close().await;
//! # Ok(()) }
//! ```
//!
//! Calls and sessions use only the wire types and the directory, never the
//! router's internals. Only the `host` feature (a router hosted inside the
//! frontend's process) links `polis-node`; the Lua module for Neovim leaves
//! it off, and is a separate cdylib crate so that test binaries never link
//! Lua.
//!
//! # Layout
//! - `connect`: finding the router, launching one under `spawn.lock`.
//! - `call`: the one request path: deadlines, idempotent retries, streams,
//!   whatever the [`Transport`]; [`Caller`] for a script's one-shot calls.
//! - `frames`: the frame transport: one connection multiplexing the session
//!   and every call (the default; [`Transport::Grpc`] is the other).
//! - `client`: [`Client`], a frontend with a session.
//! - `error`: [`ClientError`], the one mapping of what went wrong.
//! - `events`: publish, and subscriptions that survive a change of router.
//! - `host` (feature `host`): a router hosted in this process.

mod call;
mod client;
mod connect;
mod error;
mod events;
mod frames;
#[cfg(feature = "host")]
mod host;
mod reach;

pub use call::{CallOptions, CallStream, Caller, Transport};
pub use client::{Client, ClientOptions};
pub use connect::{ConnectError, Launcher, connect, dial};
pub use error::{ClientError, code_name};
pub use events::{Event, Notice, Subscription};
