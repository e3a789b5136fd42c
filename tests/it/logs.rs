//! Bounded logs: each log in `<mesh>/logs/` is held to `--log-max-bytes`
//! with one older file, and `polis log [NAME] [-f]` shows them.

use crate::util::{TestMesh, WAIT, mesh, wait_until};

/// A JSON-RPC module whose `say {text, times}` writes `times` lines
/// `text N` to stderr in one write, then answers.
const CHATTY: &str = r#"#!/usr/bin/env python3
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    p = msg.get("params") or {}
    # One write: a rotation sees all of it or none.
    sys.stderr.write("".join("%s %d\n" % (p.get("text", ""), i) for i in range(p.get("times", 0))))
    sys.stderr.flush()
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": "said"}), flush=True)
"#;

fn say(mesh: &TestMesh, text: &str, times: u32) {
    let params = format!(r#"{{"text":"{text}","times":{times}}}"#);
    mesh.run(&["call", "chatty", "say", &params]).code(0);
}

fn size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn a_chatty_modules_log_is_capped_with_one_older_file() {
    let mesh = mesh();
    mesh.script_module("chatty", "jsonrpc", CHATTY, "");
    let _router = mesh.start_router(&["--log-max-bytes", "4096"]);
    let log = mesh.dir.join("logs/chatty.log");
    let old = mesh.dir.join("logs/chatty.log.1");

    // About 64 KiB, sixteen times the cap.
    say(&mesh, "first", 4000);
    wait_until(WAIT, &mesh.dir, "chatty.log to be rotated", || old.exists().then_some(()));
    let kept = std::fs::read_to_string(&old).unwrap();
    assert_eq!(size(&log), 0, "emptied, and nothing written since");
    assert!(kept.len() <= 4096, "the older file holds at most the cap: {}", kept.len());
    assert!(kept.ends_with("first 3999\n"), "it keeps the newest lines: {:?}", &kept[kept.len() - 40..]);
    assert!(kept.starts_with("first "), "from a line's start: {:?}", &kept[..20]);
    assert!(!kept.contains("first 0\n"), "the oldest are dropped");

    // Past the next look, the current log is under the cap again.
    say(&mesh, "second", 4000);
    wait_until(WAIT, &mesh.dir, "the second rotation", || {
        (std::fs::read_to_string(&old).unwrap_or_default().contains("second 3999") && size(&log) <= 4096)
            .then_some(())
    });

    // `polis log NAME`: the older file, then the current one.
    say(&mesh, "third", 1);
    let shown = mesh.run(&["log", "chatty"]).code(0).stdout();
    assert!(
        shown.contains("second 3999\n") && shown.ends_with("third 0\n"),
        "{}",
        &shown[shown.len() - 60..]
    );
    assert!(!shown.contains("first 0\n"), "the dropped lines are gone");
}

#[test]
fn polis_log_shows_the_routers_log_and_follows_a_modules() {
    let mesh = mesh();
    mesh.script_module("chatty", "jsonrpc", CHATTY, "");
    let none = mesh.run(&["log"]);
    assert!(none.code(3).error_line().starts_with("error: NOT_FOUND: no log at "), "{none}");

    // A launched router writes logs/router.log.
    let mut call = mesh.polis(&["call", "chatty", "say", r#"{"text":"hello","times":1}"#]);
    call.env("POLIS_LOG", "info").env("POLIS_LOG_MAX_BYTES", "2048");
    mesh.run_command(call).code(0);
    let router = mesh.run(&["log"]).code(0).stdout();
    assert!(router.contains("started module chatty"), "{router}");

    let mut follow = mesh.spawn(&["log", "chatty", "-f"]);
    assert_eq!(follow.line(), "hello 0");
    say(&mesh, "marker", 1);
    assert_eq!(follow.line(), "marker 0");
    // Across a rotation (the launched router's cap is 2 KiB): it carries on
    // from the emptied file.
    say(&mesh, "filler", 1000);
    wait_until(WAIT, &mesh.dir, "a rotation", || mesh.dir.join("logs/chatty.log.1").exists().then_some(()));
    say(&mesh, "after", 1);
    loop {
        let line = follow.line();
        if line == "after 0" {
            break;
        }
        assert!(line.starts_with("filler "), "only the filler comes before: {line:?}");
    }
    assert!(size(&mesh.dir.join("logs/chatty.log")) <= 2048, "the log is under its cap");
    let bad = mesh.run(&["log", "../etc"]);
    assert!(bad.code(2).error_line().starts_with("error: INVALID_ARGUMENT: "), "{bad}");
}
