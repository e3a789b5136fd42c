-- :Polis status | call SERVICE METHOD [JSON] | stop | log [NAME]
-- (plugin/polis.lua defines the command). Each runs without blocking the
-- editor and reports through vim.notify.
local polis = require("polis")

local M = {}

local INFO, ERROR = vim.log.levels.INFO, vim.log.levels.ERROR

local function show(text, level)
  vim.notify(text, level or INFO)
end

local function decode(json)
  local decode_json = (vim.json and vim.json.decode) or vim.fn.json_decode
  local ok, value = pcall(decode_json, json)
  if ok then
    return value
  end
  return nil, value
end

local function encode(value)
  local encode_json = (vim.json and vim.json.encode) or vim.fn.json_encode
  local ok, text = pcall(encode_json, value)
  return ok and text or vim.inspect(value)
end

-- Runs `polis ARGS` and shows what it printed.
local function run_and_show(args, title)
  polis.run(args, function(code, out, err)
    local text = vim.trim(out ~= "" and out or err)
    if code == 0 then
      show(title .. "\n" .. text)
    else
      show(title .. " failed (exit " .. code .. ")\n" .. vim.trim(err ~= "" and err or out), ERROR)
    end
  end)
end

M.subcommands = {
  status = function()
    run_and_show({ "status" }, "polis status")
  end,

  call = function(args)
    local service, method = args[1], args[2]
    if not service or not method then
      show("usage: :Polis call SERVICE METHOD [JSON]", ERROR)
      return
    end
    local params
    if #args > 2 then
      local json = table.concat(args, " ", 3)
      local err
      params, err = decode(json)
      if params == nil then
        show(("polis call: the params are not JSON (%s): %s"):format(tostring(err), json), ERROR)
        return
      end
    end
    polis.call(service, method, params, function(err, result)
      if err then
        show(("polis: %s.%s: %s"):format(service, method, err), ERROR)
      else
        show(("%s.%s → %s"):format(service, method, encode(result)))
      end
    end)
  end,

  stop = function()
    -- The shared client would re-attach and launch a new router: close it first.
    polis.disconnect()
    run_and_show({ "stop" }, "polis stop")
  end,

  log = function(args)
    local where, err = polis.locate()
    if not where then
      show("polis: " .. err, ERROR)
      return
    end
    local name = args[1] or "router"
    local path = where.mesh_dir .. "/logs/" .. name .. ".log"
    if vim.fn.filereadable(path) == 0 then
      show(("polis: no log for %s at %s"):format(name, path), ERROR)
      return
    end
    vim.cmd("split " .. vim.fn.fnameescape(path))
    vim.bo.readonly = true
    vim.cmd("normal! G")
  end,
}

-- The :Polis command's handler.
function M.run(opts)
  local args = vim.split(vim.trim(opts.args or ""), "%s+", { trimempty = true })
  local name = table.remove(args, 1)
  local sub = name and M.subcommands[name]
  if not sub then
    local names = vim.tbl_keys(M.subcommands)
    table.sort(names)
    show(("polis: unknown subcommand %q; use one of: %s"):format(name or "", table.concat(names, ", ")), ERROR)
    return
  end
  sub(args)
end

function M.complete(arg_lead, cmdline)
  local words = vim.split(cmdline, "%s+", { trimempty = true })
  if #words > 2 or (#words == 2 and arg_lead == "") then
    return {}
  end
  local names = vim.tbl_keys(M.subcommands)
  table.sort(names)
  return vim.tbl_filter(function(n)
    return n:sub(1, #arg_lead) == arg_lead
  end, names)
end

return M
