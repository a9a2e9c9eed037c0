// A server for the benchmark, alone in its process so that its CPU time can be measured
// (scripts/bench.sh pins it to one core):
//   node bench/serve.mjs edgeid PORT [NAME=VALUE ...]   the release worker on workerd (Miniflare),
//                                                      with DB and the user shards of wrangler.toml
//   node bench/serve.mjs constant PORT                 a Worker that answers "ok", same runtime
//   node bench/serve.mjs d1 PORT                       a Worker that runs D1 batches, same runtime
//   node bench/serve.mjs oidc-provider PORT            the peer: oidc-provider on Node
// It prints "ready <url> <ms from start to first response>" once it answers.
import { readFileSync, readdirSync } from "node:fs";
import { performance } from "node:perf_hooks";

const [kind, portArg, ...assignments] = process.argv.slice(2);
const port = Number(portArg);
const root = new URL("..", import.meta.url).pathname;
const started = performance.now();
const url = `http://127.0.0.1:${port}`;

// Miniflare 4 (pinned in bench/package.json), whose API is stable; its workerd is of
// 2026-07-21, so the compatibility date is set no later than that.
async function miniflare(worker) {
  const { Miniflare } = await import("miniflare");
  const inspector = process.env.BENCH_INSPECTOR_PORT ? { inspectorPort: Number(process.env.BENCH_INSPECTOR_PORT) } : {};
  const instance = new Miniflare({ host: "127.0.0.1", port, compatibilityDate: "2026-07-01", ...inspector, ...worker });
  await instance.ready;
  return instance;
}

/// The floor's tables: `floor`, whose rows the `w` statements upsert and the `r` ones read, and
/// `floor_rows` with two indexes, where each `i` inserts a new row (as a grant inserts its
/// session and its refresh token). Also in edgeid's database, for `/__bench/d1`.
async function createFloorTables(db) {
  await db.prepare("CREATE TABLE floor (k INTEGER PRIMARY KEY, v INTEGER)").run();
  await db.prepare("CREATE TABLE floor_rows (id TEXT PRIMARY KEY, owner TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, payload TEXT)").run();
  await db.prepare("CREATE INDEX floor_rows_owner ON floor_rows (owner)").run();
  await db.prepare("CREATE INDEX floor_rows_expiry ON floor_rows (expires_at)").run();
}

/// edgeid's schema, as `wrangler d1 migrations apply` (scripts/migrate-local.mjs for wrangler
/// dev) would apply it.
async function migrate(db) {
  const files = readdirSync(`${root}migrations`).filter((f) => f.endsWith(".sql")).sort();
  for (const file of files) {
    const sql = readFileSync(`${root}migrations/${file}`, "utf8").replace(/--.*$/gm, "");
    for (const statement of sql.split(";").map((s) => s.trim()).filter(Boolean)) {
      await db.prepare(statement).run();
    }
  }
}

if (kind === "edgeid") {
  const vars = Object.fromEntries(assignments.map((assignment) => assignment.split(/=(.*)/s).slice(0, 2)));
  // DB and the user shards the development configuration declares (`USERS_0` … `USERS_{N-1}`
  // in wrangler.toml, four of them), so that the benchmark measures the sharded layout the dev
  // server and the tests run; the adapter binds every USERS_n it finds, in order.
  const userShards = [...readFileSync(`${root}wrangler.toml`, "utf8").matchAll(/^\s*binding\s*=\s*"(USERS_\d+)"/gm)].map((match) => match[1]);
  const databases = ["DB", ...userShards];
  const mf = await miniflare({
    modules: true,
    // The Worker's entry, which imports build/index.js. BENCH_ENTRY: another entry module (one
    // that imports a copy of another build, say) to compare with.
    scriptPath: process.env.BENCH_ENTRY ?? `${root}src/cloudflare/entry.mjs`,
    modulesRoot: "/",
    modulesRules: [{ type: "ESModule", include: ["**/*.js", "**/*.mjs"] }, { type: "CompiledWasm", include: ["**/*.wasm"] }],
    d1Databases: Object.fromEntries(databases.map((binding) => [binding, `bench-${binding.toLowerCase().replace("_", "-")}`])),
    kvNamespaces: { KV: "bench-kv" },
    queueProducers: { MAIL_QUEUE: { queueName: "edgeid-mail" }, MAIL_DEAD_LETTERS: { queueName: "edgeid-mail-dead" } },
    queueConsumers: {
      "edgeid-mail": { maxBatchSize: 1, maxBatchTimeout: 1, maxRetries: 3, deadLetterQueue: "edgeid-mail-dead" },
      "edgeid-mail-dead": { maxBatchSize: 10, maxBatchTimeout: 5, maxRetries: 10 },
    },
    bindings: {
      ISSUER: url,
      MAIL_PROVIDER: "log",
      KEY_ENCRYPTION_KEY: "YmVuY2htYXJrLWtleS1lbmNyeXB0aW9uLWtleS0zMmI",
      BREACHED_PASSWORD_CHECK: "off",
      BENCH_ENDPOINTS: "true",
      // The registration token of bench/lib.mjs: the code grant's skip_consent client.
      CLIENT_REGISTRATION_TOKEN: "bench-registration-token-0123456789abcdef",
      ...vars,
    },
  });
  // The schema in every database, as `wrangler d1 migrations apply` (scripts/migrate-local.mjs
  // for wrangler dev) would: each binding runs the same migrations.
  for (const binding of databases) await migrate(await mf.getD1Database(binding));
  // The floor Worker's table (below), in DB, for /__bench/d1: its batches through edgeid's adapter.
  await createFloorTables(await mf.getD1Database("DB"));
} else if (kind === "constant") {
  await miniflare({
    modules: true,
    script: `export default { fetch() { return new Response("ok"); } };`,
  });
} else if (kind === "d1") {
  // bench/floor-worker.mjs: the shaped batches' tables in DB; the code grant's batch
  // (bench/floor-batches.json) in SHARD, a database with edgeid's schema and nothing else.
  const mf = await miniflare({
    modules: true,
    scriptPath: `${root}bench/floor-worker.mjs`,
    d1Databases: { DB: "bench-d1-floor", SHARD: "bench-d1-floor-shard" },
    bindings: { CODE_GRANT: JSON.parse(readFileSync(`${root}bench/floor-batches.json`, "utf8")).code_grant },
  });
  await createFloorTables(await mf.getD1Database("DB"));
  await migrate(await mf.getD1Database("SHARD"));
} else if (kind === "oidc-provider") {
  const { startPeer } = await import("./oidc-provider.mjs");
  await startPeer(port);
} else {
  console.error(`unknown server ${kind}`);
  process.exit(2);
}

// Ready means answering.
const probe = kind === "oidc-provider" ? "/.well-known/openid-configuration" : kind === "edgeid" ? "/healthz" : "/";
for (;;) {
  try {
    const response = await fetch(url + probe);
    if (response.ok) break;
  } catch {}
  await new Promise((resolve) => setTimeout(resolve, 20));
}
console.log(`ready ${url} ${(performance.now() - started).toFixed(0)}`);
