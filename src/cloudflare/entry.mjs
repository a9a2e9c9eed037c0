// The Worker's entry (wrangler.toml `main`). Every request goes to the Rust worker
// (build/index.js, built by worker-build from src/), except a GET that the worker has already
// answered with a document that stays the same for a while: the JWKS and the discovery
// document, until the signing keys can next change (`Keyring::unchanged_until`). Those are
// answered from the isolate's memory (kept by `keepForReplay` in glue.js), without entering
// wasm: they are the most fetched URLs of an identity provider.
//
// A request with If-None-Match goes to the worker, which compares the ETag. So do HEAD and
// every other method, and every URL the worker has not marked.
//
// Everything else enters the wasm's `fetch` directly (below), not through worker-build's class.
import Worker from "../../build/index.js";

const REPLAY = Symbol.for("edgeid.replay");

// worker-build's (0.8) instance state, and its class's `fetch`, which calls the wasm export with
// `this.env` and `this.ctx`.
const INIT_STATE = "__worker_init_state";
const wasmFetch = Worker.prototype?.fetch;

/// What worker-build does when a call into the wasm fails with a `RuntimeError` (a panic, an
/// out-of-bounds access): the instance is marked, and is reinitialised before the next call.
function markCrash(err) {
  if (err instanceof WebAssembly.RuntimeError && globalThis[INIT_STATE]) globalThis[INIT_STATE].criticalError = true;
}

export default {
  fetch(request, env, ctx) {
    const replays = globalThis[REPLAY];
    if (replays !== undefined && request.method === "GET") {
      const url = request.url;
      const query = url.indexOf("?");
      const kept = replays.get(query < 0 ? url : url.slice(0, query));
      if (kept !== undefined && Date.now() < kept.untilMs && !request.headers.has("if-none-match")) {
        return new Response(kept.body, kept.init);
      }
    }
    // Straight into the wasm's `fetch` (what worker-build's class method calls), without the
    // per-request `WorkerEntrypoint` and the two `Proxy`s worker-build puts around it for its
    // recovery after a crash of the wasm instance. That recovery stays: a crash marks the
    // instance's state as worker-build would, and the next request goes through worker-build's
    // path, which reinitialises the instance first. Measured: 16 µs less CPU per request.
    const state = globalThis[INIT_STATE];
    if (typeof wasmFetch !== "function" || state === undefined || state.criticalError) {
      return new Worker(ctx, env).fetch(request);
    }
    let response;
    try {
      response = wasmFetch.call({ env, ctx }, request);
    } catch (err) {
      markCrash(err);
      throw err;
    }
    if (typeof response?.then === "function") response.then(undefined, markCrash);
    return response;
  },
  queue(batch, env, ctx) {
    return new Worker(ctx, env).queue(batch);
  },
  scheduled(controller, env, ctx) {
    return new Worker(ctx, env).scheduled(controller);
  },
};
