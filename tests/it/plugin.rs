//! The Neovim plugin (`lua/polis/`, `plugin/polis.lua`) as a user gets it:
//! a `git clone` of this repository, its build step
//! (`scripts/build-plugin.sh`), then a headless `nvim` whose init file only
//! puts the clone on the runtimepath, as a plugin manager does.
//!
//! The clone is of the committed HEAD (what a plugin manager would fetch),
//! made once per test binary under cargo's `target/tmp`. Its build uses a
//! target dir of its own there (`plugin-target`), kept between runs so
//! that only polis's own crates are compiled again, and never the
//! workspace's target dir, whose binaries the other tests run.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{Duration, Instant},
};

use polis_testing::Run;

use crate::util::{ECHO, Process, TestMesh, WAIT, mesh};

/// The clone, built: `lua/polis_native.so` and `bin/polis` are in it.
fn plugin() -> &'static Path {
    static PLUGIN: OnceLock<PathBuf> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let checkout = tmp.join("plugin-checkout");
        if checkout.exists() {
            std::fs::remove_dir_all(&checkout).expect("remove the last checkout");
        }
        let mut clone = polis_testing::command("git");
        clone.args(["clone", "--quiet", "--no-hardlinks"]).arg(env!("CARGO_MANIFEST_DIR")).arg(&checkout);
        let cloned = Run::within(clone, Duration::from_secs(120), None);
        assert!(cloned.status().success(), "git clone failed\n{cloned}");
        for built in ["lua/polis_native.so", "bin"] {
            assert!(!checkout.join(built).exists(), "a clean clone has no {built}");
        }

        let mut build = polis_testing::command(checkout.join("scripts/build-plugin.sh"));
        // The user's cargo, first on PATH; a debug build, like this test binary.
        let cargo = PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        let mut path =
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect::<Vec<_>>();
        if let Some(dir) = cargo.parent().filter(|d| !d.as_os_str().is_empty()) {
            path.insert(0, dir.to_owned());
        }
        build
            .env("PATH", std::env::join_paths(path).expect("PATH"))
            .env("CARGO_TARGET_DIR", tmp.join("plugin-target"))
            .env("POLIS_BUILD_PROFILE", "debug")
            .env_remove("CARGO_MANIFEST_DIR");
        // The first run compiles every dependency into plugin-target: many
        // minutes on a busy two-core machine; later runs only polis's crates.
        let built = Run::within(build, Duration::from_secs(3000), None);
        assert!(built.status().success(), "scripts/build-plugin.sh failed\n{built}");
        assert!(built.stdout().contains("polis plugin built"), "{built}");
        for product in ["lua/polis_native.so", "bin/polis"] {
            assert!(checkout.join(product).is_file(), "the build step made {product}\n{built}");
        }
        let ignored = Run::within(
            {
                let mut status = polis_testing::command("git");
                status.current_dir(&checkout).args(["status", "--porcelain"]);
                status
            },
            Duration::from_secs(60),
            None,
        );
        assert_eq!(ignored.stdout(), "", "the build products are gitignored\n{ignored}");
        checkout
    })
}

/// What every script starts with: `report` and the test's paths.
const PRELUDE: &str = r##"
local OUTFILE, MESH, MODS, ROOT = ...
local OUT = assert(io.open(OUTFILE, "w"))
local function report(...)
  local parts = {}
  for i = 1, select("#", ...) do
    parts[i] = tostring((select(i, ...)))
  end
  OUT:write((table.concat(parts, " "):gsub("\n", "\\n")), "\n")
  OUT:flush()
end
-- Every vim.notify is reported as `notify LEVEL MESSAGE`.
local notes = {}
vim.notify = function(msg, level)
  notes[#notes + 1] = msg
  report("notify", level, msg)
end
local function wait_note(pattern)
  assert(vim.wait(20000, function()
    for _, n in ipairs(notes) do
      if n:find(pattern) then return true end
    end
  end, 10), "no notification matching " .. pattern)
end
local function health(file)
  vim.cmd("checkhealth polis")
  local lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  local f = assert(io.open(ROOT .. "/" .. file, "w"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
  vim.cmd("bwipe!")
end
local ok, err = xpcall(function()
"##;

const POSTLUDE: &str = r##"
end, debug.traceback)
if not ok then
  report("ERROR", err)
end
OUT:close()
vim.cmd(ok and "qa!" or "cq!")
"##;

/// A headless `nvim` with the plugin on its runtimepath, running `body`.
fn nvim(mesh: &TestMesh, name: &str, body: &str) -> (Process, PathBuf) {
    let root = mesh.root();
    let init = root.join("init.lua");
    // Only the runtimepath, as lazy.nvim, packer and vim-plug leave it:
    // plugin/polis.lua then loads as any plugin does.
    std::fs::write(&init, format!("vim.opt.rtp:prepend([==[{}]==])\n", plugin().display()))
        .expect("init.lua");
    let out = root.join(format!("{name}.out"));
    let script = root.join(format!("{name}.lua"));
    let args = [&out, &mesh.dir, &mesh.modules, &root.to_owned()]
        .map(|p| format!("[==[{}]==]", p.display()))
        .join(", ");
    let chunk = format!("{PRELUDE}{body}{POSTLUDE}");
    std::fs::write(&script, format!("assert(loadstring([=====[{chunk}]=====], {name:?}))({args})\n"))
        .expect("the script");
    let mut cmd = mesh.command("nvim");
    cmd.args(["--headless", "-i", "NONE", "-n", "-u"])
        .arg(&init)
        .arg("-c")
        .arg(format!("luafile {}", script.display()))
        .current_dir(root)
        .env("POLIS_LINGER", "300ms")
        .env("NVIM_LOG_FILE", root.join("nvim-internal.log"));
    (mesh.start(cmd), out)
}

/// Waits for `nvim` to quit by itself, and gives its report.
fn finish(mut process: Process, out: &Path) -> String {
    let deadline = Instant::now() + WAIT + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = process.try_exit() {
            break status;
        }
        assert!(Instant::now() < deadline, "nvim did not finish\n{}", describe(&mut process, out));
        std::thread::sleep(Duration::from_millis(20));
    };
    let report = std::fs::read_to_string(out).unwrap_or_default();
    assert!(status.success() && !report.contains("ERROR"), "nvim: {status}\n{}", describe(&mut process, out));
    report
}

fn describe(process: &mut Process, out: &Path) -> String {
    format!("report:\n{}\n{}", std::fs::read_to_string(out).unwrap_or_default(), process.describe())
}

/// The rest of each line that starts with the word `key`.
fn lines<'a>(report: &'a str, key: &str) -> Vec<&'a str> {
    report.lines().filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' '))).collect()
}

fn line<'a>(report: &'a str, key: &str) -> &'a str {
    lines(report, key).first().copied().unwrap_or_else(|| panic!("no {key:?} line\n{report}"))
}

fn read(mesh: &TestMesh, file: &str) -> String {
    std::fs::read_to_string(mesh.root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn the_plugin_from_a_clean_clone_sets_up_checks_its_health_and_calls_without_blocking() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    mesh.module("ghost", "/nonexistent/polis-ghost", "");
    let (process, out) = nvim(
        &mesh,
        "plugin",
        r##"
  report("command", vim.fn.exists(":Polis"))
  local polis = require("polis")
  report("setup", polis.setup{ mesh = MESH, modules_path = MODS, name = "plugin-nvim" })
  report("bad_setup", polis.setup{ mesh = 3, nosuch = 1 })
  wait_note("unknown option \"nosuch\"")
  wait_note("mesh must be a string")
  health("health-before")

  -- A call that takes 400 ms, while a timer ticks: the connect (which
  -- launches the router) and the call go on without blocking the loop.
  local ticks, done = 0, nil
  local timer = vim.loop.new_timer()
  timer:start(10, 10, function() ticks = ticks + 1 end)
  polis.call("echo", "sleep", { ms = 400 }, function(err, r)
    done = { err = err, slept = r and r.slept_ms, ticks = ticks, fast = vim.in_fast_event() }
  end)
  report("call_returned", done == nil, ticks)
  assert(vim.wait(20000, function() return done ~= nil end, 5), "no callback")
  timer:stop()
  timer:close()
  report("call", done.err, done.slept, done.fast)
  report("ticks", done.ticks)

  local items, ended = {}, nil
  polis.call_stream("echo", "stream", { count = 3, interval_ms = 5 },
    function(item) items[#items + 1] = item end, function(err) ended = err or "ok" end)
  assert(vim.wait(20000, function() return ended ~= nil end, 5), "no end of stream")
  report("stream", table.concat(items, ","), ended)
  report("blocking", polis.call_sync("echo", "ping"))
  local ghost
  polis.call("ghost", "ping", nil, function(err) ghost = err end)
  assert(vim.wait(20000, function() return ghost ~= nil end, 5))
  report("ghost", ghost)

  vim.cmd("Polis status")
  wait_note("^polis status\n")
  vim.cmd([[Polis call echo echo {"a": [1, 2]}]])
  wait_note("^echo%.echo → ")
  vim.cmd("Polis call echo")
  wait_note("^usage: :Polis call")
  vim.cmd("Polis call echo echo {nope")
  wait_note("params are not JSON")
  vim.cmd("Polis bogus")
  wait_note("unknown subcommand \"bogus\"")
  report("complete", table.concat(vim.fn.getcompletion("Polis s", "cmdline"), ","))
  health("health-after")
  vim.cmd("Polis log")
  report("log", vim.api.nvim_buf_get_name(0))
  vim.cmd("bwipe!")
  vim.cmd("Polis stop")
  wait_note("^polis stop\n")
"##,
    );
    let report = finish(process, &out);
    assert_eq!(line(&report, "command"), "2", "plugin/polis.lua defined :Polis");
    assert_eq!(line(&report, "setup"), "true");
    assert_eq!(line(&report, "bad_setup"), "false");

    let before = read(&mesh, "health-before");
    for want in [
        "OK: polis_native 0.1.0 loaded",
        "(from the plugin's bin/): polis 0.1.0",
        &format!("mesh directory {}", mesh.dir.display()),
        &format!("modules path brought by this editor: {}", mesh.modules.display()),
        "INFO: no router is running; the first call launches one",
    ] {
        assert!(before.contains(want), "checkhealth before the router lacks {want:?}\n{before}");
    }

    assert!(line(&report, "call_returned").starts_with("true "), "polis.call returns at once\n{report}");
    assert_eq!(line(&report, "call"), "nil 400 false", "the callback on the main loop\n{report}");
    let ticks: f64 = line(&report, "ticks").parse().expect("ticks");
    assert!(ticks > 0.0, "the timer ticked {ticks} times during the call\n{report}");
    println!("timer ticks during the plugin's 400 ms call: {ticks}");
    assert_eq!(line(&report, "stream"), "0,1,2 ok", "items in order, then the end");
    assert_eq!(line(&report, "blocking"), "pong", "the blocking call stays for scripts");
    let ghost = line(&report, "ghost");
    assert!(ghost.contains("polis-ghost"), "the error names the missing exec: {ghost}");

    let notes = lines(&report, "notify");
    let note = |pattern: &str| {
        notes
            .iter()
            .find(|n| n.contains(pattern))
            .unwrap_or_else(|| panic!("no note with {pattern:?}\n{report}"))
    };
    // vim.log.levels: INFO 2, ERROR 4.
    assert!(note("unknown option \"nosuch\"").starts_with("4 polis: setup:"), "{report}");
    let status = note("polis status\\n");
    assert!(status.starts_with("2 "), "{status}");
    for want in ["router   pid", "plugin-nvim", "echo", "running"] {
        assert!(status.contains(want), ":Polis status lacks {want:?}: {status}");
    }
    assert_eq!(*note("echo.echo → "), "2 echo.echo → {\"a\":[1,2]}");
    assert!(note("usage: :Polis call").starts_with("4 "), "{report}");
    assert!(note("unknown subcommand").contains("call, log, status, stop"), "{report}");
    assert_eq!(line(&report, "complete"), "status,stop");

    let after = read(&mesh, "health-after");
    for want in ["OK: router pid", "INFO: 1 session(s)", "OK: echo 0.1.0 (running"] {
        assert!(after.contains(want), "checkhealth with the router lacks {want:?}\n{after}");
    }
    assert_eq!(line(&report, "log"), mesh.dir.join("logs/router.log").display().to_string());
    assert!(note("polis stop\\n").starts_with("2 "), "{report}");
    mesh.wait_no_processes();
}

#[test]
fn checkhealth_reports_a_missing_binary_with_the_fix() {
    let mesh = mesh();
    let (process, out) = nvim(
        &mesh,
        "nobin",
        r##"
  local polis = require("polis")
  polis.setup{ mesh = MESH, polis = ROOT .. "/no-such-polis" }
  health("health")
  local got
  polis.call("echo", "ping", nil, function(err) got = err end)
  assert(vim.wait(20000, function() return got ~= nil end, 5))
  report("call", got)
"##,
    );
    let report = finish(process, &out);
    let health = read(&mesh, "health");
    assert!(health.contains("ERROR: setup{ polis = } names"), "{health}");
    assert!(health.contains("no-such-polis, which is not executable"), "{health}");
    let call = line(&report, "call");
    assert!(call.starts_with("UNAVAILABLE: could not launch a router"), "{call}");
}
