#!/bin/sh
# The wrangler build command (wrangler.toml [build]): compiles the worker to build/worker with
# worker-build, installing worker-build and wasm-bindgen first if they are missing. Also makes
# sure .dev.vars exists for local development.
set -eu
. "$(dirname -- "$0")/toolchain.sh"
cd "$EDGEID_ROOT"
node scripts/dev-vars.mjs
# The test harness builds once and then starts many servers: it sets EDGEID_PREBUILT=1.
if [ "${EDGEID_PREBUILT:-}" = 1 ] && [ -f build/worker/shim.mjs ]; then
  exit 0
fi
ensure_wasm_target
ensure_worker_build
worker-build --release
