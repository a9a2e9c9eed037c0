// The floor Worker (bench/serve.mjs `d1`): the least a Worker can do with D1 on the same
// runtime, so that what edgeid costs above it is edgeid's own work.
//
// `/?flow=code_grant` runs the code grant's own batch: the statements of
// bench/floor-batches.json (the `CODE_GRANT` binding), which tests/provider.rs checks are the
// ones the grant sends, with the rows each changes, in `SHARD`, a database of its own with
// edgeid's schema (serve.mjs applies migrations/) and nothing else, as a user shard is; each
// request redeems a code that `/?seed=N` wrote beforehand, outside the measured loads, one
// fenced INSERT a transaction as edgeid's authorization endpoint writes its codes. A request
// answers 500 unless every statement changed the rows the grant's does and the code's read
// names this redemption's grant. Every value that edgeid draws at random (the code's hash, the
// grant's id, the refresh token's hash) is random here too, drawn at seeding, so that rows land
// where edgeid's land in each index; the others have the lengths of the benchmark's client's.
// The request does nothing but the batch.
//
// `/?batches=r,wwir` runs batches shaped like edgeid's on tables of its own, in `DB` (this Worker's
// only floor until 2026-12-06, and still the refresh grant's and the authorization endpoint's):
// `w` upserts a row, `r` reads one, `i` inserts a new row into a table with two indexes; a
// number instead of letters alternates `w` and `r`. `&spin=MS` keeps the CPU busy for MS ms
// after the first batch, as a login's Argon2id does.

const busy = (ms) => {
  const end = performance.now() + ms;
  for (let i = 0; performance.now() < end && i < 1e9; i++);
};

const hex = (bytes) => Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
const random = (bytes) => crypto.getRandomValues(new Uint8Array(bytes));
// As edgeid's: a bucket's prefix (3 hex digits) and 16 random bytes in base64url; hashes are
// hex SHA-256.
const BUCKET = 0x2a;
const PREFIX = BUCKET.toString(16).padStart(3, "0");
const randomId = () => PREFIX + btoa(String.fromCharCode(...random(16))).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
const randomHash = () => hex(random(32));

const USER = `${PREFIX}floor-user-000000000000`;
const BROWSER_SESSION = `${PREFIX}floor-browser-session-0`;
// As long as an edgeid client id (16 random bytes in base64url) and bench/lib.mjs's redirect URI.
const CLIENT = "floor-client-0123456789";
const REDIRECT = "https://app.bench.test/callback";
const CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const DAY = 86400;

// Seeded codes not yet redeemed, each with the values its redemption binds.
const ready = [];
let accountWritten = false;

async function seed(db, statements, count) {
  const now = Math.floor(Date.now() / 1000);
  if (!accountWritten) {
    await db.batch([db.prepare(
      "INSERT INTO users (id, email, password_hash, email_verified_at, password_changed_at, created_at, updated_at, bucket) VALUES (?1, 'floor@example.com', ?2, ?3, ?3, ?3, ?3, ?4) ON CONFLICT DO NOTHING",
    ).bind(USER, `$argon2id$v=19$m=19456,t=2,p=1$${"s".repeat(22)}$${"h".repeat(43)}`, now, BUCKET),
    db.prepare(
      "INSERT INTO browser_sessions (id, cookie_hash, user_id, auth_time, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?4, ?5) ON CONFLICT DO NOTHING",
    ).bind(BROWSER_SESSION, randomHash(), USER, now, now + 30 * DAY)]);
    accountWritten = true;
  }
  // The fence every batch to a user shard starts with: the grant's first statement.
  const [fence] = statements;
  for (let i = 0; i < count; i++) {
    const code = { code: randomHash(), grant_id: randomId(), refresh_token: randomHash() };
    await db.batch([
      db.prepare(fence.sql).bind(BUCKET),
      db.prepare(
        "INSERT INTO authorization_codes (code_hash, client_id, user_id, browser_session_id, redirect_uri, scope, nonce, code_challenge, auth_time, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, 'openid email offline_access', 'bench-nonce', ?6, ?7, ?7, ?8)",
      ).bind(code.code, CLIENT, USER, BROWSER_SESSION, REDIRECT, CHALLENGE, now, now + 60),
    ]);
    ready.push(code);
  }
  return new Response("ok");
}

async function redeem(db, statements) {
  const code = ready.shift();
  if (code === undefined) return new Response("no seeded code left", { status: 500 });
  const now = Math.floor(Date.now() / 1000);
  const values = {
    ...code,
    bucket: BUCKET,
    now,
    client_id: CLIENT,
    redirect_uri: REDIRECT,
    code_challenge: CHALLENGE,
    grant_expires_at: now + 90 * DAY,
    refresh_expires_at: now + 30 * DAY,
  };
  const results = await db.batch(statements.map(({ sql, params }) => db.prepare(sql).bind(...params.map((role) => values[role]))));
  const changed = results.every((result, i) => (result.meta?.changes ?? 0) === statements[i].changes);
  // The batch ends with the code's read: it names this redemption's grant only if the code
  // was redeemed here.
  const [row] = results.at(-1).results ?? [];
  return changed && row?.session_id === code.grant_id ? new Response("ok") : new Response("the code was not redeemed", { status: 500 });
}

async function shaped(db, query) {
  const shapes = (query.get("batches") ?? "").split(",").filter(Boolean)
    .map((spec) => (/^[rwi]+$/.test(spec) ? [...spec] : Array.from({ length: Number(spec) }, (_, i) => (i % 2 === 0 ? "w" : "r"))));
  let spin = Number(query.get("spin") ?? 0);
  for (const shape of shapes) {
    const statements = [];
    for (let i = 0; i < shape.length; i++) {
      statements.push(shape[i] === "w"
        ? db.prepare("INSERT INTO floor (k, v) VALUES (?1, ?2) ON CONFLICT (k) DO UPDATE SET v = excluded.v").bind(i, Date.now())
        : shape[i] === "i"
        ? db.prepare("INSERT INTO floor_rows (id, owner, created_at, expires_at, payload) VALUES (?1, ?2, ?3, ?4, ?5)")
            .bind(crypto.randomUUID() + crypto.randomUUID(), "u-" + (i % 7), Date.now(), Date.now() + 86400000, "p".repeat(160))
        : db.prepare("SELECT v FROM floor WHERE k = ?1").bind(Math.max(i - 1, 0)));
    }
    await db.batch(statements);
    busy(spin);
    spin = 0;
  }
  busy(spin);
  return new Response("ok");
}

// The binding's statements, read once.
let codeGrant;

export default {
  async fetch(request, env) {
    const query = new URL(request.url).searchParams;
    codeGrant ??= env.CODE_GRANT.statements;
    if (query.has("seed")) return seed(env.SHARD, codeGrant, Number(query.get("seed")));
    if (query.get("flow") === "code_grant") return redeem(env.SHARD, codeGrant);
    return shaped(env.DB, query);
  },
};
