-- The Lua half of require("polis"), run once when the module loads, with
-- the native part (lib.rs) as its argument. It wraps the native client in
-- the object of DESIGN.md §9 and delivers call_async callbacks on Neovim's
-- main loop: the native side writes a byte to a socket per finished call,
-- a libuv pipe reads that socket, and its read callback drains the
-- finished calls and hands each callback to vim.schedule.
local core = ...

local M = {
  -- JSON null: results carry it where the JSON had null, and args may use
  -- it (as may vim.NIL, the same light userdata) where nil cannot stand,
  -- such as inside an array.
  null = core.null,
  -- Tables with this metatable are sent as JSON arrays, even when empty;
  -- arrays in results carry it (see polis.is_array). It is protected:
  -- getmetatable() gives the string "polis.array".
  array_mt = core.array_mt,
  version = core.version,
  -- polis.locate{ mesh_dir =, modules_path = }: where polis.connect with
  -- these options looks, in the CLI's order (options, POLIS_MESH_DIR /
  -- POLIS_MESH / POLIS_MODULES_PATH, the defaults).
  locate = core.locate,
}

-- Marks `t` (or a new table) as a JSON array: polis.array{} is [].
function M.array(t)
  t = t or {}
  if debug.getmetatable(t) ~= core.array_mt then
    setmetatable(t, core.array_mt)
  end
  return t
end

-- Whether `t` goes out as a JSON array whatever its contents: a result's
-- array, or a table marked with polis.array.
function M.is_array(t)
  return type(t) == "table" and debug.getmetatable(t) == core.array_mt
end

local Client = {}
Client.__index = Client

-- polis.connect{ mesh_dir =, modules_path =, name =, polis =, launch =, transport = }
-- gives a client, or nil and an error string.
function M.connect(opts)
  if opts ~= nil and type(opts) ~= "table" then
    return nil, "INVALID_ARGUMENT: polis.connect takes a table of options"
  end
  local native, err = core.connect(opts)
  if not native then
    return nil, err
  end
  return M._wrap(native)
end

-- The client object around a native client.
function M._wrap(native)
  return setmetatable({ _native = native, _callbacks = {}, _pending = 0 }, Client)
end

-- Connects in flight, kept from the garbage collector until their callback.
local connecting = {}

-- polis.connect_async({ ...as polis.connect... }, function(c, err) end):
-- returns at once; the callback runs later on Neovim's main loop with a
-- client, or nil and an error. Bad options are reported through the
-- callback too.
function M.connect_async(opts, on_connect)
  if type(on_connect) ~= "function" then
    error("polis: connect_async needs a callback function(client, err)", 2)
  end
  local uv = vim and (vim.uv or vim.loop)
  if not uv then
    error("polis: connect_async needs Neovim's event loop (vim.loop)", 2)
  end
  local pending, err
  if opts ~= nil and type(opts) ~= "table" then
    err = "INVALID_ARGUMENT: polis.connect_async takes a table of options"
  else
    pending, err = core._connect_start(opts)
  end
  if not pending then
    vim.schedule(function()
      on_connect(nil, err)
    end)
    return
  end
  local pipe = uv.new_pipe(false)
  pipe:open(pending:_take_fd())
  connecting[pending] = true
  pipe:read_start(function(read_err, data)
    -- A fast event: no Neovim API here; the callback goes through vim.schedule.
    local native, connect_err = pending:_take()
    if native == false and not (read_err or not data) then
      return
    end
    if not pipe:is_closing() then
      pipe:close()
    end
    connecting[pending] = nil
    local client = native and M._wrap(native) or nil
    if native == false then
      connect_err = "INTERNAL: the connect ended without an outcome"
    end
    vim.schedule(function()
      on_connect(client, connect_err)
    end)
  end)
end

local function check_names(service, method)
  if type(service) ~= "string" or type(method) ~= "string" then
    return "INVALID_ARGUMENT: service and method must be strings"
  end
end

-- c:call(service, method, args [, timeout_ms]): blocks until the reply or
-- the timeout (30 s by default); gives the result, or nil and an error.
function Client:call(service, method, args, timeout_ms)
  local bad = check_names(service, method)
  if bad then
    return nil, bad
  end
  return self._native:call(service, method, args, timeout_ms)
end

-- Clients with calls in flight, kept from the garbage collector so that
-- their callbacks still run if the caller drops the client.
local in_flight = {}

-- c:call_async(service, method, args, function(err, result) end [, timeout_ms]):
-- returns at once; the callback runs later on Neovim's main loop (through
-- vim.schedule, so the whole API is allowed), with err nil on success.
function Client:call_async(service, method, args, callback, timeout_ms)
  if type(callback) ~= "function" then
    error("polis: call_async needs a callback function(err, result)", 2)
  end
  local uv = vim and (vim.uv or vim.loop)
  if not uv then
    error("polis: call_async needs Neovim's event loop (vim.loop)", 2)
  end
  local id, err = nil, check_names(service, method)
  if not err then
    id, err = self._native:_start(service, method, args, timeout_ms)
  end
  if not id then
    vim.schedule(function()
      callback(err, nil)
    end)
    return
  end
  if not self._pipe then
    self:_watch(uv)
  end
  self._callbacks[id] = callback
  self._pending = self._pending + 1
  in_flight[self] = true
end

-- c:call_stream(service, method, args, on_item, on_done [, timeout_ms]):
-- returns at once; on_item(item) runs for each item in order, then
-- on_done(err) once (err nil when the stream ended well), all on Neovim's
-- main loop. Without timeout_ms the stream runs until the module ends it.
function Client:call_stream(service, method, args, on_item, on_done, timeout_ms)
  if type(on_item) ~= "function" or type(on_done) ~= "function" then
    error("polis: call_stream needs on_item(item) and on_done(err) functions", 2)
  end
  local uv = vim and (vim.uv or vim.loop)
  if not uv then
    error("polis: call_stream needs Neovim's event loop (vim.loop)", 2)
  end
  local id, err = nil, check_names(service, method)
  if not err then
    id, err = self._native:_start_stream(service, method, args, timeout_ms)
  end
  if not id then
    vim.schedule(function()
      on_done(err)
    end)
    return
  end
  if not self._pipe then
    self:_watch(uv)
  end
  self._callbacks[id] = function(done_err, result, more)
    if more then
      on_item(result)
    else
      on_done(done_err)
    end
  end
  self._pending = self._pending + 1
  in_flight[self] = true
end

-- Watches the wake-up socket from the first call_async on. The callback
-- holds the client weakly: a client dropped without close() is still
-- collected, its native side then closes the socket, and the read below
-- sees the end and closes the pipe.
function Client:_watch(uv)
  local pipe = uv.new_pipe(false)
  pipe:open(self._native:_take_fd())
  local weak = setmetatable({ client = self }, { __mode = "v" })
  pipe:read_start(function(err, data)
    -- A fast event: no Neovim API here, only the native queue.
    local client = weak.client
    if client then
      client:_dispatch()
    end
    if err or not data then
      if not pipe:is_closing() then
        pipe:close()
      end
    end
  end)
  self._pipe = pipe
end

-- Takes the finished calls and schedules their callbacks.
function Client:_dispatch()
  for _, done in ipairs(self._native:_drain()) do
    local callback = self._callbacks[done.id]
    if callback then
      -- A stream's item keeps its callback for what follows.
      if not done.more then
        self._callbacks[done.id] = nil
        self._pending = self._pending - 1
      end
      vim.schedule(function()
        callback(done.err, done.result, done.more)
      end)
    end
  end
  if self._pending == 0 then
    in_flight[self] = nil
  end
  -- Subscriptions' notices (events.lua), on the same wake-up.
  if self._dispatch_events then
    self:_dispatch_events()
  end
end

-- c:close(): ends the session. Calls already finished still get their
-- callbacks; the others get "CANCELLED: ...". Closing twice is fine.
function Client:close()
  self._native:close()
  if self._pending > 0 then
    self:_dispatch()
    local left = self._callbacks
    self._callbacks, self._pending = {}, 0
    for _, callback in pairs(left) do
      vim.schedule(function()
        callback("CANCELLED: the polis client was closed", nil)
      end)
    end
  end
  in_flight[self] = nil
  if self._pipe and not self._pipe:is_closing() then
    self._pipe:close()
  end
end

-- For events.lua, which adds subscribe and unsubscribe to the client.
M._Client = Client

return M
