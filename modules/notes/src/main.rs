//! `polis-notes`: a database over a user's Neorg workspaces, shared by
//! every editor of the mesh (what Norgberg was to be for Norgopolis).
//!
//! It indexes `.norg` files into SQLite under the user's cache directory
//! (headings, links, tasks, metadata, full text), keeps the index current
//! with a file watcher, and answers JSON methods about it. README.md's
//! "Notes" section is the user's guide; ARCHITECTURE.md has the schema.
//!
//! # Layout
//! - `norg`: the line-based Norg parser.
//! - `workspace`: workspaces and the paths and link targets inside them.
//! - `db`: the index file, its schema, rebuilding it.
//! - `index`: walking, parallel parsing, writing in one transaction.
//! - `watch`: the watcher, debounced, and `announce_change`.
//! - `queries`, `sql`: the read methods, and `query {sql}`.
//! - `notes`: the state the handlers share.
//! - here: the methods, each a thin handler on a blocking thread.

mod db;
mod index;
mod norg;
mod notes;
mod queries;
mod rank;
mod snippet;
mod sql;
mod watch;
mod workspace;

use std::{process::ExitCode, sync::Arc, time::Duration};

use polis_sdk::{Call, Items, Module, ModuleError};
use serde_json::{Value, json};
use tokio::sync::{OnceCell, mpsc};

use crate::{
    notes::{Config, Notes},
    queries::FileRef,
};

/// The state, made at the first call: the config comes with the handshake.
static NOTES: OnceCell<Arc<Notes>> = OnceCell::const_new();

/// The longest `query` time limit a caller may ask for.
const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let module = Module::new("notes", env!("CARGO_PKG_VERSION"))
        .method("workspaces", |call: Call| async move {
            let notes = notes(&call).await?;
            blocking(move || notes.describe()).await
        })
        .method("add_workspace", |call: Call| async move {
            let notes = notes(&call).await?;
            let name: String = call.param("name")?;
            let path: String = call.param("path")?;
            blocking(move || notes.add_workspace(&name, &path)).await
        })
        .stream("index", index)
        .method("search", |call: Call| async move {
            let notes = notes(&call).await?;
            let q: String = call.param("q")?;
            let workspace = workspace_param(&notes, &call)?;
            let limit: u32 = call.param_or("limit", 20)?;
            if limit == 0 || limit > 1000 {
                return Err(ModuleError::invalid_argument("search: `limit` must be 1 to 1000"));
            }
            blocking(move || notes.search(&q, workspace.as_deref(), limit)).await
        })
        .stream("files", |call: Call, items: Items| async move {
            let notes = notes(&call).await?;
            let workspace = workspace_param(&notes, &call)?;
            let list = blocking(move || queries::files(&notes.reader(), workspace.as_deref())).await?;
            send_all(&items, list).await
        })
        .method("outline", |call: Call| async move {
            let (notes, file) = file_param(&call).await?;
            blocking(move || queries::outline(&notes.reader(), &file)).await
        })
        .method("links", |call: Call| async move {
            let (notes, file) = file_param(&call).await?;
            blocking(move || queries::links(&notes.reader(), &file)).await
        })
        .method("backlinks", backlinks)
        .stream("broken_links", |call: Call, items: Items| async move {
            let notes = notes(&call).await?;
            let workspace = workspace_param(&notes, &call)?;
            let list = blocking(move || queries::broken_links(&notes.reader(), workspace.as_deref())).await?;
            send_all(&items, list).await
        })
        .stream("tasks", tasks)
        .method("meta", |call: Call| async move {
            let (notes, file) = file_param(&call).await?;
            blocking(move || queries::meta(&notes.reader(), &file)).await
        })
        .stream("query", query);
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (Some("--attach"), Some(mesh_dir)) => module.attach(mesh_dir).await,
        _ => module.run().await,
    }
}

/// The state, opened at the first call with the manifest's config; the
/// configured workspaces are then indexed in the background (unless
/// `index_on_start = false`), so that an editor need not ask.
async fn notes(call: &Call) -> Result<Arc<Notes>, ModuleError> {
    let config = call.config().clone();
    let publisher = call.publisher();
    NOTES
        .get_or_try_init(|| async move {
            let config = Config::from_value(&config).map_err(ModuleError::failed_precondition)?;
            let notes =
                blocking(move || Notes::open(config, Some(publisher)).map_err(ModuleError::unavailable))
                    .await?;
            if notes.config.index_on_start {
                let background = notes.clone();
                std::thread::Builder::new()
                    .name("notes-index".into())
                    .spawn(move || {
                        for ws in background.workspaces().iter().filter(|w| w.error.is_none()) {
                            match background.index(ws, &mut |_| {}) {
                                Ok(s) => eprintln!(
                                    "notes: indexed {}: {} files, {} parsed, {} skipped",
                                    s.workspace,
                                    s.files,
                                    s.parsed,
                                    s.skipped.len()
                                ),
                                Err(e) => eprintln!("notes: indexing {}: {e}", ws.name),
                            }
                        }
                    })
                    .map_err(|e| ModuleError::internal(format!("cannot start indexing: {e}")))?;
            }
            Ok(notes)
        })
        .await
        .cloned()
}

/// Runs blocking work (SQLite, the disk) off the runtime's thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ModuleError> + Send + 'static,
) -> Result<T, ModuleError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ModuleError::internal(format!("notes worker failed: {e}")))?
}

async fn send_all(items: &Items, list: Vec<Value>) -> Result<(), ModuleError> {
    for item in list {
        items.send(item).await?;
    }
    Ok(())
}

/// The optional `workspace` parameter, which must name a workspace.
fn workspace_param(notes: &Notes, call: &Call) -> Result<Option<String>, ModuleError> {
    let workspace: Option<String> = call.param_or("workspace", None)?;
    if let Some(name) = &workspace {
        notes.workspace(name)?;
    }
    Ok(workspace)
}

/// The state and the indexed file named by `path` (and `workspace`).
async fn file_param(call: &Call) -> Result<(Arc<Notes>, FileRef), ModuleError> {
    let notes = notes(call).await?;
    let path: String = call.param("path")?;
    let workspace = workspace_param(&notes, call)?;
    let for_find = notes.clone();
    let file = blocking(move || {
        let all = for_find.workspaces();
        queries::find_file(&for_find.reader(), &all, &path, workspace.as_deref())
    })
    .await?;
    Ok((notes, file))
}

/// `index {workspace?}`: `{"progress": …}` items every few hundred files,
/// then one `{"summary": …}` per workspace.
async fn index(call: Call, items: Items) -> Result<(), ModuleError> {
    let notes = notes(&call).await?;
    notes.look_again().map_err(ModuleError::internal)?;
    let targets = match workspace_param(&notes, &call)? {
        Some(name) => {
            let ws = notes.workspace(&name)?;
            if let Some(error) = &ws.error {
                return Err(ModuleError::not_found(format!("workspace {name}: {error}")));
            }
            vec![ws]
        }
        None => notes.workspaces(),
    };
    let (send, mut receive) = mpsc::unbounded_channel::<Value>();
    let work = tokio::task::spawn_blocking(move || {
        for ws in targets {
            let progress = send.clone();
            let mut report = move |p: index::Progress| {
                let _ = progress.send(json!({ "progress": p }));
            };
            let item = match notes.index(&ws, &mut report) {
                Ok(summary) => json!({ "summary": summary }),
                Err(error) => json!({ "summary": { "workspace": ws.name, "error": error } }),
            };
            if send.send(item).is_err() {
                return;
            }
        }
    });
    while let Some(item) = receive.recv().await {
        items.send(item).await?;
    }
    work.await.map_err(|e| ModuleError::internal(format!("indexing failed: {e}")))
}

/// `backlinks {path?, heading?, workspace?}`: at least one of the two.
async fn backlinks(call: Call) -> Result<Vec<Value>, ModuleError> {
    let heading: Option<String> = call.param_or("heading", None)?;
    let has_path = call.params().get("path").is_some_and(|p| !p.is_null());
    if !has_path && heading.is_none() {
        return Err(ModuleError::invalid_argument("backlinks: give `path`, `heading`, or both"));
    }
    let (notes, file) = if has_path {
        let (notes, file) = file_param(&call).await?;
        (notes, Some(file))
    } else {
        (notes(&call).await?, None)
    };
    blocking(move || queries::backlinks(&notes.reader(), file.as_ref(), heading.as_deref())).await
}

/// `tasks {state?, workspace?, path?}`.
async fn tasks(call: Call, items: Items) -> Result<(), ModuleError> {
    let state: Option<String> = call.param_or("state", None)?;
    let has_path = call.params().get("path").is_some_and(|p| !p.is_null());
    let (notes, file) = if has_path {
        let (notes, file) = file_param(&call).await?;
        (notes, Some(file))
    } else {
        (notes(&call).await?, None)
    };
    let workspace = workspace_param(&notes, &call)?;
    let list = blocking(move || {
        queries::tasks(&notes.reader(), state.as_deref(), workspace.as_deref(), file.as_ref())
    })
    .await?;
    send_all(&items, list).await
}

/// `query {sql, timeout_ms?}`: `{"columns": […]}`, then one array per row.
async fn query(call: Call, items: Items) -> Result<(), ModuleError> {
    let notes = notes(&call).await?;
    let sql: String = call.param("sql")?;
    let default = notes.config.query_timeout.as_millis() as u64;
    let limit = Duration::from_millis(call.param_or("timeout_ms", default)?);
    if limit.is_zero() || limit > MAX_QUERY_TIMEOUT {
        return Err(ModuleError::invalid_argument("query: `timeout_ms` must be 1 to 60000"));
    }
    let (send, mut receive) = mpsc::channel::<Value>(64);
    let index = notes.index_path.clone();
    let work = tokio::task::spawn_blocking(move || {
        sql::run(&index, &sql, limit, |row| send.blocking_send(row).is_ok())
    });
    while let Some(row) = receive.recv().await {
        items.send(row).await?;
    }
    work.await.map_err(|e| ModuleError::internal(format!("query failed: {e}")))?.map(|_| ())
}
