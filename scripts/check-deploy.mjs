// "Deployable as committed": runs `wrangler deploy --dry-run` on the committed wrangler.toml with
// a production-shaped set of variables (HTTPS issuer, a real mail provider), offline, and fails
// when wrangler refuses the configuration (a broken binding), when a binding the worker needs is
// missing, when the bundle is over the Workers size limit, or when the entry lacks a handler
// the configuration relies on (queue consumers, a cron trigger). Run by scripts/test.sh.
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dirname, "..");
const outdir = join(root, "target", "deploy-dry-run");
// The Workers Free plan's limit on the compressed upload (Paid: 10 MB): stay deployable on both.
const MAX_GZIP_KIB = 3 * 1024;
const BINDINGS = [
  "DB",
  "USERS_0",
  "USERS_1",
  "USERS_2",
  "USERS_3",
  "KV",
  "MAIL_QUEUE",
  "MAIL_DEAD_LETTERS",
  "RATE_LIMITER",
  "RATE_LIMITER_SITE",
];

rmSync(outdir, { recursive: true, force: true });
const vars = [
  "ISSUER:https://id.example.com",
  "PUBLIC_URL:https://id.example.com",
  "MAIL_PROVIDER:resend",
  "MAIL_FROM:Example <no-reply@example.com>",
];
const args = ["wrangler", "deploy", "--dry-run", "--outdir", outdir, ...vars.flatMap((v) => ["--var", v])];
// The worker is built already (scripts/test.sh builds it once): wrangler's build step skips it.
const run = spawnSync("npx", args, {
  cwd: root,
  encoding: "utf8",
  env: { ...process.env, EDGEID_PREBUILT: "1" },
  stdio: ["ignore", "pipe", "pipe"],
});
const output = `${run.stdout}\n${run.stderr}`;
const fail = (why) => {
  console.error(output);
  console.error(`deploy check: ${why}`);
  process.exit(1);
};
if (run.status !== 0) fail(`wrangler deploy --dry-run exited with ${run.status}`);

const sizes = output.match(/Total Upload: ([\d.]+) KiB \/ gzip: ([\d.]+) KiB/);
if (!sizes) fail("wrangler printed no upload size");
const gzipKiB = Number(sizes[2]);
if (gzipKiB > MAX_GZIP_KIB) fail(`the upload is ${gzipKiB} KiB gzip, over the ${MAX_GZIP_KIB} KiB limit`);

for (const binding of BINDINGS) {
  if (!new RegExp(`\\b${binding}\\b`).test(output)) fail(`binding ${binding} is not in the deployed configuration`);
}

// The bundle: the entry's handlers, and the Rust worker's, which worker-build emits only for
// the #[event] functions that exist.
const files = readdirSync(outdir).filter((name) => /\.(m?js)$/.test(name));
const bundle = files.map((name) => readFileSync(join(outdir, name), "utf8")).join("\n");
for (const handler of ["fetch", "queue", "scheduled"]) {
  // The entry's own handler, and the Rust worker's method it calls.
  if (!new RegExp(`\\b${handler}\\s*\\(`).test(bundle)) fail(`the entry has no ${handler} handler`);
  if (!new RegExp(`prototype\\.${handler}\\s*=`).test(bundle)) fail(`the Rust worker has no #[event(${handler})]`);
}
const wasm = readdirSync(outdir).filter((name) => name.endsWith(".wasm"));
if (wasm.length !== 1) fail(`expected one wasm module in the bundle, found ${wasm.length}`);
const wasmKiB = statSync(join(outdir, wasm[0])).size / 1024;
console.log(
  `deploy check: ok — ${sizes[1]} KiB, ${gzipKiB} KiB gzip (limit ${MAX_GZIP_KIB}), wasm ${wasmKiB.toFixed(0)} KiB, bindings ${BINDINGS.join(", ")}`,
);
