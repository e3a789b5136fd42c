#!/usr/bin/env bash
# Partitions of the leader's host, on a mesh whose directory is etcd: a
# three-member etcd cluster in the root network namespace, two router hosts
# in network namespaces of their own (a veth link each, from 198.18.0.0/15,
# named as polis_testing::Netns names them, so that tests running meanwhile
# keep clear), and the fence module (modules/fence) keeping a counter in a
# file both hosts share, refusing calls routed by a deposed router's epoch.
# A frontend on each host calls its own router (Unix socket, no etcd) without
# pause; RUNS times, the leader's link goes down, a frontend in the root
# namespace calls through etcd until a router of a greater epoch answers
# (the failover time), the link comes up again and the deposed host starts a
# candidate again, which leads at the next partition. Then it prints the
# fence's stale count (calls a deposed router accepted after a later router
# wrote), OK answers whose call began after a later epoch's first write,
# increments lost (answered OK, not in the count) and the failover p50.
# Needs root and iproute2.
#   bench/etcd-partition.sh [RUNS]   (after `cargo build --features etcd -p polis -p polis-examples`)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-100} TTL=${TTL:-2}
P=$PWD/target/debug/polis MODS=$PWD/target/debug
T=$(mktemp -d /tmp/polis-partition.XXXX)
pids=() nss=()
cleanup() {
  exec 2>/dev/null # no job notices for what is killed here
  touch "$T/stop"
  kill -9 "${pids[@]}" 2>/dev/null || true
  for ns in "${nss[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
ms() { date +%s%3N; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dotted() { echo "$(($1 >> 24 & 255)).$(($1 >> 16 & 255)).$(($1 >> 8 & 255)).$(($1 & 255))"; }

# Two hosts: namespace plI, veth plrI (root side) and plnI, subnet I of
# 198.18.0.0/15 (a /30); the first free I from the pid on.
idx=() rip=() nip=()
i=$(($$ * 16 % 32768))
for k in 0 1; do
  until ip netns add "pl$i" 2>/dev/null; do i=$(((i + 1) % 32768)); done
  nss+=("pl$i") idx+=("$i")
  base=$(((198 << 24) + (18 << 16) + 4 * i))
  rip+=("$(dotted $((base + 1)))") nip+=("$(dotted $((base + 2)))")
  ip link add "plr$i" type veth peer name "pln$i" netns "pl$i"
  ip addr add "${rip[$k]}/30" dev "plr$i" && ip link set "plr$i" up
  ip -n "pl$i" addr add "${nip[$k]}/30" dev "pln$i" && ip -n "pl$i" link set "pln$i" up
  ip -n "pl$i" link set lo up
  i=$(((i + 1) % 32768))
done

cl=() pe=()
for m in 0 1 2; do cl+=("$(port)"); pe+=("$(port)"); done
init=$(for m in 0 1 2; do printf 'm%d=http://127.0.0.1:%d,' "$m" "${pe[$m]}"; done); init=${init%,}
for m in 0 1 2; do
  etcd --name "m$m" --data-dir "$T/m$m" \
    --listen-client-urls "http://127.0.0.1:${cl[$m]},http://${rip[0]}:${cl[$m]},http://${rip[1]}:${cl[$m]}" \
    --advertise-client-urls "http://127.0.0.1:${cl[$m]}" --listen-peer-urls "http://127.0.0.1:${pe[$m]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${pe[$m]}" --initial-cluster "$init" \
    --heartbeat-interval 50 --election-timeout 500 --logger zap --log-level error 2>"$T/etcd$m.log" &
  pids+=($!)
done
url() { echo "etcd://$1:${cl[0]},$1:${cl[1]},$1:${cl[2]}/bench?ttl=$TTL"; }
mkdir -p "$T/mods/fence" "$T/state"
printf 'name = "fence"\nversion = "0.1.0"\nexec = "%s/polis-fence"\nprotocol = "frames"\n[config]\nstate = "%s"\n' \
  "$MODS" "$T/state" >"$T/mods/fence/module.toml"
echo bench-token >"$T/token"; chmod 600 "$T/token"
export POLIS_TOKEN_FILE=$T/token POLIS_MODULES_PATH=$T/mods
far() { POLIS_DISCOVERY=$(url 127.0.0.1) "$P" --mesh-dir "$T/f" "$@"; }
until far ls >/dev/null 2>&1; do sleep 0.1; done

rpid=()
router() { # host k: a candidate in its namespace
  ip netns exec "${nss[$1]}" env POLIS_DISCOVERY="$(url "${rip[$1]}")" \
    "$P" --mesh-dir "$T/h$1" router --listen "${nip[$1]}:0" >>"$T/r$1.log" 2>&1 &
  pids+=($!) rpid[$1]=$!
}
leader() { far resolve router | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["pid"], r["epoch"])'; }
# Host k's frontend: its own router through the Unix socket, never launching one.
near() {
  while [ ! -e "$T/stop" ]; do
    s=$(ms)
    if out=$(ip netns exec "${nss[$1]}" "$P" --mesh-dir "$T/h$1" call --no-launch fence incr 2>"$T/near$1.err"); then
      echo "$s $(ms) ok $out"
    else echo "$s $(ms) err $(tr '\n' ' ' <"$T/near$1.err")"; fi
  done >>"$T/near$1.log"
}

router 0
until far resolve router >/dev/null 2>&1; do sleep 0.05; done
router 1
near 0 & pids+=($!) nears=($!)
near 1 & pids+=($!) nears+=($!)
sleep 0.5 # both candidates in the election
times=()
for run in $(seq "$RUNS"); do
  read -r old epoch < <(leader)
  if [ "$old" = "${rpid[0]}" ]; then k=0; elif [ "$old" = "${rpid[1]}" ]; then k=1; else
    echo "run $run: the leader $old is neither host's router" >&2; exit 1; fi
  sleep 0.3 # frontends on both sides served by the leader
  t0=$(ms)
  ip link set "plr${idx[$k]}" down
  while :; do
    s=$(ms)
    if out=$(far call fence incr 2>"$T/far.err"); then
      echo "$s $(ms) ok $out" >>"$T/far.log"
      e=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["epoch"])' "$out")
      [ "$e" -gt "$epoch" ] && break
    else echo "$s $(ms) err $(tr '\n' ' ' <"$T/far.err")" >>"$T/far.log"; fi
  done
  times+=($(($(ms) - t0)))
  # The deposed router leaves by itself (exit 4, lost the router office).
  code=0; wait "$old" || code=$?
  [ "$code" = 4 ] || { echo "run $run: the deposed router exited $code" >&2; tail "$T/r$k.log" >&2; exit 1; }
  ip link set "plr${idx[$k]}" up
  router "$k"
  sleep 0.5 # the new candidate in the election
done
touch "$T/stop"
wait "${nears[@]}" 2>/dev/null || true
far call fence get >"$T/fence.json"
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
python3 - "$T" <<'PY'
import json, sys, glob
t = sys.argv[1]
fence = json.load(open(f"{t}/fence.json"))
firsts = sorted((int(e), w["first_ms"]) for e, w in fence["epochs"].items())
ok = []
for log in glob.glob(f"{t}/near*.log") + [f"{t}/far.log"]:
    for line in open(log):
        start, end, what, rest = line.rstrip("\n").split(" ", 3)
        if what == "ok":
            ok.append((int(start), json.loads(rest)["epoch"]))
late = sum(1 for start, e in ok if any(e2 > e and first < start for e2, first in firsts))
w = [fence["epochs"][str(e)] for e, _ in firsts]
overlaps = sum(1 for a, b in zip(w, w[1:]) if a["last_ms"] >= b["first_ms"])
gaps = sorted(b["first_ms"] - a["last_ms"] for a, b in zip(w, w[1:]))
print(f"epochs that wrote: {len(firsts)}; increments: {fence['count']}, answered OK: {len(ok)}, "
      f"lost (OK but not counted): {max(0, len(ok) - fence['count'])}, "
      f"counted without an OK answer (lost with a deposed router): {max(0, fence['count'] - len(ok))}")
print(f"moments with two routers accepting calls: stale (refused by the fence) {fence['stale']}, "
      f"OK answers begun after a later epoch's first write {late}, overlapping epochs' writes {overlaps}")
if gaps:
    print(f"gap between a deposed epoch's last write and the next one's first (ms): "
          f"min {gaps[0]} p50 {gaps[len(gaps) // 2]} max {gaps[-1]}")
PY
echo "partition of the leader's host to the first call served by the next router (ms, TTL ${TTL}s, $RUNS runs): p50 $(echo "$sorted" | sed -n "$(((RUNS + 1) / 2))p"), min $(echo "$sorted" | head -1), max $(echo "$sorted" | tail -1)"
