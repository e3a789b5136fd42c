#!/bin/sh
# The Neovim plugin's build step (lazy.nvim `build`, packer `run`,
# vim-plug `do`): builds the Lua module and the polis binary, and puts them
# where the plugin looks:
#   lua/polis_native.so  the native Lua module (Neovim loads lua/NAME.so
#                        from the runtimepath; lua/polis/init.lua requires it)
#   bin/polis            the binary the plugin runs and launches routers with
# Both are gitignored. Each is copied to a temp name and renamed into place,
# so an editor that has the old library loaded keeps its mapping intact.
#
# POLIS_BUILD_PROFILE=debug builds without --release (the tests do, to
# reuse the warm debug artifacts); CARGO_TARGET_DIR is honoured.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
profile=${POLIS_BUILD_PROFILE:-release}
case "$profile" in
  release) flag=--release ;;
  debug) flag= ;;
  *) echo "build-plugin.sh: POLIS_BUILD_PROFILE must be release or debug, not $profile" >&2; exit 2 ;;
esac
command -v cargo >/dev/null 2>&1 || {
  echo "build-plugin.sh: cargo is not on PATH; install Rust (https://rustup.rs) and build again" >&2
  exit 1
}

cd "$root"
# shellcheck disable=SC2086 # $flag is empty or one word
cargo build $flag --locked -p polis-lua
# shellcheck disable=SC2086
cargo build $flag --locked -p polis --bin polis

target=${CARGO_TARGET_DIR:-$root/target}
case "$target" in /*) ;; *) target=$root/$target ;; esac
out=$target/$profile

lib=$out/libpolis_lua.so
[ -f "$lib" ] || lib=$out/libpolis_lua.dylib # macOS; Neovim loads it as .so all the same
[ -f "$lib" ] || { echo "build-plugin.sh: no libpolis_lua in $out" >&2; exit 1; }

install_file() { # SRC DEST: copy, then rename over DEST
  cp "$1" "$2.tmp.$$"
  chmod 755 "$2.tmp.$$"
  mv -f "$2.tmp.$$" "$2"
}
mkdir -p "$root/lua" "$root/bin"
install_file "$lib" "$root/lua/polis_native.so"
install_file "$out/polis" "$root/bin/polis"
echo "polis plugin built: $root/lua/polis_native.so, $root/bin/polis ($("$root/bin/polis" --version))"
