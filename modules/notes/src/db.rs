//! The index file: where it lives, its schema, and rebuilding it.
//!
//! The index is a cache of what the notes say. It lives under the user's
//! cache directory, never in a notes directory, and is thrown away and
//! rebuilt when it is missing, unreadable, or of another schema version.
//! The schema is a contract (`query {sql}` reads it): ARCHITECTURE.md
//! documents it, and a new column is a new `SCHEMA_VERSION`.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

/// Bumped whenever the schema or what the parser stores changes: an index
/// of another version is rebuilt.
pub(crate) const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = r#"
CREATE TABLE workspaces (
    name TEXT PRIMARY KEY,
    root TEXT NOT NULL
);
CREATE TABLE files (
    id INTEGER PRIMARY KEY,
    workspace TEXT NOT NULL,
    path TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    title TEXT NOT NULL,
    UNIQUE (workspace, path)
);
-- A path named without its workspace (most calls): the unique index
-- above serves only lookups that name the workspace.
CREATE INDEX files_by_path ON files(path);
CREATE TABLE headings (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    line INTEGER NOT NULL,
    level INTEGER NOT NULL,
    text TEXT NOT NULL,
    norm TEXT NOT NULL
);
CREATE INDEX headings_by_file ON headings(file_id);
CREATE INDEX headings_by_norm ON headings(norm);
CREATE TABLE links (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    line INTEGER NOT NULL,
    kind TEXT NOT NULL,
    raw TEXT NOT NULL,
    description TEXT,
    target_workspace TEXT,
    target_path TEXT,
    target_level INTEGER,
    target_heading TEXT,
    target_norm TEXT,
    external_exists INTEGER
);
CREATE INDEX links_by_file ON links(file_id);
CREATE INDEX links_by_target ON links(target_workspace, target_path);
CREATE INDEX links_by_norm ON links(target_norm);
CREATE TABLE tasks (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    line INTEGER NOT NULL,
    state TEXT NOT NULL,
    text TEXT NOT NULL,
    heading_path TEXT NOT NULL
);
CREATE INDEX tasks_by_file ON tasks(file_id);
CREATE INDEX tasks_by_state ON tasks(state);
CREATE TABLE meta (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX meta_by_file ON meta(file_id);
CREATE TABLE tags (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    line INTEGER,
    name TEXT NOT NULL,
    args TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE INDEX tags_by_file ON tags(file_id);
CREATE TABLE problems (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    line INTEGER NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX problems_by_file ON problems(file_id);
CREATE VIRTUAL TABLE fts USING fts5(title, body, tokenize = 'unicode61 remove_diacritics 2');

-- Whether each link's target exists, decided when asked: a file indexed
-- later resolves the links written to it earlier.
CREATE VIEW link_status AS
SELECT l.rowid AS link_id, l.*, f.workspace AS workspace, f.path AS path,
  CASE
    WHEN l.kind = 'invalid' THEN 0
    WHEN l.kind IN ('url', 'other') THEN NULL
    WHEN l.kind = 'external' THEN l.external_exists
    WHEN l.target_path IS NULL THEN 0
    WHEN l.target_workspace IS NULL THEN coalesce(l.external_exists, 0)
    WHEN NOT EXISTS (SELECT 1 FROM files t WHERE t.workspace = l.target_workspace AND t.path = l.target_path) THEN 0
    WHEN l.target_norm IS NULL THEN 1
    ELSE EXISTS (
      SELECT 1 FROM headings h JOIN files t ON t.id = h.file_id
      WHERE t.workspace = l.target_workspace AND t.path = l.target_path AND h.norm = l.target_norm
        AND (l.target_level IS NULL OR h.level = l.target_level))
  END AS resolved
FROM links l JOIN files f ON f.id = l.file_id;
"#;

/// Where the index lives: `$XDG_CACHE_HOME/polis/notes/index.sqlite`, or
/// under `~/.cache` without it.
pub(crate) fn index_path() -> Result<PathBuf, String> {
    let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".cache"),
            None => return Err("neither XDG_CACHE_HOME nor HOME is set: no place for the index".into()),
        },
    };
    Ok(cache.join("polis").join("notes").join("index.sqlite"))
}

/// Opens the index at `path` for writing, creating or rebuilding it. Each
/// reason it was rebuilt is pushed onto `warnings`.
pub(crate) fn open(path: &Path, warnings: &mut Vec<String>) -> Result<Connection, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    match try_open(path) {
        Ok(Some(conn)) => return Ok(conn),
        Ok(None) => {}
        Err(reason) => {
            let warning = format!("index {} was unreadable ({reason}): rebuilt", path.display());
            eprintln!("notes: warning: {warning}");
            warnings.push(warning);
        }
    }
    remove(path)?;
    let conn = connect(path).map_err(|e| format!("cannot create the index {}: {e}", path.display()))?;
    conn.execute_batch(SCHEMA).map_err(|e| format!("cannot create the index schema: {e}"))?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(|e| e.to_string())?;
    Ok(conn)
}

/// The existing index if it is sound and of this version; `Ok(None)` when
/// it is missing, new or of another version; `Err` when it is corrupt.
fn try_open(path: &Path) -> Result<Option<Connection>, String> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = connect(path).map_err(|e| e.to_string())?;
    let version: i64 =
        conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| e.to_string())?;
    if version != SCHEMA_VERSION {
        eprintln!(
            "notes: the index has schema version {version}, this module {SCHEMA_VERSION}: rebuilding it"
        );
        return Ok(None);
    }
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(|e| e.to_string())?;
    if check != "ok" {
        return Err(check);
    }
    Ok(Some(conn))
}

/// The index file and SQLite's files beside it.
fn remove(path: &Path) -> Result<(), String> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(format!("cannot remove the old index {}: {e}", PathBuf::from(name).display()));
            }
        }
    }
    Ok(())
}

/// A read-write connection: WAL, so that readers never wait for the indexer.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.pragma_update(None, "synchronous", "normal")?;
    // A cold index is one transaction of the whole workspace: without a
    // limit its WAL (as large as the index) stays on disk after the
    // checkpoint; with one, the next write shrinks it.
    conn.pragma_update(None, "journal_size_limit", 4 << 20)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

/// A read-only connection to the index, for queries (`query {sql}` among them).
pub(crate) fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // 16 MiB of pages (SQLite's default is 2 MiB): a search reads the
    // doclists of its words and a docsize row per match, and with the
    // default cache most of those reads were `pread`s of pages read before.
    conn.pragma_update(None, "cache_size", -16384)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_index_is_rebuilt_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        std::fs::write(&path, b"this is not a database, just some bytes long enough to matter....").unwrap();
        let mut warnings = Vec::new();
        let conn = open(&path, &mut warnings).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("rebuilt"), "{warnings:?}");
        let n: i64 = conn.query_row("SELECT count(*) FROM files", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn an_older_schema_is_rebuilt_quietly_and_a_sound_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let mut warnings = Vec::new();
        let conn = open(&path, &mut warnings).unwrap();
        conn.execute("INSERT INTO workspaces VALUES ('w', '/w')", []).unwrap();
        drop(conn);
        let conn = open(&path, &mut warnings).unwrap();
        let n: i64 = conn.query_row("SELECT count(*) FROM workspaces", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1, "a sound index is kept");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION - 1).unwrap();
        drop(conn);
        let conn = open(&path, &mut warnings).unwrap();
        let n: i64 = conn.query_row("SELECT count(*) FROM workspaces", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0, "an older one is rebuilt");
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn the_bundled_sqlite_has_fts5() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE VIRTUAL TABLE t USING fts5(x); INSERT INTO t VALUES ('hello world');")
            .unwrap();
        let hit: String = conn
            .query_row("SELECT snippet(t, 0, '[', ']', '…', 5) FROM t WHERE t MATCH 'world'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(hit, "hello [world]");
    }
}
