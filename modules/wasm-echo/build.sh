#!/bin/sh
# Builds wasm-echo.wasm (a WASI preview 1 command module) from wasm-echo.c
# with Zig's C compiler from PyPI: `python3 -m pip install ziglang==0.15.2`.
# Usage: ./build.sh [OUT.wasm]   (default: wasm-echo.wasm beside this script)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/wasm-echo.wasm}
exec python3 -m ziglang cc --target=wasm32-wasi -O2 -s -o "$out" "$here/wasm-echo.c"
