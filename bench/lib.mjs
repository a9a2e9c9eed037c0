// What the benchmark's scripts share (bench/run.mjs, bench/profile.mjs): starting a server of
// bench/serve.mjs pinned to the server core, the CPU time of its serving process, and
// autocannon runs.
import { spawn } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { createServer } from "node:net";
import { cpus } from "node:os";
import { performance } from "node:perf_hooks";
import autocannon from "autocannon";

export const root = new URL("..", import.meta.url).pathname;
export const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
export const SECONDS = Number(process.env.BENCH_LOAD_SECONDS ?? 5);
export const REFRESHES = Number(process.env.BENCH_REFRESHES ?? 3000);
export const SERVER_CORE = cpus().length > 1 ? "0" : null;
export const CONNECTIONS = 16;

export const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
export const fixed = (value, digits = 1) => (Number.isFinite(value) ? value.toFixed(digits) : "n/a");

export function freePort() {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// Servers still running when this process ends (an error, Ctrl-C) are stopped with it.
const running = new Set();
const stopAll = () => {
  for (const pgid of running) {
    try {
      process.kill(-pgid, "SIGTERM");
    } catch {}
  }
};
process.on("exit", stopAll);
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(130));

/// A server of bench/serve.mjs in its own process group, pinned to the server core.
export async function start(kind, extra = [], env = {}) {
  const port = await freePort();
  const command = SERVER_CORE ? "taskset" : process.execPath;
  const args = [...(SERVER_CORE ? ["-c", SERVER_CORE, process.execPath] : []), `${root}bench/serve.mjs`, kind, String(port), ...extra];
  const child = spawn(command, args, { cwd: root, detached: true, stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, ...env } });
  running.add(child.pid);
  const ready = await new Promise((resolve, reject) => {
    let output = "";
    child.stdout.on("data", (chunk) => {
      output += chunk;
      const match = output.match(/ready (\S+) (\d+)/);
      if (match) resolve({ url: match[1], startupMs: Number(match[2]) });
    });
    child.on("exit", (code) => reject(new Error(`${kind} server exited with ${code}`)));
  });
  running.add(child.pid);
  const stop = () => {
    running.delete(child.pid);
    try {
      process.kill(-child.pid, "SIGTERM");
    } catch {}
  };
  // The processes that serve: a Worker's workerd (Miniflare's Node process beside it only
  // supervises, and its own timers and collections, ≈ 70–120 ms every few seconds, landed in
  // whichever load was running), or the whole Node server of the peer.
  const serving = kind === "oidc-provider" ? null : "workerd";
  return { ...ready, pgid: child.pid, serving, stop };
}

/// CPU nanoseconds used so far by the threads of a process group's processes, split into
/// those whose command is `serving` (every process when null) and the others: each thread's
/// `schedstat` (its run time in nanoseconds, user and system), not the 10 ms clock ticks of
/// `/proc/<pid>/stat`.
export function groupCpuNs(pgid, serving = null) {
  const ns = { serving: 0, others: 0 };
  for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      // After the command: state ppid pgrp ….
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]) !== pgid) continue;
      const command = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      let threads = 0;
      for (const tid of readdirSync(`/proc/${pid}/task`)) {
        try {
          threads += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
        } catch {} // a thread that ended meanwhile
      }
      ns[serving === null || command === serving ? "serving" : "others"] += threads;
    } catch {} // a process that ended meanwhile
  }
  return ns;
}

/// One autocannon run against a server, with its CPU per successful response.
export async function load(server, options) {
  const before = groupCpuNs(server.pgid, server.serving);
  const t0 = performance.now();
  // autocannon ends a run only at its next sample tick (every second by default): a run of a
  // fixed number of requests would count the idle wait for that tick in its duration, which
  // rounded every refresh run up to whole seconds. Ticks every 10 ms bound that to 10 ms.
  // `expect: "3xx"`: the successful answer is a redirect (the authorization endpoint's).
  const { expect = "2xx", ...rest } = options;
  const result = await autocannon({ connections: CONNECTIONS, sampleInt: 10, ...rest });
  const seconds = (performance.now() - t0) / 1000;
  const after = groupCpuNs(server.pgid, server.serving);
  const ok = result[expect];
  const others = ["1xx", "2xx", "3xx", "4xx", "5xx"].reduce((sum, kind) => sum + (result[kind] ?? 0), 0) - ok;
  if (ok === 0 || others > 0 || result.errors > 0) {
    throw new Error(`${options.url}: ${ok} ${expect}, ${others} other statuses, ${result.errors} errors`);
  }
  // cpuUs: the serving processes' CPU per response; harnessUs: the rest of the group's.
  const perResponse = (kind) => (after[kind] - before[kind]) / 1000 / ok;
  return { ok, rps: ok / seconds, cpuUs: perResponse("serving"), harnessUs: perResponse("others"), p50: result.latency.p50, p99: result.latency.p99 };
}

export async function medianLoad(server, options) {
  const runs = [];
  for (let round = 0; round < ROUNDS; round++) runs.push(await load(server, options));
  return { rps: median(runs.map((r) => r.rps)), cpuUs: median(runs.map((r) => r.cpuUs)), p50: median(runs.map((r) => r.p50)), p99: median(runs.map((r) => r.p99)) };
}

export async function json(url, init) {
  const response = await fetch(url, init);
  if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
  return response.json();
}

/// Fresh refresh tokens minted by the server (`POST /__bench/refresh-tokens`).
export async function refreshTokens(server, count) {
  const tokens = [];
  while (tokens.length < count) {
    // Small requests: one minting thousands of sessions runs for tens of seconds on a loaded
    // machine, and such a request was seen reset (ECONNRESET).
    const n = Math.min(500, count - tokens.length);
    tokens.push(...(await json(`${server.url}/__bench/refresh-tokens?n=${n}`, { method: "POST" })).refresh_tokens);
  }
  return tokens;
}

/// autocannon options for the refresh grant, each request with its own token of `tokens`.
export function refreshRequests(server, path, extraForm, tokens) {
  let next = 0;
  return {
    url: server.url + path,
    amount: tokens.length,
    requests: [{
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      setupRequest: (request) => ({ ...request, body: `grant_type=refresh_token&refresh_token=${tokens[next++]}${extraForm}` }),
    }],
  };
}

/// The refresh grant, each request with a fresh refresh token minted by the server.
export async function refreshLoad(server, path, extraForm) {
  const runs = [];
  for (let round = 0; round < ROUNDS; round++) {
    const tokens = await refreshTokens(server, REFRESHES);
    runs.push(await load(server, refreshRequests(server, path, extraForm, tokens)));
  }
  return { rps: median(runs.map((r) => r.rps)), cpuUs: median(runs.map((r) => r.cpuUs)) };
}

// The authorization-code grant (issue 12). Codes are minted through each server's real
// authorization endpoint with a live browser session, then redeemed at its token endpoint
// with client_secret_basic and PKCE (S256; one verifier for all: checking it costs the same).
// A code lives a minute at edgeid: each round mints its codes right before redeeming them.
export const CODES = Number(process.env.BENCH_CODES ?? REFRESHES);
// bench/serve.mjs gives edgeid this CLIENT_REGISTRATION_TOKEN (a skip_consent client needs it).
export const REGISTRATION_TOKEN = "bench-registration-token-0123456789abcdef";
export const PKCE_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
export const PKCE_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const EDGEID_REDIRECT = "https://app.bench.test/callback";
// bench/oidc-provider.mjs's confidential client.
export const PEER_CODE_CLIENT = { clientId: "edgeid-code", secret: "bench-peer-client-secret-0123456789", redirectUri: "http://127.0.0.1/callback" };

const formBody = (pairs) => new URLSearchParams(pairs).toString();
const basic = (id, secret) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString("base64")}`;
const codeOf = (location) => (location ? new URL(location).searchParams.get("code") : null);

/// A browser for the setup: a cookie jar, redirects followed by the caller.
export class Browser {
  constructor(base) {
    this.base = base;
    this.jar = new Map();
  }
  cookie() {
    return [...this.jar].map(([name, value]) => `${name}=${value}`).join("; ");
  }
  async request(path, init = {}) {
    const headers = { accept: "text/html,application/xhtml+xml", ...(init.headers ?? {}) };
    if (this.jar.size) headers.cookie = this.cookie();
    const response = await fetch(new URL(path, this.base), { redirect: "manual", ...init, headers });
    for (const line of response.headers.getSetCookie()) {
      const pair = line.split(";")[0];
      const at = pair.indexOf("=");
      const [name, value] = [pair.slice(0, at).trim(), pair.slice(at + 1)];
      if (/max-age=0/i.test(line) || value === "") this.jar.delete(name);
      else this.jar.set(name, value);
    }
    return { status: response.status, location: response.headers.get("location"), body: await response.text() };
  }
}

/// edgeid's code setup through its real endpoints: the benchmark user (verified, made by
/// `/__bench/refresh-tokens`), a confidential skip_consent client registered at
/// `/oauth/register`, and a browser session from the hosted login page (authorize → login
/// page → its form → back through `/oauth/authorize/resume` to the client with a code).
export async function edgeidCodeSetup(server) {
  await refreshTokens(server, 1);
  const client = await json(`${server.url}/oauth/register`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${REGISTRATION_TOKEN}` },
    body: JSON.stringify({
      redirect_uris: [EDGEID_REDIRECT],
      client_name: "Benchmark",
      grant_types: ["authorization_code", "refresh_token"],
      token_endpoint_auth_method: "client_secret_basic",
      id_token_signed_response_alg: "ES256",
      skip_consent: true,
    }),
  });
  const authorize = `/oauth/authorize?${formBody({
    response_type: "code",
    client_id: client.client_id,
    redirect_uri: EDGEID_REDIRECT,
    scope: "openid email offline_access",
    state: "bench-state",
    nonce: "bench-nonce",
    code_challenge: PKCE_CHALLENGE,
    code_challenge_method: "S256",
  })}`;
  const browser = new Browser(server.url);
  let reply = await browser.request(authorize);
  for (let step = 0; step < 6 && reply.status === 303 && !reply.location.startsWith(EDGEID_REDIRECT); step++) {
    reply = await browser.request(reply.location);
  }
  if (reply.status !== 200 || !reply.body.includes('name="password"')) throw new Error(`edgeid: no login page (${reply.status})`);
  const attribute = (html, name) => html.match(new RegExp(`${name}="([^"]*)"`))?.[1]?.replaceAll("&amp;", "&").replaceAll("&quot;", '"');
  const fields = reply.body.split('<input type="hidden" ').slice(1).map((input) => [attribute(input, "name"), attribute(input, "value")]);
  reply = await browser.request(attribute(reply.body, "action"), {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", origin: server.url, "sec-fetch-site": "same-origin" },
    body: formBody([...fields, ["email", "bench-refresh@example.com"], ["password", "a benchmark passphrase"]]),
  });
  for (let step = 0; step < 6 && reply.status === 303 && !reply.location.startsWith(EDGEID_REDIRECT); step++) {
    reply = await browser.request(reply.location);
  }
  if (!codeOf(reply.location)) throw new Error(`edgeid: the login did not come back with a code (${reply.status} ${reply.location})`);
  return { clientId: client.client_id, secret: client.client_secret, redirectUri: EDGEID_REDIRECT, authorize, cookie: browser.cookie() };
}

/// `count` codes from edgeid's authorization endpoint (`GET /oauth/authorize` with the
/// session cookie: a 303 to the client with the code), driven by autocannon; also the
/// endpoint's CPU per request.
export async function edgeidCodes(server, setup, count, connections = undefined) {
  const codes = [];
  const result = await load(server, {
    url: server.url + setup.authorize,
    amount: count,
    ...(connections ? { connections } : {}),
    expect: "3xx",
    requests: [{
      method: "GET",
      headers: { cookie: setup.cookie },
      onResponse: (status, _body, _context, headers) => {
        // autocannon passes the raw header names.
        const location = Object.entries(headers).find(([name]) => name.toLowerCase() === "location")?.[1];
        const code = status === 303 && codeOf(location);
        if (code) codes.push(code);
      },
    }],
  });
  if (codes.length !== count) throw new Error(`edgeid: ${codes.length} codes of ${count}`);
  return { codes, result };
}

/// autocannon options for the code grant, each request with its own code of `codes`.
export function codeRequests(server, path, client, codes) {
  let next = 0;
  return {
    url: server.url + path,
    amount: codes.length,
    requests: [{
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", authorization: basic(client.clientId, client.secret) },
      setupRequest: (request) => ({
        ...request,
        body: formBody({ grant_type: "authorization_code", code: codes[next++], redirect_uri: client.redirectUri, code_verifier: PKCE_VERIFIER }),
      }),
    }],
  };
}

/// oidc-provider's codes through its real interaction flow, `parallel` browsers at a time:
/// `GET /auth` (offline_access needs `prompt=consent`, so every code goes through an
/// interaction) → its interaction URL, which bench/oidc-provider.mjs answers with
/// `provider.interactionFinished` (login and consent) → `/auth/:uid` → the client with a code.
export async function peerCodes(server, count, parallel = 8) {
  const authorize = `/auth?${formBody({
    response_type: "code",
    client_id: PEER_CODE_CLIENT.clientId,
    redirect_uri: PEER_CODE_CLIENT.redirectUri,
    scope: "openid email offline_access api",
    resource: "https://api.bench.test",
    prompt: "consent",
    state: "bench-state",
    nonce: "bench-nonce",
    code_challenge: PKCE_CHALLENGE,
    code_challenge_method: "S256",
  })}`;
  const codes = [];
  const chain = async () => {
    while (codes.length < count) {
      const browser = new Browser(server.url);
      let reply = await browser.request(authorize);
      for (let step = 0; step < 6 && reply.status >= 300 && reply.status < 400 && !reply.location.startsWith(PEER_CODE_CLIENT.redirectUri); step++) {
        reply = await browser.request(reply.location);
      }
      const code = codeOf(reply.location);
      if (!code) throw new Error(`oidc-provider: no code (${reply.status} ${reply.location} ${reply.body.slice(0, 3000)})`);
      codes.push(code);
    }
  };
  await Promise.all(Array.from({ length: parallel }, chain));
  return codes.slice(0, count);
}
