#!/usr/bin/env python3
"""Cold starts of WASI hosts outside the router, interleaved.

Each run spawns a command, writes wasm-echo's `initialize` and one `ping`
(JSON-RPC lines, as the router would), reads both answers, closes stdin and
waits for the exit. Commands take turns, RUNS rounds; prints each one's wall
and CPU (the child's rusage) medians, and the wall ratio to the first.

  bench/wasm-cold.py RUNS NAME=COMMAND...

For example (the first run of each host compiles into its cache dir):

  python3 -m ziglang cc --target=wasm32-wasi -O2 -s -o /tmp/e.wasm modules/wasm-echo/wasm-echo.c
  cc -O2 -o /tmp/e modules/wasm-echo/wasm-echo.c
  bench/wasm-cold.py 150 native=/tmp/e \\
      host="target/release/polis-wasm --cache-dir /tmp/c /tmp/e.wasm"

Run it with `nice -n -20` on a machine others share: a start is a few
milliseconds, and a busy neighbour's time slice is as long.
"""

import resource
import statistics
import subprocess
import sys
import time

HANDSHAKE = (
    b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}\n'
    b'{"jsonrpc":"2.0","id":1,"method":"ping","params":null}\n'
)


def once(argv):
    """Wall and CPU seconds of one start, handshake, ping and exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    child.stdin.write(HANDSHAKE)
    child.stdin.flush()
    for _ in range(2):
        if not child.stdout.readline():
            sys.exit(f"{argv[0]} closed its stdout before answering")
    child.stdin.close()
    child.wait()
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    runs = int(sys.argv[1])
    commands = [arg.split("=", 1) for arg in sys.argv[2:]]
    samples = {name: ([], []) for name, _ in commands}
    for _ in range(runs):
        for name, command in commands:
            wall, cpu = once(command.split())
            samples[name][0].append(wall)
            samples[name][1].append(cpu)
    first = statistics.median(samples[commands[0][0]][0])
    for name, _ in commands:
        wall = statistics.median(samples[name][0])
        cpu = statistics.median(samples[name][1])
        print(f"{name:12} wall p50 {wall * 1e3:.3f} ms ({wall / first:.2f}x)  cpu p50 {cpu * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
