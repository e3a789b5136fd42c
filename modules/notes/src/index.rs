//! Indexing: walking a workspace, parsing its files on a pool of threads,
//! and writing what changed in one transaction.
//!
//! A file is re-parsed only when its mtime or size differ from the index.
//! Nothing here writes outside the index: the notes are only read.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

use crate::{
    norg::{self, Doc, LinkKind},
    workspace::{Workspace, resolve_target},
};

/// Progress is reported after this many files parsed.
pub(crate) const PROGRESS_EVERY: usize = 200;

/// One `.norg` file found on disk.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub(crate) abs: PathBuf,
    pub(crate) rel: String,
    pub(crate) mtime_ns: i64,
    pub(crate) size: i64,
}

/// A file left out, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Skipped {
    pub(crate) path: String,
    pub(crate) reason: String,
}

/// A problem in a parsed file (malformed Norg).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FileProblem {
    pub(crate) path: String,
    pub(crate) line: u32,
    pub(crate) message: String,
}

/// What one pass over a workspace did.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Summary {
    pub(crate) workspace: String,
    /// Files in the index after the pass.
    pub(crate) files: usize,
    pub(crate) parsed: usize,
    pub(crate) unchanged: usize,
    pub(crate) removed: usize,
    pub(crate) skipped: Vec<Skipped>,
    pub(crate) problems: Vec<FileProblem>,
    pub(crate) elapsed_ms: u64,
    /// Paths parsed (created or modified) and removed, for change notices.
    #[serde(skip)]
    pub(crate) changed: Vec<(String, &'static str)>,
}

/// Progress of a pass, every [`PROGRESS_EVERY`] files.
#[derive(Debug, Serialize)]
pub(crate) struct Progress {
    pub(crate) workspace: String,
    pub(crate) parsed: usize,
    pub(crate) total: usize,
}

/// Limits of a pass.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Larger files are skipped, unread.
    pub(crate) max_file_bytes: u64,
    pub(crate) threads: usize,
}

/// A file read and parsed, ready to write.
struct Parsed {
    found: Found,
    title: String,
    text: String,
    doc: Doc,
    /// Per link: (target workspace, target path, whether an external file exists).
    targets: Vec<(Option<String>, Option<String>, Option<bool>)>,
}

/// Every `.norg` file under the workspace root, following symlinks once:
/// a directory reached twice (a symlink loop) is skipped with a reason.
/// Hidden entries (`.git`) are not notes and are passed over.
pub(crate) fn walk(ws: &Workspace, limits: Limits) -> Result<(Vec<Found>, Vec<Skipped>), String> {
    if let Some(error) = &ws.error {
        return Err(format!("workspace {}: {error}", ws.name));
    }
    let meta = std::fs::metadata(&ws.root)
        .map_err(|e| format!("workspace {}: {} cannot be read ({e})", ws.name, ws.root.display()))?;
    let mut seen: HashMap<(u64, u64), String> = HashMap::new();
    seen.insert((meta.dev(), meta.ino()), String::new());
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    let mut stack = vec![(ws.root.clone(), String::new())];
    while let Some((dir, rel_dir)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                skipped.push(Skipped {
                    path: rel_dir.clone(),
                    reason: format!("directory cannot be read ({e})"),
                });
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                let path = format!("{rel_dir}{}", name.to_string_lossy());
                skipped.push(Skipped { path, reason: "the name is not UTF-8".into() });
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let rel = if rel_dir.is_empty() { name.to_owned() } else { format!("{rel_dir}/{name}") };
            let abs = entry.path();
            let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
            let meta = match std::fs::metadata(&abs) {
                Ok(meta) => meta,
                Err(e) if e.raw_os_error() == Some(40) => {
                    skipped.push(Skipped { path: rel, reason: "symlink loop (ELOOP)".into() });
                    continue;
                }
                Err(e) if is_link && e.kind() == std::io::ErrorKind::NotFound => {
                    if rel.ends_with(".norg") {
                        skipped.push(Skipped { path: rel, reason: "broken symlink".into() });
                    }
                    continue;
                }
                Err(e) => {
                    skipped.push(Skipped { path: rel, reason: format!("cannot be read ({e})") });
                    continue;
                }
            };
            if meta.is_dir() {
                match seen.get(&(meta.dev(), meta.ino())) {
                    Some(first) => {
                        let first = if first.is_empty() { "the workspace root" } else { first };
                        skipped.push(Skipped {
                            path: rel,
                            reason: format!("symlink loop: the same directory as {first}"),
                        });
                    }
                    None => {
                        seen.insert((meta.dev(), meta.ino()), rel.clone());
                        stack.push((abs, rel));
                    }
                }
                continue;
            }
            if !meta.is_file() || !name.ends_with(".norg") {
                continue;
            }
            if meta.len() > limits.max_file_bytes {
                let reason = format!(
                    "{} bytes is over the limit of {} bytes (max_file_bytes): not read",
                    meta.len(),
                    limits.max_file_bytes
                );
                skipped.push(Skipped { path: rel, reason });
                continue;
            }
            found.push(Found { abs, rel, mtime_ns: mtime_ns(&meta), size: meta.len() as i64 });
        }
    }
    found.sort_by(|a, b| a.rel.cmp(&b.rel));
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((found, skipped))
}

pub(crate) fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec())
}

/// An incremental pass over `ws`: parse what changed (on `limits.threads`
/// threads), remove what is gone, all in one transaction.
pub(crate) fn index_workspace(
    conn: &mut Connection,
    ws: &Workspace,
    all: &[Workspace],
    limits: Limits,
    progress: &mut dyn FnMut(Progress),
) -> Result<Summary, String> {
    let started = Instant::now();
    let (found, skipped) = walk(ws, limits)?;
    let known = known_files(conn, &ws.name).map_err(db_error)?;
    let mut summary = Summary { workspace: ws.name.clone(), skipped, ..Summary::default() };
    let on_disk: HashSet<&str> = found.iter().map(|f| f.rel.as_str()).collect();
    let todo: Vec<Found> = found
        .iter()
        .filter(|f| known.get(&f.rel).is_none_or(|&(_, mtime, size)| (mtime, size) != (f.mtime_ns, f.size)))
        .cloned()
        .collect();
    summary.unchanged = found.len() - todo.len();
    let gone: Vec<&String> = known.keys().filter(|rel| !on_disk.contains(rel.as_str())).collect();

    let tx = conn.transaction().map_err(db_error)?;
    for rel in &gone {
        delete_file(&tx, &ws.name, rel).map_err(db_error)?;
        summary.changed.push(((*rel).clone(), "deleted"));
    }
    summary.removed = gone.len();

    let next = AtomicUsize::new(0);
    let threads = limits.threads.clamp(1, 16).min(todo.len().max(1));
    let (send, receive) = std::sync::mpsc::sync_channel::<Result<Parsed, Skipped>>(256);
    std::thread::scope(|scope| -> Result<(), String> {
        for _ in 0..threads {
            let send = send.clone();
            let (todo, next) = (&todo, &next);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(found) = todo.get(i) else { break };
                    if send.send(parse_file(found.clone(), ws, all)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(send);
        let mut done = 0;
        for result in receive {
            done += 1;
            match result {
                Ok(parsed) => {
                    let path = parsed.found.rel.clone();
                    for p in &parsed.doc.problems {
                        summary.problems.push(FileProblem {
                            path: path.clone(),
                            line: p.line,
                            message: p.message.clone(),
                        });
                    }
                    let kind = if known.contains_key(&path) { "modified" } else { "created" };
                    write_file(&tx, &ws.name, &parsed).map_err(db_error)?;
                    summary.changed.push((path, kind));
                    summary.parsed += 1;
                }
                Err(skip) => {
                    if known.contains_key(&skip.path) {
                        delete_file(&tx, &ws.name, &skip.path).map_err(db_error)?;
                        summary.removed += 1;
                        summary.changed.push((skip.path.clone(), "deleted"));
                    }
                    summary.skipped.push(skip);
                }
            }
            if done % PROGRESS_EVERY == 0 {
                progress(Progress { workspace: ws.name.clone(), parsed: done, total: todo.len() });
            }
        }
        Ok(())
    })?;
    tx.execute(
        "INSERT INTO workspaces (name, root) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET root = ?2",
        params![ws.name, ws.root.to_string_lossy()],
    )
    .map_err(db_error)?;
    tx.commit().map_err(db_error)?;
    summary.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    summary.problems.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
    summary.files = count_files(conn, &ws.name).map_err(db_error)?;
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}

/// Re-indexes one file after a change on disk: `Some(kind)` ("created",
/// "modified" or "deleted") when the index changed.
pub(crate) fn reindex_one(
    conn: &mut Connection,
    ws: &Workspace,
    all: &[Workspace],
    rel: &str,
    limits: Limits,
) -> Result<Option<&'static str>, String> {
    let abs = ws.root.join(rel);
    let known: Option<(i64, i64)> = conn
        .query_row(
            "SELECT mtime_ns, size FROM files WHERE workspace = ?1 AND path = ?2",
            params![ws.name, rel],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db_error)?;
    let meta = std::fs::metadata(&abs).ok().filter(|m| m.is_file() && m.len() <= limits.max_file_bytes);
    let tx = conn.transaction().map_err(db_error)?;
    let kind = match meta {
        Some(meta) => {
            let found =
                Found { abs, rel: rel.to_owned(), mtime_ns: mtime_ns(&meta), size: meta.len() as i64 };
            if known == Some((found.mtime_ns, found.size)) {
                return Ok(None);
            }
            match parse_file(found, ws, all) {
                Ok(parsed) => {
                    write_file(&tx, &ws.name, &parsed).map_err(db_error)?;
                    Some(if known.is_some() { "modified" } else { "created" })
                }
                Err(skip) => {
                    eprintln!("notes: {}/{}: skipped: {}", ws.name, skip.path, skip.reason);
                    known
                        .map(|_| delete_file(&tx, &ws.name, rel))
                        .transpose()
                        .map_err(db_error)?
                        .map(|()| "deleted")
                }
            }
        }
        None if known.is_some() => {
            delete_file(&tx, &ws.name, rel).map_err(db_error)?;
            Some("deleted")
        }
        None => None,
    };
    tx.commit().map_err(db_error)?;
    Ok(kind)
}

/// Reads and parses one file; a file that cannot be read, or is not
/// UTF-8, is skipped with the reason.
fn parse_file(found: Found, ws: &Workspace, all: &[Workspace]) -> Result<Parsed, Skipped> {
    let skip = |reason: String| Skipped { path: found.rel.clone(), reason };
    let bytes = match std::fs::read(&found.abs) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(skip("deleted while indexing".into()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(skip("unreadable: permission denied".into()));
        }
        Err(e) => return Err(skip(format!("cannot be read ({e})"))),
    };
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            return Err(skip(format!("not UTF-8 (invalid byte at offset {at})")));
        }
    };
    let doc = norg::parse(&text);
    let title = doc
        .meta_value("title")
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .or_else(|| doc.headings.first().map(|h| h.text.clone()))
        .unwrap_or_else(|| {
            found.rel.trim_end_matches(".norg").rsplit('/').next().unwrap_or_default().to_owned()
        });
    let targets = doc
        .links
        .iter()
        .map(|link| match link.kind {
            LinkKind::File => {
                let (target_ws, path) =
                    resolve_target(link.file.as_deref().unwrap_or(""), ws, &found.rel, all, true);
                let exists = target_ws.is_none().then(|| path.is_file());
                (target_ws, Some(path.to_string_lossy().into_owned()), exists)
            }
            LinkKind::Heading | LinkKind::Anchor => (Some(ws.name.clone()), Some(found.rel.clone()), None),
            LinkKind::External => {
                let (target_ws, path) =
                    resolve_target(link.file.as_deref().unwrap_or(""), ws, &found.rel, all, false);
                let abs = match &target_ws {
                    Some(name) => {
                        all.iter().find(|w| &w.name == name).map(|w| w.root.join(&path)).unwrap_or_default()
                    }
                    None => path.clone(),
                };
                // A stat, never a read: whether the file is there.
                (target_ws, Some(path.to_string_lossy().into_owned()), Some(abs.exists()))
            }
            _ => (None, None, None),
        })
        .collect();
    // The full text leaves the meta block out (its words are in `meta`),
    // keeping its lines, so that line numbers found in it stay true.
    let text = match doc.meta_lines {
        Some((first, last)) => text
            .lines()
            .enumerate()
            .map(|(i, line)| if (first..=last).contains(&i) { "" } else { line })
            .collect::<Vec<_>>()
            .join("\n"),
        None => text,
    };
    Ok(Parsed { found, title, text, doc, targets })
}

fn known_files(conn: &Connection, ws: &str) -> rusqlite::Result<HashMap<String, (i64, i64, i64)>> {
    let mut stmt = conn.prepare_cached("SELECT path, id, mtime_ns, size FROM files WHERE workspace = ?1")?;
    let rows = stmt.query_map([ws], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))?;
    rows.collect()
}

fn count_files(conn: &Connection, ws: &str) -> rusqlite::Result<usize> {
    conn.query_row("SELECT count(*) FROM files WHERE workspace = ?1", [ws], |r| r.get::<_, i64>(0))
        .map(|n| n as usize)
}

/// Removes a file and all it said from the index.
pub(crate) fn delete_file(tx: &Transaction<'_>, ws: &str, rel: &str) -> rusqlite::Result<()> {
    let id: Option<i64> = tx
        .prepare_cached("SELECT id FROM files WHERE workspace = ?1 AND path = ?2")?
        .query_row(params![ws, rel], |r| r.get(0))
        .optional()?;
    if let Some(id) = id {
        tx.prepare_cached("DELETE FROM fts WHERE rowid = ?1")?.execute([id])?;
        // The other tables follow by ON DELETE CASCADE.
        tx.prepare_cached("DELETE FROM files WHERE id = ?1")?.execute([id])?;
    }
    Ok(())
}

/// Removes every file of a workspace whose root changed.
pub(crate) fn forget_workspace(conn: &mut Connection, ws: &Workspace) -> Result<(), String> {
    let stored: Option<String> = conn
        .query_row("SELECT root FROM workspaces WHERE name = ?1", [&ws.name], |r| r.get(0))
        .optional()
        .map_err(db_error)?;
    if stored.is_some_and(|root| Path::new(&root) != ws.root) {
        eprintln!("notes: workspace {} moved to {}: its index is rebuilt", ws.name, ws.root.display());
        let tx = conn.transaction().map_err(db_error)?;
        tx.execute("DELETE FROM fts WHERE rowid IN (SELECT id FROM files WHERE workspace = ?1)", [&ws.name])
            .map_err(db_error)?;
        tx.execute("DELETE FROM files WHERE workspace = ?1", [&ws.name]).map_err(db_error)?;
        tx.execute("DELETE FROM workspaces WHERE name = ?1", [&ws.name]).map_err(db_error)?;
        tx.commit().map_err(db_error)?;
    }
    Ok(())
}

fn write_file(tx: &Transaction<'_>, ws: &str, p: &Parsed) -> rusqlite::Result<()> {
    delete_file(tx, ws, &p.found.rel)?;
    tx.prepare_cached(
        "INSERT INTO files (workspace, path, mtime_ns, size, title) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![ws, p.found.rel, p.found.mtime_ns, p.found.size, p.title])?;
    let id = tx.last_insert_rowid();
    tx.prepare_cached("INSERT INTO fts (rowid, title, body) VALUES (?1, ?2, ?3)")?
        .execute(params![id, p.title, p.text])?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO headings (file_id, line, level, text, norm) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for h in &p.doc.headings {
        stmt.execute(params![id, h.line, h.level, h.text, norg::normalize(&h.text)])?;
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO links (file_id, line, kind, raw, description, target_workspace, target_path, target_level, \
         target_heading, target_norm, external_exists) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for (l, (target_ws, target_path, exists)) in p.doc.links.iter().zip(&p.targets) {
        stmt.execute(params![
            id,
            l.line,
            l.kind.name(),
            l.raw,
            l.description,
            target_ws,
            target_path,
            l.heading_level,
            l.heading,
            l.heading.as_deref().map(norg::normalize),
            exists
        ])?;
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO tasks (file_id, line, state, text, heading_path) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for t in &p.doc.tasks {
        stmt.execute(params![id, t.line, t.state.name(), t.text, t.heading_path.join(" > ")])?;
    }
    let mut stmt = tx.prepare_cached("INSERT INTO meta (file_id, key, value) VALUES (?1, ?2, ?3)")?;
    for (k, v) in &p.doc.meta {
        stmt.execute(params![id, k, v])?;
    }
    let mut stmt = tx
        .prepare_cached("INSERT INTO tags (file_id, line, name, args, source) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for (_, v) in p.doc.meta.iter().filter(|(k, _)| k == "categories") {
        stmt.execute(params![id, None::<u32>, v, "", "category"])?;
    }
    for t in &p.doc.tags {
        stmt.execute(params![id, t.line, t.name, t.args, "carryover"])?;
    }
    let mut stmt = tx.prepare_cached("INSERT INTO problems (file_id, line, message) VALUES (?1, ?2, ?3)")?;
    for pr in &p.doc.problems {
        stmt.execute(params![id, pr.line, pr.message])?;
    }
    Ok(())
}

pub(crate) fn db_error(e: rusqlite::Error) -> String {
    format!("index database: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_file_bytes: 1024, threads: 2 };

    fn setup() -> (tempfile::TempDir, Workspace, Connection) {
        let tmp = tempfile::tempdir().unwrap();
        let notes = tmp.path().join("notes");
        std::fs::create_dir(&notes).unwrap();
        for i in 0..5 {
            std::fs::write(
                notes.join(format!("n{i}.norg")),
                format!("* Note {i}\n  {{:n{}:}}\n", (i + 1) % 5),
            )
            .unwrap();
        }
        let ws = Workspace::new("w", notes.to_str().unwrap()).unwrap();
        let conn = crate::db::open(&tmp.path().join("index.sqlite"), &mut Vec::new()).unwrap();
        (tmp, ws, conn)
    }

    fn pass(conn: &mut Connection, ws: &Workspace) -> Summary {
        index_workspace(conn, ws, std::slice::from_ref(ws), LIMITS, &mut |_| {}).unwrap()
    }

    #[test]
    fn passes_are_incremental_by_mtime_and_size() {
        let (_tmp, ws, mut conn) = setup();
        let first = pass(&mut conn, &ws);
        assert_eq!((first.files, first.parsed, first.unchanged, first.removed), (5, 5, 0, 0));
        let again = pass(&mut conn, &ws);
        assert_eq!((again.files, again.parsed, again.unchanged, again.removed), (5, 0, 5, 0));
        std::fs::write(ws.root.join("n1.norg"), "* Note one, longer now\n").unwrap();
        std::fs::remove_file(ws.root.join("n2.norg")).unwrap();
        let changed = pass(&mut conn, &ws);
        assert_eq!((changed.files, changed.parsed, changed.unchanged, changed.removed), (4, 1, 3, 1));
        assert_eq!(changed.changed, [("n2.norg".to_owned(), "deleted"), ("n1.norg".to_owned(), "modified")]);
        let headings: i64 = conn.query_row("SELECT count(*) FROM headings", [], |r| r.get(0)).unwrap();
        let fts: i64 = conn.query_row("SELECT count(*) FROM fts", [], |r| r.get(0)).unwrap();
        assert_eq!((headings, fts), (4, 4), "a removed file's rows go with it");
    }

    #[test]
    fn a_file_deleted_while_indexing_is_skipped_with_the_reason() {
        let (_tmp, ws, _conn) = setup();
        let found = Found { abs: ws.root.join("gone.norg"), rel: "gone.norg".into(), mtime_ns: 0, size: 1 };
        let skip = parse_file(found, &ws, std::slice::from_ref(&ws)).err().unwrap();
        assert_eq!(skip, Skipped { path: "gone.norg".into(), reason: "deleted while indexing".into() });
    }

    #[test]
    fn one_file_re_indexed_and_removed() {
        let (_tmp, ws, mut conn) = setup();
        pass(&mut conn, &ws);
        let all = std::slice::from_ref(&ws);
        assert_eq!(reindex_one(&mut conn, &ws, all, "n0.norg", LIMITS).unwrap(), None, "unchanged");
        std::fs::write(ws.root.join("new.norg"), "* New\n").unwrap();
        assert_eq!(reindex_one(&mut conn, &ws, all, "new.norg", LIMITS).unwrap(), Some("created"));
        std::fs::write(ws.root.join("new.norg"), "* Newer\n").unwrap();
        assert_eq!(reindex_one(&mut conn, &ws, all, "new.norg", LIMITS).unwrap(), Some("modified"));
        std::fs::remove_file(ws.root.join("new.norg")).unwrap();
        assert_eq!(reindex_one(&mut conn, &ws, all, "new.norg", LIMITS).unwrap(), Some("deleted"));
        assert_eq!(reindex_one(&mut conn, &ws, all, "new.norg", LIMITS).unwrap(), None);
    }

    #[test]
    fn progress_every_few_hundred_files() {
        let (_tmp, ws, mut conn) = setup();
        for i in 5..450 {
            std::fs::write(ws.root.join(format!("n{i}.norg")), format!("* Note {i}\n")).unwrap();
        }
        let mut seen = Vec::new();
        let summary = index_workspace(&mut conn, &ws, std::slice::from_ref(&ws), LIMITS, &mut |p| {
            seen.push((p.parsed, p.total));
        })
        .unwrap();
        assert_eq!(summary.parsed, 450);
        assert_eq!(seen, [(200, 450), (400, 450)]);
    }

    #[test]
    fn a_file_over_the_limit_is_skipped_unread() {
        let (_tmp, ws, mut conn) = setup();
        std::fs::write(ws.root.join("big.norg"), "x".repeat(2000)).unwrap();
        let summary = pass(&mut conn, &ws);
        assert_eq!(
            summary.skipped,
            [Skipped {
                path: "big.norg".into(),
                reason: "2000 bytes is over the limit of 1024 bytes (max_file_bytes): not read".into()
            }]
        );
    }
}
