//! The Neovim example of the notes module (`examples/nvim/lua/polis_notes.lua`)
//! in a headless `nvim`, on the plugin's `require("polis")` and the native
//! module as `neovim.rs` builds it: `:Notes search` fills the quickfix
//! list, `:Notes backlinks` gives the current buffer's backlinks, and a note
//! written on disk refreshes the list through a `notes.changed` event.

use std::path::Path;

use serde_json::json;

use crate::{
    neovim::Nvim,
    notes::{index, install, sample},
    util::mesh,
};

/// Puts the checkout's `lua/` (the plugin) and the example on
/// `package.path`, as a plugin manager puts them on 'runtimepath'.
const SCRIPT: &str = r##"
  local repo = vim.env.POLIS_REPO
  package.path = repo .. "/lua/?.lua;" .. repo .. "/lua/?/init.lua;"
    .. repo .. "/examples/nvim/lua/?.lua;" .. package.path
  assert(require("polis").setup{ mesh = MESH, launch = false })
  local notes = require("polis_notes")
  local refreshed = {}
  notes.setup{ on_refresh = function(event, items)
    table.insert(refreshed, { event = event, items = items })
  end }
  -- The quickfix list as `title entry entry…`, each `path:line` under the workspace root.
  local function quickfix(title)
    assert(vim.wait(20000, function() return vim.fn.getqflist({ title = 0 }).title == title end, 10),
      "no quickfix list " .. title)
    local root = notes.roots.sample .. "/"
    local entries = {}
    for _, item in ipairs(vim.fn.getqflist()) do
      local name = vim.api.nvim_buf_get_name(item.bufnr)
      table.insert(entries, name:sub(#root + 1) .. ":" .. item.lnum)
    end
    return table.concat(entries, " ")
  end
  assert(vim.wait(20000, function() return notes.subscribed end, 10), "never subscribed")

  vim.cmd("Notes search tomatoes")
  report("search", quickfix("Notes search tomatoes"))
  vim.cmd("edit " .. vim.fn.fnameescape(notes.roots.sample .. "/garden.norg"))
  vim.cmd("Notes backlinks")
  report("backlinks", quickfix("Notes backlinks garden.norg"))
  report("subscribed")
  -- The test writes a note that links to the garden: the list follows.
  assert(vim.wait(20000, function()
    local last = refreshed[#refreshed]
    return last and last.event.path == "journal/2024-01-03.norg" and #last.items == 5
  end, 10), "no refresh for the new note")
  local last = refreshed[#refreshed]
  report("refreshed", last.event.workspace, last.event.path, quickfix("Notes backlinks garden.norg"))
"##;

#[test]
fn the_neovim_example_searches_lists_backlinks_and_refreshes_on_a_change() {
    let mesh = mesh();
    let dir = sample(&mesh);
    install(&mesh, &dir, "index_on_start = false");
    crate::neovim::cdylib();
    // nvim connects with launching off: this router stays while it starts.
    let _router = mesh.start_router(&["--linger", "never"]);
    assert_eq!(index(&mesh, json!({}))["files"], 12);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut nvim = Nvim::start_with(&mesh, "notes", SCRIPT, &[("POLIS_REPO", repo)]);
    assert_eq!(
        nvim.wait_line("search"),
        "garden.norg:17 journal/2024-01-01.norg:7 projects/polis.norg:7",
        "the hits, best first, at the first line holding the word"
    );
    assert_eq!(
        nvim.wait_line("backlinks"),
        "index.norg:13 index.norg:19 journal/2024-01-01.norg:7 projects/polis.norg:7"
    );
    nvim.wait_line("subscribed");
    std::fs::write(dir.join("journal/2024-01-03.norg"), "* Wednesday\n\n  see {:../garden:}\n").unwrap();
    let report = nvim.finish();
    assert_eq!(
        report.get("refreshed"),
        "sample journal/2024-01-03.norg \
         index.norg:13 index.norg:19 journal/2024-01-01.norg:7 journal/2024-01-03.norg:3 projects/polis.norg:7",
        "the backlinks list, asked for again on notes.changed"
    );
}
