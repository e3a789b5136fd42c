-- require("polis"): the Neovim plugin's Lua API, on top of the native
-- module (lua/polis_native.so, built by scripts/build-plugin.sh).
--
--   require("polis").setup{ mesh = DIR, modules_path = "a:b", polis = BIN }
--   require("polis").call("echo", "ping", nil, function(err, result) end)
--
-- Calls and the connect are non-blocking here: callbacks run on Neovim's
-- main loop. One client is shared by the whole editor, connected on the
-- first call (launching a router if none runs). The blocking calls stay
-- for scripts: polis.connect{} gives a client whose c:call blocks.
local M = {}

-- This file is <plugin>/lua/polis/init.lua.
local source = debug.getinfo(1, "S").source:gsub("^@", "")
M.root = vim.fn.fnamemodify(source, ":p:h:h:h")

-- What setup{} may set, with what type; nil means "as the CLI decides".
local OPTIONS = {
  mesh = "string", -- the mesh directory (else POLIS_MESH_DIR, else the default)
  modules_path = "string", -- ":"-separated module dirs, brought to the router
  polis = "string", -- the polis binary
  name = "string", -- this editor's name in `polis status`
  launch = "boolean", -- launch a router when none runs (default true)
  transport = "string", -- "frames" (default) or "grpc"
  timeout_ms = "number", -- a call's timeout (default 30000)
}

local config = { name = "nvim" }

local function notify(msg, level)
  vim.schedule(function()
    vim.notify("polis: " .. msg, level or vim.log.levels.ERROR)
  end)
end
M.notify = notify

-- setup{...}: checks and keeps the options. Unknown keys and wrong types
-- are reported and ignored; the rest still applies. Gives true when all
-- options were taken.
function M.setup(opts)
  opts = opts or {}
  local ok = true
  for key, value in pairs(opts) do
    local want = OPTIONS[key]
    if not want then
      local known = vim.tbl_keys(OPTIONS)
      table.sort(known)
      notify(("setup: unknown option %q (known: %s)"):format(tostring(key), table.concat(known, ", ")))
      ok = false
    elseif type(value) ~= want then
      notify(("setup: %s must be a %s, not a %s"):format(key, want, type(value)))
      ok = false
    else
      config[key] = value
    end
  end
  return ok
end

-- The options as setup{} left them (a copy).
function M.config()
  return vim.deepcopy(config)
end

-- The native module, or nil and why it cannot be loaded.
function M.native()
  local ok, native = pcall(require, "polis_native")
  if ok then
    return native
  end
  return nil,
    ("cannot load the native module polis_native (%s); build it with %s/scripts/build-plugin.sh"):format(
      tostring(native):gsub("\n.*", ""),
      M.root
    )
end

local function executable(path)
  return path and path ~= "" and vim.fn.executable(path) == 1
end

-- The polis binary: setup{polis=}, else $POLIS_BIN, else the plugin's
-- bin/polis (the build step puts it there), else polis on PATH. Gives the
-- path, or nil and where it looked.
function M.binary()
  local candidates = {
    { config.polis, "setup{ polis = }" },
    { vim.env.POLIS_BIN, "$POLIS_BIN" },
    { M.root .. "/bin/polis", "the plugin's bin/" },
    { vim.fn.exepath("polis"), "PATH" },
  }
  for _, c in ipairs(candidates) do
    if c[1] and c[1] ~= "" then
      if executable(c[1]) then
        return c[1], c[2]
      end
      if c[2] ~= "the plugin's bin/" and c[2] ~= "PATH" then
        return nil, ("%s names %s, which is not executable"):format(c[2], c[1])
      end
    end
  end
  return nil,
    ("no polis binary (looked at setup{ polis = }, $POLIS_BIN, %s/bin/polis, PATH); run %s/scripts/build-plugin.sh"):format(
      M.root,
      M.root
    )
end

-- The mesh directory and modules path the plugin uses, resolved as the
-- CLI resolves them: { mesh_dir =, modules_path = }.
function M.locate()
  local native, err = M.native()
  if not native then
    return nil, err
  end
  return native.locate({ mesh_dir = config.mesh, modules_path = config.modules_path })
end

-- The options for the native connect, from setup{} and `overrides`.
function M.connect_options(overrides)
  local opts = {
    mesh_dir = config.mesh,
    modules_path = config.modules_path,
    name = config.name,
    launch = config.launch,
    transport = config.transport,
    -- One that is not executable still goes, so that the error names it.
    polis = M.binary() or config.polis,
  }
  for k, v in pairs(overrides or {}) do
    opts[k] = v
  end
  return opts
end

-- A blocking connect, for scripts: a client whose c:call blocks; or nil
-- and an error. `overrides` are polis.connect{} options.
function M.connect(overrides)
  local native, err = M.native()
  if not native then
    return nil, err
  end
  return native.connect(M.connect_options(overrides))
end

-- A non-blocking connect: on_connect(client, err) on the main loop.
function M.connect_async(overrides, on_connect)
  local native, err = M.native()
  if not native then
    vim.schedule(function()
      on_connect(nil, err)
    end)
    return
  end
  native.connect_async(M.connect_options(overrides), on_connect)
end

-- The editor's shared client.
local shared = { client = nil, waiting = nil }

-- M.client(function(c, err) end): the shared client, connecting it (without
-- blocking) on first use; callers that come while it connects wait with it.
function M.client(callback)
  if shared.client then
    local c = shared.client
    vim.schedule(function()
      callback(c, nil)
    end)
    return
  end
  if shared.waiting then
    table.insert(shared.waiting, callback)
    return
  end
  shared.waiting = { callback }
  M.connect_async(nil, function(c, err)
    local waiting = shared.waiting
    shared.waiting = nil
    shared.client = c
    for _, cb in ipairs(waiting) do
      cb(c, err)
    end
  end)
end

-- Closes the shared client (the next call connects again).
function M.disconnect()
  if shared.client then
    shared.client:close()
    shared.client = nil
  end
end

-- What a call does with its outcome when the caller gives no callback:
-- errors are reported, results dropped.
local function default_callback(service, method)
  return function(err)
    if err then
      notify(("%s.%s: %s"):format(service, method, err))
    end
  end
end

-- call(service, method, args, callback(err, result) [, timeout_ms]):
-- non-blocking; the callback runs on the main loop. Without a callback,
-- an error is reported with vim.notify.
function M.call(service, method, args, callback, timeout_ms)
  callback = callback or default_callback(service, method)
  M.client(function(c, err)
    if not c then
      callback(err, nil)
      return
    end
    c:call_async(service, method, args, callback, timeout_ms or config.timeout_ms)
  end)
end

-- call_stream(service, method, args, on_item(item), on_done(err) [, timeout_ms]):
-- non-blocking; items in order, then on_done once, all on the main loop.
function M.call_stream(service, method, args, on_item, on_done, timeout_ms)
  on_done = on_done or default_callback(service, method)
  M.client(function(c, err)
    if not c then
      on_done(err)
      return
    end
    c:call_stream(service, method, args, on_item, on_done, timeout_ms)
  end)
end

-- call_sync(service, method, args [, timeout_ms]): blocks Neovim until the
-- reply; for scripts. Gives the result, or nil and an error.
function M.call_sync(service, method, args, timeout_ms)
  if not shared.client then
    local c, err = M.connect()
    if not c then
      return nil, err
    end
    shared.client = c
  end
  return shared.client:call(service, method, args, timeout_ms or config.timeout_ms)
end

-- run({ARGS...}, function(code, stdout, stderr) end): runs the polis binary
-- with the plugin's mesh and modules path, without blocking.
function M.run(args, on_exit)
  local bin, err = M.binary()
  if not bin then
    vim.schedule(function()
      on_exit(-1, "", err)
    end)
    return
  end
  local cmd = { bin }
  local where = M.locate() or {}
  if where.mesh_dir then
    vim.list_extend(cmd, { "--mesh-dir", where.mesh_dir })
  end
  if where.modules_path then
    vim.list_extend(cmd, { "--modules-path", where.modules_path })
  end
  vim.list_extend(cmd, args)
  local out, errs = {}, {}
  local job = vim.fn.jobstart(cmd, {
    stdout_buffered = true,
    stderr_buffered = true,
    on_stdout = function(_, data)
      out = data
    end,
    on_stderr = function(_, data)
      errs = data
    end,
    on_exit = function(_, code)
      on_exit(code, table.concat(out, "\n"), table.concat(errs, "\n"))
    end,
  })
  if job <= 0 then
    vim.schedule(function()
      on_exit(-1, "", "cannot run " .. bin)
    end)
  end
end

-- Arrays and nulls, as the native module maps them.
setmetatable(M, {
  __index = function(_, key)
    if key == "null" or key == "array" or key == "is_array" or key == "array_mt" or key == "version" then
      local native, err = M.native()
      if not native then
        error("polis: " .. err, 2)
      end
      return native[key]
    end
  end,
})

return M
