//! `polis.connect_async`: a connect (or a router's launch) on the runtime,
//! so that Neovim's main loop goes on meanwhile. The outcome waits in a
//! slot; one byte on a socket pair tells the Lua side, which takes it with
//! `_take` on the main loop and makes the client object there.

use std::{
    os::{fd::IntoRawFd, unix::net::UnixStream},
    sync::{Arc, Mutex},
};

use mlua::{IntoLuaMulti, Lua, MultiValue, Table, UserData, UserDataMethods, Value};
use polis_client::Client;
use rustix::net::SendFlags;

use crate::{ConnectOptions, LuaClient, failure, runtime};

/// A connect in flight.
struct Pending {
    /// The connected client or the error, once there.
    slot: Arc<Mutex<Option<Result<Client, String>>>>,
    /// The end the Lua side watches, until it takes it with `_take_fd`.
    wake_reader: Option<UnixStream>,
}

/// `core._connect_start(opts)` -> pending | (nil, err): bad options fail
/// here, at once; everything else comes out of `pending:_take()`.
pub(crate) fn start(lua: &Lua, opts: Option<Table>) -> mlua::Result<MultiValue> {
    let started = (|| {
        let opts = ConnectOptions::from_lua(opts)?;
        let runtime = runtime()?;
        let (reader, writer) =
            UnixStream::pair().map_err(|e| format!("INTERNAL: cannot make a socket pair: {e}"))?;
        let slot = Arc::new(Mutex::new(None));
        let filled = slot.clone();
        runtime.spawn(async move {
            let outcome = opts.connect().await;
            // A pending dropped meanwhile drops the client here, on the
            // runtime, which ends its session.
            *filled.lock().expect("connect slot") = Some(outcome);
            let _ = rustix::net::send(&writer, &[1], SendFlags::DONTWAIT | SendFlags::NOSIGNAL);
        });
        Ok::<_, String>(Pending { slot, wake_reader: Some(reader) })
    })();
    match started {
        Ok(pending) => lua.create_userdata(pending)?.into_lua_multi(lua),
        Err(err) => failure(lua, err),
    }
}

impl UserData for Pending {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        // pending:_take_fd() -> fd, once: libuv closes it with its pipe.
        methods.add_method_mut("_take_fd", |_, this, ()| {
            let reader = this
                .wake_reader
                .take()
                .ok_or_else(|| mlua::Error::runtime("polis: the wake fd was taken"))?;
            Ok(reader.into_raw_fd())
        });

        // pending:_take() -> false while connecting; then the client
        // userdata, or (nil, err), once.
        methods.add_method("_take", |lua, this, ()| {
            let Some(outcome) = this.slot.lock().expect("connect slot").take() else {
                return false.into_lua_multi(lua);
            };
            let client = runtime().and_then(|runtime| LuaClient::new(runtime, outcome?));
            match client {
                Ok(client) => lua.create_userdata(client)?.into_lua_multi(lua),
                Err(err) => (Value::Nil, err).into_lua_multi(lua),
            }
        });
    }
}
