//! Events for Neovim: `c:subscribe(pattern, function(topic, value) end
//! [, function(count) end])` and `c:unsubscribe(id)`.
//!
//! Each subscription is a task on the module's runtime that pushes its
//! notices onto the client's event queue and writes the same wake-up byte
//! as a finished `call_async`; the Lua side (`events.lua`) drains the queue
//! when the byte arrives and runs each callback through `vim.schedule`, so
//! callbacks run on Neovim's main loop and never on a worker.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::Duration,
};

use mlua::{IntoLuaMulti, Lua, UserDataMethods};
use polis_client::Notice;
use rustix::net::SendFlags;
use tokio_util::sync::CancellationToken;

use crate::{LuaClient, error_text, failure, json::Mapping};

/// The Lua half: `Client:subscribe`, `Client:unsubscribe`, the dispatch.
pub(crate) const SHIM: &str = include_str!("events.lua");

/// How long the router has to answer a subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a subscription left for Lua.
enum Pending {
    Event { id: u64, topic: String, value: serde_json::Value },
    Lagged { id: u64, count: u64 },
}

/// A client's subscriptions and their queue of notices.
#[derive(Default)]
pub(crate) struct Subscriptions {
    // std Mutex: held only to push or take, never across an await.
    queue: Mutex<VecDeque<Pending>>,
    /// Each live subscription's stop token, by id.
    live: Mutex<HashMap<u64, CancellationToken>>,
}

pub(crate) fn add_methods<M: UserDataMethods<LuaClient>>(methods: &mut M) {
    // c:_subscribe(pattern) -> id | (nil, err): blocks for the router's answer.
    methods.add_method_mut("_subscribe", |lua, this, pattern: String| {
        let started = (|| {
            let client = this.client()?;
            let mut subscription = this
                .runtime
                .block_on(async { tokio::time::timeout(SUBSCRIBE_TIMEOUT, client.subscribe(&pattern)).await })
                .map_err(|_| {
                    format!("DEADLINE_EXCEEDED: no answer to the subscription within {SUBSCRIBE_TIMEOUT:?}")
                })?
                .map_err(error_text)?;
            let id = this.next_id;
            this.next_id += 1;
            let stop = this.cancel.child_token();
            this.events.live.lock().expect("subscriptions").insert(id, stop.clone());
            let completions = this.completions.clone();
            let events = this.events_handle();
            this.tasks.spawn_on(
                async move {
                    loop {
                        let notice = tokio::select! {
                            notice = subscription.next() => notice,
                            () = stop.cancelled() => return,
                        };
                        let pending = match notice {
                            Some(Notice::Event(event)) => {
                                let value = event.json().unwrap_or(serde_json::Value::Null);
                                Pending::Event { id, topic: event.topic, value }
                            }
                            Some(Notice::Lagged { count }) => Pending::Lagged { id, count },
                            Some(_) => continue,
                            None => return,
                        };
                        events.queue.lock().expect("event queue").push_back(pending);
                        // As in Completions::push: a wake-up, never blocking.
                        let _ = rustix::net::send(
                            &completions.wake,
                            &[1],
                            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
                        );
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

    // c:_unsubscribe(id): ends it; notices already queued are dropped by Lua.
    methods.add_method("_unsubscribe", |_, this, id: u64| {
        if let Some(stop) = this.events.live.lock().expect("subscriptions").remove(&id) {
            stop.cancel();
        }
        Ok(())
    });

    // c:_drain_events() -> { {id=, topic=, value=} | {id=, lagged=}, ... }
    methods.add_method("_drain_events", |lua: &Lua, this, ()| {
        let out = lua.create_table()?;
        let mapping = Mapping::new(lua)?;
        let taken = std::mem::take(&mut *this.events.queue.lock().expect("event queue"));
        for pending in taken {
            let entry = lua.create_table()?;
            match pending {
                Pending::Event { id, topic, value } => {
                    entry.set("id", id)?;
                    entry.set("topic", topic)?;
                    entry.set("value", mapping.to_lua(lua, &value)?)?;
                }
                Pending::Lagged { id, count } => {
                    entry.set("id", id)?;
                    entry.set("lagged", count)?;
                }
            }
            out.push(entry)?;
        }
        Ok(out)
    });
}
