// Applies the D1 migrations to every D1 binding of a wrangler configuration locally (`DB` and
// the user shards `USERS_0` … `USERS_{N-1}`), all at once: `wrangler d1 migrations apply` takes
// one binding per run. Used by scripts/dev.sh and the end-to-end tests.
//
//   node scripts/migrate-local.mjs [--persist-to DIR] [--config wrangler.toml]
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dirname, "..");
const args = process.argv.slice(2);
const option = (name) => {
  const index = args.indexOf(name);
  return index >= 0 ? args[index + 1] : undefined;
};
const config = option("--config") ?? join(root, "wrangler.toml");
const persistTo = option("--persist-to");

/// The `binding` of each `[[d1_databases]]` table, in order.
export function d1Bindings(toml) {
  const bindings = [];
  let inD1 = false;
  for (const line of toml.split("\n")) {
    const header = line.match(/^\s*\[\[?([^\]]+)\]\]?\s*(#.*)?$/);
    if (header) {
      inD1 = header[1].trim() === "d1_databases";
      continue;
    }
    const binding = inD1 && line.match(/^\s*binding\s*=\s*"([A-Za-z0-9_]+)"/);
    if (binding) bindings.push(binding[1]);
  }
  return bindings;
}

const bindings = d1Bindings(readFileSync(config, "utf8"));
if (bindings.length === 0) {
  console.error(`migrate-local: no [[d1_databases]] binding in ${config}`);
  process.exit(1);
}

// One local runtime for every binding (wrangler's own `d1 migrations apply` starts one per
// binding, which for five databases costs tens of seconds on a small machine); the same
// bookkeeping table as wrangler's, so `wrangler d1 migrations apply` agrees on what is applied.
const { getPlatformProxy } = await import("wrangler");
const proxy = await getPlatformProxy({
  configPath: config,
  persist: persistTo ? { path: join(persistTo, "v3") } : true,
  environment: undefined,
});
try {
  const files = readdirSync(join(root, "migrations"))
    .filter((file) => file.endsWith(".sql"))
    .sort();
  for (const binding of bindings) {
    const db = proxy.env[binding];
    await db
      .prepare(
        "CREATE TABLE IF NOT EXISTS d1_migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL)",
      )
      .run();
    const applied = new Set((await db.prepare("SELECT name FROM d1_migrations").all()).results.map((row) => row.name));
    for (const file of files.filter((file) => !applied.has(file))) {
      const sql = readFileSync(join(root, "migrations", file), "utf8");
      await db.exec(oneStatementPerLine(sql));
      await db.prepare("INSERT INTO d1_migrations (name) VALUES (?1)").bind(file).run();
    }
  }
} finally {
  await proxy.dispose();
}
console.log(`migrate-local: migrations applied to ${bindings.join(", ")}`);

/// D1's `exec` runs one statement per line: comments out, each statement folded onto one line.
function oneStatementPerLine(sql) {
  return sql
    .replace(/--.*$/gm, "")
    .split(";")
    .map((statement) => statement.replace(/\s+/g, " ").trim())
    .filter(Boolean)
    .join(";\n");
}
