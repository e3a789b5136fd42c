//! What a handler gets ([`Call`], [`Items`]) and what it may fail with
//! ([`ModuleError`]).

use std::{fmt, sync::Arc};

use polis_mesh::pb::{Frame, Payload, Reply, frame, reply};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{Code, calls_out::Outgoing, json_payload};
use crate::CallStream;

/// One call to a method: its parameters, who made it, and whether it is
/// still wanted.
#[derive(Debug, Clone)]
pub struct Call {
    pub(super) id: u64,
    pub(super) method: String,
    pub(super) params: Value,
    pub(super) caller: String,
    pub(super) config: Arc<Value>,
    pub(super) epoch: u64,
    pub(super) deadline: Option<Instant>,
    pub(super) cancel: CancellationToken,
    /// This link's own calls to other services.
    pub(super) outgoing: Arc<Outgoing>,
    pub(super) events: Arc<crate::events::Events>,
}

impl Call {
    /// The request id, unique among the calls in flight on this link.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The method called.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The parameters as JSON; `null` when the caller sent none.
    pub fn params(&self) -> &Value {
        &self.params
    }

    /// The node id or name of the caller, for logs; may be empty.
    pub fn caller(&self) -> &str {
        &self.caller
    }

    /// The manifest's `[config]` table; `null` when there is none.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The epoch of the router that routed this call (from its `Welcome`):
    /// the fencing token of its term. A later router in office has a
    /// greater epoch, so state kept outside the module (a file, a
    /// database) can refuse writes from a deposed router by remembering
    /// the greatest epoch that wrote (see `modules/fence`).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// When the caller stops waiting, if it said.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Completes when the router cancels the call or its deadline passes.
    ///
    /// On `Cancel` the SDK drops the handler anyway; this is for work the
    /// handler hands elsewhere, and for stopping at the deadline.
    ///
    /// ```
    /// # use polis_sdk::{Call, Module, ModuleError};
    /// Module::new("sleeper", "0.1.0").method("nap", |call: Call| async move {
    ///     tokio::select! {
    ///         () = tokio::time::sleep(std::time::Duration::from_secs(1)) => Ok("rested"),
    ///         () = call.cancelled() => Err(ModuleError::deadline_exceeded("woken early")),
    ///     }
    /// });
    /// ```
    pub async fn cancelled(&self) {
        match self.deadline {
            Some(deadline) => tokio::select! {
                () = self.cancel.cancelled() => {}
                () = tokio::time::sleep_until(deadline) => {}
            },
            None => self.cancel.cancelled().await,
        }
    }

    /// Whether the call was cancelled or its deadline has passed.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled() || self.deadline.is_some_and(|deadline| deadline <= Instant::now())
    }

    /// Calls `method` of another service and waits for its answer (a
    /// stream's last item), while this call is being served. The router
    /// routes it as a frontend's call, but checks that this module's
    /// `module.toml` lists `service` in `depends` or `calls`; it inherits
    /// what this call has left of its deadline, and is cancelled when this
    /// call ends or is cancelled.
    ///
    /// ```no_run
    /// # use polis_sdk::{Call, Module};
    /// Module::new("greeter", "0.1.0").method("greet", |call: Call| async move {
    ///     let name = call.call("names", "pick", serde_json::json!({})).await?;
    ///     Ok(format!("hello, {name}"))
    /// });
    /// ```
    pub async fn call(
        &self,
        service: &str,
        method: &str,
        params: impl Serialize,
    ) -> Result<Value, ModuleError> {
        self.outgoing.start(self.id, service, method, params, false).await?.value().await
    }

    /// Calls a streaming `method` of another service: its items, one by
    /// one, as [`CallStream::next`] yields them. Dropping the stream
    /// cancels the call. Otherwise as [`Call::call`].
    pub async fn call_stream(
        &self,
        service: &str,
        method: &str,
        params: impl Serialize,
    ) -> Result<CallStream, ModuleError> {
        self.outgoing.start(self.id, service, method, params, true).await
    }

    /// Publishes `value` as JSON on `topic`, to every subscription that
    /// matches it in the mesh. A topic may not be empty, hold `*` or spaces,
    /// or start `polis.` (the router's own).
    pub async fn publish(&self, topic: &str, value: &impl Serialize) -> Result<(), ModuleError> {
        self.events.publish(topic, value).await
    }

    /// A handle that publishes for this module after this call has ended,
    /// from any thread (see [`crate::Publisher`]).
    pub fn publisher(&self) -> crate::Publisher {
        crate::Publisher(self.events.clone())
    }

    /// Subscribes to `pattern` (a topic, or a prefix ending in `*`; `*` is
    /// every topic). The subscription outlives the call, and the link: it
    /// lasts until dropped, on whichever router is in office.
    ///
    /// ```
    /// # use polis_sdk::{Call, Module, Notice};
    /// Module::new("listener", "0.1.0").method("first", |call: Call| async move {
    ///     let mut notes = call.subscribe("notes.*").await?;
    ///     match notes.next().await {
    ///         Some(Notice::Event { topic, .. }) => Ok(topic),
    ///         _ => Ok(String::new()),
    ///     }
    /// });
    /// ```
    pub async fn subscribe(&self, pattern: &str) -> Result<crate::Subscription, ModuleError> {
        self.events.subscribe(pattern).await
    }

    /// All parameters, deserialized as a `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ModuleError> {
        T::deserialize(&self.params)
            .map_err(|err| ModuleError::invalid_argument(format!("invalid parameters: {err}")))
    }

    /// The named parameter `key`; an error when it is missing, `null` or
    /// not a `T`.
    pub fn param<T: DeserializeOwned>(&self, key: &str) -> Result<T, ModuleError> {
        self.named(key)?.ok_or_else(|| ModuleError::invalid_argument(format!("missing parameter \"{key}\"")))
    }

    /// The named parameter `key`, or `default` when it is missing or
    /// `null`; an error when it is not a `T`.
    pub fn param_or<T: DeserializeOwned>(&self, key: &str, default: T) -> Result<T, ModuleError> {
        Ok(self.named(key)?.unwrap_or(default))
    }

    fn named<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ModuleError> {
        let value = match &self.params {
            Value::Object(map) => map.get(key),
            Value::Null => None,
            other => {
                return Err(ModuleError::invalid_argument(format!(
                    "expected named parameters (a JSON object), got {other}"
                )));
            }
        };
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(value) => T::deserialize(value)
                .map(Some)
                .map_err(|err| ModuleError::invalid_argument(format!("parameter \"{key}\": {err}"))),
        }
    }
}

/// The items of a streaming call, sent to the caller one by one.
///
/// It lives as long as its handler: items sent after the handler returned
/// would follow the end of the stream, so do not move it into other tasks
/// that outlive the handler.
#[derive(Debug)]
pub struct Items {
    pub(super) id: u64,
    pub(super) tx: mpsc::Sender<Frame>,
}

impl Items {
    /// Sends one item as JSON. It is written to the router at once; this
    /// waits only when the link is backed up.
    ///
    /// Fails when the item cannot be encoded or the router link is gone;
    /// either way, returning the error with `?` is the right response.
    pub async fn send(&self, item: impl Serialize) -> Result<(), ModuleError> {
        let frame = reply_frame(self.id, Some(reply::Outcome::Payload(json_payload(&item)?)), true);
        self.tx.send(frame).await.map_err(|_| ModuleError::unavailable("the router link is closed"))
    }
}

/// A `Reply` frame.
pub(super) fn reply_frame(id: u64, outcome: Option<reply::Outcome>, more: bool) -> Frame {
    Frame { kind: Some(frame::Kind::Reply(Reply { id, outcome, more })) }
}

/// The last `Reply` of a call: its value, the end of its stream, or its error.
pub(super) fn final_reply(id: u64, result: Result<Option<Payload>, ModuleError>) -> Frame {
    let outcome = match result {
        Ok(payload) => payload.map(reply::Outcome::Payload),
        Err(err) => {
            Some(reply::Outcome::Error(polis_mesh::pb::Error { code: err.code, message: err.message }))
        }
    };
    reply_frame(id, outcome, false)
}

/// An error a handler returns: a gRPC status code and a message for people.
///
/// The router passes both to the caller unchanged. `?` on a
/// [`serde_json::Error`] gives `INVALID_ARGUMENT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleError {
    code: i32,
    message: String,
}

impl ModuleError {
    /// An error with any code: a [`Code`] or its number.
    ///
    /// ```
    /// # use polis_sdk::{Code, ModuleError};
    /// assert_eq!(ModuleError::new(Code::NotFound, "no such key"), ModuleError::new(5, "no such key"));
    /// ```
    pub fn new(code: impl Into<i32>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into() }
    }

    /// `INVALID_ARGUMENT`: the parameters are wrong.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// `NOT_FOUND`: what the call names does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    /// `FAILED_PRECONDITION`: the module is not in a state to do this.
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, message)
    }

    /// `DEADLINE_EXCEEDED`: the call ran out of time.
    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Self::new(Code::DeadlineExceeded, message)
    }

    /// `UNAVAILABLE`: try again later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }

    /// `INTERNAL`: a bug in the module.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    /// The gRPC status code number.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ModuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.message, Code::from(self.code))
    }
}

impl std::error::Error for ModuleError {}

impl From<serde_json::Error> for ModuleError {
    fn from(err: serde_json::Error) -> Self {
        Self::invalid_argument(format!("invalid parameters: {err}"))
    }
}
