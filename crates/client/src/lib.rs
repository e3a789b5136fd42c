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
//! This crate sits above `polis-node` (DESIGN.md §3) but uses only the wire
//! types and the directory for calls and sessions, never the router's
//! internals. The Lua module for Neovim is a separate cdylib crate on top of
//! this one, so that test binaries never link Lua.

mod client;
mod connect;

pub use client::{CallOptions, CallStream, Client, ClientError, ClientOptions};
pub use connect::{ConnectError, Launcher, connect, dial};
