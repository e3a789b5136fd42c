-- The Lua half of events (events.rs), run once at require with the native
-- part and the module table. A subscription's notices come through the
-- same wake-up socket as call_async's results; each callback runs through
-- vim.schedule, on Neovim's main loop.
local core, M = ...
local Client = M._Client

-- Clients with live subscriptions, kept from the garbage collector so that
-- their callbacks go on running.
local subscribed = {}

-- c:subscribe(pattern, function(topic, value) end [, function(count) end]):
-- returns the subscription's id, or nil and an error ("INVALID_ARGUMENT:
-- bad pattern ..."). on_lagged gets how many events were lost (0: the
-- router changed, and how many is unknown).
function Client:subscribe(pattern, callback, on_lagged)
  if type(pattern) ~= "string" then
    return nil, "INVALID_ARGUMENT: subscribe needs a pattern string"
  end
  if type(callback) ~= "function" then
    error("polis: subscribe needs a callback function(topic, value)", 2)
  end
  local uv = vim and (vim.uv or vim.loop)
  if not uv then
    error("polis: subscribe needs Neovim's event loop (vim.loop)", 2)
  end
  local id, err = self._native:_subscribe(pattern)
  if not id then
    return nil, err
  end
  if not self._pipe then
    self:_watch(uv)
  end
  self._subscriptions = self._subscriptions or {}
  self._subscriptions[id] = { callback = callback, on_lagged = on_lagged }
  subscribed[self] = true
  return id
end

-- c:unsubscribe(id): no more callbacks for it, not even for notices queued.
function Client:unsubscribe(id)
  self._native:_unsubscribe(id)
  if self._subscriptions then
    self._subscriptions[id] = nil
    if next(self._subscriptions) == nil then
      subscribed[self] = nil
    end
  end
end

-- Runs after each wake-up, beside the calls' dispatch.
function Client:_dispatch_events()
  local subs = self._subscriptions
  if not subs then
    return
  end
  for _, n in ipairs(self._native:_drain_events()) do
    local sub = subs[n.id]
    if sub then
      if n.lagged then
        if sub.on_lagged then
          vim.schedule(function()
            sub.on_lagged(n.lagged)
          end)
        end
      else
        vim.schedule(function()
          -- Unsubscribed meanwhile: its notices stop here.
          if subs[n.id] then
            sub.callback(n.topic, n.value)
          end
        end)
      end
    end
  end
end

local close = Client.close
function Client:close()
  close(self)
  self._subscriptions = nil
  subscribed[self] = nil
end
