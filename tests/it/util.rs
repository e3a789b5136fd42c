//! What the integration tests share beyond the harness (`polis_testing`):
//! the binaries of this package, and a temp mesh that runs them.

pub(crate) use polis_testing::{Process, TestMesh, WAIT, listing, wait_until};

pub(crate) const POLIS: &str = env!("CARGO_BIN_EXE_polis");
pub(crate) const ECHO: &str = env!("CARGO_BIN_EXE_polis-echo");
pub(crate) const COUNTER: &str = env!("CARGO_BIN_EXE_polis-counter");

/// A fresh hermetic temp mesh run by this package's `polis`.
pub(crate) fn mesh() -> TestMesh {
    TestMesh::new(POLIS).expect("create a temp mesh")
}

/// A JSON-RPC module that never answers `wait`, and appends the id of every
/// `$/cancel` it receives to `cancels` in its directory.
pub(crate) const WAITER: &str = r#"#!/usr/bin/env python3
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "initialize":
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {}}), flush=True)
    elif msg.get("method") == "$/cancel":
        with open("cancels", "a") as f:
            f.write("%d\n" % msg["params"]["id"])
"#;
