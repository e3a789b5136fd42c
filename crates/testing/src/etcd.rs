//! A real etcd cluster for tests of a mesh across machines: `n` members of
//! Debian's `etcd` (3.4; `$POLIS_TEST_ETCD` names another binary) on free
//! loopback ports, each with a data dir of its own in a temp dir, each a
//! [`Process`] killed and reaped on drop.
//!
//! Raft is tuned for a loopback test (50 ms heartbeats, 500 ms elections),
//! so that a member's death costs the cluster a fraction of a second.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use crate::{Process, WAIT};

/// One member: its ports, and its process while it runs.
#[derive(Debug)]
struct Member {
    name: String,
    client: u16,
    peer: u16,
    process: Option<Process>,
}

/// A running etcd cluster; every member is killed and reaped on drop, and
/// the temp dir removed.
#[derive(Debug)]
pub struct EtcdCluster {
    tmp: tempfile::TempDir,
    members: Vec<Member>,
    started: usize,
    /// Addresses the members serve clients on besides loopback (the root
    /// side of a [`crate::Netns`]'s link, for hosts in namespaces).
    also_on: Vec<std::net::IpAddr>,
}

/// The etcd binary: `$POLIS_TEST_ETCD`, else `etcd` on `PATH`.
fn binary() -> PathBuf {
    std::env::var_os("POLIS_TEST_ETCD").map_or_else(|| PathBuf::from("etcd"), PathBuf::from)
}

/// `n` distinct ports free now on loopback: the kernel's picks, all held
/// until every one is picked (so none repeats), then released for etcd.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    listeners.iter().map(|l| l.local_addr().expect("its address").port()).collect()
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster has a leader.
    #[track_caller]
    pub fn start(n: usize) -> Self {
        Self::start_on(n, &[])
    }

    /// [`EtcdCluster::start`], the members serving clients on the addresses
    /// `also_on` too (on the same ports as on loopback), so that hosts in
    /// network namespaces can reach them ([`EtcdCluster::url_at`]).
    #[track_caller]
    pub fn start_on(n: usize, also_on: &[std::net::IpAddr]) -> Self {
        let tmp = tempfile::Builder::new().prefix("etcd").tempdir_in("/tmp").expect("a temp dir");
        let ports = free_ports(2 * n);
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: ports[2 * i],
                peer: ports[2 * i + 1],
                process: None,
            })
            .collect();
        let mut cluster = Self { tmp, members, started: 0, also_on: also_on.to_vec() };
        for i in 0..n {
            cluster.start_member(i);
        }
        cluster.wait_healthy();
        cluster
    }

    /// `HOST:PORT,…` of every member's client endpoint.
    pub fn endpoints(&self) -> String {
        self.members.iter().map(|m| format!("127.0.0.1:{}", m.client)).collect::<Vec<_>>().join(",")
    }

    /// The discovery URL of a mesh under `prefix` with leases of `ttl` seconds.
    pub fn url(&self, prefix: &str, ttl: u64) -> String {
        format!("etcd://{}/{prefix}?ttl={ttl}", self.endpoints())
    }

    /// The discovery URL of [`EtcdCluster::url`], for a host that reaches
    /// the members at `ip` (one of the addresses given to
    /// [`EtcdCluster::start_on`]).
    pub fn url_at(&self, ip: std::net::IpAddr, prefix: &str, ttl: u64) -> String {
        let endpoints: Vec<String> = self.members.iter().map(|m| format!("{ip}:{}", m.client)).collect();
        format!("etcd://{}/{prefix}?ttl={ttl}", endpoints.join(","))
    }

    /// The temp dir holding the members' data dirs and logs.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn start_member(&mut self, i: usize) {
        let initial = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let member = &self.members[i];
        let data = self.tmp.path().join(&member.name);
        let client = format!("http://127.0.0.1:{}", member.client);
        let listen: Vec<String> = std::iter::once(client.clone())
            .chain(self.also_on.iter().map(|ip| format!("http://{ip}:{}", member.client)))
            .collect();
        let peer = format!("http://127.0.0.1:{}", member.peer);
        let mut cmd = crate::command(binary());
        cmd.arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &listen.join(","), "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial, "--initial-cluster-token", "polis-test"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"])
            .stdin(Stdio::null());
        // A restarted member finds its data dir, and with it the cluster.
        self.started += 1;
        let log = self.tmp.path().join(format!("{}.{}.log", member.name, self.started));
        let process = Process::start(cmd, log, self.tmp.path().to_owned());
        self.members[i].process = Some(process);
    }

    /// Kills member `i` with SIGKILL and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].process.take() {
            p.kill();
        }
    }

    /// Starts member `i` again, on its data dir.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].process.is_none(), "member {i} runs already");
        self.start_member(i);
    }

    /// A running member that is not the raft leader: killing it costs the
    /// cluster no election (killing the leader costs one, an election
    /// timeout during which no lease is renewed).
    #[track_caller]
    pub fn follower(&mut self) -> usize {
        self.wait_healthy();
        let running = (0..self.members.len()).filter(|&i| self.members[i].process.is_some());
        let followers: Vec<usize> =
            running.filter(|&i| is_leader(self.members[i].client) == Some(false)).collect();
        *followers.first().expect("a running member that is not the leader")
    }

    /// Revokes the lease of whoever holds the election `name` (a key such as
    /// `/PREFIX/router`, the prefix with its leading `/`; the holder's key is the oldest under `name/`), as if
    /// that lease had lapsed, but now: the next candidate takes office at
    /// once. Its lease id; panics if nobody holds the election.
    #[track_caller]
    pub fn revoke_leader(&self, name: &str) -> i64 {
        let port = self.members.iter().find(|m| m.process.is_some()).expect("a running member").client;
        let (key, end) = (format!("{name}/"), format!("{name}0"));
        let range = serde_json::json!({"key": base64(key.as_bytes()), "range_end": base64(end.as_bytes())});
        let reply = post(port, "/v3/kv/range", &range).expect("etcd answers /v3/kv/range");
        let number = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<i64>().ok());
        let kvs = reply["kvs"].as_array().cloned().unwrap_or_default();
        let leader = kvs.iter().min_by_key(|kv| number(&kv["create_revision"])).unwrap_or_else(|| {
            panic!("nobody holds the election {name}: {reply}");
        });
        let lease = number(&leader["lease"]).expect("the leader's key has a lease");
        let revoked = post(port, "/v3/lease/revoke", &serde_json::json!({"ID": lease.to_string()}));
        assert!(revoked.is_some_and(|r| r.get("error").is_none()), "revoke lease {lease}");
        lease
    }

    /// Whether member `i` answers `/health` with a leader in the cluster.
    pub fn is_healthy(&self, i: usize) -> bool {
        health(self.members[i].client)
    }

    /// Waits within [`WAIT`] until every running member reports health.
    #[track_caller]
    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let running: Vec<usize> =
                (0..self.members.len()).filter(|&i| self.members[i].process.is_some()).collect();
            if running.iter().all(|&i| self.is_healthy(i)) {
                return;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .members
                    .iter_mut()
                    .filter_map(|m| m.process.as_mut().map(Process::describe))
                    .collect();
                panic!("the etcd cluster did not become healthy within {WAIT:?}\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// POST /v3/maintenance/status on a member's client port: whether it is
/// the raft leader (its member id is the leader's), if it answers.
fn is_leader(port: u16) -> Option<bool> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "POST /v3/maintenance/status HTTP/1.0\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}";
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    let (_, body) = reply.split_once("\r\n\r\n")?;
    let status: serde_json::Value = serde_json::from_str(body).ok()?;
    let (member, leader) = (status["header"]["member_id"].as_str()?, status["leader"].as_str()?);
    Some(member == leader)
}

/// GET /health on a member's client port: `{"health":"true"}` once it sees a leader.
fn health(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.contains("\"health\":\"true\"")
}

/// POST `body` to etcd's JSON gateway on a member's client port: the reply
/// body as JSON, if it answers.
fn post(port: u16, path: &str, body: &serde_json::Value) -> Option<serde_json::Value> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let body = body.to_string();
    let request =
        format!("POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    let (_, body) = reply.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// Standard base64, as etcd's JSON gateway takes keys.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_pads_as_the_standard_says() {
        let cases: [(&[u8], &str); 5] = [
            (b"", ""),
            (b"a", "YQ=="),
            (b"ab", "YWI="),
            (b"abc", "YWJj"),
            (b"/polis/m/router/", "L3BvbGlzL20vcm91dGVyLw=="),
        ];
        for (bytes, encoded) in cases {
            assert_eq!(super::base64(bytes), encoded);
        }
    }
}
