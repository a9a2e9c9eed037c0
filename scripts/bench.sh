#!/bin/sh
# README's benchmark command (not part of the tests): installs what is missing, builds the
# release worker once, then runs the load run (bench/load.mjs) and prints its figures.
set -eu
. "$(dirname -- "$0")/toolchain.sh"
cd "$EDGEID_ROOT"
ensure_toolchain
node scripts/dev-vars.mjs
sh scripts/build-worker.sh
EDGEID_PREBUILT=1 node bench/load.mjs
