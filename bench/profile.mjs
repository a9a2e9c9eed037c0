// Where the CPU of a request goes: the release worker on workerd (Miniflare, as bench/run.mjs
// runs it) with V8's sampling profiler attached to edgeid's isolate through workerd's
// inspector, while one scenario loads it one request at a time. Prints, per scenario, the
// shares of edgeid's samples by part (wasm functions by Rust crate, the JavaScript glue, the
// runtime's own JavaScript such as D1's client) and its hottest functions; writes the same to
// target/bench/profile.md. scripts/bench.sh runs it after the benchmark.
//   node bench/profile.mjs [refresh|code|authorize|jwks|discovery|login|userinfo|constant ...]   (the default set without arguments)
import { mkdirSync, writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { codeRequests, edgeidCodeSetup, edgeidCodes, fixed, freePort, json, load, refreshRequests, refreshTokens, root, start } from "./lib.mjs";

const SAMPLING_INTERVAL_US = Number(process.env.PROFILE_INTERVAL_US ?? 200);
const TOP = Number(process.env.PROFILE_TOP ?? 15);
const scenarios = process.argv.slice(2).length ? process.argv.slice(2) : ["constant", "jwks", "refresh", "code", "login"];

/// A Chrome DevTools Protocol session with one isolate.
async function connect(url) {
  const socket = new WebSocket(url);
  await new Promise((resolve, reject) => {
    socket.addEventListener("open", resolve, { once: true });
    socket.addEventListener("error", reject, { once: true });
  });
  let id = 0;
  const pending = new Map();
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    const waiter = pending.get(message.id);
    if (!waiter) return;
    pending.delete(message.id);
    if (message.error) waiter.reject(new Error(`${url}: ${message.error.message}`));
    else waiter.resolve(message.result);
  });
  return {
    send: (method, params = {}) =>
      new Promise((resolve, reject) => {
        pending.set(++id, { resolve, reject });
        socket.send(JSON.stringify({ id, method, params }));
      }),
    close: () => socket.close(),
  };
}

/// Sampled time per function of a V8 CPU profile, idle excluded, in µs.
function selfTimes(profile) {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const times = new Map();
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = profile.timeDeltas[i + 1] ?? 0;
    const frame = byId.get(profile.samples[i]).callFrame;
    if (frame.functionName === "(idle)") continue;
    const key = `${frame.functionName || "(anonymous)"}\u0000${frame.url}\u0000${frame.lineNumber}`;
    times.set(key, (times.get(key) ?? 0) + delta);
  }
  return [...times].map(([key, us]) => {
    const [name, url, line] = key.split("\u0000");
    return { name, url, line, us };
  });
}

/// Which part of the worker a function belongs to: the Rust crate of a wasm function, the
/// wasm-bindgen JavaScript glue, or V8/workerd itself.
function part(fn) {
  if (fn.url.startsWith("wasm://")) {
    const path = fn.name.replace(/^<+/, "").replace(/^(impl |dyn )/, "");
    const crate = path.split(/::|\s|</)[0];
    return `wasm: ${crate || fn.name}`;
  }
  if (fn.name.startsWith("(")) return fn.name;
  if (fn.url.endsWith("entry.mjs")) return "JavaScript (entry.mjs: replays, hand-over to the wasm)";
  return fn.url ? "JavaScript (wasm-bindgen glue, workers-rs shim)" : "JavaScript (runtime)";
}

function sum(values) {
  return values.reduce((a, b) => a + b, 0);
}

async function scenario(server, name) {
  switch (name) {
    case "refresh": {
      const tokens = await refreshTokens(server, 3000);
      return () => load(server, { ...refreshRequests(server, "/oauth/token", "", tokens), connections: 1 });
    }
    case "code": {
      // Codes live a minute: 2000 are redeemed one at a time well within it.
      const setup = await edgeidCodeSetup(server);
      const { codes } = await edgeidCodes(server, setup, 2000);
      return () => load(server, { ...codeRequests(server, "/oauth/token", setup, codes), connections: 1 });
    }
    case "authorize": {
      const setup = await edgeidCodeSetup(server);
      return async () => (await edgeidCodes(server, { ...setup }, 2000, 1)).result;
    }
    case "jwks":
      return () => load(server, { url: `${server.url}/.well-known/jwks.json`, duration: 5, connections: 1 });
    case "constant":
      return () => load(server, { url: `${server.url}/__bench/constant`, duration: 5, connections: 1 });
    case "discovery":
      return () => load(server, { url: `${server.url}/.well-known/openid-configuration`, duration: 5, connections: 1 });
    case "login":
      await refreshTokens(server, 1);
      return () =>
        load(server, {
          url: `${server.url}/v1/login`,
          amount: 300,
          connections: 1,
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ email: "bench-refresh@example.com", password: "a benchmark passphrase" }),
        });
    case "userinfo": {
      await refreshTokens(server, 1);
      const login = await json(`${server.url}/v1/login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: "bench-refresh@example.com", password: "a benchmark passphrase" }),
      });
      return () =>
        load(server, { url: `${server.url}/userinfo`, duration: 5, connections: 1, headers: { authorization: `Bearer ${login.access_token}` } });
    }
    default:
      throw new Error(`unknown scenario ${name}`);
  }
}

const inspectorPort = await freePort();
// Rate limits on, as production runs them, with a budget per client that lets one client log
// in a few hundred times.
const server = await start("edgeid", ["RATE_LIMIT_LOGIN_PER_IP=100000/900"], { BENCH_INSPECTOR_PORT: String(inspectorPort) });
const report = [
  `edgeid CPU profile, ${new Date().toISOString()}: V8's sampler on edgeid's isolate every ${SAMPLING_INTERVAL_US} µs (workerd through Miniflare, release build), one request at a time.`,
  "",
  "Shares are of edgeid's samples. workerd runs every isolate on one thread, and the sampler",
  "also ticks while Miniflare's entry worker or the local D1 runs, or the thread waits; those",
  "ticks land on whatever edgeid's stack shows (often `(program)` or the pending call), so",
  "absolute sampled times overstate and only the shares are read. CPU per request is the",
  "its workerd's, measured as bench/run.mjs does (the profiler adds to it).",
];
try {
  const targets = await json(`http://127.0.0.1:${inspectorPort}/json/list`);
  const own = targets.find((target) => target.id === "core:user:");
  for (const name of scenarios) {
    const run = await scenario(server, name);
    // Warm up (JIT, caches), then measure with the profiler attached.
    await json(`${server.url}/.well-known/jwks.json`);
    const cdp = await connect(own.webSocketDebuggerUrl);
    await cdp.send("Profiler.enable");
    await cdp.send("Profiler.setSamplingInterval", { interval: SAMPLING_INTERVAL_US });
    await cdp.send("Profiler.start");
    const t0 = performance.now();
    const result = await run();
    const wall = performance.now() - t0;
    const { profile } = await cdp.send("Profiler.stop");
    cdp.close();
    const fns = selfTimes(profile);
    const total = sum(fns.map((fn) => fn.us));
    const share = (us) => `${fixed((100 * us) / total)} %`;
    report.push("", `## ${name}: ${result.ok} requests in ${fixed(wall / 1000, 1)} s; ${fixed(result.cpuUs)} µs of CPU per request`, "");
    const parts = new Map();
    for (const fn of fns) parts.set(part(fn), (parts.get(part(fn)) ?? 0) + fn.us);
    report.push("| part of edgeid's isolate | share |", "| --- | ---: |");
    for (const [label, us] of [...parts].sort((a, b) => b[1] - a[1]).slice(0, 12)) report.push(`| ${label} | ${share(us)} |`);
    report.push("", "| hottest functions (self time) | share |", "| --- | ---: |");
    for (const fn of fns.sort((a, b) => b.us - a.us).slice(0, TOP)) {
      const where = fn.url && !fn.url.startsWith("wasm://") ? ` (${fn.url.split("/").pop()}:${fn.line})` : "";
      report.push(`| ${(fn.name + where).replaceAll("|", "\\|").slice(0, 110)} | ${share(fn.us)} |`);
    }
  }
} finally {
  server.stop();
}
const text = report.join("\n");
console.log(text);
mkdirSync(`${root}target/bench`, { recursive: true });
writeFileSync(`${root}target/bench/profile.md`, text + "\n");
