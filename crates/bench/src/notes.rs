//! The notes module on a large generated workspace: cold and unchanged
//! re-index, search and backlinks through polis, a saved file searchable
//! through the watcher, the module's RSS, and ripgrep as the anchor.
//!
//! ```sh
//! cargo run --release -p polis-bench -- notes [--files 10000]
//! cargo run --release -p polis-bench -- generate-notes DIR [--files N]
//! ```
//!
//! It prints a Markdown section on stdout; BENCHMARKS.md's generated part
//! is not touched.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use polis_client::{Client, ClientOptions, Launcher, Transport};
use polis_testing::TestMesh;
use serde_json::{Value, json};

use crate::{procs, progress, setup, stats};

/// Search and backlinks calls measured, after as many to warm up.
const CALLS: usize = 300;
/// Saves timed through the watcher.
const SAVES: usize = 20;

/// A small deterministic generator (xorshift): the same workspace every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A vocabulary of made-up words: a search for one finds a few hundred notes.
fn word(i: usize) -> String {
    const SYLLABLES: [&str; 16] =
        ["ka", "lo", "mi", "ra", "tu", "ne", "so", "vi", "da", "pe", "xo", "li", "gu", "ba", "ze", "fo"];
    let mut w = String::new();
    let mut n = i + 16;
    while n > 0 {
        w.push_str(SYLLABLES[n % 16]);
        n /= 16;
    }
    w
}

const VOCABULARY: usize = 4000;

/// The path of note `i`: 100 notes to a directory.
fn note_path(i: usize) -> String {
    format!("d{:02}/note{i:05}.norg", i / 100 % 100)
}

/// Writes `count` notes of about 3 KB under `dir`: meta, headings, text,
/// links to other notes and their headings, tasks. Returns the bytes written.
pub(crate) fn generate(dir: &Path, count: usize) -> anyhow::Result<u64> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut total = 0;
    for i in 0..count {
        let mut text = String::new();
        let _ = write!(
            text,
            "@document.meta\ntitle: Note {i}\ndescription: generated note {i}\nauthors: [bench]\n\
             categories: [{} {}]\ncreated: 2024-01-01\n@end\n\n",
            word(rng.below(50)),
            word(rng.below(50))
        );
        for h in 0..4 {
            let _ = writeln!(text, "{} Section {h} of {i}", "*".repeat(1 + h % 2));
            for _ in 0..5 {
                text.push_str("  ");
                for _ in 0..16 {
                    text.push_str(&word(rng.below(VOCABULARY)));
                    text.push(' ');
                }
                text.push('\n');
            }
            let other = rng.below(count);
            let _ = writeln!(
                text,
                "  See {{:$/{}:* Section 0 of {other}}}[note {other}].",
                note_path(other).trim_end_matches(".norg")
            );
            let _ = writeln!(text, "  - ( ) follow up on {}", word(rng.below(VOCABULARY)));
            if rng.below(4) == 0 {
                let _ = writeln!(text, "  - (x) done with {}", word(rng.below(VOCABULARY)));
            }
        }
        let path = dir.join(note_path(i));
        std::fs::create_dir_all(path.parent().expect("a note has a directory"))?;
        std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
        total += text.len() as u64;
    }
    Ok(total)
}

/// Builds polis-notes in release (unless `build` is false) and finds it.
fn notes_binary(polis: &Path, build: bool) -> anyhow::Result<PathBuf> {
    let release = polis.parent().context("polis has a directory")?;
    if build {
        let status = polis_testing::command(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(setup::workspace())
            .args(["build", "--release", "-p", "polis-notes", "--target-dir"])
            .arg(release.parent().context("a target dir")?)
            .status()?;
        anyhow::ensure!(status.success(), "building polis-notes failed ({status})");
    }
    let exe = release.join("polis-notes");
    anyhow::ensure!(exe.is_file(), "{} is missing", exe.display());
    Ok(exe.canonicalize()?)
}

async fn index(client: &Client) -> anyhow::Result<(Duration, Value)> {
    let started = Instant::now();
    let mut items = client.call_stream("notes", "index", &json!({})).await?;
    let mut summary = Value::Null;
    while let Some(item) = items.next().await {
        let item = item?;
        if let Some(s) = item.get("summary") {
            summary = s.clone();
        }
    }
    Ok((started.elapsed(), summary))
}

async fn timed(client: &Client, method: &str, params: &[Value]) -> anyhow::Result<stats::Samples> {
    for p in params {
        client.call_json("notes", method, p, None).await?;
    }
    let mut samples = Vec::with_capacity(params.len());
    for p in params {
        let started = Instant::now();
        client.call_json("notes", method, p, None).await?;
        samples.push(started.elapsed());
    }
    Ok(stats::Samples::new(samples))
}

/// `rg --json -i WORD DIR`, to its end, for each word.
fn ripgrep(dir: &Path, words: &[String]) -> Option<stats::Samples> {
    let found = polis_testing::command("rg").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        progress("ripgrep (rg) not found: `apt-get install -y ripgrep` for the anchor");
        return None;
    }
    let samples = words
        .iter()
        .map(|w| {
            let started = Instant::now();
            let _ = polis_testing::command("rg").args(["--json", "-i", w]).arg(dir).output();
            started.elapsed()
        })
        .collect();
    Some(stats::Samples::new(samples))
}

/// Runs the notes section and prints it.
pub(crate) async fn run(files: usize, build: bool) -> anyhow::Result<()> {
    let bins = setup::polis(build)?;
    let notes = notes_binary(&bins.polis, build)?;
    let mesh = TestMesh::new(&bins.polis)?;
    let dir = mesh.root().join("notes");
    progress(&format!("generating {files} notes in {}", dir.display()));
    let bytes = generate(&dir, files)?;
    mesh.module(
        "notes",
        &notes,
        &format!(
            "[config]\nindex_on_start = false\nworkspaces = {{ bench = {:?} }}",
            dir.display().to_string()
        ),
    );
    let launcher =
        Launcher { modules_path: Some(mesh.modules.display().to_string()), ..Launcher::new(&bins.polis) };
    let options = ClientOptions {
        mesh_dir: Some(mesh.dir.clone()),
        launch: Some(launcher),
        transport: Transport::Frames,
        ..ClientOptions::new("polis-bench")
    };
    let client = Client::connect(options).await.context("cannot connect to polis")?;
    client.call_json("notes", "workspaces", &json!({}), None).await?;

    progress("cold index");
    let (cold, summary) = index(&client).await?;
    if summary["files"].as_u64() != Some(files as u64) {
        bail!("the cold index did not index every note: {summary}");
    }
    progress("unchanged re-index");
    let (warm, again) = index(&client).await?;
    let reparsed = again["parsed"].as_u64().unwrap_or(u64::MAX);

    let mut rng = Rng(42);
    let words: Vec<String> = (0..CALLS).map(|_| word(rng.below(VOCABULARY))).collect();
    let searches: Vec<Value> = words.iter().map(|w| json!({ "q": w, "limit": 20 })).collect();
    progress("search");
    let search = timed(&client, "search", &searches).await?;
    let backlinks: Vec<Value> = (0..CALLS).map(|_| json!({ "path": note_path(rng.below(files)) })).collect();
    progress("backlinks");
    let back = timed(&client, "backlinks", &backlinks).await?;

    progress("saves through the watcher");
    let mut saves = Vec::new();
    for n in 0..SAVES {
        let unique = format!("savedword{n}x");
        let path = dir.join(format!("d00/saved{n}.norg"));
        let started = Instant::now();
        std::fs::write(&path, format!("* Saved {n}\n  {unique}\n"))?;
        loop {
            let hits = client.call_json("notes", "search", &json!({ "q": unique }), None).await?;
            if hits.as_array().is_some_and(|h| !h.is_empty()) {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "a saved file never became searchable"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        saves.push(started.elapsed());
    }
    let saves = stats::Samples::new(saves);

    let rss = procs::exe_processes(std::slice::from_ref(&notes)).first().and_then(|pid| procs::rss_kib(*pid));
    let rg = ripgrep(&dir, &words[..30]);

    let mut out = String::new();
    let _ = writeln!(out, "## Notes: {files} generated notes ({:.1} MB)\n", bytes as f64 / 1e6);
    let _ = writeln!(out, "| what | measured | target |\n|---|---|---|");
    let _ = writeln!(out, "| cold index (through polis, `index`) | {} | ≤ 15 s |", stats::duration(cold));
    let _ = writeln!(
        out,
        "| re-index, nothing changed ({reparsed} re-parsed) | {} | ≤ 1 s |",
        stats::duration(warm)
    );
    let _ = writeln!(
        out,
        "| `search` p50 / p95 ({} calls) | {} / {} | p50 ≤ 3 ms |",
        search.len(),
        stats::duration(search.p50()),
        stats::duration(search.pct(95.0))
    );
    let _ = writeln!(
        out,
        "| `backlinks` p50 / p95 | {} / {} | p50 ≤ 2 ms |",
        stats::duration(back.p50()),
        stats::duration(back.pct(95.0))
    );
    let _ = writeln!(
        out,
        "| saved file searchable, p50 / max ({SAVES} saves) | {} / {} | ≤ 300 ms |",
        stats::duration(saves.p50()),
        stats::duration(saves.pct(100.0))
    );
    let rss = rss.map_or("not found".to_owned(), stats::mib);
    let _ = writeln!(out, "| module RSS after all this | {rss} | ≤ 100 MB |");
    match rg {
        Some(rg) => {
            let ratio = rg.p50().as_secs_f64() / search.p50().as_secs_f64().max(1e-9);
            let _ = writeln!(
                out,
                "| `rg --json -i WORD` p50 (30 words) | {} ({ratio:.0}× the index's search) | anchor |",
                stats::duration(rg.p50())
            );
        }
        None => {
            let _ = writeln!(out, "| `rg --json` | not installed | anchor |");
        }
    }
    print!("{out}");
    Ok(())
}
