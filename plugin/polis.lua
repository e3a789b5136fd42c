-- The :Polis command; everything else is loaded on first use
-- (require("polis"), :checkhealth polis).
if vim.g.loaded_polis then
  return
end
vim.g.loaded_polis = true

vim.api.nvim_create_user_command("Polis", function(opts)
  require("polis.commands").run(opts)
end, {
  nargs = "+",
  desc = "polis: status | call SERVICE METHOD [JSON] | stop | log [NAME]",
  complete = function(arg_lead, cmdline)
    return require("polis.commands").complete(arg_lead, cmdline)
  end,
})
