//! `c:call_stream`: a streamed call on the runtime. Each item and then the
//! end go onto the client's completion queue, which the Lua side drains in
//! order on the main loop, so `on_item` sees the items in the order the
//! module sent them and `on_done` runs after the last.

use std::time::Duration;

use mlua::Lua;

use crate::{CallArgs, LuaClient, Outcome, error_text, timeout_of, to_json};

/// Starts `service.method` as a stream; gives the call's id.
///
/// Without a timeout the stream runs until the module ends it (or the
/// client closes); with one, the whole stream must end within it.
pub(crate) fn start(
    lua: &Lua,
    this: &mut LuaClient,
    (service, method, args, timeout_ms): CallArgs,
) -> Result<u64, String> {
    let client = this.client()?;
    let params = to_json(lua, &args)?;
    let timeout = timeout_ms.map(|ms| timeout_of(Some(ms))).transpose()?;
    let id = this.next_id;
    this.next_id += 1;
    let cancel = this.cancel.clone();
    let completions = this.completions.clone();
    this.tasks.spawn_on(
        async move {
            let items = async {
                let mut stream = client.call_stream(&service, &method, &params).await.map_err(error_text)?;
                while let Some(item) = stream.next().await {
                    completions.push((id, Outcome::Item(item.map_err(error_text)?)));
                }
                Ok(serde_json::Value::Null)
            };
            let bounded = async {
                match timeout {
                    None => items.await,
                    Some(limit) => tokio::time::timeout(limit, items)
                        .await
                        .unwrap_or_else(|_| Err(expired(&service, &method, limit))),
                }
            };
            tokio::select! {
                end = bounded => completions.push((id, Outcome::Done(end))),
                // Dropping the stream cancels the call in its module.
                () = cancel.cancelled() => {}
            }
        },
        this.runtime.handle(),
    );
    Ok(id)
}

fn expired(service: &str, method: &str, limit: Duration) -> String {
    format!("DEADLINE_EXCEEDED: the stream {service}.{method} did not end within {limit:?}")
}
