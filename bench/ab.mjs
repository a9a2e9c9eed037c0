// An A/B of two edgeid builds on the code grant, the two loaded at the same time: both servers
// pinned to the server core, each chunk's codes minted on each, then both grants loaded at
// once with CHUNK codes each. Loads of one server seconds apart differ by ≈ 20 % on this shared
// machine (bench/noise.mjs), far more than most changes; two identical workloads loaded at
// once see the same machine, and on 2026-12-03 the same build against itself differed by 3–5 %
// a chunk (sd). The interval printed below undersells the noise: on 2026-12-04 the same build
// against itself came out at −3.9 % (16 chunks, an interval that excluded 0) and +1.6 % (40
// chunks); run it so (no BENCH_AB_ENTRY) beside any A/B, as the control. It compares builds
// only: loading different servers at once changes each one's CPU per request differently (the
// floor Worker and oidc-provider rose by a quarter beside edgeid, edgeid's grant by a tenth),
// so issue 12's goal is measured sequentially (bench/code.mjs).
//
//   BENCH_AB_ENTRY=/path/to/entry.mjs node bench/ab.mjs
//
// A is that entry (a copy of src/cloudflare/entry.mjs whose import points at a copy of another
// build's build/), B this checkout's build; without BENCH_AB_ENTRY, B against itself (the
// instrument's own noise). Prints each chunk, then B − A as a share of their mean, with a 95 %
// bootstrap interval over the chunks; writes the chunks to target/bench/ab.json.
import { mkdirSync, writeFileSync } from "node:fs";
import { bootstrapInterval } from "./code.mjs";
import { codeRequests, edgeidCodeSetup, edgeidCodes, fixed, load, median, root, start } from "./lib.mjs";

const CHUNKS = Number(process.env.BENCH_AB_CHUNKS ?? 16);
const WARMUP = Number(process.env.BENCH_AB_WARMUP ?? 2);
const CHUNK = Number(process.env.BENCH_CODE_CHUNK ?? 500);
const entry = process.env.BENCH_AB_ENTRY;

/// One chunk's B − A as a share of the mean of both.
const shareOf = ({ a, b }) => (b - a) / ((a + b) / 2);
/// B − A over the chunks: the mean of the chunks' own shares.
const relative = (chunks) => chunks.reduce((sum, chunk) => sum + shareOf(chunk), 0) / chunks.length;

const servers = [];
try {
  for (const env of [entry ? { BENCH_ENTRY: entry } : {}, {}]) servers.push(await start("edgeid", [], env));
  const setups = [];
  for (const server of servers) setups.push(await edgeidCodeSetup(server));
  const chunks = [];
  for (let chunk = -WARMUP; chunk < CHUNKS; chunk++) {
    // Minted one after the other (in turn first), redeemed at once.
    const codes = [];
    const order = chunk % 2 === 0 ? [0, 1] : [1, 0];
    for (const i of order) codes[i] = (await edgeidCodes(servers[i], setups[i], CHUNK)).codes;
    const [a, b] = await Promise.all(servers.map((server, i) => load(server, codeRequests(server, "/oauth/token", setups[i], codes[i]))));
    const figures = { a: a.cpuUs, b: b.cpuUs };
    if (chunk >= 0) chunks.push(figures);
    console.log(`${chunk < 0 ? "warm-up" : `chunk ${chunk + 1}/${CHUNKS}`}: A ${fixed(a.cpuUs, 0)} µs, B ${fixed(b.cpuUs, 0)} µs, B − A ${fixed(100 * shareOf(figures), 1)} %`);
  }
  const share = relative(chunks);
  const interval = bootstrapInterval(chunks, relative);
  const mean = (pick) => chunks.reduce((sum, chunk) => sum + pick(chunk), 0) / chunks.length;
  console.log(
    `\n${chunks.length} chunks of ${CHUNK} code grants, A = ${entry ?? "this checkout"}, B = this checkout: ` +
      `B − A ${fixed(100 * share, 2)} % (95 % bootstrap interval ${interval ? `${fixed(100 * interval[0], 2)} to ${fixed(100 * interval[1], 2)} %` : "n/a"}); ` +
      `means A ${fixed(mean((c) => c.a), 0)} µs, B ${fixed(mean((c) => c.b), 0)} µs; median B − A ${fixed(median(chunks.map((c) => c.b - c.a)), 0)} µs`,
  );
  mkdirSync(`${root}target/bench`, { recursive: true });
  writeFileSync(`${root}target/bench/ab.json`, `${JSON.stringify({ entry: entry ?? null, chunk: CHUNK, chunks, share, interval }, null, 1)}\n`);
} finally {
  for (const server of servers) server.stop();
}
