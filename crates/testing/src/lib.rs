//! The one process harness of polis's tests, for polis itself, for
//! polis-bench and for module authors.
//!
//! [`TestMesh`] is a fresh mesh directory in a short temp root, with a
//! modules directory beside it and a home of its own. Every process it starts
//! (routers, standbys, frontends, modules, scripts, editors) is hermetic: it
//! gets `HOME`, the `XDG_*` directories and `XDG_RUNTIME_DIR` under the temp
//! root, and none of the outer `POLIS_*` variables, so nothing of the user's
//! leaks in (their installed modules, their mesh) and nothing leaks out.
//! It checks the mesh's invariants:
//! - at most one process holds `router.lock` at any instant
//!   ([`TestMesh::routers_in_office`], read from the kernel's lock table);
//! - every live process's published record has its lock held
//!   ([`TestMesh::check_records`]);
//! - no process of the mesh is left at teardown ([`TestMesh::teardown`]).
//!
//! A [`Process`] is killed and reaped on drop, and so is every process of the
//! mesh when the [`TestMesh`] goes. Every wait has a deadline, and a wait that
//! fails panics with the command, its exit status, stdout, stderr and a
//! listing of the mesh directory.
//!
//! ```no_run
//! use polis_testing::TestMesh;
//! use std::time::Duration;
//!
//! let mesh = TestMesh::new("target/debug/polis").unwrap();
//! mesh.module("mymod", "target/debug/my-module", "");
//! let mut router = mesh.start_router(&[]);
//! let _standby = mesh.start_standby(&[]);
//! let mut nvim = mesh.start_frontend("nvim");
//! assert_eq!(nvim.call("mymod ping"), "\"pong\"");
//! let mut events = mesh.watch("mymod.*");         // `polis watch`, subscribed
//! nvim.call(r#"mymod save {"n":1}"#);             // a method that publishes…
//! assert_eq!(events.event(), ("mymod.saved".to_owned(), serde_json::json!({"n": 1})));
//! router.kill();                                  // the standby takes over
//! assert_eq!(nvim.call("mymod ping"), "\"pong\""); // state and all
//! assert!(mesh.routers_in_office() <= 1);
//! mesh.check_records().unwrap();
//! mesh.teardown(Duration::from_secs(10)).unwrap();
//! ```
//!
//! # Layout
//! - [`etcd`]: a real etcd cluster on loopback, for a mesh across machines.
//! - [`netns`]: network namespaces as hosts, whose link can be cut.
//! - [`mesh`]: the temp mesh, its hermetic environment and its manifests.
//! - [`process`]: a process running in the background.
//! - [`run`]: a command run to its end.
//! - [`tls`]: a throwaway mesh CA (openssl) for TLS on a router's TCP endpoint.
//! - [`procs`]: processes seen through `/proc`.
//! - [`wait`]: polling with a deadline, and the listing shown on failure.
//!
//! It depends on no polis crate but `polis-discovery`, and never on the code
//! under test: it runs the binaries.

pub mod etcd;
pub mod mesh;
pub mod netns;
pub mod process;
pub mod procs;
pub mod run;
pub mod tls;
pub mod wait;

use std::{ffi::OsStr, time::Duration};

pub use etcd::EtcdCluster;
pub use mesh::TestMesh;
pub use netns::Netns;
pub use process::Process;
pub use run::Run;
pub use tls::MeshCa;
pub use wait::{listing, wait_until};

/// How long a harness step waits by default: generous, so that a loaded
/// machine does not fail a test; a deadline says "it happens at all".
pub const WAIT: Duration = Duration::from_secs(20);

/// A command for `program`, with the user's environment: the one place a
/// test, the harness or the bench creates a process. For a process under
/// test, use [`TestMesh::command`], which makes it hermetic; this one is for
/// tools that need the user's own setup (`cargo` building a crate).
#[allow(clippy::disallowed_methods)]
pub fn command(program: impl AsRef<OsStr>) -> std::process::Command {
    std::process::Command::new(program)
}
