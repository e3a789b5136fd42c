//! The module SDK: a polis module in a few lines of Rust.
//!
//! A module is a process the router spawns. It serves one service: the
//! router hands it calls as frames on stdin (DESIGN.md §5) and reads the
//! replies as frames on stdout. The SDK speaks that protocol; a module
//! author only writes handlers.
//!
//! ```no_run
//! use polis_sdk::{Call, Items, Module};
//! use serde_json::json;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> std::process::ExitCode {
//!     Module::new("echo", "0.1.0")
//!         .method("ping", |_call: Call| async { Ok("pong") })
//!         .method("echo", |call: Call| async move { Ok(call.params().clone()) })
//!         .stream("count", |call: Call, items: Items| async move {
//!             let n: u64 = call.param_or("n", 3)?;
//!             for i in 0..n {
//!                 items.send(json!(i)).await?;
//!             }
//!             Ok(())
//!         })
//!         .run()
//!         .await
//! }
//! ```
//!
//! This crate must never depend on `polis-node` or anything else of the
//! router: a module binary starts on every cold call, so it links this crate
//! and nothing of the router. It speaks only the frames of `polis_mesh` and
//! publishes its record with `polis_discovery`.
//!
//! # Layout
//! - [`Module`] (here): the builder of a module and its entry points.
//! - `call`: what a handler gets ([`Call`], [`Items`]) and may fail with
//!   ([`ModuleError`]).
//! - `links`: the loop over links: serve a router, and when it goes away,
//!   wait for the next and re-attach to it.
//! - `session`: one link's session: the handshake, one task per request,
//!   `Cancel`, `Shutdown` with its grace, the one writer of frames.
//! - `across`: re-attaching to a router on another machine, found in etcd
//!   (the `etcd` feature; without it, a module only says it cannot).
//! - `bridge`: a router's `AttachModule` stream as an in-memory byte stream.
//! - `stdio`: stdin and stdout as non-blocking pipes or sockets.
//!
//! # The frames link, module side
//! - stdout carries frames only; log to stderr, which the router keeps.
//! - The module sends `Hello` first and waits for `Welcome`, which carries
//!   the manifest's `[config]` table ([`Call::config`]).
//! - Every `Request` runs in its own task, so many are in flight at once;
//!   replies are matched by id. Payloads are JSON.
//! - A method answers one `Reply`; a stream sends one `Reply` with
//!   `more: true` per item, the moment it is produced, then a final `Reply`
//!   without outcome and with `more: false`.
//! - `Cancel` drops the handler's future and nothing more is sent for it.
//! - `Shutdown{grace_ms}` stops new requests and gives in-flight ones
//!   `grace_ms` to finish; then [`Module::run`] returns.
//! - When the router goes away (end of stdin), in-flight handlers are
//!   dropped; the module waits up to [`Module::reattach_wait`] for the
//!   next router and re-attaches to it, or [`Module::run`] returns. On a
//!   mesh across machines (`POLIS_DISCOVERY` an etcd address) and with this
//!   crate's `etcd` feature, the next router may run on another machine: it
//!   is found in etcd and reached over TCP with the mesh's token.

mod across;
mod bridge;
mod call;
mod calls_out;
mod events;
mod links;
mod session;
mod stdio;

use std::{
    collections::HashMap, fmt, future::Future, path::PathBuf, pin::Pin, process::ExitCode, sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use polis_mesh::pb::Payload;
use serde::Serialize;

pub use call::{Call, Items, ModuleError};
pub use calls_out::CallStream;
pub use events::{Notice, Publisher, Subscription};
/// gRPC status codes, for [`ModuleError::new`].
pub use tonic::Code;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How long a module waits for a new router by default.
const DEFAULT_REATTACH_WAIT: Duration = Duration::from_secs(5);

/// Frames waiting for the writer; senders wait when it is full.
const OUTBOX: usize = 64;

/// Why a module stopped serving before the router said `Shutdown`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The router did not answer `Hello` with a valid `Welcome`.
    #[error("handshake failed: {0} (modules are started by a polis router, not by hand)")]
    Handshake(String),
    /// A frame could not be read or written.
    #[error("router link failed: {0}")]
    Frame(#[from] polis_mesh::codec::FrameError),
    /// The next router refused the module, or cannot be asked (a wrong or
    /// unreadable token file, say): waiting would not mend it.
    #[error("cannot re-attach: {0}")]
    Reattach(String),
}

/// A type-erased handler: the payload of a unary reply, or `None` after a
/// stream's last item.
type Handler = Arc<dyn Fn(Call, Items) -> BoxFuture<Result<Option<Payload>, ModuleError>> + Send + Sync>;

/// A module: its name, version and methods, and the loop that serves them.
///
/// Build it with [`Module::new`], add handlers with [`Module::method`] and
/// [`Module::stream`], then [`Module::run`] it. See the [crate docs](crate).
#[derive(Clone)]
pub struct Module {
    name: String,
    version: String,
    methods: HashMap<String, Handler>,
    /// What `Hello` declares of each method: docs and schemas by name, and
    /// which methods stream.
    docs: HashMap<String, MethodDoc>,
    /// The node id sent in `Hello`; a fresh one when unset.
    node_id: Option<String>,
    /// Where to publish the node record; nowhere when unset.
    mesh_dir: Option<PathBuf>,
    /// How long to wait for a new router after losing the link.
    reattach_wait: Duration,
    /// Where the next router is found when it may run on another machine
    /// (`POLIS_DISCOVERY` is an etcd address); `None`: the mesh directory.
    remote: Option<across::Remote>,
    /// Its subscriptions, kept across links.
    events: Arc<events::Events>,
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut methods: Vec<_> = self.methods.keys().collect();
        methods.sort();
        f.debug_struct("Module")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("methods", &methods)
            .finish_non_exhaustive()
    }
}

impl Module {
    /// A module serving the service `name`, at semver `version`
    /// (`env!("CARGO_PKG_VERSION")` is a good choice).
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            methods: HashMap::new(),
            docs: HashMap::new(),
            node_id: None,
            mesh_dir: None,
            reattach_wait: DEFAULT_REATTACH_WAIT,
            remote: None,
            events: Arc::default(),
        }
    }

    /// How long the module waits for a new router when its router goes
    /// away without `Shutdown` (default 5 s, or `POLIS_REATTACH_WAIT` in
    /// milliseconds). It then re-attaches with its state, or exits.
    pub fn reattach_wait(mut self, wait: Duration) -> Self {
        self.reattach_wait = wait;
        self
    }

    /// Adds a unary method: `handler` answers a [`Call`] with one value,
    /// sent as JSON, or with a [`ModuleError`]. A method added twice keeps
    /// the last handler.
    ///
    /// ```
    /// # use polis_sdk::{Call, Module, ModuleError};
    /// Module::new("greeter", "0.1.0").method("hello", |call: Call| async move {
    ///     let who: String = call.param("name")?;
    ///     Ok::<_, ModuleError>(format!("hello, {who}"))
    /// });
    /// ```
    pub fn method<F, Fut, T>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Call) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, ModuleError>> + Send + 'static,
        T: Serialize,
    {
        let handler: Handler = Arc::new(move |call, _items| {
            let reply = handler(call);
            Box::pin(async move { json_payload(&reply.await?).map(Some) })
        });
        let name = name.into();
        self.docs.entry(name.clone()).or_default().stream = false;
        self.methods.insert(name, handler);
        self
    }

    /// Adds a streaming method: `handler` sends items with [`Items::send`]
    /// and returns when the stream is complete (or fails). Each item reaches
    /// the caller as soon as it is sent.
    ///
    /// ```
    /// # use polis_sdk::{Call, Items, Module};
    /// Module::new("ticker", "0.1.0").stream("ticks", |_call: Call, items: Items| async move {
    ///     for tick in ["tick", "tock"] {
    ///         items.send(tick).await?;
    ///     }
    ///     Ok(())
    /// });
    /// ```
    pub fn stream<F, Fut>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Call, Items) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ModuleError>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |call, items| {
            let done = handler(call, items);
            Box::pin(async move { done.await.map(|()| None) })
        });
        let name = name.into();
        self.docs.entry(name.clone()).or_default().stream = true;
        self.methods.insert(name, handler);
        self
    }

    /// Documents the method `name` with one line, which `polis introspect`
    /// shows. Methods are declared to the router whether documented or
    /// not; a doc for a method never added is not declared.
    ///
    /// ```
    /// # use polis_sdk::{Call, Module};
    /// Module::new("greeter", "0.1.0")
    ///     .method("ping", |_call: Call| async { Ok("pong") })
    ///     .doc("ping", "answers \"pong\"");
    /// ```
    pub fn doc(mut self, name: impl Into<String>, doc: impl Into<String>) -> Self {
        self.docs.entry(name.into()).or_default().doc = doc.into();
        self
    }

    /// Gives the method `name` JSON Schemas for its params and its result
    /// (each optional), which `polis introspect --json` shows.
    ///
    /// ```
    /// # use polis_sdk::{Call, Module};
    /// use serde_json::json;
    /// Module::new("greeter", "0.1.0")
    ///     .method("hello", |call: Call| async move { Ok(call.params().clone()) })
    ///     .schema("hello", Some(json!({"type": "object"})), Some(json!({"type": "string"})));
    /// ```
    pub fn schema(
        mut self,
        name: impl Into<String>,
        params: Option<serde_json::Value>,
        result: Option<serde_json::Value>,
    ) -> Self {
        let doc = self.docs.entry(name.into()).or_default();
        doc.params = params;
        doc.result = result;
        self
    }

    /// The methods as `Hello` declares them, sorted by name.
    fn declaration(&self) -> Vec<polis_mesh::pb::Method> {
        let mut methods: Vec<_> = self
            .methods
            .keys()
            .map(|name| {
                let doc = self.docs.get(name).cloned().unwrap_or_default();
                let schema = |v: Option<serde_json::Value>| v.map(|v| v.to_string()).unwrap_or_default();
                polis_mesh::pb::Method {
                    name: name.clone(),
                    doc: doc.doc,
                    stream: doc.stream,
                    params_schema: schema(doc.params),
                    result_schema: schema(doc.result),
                }
            })
            .collect();
        methods.sort_by(|a, b| a.name.cmp(&b.name));
        methods
    }

    /// Serves the router on stdin and stdout until it says `Shutdown` or
    /// goes away, then returns [`ExitCode::SUCCESS`].
    ///
    /// Reads `POLIS_NODE_ID` (the id to announce) and `POLIS_MESH_DIR`
    /// (where to publish the module's record), both set by the router, and
    /// on a mesh across machines `POLIS_DISCOVERY`, `POLIS_TOKEN_FILE` and
    /// `POLIS_TLS_CA` (how to find and reach the next router; see the
    /// `etcd` feature).
    /// A failure (a broken handshake, a malformed frame) is printed on
    /// stderr and gives [`ExitCode::FAILURE`].
    pub async fn run(mut self) -> ExitCode {
        self.node_id = std::env::var("POLIS_NODE_ID").ok().filter(|id| !id.is_empty());
        self.mesh_dir = std::env::var_os("POLIS_MESH_DIR").filter(|dir| !dir.is_empty()).map(PathBuf::from);
        self.remote = across::Remote::from_env();
        self.read_reattach_wait();
        let name = self.name.clone();
        match self.serve(stdio::stdin(), stdio::stdout()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("{name}: {err}");
                ExitCode::FAILURE
            }
        }
    }

    /// Loads this running program into the mesh at `mesh_dir` as a module:
    /// it attaches to the router over its socket (waiting for one as long as
    /// [`Module::reattach_wait`]) and serves calls by name until the router
    /// says `Shutdown`, or goes away and no other comes. A program that was
    /// not started by a router uses this instead of [`Module::run`].
    ///
    /// On a mesh across machines (`POLIS_DISCOVERY` an etcd address, with
    /// `POLIS_TOKEN_FILE` and `POLIS_TLS_CA` as [`Module::run`] reads them)
    /// and with the `etcd` feature, it is such a module in every way: it
    /// attaches to the router in office in etcd, wherever it runs, over TCP
    /// with the mesh's token, publishes its record in etcd under a lease of
    /// its own (revoked when it returns), and follows the office to the
    /// next router.
    pub async fn attach(mut self, mesh_dir: impl Into<PathBuf>) -> ExitCode {
        self.mesh_dir = Some(mesh_dir.into());
        self.remote = across::Remote::from_env();
        self.read_reattach_wait();
        let name = self.name.clone();
        match self.serve_attached().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("{name}: {err}");
                ExitCode::FAILURE
            }
        }
    }

    fn read_reattach_wait(&mut self) {
        if let Some(ms) = std::env::var("POLIS_REATTACH_WAIT").ok().and_then(|v| v.parse().ok()) {
            self.reattach_wait = Duration::from_millis(ms);
        }
    }
}

/// What a module says of one method beside its handler.
#[derive(Debug, Clone, Default)]
struct MethodDoc {
    doc: String,
    stream: bool,
    params: Option<serde_json::Value>,
    result: Option<serde_json::Value>,
}

/// `value` as a JSON payload.
fn json_payload(value: &impl Serialize) -> Result<Payload, ModuleError> {
    let data = serde_json::to_vec(value)
        .map_err(|err| ModuleError::internal(format!("cannot encode the reply as JSON: {err}")))?;
    Ok(Payload { content_type: polis_mesh::JSON.to_owned(), data: Bytes::from(data) })
}

#[cfg(test)]
mod tests;
