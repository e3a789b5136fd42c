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

/// TLS on the router's TCP endpoint: a router with a certificate of the
/// mesh CA publishes `tls:`, and a frontend trusting that CA calls it; a
/// frontend without the CA, one trusting another CA, a plain-text client
/// and a TLS client of a plain router are refused before the token could
/// leak, and so is a key file that others may read.
#[test]
fn a_router_serving_tls_is_reached_only_by_frontends_trusting_the_mesh_ca() {
    use std::io::{Read, Write};

    let cluster = EtcdCluster::start(1);
    let url = cluster.url("polis/tls", TTL);
    let token = token_file(&cluster, "token", "tls-token\n");
    let ca = polis_testing::MeshCa::new(&cluster.dir().join("ca"));
    let issued = ca.issue("router", "127.0.0.1");
    let server = Host::new(&url, &token);
    let client = Host::new(&url, &token);

    // A key others may read is refused at start.
    let loose = cluster.dir().join("loose.key");
    std::fs::copy(&issued.key, &loose).unwrap();
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut cmd = server.polis(&["router", "--listen", "127.0.0.1:0", "--tls-cert"]);
    cmd.arg(&issued.cert).arg("--tls-key").arg(&loose);
    let refused = server.mesh.run_command(cmd);
    refused.code(5);
    assert!(
        refused.error_line().contains("TLS key") && refused.error_line().contains("chmod 600"),
        "{refused}"
    );

    let mut cmd = server.polis(&["router", "--listen", "127.0.0.1:0", "--tls-cert"]);
    cmd.arg(&issued.cert).arg("--tls-key").arg(&issued.key);
    let mut router = server.mesh.start(cmd);
    assert!(router.line().contains(", tls:127.0.0.1:"), "{}", router.describe());
    let record = wait_until(WAIT, &client.mesh.dir, "a router in office", || client.resolve());
    let endpoint = record["endpoint"].as_str().unwrap().to_owned();
    assert!(endpoint.starts_with("tls:127.0.0.1:"), "{record}");

    let trusting = |ca: &std::path::Path, args: &[&str]| {
        let mut cmd = client.polis(&["--tls-ca"]);
        cmd.arg(ca).args(args);
        client.mesh.run_command(cmd)
    };
    assert_eq!(trusting(&ca.cert(), &["call", "echo", "ping"]).code(0).stdout().trim(), "\"pong\"");
    let status = trusting(&ca.cert(), &["status", "--json"]).code(0).json();
    assert_eq!(status["router"]["pid"], record["pid"]);

    let without = client.run(&["call", "echo", "ping"]);
    without.code(5);
    assert!(without.error_line().contains("serves TLS: give --tls-ca FILE"), "{without}");
    let other = polis_testing::MeshCa::new(&cluster.dir().join("other-ca"));
    let wrong = trusting(&other.cert(), &["call", "echo", "ping"]);
    wrong.code(5);
    assert!(wrong.error_line().contains("TLS with the router at 127.0.0.1:"), "{wrong}");

    // The token in plain text does not get a plain-text answer.
    let mut raw = std::net::TcpStream::connect(endpoint.strip_prefix("tls:").unwrap()).unwrap();
    raw.set_read_timeout(Some(WAIT)).unwrap();
    raw.write_all(b"polis-auth tls-token\n").unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"ok"), "a plain-text client got in: {answer:?}");

    // A plain router is not called by a client that asks for TLS.
    router.kill();
    let mut plain = server.router();
    assert!(plain.line().contains(", tcp:127.0.0.1:"), "{}", plain.describe());
    wait_until(WAIT, &client.mesh.dir, "the plain router in office", || {
        client.resolve().filter(|r| r["endpoint"].as_str().is_some_and(|e| e.starts_with("tcp:")))
    });
    let downgraded = trusting(&ca.cert(), &["call", "echo", "ping"]);
    downgraded.code(5);
    assert!(downgraded.error_line().contains("does not serve TLS, and --tls-ca asks for it"), "{downgraded}");
}
