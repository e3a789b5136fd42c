//! BENCHMARKS.md: the machine, the command, the figures side by side, and
//! each target of the benchmark issue as a ratio, met or missed.

use std::{fmt::Write, time::Duration};

use crate::{
    CALLERS, CALLERS_MANY, COLD_RUNS, FAILOVER_ROUNDS, PAYLOAD, PROFILE_CALLS, RUNTIME_ENV, THROUGHPUT_FOR,
    TRACED_LOAD_FOR, WARM_CALLS, WARMUP_CALLS,
    floor::Floor,
    machine::Machine,
    polis::PolisFigures,
    procs::Syscalls,
    results::{Cold, Outcome, Profile, System, Throughput},
    stats::{self, Samples},
};

/// The command that writes the report.
pub(crate) const COMMAND: &str = "cargo run --release -p polis-bench";

/// Everything from this line on is written by hand and kept as it is.
pub(crate) const MARKER: &str = "<!-- Hand-written sections below are kept by polis-bench. -->";

/// The previous warm p50 through `polis_client` over gRPC (BENCHMARKS.md at
/// fffcd70, when gRPC was the only wire): "no slower than today".
const GRPC_TODAY: Duration = Duration::from_micros(160);

/// The new report followed by the hand-written part of `old` (the marker
/// and all after it), or by the marker alone when `old` has none.
pub(crate) fn keep_hand_written(generated: &str, old: Option<&str>) -> String {
    let kept = old.and_then(|old| old.find(MARKER).map(|at| &old[at..])).unwrap_or(MARKER);
    let mut out = generated.trim_end().to_owned();
    out.push_str("\n\n");
    out.push_str(kept.trim_end());
    out.push('\n');
    out
}

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
        self.profiles(&mut out);
        self.flavours(&mut out);
        self.notes(&mut out);
        out
    }

    fn header(&self, out: &mut String) {
        let m = &self.machine;
        let _ = write!(
            out,
            "# Benchmarks\n\n\
             Written by `polis-bench`; do not edit above the marker line at the end (what follows it is\n\
             kept). To measure again (it builds what it runs, installing norgopolis-server and `protoc`\n\
             if they are missing):\n\n\
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
                format!("warm call over gRPC through `polis_client` (p50 / p99 of {WARM_CALLS})"),
                cell(&self.polis.warm_grpc, |(s, _)| p50_p99(s)),
                "".into(),
                ratio(&self.polis.warm_grpc, &n.warm, |(a, _), b| Some(secs(a.p50()) / secs(b.p50()))),
            ],
            [
                format!("warm call over gRPC, bare tonic `RouterClient` (p50 / p99 of {WARM_CALLS})"),
                cell(&self.polis.warm_tonic, |(s, _)| p50_p99(s)),
                "".into(),
                ratio(&self.polis.warm_tonic, &n.warm, |(a, _), b| Some(secs(a.p50()) / secs(b.p50()))),
            ],
            [
                format!("warm call, jsonrpc module (p50 / p99 of {WARM_CALLS})"),
                cell(&self.polis.warm_jsonrpc, p50_p99),
                "no such module kind".into(),
                "".into(),
            ],
            [
                format!("throughput, {CALLERS} callers for {} s (frames)", THROUGHPUT_FOR.as_secs()),
                cell(&p.throughput, |t| format!("{} calls/s", stats::count(t.per_sec()))),
                cell(&n.throughput, |t| format!("{} calls/s", stats::count(t.per_sec()))),
                ratio(&p.throughput, &n.throughput, |a, b| Some(a.per_sec() / b.per_sec())),
            ],
            [
                format!("throughput, {CALLERS_MANY} callers for {} s", THROUGHPUT_FOR.as_secs()),
                cell(&p.throughput_many, |t| format!("{} calls/s", stats::count(t.per_sec()))),
                cell(&n.throughput_many, |t| format!("{} calls/s", stats::count(t.per_sec()))),
                ratio(&p.throughput_many, &n.throughput_many, |a, b| Some(a.per_sec() / b.per_sec())),
            ],
            [
                format!(
                    "throughput over gRPC through `polis_client`, {CALLERS} callers for {} s",
                    THROUGHPUT_FOR.as_secs()
                ),
                cell(&self.polis.throughput_grpc, |t| format!("{} calls/s", stats::count(t.per_sec()))),
                "".into(),
                ratio(&self.polis.throughput_grpc, &n.throughput, |a, b| Some(a.per_sec() / b.per_sec())),
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
                "router RSS, peak under the throughput loads (frames)".into(),
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
        let errors = |s: &System| {
            [&s.throughput, &s.throughput_many]
                .iter()
                .map(|t| t.as_ref().map_or(0, |t| t.errors))
                .sum::<u64>()
        };
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
        let tput = |t: &Outcome<Throughput>| t.as_ref().map(|t| t.per_sec()).map_err(Clone::clone);
        let vs_norgopolis = |a: &Outcome<Throughput>, b: &Outcome<Throughput>| {
            both(tput(a), tput(b)).map(|(a, b)| {
                (
                    format!("{}× ({} vs {} calls/s)", stats::sig3(a / b), stats::count(a), stats::count(b)),
                    a / b >= 5.0,
                )
            })
        };
        let today = |w: &Outcome<(Samples, Profile)>| {
            w.as_ref()
                .map(|(s, _)| {
                    (
                        format!("{} vs {}", stats::duration(s.p50()), stats::duration(GRPC_TODAY)),
                        s.p50() <= GRPC_TODAY,
                    )
                })
                .map_err(Clone::clone)
        };
        vec![
            Target {
                name: "warm p50 (frames) vs the floor (socket + pipe round trip)",
                wanted: "≤ 4×",
                measured: vs_floor(&p.warm, &self.floor, 4.0),
            },
            Target {
                name: "warm p50 (frames) vs Norgopolis's",
                wanted: "≤ 0.25×",
                measured: both(p50(&p.warm), p50(&n.warm)).map(|(a, b)| {
                    (format!("{}× ({} vs {})", stats::sig3(a / b), fmt_s(a), fmt_s(b)), a / b <= 0.25)
                }),
            },
            Target {
                name: "warm p99 (frames) vs its p50",
                wanted: "≤ 3×",
                measured: p
                    .warm
                    .as_ref()
                    .map(|s| {
                        let r = secs(s.pct(99.0)) / secs(s.p50());
                        (format!("{}× ({})", stats::sig3(r), p50_p99(s)), r <= 3.0)
                    })
                    .map_err(Clone::clone),
            },
            Target {
                name: "warm p50 over gRPC through `polis_client`",
                wanted: "no slower than today (160 µs)",
                measured: today(&self.polis.warm_grpc),
            },
            Target {
                name: "warm p50 over gRPC, bare tonic client",
                wanted: "no slower than today (160 µs)",
                measured: today(&self.polis.warm_tonic),
            },
            Target {
                name: "throughput, 16 callers, vs Norgopolis's",
                wanted: "≥ 5×",
                measured: vs_norgopolis(&p.throughput, &n.throughput),
            },
            Target {
                name: "throughput, 64 callers, vs Norgopolis's",
                wanted: "≥ 5×",
                measured: vs_norgopolis(&p.throughput_many, &n.throughput_many),
            },
            Target {
                name: "cold start",
                wanted: "100 % of 30 succeed, p50 ≤ 0.7× Norgopolis's successful p50",
                measured: match (&p.cold, &n.cold) {
                    (Ok(a), Ok(b)) => {
                        let all = a.ok() == a.runs;
                        let (pa, pb) =
                            (a.times.as_ref().map(Samples::p50), b.times.as_ref().map(Samples::p50));
                        let faster = match (pa, pb) {
                            (Some(x), Some(y)) => secs(x) <= 0.7 * secs(y),
                            (Some(_), None) => true,
                            _ => false,
                        };
                        let p50s = match (pa, pb) {
                            (Some(x), Some(y)) => format!(
                                "p50 {} vs {} ({}×)",
                                stats::duration(x),
                                stats::duration(y),
                                stats::sig3(secs(x) / secs(y))
                            ),
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
                name: "router RSS when idle",
                wanted: "≤ 4 MiB",
                measured: p.rss_idle.as_ref().map(|k| (stats::mib(*k), *k <= 4 * 1024)).map_err(Clone::clone),
            },
            Target {
                name: "router RSS, peak under the throughput loads",
                wanted: "≤ 8 MiB",
                measured: p.rss_load.as_ref().map(|k| (stats::mib(*k), *k <= 8 * 1024)).map_err(Clone::clone),
            },
            Target {
                name: "failover gap p50 (earlier issue)",
                wanted: "≤ 50 ms",
                measured: self
                    .polis
                    .failover
                    .as_ref()
                    .map(|s| (stats::duration(s.p50()), s.p50() <= Duration::from_millis(50)))
                    .map_err(Clone::clone),
            },
            Target {
                name: "warm p50 vs the floor, everything on one CPU (earlier issue)",
                wanted: "≤ 10×",
                measured: vs_floor(&p.warm_one_cpu, &self.floor_one_cpu, 10.0),
            },
        ]
    }

    /// For a missed target, where the time (or the memory) goes, from this
    /// run's per-call figures.
    fn why_missed(&self, name: &str) -> String {
        let (p, n) = (&self.polis.system, &self.norgopolis);
        let profile = |what: &str, o: &Outcome<Profile>| match o {
            Ok(pr) => format!("{what}: {}", profile_line(pr)),
            Err(e) => format!("{what}: not measured ({e})"),
        };
        // RSS first: its name mentions the throughput loads too.
        if name.contains("RSS") {
            format!(
                "VmRSS counts the router's heap, its stacks and the pages of its binary it has touched (modules \
                 are not in it): idle {}, peak {}; norgopolis-server: idle {}, peak {}.",
                cell(&p.rss_idle, |k| stats::mib(*k)),
                cell(&p.rss_load, |k| stats::mib(*k)),
                cell(&n.rss_idle, |k| stats::mib(*k)),
                cell(&n.rss_load, |k| stats::mib(*k)),
            )
        } else if name.contains("throughput") {
            let ceiling = p.load_profile.as_ref().map_or(String::new(), |pr| {
                format!(
                    " At {} µs of router CPU per call its one thread could serve at most {} calls/s.",
                    stats::sig3(pr.cpu_us()),
                    stats::count(1e6 / pr.cpu_us().max(0.001))
                )
            });
            format!(
                "Under the {CALLERS}-caller load (the one profiled), per call: {}; {}.{ceiling} The callers, the \
                 router and the echo module share the machine's {} cores.",
                profile("polis's router", &p.load_profile),
                profile("norgopolis-server", &n.load_profile),
                self.machine.cores,
            )
        } else if name.contains("cold") {
            "Measured as it is today: cold start is being worked on separately (see the hand-written section, \
             when there is one)."
                .to_owned()
        } else {
            let warm_of = |o: &Outcome<(Samples, Profile)>| {
                o.as_ref().map(|(s, p)| (s.clone(), p.clone())).map_err(Clone::clone)
            };
            let frames = p.warm.clone().and_then(|s| Ok((s, p.warm_profile.clone()?)));
            let (what, figures) = if name.contains("tonic") {
                ("a bare tonic client", warm_of(&self.polis.warm_tonic))
            } else if name.contains("gRPC") {
                ("gRPC through `polis_client`", warm_of(&self.polis.warm_grpc))
            } else {
                ("frames", frames)
            };
            let above = match (&figures, &self.floor) {
                (Ok((w, _)), Ok(f)) => format!(
                    "The p50 is {} above the floor ({} vs {}). ",
                    stats::duration(w.p50().saturating_sub(f.p50())),
                    stats::duration(w.p50()),
                    stats::duration(f.p50())
                ),
                _ => String::new(),
            };
            format!(
                "{above}Per warm call, {}; {}. What the router does not spend is the client's and the module's \
                 own work and the wake-ups between the three processes.",
                profile(&format!("polis's router ({what})"), &figures.map(|(_, p)| p)),
                profile("norgopolis-server", &n.warm_profile),
            )
        }
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
        let missed: Vec<Target> =
            self.target_list().into_iter().filter(|t| matches!(t.measured, Ok((_, false)))).collect();
        if !missed.is_empty() {
            out.push_str("### Where the missed targets stand\n\n");
            for t in missed {
                let _ = writeln!(out, "- **{}**: {}", t.name, self.why_missed(t.name));
            }
            out.push('\n');
        }
    }

    fn profiles(&self, out: &mut String) {
        let (p, n) = (&self.polis.system, &self.norgopolis);
        out.push_str(&format!(
            "## The router per call\n\n\
             CPU time (utime + stime) and context switches (voluntary + involuntary, summed over its threads) of \
             the router process over the calls of a run; syscalls, and the writes and reads among them, counted by \
             `strace -c -f -p <pid>` over a separate run ({PROFILE_CALLS} sequential calls; for the loads, \
             {CALLERS} callers for {} s), divided by the calls made meanwhile. \"writes\" are write, writev, \
             sendto, sendmsg and sendmmsg; \"reads\" the matching receives; \"waits\" epoll_wait and futex.\n\n\
             | run | router CPU µs/call | ctx switches/call | syscalls/call | writes/call | reads/call | waits/call | router threads |\n\
             |---|---|---|---|---|---|---|---|\n",
            TRACED_LOAD_FOR.as_secs()
        ));
        let multi = self.polis.multi_thread.as_ref().map(|f| f.warm_profile.clone()).map_err(Clone::clone);
        let warm_of =
            |o: &Outcome<(Samples, Profile)>| o.as_ref().map(|(_, p)| p.clone()).map_err(Clone::clone);
        let rows: Vec<(String, Outcome<Profile>)> = vec![
            ("polis, frames, warm calls".into(), p.warm_profile.clone()),
            ("polis, gRPC through `polis_client`, warm calls".into(), warm_of(&self.polis.warm_grpc)),
            ("polis, gRPC through a bare tonic client, warm calls".into(), warm_of(&self.polis.warm_tonic)),
            ("Norgopolis (gRPC over TCP), warm calls".into(), n.warm_profile.clone()),
            (format!("polis, frames, {CALLERS} callers"), p.load_profile.clone()),
            (format!("Norgopolis, {CALLERS} callers"), n.load_profile.clone()),
            (format!("polis, frames, warm calls, router on a multi-thread runtime ({RUNTIME_ENV})"), multi),
        ];
        for (name, profile) in rows {
            let row = match &profile {
                Ok(pr) => {
                    let per = |f: fn(&Syscalls) -> u64| cell(&pr.per_call(f), |v| stats::sig3(*v));
                    format!(
                        "{} | {} | {} | {} | {} | {} | {}",
                        stats::sig3(pr.cpu_us()),
                        stats::sig3(pr.ctx_switches()),
                        per(Syscalls::total),
                        per(Syscalls::writes),
                        per(Syscalls::reads),
                        per(Syscalls::waits),
                        pr.usage.threads
                    )
                }
                Err(e) => format!("{} | | | | | | ", cell::<()>(&Err(e.clone()), |_| String::new())),
            };
            let _ = writeln!(out, "| {name} | {row} |");
        }
        let traced = [&p.warm_profile, &p.load_profile, &n.warm_profile];
        if let Some(e) = traced.iter().find_map(|o| o.as_ref().ok().and_then(|p| p.syscalls.as_ref().err())) {
            let _ = writeln!(out, "\nstrace could not count syscalls: {e}.");
        }
        out.push('\n');
    }

    fn flavours(&self, out: &mut String) {
        let p = &self.polis.system;
        out.push_str(&format!(
            "## The router's runtime flavour\n\n\
             The router above runs tokio's current-thread runtime (`src/main.rs` builds it for every command). \
             The multi-thread row is a router started with `{RUNTIME_ENV}=multi-thread`, which only a build whose \
             `src/main.rs` reads that variable honours (its thread count shows whether it did); same client, module \
             and loads.\n\n\
             | router runtime | threads | warm p50 / p99 | throughput, {CALLERS} callers | throughput, {CALLERS_MANY} callers | router CPU µs/call, warm / {CALLERS} callers |\n\
             |---|---|---|---|---|---|\n"
        ));
        let tput = |t: &Throughput| format!("{} calls/s", stats::count(t.per_sec()));
        let current = (|| -> Result<String, String> {
            let (w, pr, t, m, load) = (
                p.warm.as_ref()?,
                p.warm_profile.as_ref()?,
                p.throughput.as_ref()?,
                p.throughput_many.as_ref()?,
                p.load_profile.as_ref()?,
            );
            Ok(format!(
                "{} | {} | {} | {} | {} / {}",
                pr.usage.threads,
                p50_p99(w),
                tput(t),
                tput(m),
                stats::sig3(pr.cpu_us()),
                stats::sig3(load.cpu_us())
            ))
        })();
        let multi = self.polis.multi_thread.as_ref().map(|f| {
            let load_us = f.load_usage.cpu.as_secs_f64() * 1e6 / f.throughput.calls.max(1) as f64;
            format!(
                "{} | {} | {} | {} | {} / {}",
                f.threads,
                p50_p99(&f.warm),
                tput(&f.throughput),
                tput(&f.throughput_many),
                stats::sig3(f.warm_profile.cpu_us()),
                stats::sig3(load_us)
            )
        });
        for (name, row) in
            [("current-thread (default)", current), ("multi-thread", multi.map_err(Clone::clone))]
        {
            let row = row.unwrap_or_else(|e| format!("{} | | | | ", cell::<()>(&Err(e), |_| String::new())));
            let _ = writeln!(out, "| {name} | {row} |");
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
             - **Warm call**: one `polis_client::Client` (a frontend with its session, over frames unless the row \
             says gRPC) in a current-thread runtime, {WARMUP_CALLS} untimed calls, then {WARM_CALLS} sequential `echo` \
             calls timed one by one; the frames module is `polis-echo`, the jsonrpc one `modules/pyecho` (Python). \
             The bare tonic row calls `Router/Call` through `polis_mesh::pb::router_client::RouterClient` over \
             `polis_client::dial`, with no session, as a foreign gRPC client would. Norgopolis: `norgopolis-bench-client` \
             (also current-thread) against a running `norgopolis-server` and the `echo` module of `bench/norgopolis`, \
             which returns its MessagePack bytes unchanged.\n\
             - **Throughput**: {CALLERS} (and {CALLERS_MANY}) callers, each its own connection (polis: its own \
             `Client`), each calling in a loop, on one current-thread runtime, for {} s; calls that completed, per \
             second.\n\
             - **Cold start**: polis: a fresh mesh directory each run, `polis call echo echo '…'` timed from spawn to exit \
             (it launches the router, which starts echo), then `polis stop`. Norgopolis: a fresh module directory and no \
             server, the bench client timed from spawn to exit; norgopolis-client starts `norgopolis-server`, reads its \
             `ready` and connects once, which fails when the server has not bound its port yet; then the server is killed.\n\
             - **Failover gap**: a router (`polis router`) and a standby (`polis router --standby`), one frontend calling echo \
             in a loop; the router is killed with SIGKILL and the gap runs to the end of the first successful call started \
             after the kill; a new standby is started each round. Norgopolis has no standby, so no figure.\n\
             - **RSS**: `VmRSS` of the router (norgopolis-server) process from `/proc/<pid>/status`, 0.5 s after the first \
             call loaded echo, and its peak (sampled every 50 ms) during the frames throughput runs. Modules are not counted.\n",
            THROUGHPUT_FOR.as_secs()
        ));
    }
}

/// A warm p50 against a floor, and whether it is within `limit` times it.
fn vs_floor(warm: &Outcome<Samples>, floor: &Outcome<Floor>, limit: f64) -> Outcome<(String, bool)> {
    let (w, f) = match (warm, floor) {
        (Ok(w), Ok(f)) => (w.p50(), f.p50()),
        (Err(e), _) | (_, Err(e)) => return Err(e.clone()),
    };
    let r = secs(w) / secs(f);
    Ok((format!("{}× ({} vs {})", stats::sig3(r), stats::duration(w), stats::duration(f)), r <= limit))
}

/// `CPU µs, ctx switches, syscalls (writes, reads, waits)` per call.
fn profile_line(pr: &Profile) -> String {
    let per = |f: fn(&Syscalls) -> u64| cell(&pr.per_call(f), |v| stats::sig3(*v));
    format!(
        "{} µs CPU, {} context switches, {} syscalls ({} writes, {} reads, {} waits)",
        stats::sig3(pr.cpu_us()),
        stats::sig3(pr.ctx_switches()),
        per(Syscalls::total),
        per(Syscalls::writes),
        per(Syscalls::reads),
        per(Syscalls::waits)
    )
}

fn fmt_s(s: f64) -> String {
    stats::duration(Duration::from_secs_f64(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_sections_survive() {
        let old = format!("# Benchmarks\nold figures\n\n{MARKER}\n\n## Cold start\nby hand\n");
        let new = keep_hand_written("# Benchmarks\nnew figures\n", Some(&old));
        assert_eq!(new, format!("# Benchmarks\nnew figures\n\n{MARKER}\n\n## Cold start\nby hand\n"));
        // Regenerating again changes nothing after the marker.
        assert_eq!(keep_hand_written("# Benchmarks\nnew figures\n", Some(&new)), new);
    }

    #[test]
    fn a_file_without_the_marker_gets_it_at_the_end() {
        let new = keep_hand_written("# Benchmarks\n", Some("# Benchmarks\nno marker\n"));
        assert_eq!(new, format!("# Benchmarks\n\n{MARKER}\n"));
        assert_eq!(keep_hand_written("# Benchmarks\n", None), new);
    }
}
