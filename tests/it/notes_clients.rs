//! The notes module through two Rust frontends at once (`polis-client`,
//! as an editor plugin or a tool embeds it): the same exact answers to
//! calls made at the same moment, streams among them, and an edit that one
//! sees as a `notes.changed` event and the other in its next search.

use polis_client::{Client, ClientOptions, Notice};
use serde_json::{Value, json};

use crate::{
    notes::{index, install, sample},
    util::{TestMesh, WAIT, mesh},
};

async fn client(mesh: &TestMesh, name: &str) -> Client {
    let options =
        ClientOptions { mesh_dir: Some(mesh.dir.clone()), launch: None, ..ClientOptions::new(name) };
    Client::connect(options).await.expect("connect")
}

fn paths(hits: &Value) -> Vec<&str> {
    hits.as_array().unwrap_or_else(|| panic!("{hits}")).iter().map(|h| h["path"].as_str().unwrap()).collect()
}

/// `tasks {state}` as a stream: the task texts, in order.
async fn tasks(c: &Client, state: &str) -> Vec<String> {
    let mut items = c.call_stream("notes", "tasks", &json!({ "state": state })).await.expect("tasks");
    let mut texts = Vec::new();
    while let Some(item) = items.next().await {
        texts.push(item.expect("a task")["text"].as_str().unwrap().to_owned());
    }
    texts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rust_frontends_at_once_get_the_same_answers_and_see_an_edit() {
    let mesh = mesh();
    let dir = sample(&mesh);
    install(&mesh, &dir, "index_on_start = false");
    let _router = tokio::task::block_in_place(|| mesh.start_router(&["--linger", "never"]));
    let summary = tokio::task::block_in_place(|| index(&mesh, json!({})));
    assert_eq!(summary["files"], 12, "{summary}");
    let a = client(&mesh, "frontend-a").await;
    let b = client(&mesh, "frontend-b").await;
    let mut changes = a.subscribe("notes.changed").await.expect("subscribe");

    let search = json!({ "q": "tomatoes" });
    let back = json!({ "path": "garden" });
    for _ in 0..10 {
        // Each asks both at the same moment, in the other order.
        let (sa, bb, ba, sb, ta, tb) = tokio::join!(
            a.call_json("notes", "search", &search, None),
            b.call_json("notes", "backlinks", &back, None),
            a.call_json("notes", "backlinks", &back, None),
            b.call_json("notes", "search", &search, None),
            tasks(&a, "urgent"),
            tasks(&b, "urgent"),
        );
        let (sa, sb, ba, bb) = (sa.unwrap(), sb.unwrap(), ba.unwrap(), bb.unwrap());
        assert_eq!(paths(&sa), ["garden.norg", "journal/2024-01-01.norg", "projects/polis.norg"]);
        assert_eq!(sa, sb);
        assert_eq!(
            paths(&ba),
            ["index.norg", "index.norg", "journal/2024-01-01.norg", "projects/polis.norg"]
        );
        assert_eq!(ba, bb);
        assert_eq!(ta, ["Ship the notes module", "fix the failover gap"]);
        assert_eq!(ta, tb);
    }

    // A new note, saved as many editors do (written aside, renamed into
    // place: one change, whole): a hears of it, b finds it.
    let aside = dir.join("journal/.2024-01-03.norg.tmp");
    std::fs::write(&aside, "* Wednesday\n  zanzibar\n").unwrap();
    std::fs::rename(&aside, dir.join("journal/2024-01-03.norg")).unwrap();
    let event = loop {
        match tokio::time::timeout(WAIT, changes.next()).await {
            Ok(Some(Notice::Event(e))) => {
                let value = e.json().expect("a JSON event");
                if value["path"] == "journal/2024-01-03.norg" {
                    break value;
                }
            }
            other => panic!("no notes.changed for the new note within {WAIT:?}: {other:?}"),
        }
    };
    assert_eq!((&event["workspace"], &event["kind"]), (&json!("sample"), &json!("created")), "{event}");
    let found = b.call_json("notes", "search", &json!({ "q": "zanzibar" }), None).await.unwrap();
    assert_eq!(paths(&found), ["journal/2024-01-03.norg"], "announced after the index has it");
    a.close().await;
    b.close().await;
}
