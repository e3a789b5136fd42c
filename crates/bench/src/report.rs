//! BENCHMARKS.md: the machine, the command, the figures side by side, and
//! each target of the benchmark issue as a ratio, met or missed.

use std::{fmt::Write, time::Duration};

use crate::{
    CALLERS, COLD_RUNS, FAILOVER_ROUNDS, PAYLOAD, THROUGHPUT_FOR, WARM_CALLS,
    floor::Floor,
    machine::Machine,
    polis::PolisFigures,
    results::{Cold, Outcome, System},
    stats::{self, Samples},
};

/// The command that writes the report.
pub(crate) const COMMAND: &str = "cargo run --release -p polis-bench";

/// Everything one run measured.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) machine: Machine,
    pub(crate) floor: Outcome<Floor>,
    /// The floor with both processes on CPU 0.
    pub(crate) floor_one_cpu: Outcome<Floor>,
    pub(crate) polis: PolisFigures,
    pub(crate) norgopolis: System,
}

fn cell<T>(o: &Outcome<T>, show: impl Fn(&T) -> String) -> String {
    match o {
        Ok(v) => show(v),
        Err(e) => format!("not measured: {}", e.replace('|', "/").replace('\n', " ")),
    }
}

fn p50_p99(s: &Samples) -> String {
    format!("{} / {}", stats::duration(s.p50()), stats::duration(s.pct(99.0)))
}

fn cold_times(c: &Cold) -> String {
    match &c.times {
        Some(t) => format!("{} / {}", stats::duration(t.p50()), stats::duration(t.pct(90.0))),
        None => "no run succeeded".into(),
    }
}

fn success(c: &Cold) -> String {
    format!("{} / {} ({:.0} %)", c.ok(), c.runs, 100.0 * c.ok() as f64 / c.runs as f64)
}

/// `a / b`, when both were measured.
fn ratio<A, B>(a: &Outcome<A>, b: &Outcome<B>, f: impl Fn(&A, &B) -> Option<f64>) -> String {
    match (a, b) {
        (Ok(a), Ok(b)) => f(a, b).map_or("—".into(), |r| format!("{}×", stats::sig3(r))),
        _ => "—".into(),
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One target: what is wanted, what was measured, and whether it was met.
struct Target {
    name: &'static str,
    wanted: &'static str,
    measured: Outcome<(String, bool)>,
}

impl Run {
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        self.header(&mut out);
        self.figures(&mut out);
        self.targets(&mut out);
        self.notes(&mut out);
        out
    }

    fn header(&self, out: &mut String) {
        let m = &self.machine;
        let _ = write!(
            out,
            "# Benchmarks\n\n\
             Written by `polis-bench`; do not edit by hand. To measure again (it builds what it runs,\n\
             installing norgopolis-server and `protoc` if they are missing):\n\n\
             ```sh\n{COMMAND}\n```\n\n\
             - Machine: {} cores, {}, {}\n\
             - Date: {}; {}\n\
             - polis: commit {}, release build, {}\n\
             - Norgopolis: norgopolis-server 0.1.4, norgopolis-module 2.0.3, norgopolis-client 0.6.0 (release builds)\n\
             - One run, one machine, everything on loopback or Unix sockets; {PAYLOAD}-byte payloads.\n\n",
            m.cores, m.cpu, m.kernel, m.date, m.load, m.polis_rev, m.rustc
        );
    }

    fn figures(&self, out: &mut String) {
        let (p, n) = (&self.polis.system, &self.norgopolis);
        let (floor, one) = (&self.floor, &self.floor_one_cpu);
        let rows: Vec<[String; 4]> = vec![
            [
                format!("floor: Unix-socket round trip, {PAYLOAD} B (p50 / p99)"),
                cell(floor, |f| p50_p99(&f.socket)),
                "(same machine)".into(),
                "".into(),
            ],
            [
                format!("floor: pipe round trip, {PAYLOAD} B (p50 / p99)"),
                cell(floor, |f| p50_p99(&f.pipe)),
                "".into(),
                "".into(),
            ],
            [
                "floor on one CPU: Unix socket / pipe round trip (p50)".into(),
                cell(one, |f| {
                    format!("{} / {}", stats::duration(f.socket.p50()), stats::duration(f.pipe.p50()))
                }),
                "".into(),
                "".into(),
            ],
            [
                format!("warm call, frames module (p50 / p99 of {WARM_CALLS})"),
                cell(&p.warm, p50_p99),
                cell(&n.warm, p50_p99),
                ratio(&p.warm, &n.warm, |a, b| Some(secs(a.p50()) / secs(b.p50()))),
            ],
            [
                "warm call, frames module, all on one CPU (p50 / p99)".into(),
                cell(&p.warm_one_cpu, p50_p99),
                cell(&n.warm_one_cpu, p50_p99),
                ratio(&p.warm_one_cpu, &n.warm_one_cpu, |a, b| Some(secs(a.p50()) / secs(b.p50()))),
            ],
            [
                format!("warm call, jsonrpc module (p50 / p99 of {WARM_CALLS})"),
                cell(&self.polis.warm_jsonrpc, p50_p99),
                "no such module kind".into(),
                "".into(),
            ],
            [
                format!("throughput, {CALLERS} callers for {} s", THROUGHPUT_FOR.as_secs()),
                cell(&p.throughput, |t| format!("{} calls/s", stats::count(t.per_sec()))),
                cell(&n.throughput, |t| format!("{} calls/s", stats::count(t.per_sec()))),
                ratio(&p.throughput, &n.throughput, |a, b| Some(a.per_sec() / b.per_sec())),
            ],
            [
                format!("cold start to first reply (p50 / p90 of the successes, {COLD_RUNS} runs)"),
                cell(&p.cold, cold_times),
                cell(&n.cold, cold_times),
                ratio(&p.cold, &n.cold, |a, b| {
                    Some(secs(a.times.as_ref()?.p50()) / secs(b.times.as_ref()?.p50()))
                }),
            ],
            ["cold start success".into(), cell(&p.cold, success), cell(&n.cold, success), "".into()],
            [
                format!("failover gap, SIGKILL to next reply (p50 / p99 of {FAILOVER_ROUNDS})"),
                cell(&self.polis.failover, p50_p99),
                "no standby".into(),
                "".into(),
            ],
            [
                "router RSS, idle (echo loaded)".into(),
                cell(&p.rss_idle, |k| stats::mib(*k)),
                cell(&n.rss_idle, |k| stats::mib(*k)),
                ratio(&p.rss_idle, &n.rss_idle, |a, b| Some(*a as f64 / *b as f64)),
            ],
            [
                "router RSS, peak under the throughput load".into(),
                cell(&p.rss_load, |k| stats::mib(*k)),
                cell(&n.rss_load, |k| stats::mib(*k)),
                ratio(&p.rss_load, &n.rss_load, |a, b| Some(*a as f64 / *b as f64)),
            ],
        ];
        out.push_str(
            "## Figures\n\n| measure | polis | Norgopolis | polis ÷ Norgopolis |\n|---|---|---|---|\n",
        );
        for [a, b, c, d] in rows {
            let _ = writeln!(out, "| {a} | {b} | {c} | {d} |");
        }
        let errors = |s: &System| s.throughput.as_ref().map_or(0, |t| t.errors);
        if errors(p) + errors(n) > 0 {
            let _ = writeln!(
                out,
                "\nCalls that failed during the throughput run: polis {}, Norgopolis {}.",
                errors(p),
                errors(n)
            );
        }
        for (name, cold) in [("polis", &p.cold), ("Norgopolis", &n.cold)] {
            if let Ok(cold) = cold
                && !cold.failures.is_empty()
            {
                let reasons: Vec<String> =
                    cold.reasons().iter().map(|(count, r)| format!("{count} × `{r}`")).collect();
                let _ = writeln!(out, "\n{name}'s failed cold starts: {}.", reasons.join(", "));
            }
        }
        out.push('\n');
    }

    fn target_list(&self) -> Vec<Target> {
        let (p, n) = (&self.polis.system, &self.norgopolis);
        let both =
            |a: Result<f64, String>, b: Result<f64, String>| -> Result<(f64, f64), String> { Ok((a?, b?)) };
        let p50 = |s: &Outcome<Samples>| s.as_ref().map(|s| secs(s.p50())).map_err(Clone::clone);
        let tput =
            |t: &Outcome<crate::results::Throughput>| t.as_ref().map(|t| t.per_sec()).map_err(Clone::clone);
        vec![
            Target {
                name: "warm p50 vs Norgopolis's",
                wanted: "≤ 1/3 (0.33×)",
                measured: both(p50(&p.warm), p50(&n.warm)).map(|(a, b)| {
                    (format!("{}× ({} vs {})", stats::sig3(a / b), fmt_s(a), fmt_s(b)), a / b <= 1.0 / 3.0)
                }),
            },
            Target {
                name: "throughput vs Norgopolis's",
                wanted: "≥ 4×",
                measured: both(tput(&p.throughput), tput(&n.throughput))
                    .map(|(a, b)| (format!("{}×", stats::sig3(a / b)), a / b >= 4.0)),
            },
            Target {
                name: "cold start",
                wanted: "100 % success, p50 ≤ Norgopolis's",
                measured: match (&p.cold, &n.cold) {
                    (Ok(a), Ok(b)) => {
                        let all = a.ok() == a.runs;
                        let (pa, pb) =
                            (a.times.as_ref().map(Samples::p50), b.times.as_ref().map(Samples::p50));
                        let faster = match (pa, pb) {
                            (Some(x), Some(y)) => x <= y,
                            (Some(_), None) => true,
                            _ => false,
                        };
                        let p50s = match (pa, pb) {
                            (Some(x), Some(y)) => {
                                format!("p50 {} vs {}", stats::duration(x), stats::duration(y))
                            }
                            (Some(x), None) => {
                                format!("p50 {}; Norgopolis never succeeded", stats::duration(x))
                            }
                            _ => "no polis cold start succeeded".into(),
                        };
                        Ok((format!("{}/{} succeeded; {p50s}", a.ok(), a.runs), all && faster))
                    }
                    (Err(e), _) | (_, Err(e)) => Err(e.clone()),
                },
            },
            Target {
                name: "warm p50 vs the floor (socket + pipe round trip)",
                wanted: "≤ 10×",
                measured: vs_floor(&p.warm, &self.floor),
            },
            Target {
                name: "the same, everything on one CPU",
                wanted: "≤ 10×",
                measured: vs_floor(&p.warm_one_cpu, &self.floor_one_cpu),
            },
            Target {
                name: "failover gap p50",
                wanted: "≤ 50 ms",
                measured: self
                    .polis
                    .failover
                    .as_ref()
                    .map(|s| (stats::duration(s.p50()), s.p50() <= Duration::from_millis(50)))
                    .map_err(Clone::clone),
            },
            Target {
                name: "router RSS when idle",
                wanted: "≤ 8 MiB",
                measured: p.rss_idle.as_ref().map(|k| (stats::mib(*k), *k <= 8 * 1024)).map_err(Clone::clone),
            },
        ]
    }

    fn targets(&self, out: &mut String) {
        out.push_str("## Targets\n\n| target | wanted | measured | verdict |\n|---|---|---|---|\n");
        for t in self.target_list() {
            let (measured, verdict) = match t.measured {
                Ok((m, true)) => (m, "met"),
                Ok((m, false)) => (m, "**missed**"),
                Err(e) => (format!("not measured: {}", e.replace('|', "/")), "**not measured**"),
            };
            let _ = writeln!(out, "| {} | {} | {measured} | {verdict} |", t.name, t.wanted);
        }
        out.push('\n');
    }

    /// (target, met) for the summary on stderr.
    pub(crate) fn verdicts(&self) -> Vec<(&'static str, Option<bool>)> {
        self.target_list().into_iter().map(|t| (t.name, t.measured.ok().map(|(_, met)| met))).collect()
    }

    fn notes(&self, out: &mut String) {
        out.push_str(&format!(
            "## How each figure is taken\n\n\
             - **Floor**: `polis-bench` re-runs itself as an echo peer and exchanges {PAYLOAD}-byte messages with it, \
             blocking reads and writes, 5000 timed round trips over a Unix socket and over a pair of pipes. \
             A call through polis crosses one of each, so the floor is their p50s added.\n\
             - **On one CPU**: the same, and a warm call's figures, with every process involved pinned to CPU 0 \
             (the bench pins itself; what it starts inherits it). On this virtual machine waking a process on \
             another, idle CPU costs tens of microseconds, and a busy machine hides that cost; on one CPU a \
             wake-up is a plain context switch, so these rows show what the software itself costs.\n\
             - **Warm call**: one `polis_client::Client` (a frontend with its session) in a current-thread runtime, \
             200 untimed calls, then {WARM_CALLS} sequential `echo` calls timed one by one; the frames module is \
             `polis-echo`, the jsonrpc one `modules/pyecho` (Python). Norgopolis: `norgopolis-bench-client` \
             (also current-thread) against a running `norgopolis-server` and the `echo` module of `bench/norgopolis`, \
             which returns its MessagePack bytes unchanged.\n\
             - **Throughput**: {CALLERS} callers, each its own connection (polis: its own `Client`), each calling \
             in a loop, on one current-thread runtime, for {} s; calls that completed, per second.\n\
             - **Cold start**: polis: a fresh mesh directory each run, `polis call echo echo '…'` timed from spawn to exit \
             (it launches the router, which starts echo), then `polis stop`. Norgopolis: a fresh module directory and no \
             server, the bench client timed from spawn to exit; norgopolis-client starts `norgopolis-server`, reads its \
             `ready` and connects once, which fails when the server has not bound its port yet; then the server is killed.\n\
             - **Failover gap**: a router (`polis router`) and a standby (`polis router --standby`), one frontend calling echo \
             in a loop; the router is killed with SIGKILL and the gap runs to the end of the first successful call started \
             after the kill; a new standby is started each round. Norgopolis has no standby, so no figure.\n\
             - **RSS**: `VmRSS` of the router (norgopolis-server) process from `/proc/<pid>/status`, 0.5 s after the first \
             call loaded echo, and its peak (sampled every 50 ms) during the throughput run. Modules are not counted.\n",
            THROUGHPUT_FOR.as_secs()
        ));
    }
}

/// A warm p50 against a floor, and whether it is within 10×.
fn vs_floor(warm: &Outcome<Samples>, floor: &Outcome<Floor>) -> Outcome<(String, bool)> {
    let (w, f) = match (warm, floor) {
        (Ok(w), Ok(f)) => (w.p50(), f.p50()),
        (Err(e), _) | (_, Err(e)) => return Err(e.clone()),
    };
    let r = secs(w) / secs(f);
    Ok((format!("{}× ({} vs {})", stats::sig3(r), stats::duration(w), stats::duration(f)), r <= 10.0))
}

fn fmt_s(s: f64) -> String {
    stats::duration(Duration::from_secs_f64(s))
}
