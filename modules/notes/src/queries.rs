//! The read methods: each a query on the index, answered as JSON.

use polis_sdk::ModuleError;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Map, Value, json};

use crate::{
    norg,
    rank::{Ranked, Ranker},
    snippet::{self, Term},
    workspace::Workspace,
};

/// A file of the index, as a method names it.
#[derive(Debug)]
pub(crate) struct FileRef {
    pub(crate) id: i64,
    pub(crate) workspace: String,
    pub(crate) path: String,
}

fn db(e: rusqlite::Error) -> ModuleError {
    ModuleError::internal(format!("index database: {e}"))
}

/// The indexed file `path` names: absolute (inside a workspace root) or
/// relative to `workspace`'s root, or to the one workspace that has it;
/// `.norg` may be left out.
pub(crate) fn find_file(
    conn: &Connection,
    workspaces: &[Workspace],
    path: &str,
    workspace: Option<&str>,
) -> Result<FileRef, ModuleError> {
    let mut path = path.to_owned();
    if !path.ends_with(".norg") {
        path.push_str(".norg");
    }
    let (workspace, rel) = if path.starts_with('/') {
        let abs = std::fs::canonicalize(&path).unwrap_or_else(|_| crate::workspace::lexical(path.as_ref()));
        let ws = workspaces
            .iter()
            .filter(|w| abs.starts_with(&w.root) && workspace.is_none_or(|n| n == w.name))
            .max_by_key(|w| w.root.as_os_str().len())
            .ok_or_else(|| ModuleError::not_found(format!("{path} is in no workspace (see `workspaces`)")))?;
        (Some(ws.name.clone()), ws.relative(&abs).unwrap_or_default())
    } else {
        (workspace.map(str::to_owned), path.trim_start_matches("./").to_owned())
    };
    let mut stmt = conn
        .prepare_cached("SELECT id, workspace FROM files WHERE path = ?1 AND (?2 IS NULL OR workspace = ?2)")
        .map_err(db)?;
    let hits: Vec<(i64, String)> = stmt
        .query_map(params![rel, workspace], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db)?
        .collect::<Result<_, _>>()
        .map_err(db)?;
    match hits.as_slice() {
        [(id, ws)] => Ok(FileRef { id: *id, workspace: ws.clone(), path: rel }),
        [] => Err(ModuleError::not_found(match &workspace {
            Some(ws) => format!("{rel} is not indexed in workspace {ws}"),
            None => format!("{rel} is not indexed in any workspace"),
        })),
        many => {
            let names: Vec<_> = many.iter().map(|(_, ws)| ws.as_str()).collect();
            Err(ModuleError::invalid_argument(format!(
                "{rel} is in several workspaces ({}): say which with `workspace`",
                names.join(", ")
            )))
        }
    }
}

/// The user's words as FTS5 phrases: each word a quoted term (all must
/// match), a trailing `*` a prefix.
pub(crate) fn fts_phrases(q: &str) -> Option<(Vec<String>, Vec<Term>)> {
    let mut phrases = Vec::new();
    let mut terms = Vec::new();
    for word in q.split_whitespace() {
        let (word, prefix) = match word.strip_suffix('*') {
            Some(w) => (w, true),
            None => (word, false),
        };
        if word.is_empty() {
            continue;
        }
        terms.push(Term { word: word.to_lowercase(), prefix });
        phrases.push(format!("\"{}\"{}", word.replace('"', "\"\""), if prefix { "*" } else { "" }));
    }
    (!phrases.is_empty()).then_some((phrases, terms))
}

/// `search {q, workspace?, limit?}`: files matching every word, best first
/// (bm25, the title weighing more, ties by path), with the first line
/// holding a word and a highlighted snippet of it.
///
/// The ranking is `rank.rs`'s (FTS5's bm25 from lengths held in memory);
/// only the hits kept are read, in the same read transaction, so that
/// ranks and hits are of one snapshot of the index. The snippet is cut
/// from the hit's line (`snippet.rs`); FTS5's own `snippet()`, which
/// tokenizes the whole note, is asked only for a hit that the line search
/// cannot see.
pub(crate) fn search(
    conn: &Connection,
    ranker: &mut Ranker,
    q: &str,
    workspace: Option<&str>,
    limit: u32,
) -> Result<Vec<Value>, ModuleError> {
    let (phrases, terms) = fts_phrases(q)
        .ok_or_else(|| ModuleError::invalid_argument("search: `q` has no words to look for"))?;
    let snapshot = conn.unchecked_transaction().map_err(db)?;
    let ranked = ranker.best(&snapshot, &phrases, workspace, limit as usize).map_err(db)?;
    let mut stmt = snapshot
        .prepare_cached(
            "SELECT f.workspace, f.path, f.title, fts.body FROM files f, fts \
             WHERE f.id = ?1 AND fts.rowid = ?1",
        )
        .map_err(db)?;
    let mut hits: Vec<(f64, String, Value)> = Vec::with_capacity(ranked.len());
    for Ranked { rowid, rank } in ranked {
        let mut rows = stmt.query([rowid]).map_err(db)?;
        let Some(r) = rows.next().map_err(db)? else { continue };
        let body = r.get_ref(3).map_err(db)?.as_str().map_err(|e| db(e.into()))?;
        let (line, snippet) = match snippet::first_hit(body, &terms) {
            Some(found) => found,
            None => (1, fts_snippet(&snapshot, &phrases.join(" "), rowid)?),
        };
        let path: String = r.get(1).map_err(db)?;
        let hit = json!({
            "workspace": r.get::<_, String>(0).map_err(db)?,
            "path": path,
            "title": r.get::<_, String>(2).map_err(db)?,
            "line": line,
            "snippet": snippet,
            "rank": rank,
        });
        hits.push((rank, path, hit));
    }
    drop(stmt);
    snapshot.commit().map_err(db)?;
    hits.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    Ok(hits.into_iter().take(limit as usize).map(|(_, _, hit)| hit).collect())
}

/// FTS5's snippet of one matching note, for a hit [`snippet::first_hit`]
/// cannot place (diacritics folded, or a match in the title alone).
fn fts_snippet(conn: &Connection, query: &str, rowid: i64) -> Result<String, ModuleError> {
    let snippet: String = conn
        .prepare_cached(
            "SELECT snippet(fts, -1, '«', '»', '…', 12) FROM fts WHERE fts MATCH ?1 AND rowid = ?2",
        )
        .map_err(db)?
        .query_row(params![query, rowid], |r| r.get(0))
        .map_err(db)?;
    Ok(snippet.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// `outline {path}`: the headings, in order.
pub(crate) fn outline(conn: &Connection, file: &FileRef) -> Result<Vec<Value>, ModuleError> {
    rows(
        conn,
        "SELECT line, level, text FROM headings WHERE file_id = ?1 ORDER BY line",
        params![file.id],
        |r| {
            Ok(
                json!({ "line": r.get::<_, i64>(0)?, "level": r.get::<_, i64>(1)?, "text": r.get::<_, String>(2)? }),
            )
        },
    )
}

fn resolved(v: Option<i64>) -> Value {
    v.map_or(Value::Null, |v| Value::Bool(v != 0))
}

/// `links {path}`: the links a file writes, with where they point and
/// whether that exists (`null` for URLs and other unresolved kinds).
pub(crate) fn links(conn: &Connection, file: &FileRef) -> Result<Vec<Value>, ModuleError> {
    rows(
        conn,
        "SELECT line, kind, raw, description, target_workspace, target_path, target_heading, resolved \
         FROM link_status WHERE file_id = ?1 ORDER BY line, link_id",
        params![file.id],
        |r| {
            Ok(json!({
                "line": r.get::<_, i64>(0)?,
                "kind": r.get::<_, String>(1)?,
                "target": r.get::<_, String>(2)?,
                "description": r.get::<_, Option<String>>(3)?,
                "workspace": r.get::<_, Option<String>>(4)?,
                "path": r.get::<_, Option<String>>(5)?,
                "heading": r.get::<_, Option<String>>(6)?,
                "resolved": resolved(r.get(7)?),
            }))
        },
    )
}

/// `backlinks {path}`: the links of other files to this one; with
/// `heading`, the links to that heading (from anywhere, this file too);
/// `heading` alone: to a heading of that text in any file.
pub(crate) fn backlinks(
    conn: &Connection,
    file: Option<&FileRef>,
    heading: Option<&str>,
) -> Result<Vec<Value>, ModuleError> {
    let norm = heading.map(norg::normalize);
    let (ws, path) = match file {
        Some(f) => (Some(f.workspace.as_str()), Some(f.path.as_str())),
        None => (None, None),
    };
    // Two statements, so that each uses its index (an `?1 IS NULL OR …`
    // filter would scan every link).
    let sql = if file.is_some() {
        "SELECT workspace, path, line, kind, raw, description, target_heading FROM link_status \
         WHERE target_workspace = ?1 AND target_path = ?2 \
           AND (?3 IS NULL OR target_norm = ?3) \
           AND (?3 IS NOT NULL OR NOT (workspace = ?1 AND path = ?2)) \
           AND kind IN ('file', 'heading', 'anchor') \
         ORDER BY workspace, path, line, link_id"
    } else {
        "SELECT workspace, path, line, kind, raw, description, target_heading FROM link_status \
         WHERE target_norm = ?3 AND ?1 IS NULL AND ?2 IS NULL AND kind IN ('file', 'heading', 'anchor') \
         ORDER BY workspace, path, line, link_id"
    };
    rows(conn, sql, params![ws, path, norm], |r| {
        Ok(json!({
            "workspace": r.get::<_, String>(0)?,
            "path": r.get::<_, String>(1)?,
            "line": r.get::<_, i64>(2)?,
            "kind": r.get::<_, String>(3)?,
            "target": r.get::<_, String>(4)?,
            "description": r.get::<_, Option<String>>(5)?,
            "heading": r.get::<_, Option<String>>(6)?,
        }))
    })
}

/// `broken_links {workspace?}`: links whose target does not exist, with why.
pub(crate) fn broken_links(conn: &Connection, workspace: Option<&str>) -> Result<Vec<Value>, ModuleError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT s.workspace, s.path, s.line, s.kind, s.raw, s.target_workspace, s.target_path, s.target_level, \
               s.target_heading, EXISTS (SELECT 1 FROM files t WHERE t.workspace = s.target_workspace AND t.path = s.target_path) \
             FROM link_status s WHERE s.resolved = 0 AND (?1 IS NULL OR s.workspace = ?1) \
             ORDER BY s.workspace, s.path, s.line, s.link_id",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map(params![workspace], |r| {
            let kind: String = r.get(3)?;
            let target_ws: Option<String> = r.get(5)?;
            let target_path: Option<String> = r.get(6)?;
            let level: Option<i64> = r.get(7)?;
            let heading: Option<String> = r.get(8)?;
            let file_exists: bool = r.get(9)?;
            let shown = match (&target_ws, &target_path) {
                (Some(ws), Some(p)) => format!("{ws}:{p}"),
                (None, Some(p)) => p.clone(),
                _ => String::new(),
            };
            let reason = if kind == "invalid" {
                "the link has no target".to_owned()
            } else if target_ws.is_none() || kind == "external" {
                format!("no file at {shown}")
            } else if !file_exists {
                format!("no indexed file {shown}")
            } else {
                let level = level.map_or("any level".to_owned(), |l| format!("level {l}"));
                format!("no heading \"{}\" ({level}) in {shown}", heading.unwrap_or_default())
            };
            Ok(json!({
                "workspace": r.get::<_, String>(0)?,
                "path": r.get::<_, String>(1)?,
                "line": r.get::<_, i64>(2)?,
                "kind": kind,
                "target": r.get::<_, String>(4)?,
                "reason": reason,
            }))
        })
        .map_err(db)?;
    rows.collect::<Result<_, _>>().map_err(db)
}

/// `tasks {state?, workspace?, path?}`: tasks in file and line order.
pub(crate) fn tasks(
    conn: &Connection,
    state: Option<&str>,
    workspace: Option<&str>,
    file: Option<&FileRef>,
) -> Result<Vec<Value>, ModuleError> {
    if let Some(state) = state
        && !norg::State::ALL.iter().any(|s| s.name() == state)
    {
        let names: Vec<_> = norg::State::ALL.iter().map(|s| s.name()).collect();
        return Err(ModuleError::invalid_argument(format!(
            "unknown task state {state:?}: one of {}",
            names.join(", ")
        )));
    }
    rows(
        conn,
        "SELECT f.workspace, f.path, t.line, t.state, t.text, t.heading_path FROM tasks t JOIN files f ON f.id = t.file_id \
         WHERE (?1 IS NULL OR t.state = ?1) AND (?2 IS NULL OR f.workspace = ?2) AND (?3 IS NULL OR f.id = ?3) \
         ORDER BY f.workspace, f.path, t.line",
        params![state, workspace, file.map(|f| f.id)],
        |r| {
            let heading_path: String = r.get(5)?;
            let heading_path: Vec<&str> =
                if heading_path.is_empty() { Vec::new() } else { heading_path.split(" > ").collect() };
            Ok(json!({
                "workspace": r.get::<_, String>(0)?,
                "path": r.get::<_, String>(1)?,
                "line": r.get::<_, i64>(2)?,
                "state": r.get::<_, String>(3)?,
                "text": r.get::<_, String>(4)?,
                "heading_path": heading_path,
            }))
        },
    )
}

/// `files {workspace?}`: every indexed file.
pub(crate) fn files(conn: &Connection, workspace: Option<&str>) -> Result<Vec<Value>, ModuleError> {
    rows(
        conn,
        "SELECT workspace, path, title, size, mtime_ns FROM files WHERE (?1 IS NULL OR workspace = ?1) ORDER BY workspace, path",
        params![workspace],
        |r| {
            Ok(json!({
                "workspace": r.get::<_, String>(0)?,
                "path": r.get::<_, String>(1)?,
                "title": r.get::<_, String>(2)?,
                "size": r.get::<_, i64>(3)?,
                "mtime_ns": r.get::<_, i64>(4)?,
            }))
        },
    )
}

/// Meta keys that are always arrays, whatever the file wrote.
const ARRAYS: [&str; 2] = ["authors", "categories"];

/// `meta {path}`: the `@document.meta` entries (`authors` and `categories`
/// always arrays, any key written more than once too), the title the index
/// uses, the carryover tags and the file's problems.
pub(crate) fn meta(conn: &Connection, file: &FileRef) -> Result<Value, ModuleError> {
    let title: Option<String> = conn
        .query_row("SELECT title FROM files WHERE id = ?1", [file.id], |r| r.get(0))
        .optional()
        .map_err(db)?;
    let mut meta = Map::new();
    for key in ARRAYS {
        meta.insert(key.to_owned(), Value::Array(Vec::new()));
    }
    let entries =
        rows(conn, "SELECT key, value FROM meta WHERE file_id = ?1 ORDER BY rowid", params![file.id], |r| {
            Ok(json!([r.get::<_, String>(0)?, r.get::<_, String>(1)?]))
        })?;
    for entry in entries {
        let (key, value) = (entry[0].as_str().unwrap_or_default().to_owned(), entry[1].clone());
        match meta.get_mut(&key) {
            Some(Value::Array(items)) => items.push(value),
            Some(single) => *single = json!([single.take(), value]),
            None => {
                meta.insert(key, value);
            }
        }
    }
    let tags = rows(
        conn,
        "SELECT line, name, args FROM tags WHERE file_id = ?1 AND source = 'carryover' ORDER BY line",
        params![file.id],
        |r| {
            Ok(
                json!({ "line": r.get::<_, i64>(0)?, "name": r.get::<_, String>(1)?, "args": r.get::<_, String>(2)? }),
            )
        },
    )?;
    let problems = rows(
        conn,
        "SELECT line, message FROM problems WHERE file_id = ?1 ORDER BY line",
        params![file.id],
        |r| Ok(json!({ "line": r.get::<_, i64>(0)?, "message": r.get::<_, String>(1)? })),
    )?;
    Ok(json!({
        "workspace": file.workspace,
        "path": file.path,
        "title": title,
        "meta": meta,
        "tags": tags,
        "problems": problems,
    }))
}

fn rows<P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<Value>,
) -> Result<Vec<Value>, ModuleError> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let rows = stmt.query_map(params, map).map_err(db)?;
    rows.collect::<Result<_, _>>().map_err(db)
}
