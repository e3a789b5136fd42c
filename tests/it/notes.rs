//! The notes module (`modules/notes`) in real processes: the sample
//! workspace through `polis call` and through two frontends at once, edits
//! seen through the watcher, a restart and a failover that re-parse
//! nothing, and every bad input the issue names. No test writes in a
//! notes directory but to play the user; each checks that the module never
//! does (a snapshot of the directory before and after).
//!
//! `polis-notes` is its own package: it is built once per test binary with
//! the same cargo and profile, as `neovim.rs` builds the Lua module.

use std::{
    collections::BTreeMap,
    hash::{Hash, Hasher},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use polis_testing::Run;
use serde_json::{Value, json};

use crate::util::{TestMesh, mesh};

/// The sample workspace, written for these tests.
const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/modules/notes/tests/workspace");

/// Builds `polis-notes` (once per test binary) and returns the executable.
fn notes_exe() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile = exe.parent().and_then(Path::parent).and_then(Path::file_name);
        // The user's own cargo and toolchain: a build tool, not under test.
        let mut cmd = polis_testing::command(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.args([
            "build",
            "-p",
            "polis-notes",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
        match profile.and_then(|p| p.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(other) => {
                cmd.args(["--profile", other]);
            }
        }
        let build = Run::within(cmd, Duration::from_secs(900), None);
        assert!(build.status().success(), "cargo build -p polis-notes failed\n{build}");
        let stdout = build.stdout();
        let exe = stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "polis-notes")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .unwrap_or_else(|| panic!("no polis-notes executable in cargo's output\n{build}"));
        assert!(exe.exists(), "{} does not exist", exe.display());
        exe
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of the sample workspace in the mesh's temp root.
pub(crate) fn sample(mesh: &TestMesh) -> PathBuf {
    let dir = mesh.root().join("notes");
    copy_dir(Path::new(SAMPLE), &dir);
    dir
}

/// The notes module's manifest, with workspace `sample` at `dir`.
pub(crate) fn install(mesh: &TestMesh, dir: &Path, config: &str) {
    let dir = dir.display().to_string();
    mesh.module("notes", notes_exe(), &format!("[config]\nworkspaces = {{ sample = {dir:?} }}\n{config}"));
}

/// `polis call notes METHOD PARAMS`, which must succeed.
#[track_caller]
fn call(mesh: &TestMesh, method: &str, params: Value) -> Value {
    mesh.run(&["call", "notes", method, &params.to_string()]).code(0).json()
}

/// `polis call --stream notes METHOD PARAMS`: the items.
#[track_caller]
fn stream(mesh: &TestMesh, method: &str, params: Value) -> Vec<Value> {
    let run = mesh.run(&["call", "--stream", "notes", method, &params.to_string()]);
    run.code(0);
    run.stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}\n{run}")))
        .collect()
}

/// A call that must fail (the exit status follows the code: see the
/// contract's exit codes): its one stderr line.
#[track_caller]
fn failure(mesh: &TestMesh, method: &str, params: Value, streamed: bool) -> String {
    let params = params.to_string();
    let mut args = vec!["call"];
    if streamed {
        args.push("--stream");
    }
    args.extend(["notes", method, &params]);
    let run = mesh.run(&args);
    assert!(!run.status().success(), "the call should fail\n{run}");
    run.error_line()
}

/// `index {…}`: the last summary (after any progress items).
#[track_caller]
pub(crate) fn index(mesh: &TestMesh, params: Value) -> Value {
    let items = stream(mesh, "index", params);
    items.last().and_then(|i| i.get("summary")).cloned().unwrap_or_else(|| panic!("no summary: {items:?}"))
}

/// Every entry under `dir` (not following symlinks): kind, mode, size,
/// mtime, and a hash of the content of files this process can read.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let content = if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else if meta.file_type().is_symlink() {
                format!("link to {}", std::fs::read_link(&path).unwrap().display())
            } else {
                let mut hash = std::collections::hash_map::DefaultHasher::new();
                std::fs::read(&path)
                    .map(|b| b.hash(&mut hash))
                    .map_or("unreadable".into(), |()| hash.finish().to_string())
            };
            let desc = format!(
                "{content} mode {:o} size {} mtime {}.{}",
                meta.mode(),
                meta.size(),
                meta.mtime(),
                meta.mtime_nsec()
            );
            out.insert(path.strip_prefix(dir).unwrap().display().to_string(), desc);
        }
    }
    out
}

/// Polls `check` (each poll a real call) until it says yes, within the harness's wait.
#[track_caller]
fn wait_for(mesh: &TestMesh, what: &str, mut check: impl FnMut() -> bool) {
    mesh.wait_for(what, || check().then_some(()));
}

fn field<'a>(items: &'a [Value], key: &str) -> Vec<&'a str> {
    items.iter().map(|i| i[key].as_str().unwrap_or("?")).collect()
}

#[test]
fn the_sample_workspace_through_every_method() {
    let mesh = mesh();
    let dir = sample(&mesh);
    install(&mesh, &dir, "index_on_start = false");
    let before = snapshot(&dir);

    let summary = index(&mesh, json!({}));
    assert_eq!(
        summary["problems"],
        json!([
            { "path": "malformed.norg", "line": 2, "message": "link {} has no target" },
            { "path": "malformed.norg", "line": 2, "message": "link {:} has no target" },
            { "path": "malformed.norg", "line": 3, "message": "heading without a title" },
            { "path": "malformed.norg", "line": 4, "message": "unclosed @code block (no @end before the end of the file)" },
        ])
    );
    assert_eq!(
        (
            &summary["workspace"],
            &summary["files"],
            &summary["parsed"],
            &summary["unchanged"],
            &summary["removed"],
            &summary["skipped"]
        ),
        (&json!("sample"), &json!(12), &json!(12), &json!(0), &json!(0), &json!([])),
        "{summary}"
    );

    let ws = call(&mesh, "workspaces", json!({}));
    assert_eq!(
        ws["workspaces"],
        json!([{ "name": "sample", "root": dir.canonicalize().unwrap(), "files": 12, "error": null }])
    );
    assert_eq!((&ws["parsed_since_start"], &ws["warnings"]), (&json!(12), &json!([])));

    // The hidden directory and the non-Norg file are not notes.
    let files = stream(&mesh, "files", json!({}));
    let listed: Vec<_> =
        files.iter().map(|f| (f["path"].as_str().unwrap(), f["title"].as_str().unwrap())).collect();
    assert_eq!(
        listed,
        [
            ("code.norg", "Snippets"),
            ("deep.norg", "Level one"),
            ("empty.norg", "empty"),
            ("garden.norg", "Garden"),
            ("index.norg", "Home"),
            ("journal/2024-01-01.norg", "Monday"),
            ("journal/2024-01-02.norg", "Tuesday"),
            ("malformed.norg", "Broken things"),
            ("no-meta.norg", "The first heading"),
            ("projects/notes.norg", "Ship the notes module"),
            ("projects/polis.norg", "The polis project"),
            ("reading.norg", "Reading list"),
        ]
    );

    assert_eq!(
        call(&mesh, "outline", json!({ "path": "index" })),
        json!([
            { "line": 12, "level": 1, "text": "Welcome" },
            { "line": 17, "level": 1, "text": "Links that go nowhere" },
            { "line": 22, "level": 1, "text": "Links that go out" },
            { "line": 27, "level": 2, "text": "Inbox" },
        ])
    );
    let deep = call(&mesh, "outline", json!({ "path": dir.join("deep.norg") }));
    let levels: Vec<_> = deep.as_array().unwrap().iter().map(|h| h["level"].as_u64().unwrap()).collect();
    assert_eq!(levels, [1, 2, 3, 4, 5, 6, 6], "by absolute path too; seven stars count as six");
    let code = call(&mesh, "outline", json!({ "path": "code.norg" }));
    assert_eq!(code, json!([{ "line": 1, "level": 1, "text": "Snippets" }]), "nothing from inside blocks");

    let link =
        |line, kind, target: &str, description: Value, path: Value, heading: Value, resolved: Value| {
            let workspace = if path.is_null() { Value::Null } else { json!("sample") };
            json!({ "line": line, "kind": kind, "target": target, "description": description,
                "workspace": workspace, "path": path, "heading": heading, "resolved": resolved })
        };
    let null = Value::Null;
    assert_eq!(
        call(&mesh, "links", json!({ "path": "index.norg" })),
        json!([
            link(13, "file", ":garden:", json!("garden"), json!("garden.norg"), null.clone(), json!(true)),
            link(
                14,
                "file",
                ":projects/polis:* Goals",
                json!("goals"),
                json!("projects/polis.norg"),
                json!("Goals"),
                json!(true)
            ),
            link(
                15,
                "file",
                ":journal/2024-01-01:",
                json!("journal"),
                json!("journal/2024-01-01.norg"),
                null.clone(),
                json!(true)
            ),
            link(18, "file", ":missing:", null.clone(), json!("missing.norg"), null.clone(), json!(false)),
            link(
                19,
                "file",
                ":garden:* No such heading",
                null.clone(),
                json!("garden.norg"),
                json!("No such heading"),
                json!(false)
            ),
            link(
                20,
                "external",
                "/ assets/gone.png",
                null.clone(),
                json!("assets/gone.png"),
                null.clone(),
                json!(false)
            ),
            link(
                23,
                "url",
                "https://github.com/nvim-neorg/norg-specs",
                json!("Norg specification"),
                null.clone(),
                null.clone(),
                null.clone()
            ),
            link(
                24,
                "external",
                "/ assets/photo.txt",
                null.clone(),
                json!("assets/photo.txt"),
                null.clone(),
                json!(true)
            ),
            link(
                24,
                "heading",
                "* Welcome",
                null.clone(),
                json!("index.norg"),
                json!("Welcome"),
                json!(true)
            ),
            link(25, "anchor", "# Inbox", null.clone(), json!("index.norg"), json!("Inbox"), json!(true)),
        ])
    );
    let relative = call(&mesh, "links", json!({ "path": "journal/2024-01-02" }));
    assert_eq!(
        (&relative[0]["path"], &relative[0]["resolved"]),
        (&json!("journal/2024-01-01.norg"), &json!(true))
    );
    let deep_links = call(&mesh, "links", json!({ "path": "deep" }));
    assert_eq!(
        deep_links.as_array().unwrap().iter().map(|l| l["resolved"].clone()).collect::<Vec<_>>(),
        [json!(true), json!(true)]
    );

    let back = |params| {
        call(&mesh, "backlinks", params)
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                format!("{}:{} {}", l["path"].as_str().unwrap(), l["line"], l["target"].as_str().unwrap())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        back(json!({ "path": "garden" })),
        [
            "index.norg:13 :garden:",
            "index.norg:19 :garden:* No such heading",
            "journal/2024-01-01.norg:7 :$/garden:* Vegetables",
            "projects/polis.norg:7 :../garden:** Tomatoes",
        ]
    );
    assert_eq!(
        back(json!({ "heading": "goals" })),
        [
            "index.norg:14 :projects/polis:* Goals",
            "projects/notes.norg:2 :polis:* Goals",
            "projects/polis.norg:7 * Goals"
        ],
        "a heading's backlinks, case-folded, this file's own included"
    );
    assert_eq!(
        back(json!({ "path": "projects/polis", "heading": "Router" })),
        ["projects/notes.norg:2 :polis:# Router"]
    );
    assert_eq!(back(json!({ "path": "code" })), Vec::<String>::new());

    let broken = stream(&mesh, "broken_links", json!({}));
    assert_eq!(
        broken,
        [
            json!({ "workspace": "sample", "path": "index.norg", "line": 18, "kind": "file", "target": ":missing:", "reason": "no indexed file sample:missing.norg" }),
            json!({ "workspace": "sample", "path": "index.norg", "line": 19, "kind": "file", "target": ":garden:* No such heading", "reason": "no heading \"No such heading\" (level 1) in sample:garden.norg" }),
            json!({ "workspace": "sample", "path": "index.norg", "line": 20, "kind": "external", "target": "/ assets/gone.png", "reason": "no file at sample:assets/gone.png" }),
            json!({ "workspace": "sample", "path": "malformed.norg", "line": 2, "kind": "invalid", "target": "", "reason": "the link has no target" }),
            json!({ "workspace": "sample", "path": "malformed.norg", "line": 2, "kind": "invalid", "target": ":", "reason": "the link has no target" }),
        ]
    );

    let tasks = |state: &str| stream(&mesh, "tasks", json!({ "state": state }));
    assert_eq!(
        tasks("done"),
        [
            json!({ "workspace": "sample", "path": "garden.norg", "line": 20, "state": "done", "text": "plant the tomatoes", "heading_path": ["Vegetables", "Tomatoes"] }),
            json!({ "workspace": "sample", "path": "projects/notes.norg", "line": 5, "state": "done", "text": "Write the schema", "heading_path": ["Ship the notes module"] }),
            json!({ "workspace": "sample", "path": "projects/polis.norg", "line": 11, "state": "done", "text": "publish records", "heading_path": ["Goals", "Router"] }),
            json!({ "workspace": "sample", "path": "projects/polis.norg", "line": 19, "state": "done", "text": "the notes module", "heading_path": ["Goals", "Modules"] }),
            json!({ "workspace": "sample", "path": "reading.norg", "line": 7, "state": "done", "text": "read the Norg specification", "heading_path": ["Books"] }),
        ]
    );
    let texts =
        |state| tasks(state).iter().map(|t| t["text"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(texts("undone"), ["water the tomatoes", "sort the inbox", "buy seeds", "elect a router"]);
    assert_eq!(texts("pending"), ["build a trellis for the beans", "hand over on upgrade"]);
    assert_eq!(texts("on_hold"), ["wait for the events issue", "the dragon book"]);
    assert_eq!(texts("cancelled"), ["a heartbeat"]);
    assert_eq!(texts("urgent"), ["Ship the notes module", "fix the failover gap"]);
    assert_eq!(texts("uncertain"), ["Decide on the parser", "gRPC for Python"]);
    assert_eq!(texts("recurring"), ["review the benchmarks", "a monthly paper"]);
    assert_eq!(stream(&mesh, "tasks", json!({})).len(), 20);
    assert_eq!(stream(&mesh, "tasks", json!({ "path": "garden" })).len(), 3);
    let bad_state = failure(&mesh, "tasks", json!({ "state": "finished" }), true);
    assert!(bad_state.starts_with("error: INVALID_ARGUMENT: unknown task state \"finished\""), "{bad_state}");

    assert_eq!(
        call(&mesh, "meta", json!({ "path": "garden" })),
        json!({
            "workspace": "sample", "path": "garden.norg", "title": "Garden",
            "meta": { "title": "Garden", "description": "what grows where", "authors": ["alice", "bob"],
                      "categories": ["plants", "outdoors"], "created": "2024-01-02" },
            "tags": [{ "line": 15, "name": "season", "args": "summer" }],
            "problems": [],
        })
    );
    let home = call(&mesh, "meta", json!({ "path": "index" }));
    assert_eq!(
        home["meta"],
        json!({ "title": "Home", "description": "where every note starts", "authors": ["alice"],
                "categories": ["index", "personal"], "created": "2024-01-01", "updated": "2024-02-01" })
    );
    assert_eq!(call(&mesh, "meta", json!({ "path": "reading" }))["meta"]["categories"], json!(["reading"]));
    assert_eq!(
        call(&mesh, "meta", json!({ "path": "projects/polis" }))["meta"]["categories"],
        json!(["work", "rust"])
    );
    let malformed = call(&mesh, "meta", json!({ "path": "malformed" }));
    assert_eq!(malformed["problems"].as_array().unwrap().len(), 4, "{malformed}");

    let hits = call(&mesh, "search", json!({ "q": "tomatoes" }));
    let found: Vec<_> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["path"].as_str().unwrap(), h["line"].as_u64().unwrap()))
        .collect();
    assert_eq!(found, [("garden.norg", 17), ("journal/2024-01-01.norg", 7), ("projects/polis.norg", 7)]);
    assert_eq!(
        hits[0]["snippet"], "«Tomatoes» need sun and water every morning.",
        "the snippet is the hit's line"
    );
    let accents = call(&mesh, "search", json!({ "q": "cafe naive" }));
    assert_eq!(
        field(accents.as_array().unwrap(), "path"),
        ["journal/2024-01-02.norg"],
        "diacritics folded, every word"
    );
    // Only FTS5 folds diacritics: its snippet stands in for the line's.
    assert_eq!(accents[0]["snippet"], "* Tuesday After {:2024-01-01:}[Monday] came a «café» and a «naïve»…");

    let prefix = call(&mesh, "search", json!({ "q": "xylo*" }));
    assert_eq!(field(prefix.as_array().unwrap(), "path"), ["no-meta.norg"]);
    assert_eq!(
        call(&mesh, "search", json!({ "q": "\"unbalanced" })),
        json!([]),
        "quotes are words, not syntax"
    );
    assert_eq!(call(&mesh, "search", json!({ "q": "the", "limit": 2 })).as_array().unwrap().len(), 2);
    let empty = failure(&mesh, "search", json!({ "q": "  " }), false);
    assert_eq!(empty, "error: INVALID_ARGUMENT: search: `q` has no words to look for");
    let nowhere = failure(&mesh, "search", json!({ "q": "x", "workspace": "elsewhere" }), false);
    assert_eq!(nowhere, "error: NOT_FOUND: no workspace \"elsewhere\" (there are: sample)");
    let missing = failure(&mesh, "outline", json!({ "path": "nope" }), false);
    assert_eq!(missing, "error: NOT_FOUND: nope.norg is not indexed in any workspace");
    let outside = failure(&mesh, "outline", json!({ "path": "/etc/passwd" }), false);
    assert!(outside.starts_with("error: NOT_FOUND: /etc/passwd.norg is in no workspace"), "{outside}");

    let rows = stream(
        &mesh,
        "query",
        json!({ "sql": "SELECT kind, count(*) AS n FROM links GROUP BY kind ORDER BY kind" }),
    );
    assert_eq!(
        rows,
        [
            json!({ "columns": ["kind", "n"] }),
            json!(["anchor", 2]),
            json!(["external", 2]),
            json!(["file", 12]),
            json!(["heading", 3]),
            json!(["invalid", 2]),
            json!(["other", 1]),
            json!(["url", 1]),
        ]
    );
    let unresolved =
        stream(&mesh, "query", json!({ "sql": "SELECT count(*) FROM link_status WHERE resolved = 0" }));
    assert_eq!(unresolved[1], json!([5]), "the view agrees with broken_links");

    assert_eq!(snapshot(&dir), before, "the notes directory is never written");
}

/// Reads `polis watch notes.changed` lines until the new note's `kind`
/// change (a write may also be seen as a modification first).
#[track_caller]
fn changed(watcher: &mut polis_testing::Process, kind: &str) {
    for _ in 0..8 {
        let line: Value = serde_json::from_str(&watcher.line()).expect("a JSON line");
        assert_eq!(line["topic"], "notes.changed", "{line}");
        let value = &line["value"];
        assert_eq!(
            (&value["workspace"], &value["path"]),
            (&json!("sample"), &json!("journal/2024-01-03.norg"))
        );
        if value["kind"] == kind {
            return;
        }
    }
    panic!("no {kind:?} notes.changed event for the note");
}

#[test]
fn two_frontends_see_edits_and_deletes_through_the_watcher() {
    let mesh = mesh();
    let dir = sample(&mesh);
    // Indexed at start, by itself: the editors only ask.
    install(&mesh, &dir, "");
    let mut a = mesh.start_frontend("editor-a");
    let mut b = mesh.start_frontend("editor-b");
    // An editor's refresh: `polis watch` on the module's change events.
    let mut watcher = mesh.spawn(&["watch", "notes.changed", "--no-launch"]);
    polis_testing::wait_until(polis_testing::WAIT, &mesh.dir, "polis watch to subscribe", || {
        watcher.stderr().contains("watching").then_some(())
    });
    let files = |f: &mut crate::util::Process| {
        let answer: Value = serde_json::from_str(&f.call("notes workspaces {}")).unwrap();
        answer["workspaces"][0]["files"].as_u64()
    };
    wait_for(&mesh, "the start-up index", || files(&mut a) == Some(12));
    assert_eq!(files(&mut b), Some(12));
    let search = |f: &mut crate::util::Process, q: &str| -> Vec<String> {
        let answer: Value =
            serde_json::from_str(&f.call(&format!("notes search {}", json!({ "q": q })))).unwrap();
        answer
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"))
            .iter()
            .map(|h| h["path"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(search(&mut a, "tomatoes"), search(&mut b, "tomatoes"));

    // A new note, written as an editor does.
    let new = dir.join("journal/2024-01-03.norg");
    std::fs::write(&new, "* Wednesday\n  zanzibar, see {:../garden:* Flowers}\n").unwrap();
    wait_for(&mesh, "the new note in a's search", || {
        search(&mut a, "zanzibar") == ["journal/2024-01-03.norg"]
    });
    changed(&mut watcher, "created");
    assert_eq!(search(&mut b, "zanzibar"), ["journal/2024-01-03.norg"], "b sees what a sees");
    let back: Value =
        serde_json::from_str(&b.call(r#"notes backlinks {"path": "garden", "heading": "Flowers"}"#)).unwrap();
    assert_eq!(back[0]["path"], "journal/2024-01-03.norg", "{back}");

    // Edited: the old words go, the new ones come.
    std::fs::write(&new, "* Wednesday\n  quokka\n").unwrap();
    wait_for(&mesh, "the edit", || search(&mut b, "quokka") == ["journal/2024-01-03.norg"]);
    changed(&mut watcher, "modified");
    assert_eq!(search(&mut a, "zanzibar"), Vec::<String>::new());
    let outline: Value =
        serde_json::from_str(&a.call(r#"notes outline {"path": "journal/2024-01-03"}"#)).unwrap();
    assert_eq!(outline, json!([{ "line": 1, "level": 1, "text": "Wednesday" }]));

    // Deleted: gone from every answer.
    std::fs::remove_file(&new).unwrap();
    wait_for(&mesh, "the delete", || search(&mut a, "quokka").is_empty());
    changed(&mut watcher, "deleted");
    assert_eq!(files(&mut b), Some(12));
    let gone = a.call(r#"notes outline {"path": "journal/2024-01-03"}"#);
    assert!(gone.contains("NOT_FOUND"), "{gone}");

    // A directory moved away and back: its notes go and come.
    std::fs::rename(dir.join("projects"), mesh.root().join("projects-away")).unwrap();
    wait_for(&mesh, "the moved directory's notes to go", || files(&mut a) == Some(10));
    std::fs::rename(mesh.root().join("projects-away"), dir.join("projects")).unwrap();
    wait_for(&mesh, "them to come back", || files(&mut a) == Some(12));
    a.quit();
    b.quit();
}

#[test]
fn a_restart_reuses_the_index_and_a_failover_keeps_the_module() {
    let mesh = mesh();
    let dir = sample(&mesh);
    install(&mesh, &dir, "");
    let mut router = mesh.start_router(&[]);
    let _standby = mesh.start_standby(&[]);
    let first = index(&mesh, json!({}));
    assert_eq!(first["files"], 12, "{first}");
    assert_eq!(
        call(&mesh, "workspaces", json!({}))["parsed_since_start"],
        12,
        "parsed once, by whichever pass came first"
    );

    // The router dies; the standby takes office and the module, which
    // kept running, re-attaches to it with its state: nothing re-parsed.
    let module: Vec<u32> = mesh.processes().into_iter().filter(|pid| is_notes(*pid)).collect();
    assert_eq!(module.len(), 1, "one notes process: {module:?}");
    router.kill();
    mesh.wait_for("the standby to take office", || mesh.router().filter(|r| r.epoch == Some(2)));
    mesh.wait_for("the module to re-attach to it", || {
        let status = mesh.run(&["status", "--json"]).json();
        let modules = status["modules"].as_array()?.clone();
        modules.iter().any(|m| m["name"] == "notes" && m["pid"] == module[0]).then_some(())
    });
    let after = call(&mesh, "workspaces", json!({}));
    assert_eq!(
        (&after["parsed_since_start"], &after["workspaces"][0]["files"]),
        (&json!(12), &json!(12)),
        "{after}"
    );
    let still: Vec<u32> = mesh.processes().into_iter().filter(|pid| is_notes(*pid)).collect();
    assert_eq!(still, module, "the same module process serves the next router");

    // A full stop, then a new module process: the index on disk is reused.
    mesh.run(&["stop"]).code(0);
    mesh.wait_no_processes();
    let again = index(&mesh, json!({}));
    assert_eq!(
        (&again["parsed"], &again["unchanged"], &again["files"]),
        (&json!(0), &json!(12), &json!(12)),
        "{again}"
    );
    assert_eq!(
        call(&mesh, "workspaces", json!({}))["parsed_since_start"],
        0,
        "the start-up pass parsed nothing either"
    );
    assert_eq!(call(&mesh, "outline", json!({ "path": "index" })).as_array().unwrap().len(), 4);
}

fn is_notes(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|exe| exe.file_name().is_some_and(|n| n == "polis-notes"))
}

#[test]
fn bad_files_are_skipped_with_reasons_and_nothing_is_written() {
    let mesh = mesh();
    let dir = mesh.root().join("notes");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("good.norg"), "* Good\n  findable\n").unwrap();
    std::fs::write(dir.join("latin1.norg"), b"* Caf\xe9\n").unwrap();
    // 50 MB of valid Norg: skipped unread, over the limit.
    let line = "  a line of text in a very large note\n";
    let big = "* Big\n".to_owned() + &line.repeat(50 * 1024 * 1024 / line.len());
    std::fs::write(dir.join("big.norg"), &big).unwrap();
    std::os::unix::fs::symlink("..", dir.join("sub/loop")).unwrap();
    std::os::unix::fs::symlink("self.norg", dir.join("self.norg")).unwrap();
    std::fs::write(dir.join("secret.norg"), "* Secret\n").unwrap();
    std::fs::set_permissions(dir.join("secret.norg"), std::fs::Permissions::from_mode(0o000)).unwrap();
    // Run as root (as CI is), mode 000 does not stop a read: then the file
    // is indexed like any other, and this test says which case it saw.
    let root_reads = std::fs::read(dir.join("secret.norg")).is_ok();
    install(&mesh, &dir, "index_on_start = false");
    let before = snapshot(&dir);

    let summary = index(&mesh, json!({}));
    let mut skipped = vec![
        json!({ "path": "big.norg", "reason": format!("{} bytes is over the limit of 16777216 bytes (max_file_bytes): not read", big.len()) }),
        json!({ "path": "latin1.norg", "reason": "not UTF-8 (invalid byte at offset 5)" }),
    ];
    if !root_reads {
        skipped.push(json!({ "path": "secret.norg", "reason": "unreadable: permission denied" }));
    }
    skipped.push(json!({ "path": "self.norg", "reason": "symlink loop (ELOOP)" }));
    skipped.push(
        json!({ "path": "sub/loop", "reason": "symlink loop: the same directory as the workspace root" }),
    );
    assert_eq!(summary["skipped"], Value::Array(skipped), "{summary}");
    let files = stream(&mesh, "files", json!({}));
    let expected: &[&str] = if root_reads { &["good.norg", "secret.norg"] } else { &["good.norg"] };
    assert_eq!(field(&files, "path"), expected, "root reads mode 000: {root_reads}");

    // The module keeps serving, and a second pass says the same.
    assert_eq!(
        field(call(&mesh, "search", json!({ "q": "findable" })).as_array().unwrap(), "path"),
        ["good.norg"]
    );
    assert_eq!(index(&mesh, json!({}))["skipped"], summary["skipped"]);
    std::fs::set_permissions(dir.join("secret.norg"), std::fs::Permissions::from_mode(0o000)).unwrap();
    assert_eq!(snapshot(&dir), before, "the notes directory is never written");
}

#[test]
fn a_missing_workspace_is_an_error_that_hurts_nothing_else() {
    let mesh = mesh();
    let dir = sample(&mesh);
    let gone = mesh.root().join("no-such-notes");
    mesh.module(
        "notes",
        notes_exe(),
        &format!(
            "[config]\nindex_on_start = false\nworkspaces = {{ gone = {:?} }}",
            gone.display().to_string()
        ),
    );
    let ws = call(&mesh, "workspaces", json!({}));
    let error = ws["workspaces"][0]["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("does not exist"), "{ws}");
    assert!(ws["warnings"][0].as_str().unwrap().contains("workspace gone:"), "{ws}");
    let named = failure(&mesh, "index", json!({ "workspace": "gone" }), true);
    assert!(
        named.starts_with("error: NOT_FOUND: workspace gone: ") && named.contains("does not exist"),
        "{named}"
    );
    assert_eq!(index(&mesh, json!({}))["error"].as_str().map(|e| e.contains("does not exist")), Some(true));

    // Made since: the next `index` finds it, without a restart.
    std::fs::create_dir(&gone).unwrap();
    std::fs::write(gone.join("late.norg"), "* Late\n  arrived after the module started\n").unwrap();
    assert_eq!(index(&mesh, json!({ "workspace": "gone" }))["files"], 1);
    assert_eq!(
        field(call(&mesh, "search", json!({ "q": "arrived" })).as_array().unwrap(), "path"),
        ["late.norg"]
    );
    assert!(call(&mesh, "workspaces", json!({}))["workspaces"][0]["error"].is_null());

    let add = |name: &str, path: &Path| {
        failure(&mesh, "add_workspace", json!({ "name": name, "path": path }), false)
    };
    assert!(
        add("also-gone", &mesh.root().join("still-gone"))
            .starts_with("error: NOT_FOUND: workspace also-gone: ")
    );
    assert!(
        add("rel", Path::new("relative/dir"))
            .starts_with("error: INVALID_ARGUMENT: workspace \"rel\": the path")
    );
    assert!(add("bad/name", &dir).starts_with("error: INVALID_ARGUMENT: workspace name \"bad/name\""));
    let added = call(&mesh, "add_workspace", json!({ "name": "sample", "path": dir }));
    assert_eq!(added, json!({ "name": "sample", "root": dir.canonicalize().unwrap() }));
    assert_eq!(index(&mesh, json!({ "workspace": "sample" }))["files"], 12);
    assert_eq!(call(&mesh, "outline", json!({ "path": "garden" })).as_array().unwrap().len(), 4);
}

#[test]
fn sql_that_writes_or_runs_forever_is_stopped() {
    let mesh = mesh();
    let dir = sample(&mesh);
    install(&mesh, &dir, "index_on_start = false");
    index(&mesh, json!({}));
    let query = |sql: &str| failure(&mesh, "query", json!({ "sql": sql, "timeout_ms": 500 }), true);
    let writes = "error: INVALID_ARGUMENT: query: only statements that read are allowed (this one writes)";
    assert_eq!(query("DELETE FROM files"), writes);
    assert_eq!(query("CREATE TABLE t (x)"), writes);
    assert_eq!(
        query("SELECT 1; DELETE FROM files"),
        "error: INVALID_ARGUMENT: query: one statement at a time"
    );
    let attach = query(&format!("ATTACH DATABASE '{}' AS x", dir.join("evil.db").display()));
    assert!(attach.starts_with("error: INVALID_ARGUMENT: query: "), "{attach}");
    assert!(
        query("SELECT nope FROM files").starts_with("error: INVALID_ARGUMENT: query: no such column: nope")
    );
    let forever =
        query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c");
    assert_eq!(
        forever,
        "error: DEADLINE_EXCEEDED: query: interrupted at its time limit of 500 ms (timeout_ms)"
    );
    // Still serving, and nothing was lost.
    let count = stream(&mesh, "query", json!({ "sql": "SELECT count(*) FROM files" }));
    assert_eq!(count, [json!({ "columns": ["count(*)"] }), json!([12])]);
    assert!(!dir.join("evil.db").exists(), "ATTACH created nothing in the notes directory");
}

#[test]
fn a_corrupt_index_is_rebuilt_with_a_warning() {
    let mesh = mesh();
    let dir = sample(&mesh);
    install(&mesh, &dir, "index_on_start = false");
    let cache = mesh.home().join(".cache/polis/notes");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(
        cache.join("index.sqlite"),
        "not a database at all, but long enough to look like a header".repeat(100),
    )
    .unwrap();
    let ws = call(&mesh, "workspaces", json!({}));
    let warning = ws["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.starts_with("index ")
            && warning.ends_with("was unreadable (file is not a database): rebuilt"),
        "{ws}"
    );
    assert_eq!(index(&mesh, json!({}))["parsed"], 12);
    assert_eq!(call(&mesh, "search", json!({ "q": "xylophone*" }))[0]["path"], "no-meta.norg");
}
