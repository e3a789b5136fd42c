//! `polis-bench tcp`: a warm call over the router's TCP endpoint (a mesh
//! on etcd, token preamble, loopback) against the same call over
//! `router.sock`, on one router: the cost of the wire alone. Starts a
//! one-member etcd (`polis_testing::EtcdCluster`) and prints the figures.
//! The polis in `--bin-dir` must be built with `--features etcd`.

use std::{path::Path, time::Instant};

use polis_client::{CallOptions, Caller};
use polis_testing::{EtcdCluster, TestMesh};

const WARMUP: usize = 200;
const CALLS: usize = 2000;

pub(crate) fn run(bin_dir: &Path) -> anyhow::Result<()> {
    let bin_dir = &std::path::absolute(bin_dir)?;
    let cluster = EtcdCluster::start(1);
    let mesh = TestMesh::new(bin_dir.join("polis"))?;
    mesh.module("echo", bin_dir.join("polis-echo"), "");
    let token = cluster.dir().join("token");
    std::fs::write(&token, "bench-token\n")?;
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let url = cluster.url("bench/tcp", 5);
    let mut cmd = mesh.polis(&["--discovery", &url, "--token-file"]);
    cmd.arg(&token).args(["router", "--listen", "127.0.0.1:0"]);
    let mut router = mesh.start(cmd);
    let line = router.line();
    let addr =
        line.rsplit_once("tcp:").map(|(_, a)| a.to_owned()).ok_or_else(|| anyhow::anyhow!("{line}"))?;
    // In office through etcd, then serving: `router.json` says when.
    mesh.wait_router();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let unix = polis_mesh::transport::connect_channel(&mesh.dir.join("router.sock")).await?;
        let tcp =
            polis_mesh::tcp::connect_channel(&addr, &polis_mesh::tcp::Token::new("bench-token")).await?;
        let mut p50s = Vec::new();
        for (name, channel) in [("unix", unix), ("tcp", tcp)] {
            let caller = Caller::from_channel(channel, "polis-bench");
            let mut times = Vec::with_capacity(CALLS);
            for i in 0..WARMUP + CALLS {
                let start = Instant::now();
                caller.call("echo", "ping", Default::default(), CallOptions::default()).await?;
                if i >= WARMUP {
                    times.push(start.elapsed());
                }
            }
            times.sort();
            let (p50, p99) = (times[CALLS / 2], times[CALLS * 99 / 100]);
            println!("warm gRPC call over {name}: p50 {p50:?}, p99 {p99:?} ({CALLS} calls)");
            p50s.push(p50);
        }
        println!("tcp/unix p50: {:.2}x", p50s[1].as_secs_f64() / p50s[0].as_secs_f64());
        anyhow::Ok(())
    })?;
    router.kill();
    Ok(())
}
