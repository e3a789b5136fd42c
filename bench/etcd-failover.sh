#!/usr/bin/env bash
# Failover of a mesh on etcd: a three-member etcd cluster on loopback, two
# router hosts (mesh directories of their own), a frontend on a third.
# Measures, RUNS times each, from the leader's SIGKILL (and from a clean
# SIGTERM, which resigns) to the first successful `polis call echo ping`,
# which looks the router up again until one answers. Lease TTL: $TTL s.
#   bench/etcd-failover.sh [RUNS]   (after `cargo build --features etcd`)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5} TTL=${TTL:-2}
P=$PWD/target/debug/polis MODS=$PWD/target/debug
T=$(mktemp -d /tmp/polis-failover.XXXX)
pids=()
cleanup() { kill -9 "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cl=() pe=()
for i in 0 1 2; do cl+=("$(port)"); pe+=("$(port)"); done
init=$(for i in 0 1 2; do printf 'm%d=http://127.0.0.1:%d,' "$i" "${pe[$i]}"; done); init=${init%,}
for i in 0 1 2; do
  etcd --name "m$i" --data-dir "$T/m$i" --listen-client-urls "http://127.0.0.1:${cl[$i]}" \
    --advertise-client-urls "http://127.0.0.1:${cl[$i]}" --listen-peer-urls "http://127.0.0.1:${pe[$i]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${pe[$i]}" --initial-cluster "$init" \
    --heartbeat-interval 50 --election-timeout 500 --logger zap --log-level error 2>"$T/etcd$i.log" &
  pids+=($!)
done
mkdir -p "$T/mods/echo"
printf 'name = "echo"\nversion = "0.1.0"\nexec = "%s/polis-echo"\nprotocol = "frames"\n' "$MODS" >"$T/mods/echo/module.toml"
echo bench-token >"$T/token"; chmod 600 "$T/token"
export POLIS_DISCOVERY="etcd://127.0.0.1:${cl[0]},127.0.0.1:${cl[1]},127.0.0.1:${cl[2]}/bench?ttl=$TTL"
export POLIS_TOKEN_FILE=$T/token POLIS_MODULES_PATH=$T/mods
until "$P" --mesh-dir "$T/f" ls >/dev/null 2>&1; do sleep 0.1; done
router() { "$P" --mesh-dir "$T/h$1" router --listen 127.0.0.1:0 >>"$T/r$1.log" 2>&1 & pids+=($!); }
leader() { "$P" --mesh-dir "$T/f" resolve router | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])'; }
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
n=0
for how in KILL TERM; do
  times=()
  for _ in $(seq "$RUNS"); do
    router $((n++)); router $((n++))
    until "$P" --mesh-dir "$T/f" call echo ping >/dev/null 2>&1; do sleep 0.05; done
    sleep 0.5 # both candidates in the election
    old=$(leader)
    t0=$(date +%s%N); kill -"$how" "$old"
    "$P" --mesh-dir "$T/f" call echo ping >/dev/null
    times+=("$(ms "$t0")")
    kill -TERM "$(leader)"; until ! "$P" --mesh-dir "$T/f" resolve router >/dev/null 2>&1; do sleep 0.05; done
  done
  sorted=$(printf '%s\n' "${times[@]}" | sort -n)
  echo "SIG$how of the leader to the first successful call (ms, TTL ${TTL}s, $RUNS runs): $(echo $sorted) p50 $(echo "$sorted" | sed -n "$(( (RUNS + 1) / 2 ))p")"
done
