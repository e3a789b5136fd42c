//! A module's own calls to other services, multiplexed on its link with the
//! router's requests (`frame.proto`, "Module -> router calls"): a `Request`
//! with `service` set and an id from this module's own counter goes out,
//! `Reply` frames with that id come back, and dropping a call before its
//! end sends `Cancel`.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use polis_mesh::pb::{Cancel, Frame, Reply, Request, frame::Kind, reply::Outcome};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{Code, call::ModuleError, json_payload};

/// The calls in flight that one link's module made, by id.
pub(crate) struct Outgoing {
    /// Frames to the router, through the link's one writer.
    tx: mpsc::Sender<Frame>,
    // std Mutex: held only to insert, take or remove, never across an await.
    calls: Mutex<HashMap<u64, mpsc::UnboundedSender<Reply>>>,
    next_id: AtomicU64,
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outgoing").finish_non_exhaustive()
    }
}

impl Outgoing {
    pub(crate) fn new(tx: mpsc::Sender<Frame>) -> Arc<Self> {
        Arc::new(Self { tx, calls: Mutex::default(), next_id: AtomicU64::new(1) })
    }

    /// A `Reply` from the router: to the call it answers. One for an id not
    /// in flight (a call dropped just before) is ignored.
    pub(crate) fn dispatch(&self, reply: Reply) {
        let mut calls = self.calls.lock().expect("outgoing calls poisoned");
        let sender = if reply.more { calls.get(&reply.id).cloned() } else { calls.remove(&reply.id) };
        if let Some(sender) = sender {
            let _ = sender.send(reply);
        }
    }

    /// The link is over: every call in flight fails.
    pub(crate) fn close(&self) {
        self.calls.lock().expect("outgoing calls poisoned").clear();
    }

    /// Sends a request for `service`, made while serving the router's
    /// request `parent`.
    pub(crate) async fn start(
        self: &Arc<Self>,
        parent: u64,
        service: &str,
        method: &str,
        params: impl Serialize,
        stream: bool,
    ) -> Result<CallStream, ModuleError> {
        let payload = json_payload(&params)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.calls.lock().expect("outgoing calls poisoned").insert(id, tx);
        let request = Request {
            id,
            method: method.to_owned(),
            payload: Some(payload),
            service: service.to_owned(),
            stream,
            parent,
            ..Default::default()
        };
        let call = CallStream { outgoing: self.clone(), id, rx, done: false };
        if self.tx.send(Frame { kind: Some(Kind::Request(request)) }).await.is_err() {
            return Err(ModuleError::unavailable("the router link is closed"));
        }
        Ok(call)
    }
}

/// The answer to a call made with [`Call::call_stream`](crate::Call::call_stream):
/// its items, then its end. Dropped before the end, it cancels the call.
#[derive(Debug)]
pub struct CallStream {
    outgoing: Arc<Outgoing>,
    id: u64,
    rx: mpsc::UnboundedReceiver<Reply>,
    done: bool,
}

impl CallStream {
    /// The next item; `None` after the last. A stream that ends with a
    /// value (a unary method, or a stream's last item sent as its end)
    /// yields that value as its last item.
    pub async fn next(&mut self) -> Option<Result<Value, ModuleError>> {
        loop {
            if self.done {
                return None;
            }
            let Some(reply) = self.rx.recv().await else {
                self.done = true;
                return Some(Err(ModuleError::unavailable("the router link closed during the call")));
            };
            self.done = !reply.more;
            match reply.outcome {
                Some(Outcome::Payload(p)) => return Some(parse(&p.data)),
                Some(Outcome::Error(e)) => {
                    self.done = true;
                    let code = if e.code == Code::Ok as i32 { Code::Unknown as i32 } else { e.code };
                    return Some(Err(ModuleError::new(code, e.message)));
                }
                // A bare end; or an empty item, which carries nothing.
                None => continue,
            }
        }
    }

    /// The answer of a unary call: its one value (`null` when none).
    pub(crate) async fn value(mut self) -> Result<Value, ModuleError> {
        let mut last = Value::Null;
        while let Some(item) = self.next().await {
            last = item?;
        }
        Ok(last)
    }
}

impl Drop for CallStream {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let in_flight =
            self.outgoing.calls.lock().expect("outgoing calls poisoned").remove(&self.id).is_some();
        if in_flight {
            let cancel = Frame { kind: Some(Kind::Cancel(Cancel { id: self.id })) };
            // Never lost to a full outbox: then it waits its turn in a task.
            if let Err(mpsc::error::TrySendError::Full(cancel)) = self.outgoing.tx.try_send(cancel) {
                let tx = self.outgoing.tx.clone();
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move { tx.send(cancel).await });
                }
            }
        }
    }
}

fn parse(data: &[u8]) -> Result<Value, ModuleError> {
    if data.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(data)
        .map_err(|err| ModuleError::internal(format!("the callee answered with something not JSON: {err}")))
}
