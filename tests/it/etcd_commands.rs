//! The operator's commands on a mesh on etcd: a frontend on another
//! "host" (its own temp mesh, joined to the router's only by etcd and TCP)
//! lists and loads modules, describes one, monitors calls, watches and
//! publishes events, and stops the router, as it would on the router's
//! machine; the commands that work on this machine's files are refused.

use polis_testing::EtcdCluster;
use serde_json::{Value, json};

use crate::{
    etcd::{Host, TTL, token_file},
    util::{WAIT, wait_until},
};

fn next_json(process: &mut polis_testing::Process) -> Value {
    let line = process.line();
    serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("a JSON line ({e}): {line:?}\n{}", process.describe()))
}

#[test]
fn module_introspect_monitor_watch_publish_and_stop_reach_a_router_found_through_etcd() {
    let cluster = EtcdCluster::start(1);
    let url = cluster.url("polis/commands", TTL);
    let token = token_file(&cluster, "token", "commands-token\n");
    let server = Host::new(&url, &token);
    let client = Host::new(&url, &token);
    let mut router = server.router();
    let record = wait_until(WAIT, &client.mesh.dir, "a router in office", || client.resolve());

    // Modules: the router's host's, loaded on demand, as on that machine.
    let listed = client.run(&["module", "list", "--json"]).code(0).json();
    let echo = listed.as_array().unwrap().iter().find(|m| m["name"] == "echo").cloned();
    assert!(echo.is_some_and(|m| m["state"] == "available"), "{listed}");
    let loaded = client.run(&["module", "load", "echo"]).code(0).stdout();
    assert!(loaded.starts_with("echo running, pid "), "{loaded}");
    let described = client.run(&["introspect", "--json", "echo"]).code(0).json();
    assert!(described["methods"].as_array().unwrap().iter().any(|m| m["name"] == "stream"), "{described}");

    // A monitor sees a call from a third process.
    let mut monitor = client.mesh.start(client.polis(&["monitor", "echo.echo", "--json"]));
    assert_eq!(next_json(&mut monitor), json!({"type": "watching", "pattern": "echo.echo"}));
    client.run(&["call", "echo", "echo", r#"{"n":1}"#]).code(0);
    let call = next_json(&mut monitor);
    assert_eq!(
        (&call["type"], &call["method"], &call["code"]),
        (&json!("call"), &json!("echo"), &json!("OK"))
    );

    // An event published by one frontend reaches another's watch.
    let mut watch = client.mesh.start(client.polis(&["watch", "news.*"]));
    wait_until(WAIT, &client.mesh.dir, "the watch to subscribe", || {
        watch.stderr().contains("watching news.*").then_some(())
    });
    client.run(&["publish", "news.today", r#"{"n":7}"#]).code(0);
    assert_eq!(watch.event(), ("news.today".to_owned(), json!({"n": 7})));
    let refused = client.run(&["publish", "polis.module.started", "{}"]);
    refused.code(1);
    assert!(refused.error_line().contains("PERMISSION_DENIED"), "{refused}");

    // What works on this machine's files or terminal is refused, clearly.
    let attach = client.run(&["attach"]);
    attach.code(2);
    assert!(attach.error_line().contains("does not work with --discovery etcd"), "{attach}");

    // Stop: the router leaves office, and its process ends.
    let stopped = client.run(&["stop"]).code(0).stdout();
    assert_eq!(stopped.trim(), format!("router pid {} stopped", record["pid"]));
    let (status, stderr) = router.wait(WAIT);
    assert!(status.success(), "{stderr}");
    assert!(client.resolve().is_none(), "no router in office after the stop");
}
