//! The frontend API of polis: connect to the mesh's router (launching one
//! when none runs), call and stream, and re-attach when the router changes.
//!
//! It depends on `polis-node` only for types shared with the router, never
//! on the router's internals. The Lua module for Neovim is a separate cdylib
//! crate built on this one, so that test binaries never link Lua.
//!
//! The connect-or-launch logic lands with the frontends issue; until then
//! this crate is the place reserved for it in the workspace layout.
