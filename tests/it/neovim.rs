//! The Lua module (`crates/lua`) in real `nvim --headless` processes:
//! sharing a router between editors, `call_async` on Neovim's loop, and the
//! Lua ↔ JSON mapping with its errors.
//!
//! The cdylib is built once per test binary with the same cargo and profile,
//! and linked into each test's temp root as `polis_native.so` (its entry
//! point is `luaopen_polis_native`; the plugin, `tests/it/plugin.rs`, is
//! `require("polis")`). Each Lua script
//! writes `key value...` lines to a file that the test reads; it ends with
//! `qa!` (or `cq!` after an error), and the test kills `nvim` at its deadline.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{Duration, Instant},
};

use polis_testing::Run;

use crate::util::{ECHO, POLIS, Process, TestMesh, WAIT, listing, mesh, wait_until};

/// Builds `polis-lua` (once per test binary) and returns the library.
pub(crate) fn cdylib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        // The test binary is target/<profile dir>/deps/it-<hash>.
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile = exe.parent().and_then(Path::parent).and_then(Path::file_name);
        // The user's own cargo and toolchain: a build tool, not under test.
        let mut cmd = polis_testing::command(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.args(["build", "-p", "polis-lua", "--message-format=json-render-diagnostics", "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
        match profile.and_then(|p| p.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(other) => {
                cmd.args(["--profile", other]);
            }
        }
        let build = Run::within(cmd, Duration::from_secs(600), None);
        let (stdout, stderr) = (build.stdout(), build.stderr());
        assert!(build.status().success(), "cargo build -p polis-lua failed\n{build}");
        // The artifact message names the library wherever the target dir is.
        let lib = stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "polis_lua")
            .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
            .filter_map(|f| f.as_str().map(PathBuf::from))
            .find(|f| f.extension().is_some_and(|x| x == "so"))
            .unwrap_or_else(|| panic!("no libpolis_lua.so in cargo's output\n{stdout}\n{stderr}"));
        assert!(lib.exists(), "{} does not exist", lib.display());
        lib
    })
}

/// What every script starts with: the module on `package.cpath`, `report`,
/// the test's paths, and `wait_file`; the body runs under `xpcall`.
const PRELUDE: &str = r##"
local LIBDIR, OUTFILE, MESH, MODS, ROOT, POLIS_BIN = ...
local OUT = assert(io.open(OUTFILE, "w"))
local function report(...)
  local parts = {}
  for i = 1, select("#", ...) do
    parts[i] = tostring((select(i, ...)))
  end
  OUT:write(table.concat(parts, " "), "\n")
  OUT:flush()
end
local function wait_file(name)
  local path = ROOT .. "/" .. name
  assert(vim.wait(20000, function() return vim.loop.fs_stat(path) ~= nil end, 10), "no " .. path)
end
package.cpath = LIBDIR .. "/?.so;" .. package.cpath
local ok, err = xpcall(function()
  local polis = require("polis_native")
"##;

const POSTLUDE: &str = r##"
end, debug.traceback)
if not ok then
  report("ERROR", err)
end
OUT:close()
vim.cmd(ok and "qa!" or "cq!")
"##;

/// A headless Neovim running one script; killed and reaped on drop.
pub(crate) struct Nvim {
    name: String,
    process: Process,
    out: PathBuf,
}

impl Nvim {
    /// Starts `nvim --headless` on `body` (Lua, run after [`PRELUDE`]).
    pub(crate) fn start(mesh: &TestMesh, name: &str, body: &str) -> Self {
        Self::start_with(mesh, name, body, &[])
    }

    /// [`Nvim::start`] with more environment variables.
    pub(crate) fn start_with(mesh: &TestMesh, name: &str, body: &str, env: &[(&str, &Path)]) -> Self {
        let root = mesh.root();
        let libdir = root.join("lua");
        if !libdir.exists() {
            std::fs::create_dir(&libdir).expect("lua dir");
            std::os::unix::fs::symlink(cdylib(), libdir.join("polis_native.so"))
                .expect("link polis_native.so");
        }
        let script = root.join(format!("{name}.lua"));
        let out = root.join(format!("{name}.out"));
        // The paths go to the script as the chunk's arguments.
        let args = [&libdir, &out, &mesh.dir, &mesh.modules, &root.to_owned(), &PathBuf::from(POLIS)]
            .map(|p| format!("[==[{}]==]", p.display()))
            .join(", ");
        let chunk = format!("{PRELUDE}{body}{POSTLUDE}");
        let source = format!("assert(loadstring([=====[{chunk}]=====], {name:?}))({args})\n");
        std::fs::write(&script, source).expect("write the script");

        // Hermetic: its config, data and state dirs are the mesh's own.
        let mut cmd = mesh.command("nvim");
        cmd.args(["--headless", "-u", "NONE", "-i", "NONE", "-n", "--noplugin", "-c"])
            .arg(format!("luafile {}", script.display()))
            .current_dir(root)
            .env("POLIS_BIN", POLIS)
            // Short, so that the last editor's exit ends the router soon.
            .env("POLIS_LINGER", "300ms")
            .env("NVIM_LOG_FILE", root.join("nvim-internal.log"));
        for (name, value) in env {
            cmd.env(name, value);
        }
        // Install Neovim (apt-get install neovim, as .ci/run does) if it is missing.
        let process = mesh.start(cmd);
        Self { name: name.into(), process, out }
    }

    /// The script's report so far.
    fn report(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Everything there is to know when something went wrong.
    fn describe(&mut self) -> String {
        format!("nvim {}\nreport:\n{}\n{}", self.name, self.report(), self.process.describe())
    }

    /// Waits for a report line that starts with `key`, and gives the rest.
    pub(crate) fn wait_line(&mut self, key: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(rest) = find(&self.report(), key) {
                return rest;
            }
            let exited = self.process.try_exit();
            if exited.is_some() || Instant::now() > deadline {
                panic!("no {key:?} line from the script (exit: {exited:?})\n{}", self.describe());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the script's own `qa!`, and gives its report.
    pub(crate) fn finish(&mut self) -> Report {
        let (status, _) = self.process.wait(WAIT);
        assert!(status.success(), "nvim exited with {status}\n{}", self.describe());
        let text = self.report();
        assert!(!text.contains("ERROR"), "the script failed\n{}", self.describe());
        Report { text, context: self.describe() }
    }
}

/// The rest of the first line that starts with the word `key`.
fn find(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, rest) = l.split_once(' ').unwrap_or((l, ""));
        (k == key).then(|| rest.to_owned())
    })
}

/// A finished script's report lines.
pub(crate) struct Report {
    text: String,
    context: String,
}

impl Report {
    pub(crate) fn get(&self, key: &str) -> String {
        find(&self.text, key).unwrap_or_else(|| panic!("no {key:?} line\n{}", self.context))
    }

    fn number(&self, key: &str) -> f64 {
        let v = self.get(key);
        v.parse().unwrap_or_else(|_| panic!("{key} = {v:?} is not a number\n{}", self.context))
    }
}

/// A JSON-RPC module whose `wait {path}` answers `{"opened": true}` once
/// the file `path` exists.
const GATE: &str = r#"#!/usr/bin/env python3
import json, os, sys, time
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    if msg["method"] == "wait":
        while not os.path.exists(msg["params"]["path"]):
            time.sleep(0.005)
        result = {"opened": True}
    else:
        result = {}
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
"#;

fn touch(mesh: &TestMesh, name: &str) {
    std::fs::write(mesh.root().join(name), "").expect("signal file");
}

fn session_names(mesh: &TestMesh) -> Vec<String> {
    let status = mesh.run(&["status", "--json"]).code(0).json();
    let sessions = status["sessions"].as_array().cloned().unwrap_or_default();
    let mut names: Vec<String> =
        sessions.iter().filter_map(|s| s["name"].as_str().map(str::to_owned)).collect();
    names.sort();
    names
}

#[test]
fn two_editors_share_a_router_that_leaves_after_the_last() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");

    // A launches the router ($POLIS_BIN), calls, and quits without close():
    // its process exit ends its session.
    let mut a = Nvim::start(
        &mesh,
        "a",
        r##"
  local c = assert(polis.connect{ mesh_dir = MESH, modules_path = MODS, name = "nvim-a" })
  report("call", c:call("echo", "echo", { who = "a" }).who)
  report("ready")
  wait_file("quit-a")
"##,
    );
    assert_eq!(a.wait_line("call"), "a");
    a.wait_line("ready");
    let router = mesh.wait_router();

    // B finds that router, names the polis binary itself, and calls on
    // after A has gone.
    let mut b = Nvim::start(
        &mesh,
        "b",
        r##"
  local c = assert(polis.connect{ mesh_dir = MESH, name = "nvim-b", polis = POLIS_BIN, launch = true })
  report("call", c:call("echo", "ping"))
  report("ready")
  wait_file("go-b")
  for i = 1, 5 do
    local r, err = c:call("echo", "echo", { i = i })
    report("call" .. i, r and r.i, err)
  end
  report("calls-done")
  wait_file("close-b")
  c:close()
"##,
    );
    assert_eq!(b.wait_line("call"), "pong");
    b.wait_line("ready");
    assert_eq!(session_names(&mesh), ["nvim-a", "nvim-b"]);

    touch(&mesh, "quit-a");
    a.finish();
    wait_until(WAIT, &mesh.dir, "A's session to end", || (session_names(&mesh) == ["nvim-b"]).then_some(()));
    // Well past the 300 ms linger: B's session keeps the router.
    std::thread::sleep(Duration::from_millis(800));

    touch(&mesh, "go-b");
    b.wait_line("calls-done");
    let after = mesh.router().expect("the router stayed for B");
    assert_eq!((after.id, after.pid), (router.id, router.pid), "the same router served B throughout");

    let left = Instant::now();
    touch(&mesh, "close-b");
    let report = b.finish();
    for i in 1..=5 {
        assert_eq!(report.get(&format!("call{i}")), format!("{i} nil"), "call {i} after A left");
    }
    mesh.wait_no_processes();
    println!("router and echo gone {:?} after the last editor closed (linger 300 ms)", left.elapsed());
    assert!(!mesh.dir.join("router.json").exists(), "router.json is removed\n{}", listing(&mesh.dir));
}

#[test]
fn call_async_runs_its_callback_on_the_main_loop_while_the_editor_works() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    mesh.script_module("gate", "jsonrpc", GATE, "");
    let mut nvim = Nvim::start(
        &mesh,
        "async",
        r##"
  local uv = vim.loop
  local c = assert(polis.connect{ mesh_dir = MESH, modules_path = MODS })
  report("ping", c:call("echo", "ping"))

  local ticks = 0
  local timer = uv.new_timer()
  timer:start(50, 50, function() ticks = ticks + 1 end)
  local got = {}
  local t0 = uv.hrtime()
  -- The module answers only once the gate file exists, and the script
  -- writes it only after call_async has returned: a blocking call_async
  -- would never return.
  local gate = ROOT .. "/gate-open"
  c:call_async("gate", "wait", { path = gate }, function(err, result)
    got.ms = (uv.hrtime() - t0) / 1e6
    got.err, got.result, got.ticks = err, result, ticks
    got.fast = vim.in_fast_event()
    got.api = pcall(vim.api.nvim_buf_set_lines, 0, 0, -1, false, { "from a callback" })
  end)
  report("returned_ms", (uv.hrtime() - t0) / 1e6)
  local echoed = {}
  for i = 1, 3 do
    c:call_async("echo", "echo", { i = i }, function(err, r) echoed[#echoed + 1] = r and r.i or err end)
  end
  local failed = {}
  c:call_async("echo", "fail", { code = 9, message = "async nope" }, function(err, r)
    failed.err, failed.result = err, r
  end)
  -- The editor works while the call is out: its timer ticks, other calls come back.
  assert(vim.wait(20000, function() return ticks >= 3 and #echoed == 3 and failed.err end, 5), "no ticks")
  report("waiting", got.ms == nil)
  assert(io.open(gate, "w")):close()
  assert(vim.wait(20000, function() return got.ms ~= nil end, 5), "no callback")
  timer:stop()
  timer:close()
  report("opened", got.result.opened)
  report("err", got.err)
  report("ticks", got.ticks)
  report("callback_ms", got.ms)
  report("fast", got.fast)
  report("api", got.api, vim.api.nvim_buf_get_lines(0, 0, 1, false)[1])
  table.sort(echoed)
  report("echoed", table.concat(echoed, ","))
  report("failed", failed.result, failed.err)
  report("ping_after", c:call("echo", "ping"))

  local cancelled
  c:call_async("echo", "sleep", { ms = 5000 }, function(err, r) cancelled = err end)
  c:close()
  assert(vim.wait(20000, function() return cancelled ~= nil end, 5), "no callback after close")
  report("cancelled", cancelled)

  -- A client dropped without close() ends its session once collected.
  local d = assert(polis.connect{ mesh_dir = MESH, name = "dropped" })
  local pinged
  d:call_async("echo", "ping", nil, function(err, r) pinged = r end)
  assert(vim.wait(20000, function() return pinged ~= nil end, 5), "no ping")
  report("d-connected")
  wait_file("seen")
  d = nil
  collectgarbage()
  collectgarbage()
  report("dropped", pinged)
  wait_file("checked")
"##,
    );
    nvim.wait_line("d-connected");
    assert!(session_names(&mesh).contains(&"dropped".to_owned()), "{}", nvim.describe());
    touch(&mesh, "seen");
    assert_eq!(nvim.wait_line("dropped"), "pong");
    wait_until(WAIT, &mesh.dir, "the dropped client's session to end", || {
        (!session_names(&mesh).contains(&"dropped".to_owned())).then_some(())
    });
    touch(&mesh, "checked");
    let report = nvim.finish();
    assert_eq!(report.get("ping"), "pong", "the blocking call works");
    assert_eq!(report.get("waiting"), "true", "the call was out while the editor worked");
    assert_eq!(report.get("opened"), "true", "answered once the gate was open");
    assert_eq!(report.get("err"), "nil");
    let ticks = report.number("ticks");
    assert!(ticks >= 3.0, "the timer ticked {ticks} times before the callback\n{}", report.context);
    println!(
        "call_async returned after {} ms; its callback ran after {} ms",
        report.get("returned_ms"),
        report.get("callback_ms")
    );
    assert_eq!(report.get("fast"), "false", "the callback is not in a fast event");
    assert_eq!(report.get("api"), "true from a callback", "the callback may use the whole API");
    assert_eq!(report.get("echoed"), "1,2,3", "each callback got its own result");
    assert_eq!(report.get("failed"), "nil FAILED_PRECONDITION: async nope");
    assert_eq!(report.get("ping_after"), "pong");
    assert!(report.get("cancelled").starts_with("CANCELLED: "), "{}", report.context);
    println!("timer ticks while call_async waited: {ticks}");
    mesh.wait_no_processes();
}

#[test]
fn lua_tables_map_to_json_and_errors_come_back_as_nil_and_a_message() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    std::fs::write(mesh.root().join("a-file"), "").expect("a file");
    let mut nvim = Nvim::start(
        &mesh,
        "json",
        r##"
  local function deep_equal(a, b)
    if type(a) ~= "table" or type(b) ~= "table" then return a == b end
    for k, v in pairs(a) do if not deep_equal(v, b[k]) then return false end end
    for k in pairs(b) do if a[k] == nil then return false end end
    return true
  end
  local c = assert(polis.connect{ mesh_dir = MESH, modules_path = MODS })

  local sent = { a = { 1, 2, { b = "x" } }, n = 1.5, t = true, f = false, s = "str", neg = -7, big = 2^40 }
  local got, err = c:call("echo", "echo", sent)
  report("roundtrip", deep_equal(sent, got), err)
  report("arrays", polis.is_array(got.a), polis.is_array(got), getmetatable(got.a), vim.inspect(got.a))

  report("null_is_vim_nil", polis.null == vim.NIL)
  local r = c:call("echo", "echo", { x = polis.null, y = vim.NIL, arr = { 1, polis.null, 3 } })
  report("nulls", r.x == polis.null, r.y == polis.null, #r.arr, r.arr[2] == polis.null)
  report("nil_args", c:call("echo", "echo", nil) == polis.null, c:call("echo", "echo") == polis.null)
  local e = c:call("echo", "echo", { obj = {}, arr = polis.array{} })
  report("empty", polis.is_array(e.obj), next(e.obj) == nil, polis.is_array(e.arr), #e.arr)
  report("rearray", polis.is_array(polis.array(e.arr)), polis.is_array(polis.array()))

  report("fail", c:call("echo", "fail", { code = 9, message = "nope" }))
  report("missing", c:call("nosuch", "x", {}))
  report("mixed", c:call("echo", "echo", { 1, 2, x = 3 }))
  report("sparse", c:call("echo", "echo", { list = { 1, nil, 3 } }))
  report("function", c:call("echo", "echo", { f = print }))
  report("timeout", c:call("echo", "sleep", { ms = 3000 }, 200))
  report("crash", c:call("echo", "crash"))
  report("no_router", polis.connect{ mesh_dir = ROOT .. "/other", launch = false })
  report("bad_dir", polis.connect{ mesh_dir = ROOT .. "/a-file/mesh", launch = false })
  report("bad_polis", polis.connect{ mesh_dir = ROOT .. "/third", polis = ROOT .. "/no-polis" })
  report("bad_option", polis.connect{ mesh_dir = MESH, lanch = false })
  c:close()
  report("closed", c:call("echo", "ping"))
  c:close()
  report("survived", "yes")
"##,
    );
    let report = nvim.finish();
    assert_eq!(report.get("roundtrip"), "true nil", "{}", report.context);
    assert_eq!(report.get("arrays"), "true false polis.array { 1, 2, {", "arrays carry polis.array_mt");
    assert_eq!(report.get("null_is_vim_nil"), "true");
    assert_eq!(report.get("nulls"), "true true 3 true", "null survives, also inside arrays");
    assert_eq!(report.get("nil_args"), "true true", "nil args are null, and a null result is polis.null");
    assert_eq!(report.get("empty"), "false true true 0", "{{}} is an object, polis.array{{}} an array");
    assert_eq!(report.get("rearray"), "true true");

    let err = |key: &str, want: &[&str]| {
        let line = report.get(key);
        assert!(line.starts_with("nil "), "{key}: {line:?} is not (nil, err)\n{}", report.context);
        for w in want {
            assert!(line.contains(w), "{key}: {line:?} does not mention {w:?}");
        }
    };
    err("fail", &["FAILED_PRECONDITION", "nope"]);
    err("missing", &["NOT_FOUND", "nosuch"]);
    err("mixed", &["INVALID_ARGUMENT", "mixes array items and object keys"]);
    err("sparse", &["INVALID_ARGUMENT", "args.list is a sparse array"]);
    err("function", &["INVALID_ARGUMENT", "args.f is a function"]);
    err("crash", &["UNAVAILABLE", "module echo exited with status 3"]);
    err("timeout", &["DEADLINE_EXCEEDED"]);
    err("no_router", &["UNAVAILABLE", "no router is running"]);
    err("bad_dir", &["a-file is not a directory"]);
    err("bad_polis", &["UNAVAILABLE", "could not launch a router", "no-polis"]);
    err("bad_option", &["INVALID_ARGUMENT", "unknown option \"lanch\""]);
    err("closed", &["FAILED_PRECONDITION", "closed"]);
    assert_eq!(report.get("survived"), "yes");
    mesh.wait_no_processes();
}

/// `<root>/gated-polis`: a `polis` that waits for the file
/// `<root>/connect-gate` before it runs the real one, so that a test
/// decides when a launched router may start.
fn gated_polis(mesh: &TestMesh) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = mesh.root().join("gated-polis");
    let gate = mesh.root().join("connect-gate");
    let script = format!(
        "#!/bin/sh\nwhile [ ! -e '{}' ]; do sleep 0.01; done\nexec '{POLIS}' \"$@\"\n",
        gate.display()
    );
    std::fs::write(&path, script).expect("write gated-polis");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod gated-polis");
    path
}

#[test]
fn connect_async_and_call_stream_return_at_once_and_call_back_on_the_main_loop() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    gated_polis(&mesh);
    let mut nvim = Nvim::start(
        &mesh,
        "stream",
        r##"
  local uv = vim.loop
  local ticks = 0
  local timer = uv.new_timer()
  timer:start(10, 10, function() ticks = ticks + 1 end)
  local got
  -- The launched polis waits for the gate file, which the script writes
  -- only after connect_async has returned and the timer has ticked.
  polis.connect_async({ mesh_dir = MESH, modules_path = MODS, polis = ROOT .. "/gated-polis", name = "async" },
    function(c, err)
      got = { c = c, err = err, ticks = ticks, fast = vim.in_fast_event() }
    end)
  report("returned", got == nil)
  assert(vim.wait(20000, function() return ticks >= 3 end, 5), "no ticks")
  report("still_connecting", got == nil)
  assert(io.open(ROOT .. "/connect-gate", "w")):close()
  assert(vim.wait(20000, function() return got ~= nil end, 5), "no on_connect")
  report("connected", got.c ~= nil, got.err, got.fast)
  report("ticks_before", got.ticks)
  local c = got.c
  report("ping", c:call("echo", "ping"))

  local items, ended = {}, nil
  c:call_stream("echo", "stream", { count = 5, interval_ms = 10 },
    function(item) items[#items + 1] = item end,
    function(err) ended = { err = err, n = #items, fast = vim.in_fast_event() } end)
  report("stream_returned", ended == nil)
  assert(vim.wait(20000, function() return ended ~= nil end, 5), "no end of stream")
  report("items", table.concat(items, ","))
  report("stream_end", ended.err, ended.n, ended.fast)

  local missing
  c:call_stream("nosuch", "x", nil, function() missing = "an item" end, function(err) missing = missing or err end)
  assert(vim.wait(20000, function() return missing ~= nil end, 5), "no end")
  report("stream_missing", missing)

  local timed
  c:call_stream("echo", "stream", { count = 100000, interval_ms = 20 }, function() end,
    function(err) timed = err end, 300)
  assert(vim.wait(20000, function() return timed ~= nil end, 5), "no deadline")
  report("stream_timeout", timed)

  local closed, seen = nil, 0
  c:call_stream("echo", "stream", { count = 100000, interval_ms = 10 }, function() seen = seen + 1 end,
    function(err) closed = err end)
  assert(vim.wait(20000, function() return seen >= 2 end, 5), "no items")
  c:close()
  assert(vim.wait(20000, function() return closed ~= nil end, 5), "no end after close")
  report("stream_closed", closed)
  local after
  report("closed_stream", pcall(c.call_stream, c, "echo", "stream", {}, function() end, function(err) after = err end))
  assert(vim.wait(20000, function() return after ~= nil end, 5))
  report("after_close", after)

  report("no_callbacks", pcall(c.call_stream, c, "echo", "stream", {}))
  report("no_on_connect", pcall(polis.connect_async, {}))
  local bad, none
  polis.connect_async({ mesh_dir = MESH, lanch = true }, function(cl, err) bad = { tostring(cl), err } end)
  polis.connect_async({ mesh_dir = ROOT .. "/other", launch = false }, function(cl, err) none = { tostring(cl), err } end)
  assert(vim.wait(20000, function() return bad ~= nil and none ~= nil end, 5), "no callbacks")
  report("bad_option", bad[1], bad[2])
  report("no_router", none[1], none[2])
  timer:stop()
  timer:close()
"##,
    );
    let report = nvim.finish();
    assert_eq!(report.get("returned"), "true", "connect_async returns before its callback");
    assert_eq!(report.get("still_connecting"), "true", "the connect waited for the gate");
    assert_eq!(report.get("connected"), "true nil false", "a client, on the main loop: {}", report.context);
    let ticks = report.number("ticks_before");
    assert!(ticks >= 3.0, "the timer ticked {ticks} times while connecting\n{}", report.context);
    assert_eq!(report.get("ping"), "pong");
    assert_eq!(report.get("stream_returned"), "true", "call_stream returns at once");
    assert_eq!(report.get("items"), "0,1,2,3,4", "every item, in order");
    assert_eq!(report.get("stream_end"), "nil 5 false", "on_done after the last item, not in a fast event");
    assert!(report.get("stream_missing").starts_with("NOT_FOUND: "), "{}", report.context);
    assert!(report.get("stream_timeout").starts_with("DEADLINE_EXCEEDED: "), "{}", report.context);
    assert!(report.get("stream_closed").starts_with("CANCELLED: "), "{}", report.context);
    assert_eq!(report.get("closed_stream"), "true", "a closed client's stream fails through on_done");
    assert!(report.get("after_close").starts_with("FAILED_PRECONDITION: "), "{}", report.context);
    assert!(report.get("no_callbacks").starts_with("false "), "{}", report.context);
    assert!(report.get("no_callbacks").contains("call_stream needs on_item(item) and on_done(err)"));
    assert!(report.get("no_on_connect").contains("connect_async needs a callback"), "{}", report.context);
    let bad = report.get("bad_option");
    assert!(bad.starts_with("nil INVALID_ARGUMENT: ") && bad.contains("\"lanch\""), "{bad}");
    let none = report.get("no_router");
    assert!(none.starts_with("nil UNAVAILABLE: ") && none.contains("no router is running"), "{none}");
    mesh.wait_no_processes();
}

#[test]
fn lua_finds_the_mesh_and_the_modules_through_the_environment_as_the_cli_does() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let env = [("POLIS_MESH_DIR", mesh.dir.as_path()), ("POLIS_MODULES_PATH", mesh.modules.as_path())];
    let mut nvim = Nvim::start_with(
        &mesh,
        "env",
        r##"
  local where = polis.locate()
  report("locate", where.mesh_dir, where.modules_path)
  report("given", polis.locate{ mesh_dir = ROOT .. "/given", modules_path = "rel" }.mesh_dir)
  report("given_mods", polis.locate{ modules_path = "rel" }.modules_path)
  -- No mesh_dir and no modules_path: both come from the environment.
  local c = assert(polis.connect{ name = "env-nvim" })
  report("ping", c:call("echo", "ping"))
  report("ready")
  wait_file("checked")
  c:close()
"##,
        &env,
    );
    nvim.wait_line("ready");
    // The router the editor launched is in POLIS_MESH_DIR, and the CLI,
    // given the same environment and no flag, finds it and its session.
    let mut status = mesh.command(POLIS);
    status.args(["status", "--json"]).env("POLIS_MESH_DIR", &mesh.dir);
    let status = mesh.run_command(status).code(0).json();
    let sessions: Vec<&str> =
        status["sessions"].as_array().into_iter().flatten().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(sessions, ["env-nvim"], "{status}");
    touch(&mesh, "checked");
    let report = nvim.finish();
    assert_eq!(report.get("locate"), format!("{} {}", mesh.dir.display(), mesh.modules.display()));
    assert_eq!(report.get("given"), format!("{}/given", mesh.root().display()), "an option beats the env");
    assert_eq!(report.get("given_mods"), format!("{}/rel", mesh.root().display()), "made absolute");
    assert_eq!(report.get("ping"), "pong");
    mesh.wait_no_processes();
}

#[test]
fn a_modules_path_brought_to_a_running_router_is_added_to_its_search_path() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    // `greet` is only in a directory the router was not started with.
    let extra = mesh.root().join("extra");
    std::fs::create_dir_all(extra.join("greet")).expect("extra/greet");
    let manifest = format!("name = \"greet\"\nversion = \"0.1.0\"\nexec = {ECHO:?}\nprotocol = \"frames\"\n");
    std::fs::write(extra.join("greet/module.toml"), manifest).expect("greet's manifest");
    let _router = mesh.start_router(&[]);
    let before = mesh.run(&["call", "greet", "ping"]);
    before.code(3);
    assert!(before.stderr().contains("NOT_FOUND"), "{before}");

    let mut nvim = Nvim::start(
        &mesh,
        "addpath",
        r##"
  local c = assert(polis.connect{ mesh_dir = MESH, modules_path = ROOT .. "/extra", launch = false })
  report("greet", c:call("greet", "ping"))
  report("echo", c:call("echo", "ping"))
  c:close()
"##,
    );
    let report = nvim.finish();
    assert_eq!(report.get("greet"), "pong", "the brought directory was added");
    assert_eq!(report.get("echo"), "pong", "the router's own path stays");
    // For every frontend, as long as this router runs.
    let after = mesh.run(&["call", "greet", "ping"]);
    after.code(0);
    assert_eq!(after.stdout().trim(), "\"pong\"");
    let status = mesh.run(&["status", "--json"]).code(0).json();
    let greet = status["modules"].as_array().into_iter().flatten().find(|m| m["name"] == "greet").cloned();
    let greet = greet.unwrap_or_else(|| panic!("greet in status\n{status}"));
    assert!(
        greet["manifest"].as_str().unwrap_or_default().starts_with(&extra.display().to_string()),
        "{greet}"
    );
}
