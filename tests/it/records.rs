//! Node records as `polis ls` and `polis resolve` read them.

use crate::util::{WAIT, mesh};

#[test]
fn a_record_stops_being_listed_the_moment_its_process_dies() {
    let mesh = mesh();
    let mut router = mesh.spawn(&["router"]);
    let record = mesh.wait_router();
    let ls = mesh.run(&["ls", "--json"]).code(0).json();
    assert_eq!(ls["nodes"][0]["id"], record.id.to_string());

    router.kill();
    // No heartbeat and no timeout: the kernel released the lock with the process.
    let ls = mesh.run(&["ls", "--json"]).code(0).json();
    assert_eq!(ls["nodes"], serde_json::json!([]), "the dead node is not listed");
    assert_eq!(ls["router"], serde_json::Value::Null);
    assert!(mesh.dir.join(format!("nodes/{}.json", record.id)).exists(), "ignored, not yet collected");
    mesh.run(&["resolve", "router"]).code(3);

    // The next router collects it.
    let _next = mesh.spawn(&["router"]);
    let next = mesh.wait_router();
    assert_eq!(next.epoch, Some(2));
    let dead = mesh.dir.join(format!("nodes/{}.json", record.id));
    crate::util::wait_until(WAIT, &mesh.dir, "the dead record to be collected", || {
        (!dead.exists()).then_some(())
    });
}

#[test]
fn unreadable_records_are_skipped_with_a_warning() {
    let mesh = mesh();
    let _router = mesh.spawn(&["router"]);
    let record = mesh.wait_router();

    let bad: [(&str, &[u8], &str); 4] = [
        ("garbage", b"\x7fELF\x02\x01 not a record at all", "not JSON"),
        ("truncated", br#"{"format":1,"id":"#, "truncated JSON"),
        ("unknown format", br#"{"format":7,"id":"x","role":"module"}"#, "unknown record format 7"),
        ("empty", b"", "empty file"),
    ];
    let (mut files, mut locks) = (Vec::new(), Vec::new());
    for (_, bytes, _) in &bad {
        let id = uuid::Uuid::new_v4();
        // Held, as a live node's is: the router collects only the records
        // of dead nodes, and it may do so at any moment after taking office.
        let lock = std::fs::File::create(mesh.dir.join(format!("nodes/{id}.lock"))).unwrap();
        lock.lock().unwrap();
        locks.push(lock);
        let path = mesh.dir.join(format!("nodes/{id}.json"));
        std::fs::write(&path, bytes).unwrap();
        files.push(path);
    }

    for args in [&["ls", "--json"][..], &["ls"][..]] {
        let run = mesh.run(args);
        run.code(0);
        let stderr = run.stderr();
        for ((what, _, reason), path) in bad.iter().zip(&files) {
            let line = stderr
                .lines()
                .find(|l| l.contains(&path.display().to_string()))
                .unwrap_or_else(|| panic!("no warning for the {what} record\n{run}"));
            assert!(line.starts_with("warning: skipping ") && line.contains(reason), "{what}: {line}");
        }
        assert!(run.stdout().contains(&record.id.to_string()), "the live record is still listed\n{run}");
    }
    let resolved = mesh.run(&["resolve", "router"]).code(0).json();
    assert_eq!(resolved["id"], record.id.to_string());
    assert_eq!(resolved["epoch"], 1);
}

#[test]
fn resolve_prints_contract_json_or_exits_3() {
    let mesh = mesh();
    let run = mesh.run(&["resolve", "nothing-here"]);
    run.code(3);
    assert!(run.stderr().starts_with("error: NOT_FOUND: no live node serves \"nothing-here\""), "{run}");
    assert_eq!(run.stderr().lines().count(), 1, "one error line\n{run}");

    let _router = mesh.spawn(&["router"]);
    let record = mesh.wait_router();
    let json = mesh.run(&["resolve", "router"]).code(0).json();
    for key in
        ["format", "id", "role", "name", "services", "pid", "version", "started_at", "endpoint", "router"]
    {
        assert!(json.get(key).is_some(), "contract field {key} missing: {json}");
    }
    assert_eq!(json["role"], "router");
    assert_eq!(json["pid"], record.pid);
    assert_eq!(json["endpoint"], format!("unix:{}", mesh.dir.join("router.sock").display()));
}

#[test]
fn usage_errors_exit_2() {
    let mesh = mesh();
    mesh.run(&["no-such-command"]).code(2);
    mesh.run(&["resolve"]).code(2);
}
