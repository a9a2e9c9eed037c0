// How much the machine moves a CPU measurement by itself: edgeid's `/__bench/d1` (the code
// grant's batches through the wasm's D1 adapter) and the floor Worker's same batches, loaded
// back to back in PAIRS triples (edgeid, floor, edgeid again) of BENCH_NOISE_REQUESTS requests,
// each server's CPU read as bench/lib.mjs reads it (its workerd's threads' `schedstat`).
// Prints each triple and the coefficient of variation of edgeid's loads, the floor's, their
// ratio within a triple, and of two identical loads of the same server a moment apart: the
// noise a ratio of two loads carries on this machine (README "Performance").
//
//   node bench/noise.mjs     (pinned as scripts/bench.sh pins the other runs; not part of it)
import autocannon from "autocannon";
import { CONNECTIONS, fixed, groupCpuNs, start } from "./lib.mjs";
import { CODE_BATCHES } from "./code.mjs";

const PAIRS = Number(process.env.BENCH_NOISE_PAIRS ?? 30);
const REQUESTS = Number(process.env.BENCH_NOISE_REQUESTS ?? 200);

/// CPU µs per successful request of one load.
async function cpuUs(server, url) {
  const before = groupCpuNs(server.pgid, server.serving).serving;
  const result = await autocannon({ url, amount: REQUESTS, connections: CONNECTIONS, sampleInt: 10 });
  if (result["2xx"] !== REQUESTS) throw new Error(`${url}: ${result["2xx"]} of ${REQUESTS} answered 2xx`);
  return (groupCpuNs(server.pgid, server.serving).serving - before) / 1000 / REQUESTS;
}

const variation = (values) => {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  return Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length) / mean;
};

const edgeid = await start("edgeid");
const floor = await start("d1");
try {
  const edgeidUrl = `${edgeid.url}/__bench/d1?batches=${CODE_BATCHES}`;
  const floorUrl = `${floor.url}/?batches=${CODE_BATCHES}`;
  for (let warm = 0; warm < 3; warm++) await Promise.all([cpuUs(edgeid, edgeidUrl), cpuUs(floor, floorUrl)]);
  const triples = [];
  for (let pair = 0; pair < PAIRS; pair++) {
    triples.push([await cpuUs(edgeid, edgeidUrl), await cpuUs(floor, floorUrl), await cpuUs(edgeid, edgeidUrl)]);
  }
  console.log("edgeid µs, floor µs, edgeid again µs");
  for (const triple of triples) console.log(triple.map((value) => fixed(value, 0)).join(" "));
  console.log(
    `${PAIRS} triples of ${REQUESTS} requests, coefficient of variation: edgeid ${fixed(variation(triples.map((t) => t[0])), 3)}, ` +
      `floor ${fixed(variation(triples.map((t) => t[1])), 3)}, edgeid / floor within a triple ${fixed(variation(triples.map((t) => (t[0] + t[2]) / 2 / t[1])), 3)}, ` +
      `edgeid / edgeid again ${fixed(variation(triples.map((t) => t[0] / t[2])), 3)}`,
  );
} finally {
  edgeid.stop();
  floor.stop();
}
