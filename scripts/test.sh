#!/bin/sh
# README's test command: installs what is missing, checks formatting and lints (native and
# wasm32), builds the worker once, then runs every test: the native unit and flow tests, and the
# end-to-end tests that serve the built worker with wrangler dev.
set -eu
. "$(dirname -- "$0")/toolchain.sh"
cd "$EDGEID_ROOT"
started=$(date +%s)
# The Python tools and Chromium download while the Rust tools compile.
(ensure_python_packages && ensure_chromium) &
side_tools=$!
ensure_toolchain
wait "$side_tools"
node scripts/dev-vars.mjs

step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy (native, the workspace, all targets)"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo clippy (wasm32 worker)"
cargo clippy --lib --target wasm32-unknown-unknown --release --locked -- -D warnings
step "edgeid-verifier's dependency tree: no worker, argon2, D1, wasm-bindgen or edgeid"
if cargo tree -p edgeid-verifier --all-features --locked -e normal --prefix none |
  grep -E '^(worker|worker-sys|argon2|edgeid|wasm-bindgen|js-sys|web-sys|rusqlite) '; then
  echo "edgeid-verifier must not depend on the crates above" >&2
  exit 1
fi
step "build the worker"
sh scripts/build-worker.sh
step "wrangler deploy --dry-run (deployable as committed)"
node scripts/check-deploy.mjs
step "cargo test"
EDGEID_PREBUILT=1 cargo test --workspace --locked -- --test-threads 4
step "done"
