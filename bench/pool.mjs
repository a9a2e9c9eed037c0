// The code grant's figure over several runs of bench/code.mjs (each run's
// target/bench/code-chunks.json, copied aside before the next run overwrites it):
//   node bench/pool.mjs run1.json run2.json …
// Prints each run's ratio of the means with its bootstrap interval over chunks, then all the
// chunks pooled, and a bootstrap that resamples the runs first and then the chunks within each
// (a run shares the machine's state of its half hour, which resampling chunks alone does not
// see: on 2026-12-03 three runs of one build gave 0.80×, 0.63× and 0.67×, with intervals that
// barely touched), and how each run drifted from its first chunk to its last. Decide which
// runs to pool before they run: choosing after is choosing data.
import { readFileSync } from "node:fs";
import { bootstrapInterval, chunkOf, drift, mulberry32, percentileInterval, ratioOfMeans } from "./code.mjs";
import { fixed } from "./lib.mjs";

const GOAL = 0.75;
const DRAWS = 10000;
const range = (interval) => (interval ? `${fixed(interval[0], 3)}–${fixed(interval[1], 3)}×` : "n/a");

// Chunk files written since 2026-12-06 hold two floors: the grant's own batch (`floor`, the
// goal's) and the batch of its shape (`shapedFloor`); earlier ones hold only the shaped one, as
// `floor`. Both figures are pooled, each over the files that have it, and files of the two kinds
// are not mixed in the goal's figure.
const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node bench/pool.mjs code-chunks-1.json code-chunks-2.json …");
  process.exit(2);
}
const contents = files.map((file) => ({ file, triples: JSON.parse(readFileSync(file, "utf8")) }));
const ownBatch = contents.map(({ triples }) => triples.every((triple) => triple.shapedFloor));
if (ownBatch.some((own) => own !== ownBatch[0])) {
  console.error("these chunk files measured different floors (some before 2026-12-06, with only the shaped one): pool them apart");
  process.exit(2);
}

/// Each run's figure, then all its chunks pooled, then a bootstrap over runs and then chunks.
function pool(label, runs) {
  const pooled = runs.flat();
  console.log(`${label}, pooled: ${pooled.length} chunks, ${fixed(ratioOfMeans(pooled), 3)}× (${range(bootstrapInterval(pooled, ratioOfMeans))})`);
  const random = mulberry32(0x9e3779b9);
  const estimates = [];
  for (let draw = 0; draw < DRAWS; draw++) {
    const sample = [];
    for (let r = 0; r < runs.length; r++) {
      const run = runs[Math.floor(random() * runs.length)];
      for (let i = 0; i < run.length; i++) sample.push(run[Math.floor(random() * run.length)]);
    }
    estimates.push(ratioOfMeans(sample));
  }
  const interval = percentileInterval(estimates);
  const over = estimates.filter((estimate) => estimate > GOAL).length / DRAWS;
  console.log(`${label}, runs then chunks: ${range(interval)}, above ${GOAL}× in ${fixed(100 * over, 1)} % of ${DRAWS} draws`);
  return interval;
}

const runs = contents.map(({ file, triples }) => {
  const chunks = triples.map((triple) => chunkOf(triple, 0));
  console.log(`${file}: ${chunks.length} chunks, ${fixed(ratioOfMeans(chunks), 3)}× (${range(bootstrapInterval(chunks, ratioOfMeans))})`);
  const drifted = drift(chunks);
  if (drifted) console.log(`  ${drifted}`);
  if (ownBatch[0]) {
    const shaped = triples.map((triple) => chunkOf(triple, 0, "shapedFloor"));
    console.log(`  above the shaped floor (the floor until 2026-12-06), in the same chunks: ${fixed(ratioOfMeans(shaped), 3)}× (${range(bootstrapInterval(shaped, ratioOfMeans))})`);
  }
  return chunks;
});
const goalFloor = ownBatch[0] ? "above the grant's own batch" : "above the shaped floor (files before 2026-12-06)";
const interval = pool(goalFloor, runs);
if (ownBatch[0]) pool("above the shaped floor", contents.map(({ triples }) => triples.map((triple) => chunkOf(triple, 0, "shapedFloor"))));
console.log(`goal (${goalFloor}): ${interval[1] <= GOAL ? "met" : "not shown met"}`);
