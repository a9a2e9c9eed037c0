// What the benchmark's scripts share (bench/run.mjs, bench/profile.mjs): starting a server of
// bench/serve.mjs pinned to the server core, its process group's CPU time, and autocannon runs.
import { execFileSync, spawn } from "node:child_process";
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
const CONNECTIONS = 16;
const TICKS_PER_SECOND = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim());

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
  return { ...ready, pgid: child.pid, stop };
}

/// CPU seconds used so far by every process of a process group.
export function groupCpuSeconds(pgid) {
  let ticks = 0;
  for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // After the command: state ppid pgrp …; utime and stime are fields 14 and 15 of stat.
      if (Number(fields[2]) === pgid) ticks += Number(fields[11]) + Number(fields[12]);
    } catch {}
  }
  return ticks / TICKS_PER_SECOND;
}

/// One autocannon run against a server, with its CPU per successful response.
export async function load(server, options) {
  const before = groupCpuSeconds(server.pgid);
  const t0 = performance.now();
  // autocannon ends a run only at its next sample tick (every second by default): a run of a
  // fixed number of requests would count the idle wait for that tick in its duration, which
  // rounded every refresh run up to whole seconds. Ticks every 10 ms bound that to 10 ms.
  const result = await autocannon({ connections: CONNECTIONS, sampleInt: 10, ...options });
  const seconds = (performance.now() - t0) / 1000;
  const cpu = groupCpuSeconds(server.pgid) - before;
  const ok = result["2xx"];
  if (ok === 0 || result.non2xx > 0 || result.errors > 0) {
    throw new Error(`${options.url}: ${ok} ok, ${result.non2xx} non-2xx, ${result.errors} errors`);
  }
  return { ok, rps: ok / seconds, cpuUs: (cpu * 1e6) / ok, p50: result.latency.p50, p99: result.latency.p99 };
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
    const n = Math.min(2500, count - tokens.length);
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
