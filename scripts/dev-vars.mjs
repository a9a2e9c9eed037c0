// Creates .dev.vars (git-ignored) with fresh throwaway secrets for local development, once.
// wrangler dev reads it; production secrets come from `wrangler secret put` instead.
import { existsSync, writeFileSync } from "node:fs";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const path = join(dirname(fileURLToPath(import.meta.url)), "..", ".dev.vars");
if (!existsSync(path)) {
  const privateJwk = (type, options) => {
    const { kid, ...jwk } = generateKeyPairSync(type, options).privateKey.export({ format: "jwk" });
    return jwk;
  };
  // One key per supported SIGNING_ALG, so `--var SIGNING_ALG:EdDSA` works out of the box.
  const signingKeys = {
    keys: [privateJwk("ec", { namedCurve: "P-256" }), privateJwk("ed25519")],
  };
  const lines = [
    "# Throwaway secrets for local development, made by scripts/dev-vars.mjs. Never commit.",
    `SIGNING_KEYS='${JSON.stringify(signingKeys)}'`,
    `MAIL_API_KEY="dev-${randomBytes(16).toString("hex")}"`,
    "",
  ];
  writeFileSync(path, lines.join("\n"), { mode: 0o600 });
  console.log("edgeid: wrote fresh development secrets to .dev.vars");
}
