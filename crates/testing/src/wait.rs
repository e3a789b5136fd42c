//! Polling with a deadline, and the listing of a mesh directory that every
//! failed wait shows.

use std::{
    path::Path,
    time::{Duration, Instant},
};

/// Polls `check` (every millisecond) until it gives a value, or panics after
/// `timeout` with a listing of the mesh directory `mesh`.
///
/// The deadline says "it happens at all": make it generous (seconds), never
/// a measure of speed.
pub fn wait_until<T>(timeout: Duration, mesh: &Path, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", listing(mesh));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A listing of the mesh directory `mesh`, its `nodes` and `logs`, and the
/// temp root above it: records and locks with their content, logs with
/// their last lines. For failure messages.
pub fn listing(mesh: &Path) -> String {
    let mut out = format!("mesh directory {}:\n", mesh.display());
    let root = mesh.parent().map(Path::to_owned).unwrap_or_default();
    for sub in [mesh.to_owned(), mesh.join("nodes"), mesh.join("logs"), root] {
        let Ok(entries) = std::fs::read_dir(&sub) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let content = if path.extension().is_some_and(|x| x == "json" || x == "lock") {
                std::fs::read_to_string(&path).unwrap_or_default()
            } else if path.extension().is_some_and(|x| x == "log") {
                // The tail of each log: what the process said last.
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!("\n    | {}", lines[lines.len().saturating_sub(15)..].join("\n    | "))
            } else {
                String::new()
            };
            out += &format!("  {} {}\n", path.display(), content.trim());
        }
    }
    out
}
