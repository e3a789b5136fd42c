-- The notes module from Neovim, on require("polis") (README.md, "Notes"):
--
--   :Notes search {text}   the notes holding every word, best first, in the quickfix list
--   :Notes backlinks       the links to the current buffer's note, in the quickfix list
--
-- When the notes module announces `notes.changed` (a note written or
-- deleted, by any editor), the list the last command made is asked for
-- again, so that it never points at lines that moved. Put this directory
-- on 'runtimepath' and call require("polis_notes").setup{} once.
local polis = require("polis")
local M = { roots = {}, last = nil }

-- Runs `method` and puts the answer into the quickfix list titled `title`.
local function fill(method, args, title, done)
  polis.call("notes", "workspaces", nil, function(err, ws)
    for _, w in ipairs(ws and ws.workspaces or {}) do
      M.roots[w.name] = w.root
    end
    polis.call("notes", method, args, function(e, hits)
      err = err or e
      if err then
        polis.notify(("notes %s: %s"):format(method, err))
        return done and done(err)
      end
      local items = vim.tbl_map(function(h)
        local file = (M.roots[h.workspace] or h.workspace) .. "/" .. h.path
        -- JSON null is polis.null, not nil: pick the first string.
        local text = vim.tbl_filter(function(t)
          return type(t) == "string"
        end, { h.snippet, h.description, h.target })[1]
        return { filename = file, lnum = h.line, text = text or "" }
      end, hits)
      vim.fn.setqflist({}, " ", { title = title, items = items })
      M.last = { method = method, args = args, title = title }
      if done then
        done(nil, items)
      end
    end)
  end)
end

-- Opens the list without leaving the current window.
local function open(err)
  if not err then
    vim.cmd("copen | wincmd p")
  end
end

local commands = {
  search = function(words)
    fill("search", { q = words }, "Notes search " .. words, open)
  end,
  backlinks = function()
    local file = vim.api.nvim_buf_get_name(0)
    fill("backlinks", { path = file }, "Notes backlinks " .. vim.fn.fnamemodify(file, ":t"), open)
  end,
}

-- setup{ on_refresh = function(event, items) end }: the command, and the
-- subscription that refreshes the list (on_refresh runs after each refresh).
function M.setup(opts)
  opts = opts or {}
  vim.api.nvim_create_user_command("Notes", function(o)
    local sub, rest = o.args:match("^(%S+)%s*(.*)$")
    local run = commands[sub or ""]
    if not run then
      return polis.notify("usage: :Notes search {text} | :Notes backlinks")
    end
    run(rest)
  end, { nargs = "+", complete = function() return { "search", "backlinks" } end })
  polis.client(function(c, err)
    if not c then
      return polis.notify("notes: " .. tostring(err))
    end
    assert(c:subscribe("notes.changed", function(_, event)
      local last = M.last
      -- Only the list this module made, and only while it is the current one.
      if last and vim.fn.getqflist({ title = 0 }).title == last.title then
        fill(last.method, last.args, last.title, function(e, items)
          if not e and opts.on_refresh then
            opts.on_refresh(event, items)
          end
        end)
      end
    end))
    M.subscribed = true
  end)
end

return M
