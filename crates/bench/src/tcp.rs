//! `polis-bench tcp`: a warm call over the router's TCP endpoint (a mesh
//! on etcd, token preamble, loopback), plain and inside TLS (a second
//! router, with a certificate of a throwaway mesh CA), against the same
//! call over `router.sock`: the cost of the wire alone. Starts a
//! one-member etcd (`polis_testing::EtcdCluster`) and prints the figures.
//! The polis in `--bin-dir` must be built with `--features etcd`.

use std::{path::Path, time::Instant};

use polis_client::{CallOptions, Caller};
use polis_testing::{EtcdCluster, MeshCa, TestMesh};

const WARMUP: usize = 200;
const CALLS: usize = 2000;
const ROUNDS: usize = 5;

pub(crate) fn run(bin_dir: &Path) -> anyhow::Result<()> {
    let bin_dir = &std::path::absolute(bin_dir)?;
    let cluster = EtcdCluster::start(1);
    let token = cluster.dir().join("token");
    std::fs::write(&token, "bench-token\n")?;
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let ca = MeshCa::new(&cluster.dir().join("ca"));
    let issued = ca.issue("router", "127.0.0.1");
    // Two routers, each in office for a prefix of its own: plain TCP, and
    // TLS with a certificate of the mesh CA.
    let start = |prefix: &str, tls: bool| -> anyhow::Result<(TestMesh, polis_testing::Process, String)> {
        let mesh = TestMesh::new(bin_dir.join("polis"))?;
        mesh.module("echo", bin_dir.join("polis-echo"), "");
        let mut cmd = mesh.polis(&["--discovery", &cluster.url(prefix, 5), "--token-file"]);
        cmd.arg(&token).args(["router", "--listen", "127.0.0.1:0"]);
        if tls {
            cmd.arg("--tls-cert").arg(&issued.cert).arg("--tls-key").arg(&issued.key);
        }
        let mut router = mesh.start(cmd);
        let line = router.line();
        let addr = line
            .rsplit_once(':')
            .and_then(|(rest, port)| Some(format!("{}:{port}", rest.rsplit_once(':')?.1)));
        let addr = addr.ok_or_else(|| anyhow::anyhow!("no address in {line:?}"))?;
        // In office through etcd, then serving: `router.json` says when.
        mesh.wait_router();
        Ok((mesh, router, addr))
    };
    let (mesh, mut plain, tcp_addr) = start("bench/tcp", false)?;
    let (_tls_mesh, mut secure, tls_addr) = start("bench/tls", true)?;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let token = polis_mesh::tcp::Token::new("bench-token");
        let client_tls = polis_mesh::tls::ClientTls::from_ca_file(&ca.cert())?;
        let wires = [
            ("unix", polis_mesh::transport::connect_channel(&mesh.dir.join("router.sock")).await?),
            ("tcp", polis_mesh::tcp::connect_channel(&tcp_addr, &token, None).await?),
            ("tcp+tls", polis_mesh::tcp::connect_channel(&tls_addr, &token, Some(client_tls)).await?),
        ];
        let callers: Vec<_> =
            wires.into_iter().map(|(n, c)| (n, Caller::from_channel(c, "polis-bench"))).collect();
        // Alternating rounds, so that a busy moment of the machine falls on
        // every wire alike; the figure is the median of the rounds' p50s.
        let mut p50s = vec![Vec::new(); callers.len()];
        let mut p99s = vec![Vec::new(); callers.len()];
        for _ in 0..ROUNDS {
            for (i, (_, caller)) in callers.iter().enumerate() {
                let mut times = Vec::with_capacity(CALLS);
                for n in 0..WARMUP + CALLS {
                    let start = Instant::now();
                    caller.call("echo", "ping", Default::default(), CallOptions::default()).await?;
                    if n >= WARMUP {
                        times.push(start.elapsed());
                    }
                }
                times.sort();
                p50s[i].push(times[CALLS / 2]);
                p99s[i].push(times[CALLS * 99 / 100]);
            }
        }
        let median = |v: &mut Vec<std::time::Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let p50: Vec<_> = p50s.iter_mut().map(median).collect();
        for (i, (name, _)) in callers.iter().enumerate() {
            println!(
                "warm gRPC call over {name}: p50 {:?}, p99 {:?} (median of {ROUNDS} rounds of {CALLS})",
                p50[i],
                median(&mut p99s[i])
            );
        }
        println!("tcp/unix p50: {:.2}x", p50[1].as_secs_f64() / p50[0].as_secs_f64());
        println!("tcp+tls/unix p50: {:.2}x (target <= 1.5x)", p50[2].as_secs_f64() / p50[0].as_secs_f64());
        anyhow::Ok(())
    })?;
    plain.kill();
    secure.kill();
    Ok(())
}
