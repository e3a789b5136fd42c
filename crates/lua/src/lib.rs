//! polis for Neovim: the native Lua module `require("polis_native")`, a
//! cdylib built with mlua for LuaJIT in module mode (the Lua symbols come
//! from the `nvim` process that loads it). It is a thin layer over
//! `polis-client`; it must not depend on `polis-node`, and nothing in the
//! workspace may depend on it, so that no test binary ever needs Lua symbols.
//!
//! The plugin (`lua/polis/init.lua` at the repository's root) requires it
//! from `lua/polis_native.so`, where `scripts/build-plugin.sh` puts it;
//! Neovim finds `lua/NAME.so` on the runtimepath. It is not `polis.so`,
//! whose `luaopen_polis` the plugin's own `lua/polis/init.lua` would hide.
//!
//! ```lua
//! local polis = require("polis_native")
//! local c = assert(polis.connect{ mesh_dir = "/tmp/m", modules_path = "/tmp/mods" })
//! print(c:call("echo", "ping"))                  --> pong
//! c:call_async("echo", "echo", { a = { 1, 2 } }, function(err, result) end)
//! c:call_stream("echo", "stream", { count = 3 }, function(item) end, function(err) end)
//! polis.connect_async({ name = "x" }, function(c, err) end)
//! c:close()
//! ```
//!
//! # Layout
//!
//! - This file: the native part. `polis.connect` gives a client userdata
//!   whose `call` blocks on the module's tokio runtime with a timeout, and
//!   whose `_start` spawns a call on that runtime and returns an id.
//! - `stream.rs`: `_start_stream`, a streamed call whose items and end come
//!   out of the same completion queue, in order.
//! - `pending.rs`: `_connect_start`, a connect on the runtime whose client
//!   is taken on the main loop (`polis.connect_async`).
//! - `polis.lua`: the Lua part, run once at `require`. It wraps the userdata
//!   in the client object of DESIGN.md §9 and delivers callbacks on
//!   Neovim's main loop.
//!
//! # Threads
//!
//! Lua is only ever touched on the thread that calls into the module
//! (Neovim's main thread). The runtime's workers never call Lua: a finished
//! `call_async` (or a stream's item, or a connect) pushes its outcome onto a
//! queue and writes one byte to a socket pair. The Lua side watches the
//! other end with a libuv pipe (`vim.loop.new_pipe():open(fd)`); when bytes
//! arrive it drains the queue with `_drain()` and runs each callback
//! through `vim.schedule`, where the whole Neovim API is allowed.
//!
//! # JSON mapping
//!
//! Lua → JSON (`args`): a table whose keys are exactly `1..n` is an array,
//! a table with string keys an object; an empty table is an object `{}`
//! unless it carries `polis.array_mt` (`polis.array{}` sends `[]`,
//! `polis.is_array(t)` tells); `nil`,
//! `polis.null` and `vim.NIL` are `null`. Refused with `INVALID_ARGUMENT`
//! and the path of the culprit: sparse arrays (put `polis.null` in the
//! holes), tables mixing both kinds of keys, other key types, functions,
//! userdata, NaN and infinities, strings that are not UTF-8, and nesting
//! deeper than 100 (cycles).
//!
//! JSON → Lua (results): objects are plain tables; arrays are sequence
//! tables carrying `polis.array_mt` (protected, so `vim.inspect` prints
//! them plainly), so they go back as arrays even when empty;
//! `null` is `polis.null`, which is `vim.NIL` inside Neovim (the NULL
//! light userdata elsewhere). It survives inside arrays, and a successful
//! call never returns `nil`.

mod events;
mod json;
mod pending;
mod stream;

use std::{
    collections::VecDeque,
    os::{fd::IntoRawFd, unix::net::UnixStream},
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use json::Mapping;
use mlua::{IntoLuaMulti, Lua, MultiValue, Table, UserData, UserDataMethods, Value};
use polis_client::{Client, ClientError, ClientOptions, Launcher};
use rustix::net::SendFlags;
use tokio::runtime::Runtime;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The Lua half of the module: the client object and `call_async`.
const SHIM: &str = include_str!("polis.lua");

/// A call's timeout when the caller gives none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `close` waits for the goodbye to the router.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The module's entry point, `luaopen_polis_native`.
#[mlua::lua_module(name = "polis_native")]
fn polis(lua: &Lua) -> mlua::Result<Table> {
    let core = lua.create_table()?;
    core.set("connect", lua.create_function(connect)?)?;
    core.set("_connect_start", lua.create_function(pending::start)?)?;
    core.set("locate", lua.create_function(locate)?)?;
    Mapping::install(lua)?;
    let mapping = Mapping::new(lua)?;
    core.set("null", mapping.null)?;
    core.set("array_mt", mapping.array_mt)?;
    core.set("version", env!("CARGO_PKG_VERSION"))?;
    let module: Table = lua.load(SHIM).set_name("=polis.lua").call(core.clone())?;
    lua.load(events::SHIM).set_name("=events.lua").call::<()>((core, module.clone()))?;
    Ok(module)
}

/// The one runtime of this module, shared by every client; its two workers
/// run the sessions and the asynchronous calls. It is never dropped: it
/// lives as long as the `nvim` process.
fn runtime() -> Result<&'static Runtime, String> {
    static RUNTIME: OnceLock<std::io::Result<Runtime>> = OnceLock::new();
    let built = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("polis-lua")
            .enable_all()
            .build()
    });
    built.as_ref().map_err(|e| format!("INTERNAL: cannot start the polis runtime: {e}"))
}

/// `polis.connect{...}` in the native part: a client userdata, or `(nil, err)`.
fn connect(lua: &Lua, opts: Option<Table>) -> mlua::Result<MultiValue> {
    let result = ConnectOptions::from_lua(opts).and_then(|opts| {
        let runtime = runtime()?;
        LuaClient::connect(runtime, opts)
    });
    match result {
        Ok(client) => lua.create_userdata(client)?.into_lua_multi(lua),
        Err(err) => failure(lua, err),
    }
}

/// `polis.locate{ mesh_dir =, modules_path = }` -> `{ mesh_dir =, modules_path = }`:
/// where `polis.connect` with these options looks (`polis_discovery::locate`,
/// the CLI's order); `modules_path` is nil when none is brought.
fn locate(lua: &Lua, opts: Option<Table>) -> mlua::Result<Table> {
    let get = |key: &str| -> mlua::Result<Option<String>> {
        opts.as_ref().map_or(Ok(None), |t| t.get::<Option<String>>(key))
    };
    let found = lua.create_table()?;
    let mesh = polis_discovery::locate::mesh_dir(get("mesh_dir")?.map(PathBuf::from));
    found.set("mesh_dir", mesh.display().to_string())?;
    found.set("modules_path", polis_discovery::locate::modules_path(get("modules_path")?.as_deref()))?;
    Ok(found)
}

/// What a failed function returns to Lua: `nil, err`; a success returns its
/// one value alone.
fn failure(lua: &Lua, err: String) -> mlua::Result<MultiValue> {
    (Value::Nil, err).into_lua_multi(lua)
}

/// The fields of `polis.connect`'s table.
struct ConnectOptions {
    client: ClientOptions,
    timeout: Duration,
}

impl ConnectOptions {
    fn from_lua(table: Option<Table>) -> Result<Self, String> {
        let bad = |key: &str, want: &str| format!("INVALID_ARGUMENT: polis.connect: {key} must be {want}");
        let mut client = ClientOptions::new("nvim");
        let mut launcher = Launcher::from_env();
        let mut launch = true;
        for pair in table.iter().flat_map(|t| t.pairs::<String, Value>()) {
            let (key, value) = pair.map_err(|e| format!("INVALID_ARGUMENT: polis.connect: {e}"))?;
            match (key.as_str(), value) {
                (_, Value::Nil) => {}
                ("name", Value::String(s)) => client.name = s.to_string_lossy(),
                ("mesh_dir", Value::String(s)) => client.mesh_dir = Some(PathBuf::from(s.to_string_lossy())),
                ("modules_path", Value::String(s)) => {
                    client.modules_path = polis_discovery::locate::modules_path(Some(&s.to_string_lossy()));
                }
                ("polis", Value::String(s)) => launcher.polis = PathBuf::from(s.to_string_lossy()),
                ("launch", Value::Boolean(b)) => launch = b,
                ("transport", Value::String(s)) => {
                    client.transport = s
                        .to_string_lossy()
                        .parse()
                        .map_err(|e| format!("INVALID_ARGUMENT: polis.connect: transport: {e}"))?;
                }
                ("name" | "mesh_dir" | "modules_path" | "polis" | "transport", _) => {
                    return Err(bad(&key, "a string"));
                }
                ("launch", _) => return Err(bad(&key, "a boolean")),
                (other, _) => {
                    return Err(format!(
                        "INVALID_ARGUMENT: polis.connect: unknown option {other:?} (known: name, mesh_dir, \
                         modules_path, polis, launch, transport)"
                    ));
                }
            }
        }
        // Connecting takes at most the launch wait, plus the handshake.
        let timeout = launcher.timeout + Duration::from_secs(5);
        client.launch = launch.then_some(launcher);
        Ok(Self { client, timeout })
    }

    /// Connects (or launches a router) within the timeout.
    async fn connect(self) -> Result<Client, String> {
        tokio::time::timeout(self.timeout, Client::connect(self.client))
            .await
            .map_err(|_| format!("UNAVAILABLE: no router within {:?}", self.timeout))?
            .map_err(error_text)
    }
}

/// What an asynchronous call left for Lua: its id and outcome.
type Completion = (u64, Outcome);

/// One step of an asynchronous call.
enum Outcome {
    /// A streamed item; more follow, then a `Done`.
    Item(serde_json::Value),
    /// The call's end: the result of a unary call (`Null` for a stream), or
    /// its error.
    Done(Result<serde_json::Value, String>),
}

/// The completion queue of one client, filled by the runtime's workers and
/// drained on Neovim's main thread.
struct Completions {
    // std Mutex: held only to push or to take the queue, never across an await.
    queue: Mutex<VecDeque<Completion>>,
    /// One byte per completion wakes the Lua side.
    wake: UnixStream,
}

impl Completions {
    fn push(&self, completion: Completion) {
        self.queue.lock().expect("completion queue").push_back(completion);
        // The queue is the truth, the byte only a wake-up. Neither blocking
        // nor SIGPIPE: a full buffer means the reader has
        // bytes to read already, a closed one that nobody waits any more.
        let _ = rustix::net::send(&self.wake, &[1], SendFlags::DONTWAIT | SendFlags::NOSIGNAL);
    }

    fn take(&self) -> VecDeque<Completion> {
        std::mem::take(&mut *self.queue.lock().expect("completion queue"))
    }
}

/// The client userdata: one session with the router, and its calls.
struct LuaClient {
    runtime: &'static Runtime,
    /// `None` once closed. Shared with the asynchronous calls in flight.
    client: Option<Arc<Client>>,
    /// Every asynchronous call; `close` cancels and waits for them.
    tasks: TaskTracker,
    cancel: CancellationToken,
    next_id: u64,
    completions: Arc<Completions>,
    /// The end the Lua side watches, until it takes it with `_take_fd`.
    wake_reader: Option<UnixStream>,
    /// `c:subscribe`'s subscriptions and their notices (`events.rs`).
    events: Arc<events::Subscriptions>,
}

impl LuaClient {
    fn connect(runtime: &'static Runtime, opts: ConnectOptions) -> Result<Self, String> {
        let client = runtime.block_on(opts.connect())?;
        Self::new(runtime, client)
    }

    /// The userdata for a connected client.
    fn new(runtime: &'static Runtime, client: Client) -> Result<Self, String> {
        let (reader, writer) =
            UnixStream::pair().map_err(|e| format!("INTERNAL: cannot make a socket pair: {e}"))?;
        Ok(Self {
            runtime,
            client: Some(Arc::new(client)),
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
            next_id: 1,
            completions: Arc::new(Completions { queue: Mutex::new(VecDeque::new()), wake: writer }),
            wake_reader: Some(reader),
            events: Arc::default(),
        })
    }

    fn events_handle(&self) -> Arc<events::Subscriptions> {
        self.events.clone()
    }

    fn client(&self) -> Result<Arc<Client>, String> {
        self.client.clone().ok_or_else(|| "FAILED_PRECONDITION: the polis client is closed".to_owned())
    }

    /// Ends the session: cancels the asynchronous calls in flight, then
    /// says goodbye to the router, each with a deadline.
    fn close(&mut self) {
        self.cancel.cancel();
        self.tasks.close();
        let Some(client) = self.client.take() else { return };
        let tasks = self.tasks.clone();
        self.runtime.block_on(async move {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, tasks.wait()).await;
            // Every task is gone, so this is the last reference; if one
            // were stuck, dropping ours still ends the session.
            if let Ok(client) = Arc::try_unwrap(client) {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.close()).await;
            }
        });
    }
}

impl Drop for LuaClient {
    fn drop(&mut self) {
        // Garbage collected without close(): the tasks stop and the
        // client's own Drop ends the session on the runtime.
        self.cancel.cancel();
    }
}

/// One call with its deadline, as Lua sees the outcome.
async fn call(
    client: &Client,
    service: &str,
    method: &str,
    params: &serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    // The router keeps the deadline; this one guards against a hung link.
    let guard = timeout + Duration::from_secs(2);
    match tokio::time::timeout(guard, client.call_json(service, method, params, Some(timeout))).await {
        Ok(result) => result.map_err(error_text),
        Err(_) => Err(format!("DEADLINE_EXCEEDED: no reply from {service}.{method} within {timeout:?}")),
    }
}

/// An error as Lua sees it: `CODE: message`, the code as gRPC names it.
fn error_text(err: ClientError) -> String {
    match err {
        // Its text starts with the code already.
        err @ ClientError::Call(_) => err.to_string(),
        other => {
            let code = polis_client::code_name(other.code());
            let text = other.to_string();
            // Connection errors name their code themselves too.
            if text.starts_with(code) { text } else { format!("{code}: {text}") }
        }
    }
}

/// Lua arguments → JSON params, under the mapping in the crate docs.
fn to_json(lua: &Lua, args: &Value) -> Result<serde_json::Value, String> {
    let mapping = Mapping::new(lua).map_err(|e| format!("INTERNAL: {e}"))?;
    mapping.to_json(args).map_err(|e| format!("INVALID_ARGUMENT: {e}"))
}

fn timeout_of(timeout_ms: Option<f64>) -> Result<Duration, String> {
    match timeout_ms {
        None => Ok(DEFAULT_TIMEOUT),
        Some(ms) if ms.is_finite() && ms > 0.0 => Ok(Duration::from_secs_f64(ms / 1000.0)),
        Some(ms) => {
            Err(format!("INVALID_ARGUMENT: timeout_ms must be a positive number of milliseconds, not {ms}"))
        }
    }
}

type CallArgs = (String, String, Value, Option<f64>);

impl UserData for LuaClient {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        // c:call(service, method, args [, timeout_ms]) -> result | (nil, err)
        methods.add_method("call", |lua, this, (service, method, args, timeout_ms): CallArgs| {
            let outcome = (|| {
                let client = this.client()?;
                let params = to_json(lua, &args)?;
                let timeout = timeout_of(timeout_ms)?;
                this.runtime.block_on(call(&client, &service, &method, &params, timeout))
            })();
            match outcome {
                Ok(value) => Mapping::new(lua)?.to_lua(lua, &value)?.into_lua_multi(lua),
                Err(err) => failure(lua, err),
            }
        });

        // c:_start(service, method, args [, timeout_ms]) -> id | (nil, err);
        // the outcome comes out of _drain() after a byte on the wake fd.
        methods.add_method_mut("_start", |lua, this, (service, method, args, timeout_ms): CallArgs| {
            let started = (|| {
                let client = this.client()?;
                let params = to_json(lua, &args)?;
                let timeout = timeout_of(timeout_ms)?;
                let id = this.next_id;
                this.next_id += 1;
                let cancel = this.cancel.clone();
                let completions = this.completions.clone();
                this.tasks.spawn_on(
                    async move {
                        tokio::select! {
                            result = call(&client, &service, &method, &params, timeout) => {
                                completions.push((id, Outcome::Done(result)));
                            }
                            () = cancel.cancelled() => {}
                        }
                    },
                    this.runtime.handle(),
                );
                Ok::<_, String>(id)
            })();
            match started {
                Ok(id) => id.into_lua_multi(lua),
                Err(err) => failure(lua, err),
            }
        });

        // c:_take_fd() -> fd: the read end of the wake-up socket, handed
        // over to the Lua side (libuv closes it with its pipe), once.
        methods.add_method_mut("_take_fd", |_, this, ()| {
            let reader = this
                .wake_reader
                .take()
                .ok_or_else(|| mlua::Error::runtime("polis: the wake fd was taken"))?;
            Ok(reader.into_raw_fd())
        });

        // c:_start_stream(service, method, args [, timeout_ms]) -> id | (nil, err)
        methods.add_method_mut("_start_stream", |lua, this, args: CallArgs| {
            match stream::start(lua, this, args) {
                Ok(id) => id.into_lua_multi(lua),
                Err(err) => failure(lua, err),
            }
        });

        // c:_drain() -> { {id=, err=, result=, more=}, ... }: what came in,
        // in order; `more = true` marks a stream's item (in `result`).
        methods.add_method("_drain", |lua, this, ()| {
            let done = lua.create_table()?;
            let mapping = Mapping::new(lua)?;
            for (id, outcome) in this.completions.take() {
                let entry = lua.create_table()?;
                entry.set("id", id)?;
                match outcome {
                    Outcome::Item(value) => {
                        entry.set("result", mapping.to_lua(lua, &value)?)?;
                        entry.set("more", true)?;
                    }
                    Outcome::Done(Ok(value)) => entry.set("result", mapping.to_lua(lua, &value)?)?,
                    Outcome::Done(Err(err)) => entry.set("err", err)?,
                }
                done.push(entry)?;
            }
            Ok(done)
        });

        events::add_methods(methods);

        // c:close(): idempotent.
        methods.add_method_mut("close", |_, this, ()| {
            this.close();
            Ok(())
        });
    }
}
