// The JavaScript half of the adapter (src/cloudflare/mod.rs): each function crosses the
// wasm boundary once where reading a request or building a response field by field through
// web-sys would cross it a dozen times (measured: bench/profile.mjs, bench/run.mjs).

let cachedNames = null;
let cachedList = [];

/// The request line and the headers the API reads: "METHOD\nURL" and then, per name of
/// `names` ("\n"-separated), "\n" and the value, or "\n\0" where the header is absent. HTTP
/// forbids NUL, CR and LF in a header value, so the separators cannot occur in one.
export function requestHead(request, names) {
  if (names !== cachedNames) {
    cachedNames = names;
    cachedList = names.split("\n");
  }
  let head = `${request.method}\n${request.url}`;
  const headers = request.headers;
  for (const name of cachedList) {
    const value = headers.get(name);
    head += value === null ? "\n\0" : `\n${value}`;
  }
  return head;
}

/// The body, at most `limit` bytes: a Uint8Array, or null when it is longer. With a declared
/// length (`declared`, -1 for none) within the limit, the runtime ends the body there, so it
/// is read whole (`arrayBuffer`, with no reader; its length checked all the same). Without one
/// (chunked), one read into a buffer of `limit + 1` bytes (workerd's `readAtLeast`, which waits
/// for that many bytes or the end of the body): a shorter result is the whole body; a full one
/// means the body passes the limit, and the rest is never read (the adapter has already
/// refused a declared length over the limit).
export async function readBody(request, limit, declared) {
  const stream = request.body;
  if (stream === null) return new Uint8Array(0);
  if (declared >= 0 && declared <= limit) {
    const body = new Uint8Array(await request.arrayBuffer());
    return body.byteLength > limit ? null : body;
  }
  const reader = stream.getReader({ mode: "byob" });
  const { value } = await reader.readAtLeast(limit + 1, new Uint8Array(limit + 1));
  // workerd ends a closed stream with an empty view; no view at all would be a cancelled one.
  if (value === undefined) throw new Error("the body stream was cancelled");
  if (value.byteLength > limit) {
    reader.cancel().catch(() => {});
    return null;
  }
  return value;
}

/// A Headers object from "name\nvalue\n…" (src/cloudflare/mod.rs keeps the ones it reuses).
export function headersOf(head) {
  const headers = new Headers();
  if (head.length > 0) {
    const parts = head.split("\n");
    for (let i = 0; i + 1 < parts.length; i += 2) headers.append(parts[i], parts[i + 1]);
  }
  return headers;
}

/// A response from its status, its headers (the Response copies them) and its body (a view
/// into wasm memory, copied here before wasm runs again).
export function respond(status, headers, body) {
  return new Response(body.length === 0 ? null : body.slice(), { status, headers });
}

/// Responses that `entry.mjs` replays (see there), shared through the isolate's global object:
/// the bundler gives this module and the entry separate scopes. Keyed by the URL without its
/// query, host included, so a response is only ever replayed to the host it was made for.
const REPLAY = Symbol.for("edgeid.replay");
const MAX_REPLAYS = 32;
const utf8 = new TextDecoder();

/// Keeps a response for `entry.mjs` to replay to every GET of `request`'s URL without
/// conditional headers until `untilMs` (Unix milliseconds, exclusive). The body becomes a
/// string: immutable, so one copy serves every replay. Past `MAX_REPLAYS` URLs (hosts, ports),
/// the one kept longest ago goes.
export function keepForReplay(request, status, headers, body, untilMs) {
  // An instant already past (a request that started before a change it then read) would
  // only push out a replay that is still good.
  if (request.method !== "GET" || untilMs <= Date.now()) return;
  const replays = (globalThis[REPLAY] ??= new Map());
  const url = request.url;
  const query = url.indexOf("?");
  const key = query < 0 ? url : url.slice(0, query);
  replays.delete(key);
  if (replays.size >= MAX_REPLAYS) replays.delete(replays.keys().next().value);
  replays.set(key, { body: utf8.decode(body), init: { status, headers }, untilMs });
}

/// Drops every kept response (a new wasm instance starts with an empty cache of its own).
export function forgetReplays() {
  globalThis[REPLAY]?.clear();
}

/// One D1 batch (one transaction) from `[{ sql, params }]` as JSON; its outcome as JSON too,
/// `[[rows, changes], …]`: a string each way instead of a call per statement, per bound value
/// and per column of every row. With `delayMs` > 0 (the benchmark's `BENCH_D1_DELAY_MS`), the
/// batch first waits that long on a timer: batches started together wait together, as their
/// round trips to a distant database would.
export async function d1Batch(db, statementsJson, delayMs) {
  if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
  const statements = JSON.parse(statementsJson).map(({ sql, params }) => db.prepare(sql).bind(...params));
  const results = await db.batch(statements);
  return JSON.stringify(results.map((result) => [result.results ?? [], result.meta?.changes ?? 0]));
}

/// WebCrypto's parameters for signing with each JWS algorithm, made once.
const SIGNING = {
  ES256: { name: "ECDSA", hash: "SHA-256" },
  EdDSA: { name: "Ed25519" },
  RS256: { name: "RSASSA-PKCS1-v1_5" },
};

/// The JWS signature of `message` (copied by `sign` before it returns) with an imported key:
/// one call, where building the parameters and finding `crypto.subtle` from wasm took ten.
/// ECDSA's signature comes as IEEE P1363 (r‖s), which is the JWS form.
export async function signJws(key, alg, message) {
  return new Uint8Array(await crypto.subtle.sign(SIGNING[alg], key, message));
}

/// The flood pre-filter: one unit of `key` from the Workers Rate Limiting binding `binding`
/// (wrangler.toml `[[ratelimits]]`). True where the runtime has no such binding — at once, not
/// as a promise, so that the wasm need not wait for one — else a promise of whether the unit
/// was granted, true if the binding fails: it only keeps floods off D1, where the exact
/// budgets are kept.
export function prefilter(env, binding, key) {
  const limiter = env[binding];
  if (!limiter || typeof limiter.limit !== "function") return true;
  return limitOf(limiter, key);
}

async function limitOf(limiter, key) {
  try {
    const outcome = await limiter.limit({ key });
    return !(outcome && outcome.success === false);
  } catch (err) {
    console.warn(`rate-limit pre-filter unavailable: ${err}`);
    return true;
  }
}
