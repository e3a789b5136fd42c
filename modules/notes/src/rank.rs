//! Ranking search hits: BM25 exactly as FTS5's `bm25(fts, 5.0, 1.0)`
//! computes it, from the same inputs, without the two costs that made a
//! third of a search's CPU (profiled on 10,000 notes, ~770 matches a word):
//! a b-tree lookup of each match's length in `fts_docsize`, and a second
//! walk of each word's doclist to count the notes holding it (its IDF).
//!
//! - `polis_freqs(fts)`, an FTS5 auxiliary function registered on the
//!   reader ([`register`]), returns for the current row the weighted count
//!   of each phrase (a title hit weighs [`WEIGHTS`]`[0]`, a body hit
//!   `[1]`): the one input that needs the row's position lists.
//! - The lengths (tokens per note) and each note's workspace are held in
//!   memory ([`Ranker`]), read from `fts_docsize` again only when the index
//!   changed (`PRAGMA data_version`).
//! - With one phrase, the rows matched are its document count; with more,
//!   each phrase is counted by a MATCH of its own.
//!
//! A query whose phrases FTS5 does not see one for one (a quoted word with
//! no token in it) is ranked by FTS5's own `bm25()`.

use std::{
    collections::HashMap,
    ffi::{c_int, c_void},
};

use rusqlite::{Connection, ffi, params, types::ToSqlOutput};

/// The weight of a hit in the title (column 0) and in the body (column 1),
/// as `bm25(fts, 5.0, 1.0)` had them.
pub(crate) const WEIGHTS: [f64; 2] = [5.0, 1.0];

/// BM25's constants, FTS5's.
const K1: f64 = 1.2;
const B: f64 = 0.75;

/// One note as the ranking needs it.
#[derive(Debug, Clone, Copy)]
struct Doc {
    /// Tokens in title and body.
    tokens: u32,
    /// Index into [`Ranker::workspaces`].
    workspace: u32,
}

/// The lengths and workspaces of the indexed notes, for one reader.
#[derive(Debug, Default)]
pub(crate) struct Ranker {
    /// `PRAGMA data_version` when `docs` was read; `None` before.
    version: Option<i64>,
    /// By rowid (`files.id`, from 1 up, so dense): a lookup per match is
    /// an index, not a hash.
    docs: Vec<Option<Doc>>,
    /// Rowids past [`MAX_DENSE`] (only SQL run by hand makes them).
    sparse: HashMap<i64, Doc>,
    /// The notes in `docs` and `sparse`.
    count: usize,
    workspaces: Vec<String>,
    total_tokens: u64,
}

/// A matching note and its rank (lower is better, as FTS5's `rank`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ranked {
    pub(crate) rowid: i64,
    pub(crate) rank: f64,
}

impl Ranker {
    /// The notes matching `phrases` (each an FTS5 phrase; all must match),
    /// in `workspace` when given, best first: the first `limit`, and past
    /// them those tied with the last, so that the caller breaks ties.
    ///
    /// `conn` should be in a read transaction (as `queries::search` has
    /// it), so that the lengths are read in the snapshot of the match.
    pub(crate) fn best(
        &mut self,
        conn: &Connection,
        phrases: &[String],
        workspace: Option<&str>,
        limit: usize,
    ) -> rusqlite::Result<Vec<Ranked>> {
        let query = phrases.join(" ");
        let mut freqs: Vec<f64> = Vec::new();
        let mut rowids: Vec<i64> = Vec::new();
        let mut width = None;
        {
            let mut stmt =
                conn.prepare_cached("SELECT rowid, polis_freqs(fts) FROM fts WHERE fts MATCH ?1")?;
            let mut rows = stmt.query([&query])?;
            while let Some(row) = rows.next()? {
                rowids.push(row.get(0)?);
                let blob = row.get_ref(1)?.as_blob()?;
                width.get_or_insert(blob.len() / 8);
                freqs
                    .extend(blob.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))));
            }
        }
        // Read after the query, so in its snapshot: the lengths are those
        // of the rows just matched.
        self.refresh(conn)?;
        let mut ranked = match width {
            None => Vec::new(),
            Some(width) if width == phrases.len() => {
                let counts = if width == 1 {
                    vec![rowids.len() as u64]
                } else {
                    phrases.iter().map(|p| count(conn, p)).collect::<rusqlite::Result<_>>()?
                };
                self.score(&rowids, &freqs, &counts)
            }
            Some(_) => bm25(conn, &query)?,
        };
        if let Some(name) = workspace {
            let index = self.workspaces.iter().position(|w| w == name).map(|i| i as u32);
            ranked.retain(|r| self.doc(r.rowid).map(|d| d.workspace) == index);
        }
        ranked.sort_by(|a, b| a.rank.total_cmp(&b.rank));
        if let Some(last) = ranked.get(limit.saturating_sub(1)).map(|r| r.rank) {
            let end = ranked.partition_point(|r| r.rank <= last);
            ranked.truncate(end.max(limit));
        }
        Ok(ranked)
    }

    /// BM25 of each row from its phrase frequencies (`width` a row) and
    /// the document count of each phrase, as FTS5's `fts5Bm25Function`.
    fn score(&self, rowids: &[i64], freqs: &[f64], counts: &[u64]) -> Vec<Ranked> {
        let n = self.count.max(1) as f64;
        let avgdl = (self.total_tokens as f64 / n).max(f64::MIN_POSITIVE);
        let idf: Vec<f64> = counts
            .iter()
            .map(|&hits| {
                let idf = ((n - hits as f64 + 0.5) / (hits as f64 + 0.5)).ln();
                if idf <= 0.0 { 1e-6 } else { idf }
            })
            .collect();
        rowids
            .iter()
            .zip(freqs.chunks_exact(counts.len()))
            .map(|(&rowid, freq)| {
                let d = self.doc(rowid).map_or(avgdl, |doc| f64::from(doc.tokens));
                let score: f64 = idf
                    .iter()
                    .zip(freq)
                    .map(|(idf, &f)| idf * (f * (K1 + 1.0)) / (f + K1 * (1.0 - B + B * d / avgdl)))
                    .sum();
                Ranked { rowid, rank: -score }
            })
            .collect()
    }

    /// Reads the lengths again when the index changed since they were read.
    fn refresh(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let version: i64 = conn.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))?;
        if self.version == Some(version) {
            return Ok(());
        }
        self.docs.clear();
        self.sparse.clear();
        self.count = 0;
        self.workspaces.clear();
        self.total_tokens = 0;
        let mut names: HashMap<String, u32> = HashMap::new();
        let mut stmt = conn.prepare_cached(
            "SELECT d.id, d.sz, f.workspace FROM fts_docsize d JOIN files f ON f.id = d.id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let tokens = column_sizes(row.get_ref(1)?.as_blob()?).sum::<u64>();
            let name = row.get_ref(2)?.as_str()?;
            let workspace = match names.get(name) {
                Some(&i) => i,
                None => {
                    let i = self.workspaces.len() as u32;
                    self.workspaces.push(name.to_owned());
                    names.insert(name.to_owned(), i);
                    i
                }
            };
            self.total_tokens += tokens;
            let doc = Doc { tokens: u32::try_from(tokens).unwrap_or(u32::MAX), workspace };
            let rowid: i64 = row.get(0)?;
            match usize::try_from(rowid).ok().filter(|&i| i <= MAX_DENSE) {
                Some(slot) => {
                    if slot >= self.docs.len() {
                        self.docs.resize(slot + 1, None);
                    }
                    self.docs[slot] = Some(doc);
                }
                None => {
                    self.sparse.insert(rowid, doc);
                }
            }
            self.count += 1;
        }
        self.version = Some(version);
        Ok(())
    }

    fn doc(&self, rowid: i64) -> Option<&Doc> {
        match usize::try_from(rowid).ok().filter(|&i| i <= MAX_DENSE) {
            Some(slot) => self.docs.get(slot)?.as_ref(),
            None => self.sparse.get(&rowid),
        }
    }
}

/// The largest rowid [`Ranker`] keeps in its table (48 MiB of it at most).
const MAX_DENSE: usize = 1 << 22;

/// The notes matching one phrase: its document count, for its IDF.
fn count(conn: &Connection, phrase: &str) -> rusqlite::Result<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM fts WHERE fts MATCH ?1")?
        .query_row([phrase], |r| r.get(0))?;
    Ok(n.unsigned_abs())
}

/// FTS5's own ranking, for a query whose phrases are not one for one ours.
fn bm25(conn: &Connection, query: &str) -> rusqlite::Result<Vec<Ranked>> {
    let mut stmt = conn.prepare_cached("SELECT rowid, bm25(fts, ?2, ?3) FROM fts WHERE fts MATCH ?1")?;
    stmt.query_map(params![query, WEIGHTS[0], WEIGHTS[1]], |r| {
        Ok(Ranked { rowid: r.get(0)?, rank: r.get(1)? })
    })?
    .collect()
}

/// The token count of each column in an `fts_docsize.sz` blob: SQLite
/// varints, one a column.
fn column_sizes(mut blob: &[u8]) -> impl Iterator<Item = u64> + '_ {
    std::iter::from_fn(move || {
        if blob.is_empty() {
            return None;
        }
        let mut value = 0u64;
        for (i, &byte) in blob.iter().enumerate().take(9) {
            if i == 8 {
                value = (value << 8) | u64::from(byte);
                blob = &blob[9..];
                return Some(value);
            }
            value = (value << 7) | u64::from(byte & 0x7f);
            if byte & 0x80 == 0 {
                blob = &blob[i + 1..];
                return Some(value);
            }
        }
        // A truncated varint: no more sizes.
        blob = &[];
        Some(value)
    })
}

/// Registers `polis_freqs` on `conn`'s FTS5.
pub(crate) fn register(conn: &Connection) -> rusqlite::Result<()> {
    let mut api: *mut ffi::fts5_api = std::ptr::null_mut();
    let out = ToSqlOutput::Pointer(((&raw mut api).cast::<c_void>().cast_const(), c"fts5_api_ptr", None));
    conn.query_row("SELECT fts5(?1)", [out], |_| Ok(()))?;
    let failed = |why: &str| {
        rusqlite::Error::SqliteFailure(
            ffi::Error::new(ffi::SQLITE_ERROR),
            Some(format!("cannot register polis_freqs: {why}")),
        )
    };
    if api.is_null() {
        return Err(failed("no FTS5 in this SQLite"));
    }
    // SAFETY: `api` is the fts5_api of `conn`'s database, which SQLite
    // wrote through the pointer bound above (the documented way to get it);
    // it lives as long as the connection. `freqs` matches
    // `fts5_extension_function` and keeps no state.
    #[allow(unsafe_code)]
    let rc = unsafe {
        match (*api).xCreateFunction {
            Some(create) if (*api).iVersion >= 2 => {
                create(api, c"polis_freqs".as_ptr(), std::ptr::null_mut(), Some(freqs), None)
            }
            _ => return Err(failed("this FTS5 has no xCreateFunction")),
        }
    };
    if rc == ffi::SQLITE_OK { Ok(()) } else { Err(failed(&format!("error code {rc}"))) }
}

/// `polis_freqs(fts)`: the weighted count of each phrase of the query in
/// the current row, as a blob of little-endian `f64`s, one a phrase.
#[allow(unsafe_code)]
unsafe extern "C" fn freqs(
    api: *const ffi::Fts5ExtensionApi,
    fts: *mut ffi::Fts5Context,
    ctx: *mut ffi::sqlite3_context,
    _n: c_int,
    _args: *mut *mut ffi::sqlite3_value,
) {
    // SAFETY: FTS5 calls this with its extension API and the context of
    // the row being read, valid for the call; the blob is copied by SQLite
    // (SQLITE_TRANSIENT) before `freq` drops.
    unsafe {
        let api = &*api;
        let (Some(phrase_count), Some(inst_count), Some(inst)) =
            (api.xPhraseCount, api.xInstCount, api.xInst)
        else {
            ffi::sqlite3_result_error_code(ctx, ffi::SQLITE_MISUSE);
            return;
        };
        let mut freq = vec![0.0f64; usize::try_from(phrase_count(fts)).unwrap_or(0)];
        let mut n = 0;
        let mut rc = inst_count(fts, &mut n);
        for i in 0..n {
            if rc != ffi::SQLITE_OK {
                break;
            }
            let (mut phrase, mut column, mut offset) = (0, 0, 0);
            rc = inst(fts, i, &mut phrase, &mut column, &mut offset);
            if let (Some(f), Some(w)) = (freq.get_mut(phrase as usize), WEIGHTS.get(column as usize)) {
                *f += w;
            }
        }
        if rc != ffi::SQLITE_OK {
            ffi::sqlite3_result_error_code(ctx, rc);
            return;
        }
        let bytes: Vec<u8> = freq.iter().flat_map(|f| f.to_le_bytes()).collect();
        ffi::sqlite3_result_blob(ctx, bytes.as_ptr().cast(), bytes.len() as c_int, ffi::SQLITE_TRANSIENT());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index of `notes` (title, body) in workspace `w`, or `v` for odd ones.
    fn index(notes: &[(&str, &str)]) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE files (id INTEGER PRIMARY KEY, workspace TEXT NOT NULL);
             CREATE VIRTUAL TABLE fts USING fts5(title, body, tokenize = 'unicode61 remove_diacritics 2');",
        )
        .unwrap();
        for (i, (title, body)) in notes.iter().enumerate() {
            let id = i as i64 + 1;
            conn.execute(
                "INSERT INTO files VALUES (?1, ?2)",
                params![id, if id % 2 == 0 { "v" } else { "w" }],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO fts (rowid, title, body) VALUES (?1, ?2, ?3)",
                params![id, title, body],
            )
            .unwrap();
        }
        register(&conn).unwrap();
        conn
    }

    fn notes() -> Vec<(&'static str, &'static str)> {
        vec![
            ("apple pie", "an apple a day, and pie for dessert"),
            ("pear", "apple apple apple, pear pear"),
            ("notes on fruit", "pears and apples and plums keep well"),
            ("Crème brûlée", "creme of the crop; an apple-pie order"),
            ("plums", "nothing of the kind here at all, just plums and plums"),
            ("a long one", &*Box::leak("apple ".repeat(3).into_boxed_str())),
        ]
    }

    /// What FTS5's own bm25 says, best first, ties by rowid.
    fn fts5(conn: &Connection, query: &str) -> Vec<(i64, f64)> {
        let mut stmt = conn
            .prepare("SELECT rowid, bm25(fts, 5.0, 1.0) AS r FROM fts WHERE fts MATCH ?1 ORDER BY r, rowid")
            .unwrap();
        stmt.query_map([query], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    }

    fn ours(conn: &Connection, phrases: &[&str], workspace: Option<&str>) -> Vec<(i64, f64)> {
        let phrases: Vec<String> = phrases.iter().map(|p| (*p).to_owned()).collect();
        let mut ranked = Ranker::default().best(conn, &phrases, workspace, 100).unwrap();
        ranked.sort_by(|a, b| a.rank.total_cmp(&b.rank).then(a.rowid.cmp(&b.rowid)));
        ranked.into_iter().map(|r| (r.rowid, r.rank)).collect()
    }

    fn assert_same(a: &[(i64, f64)], b: &[(i64, f64)]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for ((ra, xa), (rb, xb)) in a.iter().zip(b) {
            assert_eq!(ra, rb, "{a:?} vs {b:?}");
            assert!((xa - xb).abs() < 1e-9, "rank {xa} vs {xb}: {a:?} vs {b:?}");
        }
    }

    #[test]
    fn ranks_as_fts5s_bm25_does_for_words_prefixes_and_several_phrases() {
        let conn = index(&notes());
        for phrases in [
            &["\"apple\""][..],
            &["\"pear\"*"],
            &["\"apple\"", "\"pie\""],
            &["\"apple-pie\""],
            &["\"creme\""],
            &["\"plums\"", "\"and\""],
            &["\"nothing\"", "\"apple\""],
            &["\"apple\"", "\"--\""],
        ] {
            assert_same(&ours(&conn, phrases, None), &fts5(&conn, &phrases.join(" ")));
        }
    }

    #[test]
    fn a_workspace_keeps_its_own_notes_ranked_against_all() {
        let conn = index(&notes());
        let all = fts5(&conn, "\"apple\"");
        let odd: Vec<_> = all.iter().copied().filter(|(id, _)| id % 2 == 1).collect();
        assert!(!odd.is_empty() && odd.len() < all.len(), "{all:?}");
        assert_same(&ours(&conn, &["\"apple\""], Some("w")), &odd);
        assert!(ours(&conn, &["\"apple\""], Some("nowhere")).is_empty());
    }

    #[test]
    fn a_change_to_the_index_is_seen_by_the_next_search() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.sqlite");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "wal").unwrap();
        writer
            .execute_batch(
                "CREATE TABLE files (id INTEGER PRIMARY KEY, workspace TEXT NOT NULL);
                 CREATE VIRTUAL TABLE fts USING fts5(title, body);
                 INSERT INTO files VALUES (1, 'w'), (2, 'w');
                 INSERT INTO fts (rowid, title, body) VALUES (1, 'one', 'word'), (2, 'two', 'word word other');",
            )
            .unwrap();
        let reader = Connection::open(&path).unwrap();
        register(&reader).unwrap();
        let mut ranker = Ranker::default();
        let phrases = ["\"word\"".to_owned()];
        let before = ranker.best(&reader, &phrases, None, 10).unwrap();
        writer
            .execute_batch(
                "INSERT INTO files VALUES (3, 'w');
                 INSERT INTO fts (rowid, title, body) VALUES (3, 'three', 'word');
                 DELETE FROM fts WHERE rowid = 2;
                 INSERT INTO fts (rowid, title, body) VALUES (2, 'two', 'word and a great many more words than before');",
            )
            .unwrap();
        let after = ranker.best(&reader, &phrases, None, 10).unwrap();
        assert_eq!(before.len(), 2);
        let mut got: Vec<_> = after.iter().map(|r| (r.rowid, r.rank)).collect();
        got.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        assert_same(&got, &fts5(&reader, "\"word\""));
    }

    #[test]
    fn a_note_of_a_far_rowid_is_ranked_and_filtered_as_the_others() {
        let conn = index(&notes());
        let far = (MAX_DENSE as i64) * 4 + 1;
        conn.execute("INSERT INTO files VALUES (?1, 'w')", [far]).unwrap();
        conn.execute("INSERT INTO fts (rowid, title, body) VALUES (?1, 'far', 'apple far away')", [far])
            .unwrap();
        assert_same(&ours(&conn, &["\"apple\""], None), &fts5(&conn, "\"apple\""));
        let odd: Vec<_> = fts5(&conn, "\"apple\"").into_iter().filter(|(id, _)| id % 2 == 1).collect();
        assert!(odd.iter().any(|(id, _)| *id == far));
        assert_same(&ours(&conn, &["\"apple\""], Some("w")), &odd);
    }

    #[test]
    fn ties_at_the_cut_are_all_kept() {
        let same = ("x", "tie tie");
        let conn = index(&[same, same, same, ("x", "tie")]);
        let phrases = ["\"tie\"".to_owned()];
        let ranked = Ranker::default().best(&conn, &phrases, None, 1).unwrap();
        assert_eq!(ranked.len(), 3, "the three tied notes: {ranked:?}");
    }

    #[test]
    fn varints_decode_as_sqlite_writes_them() {
        assert_eq!(column_sizes(&[0x05, 0x81, 0x00]).collect::<Vec<_>>(), vec![5, 128]);
        assert_eq!(column_sizes(&[]).count(), 0);
    }
}
