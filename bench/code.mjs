// The authorization-code grant against its floor and the peer, interleaved (issue 12's goal:
// edgeid's CPU above its D1 floor at most 0.75× oidc-provider's whole grant). The three
// servers run side by side, each alone in its process group on the server core, and are
// loaded one after another in chunks of CHUNK requests: oidc-provider minting codes through
// its interaction flow and edgeid's authorization endpoint minting its codes, then edgeid's
// grant redeeming them, a D1 batch of the same shape through edgeid's own adapter
// (`/__bench/d1`), the JavaScript floor Worker running the grant's own batch (and, for
// comparison, that batch of the same shape), and oidc-provider's grant. On a shared machine
// a chunk's CPU moves by tens of per cent from one second to the next, and ratios of medians
// measured minutes apart moved as much as the whole gap to the goal; so the loads compared are
// taken within a chunk, seconds apart. The result is the ratio of the means over the chunks,
// with a bootstrap interval that resamples whole chunks, and beside it the median of the
// chunks' own ratios, with its interval and their quartiles. Every counted chunk's figures go
// to target/bench/code-chunks.json.
//
// Run alone (`node bench/code.mjs`, pinned as scripts/bench.sh pins bench/run.mjs) it prints
// each round; `BENCH_COMPARE_ENTRY=/path/to/entry.mjs` adds a second edgeid (that entry, which
// imports a copy of another build) to every chunk, for an A/B of two builds.
import { mkdirSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { CODES, codeRequests, edgeidCodeSetup, edgeidCodes, fixed, load, median, peerCodes, root, start, PEER_CODE_CLIENT } from "./lib.mjs";

export const CODE_ROUNDS = Number(process.env.BENCH_CODE_ROUNDS ?? 5);
// Rounds run first and not counted: oidc-provider's grant costs less for several thousand
// grants after its start (on 2026-12-03 from ≈ 1 500 µs in the first round to ≈ 900 by the
// third and after), and ratios taken before then flattered edgeid; the wasm tiers up meanwhile.
export const CODE_WARMUP_ROUNDS = Number(process.env.BENCH_CODE_WARMUP ?? 2);
// The code grant's batch, as shaped for `/__bench/d1` and the shaped floor: the redemption's
// (the fence, the code's conditional UPDATE, the grant's and the refresh token's INSERTs, the
// code's read; the floor Worker runs the statements themselves, bench/floor-batches.json). The
// signing keys and the client are cached in the isolate (a minute each; the authorization
// endpoint has just read the client), so no read of DB. The authorization endpoint's: the client's read (DB) beside the
// session's and the consent's (the shard, fenced), then the code's INSERT (fenced). See
// bench/run.mjs for the letters.
export const CODE_BATCHES = "wwiir";
export const AUTHORIZE_BATCHES = "r,wrr,wi";

// A round is CODES codes on each side, minted and redeemed CHUNK at a time.
export const CHUNK = Number(process.env.BENCH_CODE_CHUNK ?? 500);

/// `count` new codes in the floor Worker's database for its next loads (`/?seed=N`,
/// bench/floor-worker.mjs), written outside the measured loads as each side's codes are.
const seedFloor = async (floor, count) => {
  const response = await fetch(`${floor.url}/?seed=${count}`);
  if (!response.ok) throw new Error(`floor: /?seed answered ${response.status}: ${await response.text()}`);
};

/// Empties oidc-provider's store (`POST /__bench/forget`, bench/oidc-provider.mjs).
const forget = async (peer) => {
  const response = await fetch(`${peer.url}/__bench/forget`, { method: "POST" });
  if (response.status !== 204) throw new Error(`oidc-provider: /__bench/forget answered ${response.status}`);
};

/// The first and third quartiles.
const quartiles = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return [sorted[Math.floor((sorted.length - 1) / 4)], sorted[Math.ceil(((sorted.length - 1) * 3) / 4)]];
};

/// A distribution-free 95 % confidence interval of the median of `values` (which assumes
/// only that the chunks are independent draws): the order statistics x(k) and x(n+1-k) with the
/// largest k for which a Binomial(n, ½) falls below k with probability at most 2.5 %. The
/// quartiles say how much one chunk moves; this says how well the median is known, and it
/// narrows as chunks are added. Null for fewer than 6 values (no such k).
export const medianInterval = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const n = sorted.length;
  let below = 0; // P(Binomial(n, ½) < k), for k = 1, 2, …
  let term = 0.5 ** n; // P(Binomial(n, ½) = k - 1)
  let k = 0;
  for (let next = 1; next <= n / 2; next++) {
    below += term;
    if (below > 0.025) break;
    k = next;
    term = (term * (n - next + 1)) / next;
  }
  return k === 0 ? null : [sorted[k - 1], sorted[n - k]];
};

/// CPU per grant over the whole run, which is what "CPU per request" means: edgeid's mean
/// above its floor over oidc-provider's mean, Σ (grant − floor) / Σ peer over the chunks (each
/// chunk the same number of requests on every server). The median of the chunks' own ratios
/// (above) is robust to a chunk the machine disturbed, but each of those ratios carries the
/// noise of a difference of two loads over a third: on 2026-12-03 they ran from −0.3 to 2.2×
/// around a median near 0.7×, and the interval of their median stayed 0.2–0.3× wide.
export const ratioOfMeans = (chunks) => {
  let above = 0;
  let peer = 0;
  for (const chunk of chunks) {
    above += chunk.grant - chunk.floor;
    peer += chunk.peer;
  }
  return above / peer;
};

/// Uniform numbers in [0, 1) from `seed`: mulberry32, a small deterministic generator (this is
/// resampling, not cryptography), so that the same chunks give the same interval.
export const mulberry32 = (seed) => {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
};

/// A 95 % percentile-bootstrap interval of `statistic` over `chunks`: the chunks resampled with
/// replacement `draws` times, a chunk kept whole (its loads were measured seconds apart and
/// share the machine's state), from a fixed seed so that the same chunks give the same
/// interval. Null for fewer than 6 chunks.
export const bootstrapInterval = (chunks, statistic, draws = 10000, seed = 0x9e3779b9) => {
  if (chunks.length < 6) return null;
  const random = mulberry32(seed);
  const estimates = [];
  for (let draw = 0; draw < draws; draw++) {
    const sample = Array.from({ length: chunks.length }, () => chunks[Math.floor(random() * chunks.length)]);
    estimates.push(statistic(sample));
  }
  return percentileInterval(estimates);
};

/// The 2.5th and 97.5th percentiles of a bootstrap's estimates (sorted here).
export const percentileInterval = (estimates) => {
  estimates.sort((a, b) => a - b);
  return [estimates[Math.floor(estimates.length * 0.025)], estimates[Math.ceil(estimates.length * 0.975) - 1]];
};

/// The mean of `pick` over `chunks`.
const meanOf = (chunks, pick) => chunks.reduce((sum, chunk) => sum + pick(chunk), 0) / chunks.length;

/// How a run drifts from its first counted chunk to its last: the least-squares slope of each
/// server's CPU per grant against the chunk's place in the run, as a share of that server's
/// mean over the run, and the ratio of the means of each third of the run. A peer whose grant
/// costs more as its in-memory store grows (or a database that slows as it fills) would make
/// the figure depend on how long a run is. Null for fewer than 6 chunks.
export const drift = (chunks) => {
  const n = chunks.length;
  if (n < 6) return null;
  const centre = (n - 1) / 2;
  const slopeShare = (pick) => {
    let num = 0;
    let den = 0;
    chunks.forEach((chunk, i) => {
      num += (i - centre) * pick(chunk);
      den += (i - centre) ** 2;
    });
    // Over the whole run: the fitted change from the first chunk to the last, per mean.
    return ((num / den) * (n - 1)) / meanOf(chunks, pick);
  };
  const thirds = [0, 1, 2].map((k) => chunks.slice(Math.floor((k * n) / 3), Math.floor(((k + 1) * n) / 3)));
  const percent = (share) => `${share >= 0 ? "+" : ""}${fixed(100 * share, 1)} %`;
  return `first to last chunk (fitted): grant ${percent(slopeShare((c) => c.grant))}, floor ${percent(slopeShare((c) => c.floor))}, above the floor ${percent(slopeShare((c) => c.grant - c.floor))}, oidc-provider ${percent(slopeShare((c) => c.peer))}; thirds of the run ${thirds.map((third) => `${fixed(ratioOfMeans(third), 3)}×`).join(", ")}`;
};

/// One chunk's figures for `ratioOfMeans`, of its `i`th edgeid, above `floor`: the grant's own
/// batch (`floor`, the goal's floor since 2026-12-06) or the batch of the same shape on a table of
/// the floor Worker's own (`shapedFloor`, the floor until then, which is `floor` in the chunk
/// files of earlier runs).
export const chunkOf = (triple, i, floor = "floor") => ({ grant: triple.edgeids[i].grant.cpuUs, floor: triple[floor].cpuUs, peer: triple.peer.cpuUs });

/// Runs the interleaved rounds. `entries`: the edgeid builds to measure (undefined: this
/// checkout's entry). Returns, per edgeid, the medians and per-round figures.
export async function codeGrantRounds({ rounds = CODE_ROUNDS, warmup = CODE_WARMUP_ROUNDS, entries = [undefined], log = () => {} } = {}) {
  const servers = [];
  try {
    const edgeids = [];
    for (const entry of entries) {
      const server = await start("edgeid", [], entry ? { BENCH_ENTRY: entry } : {});
      servers.push(server);
      edgeids.push({ server, entry, setup: await edgeidCodeSetup(server), rounds: [] });
    }
    const floor = await start("d1");
    servers.push(floor);
    const peer = await start("oidc-provider");
    servers.push(peer);
    const triples = [];
    for (let round = -warmup; round < rounds; round++) {
      const chunks = Math.max(1, Math.floor(CODES / CHUNK));
      for (let chunk = 0; chunk < chunks; chunk++) {
        // Each chunk's codes right before its redemptions (a code lives a minute on both
        // sides): the peer's through its interaction flow, then edgeid's (each minting is also
        // the authorization endpoint's figure for the chunk).
        const peerCodeList = await peerCodes(peer, CHUNK);
        await seedFloor(floor, CHUNK);
        const minted = [];
        for (const edgeid of edgeids) minted.push(await edgeidCodes(edgeid.server, edgeid.setup, CHUNK));
        const triple = { edgeids: [] };
        for (const [i, edgeid] of edgeids.entries()) {
          const { server, setup } = edgeid;
          const grant = await load(server, codeRequests(server, "/oauth/token", setup, minted[i].codes));
          const adapter = await load(server, { url: `${server.url}/__bench/d1?batches=${CODE_BATCHES}`, amount: CHUNK });
          triple.edgeids.push({ authorize: minted[i].result, grant, adapter });
        }
        // The grant's own batch and the shaped one, first one then the other, by turns: the
        // first load after the floor has sat idle through edgeid's may cost more.
        const floors = [
          ["floor", `${floor.url}/?flow=code_grant`],
          ["shapedFloor", `${floor.url}/?batches=${CODE_BATCHES}`],
        ];
        if (triples.length % 2 === 1) floors.reverse();
        for (const [name, url] of floors) triple[name] = await load(floor, { url, amount: CHUNK });
        triple.authorizeFloor = await load(floor, { url: `${floor.url}/?batches=${AUTHORIZE_BATCHES}`, amount: CHUNK });
        triple.peer = await load(peer, codeRequests(peer, "/token", PEER_CODE_CLIENT, peerCodeList));
        // The peer's in-memory store held every session, grant and token of the run, in its
        // heap, where a deployment's store is elsewhere: on 2026-12-04 its grant cost 19 % more
        // at a run's last chunk than at its first while edgeid's and the floor's fell 11–14 %.
        // Emptied after each chunk, it rose 12 % where they rose 26–28 % and fell 4 % where
        // they fell 12–16 %. Its heap now holds one chunk's state at most (edgeid's and the
        // floor's are in D1).
        await forget(peer);
        triples.push(triple);
      }
      const last = triples.slice(-chunks);
      const line = edgeids.map((_, i) => {
        const ratios = last.map((t) => (t.edgeids[i].grant.cpuUs - t.floor.cpuUs) / t.peer.cpuUs);
        const means = ratioOfMeans(last.map((t) => chunkOf(t, i)));
        return `edgeid${entries.length > 1 ? ` #${i}` : ""} ${fixed(median(last.map((t) => t.edgeids[i].grant.cpuUs)))} µs, above the floor ${fixed(means, 2)}× of the means, chunks ${ratios.map((r) => fixed(r, 2)).join(" ")}`;
      });
      log(`${round < 0 ? `warm-up round ${round + warmup + 1}/${warmup} (not counted)` : `round ${round + 1}/${rounds}`}: floor ${fixed(median(last.map((t) => t.floor.cpuUs)))} µs (shaped ${fixed(median(last.map((t) => t.shapedFloor.cpuUs)))} µs), oidc-provider ${fixed(median(last.map((t) => t.peer.cpuUs)))} µs; ${line.join("; ")}`);
      if (round < 0) triples.length = 0;
    }
    const summaries = edgeids.map((edgeid, i) => {
      const mine = triples.map((t) => ({ ...t.edgeids[i], floor: t.floor, shapedFloor: t.shapedFloor, authorizeFloor: t.authorizeFloor, peer: t.peer }));
      const of = (pick) => median(mine.map(pick));
      const ratios = mine.map((t) => (t.grant.cpuUs - t.floor.cpuUs) / t.peer.cpuUs);
      const ownWork = mine.map((t) => (t.grant.cpuUs - t.adapter.cpuUs) / t.peer.cpuUs);
      const chunks = triples.map((t) => chunkOf(t, i));
      const shapedChunks = triples.map((t) => chunkOf(t, i, "shapedFloor"));
      return {
        entry: edgeid.entry,
        grantCpuUs: of((t) => t.grant.cpuUs),
        grantRps: of((t) => t.grant.rps),
        authorizeCpuUs: of((t) => t.authorize.cpuUs),
        authorizeRps: of((t) => t.authorize.rps),
        adapterCpuUs: of((t) => t.adapter.cpuUs),
        aboveUs: of((t) => t.grant.cpuUs - t.floor.cpuUs),
        shapedAboveUs: of((t) => t.grant.cpuUs - t.shapedFloor.cpuUs),
        meanRatio: ratioOfMeans(chunks),
        meanRatioInterval: bootstrapInterval(chunks, ratioOfMeans),
        drift: drift(chunks),
        shapedMeanRatio: ratioOfMeans(shapedChunks),
        shapedMeanRatioInterval: bootstrapInterval(shapedChunks, ratioOfMeans),
        ratio: median(ratios),
        ratioQuartiles: quartiles(ratios),
        ratioInterval: medianInterval(ratios),
        ownWorkRatio: median(ownWork),
        ownWorkQuartiles: quartiles(ownWork),
        adapterOverUs: of((t) => t.adapter.cpuUs - t.shapedFloor.cpuUs),
        authorizeRatio: of((t) => t.authorize.cpuUs / t.authorizeFloor.cpuUs),
        // Against the first edgeid of the same chunk (an A/B): its grant's CPU, this one's minus
        // the first's, median and quartiles.
        grantOverFirstUs: median(triples.map((t) => t.edgeids[i].grant.cpuUs - t.edgeids[0].grant.cpuUs)),
        grantOverFirstQuartiles: quartiles(triples.map((t) => t.edgeids[i].grant.cpuUs - t.edgeids[0].grant.cpuUs)),
      };
    });
    // Every counted chunk's figures, for analyses this script does not print.
    mkdirSync(`${root}target/bench`, { recursive: true });
    writeFileSync(`${root}target/bench/code-chunks.json`, `${JSON.stringify(triples, null, 1)}\n`);
    return {
      rounds,
      warmup,
      samples: triples.length,
      edgeids: summaries,
      floorCpuUs: median(triples.map((t) => t.floor.cpuUs)),
      shapedFloorCpuUs: median(triples.map((t) => t.shapedFloor.cpuUs)),
      floorRps: median(triples.map((t) => t.floor.rps)),
      authorizeFloorCpuUs: median(triples.map((t) => t.authorizeFloor.cpuUs)),
      authorizeFloorRps: median(triples.map((t) => t.authorizeFloor.rps)),
      peerCpuUs: median(triples.map((t) => t.peer.cpuUs)),
      peerRps: median(triples.map((t) => t.peer.rps)),
    };
  } finally {
    for (const server of servers) server.stop();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const compare = process.env.BENCH_COMPARE_ENTRY;
  const result = await codeGrantRounds({ entries: compare ? [undefined, compare] : [undefined], log: (line) => console.log(line) });
  console.log(`\n${result.warmup} warm-up rounds, then ${result.rounds} interleaved rounds of ${CODES} codes, ${result.samples} chunks of ${CHUNK}; medians: floor ${fixed(result.floorCpuUs)} µs (shaped ${fixed(result.shapedFloorCpuUs)} µs), oidc-provider ${fixed(result.peerCpuUs)} µs`);
  result.edgeids.forEach((e, i) => {
    if (e.drift) console.log(`#${i} ${e.drift}`);
    const name = e.entry ?? "this checkout";
    if (i > 0) console.log(`#${i} against #0 in the same chunks: grant ${e.grantOverFirstUs >= 0 ? "+" : ""}${fixed(e.grantOverFirstUs)} µs (quartiles ${fixed(e.grantOverFirstQuartiles[0])} to ${fixed(e.grantOverFirstQuartiles[1])})`);
    const range = (interval) => (interval ? `${fixed(interval[0], 2)}–${fixed(interval[1], 2)}×` : "n/a");
    console.log(`#${i} ${name}: grant ${fixed(e.grantCpuUs)} µs; above its floor ${fixed(e.meanRatio, 3)}× oidc-provider, of the means (95 % bootstrap interval ${range(e.meanRatioInterval)}; goal ≤ 0.75×); median of the chunks' ratios ${fixed(e.ratio, 3)}× (95 % interval ${range(e.ratioInterval)}, quartiles ${range(e.ratioQuartiles)}); above the shaped floor ${fixed(e.shapedMeanRatio, 3)}× (${range(e.shapedMeanRatioInterval)}); own work ${fixed(e.ownWorkRatio, 3)}×; adapter +${fixed(e.adapterOverUs)} µs; authorize ${fixed(e.authorizeCpuUs)} µs (${fixed(e.authorizeRatio, 2)}× its floor)`);
  });
}
