//! `polis-fence`: a counter whose state lives outside the module, in a
//! file of a directory that every host of the mesh shares (the manifest's
//! `[config] state = "DIR"`), fenced by the router's epoch.
//!
//! Every call carries the epoch of the router that routed it (from the
//! link's `Welcome`, [`polis_sdk::Call::epoch`]). The file records the
//! greatest epoch that has written. A call routed with a lower one came
//! through a deposed router: it is refused with `FAILED_PRECONDITION` and
//! counted as a fencing violation (`stale`), so that a test can tell that
//! two routers were accepting calls at once. The file is read and written
//! under an exclusive `flock` of `DIR/fence.lock`, and replaced by rename,
//! so that a module killed mid-write leaves the last whole state.
//!
//! Methods: `incr {id?}` (adds one, answers `{count, epoch}`; an `id` is
//! appended to `DIR/fence.ids`, one a line, with the increment), `get`
//! (answers the state: `{count, max_epoch, stale, epochs}`, where `epochs`
//! has, per epoch that wrote, its number of writes and the wall-clock
//! milliseconds of its first and last).

use std::{
    collections::BTreeMap,
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{SystemTime, UNIX_EPOCH},
};

use polis_sdk::{Call, Module, ModuleError};
use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};

/// What the shared file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Increments accepted.
    count: u64,
    /// The greatest router epoch that has written.
    max_epoch: u64,
    /// Calls refused for a stale epoch: each one a call a deposed router
    /// accepted after a later router had written.
    stale: u64,
    /// Per epoch that wrote: its writes, and when the first and last were.
    epochs: BTreeMap<u64, Writes>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Writes {
    count: u64,
    first_ms: u64,
    last_ms: u64,
}

/// The state directory of the manifest's `[config]`.
fn state_dir(call: &Call) -> Result<PathBuf, ModuleError> {
    match call.config().get("state").and_then(|v| v.as_str()) {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => Err(ModuleError::failed_precondition(
            "the fence module needs [config] state = \"DIR\" in its module.toml (a directory every host shares)",
        )),
    }
}

fn internal<'a>(what: &str, path: &'a Path) -> impl Fn(std::io::Error) -> ModuleError + 'a {
    let what = what.to_owned();
    move |e| ModuleError::internal(format!("{what} {}: {e}", path.display()))
}

/// Runs `change` on the state under the directory's lock, and writes the
/// state back when it answers `true` with an answer that is not an error,
/// after `log` has had `DIR/fence.ids` to append to.
fn with_state<T>(
    dir: &Path,
    change: impl FnOnce(&mut State) -> (bool, Result<T, ModuleError>),
    log: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<T, ModuleError> {
    std::fs::create_dir_all(dir).map_err(internal("cannot create", dir))?;
    let lock_path = dir.join("fence.lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(internal("cannot open", &lock_path))?;
    flock(&lock, FlockOperation::LockExclusive)
        .map_err(|e| ModuleError::internal(format!("cannot lock {}: {e}", lock_path.display())))?;
    let path = dir.join("fence.json");
    let mut state: State = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| ModuleError::internal(format!("{} is not a fence state: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
        Err(e) => return Err(internal("cannot read", &path)(e)),
    };
    let (write, answer) = change(&mut state);
    if write && answer.is_ok() {
        let ids = dir.join("fence.ids");
        let mut file =
            File::options().create(true).append(true).open(&ids).map_err(internal("cannot open", &ids))?;
        log(&mut file).map_err(internal("cannot append to", &ids))?;
    }
    if write {
        let tmp = dir.join(format!("fence.json.{}", std::process::id()));
        let mut file = File::create(&tmp).map_err(internal("cannot create", &tmp))?;
        let json = serde_json::to_vec(&state).map_err(|e| ModuleError::internal(e.to_string()))?;
        file.write_all(&json).and_then(|()| file.sync_all()).map_err(internal("cannot write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(internal("cannot replace", &path))?;
    }
    // The lock goes with `lock`, after the rename.
    answer
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Adds one if `epoch` is not older than the greatest that wrote.
fn incr(state: &mut State, epoch: u64) -> (bool, Result<serde_json::Value, ModuleError>) {
    if epoch < state.max_epoch {
        state.stale += 1;
        let message =
            format!("stale epoch {epoch} < {}: this call came through a deposed router", state.max_epoch);
        return (true, Err(ModuleError::failed_precondition(message)));
    }
    let now = now_ms();
    state.max_epoch = epoch;
    state.count += 1;
    let writes = state.epochs.entry(epoch).or_insert(Writes { count: 0, first_ms: now, last_ms: now });
    writes.count += 1;
    writes.last_ms = now;
    (true, Ok(serde_json::json!({"count": state.count, "epoch": epoch})))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    Module::new("fence", env!("CARGO_PKG_VERSION"))
        .doc("incr", "{id?}: adds one to the shared count (recording id); refused (FAILED_PRECONDITION) through a deposed router")
        // The file work blocks: off the runtime's thread.
        .method("incr", |call: Call| async move {
            let dir = state_dir(&call)?;
            let epoch = call.epoch();
            let id: Option<String> = call.param_or("id", None)?;
            blocking(move || {
                with_state(&dir, |state| incr(state, epoch), |file| {
                    // Appended under the lock, before the state is replaced.
                    match &id {
                        Some(id) => writeln!(file, "{id}").and_then(|()| file.sync_data()),
                        None => Ok(()),
                    }
                })
            })
            .await
        })
        .doc("get", "the shared state: {count, max_epoch, stale, epochs}")
        .method("get", |call: Call| async move {
            let dir = state_dir(&call)?;
            blocking(move || {
                with_state(
                    &dir,
                    |state| (false, serde_json::to_value(&*state).map_err(|e| ModuleError::internal(e.to_string()))),
                    |_| Ok(()),
                )
            })
            .await
        })
        .run()
        .await
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ModuleError> + Send + 'static,
) -> Result<T, ModuleError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ModuleError::internal(e.to_string()))?
}
