//! A module's own calls to other services (`frame.proto`, "Module -> router
//! calls"): a `Request` with `service` set on the module's link, answered
//! with `Reply` frames of the same id on that link.
//!
//! The router checks who may call whom (the caller's manifest: `depends`
//! and `calls`), how deep the chain of calls is, and what deadline the call
//! inherits from the request the module is serving (`Request.parent`); then
//! it routes the call as it routes a frontend's (lazy load included) through
//! `router::calls`. A call made while serving one of the router's requests
//! ends with that request: answered, cancelled or timed out, the router
//! drops the nested call, which cancels it in its callee, and so on down
//! the chain.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use polis_mesh::pb::{self, Frame, frame::Kind, reply::Outcome};
use tokio::{task::AbortHandle, time::Instant};
use tonic::{Code, Status};

use super::{Host, Instance, Item, jsonrpc};
use crate::{
    manifest::Manifest,
    router::calls::{self, CallSpec},
};

/// The deepest chain of calls: a frontend's call is 1 deep, a call a module
/// makes while serving it 2, and so on.
pub(crate) const MAX_DEPTH: u32 = 16;

/// A module's own calls in flight at most; more are refused.
const MAX_OUTGOING: usize = 4096;

/// What a call made while serving one of the router's requests inherits
/// from that request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parent {
    pub(crate) depth: u32,
    pub(crate) deadline: Option<Instant>,
}

/// The calls one module made that are still in flight, by the module's id.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    // std Mutex: held only to insert, remove or abort, never across an await.
    calls: Mutex<HashMap<u64, OutCall>>,
    /// Tells a call apart from a later one that reuses its id.
    serial: AtomicU64,
}

#[derive(Debug)]
struct OutCall {
    parent: u64,
    serial: u64,
    task: AbortHandle,
}

impl Outgoing {
    /// The module's `Cancel`: drops the call, which cancels it in its
    /// callee. An id not in flight is ignored (it may have just ended).
    pub(crate) fn cancel(&self, id: u64) {
        if let Some(call) = self.calls.lock().expect("outgoing lock").remove(&id) {
            call.task.abort();
        }
    }

    /// The router's request `parent` on this link has ended: so have the
    /// calls the module made while serving it.
    pub(crate) fn end_parent(&self, parent: u64) {
        let mut calls = self.calls.lock().expect("outgoing lock");
        calls.retain(|_, call| {
            let keep = call.parent != parent;
            if !keep {
                call.task.abort();
            }
            keep
        });
    }

    /// The link is over: every call the module made ends.
    pub(crate) fn end_all(&self) {
        for (_, call) in self.calls.lock().expect("outgoing lock").drain() {
            call.task.abort();
        }
    }

    /// Removes call `id` if it is still the one numbered `serial`.
    fn finished(&self, id: u64, serial: u64) {
        let mut calls = self.calls.lock().expect("outgoing lock");
        if calls.get(&id).is_some_and(|call| call.serial == serial) {
            calls.remove(&id);
        }
    }
}

/// A `Request` from the module: starts the call, or answers it at once with
/// an error. The answer goes back on the module's own link.
pub(crate) fn request(instance: &Arc<Instance>, request: pb::Request) {
    let id = request.id;
    let mut calls = instance.outgoing.calls.lock().expect("outgoing lock");
    let refusal = if calls.contains_key(&id) {
        Some(Status::invalid_argument(format!("request id {id} is already in flight on this link")))
    } else if calls.len() >= MAX_OUTGOING {
        Some(Status::resource_exhausted(format!(
            "module {} has {MAX_OUTGOING} calls of its own in flight; wait for some to finish",
            instance.name
        )))
    } else {
        None
    };
    if let Some(status) = refusal {
        drop(calls);
        answer(instance.clone(), error_reply(id, &status));
        return;
    }
    let serial = instance.outgoing.serial.fetch_add(1, Ordering::Relaxed);
    let parent = request.parent;
    // Registered under the lock before the task can run, so that its own
    // `finished` cannot come first, and a Cancel right behind the Request
    // finds it.
    let task = tokio::spawn(run(instance.clone(), request, serial));
    calls.insert(id, OutCall { parent, serial, task: task.abort_handle() });
}

/// Sends one frame to the module from a task of its own, for answers given
/// from the link's reading loop (which must not wait on a full outbox).
fn answer(instance: Arc<Instance>, frame: Frame) {
    tokio::spawn(async move { instance.send(frame).await });
}

/// One call of the module's, to its end. Aborted when the module cancels
/// it, its parent request ends or the link closes; dropping the call then
/// cancels it in the callee.
async fn run(instance: Arc<Instance>, request: pb::Request, serial: u64) {
    let id = request.id;
    let result = forward(&instance, request).await;
    // Out of the table before the last reply, so that the module may reuse
    // the id as soon as it reads it.
    instance.outgoing.finished(id, serial);
    let last = match result {
        Ok(payload) => reply(id, payload.map(Outcome::Payload), false),
        Err(status) => error_reply(id, &status),
    };
    let _ = instance.send(last).await;
}

/// Checks the call, runs it, and sends a stream's items as they come;
/// returns the end of the answer.
async fn forward(instance: &Arc<Instance>, request: pb::Request) -> Result<Option<pb::Payload>, Status> {
    let Some(host) = instance.host.upgrade() else {
        return Err(Status::unavailable("the router is shutting down"));
    };
    let caller = &instance.name;
    let payload = request.payload.unwrap_or_default();
    // A JSON-RPC `$/call` with bad fields arrives already refused.
    if payload.content_type == jsonrpc::INVALID_CALL {
        return Err(Status::invalid_argument(String::from_utf8_lossy(&payload.data).into_owned()));
    }
    let service = request.service;
    if service.is_empty() {
        return Err(Status::invalid_argument(
            "a module's request names the service it calls: `service` is empty",
        ));
    }
    if request.method.is_empty() {
        return Err(Status::invalid_argument(format!("the call to {service} names no method")));
    }
    may_call(&host, instance, &service)?;
    let parent = match request.parent {
        0 => Parent { depth: 0, deadline: None },
        id => instance.parent(id).ok_or_else(|| {
            Status::cancelled(format!(
                "the request {id} this call was made for is no longer in flight on module {caller}'s link"
            ))
        })?,
    };
    let depth = parent.depth + 1;
    if depth > MAX_DEPTH {
        return Err(Status::resource_exhausted(format!(
            "call chain too deep: {caller} calling {service}.{} would be call {depth} of one chain, \
             over the chain limit of {MAX_DEPTH} nested calls (does a module call itself without end?)",
            request.method
        )));
    }
    let timeout = inherited(request.timeout_ms, parent.deadline)?;
    let spec = CallSpec {
        service,
        method: request.method,
        payload,
        caller: caller.clone(),
        timeout_ms: timeout.map_or(0, |t| t.as_millis().max(1) as u64),
        unary_only: request.unary_only,
    };
    if !request.stream {
        return calls::unary_at(&host, spec, depth).await.map(Some);
    }
    let deadline = timeout.map(|t| spec.deadline_status(t));
    let service = spec.service.clone();
    let stream = async {
        let mut call = calls::start_at(&host, spec, timeout, depth).await?;
        while let Some(item) = call.next().await {
            match item? {
                Item::Data(p) => {
                    if instance.send(reply(request.id, Some(Outcome::Payload(p)), true)).await.is_err() {
                        return Ok(None);
                    }
                }
                Item::End(p) => return Ok(p),
            }
        }
        Err(Status::unavailable(format!("module {service} ended the call without an answer")))
    };
    match (timeout, deadline) {
        (Some(t), Some(deadline)) => tokio::time::timeout(t, stream).await.unwrap_or(Err(deadline)),
        _ => stream.await,
    }
}

/// Whether the module may call `service`: it is in the `depends` or the
/// `calls` of the manifest the module was started from.
fn may_call(host: &Host, instance: &Instance, service: &str) -> Result<(), Status> {
    let caller = &instance.name;
    // An attached module's manifest may have been read after it attached.
    let manifest = instance.manifest.clone().or_else(|| host.manifest_of(caller));
    match manifest {
        Some(m) if m.may_call(service) => Ok(()),
        Some(_) => Err(Status::permission_denied(format!(
            "module \"{caller}\" may not call \"{service}\": add calls = [\"{service}\"] to its module.toml"
        ))),
        None => Err(Status::permission_denied(format!(
            "module \"{caller}\" may not call \"{service}\": it has no module.toml on this router's \
             search path to list its calls in"
        ))),
    }
}

/// The deadline of a nested call: what it asked for (`timeout_ms`, 0 for
/// none), but never more than its parent has left. `None`: no deadline (a
/// stream whose chain has none; a unary call then gets the default).
fn inherited(timeout_ms: u64, parent: Option<Instant>) -> Result<Option<Duration>, Status> {
    let asked = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
    let Some(deadline) = parent else { return Ok(asked) };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Status::deadline_exceeded("the call this one was made for has run out of time"));
    }
    Ok(Some(asked.map_or(left, |asked| asked.min(left))))
}

fn reply(id: u64, outcome: Option<Outcome>, more: bool) -> Frame {
    Frame { kind: Some(Kind::Reply(pb::Reply { id, outcome, more })) }
}

fn error_reply(id: u64, status: &Status) -> Frame {
    let code = if status.code() == Code::Ok { Code::Unknown } else { status.code() };
    let error = pb::Error { code: code as i32, message: status.message().to_owned() };
    reply(id, Some(Outcome::Error(error)), false)
}

impl Host {
    /// The manifest the host knows `name` by, if any.
    fn manifest_of(&self, name: &str) -> Option<Manifest> {
        self.existing_entry(name)?.state.lock().expect("state lock").manifest.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nested_deadline_is_at_most_what_its_parent_has_left() {
        let parent = Some(Instant::now() + Duration::from_secs(10));
        let left = inherited(0, parent).unwrap().unwrap();
        assert!(left <= Duration::from_secs(10) && left > Duration::from_secs(5));
        assert_eq!(inherited(100, parent).unwrap(), Some(Duration::from_millis(100)));
        assert!(inherited(60_000, parent).unwrap().unwrap() <= Duration::from_secs(10));
        assert_eq!(inherited(0, None).unwrap(), None);
        assert_eq!(inherited(5, None).unwrap(), Some(Duration::from_millis(5)));
        let past = Some(Instant::now() - Duration::from_millis(1));
        assert_eq!(inherited(0, past).unwrap_err().code(), Code::DeadlineExceeded);
    }
}
