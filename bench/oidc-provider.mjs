// The peer of the benchmark: oidc-provider (pinned in bench/package.json) configured like
// edgeid — ES256, JWT access tokens (RFC 9068 style via a resource server), ID tokens on the
// refresh grant, refresh-token rotation — on an unbounded in-memory adapter (its own LRU holds
// 1000 entries, which would evict pre-minted tokens). `POST /__bench/refresh-tokens?n=N` mints
// refresh tokens through its own models, the way its code exchange saves them, so the refresh
// grant can be driven without a browser; it exists only in this benchmark process. `POST
// /__bench/forget` empties the store (bench/code.mjs, between chunks: see there). Codes for
// its authorization-code grant go through its real flow (bench/lib.mjs `peerCodes`): `/auth`,
// the interaction, which this server finishes at once with `provider.interactionFinished`
// (login and consent: the documented way an application ends an interaction), `/auth/:uid`,
// then the confidential client `edgeid-code` redeems them (client_secret_basic, PKCE).
import { createServer } from "node:http";
import { generateKeyPairSync } from "node:crypto";
import Provider from "oidc-provider";

const RESOURCE = "https://api.bench.test";

/// A Map behind oidc-provider's adapter interface: nothing is ever evicted.
const store = new Map();
class MapAdapter {
  constructor(model) {
    this.model = model;
  }
  key(id) {
    return `${this.model}:${id}`;
  }
  async upsert(id, payload) {
    store.set(this.key(id), payload);
    if (payload.grantId) {
      const grantKey = `grant:${payload.grantId}`;
      const ids = store.get(grantKey) ?? [];
      ids.push(this.key(id));
      store.set(grantKey, ids);
    }
    if (payload.uid) store.set(`uid:${payload.uid}`, id);
    if (payload.userCode) store.set(`userCode:${payload.userCode}`, id);
  }
  async find(id) {
    return store.get(this.key(id));
  }
  async findByUid(uid) {
    const id = store.get(`uid:${uid}`);
    return id && this.find(id);
  }
  async findByUserCode(userCode) {
    const id = store.get(`userCode:${userCode}`);
    return id && this.find(id);
  }
  async consume(id) {
    const payload = store.get(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) {
    store.delete(this.key(id));
  }
  async revokeByGrantId(grantId) {
    for (const key of store.get(`grant:${grantId}`) ?? []) store.delete(key);
    store.delete(`grant:${grantId}`);
  }
}

export async function startPeer(port) {
  const issuer = `http://127.0.0.1:${port}`;
  const key = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "jwk" });
  const provider = new Provider(issuer, {
    adapter: MapAdapter,
    clients: [{
      client_id: "edgeid",
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      redirect_uris: ["http://127.0.0.1/callback"],
      token_endpoint_auth_method: "none",
      id_token_signed_response_alg: "ES256",
    }, {
      client_id: "edgeid-code",
      client_secret: "bench-peer-client-secret-0123456789",
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      redirect_uris: ["http://127.0.0.1/callback"],
      token_endpoint_auth_method: "client_secret_basic",
      id_token_signed_response_alg: "ES256",
    }],
    jwks: { keys: [{ ...key, alg: "ES256", use: "sig", kid: "bench" }] },
    findAccount: async (_ctx, id) => ({
      accountId: id,
      claims: async () => ({ sub: id, email: `${id}@example.com`, email_verified: true }),
    }),
    claims: { email: ["email", "email_verified"], openid: ["sub"] },
    scopes: ["openid", "email", "offline_access", "api"],
    features: {
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: "api",
          audience: "edgeid",
          accessTokenTTL: 900,
          accessTokenFormat: "jwt",
          jwt: { sign: { alg: "ES256" } },
        }),
      },
    },
    rotateRefreshToken: true,
    issueRefreshToken: () => true,
    // AuthorizationCode: ten minutes, so that a round's codes outlive its minting.
    ttl: { AuthorizationCode: 600, AccessToken: 900, IdToken: 900, RefreshToken: 30 * 24 * 3600, Grant: 30 * 24 * 3600 },
  });
  provider.proxy = false;

  const client = await provider.Client.find("edgeid");
  async function mint(n) {
    const tokens = [];
    for (let i = 0; i < n; i++) {
      const accountId = `bench-${i}`;
      const grant = new provider.Grant({ accountId, clientId: "edgeid" });
      grant.addOIDCScope("openid email offline_access");
      grant.addResourceScope(RESOURCE, "api");
      const grantId = await grant.save();
      const refreshToken = new provider.RefreshToken({
        accountId,
        client,
        grantId,
        gty: "authorization_code",
        scope: "openid email offline_access api",
        resource: RESOURCE,
        authTime: Math.floor(Date.now() / 1000),
        expiresWithSession: false,
        rotations: 0,
      });
      tokens.push(await refreshToken.save());
    }
    return tokens;
  }

  const callback = provider.callback();
  let interactions = 0;
  const server = createServer(async (request, response) => {
    if (request.method === "POST" && request.url.startsWith("/__bench/refresh-tokens")) {
      const n = Number(new URL(request.url, issuer).searchParams.get("n") ?? 100);
      const body = JSON.stringify({ refresh_tokens: await mint(n) });
      response.writeHead(200, { "content-type": "application/json" }).end(body);
      return;
    }
    if (request.method === "POST" && request.url === "/__bench/forget") {
      // After each chunk of the code grant, once its codes are redeemed (bench/code.mjs says
      // why): no later chunk reads what the store holds.
      store.clear();
      response.writeHead(204).end();
      return;
    }
    if (request.method === "GET" && request.url.startsWith("/interaction/")) {
      // The application's side of an interaction: the person signs in and consents at once.
      const details = await provider.interactionDetails(request, response);
      const accountId = `bench-${interactions++ % 1000}`;
      const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
      // "api" is in `scopes`, so the authorization request counts it among the OIDC scopes too.
      grant.addOIDCScope("openid email offline_access api");
      grant.addResourceScope(RESOURCE, "api");
      const grantId = await grant.save();
      await provider.interactionFinished(request, response, { login: { accountId }, consent: { grantId } }, { mergeWithLastSubmission: false });
      return;
    }
    callback(request, response);
  });
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
}
