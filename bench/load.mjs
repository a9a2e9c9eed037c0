// Load run (issue 4): 64 concurrent clients for 60 s of mixed sign-up, login and refresh
// against the release worker under local workerd (`wrangler dev`), then a login for every
// account created. Prints the figures and writes them to target/bench/load.txt. Not a test:
// scripts/bench.sh runs it. BENCH_SECONDS and BENCH_CLIENTS override the defaults.
import { spawn } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { performance } from "node:perf_hooks";

const seconds = Number(process.env.BENCH_SECONDS ?? 60);
const clients = Number(process.env.BENCH_CLIENTS ?? 64);
const root = new URL("..", import.meta.url).pathname;

function freePort() {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const state = `${root}target/bench/load-state`;
rmSync(state, { recursive: true, force: true });
mkdirSync(state, { recursive: true });
// Every D1 binding of wrangler.toml (DB and the four user shards), as scripts/dev.sh does.
await new Promise((resolve, reject) => {
  const child = spawn(process.execPath, [`${root}scripts/migrate-local.mjs`, "--persist-to", state], { cwd: root, stdio: ["ignore", "ignore", "inherit"] });
  child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`scripts/migrate-local.mjs: ${code}`))));
});
const vars = [
  `ISSUER:${base}`,
  "MAIL_PROVIDER:log",
  "REQUIRE_EMAIL_VERIFICATION:false",
  // No internet here; and the budgets would (rightly) stop one address making this much load.
  "BREACHED_PASSWORD_CHECK:off",
  "RATE_LIMIT_LOGIN_PER_IP:off",
  "RATE_LIMIT_LOGIN_PER_ACCOUNT:off",
  "RATE_LIMIT_LOGIN_PER_ACCOUNT_NETWORK:off",
  // wrangler dev simulates the Rate Limiting bindings of wrangler.toml too.
  "RATE_LIMIT_PREFILTER:off",
  "RATE_LIMIT_MAIL_PER_IP:off",
  "RATE_LIMIT_MAIL_PER_ADDRESS:off",
  "RATE_LIMIT_TOKEN_PER_IP:off",
];
const server = spawn(
  "npx",
  ["wrangler", "dev", "--ip", "127.0.0.1", "--port", String(port), "--persist-to", state, "--log-level", "warn",
    ...vars.flatMap((v) => ["--var", v])],
  { cwd: root, stdio: ["ignore", "ignore", "inherit"], detached: true, env: { ...process.env, EDGEID_PREBUILT: "1" } },
);
const stop = () => { try { process.kill(-server.pid, "SIGTERM"); } catch {} };
process.on("exit", stop);

const started = Date.now();
for (;;) {
  try {
    if ((await fetch(`${base}/healthz`)).status === 200) break;
  } catch {}
  if (Date.now() - started > 120_000) throw new Error("wrangler dev did not start");
  await new Promise((r) => setTimeout(r, 250));
}

const password = "load run passphrase";
const post = (path, body, form = false) =>
  fetch(`${base}${path}`, {
    method: "POST",
    headers: { "content-type": form ? "application/x-www-form-urlencoded" : "application/json" },
    body: form ? new URLSearchParams(body).toString() : JSON.stringify(body),
  });

const stats = { signup: [], login: [], refresh: [] };
const statuses = {};
const created = [];
let serverErrors = 0;
let sequence = 0;

async function timed(kind, request) {
  const t0 = performance.now();
  let response;
  try {
    response = await request();
  } catch (err) {
    statuses[`${kind} network error`] = (statuses[`${kind} network error`] ?? 0) + 1;
    return null;
  }
  stats[kind].push(performance.now() - t0);
  const key = `${kind} ${response.status}`;
  statuses[key] = (statuses[key] ?? 0) + 1;
  if (response.status >= 500) serverErrors += 1;
  return response;
}

let deadline = 0;

async function client(id) {
  let refreshToken = null;
  while (Date.now() < deadline) {
    const roll = Math.random();
    if (roll < 0.3 || created.length === 0) {
      const email = `load-${id}-${sequence++}@example.com`;
      const response = await timed("signup", () => post("/v1/signup", { email, password }));
      if (response?.status === 202) created.push(email);
      await response?.arrayBuffer();
    } else if (roll < 0.65 || !refreshToken) {
      const email = created[Math.floor(Math.random() * created.length)];
      const response = await timed("login", () => post("/v1/login", { email, password }));
      if (response?.status === 200) refreshToken = (await response.json()).refresh_token;
      else await response?.arrayBuffer();
    } else {
      const response = await timed("refresh", () =>
        post("/oauth/token", { grant_type: "refresh_token", refresh_token: refreshToken }, true));
      if (response?.status === 200) refreshToken = (await response.json()).refresh_token;
      else { refreshToken = null; await response?.arrayBuffer(); }
    }
  }
}

const loadStart = performance.now();
deadline = Date.now() + seconds * 1000;
await Promise.all(Array.from({ length: clients }, (_, id) => client(id)));
const elapsed = (performance.now() - loadStart) / 1000;

// Every account created must be able to log in.
let loginsOk = 0;
for (let i = 0; i < created.length; i += clients) {
  const batch = created.slice(i, i + clients);
  const results = await Promise.all(batch.map((email) => post("/v1/login", { email, password })));
  for (const response of results) {
    if (response.status === 200) loginsOk += 1;
    if (response.status >= 500) serverErrors += 1;
    await response.arrayBuffer();
  }
}
stop();

const percentile = (values, p) => {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
};
const total = Object.values(stats).reduce((sum, v) => sum + v.length, 0);
const lines = [
  `load run: ${clients} clients, ${elapsed.toFixed(1)} s, wrangler dev (local workerd), ${new Date().toISOString()}`,
  "",
  "| operation | requests | req/s | p50 ms | p99 ms |",
  "| --- | ---: | ---: | ---: | ---: |",
  ...Object.entries(stats).map(([kind, values]) =>
    `| ${kind} | ${values.length} | ${(values.length / elapsed).toFixed(1)} | ${percentile(values, 50).toFixed(1)} | ${percentile(values, 99).toFixed(1)} |`),
  `| all | ${total} | ${(total / elapsed).toFixed(1)} | | |`,
  "",
  `statuses: ${JSON.stringify(statuses)}`,
  `5xx responses: ${serverErrors}`,
  `accounts created: ${created.length}; logging in afterwards: ${loginsOk} of ${created.length}`,
];
const report = lines.join("\n");
console.log(report);
mkdirSync(`${root}target/bench`, { recursive: true });
writeFileSync(`${root}target/bench/load.txt`, report + "\n");
if (serverErrors > 0 || loginsOk !== created.length) {
  console.error("load run FAILED: 5xx responses, or accounts that cannot log in");
  process.exit(1);
}
process.exit(0);
