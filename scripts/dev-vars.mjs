// Keeps .dev.vars (git-ignored) holding every secret local development needs, adding fresh
// throwaway values for any that are missing and never touching those already there.
// wrangler dev reads it; production secrets come from `wrangler secret put` instead.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const path = join(dirname(fileURLToPath(import.meta.url)), "..", ".dev.vars");
const secrets = {
  // Seals the signing keys in D1: 32 random bytes, base64url.
  KEY_ENCRYPTION_KEY: () => randomBytes(32).toString("base64url"),
  MAIL_API_KEY: () => `dev-${randomBytes(16).toString("hex")}`,
  // Registers clients at POST /oauth/register (Authorization: Bearer …).
  CLIENT_REGISTRATION_TOKEN: () => randomBytes(32).toString("base64url"),
  // The operator's endpoints (/operator/shards: growing the user shards, the check after it).
  OPERATOR_TOKEN: () => randomBytes(32).toString("base64url"),
};

const existing = existsSync(path) ? readFileSync(path, "utf8") : "";
const defined = new Set(
  existing.split("\n").map((line) => line.match(/^\s*([A-Z0-9_]+)\s*=/)?.[1]).filter(Boolean),
);
const missing = Object.keys(secrets).filter((name) => !defined.has(name));
if (missing.length > 0) {
  const header = existing ? "" : "# Throwaway secrets for local development, made by scripts/dev-vars.mjs. Never commit.\n";
  const separator = existing && !existing.endsWith("\n") ? "\n" : "";
  const lines = missing.map((name) => `${name}="${secrets[name]()}"`).join("\n");
  writeFileSync(path, `${existing}${separator}${header}${lines}\n`, { mode: 0o600 });
  console.log(`edgeid: added ${missing.join(", ")} to .dev.vars`);
}
