// The Worker's entry (wrangler.toml `main`). Every request goes to the Rust worker
// (build/index.js, built by worker-build from src/), except a GET that the worker has already
// answered with a document that stays the same for a while: the JWKS and the discovery
// document, until the signing keys can next change (`Keyring::unchanged_until`). Those are
// answered from the isolate's memory (kept by `keepForReplay` in glue.js), without entering
// wasm: they are the most fetched URLs of an identity provider.
//
// A request with If-None-Match goes to the worker, which compares the ETag. So do HEAD and
// every other method, and every URL the worker has not marked.
import Worker from "../../build/index.js";

const REPLAY = Symbol.for("edgeid.replay");

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
    return new Worker(ctx, env).fetch(request);
  },
  queue(batch, env, ctx) {
    return new Worker(ctx, env).queue(batch);
  },
  scheduled(controller, env, ctx) {
    return new Worker(ctx, env).scheduled(controller);
  },
};
