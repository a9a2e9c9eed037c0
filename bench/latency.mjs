// The latency run (issue 13): edgeid's release worker, sharded as wrangler.toml declares it,
// served twice at once through bench/serve.mjs — one as it is, one with every D1 batch waiting
// BENCH_D1_DELAY_MS (50 ms) first, as if the database were that far away — and each flow
// driven one request at a time RUNS times, each request to both servers in turn (so that the
// rest of this shared machine's load falls on both alike). Each sequential round trip before
// a response adds the delay once, so round((p50 with the delay − p50 without) / delay) is the
// round trips the worker made; it must equal what `bench_native round-trips` counts on SQLite
// behind the same port (examples/bench_native.rs), or this run fails. The work a request
// leaves for after its response (waitUntil) is not in the response's latency: the worker times
// it on its own (`/__bench/after-response`), and it is checked the same way. A benchmark, not
// a test: it fails loudly, and scripts/bench.sh carries on with its other runs. Prints the
// table and writes it to target/bench/latency.md.
//
//   node bench/latency.mjs     (BENCH_LATENCY_RUNS: requests per flow, 21; at most 40)
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { performance } from "node:perf_hooks";
import { PKCE_VERIFIER, SERVER_CORE, edgeidCodeSetup, fixed, json, median, root, start } from "./lib.mjs";

const RUNS = Number(process.env.BENCH_LATENCY_RUNS ?? 21);
const DELAY_MS = 50;
// The dev mailbox page lists the 50 newest mails: every sign-up's must still be on it.
if (!(RUNS >= 1 && RUNS <= 40)) throw new Error(`BENCH_LATENCY_RUNS must be 1 to 40, not ${process.env.BENCH_LATENCY_RUNS}`);
const OPERATOR_TOKEN = "bench-operator-token-0123456789abcdef";
const PASSWORD = "a latency passphrase";
const nativeBinary = `${root}target/bench-native/examples/bench_native`;
if (!existsSync(nativeBinary)) throw new Error(`${nativeBinary} is missing: cargo build --profile bench-native --locked --example bench_native`);
const declaredShards = [...readFileSync(`${root}wrangler.toml`, "utf8").matchAll(/^\s*binding\s*=\s*"(USERS_\d+)"/gm)].length;

// Every request comes from 127.0.0.1 (Miniflare's CF-Connecting-IP): the per-client budgets are
// raised, not switched off, so that they are drawn with the same statements as by default. Each
// account is used once per flow, so the per-account and per-address budgets stay as they are.
const VARS = [
  "RATE_LIMIT_LOGIN_PER_IP=100000/900",
  "RATE_LIMIT_MAIL_PER_IP=100000/3600",
  "RATE_LIMIT_TOKEN_PER_IP=100000/900",
  `OPERATOR_TOKEN=${OPERATOR_TOKEN}`,
];

// Each flow: its name in the table and its key in `bench_native round-trips`'s `flows`.
const FLOWS = [
  ["signup", "sign-up (202)"],
  ["verify_email", "verify the email (link)"],
  ["login", "login (`/v1/login`)"],
  ["refresh_first_party", "refresh, first party"],
  ["userinfo", "`/userinfo`"],
  ["forgot_password", "forgot password (202)"],
  ["authorize_with_session", "`GET /oauth/authorize` with a live session (303 with a code)"],
  ["code_grant", "code grant (`client_secret_basic`, PKCE)"],
  ["refresh_client", "refresh, registered client"],
  ["jwks", "JWKS"],
  ["healthz", "`/healthz` (one batch: the timer's own check)"],
];

const started = performance.now();
const native = JSON.parse(execFileSync(nativeBinary, ["round-trips"]).toString()).flows;
for (const [key] of FLOWS) if (!native[key]) throw new Error(`bench_native round-trips has no flow ${key}`);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const afterState = (server) => json(`${server.url}/__bench/after-response`);

/// Waits until the isolate has finished every run of after-response work it started.
async function idle(server) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const state = await afterState(server);
    if (state.finished >= state.started) return state;
    if (Date.now() > deadline) throw new Error(`work after a response still running after a minute: ${JSON.stringify(state)}`);
    await sleep(5);
  }
}

/// One request, timed from the client; then the work it left for after its response, timed by
/// the worker (none when the request scheduled none).
async function timed(server, path, init, expectedStatus) {
  const before = await idle(server);
  const t0 = performance.now();
  const response = await fetch(server.url + path, { redirect: "manual", ...init });
  const body = await response.text();
  const ms = performance.now() - t0;
  if (response.status !== expectedStatus) throw new Error(`${init?.method ?? "GET"} ${path}: ${response.status}, not ${expectedStatus}: ${body.slice(0, 300)}`);
  const scheduled = (await afterState(server)).started - before.started;
  const after = scheduled > 0 ? (await idle(server)).last_ms : null;
  return { ms, after, body, location: response.headers.get("location") };
}

const jsonPost = (body) => ({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
const formPost = (pairs, headers = {}) => ({
  method: "POST",
  headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
  body: new URLSearchParams(pairs).toString(),
});
const basic = (id, secret) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString("base64")}`;

/// The verification link of each address, from the dev mailbox (the queue delivers within a
/// second or so).
async function verificationTokens(server, emails) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const html = await (await fetch(`${server.url}/dev/mailbox`)).text();
    const tokens = new Map();
    for (const mail of html.split('<article class="mail">').slice(1)) {
      const to = mail.match(/To (\S+) ·/)?.[1];
      const token = mail.match(/\/verify-email\?token=([A-Za-z0-9_-]+)/)?.[1];
      if (to && token && !tokens.has(to)) tokens.set(to, token);
    }
    if (emails.every((email) => tokens.has(email))) return emails.map((email) => tokens.get(email));
    if (Date.now() > deadline) throw new Error(`no verification mail for ${emails.filter((email) => !tokens.has(email)).join(", ")}`);
    await sleep(100);
  }
}

/// Every flow `count` times, one request at a time, for fresh accounts named by `prefix`, on
/// every server in turn: request i of a flow goes to each server before request i + 1 goes to
/// any, so that whatever else loads this shared machine meanwhile falls on both alike. Each
/// server's timings per flow (ms) and its after-response work's (ms, where there is any).
async function drive(servers, prefix, count) {
  const runs = servers.map((server, index) => ({
    server,
    samples: Object.fromEntries(FLOWS.map(([key]) => [key, { ms: [], after: [] }])),
    emails: Array.from({ length: count }, (_, i) => `${prefix}-${index}-${i}@example.com`),
    sessions: [],
  }));
  const record = (run, key, result) => {
    run.samples[key].ms.push(result.ms);
    if (result.after !== null) run.samples[key].after.push(result.after);
    return result;
  };
  // `step(run, i)` for i in 0..count, each i on every server before the next.
  const each = async (step) => {
    for (let i = 0; i < count; i++) for (const run of runs) await step(run, i);
  };
  await each(async (run, i) => {
    record(run, "signup", await timed(run.server, "/v1/signup", jsonPost({ email: run.emails[i], password: PASSWORD }), 202));
  });
  for (const run of runs) run.verifications = await verificationTokens(run.server, run.emails);
  await each(async (run, i) => {
    record(run, "verify_email", await timed(run.server, "/v1/email/verify", jsonPost({ token: run.verifications[i] }), 200));
  });
  await each(async (run, i) => {
    const login = record(run, "login", await timed(run.server, "/v1/login", jsonPost({ email: run.emails[i], password: PASSWORD }), 200));
    run.sessions.push(JSON.parse(login.body));
  });
  await each(async (run, i) => {
    const form = formPost({ grant_type: "refresh_token", refresh_token: run.sessions[i].refresh_token });
    record(run, "refresh_first_party", await timed(run.server, "/oauth/token", form, 200));
  });
  await each(async (run, i) => {
    const bearer = { headers: { authorization: `Bearer ${run.sessions[i].access_token}` } };
    record(run, "userinfo", await timed(run.server, "/userinfo", bearer, 200));
  });
  await each(async (run, i) => {
    record(run, "forgot_password", await timed(run.server, "/v1/password/forgot", jsonPost({ email: run.emails[i] }), 202));
  });
  // The provider: bench/lib.mjs's skip_consent client and a browser session from the hosted
  // login, then per round a code from the authorization endpoint, its redemption, and the
  // refresh of the grant's token (each code redeemed at once: it lives a minute).
  for (const run of runs) {
    run.setup = await edgeidCodeSetup(run.server);
    run.client = { authorization: basic(run.setup.clientId, run.setup.secret) };
  }
  await each(async (run) => {
    const { server, setup, client } = run;
    const authorize = record(run, "authorize_with_session", await timed(server, setup.authorize, { headers: { cookie: setup.cookie } }, 303));
    const code = authorize.location && new URL(authorize.location).searchParams.get("code");
    if (!code) throw new Error(`authorize: no code in ${authorize.location}`);
    const redeem = formPost({ grant_type: "authorization_code", code, redirect_uri: setup.redirectUri, code_verifier: PKCE_VERIFIER }, client);
    const grant = record(run, "code_grant", await timed(server, "/oauth/token", redeem, 200));
    const refresh = formPost({ grant_type: "refresh_token", refresh_token: JSON.parse(grant.body).refresh_token }, client);
    record(run, "refresh_client", await timed(server, "/oauth/token", refresh, 200));
  });
  await each(async (run) => record(run, "jwks", await timed(run.server, "/.well-known/jwks.json", {}, 200)));
  await each(async (run) => record(run, "healthz", await timed(run.server, "/healthz", {}, 200)));
  return runs.map((run) => run.samples);
}

// Both servers at once (each idle while the other answers): one as it is, one with the delay.
// A warm-up pass first (the isolates' bucket maps and key tables cached, as `bench_native`
// counts a busy isolate), then the measured pass, then the check that the accounts went to the
// shards.
const servers = [
  await start("edgeid", ["BENCH_D1_DELAY_MS=0", ...VARS]),
  await start("edgeid", [`BENCH_D1_DELAY_MS=${DELAY_MS}`, ...VARS]),
];
const [without, delayed] = await (async () => {
  try {
    await drive(servers, "warm", 1);
    const samples = await drive(servers, "latency", RUNS);
    const accounts = [];
    for (const server of servers) {
      const shards = await json(`${server.url}/operator/shards`, { headers: { authorization: `Bearer ${OPERATOR_TOKEN}` } });
      if (!shards.ok || shards.shards.length !== declaredShards) {
        throw new Error(`the worker did not run on the ${declaredShards} user shards of wrangler.toml: ${JSON.stringify(shards)}`);
      }
      accounts.push(shards.shards.map((shard) => shard.accounts));
    }
    return samples.map((flows, index) => ({ samples: flows, accounts: accounts[index] }));
  } finally {
    for (const server of servers) server.stop();
  }
})();

const rows = [];
const afterRows = [];
const mismatches = [];
let addedMs = 0;
let countedTrips = 0;
for (const [key, name] of FLOWS) {
  const p0 = median(without.samples[key].ms);
  const p50 = median(delayed.samples[key].ms);
  const implied = Math.round((p50 - p0) / DELAY_MS);
  const counted = native[key].before_response;
  const ok = implied === counted;
  if (!ok) mismatches.push(`${name}: ${implied} round trips implied, ${counted} counted natively`);
  if (key !== "healthz" && key !== "jwks") {
    addedMs += p50 - p0;
    countedTrips += counted;
  }
  rows.push(`| ${name} | ${fixed(p0)} | ${fixed(p50)} | ${implied} | ${counted} | ${ok ? "ok" : "MISMATCH"} |`);
  const after0 = without.samples[key].after;
  const after50 = delayed.samples[key].after;
  const countedAfter = native[key].after_response;
  if (after0.length === 0 && after50.length === 0 && countedAfter === 0) continue;
  const impliedAfter = after0.length && after50.length ? Math.round((median(after50) - median(after0)) / DELAY_MS) : 0;
  const everyRequest = after0.length === without.samples[key].ms.length && after50.length === delayed.samples[key].ms.length;
  const okAfter = impliedAfter === countedAfter && everyRequest;
  if (!okAfter) mismatches.push(`${name}, after the response: ${impliedAfter} round trips implied (${after0.length} + ${after50.length} runs timed), ${countedAfter} counted natively`);
  afterRows.push(`| ${name} | ${fixed(median(after0))} | ${fixed(median(after50))} | ${impliedAfter} | ${countedAfter} | ${okAfter ? "ok" : "MISMATCH"} |`);
}

const cpuModel = cpus()[0]?.model ?? "unknown CPU";
const lines = [
  `edgeid latency run, ${new Date().toISOString()}: ${cpus().length} × ${cpuModel}; the release worker on Miniflare 4 (workerd) with DB and ${declaredShards} user shards (accounts per shard at the end: ${without.accounts.join(" / ")} without the delay, ${delayed.accounts.join(" / ")} with it), both servers pinned to core ${SERVER_CORE ?? "(one core only)"}, this process on the other; ${RUNS} requests per flow, one at a time, to each server in turn, after a warm-up pass; p50 of each; ${fixed((performance.now() - started) / 1000, 0)} s in all.`,
  "",
  `| flow | p50 ms, no delay | p50 ms, ${DELAY_MS} ms a D1 round trip | round trips implied | counted natively | |`,
  "| --- | ---: | ---: | ---: | ---: | --- |",
  ...rows,
  "",
  `Round trips implied: round((p50 with the delay − p50 without) / ${DELAY_MS} ms); counted natively: \`bench_native round-trips\`, before the response. Over the flows with round trips, the delay added ${fixed(addedMs / Math.max(countedTrips, 1), 1)} ms per counted round trip.`,
  "",
  "Work left for after the response (`waitUntil`), timed inside the worker and not part of the latency above:",
  "",
  `| flow | after the response, p50 ms, no delay | with ${DELAY_MS} ms | round trips implied | counted natively | |`,
  "| --- | ---: | ---: | ---: | ---: | --- |",
  ...afterRows,
];
const report = lines.join("\n");
console.log(report);
mkdirSync(`${root}target/bench`, { recursive: true });
writeFileSync(`${root}target/bench/latency.md`, report + "\n");
if (mismatches.length > 0) {
  console.error(`\nLATENCY RUN FAILED: the round trips the delay shows differ from the ones counted natively:\n  ${mismatches.join("\n  ")}`);
  process.exit(1);
}
