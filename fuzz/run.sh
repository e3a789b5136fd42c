#!/usr/bin/env bash
# Runs each fuzz target for a fixed number of executions, one after another,
# one libFuzzer job each, and prints executions, speed and coverage per
# target. FUZZING.md records the runs.
#
# usage: fuzz/run.sh [RUNS [TARGET...]]   (RUNS defaults to 1000000; all targets)
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Reads the committed seeds in seeds/<target>/ and grows corpus/<target>/,
# which is not committed; a crash lands in artifacts/<target>/ and ends the
# script with libFuzzer's status. Each run's full log is logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")"

runs=${1:-1000000}
shift || true
if [ $# -gt 0 ]; then
  targets=("$@")
else
  # Not `cargo fuzz list`, which would include the seeds program.
  targets=()
  for f in fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

cargo +nightly --version
cargo +nightly fuzz build 2>&1 | tail -1
mkdir -p logs

for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "== $target: $runs runs"
  start=$(date +%s.%N)
  status=0
  # -jobs=1 runs the fuzzer in one worker process whose output goes to
  # fuzz-0.log; the machine's cores are shared.
  cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
    -runs="$runs" -jobs=1 -print_final_stats=1 >/dev/null 2>&1 || status=$?
  end=$(date +%s.%N)
  mv fuzz-0.log "logs/$target.log"
  grep -E '^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' \
    "logs/$target.log" || true
  grep -E '^==[0-9]+==ERROR|^SUMMARY|panicked at|^artifact_prefix|Test unit written' "logs/$target.log" || true
  printf 'elapsed: %.1f s, status %d\n' "$(echo "$end - $start" | bc)" "$status"
  if [ "$status" -ne 0 ]; then
    exit "$status"
  fi
done
