#!/bin/sh
# README's benchmark command (not part of the tests): installs what is missing (also the
# benchmark's own npm packages, pinned by bench/package-lock.json), builds the release worker
# and the native side once, then runs the side-by-side benchmark (bench/run.mjs), the latency
# run (bench/latency.mjs), the CPU profile (bench/profile.mjs) and the load run
# (bench/load.mjs). Figures go to stdout and to target/bench/.
set -eu
. "$(dirname -- "$0")/toolchain.sh"
cd "$EDGEID_ROOT"
ensure_toolchain
node scripts/dev-vars.mjs
if ! [ -f bench/node_modules/.package-lock.json ] || [ bench/package-lock.json -nt bench/node_modules/.package-lock.json ]; then
  edgeid_log "installing the benchmark's npm packages from bench/package-lock.json"
  (cd bench && npm ci --no-audit --no-fund --loglevel=error)
fi
sh scripts/build-worker.sh
cargo build --quiet --profile bench-native --locked --example bench_native
# Servers run pinned to core 0 (bench/run.mjs); the load generator takes core 1.
# bench/latency.mjs then measures each flow's latency with and without a delay per D1 round
# trip, and fails when the round trips it shows are not the ones counted natively: the other
# runs still go ahead, and this script exits non-zero at the end.
# bench/profile.mjs then profiles the worker's isolate under the same scenarios.
pin=""
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -gt 1 ]; then pin="taskset -c 1"; fi
$pin node bench/run.mjs
latency=0
$pin node bench/latency.mjs || latency=$?
$pin node bench/profile.mjs
EDGEID_PREBUILT=1 node bench/load.mjs
if [ "$latency" -ne 0 ]; then
  edgeid_log "the latency run FAILED (exit $latency): see its table above and target/bench/latency.md"
  exit "$latency"
fi
