-- :checkhealth polis: the native module, the binary and its version, the
-- mesh directory, the router, and the modules with their errors (from
-- `polis status --json`, which never launches a router).
local M = {}

-- Neovim 0.10 has vim.health.start/ok/...; 0.8 and 0.9 vim.health.report_*;
-- 0.7 only require("health").report_*.
local health = vim.health or require("health")
local start = health.start or health.report_start
local ok = health.ok or health.report_ok
local info = health.info or health.report_info
local warn = health.warn or health.report_warn
local error = health.error or health.report_error

local function run(cmd)
  local out = vim.fn.system(cmd)
  return vim.v.shell_error, vim.trim(out)
end

function M.check()
  local polis = require("polis")

  start("polis: the native module")
  local native, why = polis.native()
  if native then
    ok("polis_native " .. native.version .. " loaded")
  else
    error(why, { "lazy.nvim: build = \"scripts/build-plugin.sh\"; or run it by hand in " .. polis.root })
  end

  start("polis: the binary")
  local bin, where = polis.binary()
  local version
  if not bin then
    error(where, { "run " .. polis.root .. "/scripts/build-plugin.sh, or set setup{ polis = PATH }" })
  else
    local code, out = run({ bin, "--version" })
    if code ~= 0 then
      error(("%s --version failed (exit %d): %s"):format(bin, code, out))
      bin = nil
    else
      version = out:match("(%d+%.%d+%.%d+)")
      ok(("%s (from %s): %s"):format(bin, where, out))
      if native and version and version ~= native.version then
        warn(
          ("the binary is version %s but the native module %s"):format(version, native.version),
          { "rebuild both with " .. polis.root .. "/scripts/build-plugin.sh" }
        )
      end
    end
  end

  start("polis: the mesh")
  local located = native and polis.locate()
  if not located then
    warn("the mesh directory is unknown without the native module")
    return
  end
  local mesh = located.mesh_dir
  if vim.fn.isdirectory(mesh) == 1 then
    ok("mesh directory " .. mesh)
  else
    info("mesh directory " .. mesh .. " (created when a router first runs)")
  end
  if located.modules_path then
    info("modules path brought by this editor: " .. located.modules_path)
  else
    info("modules path: none brought (the router searches its own and ~/.local/share/polis/modules)")
  end
  if not bin then
    return
  end

  start("polis: the router")
  local code, out = run({ bin, "--mesh-dir", mesh, "status", "--json" })
  if code ~= 0 then
    if out:find("no router", 1, true) then
      info("no router is running; the first call launches one (" .. out:gsub("^error: ", "") .. ")")
    else
      error(("polis status failed (exit %d): %s"):format(code, out))
    end
    return
  end
  local decoded, status = pcall((vim.json and vim.json.decode) or vim.fn.json_decode, out)
  if not decoded or type(status) ~= "table" then
    error("polis status --json printed no JSON: " .. out)
    return
  end
  local r = status.router or {}
  ok(("router pid %s, epoch %s, version %s"):format(tostring(r.pid), tostring(r.epoch), tostring(r.version)))
  local sessions = status.sessions or {}
  info(("%d session(s)"):format(#sessions))

  start("polis: modules")
  local modules = status.modules or {}
  if #modules == 0 then
    warn("no modules found on the router's search path", { "set setup{ modules_path = DIRS }" })
  end
  for _, m in ipairs(modules) do
    local line = ("%s %s (%s, %s)"):format(m.name, tostring(m.version), m.state, m.manifest or "")
    local last = m.last_error ~= vim.NIL and m.last_error or nil
    if m.state == "failed" or m.state == "broken" or m.state == "invalid" then
      error(line .. (last and (": " .. last) or ""))
    elseif last then
      warn(line .. ": last error: " .. last)
    else
      ok(line)
    end
  end
end

return M
