// A relying party we did not write, openid-client v6, signing a user in through edgeid:
// discovery; the code flow with PKCE (S256) for a public client (`None`) and for confidential
// clients with `ClientSecretBasic` and `ClientSecretPost`; openid-client's own checks of the
// authorization response (state, iss) and of the ID token (signature through the JWKS, iss, aud,
// exp, iat, nonce); `fetchUserInfo`; `refreshTokenGrant`; `buildEndSessionUrl` followed through,
// after which a prompt=none authorization comes back with login_required.
//
// The browser is a tiny generic user agent (tests/rp_user_agent.mjs): a cookie jar, redirects
// followed by hand, the hosted pages' forms filled and posted.
//
// Usage: node tests/rp_openid_client.mjs CONFIG_JSON
//   CONFIG_JSON = {"issuer", "email", "password", "clients": {"public"|"basic"|"post": {"client_id",
//                  "client_secret", "redirect_uri", "post_logout_redirect_uri"}}}
// Prints one JSON line: [{"name", "ok", "error"?, "seconds"}]; exits 1 if any check failed.
import * as oidc from "openid-client";
import { UserAgent } from "./rp_user_agent.mjs";

const config = JSON.parse(process.argv[2]);
const issuer = new URL(config.issuer);
const insecure = issuer.protocol === "http:" ? { execute: [oidc.allowInsecureRequests] } : {};
const results = [];

async function check(name, body) {
  const started = Date.now();
  try {
    await body();
    results.push({ name, ok: true, seconds: (Date.now() - started) / 1000 });
  } catch (error) {
    const detail = [error.code, error.error, error.error_description, error.message].filter(Boolean).join(" | ");
    results.push({ name, ok: false, error: `${detail}\n${error.cause ? JSON.stringify(error.cause) : ""}`.trim(), seconds: (Date.now() - started) / 1000 });
  }
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

async function configure(client, auth) {
  const authentication = {
    none: () => oidc.None(),
    basic: () => oidc.ClientSecretBasic(client.client_secret),
    post: () => oidc.ClientSecretPost(client.client_secret),
  }[auth]();
  return oidc.discovery(issuer, client.client_id, { redirect_uris: [client.redirect_uri] }, authentication, insecure);
}

const ua = new UserAgent(config.issuer);
const user = { email: config.email, password: config.password };
const sessions = {};

/// One code flow in the shared browser: the first one logs in; later ones ride the SSO session.
async function codeFlow(label, client, auth, { expectLogin }) {
  const configuration = await configure(client, auth);
  const metadata = configuration.serverMetadata();
  assert(metadata.issuer === config.issuer, `discovered issuer ${metadata.issuer}`);
  assert(metadata.authorization_response_iss_parameter_supported === true, "RFC 9207 advertised, so openid-client checks iss");
  const codeVerifier = oidc.randomPKCECodeVerifier();
  const codeChallenge = await oidc.calculatePKCECodeChallenge(codeVerifier);
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const url = oidc.buildAuthorizationUrl(configuration, {
    redirect_uri: client.redirect_uri,
    // OIDC Core §11: offline_access comes with prompt=consent.
    scope: "openid email offline_access",
    prompt: "consent",
    code_challenge: codeChallenge,
    code_challenge_method: "S256",
    state,
    nonce,
  });
  const journey = await ua.authorize(url.href, user);
  assert(journey.callback, `${label}: no redirect back; stopped at ${journey.stopped}`);
  assert(journey.logins === (expectLogin ? 1 : 0), `${label}: ${journey.logins} login pages (SSO expected: ${!expectLogin})`);
  assert(journey.consents === 1, `${label}: ${journey.consents} consent pages for prompt=consent`);
  const tokens = await oidc.authorizationCodeGrant(configuration, new URL(journey.callback), {
    pkceCodeVerifier: codeVerifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  });
  const claims = tokens.claims();
  assert(claims.aud === client.client_id || claims.aud.includes(client.client_id), `aud ${claims.aud}`);
  assert(claims.nonce === nonce, "nonce");
  assert(typeof claims.auth_time === "number", "auth_time");
  assert(tokens.refresh_token, `${label}: no refresh token for offline_access`);
  const userinfo = await oidc.fetchUserInfo(configuration, tokens.access_token, claims.sub);
  assert(userinfo.email === config.email, `userinfo email ${userinfo.email}`);
  sessions[label] = { configuration, client, tokens, claims };
}

await check("discovery", async () => {
  const configuration = await configure(config.clients.public, "none");
  const metadata = configuration.serverMetadata();
  for (const name of ["authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri", "end_session_endpoint"]) {
    assert(typeof metadata[name] === "string", `discovery lacks ${name}`);
  }
  assert(metadata.code_challenge_methods_supported?.includes("S256"), "S256 advertised");
});

await check("code flow + PKCE, public client (None)", () => codeFlow("public", config.clients.public, "none", { expectLogin: true }));
await check("code flow + PKCE, ClientSecretBasic (SSO)", () => codeFlow("basic", config.clients.basic, "basic", { expectLogin: false }));
await check("code flow + PKCE, ClientSecretPost (SSO)", () => codeFlow("post", config.clients.post, "post", { expectLogin: false }));

await check("one SSO session: the same sid and auth_time for every client", async () => {
  const claims = Object.values(sessions).map((session) => session.claims);
  assert(claims.length === 3, "a flow failed before");
  assert(new Set(claims.map((c) => c.sid)).size === 1, `sids ${claims.map((c) => c.sid)}`);
  assert(new Set(claims.map((c) => c.auth_time)).size === 1, `auth_times ${claims.map((c) => c.auth_time)}`);
});

for (const label of ["public", "basic", "post"]) {
  await check(`refreshTokenGrant (${label})`, async () => {
    const session = sessions[label];
    assert(session, "its code flow failed");
    await new Promise((resolve) => setTimeout(resolve, 1000)); // a new iat
    const refreshed = await oidc.refreshTokenGrant(session.configuration, session.tokens.refresh_token);
    assert(refreshed.refresh_token && refreshed.refresh_token !== session.tokens.refresh_token, "rotated");
    const claims = refreshed.claims();
    assert(claims, "contract: the refresh grant gives a new ID token");
    assert(claims.sub === session.claims.sub && claims.auth_time === session.claims.auth_time, "sub and auth_time kept");
    assert(claims.iat > session.claims.iat, "a new iat");
    await oidc.fetchUserInfo(session.configuration, refreshed.access_token, claims.sub);
    session.refreshed = refreshed;
  });
}

await check("buildEndSessionUrl followed through, then prompt=none is login_required", async () => {
  const session = sessions.post;
  assert(session, "its code flow failed");
  const state = oidc.randomState();
  const url = oidc.buildEndSessionUrl(session.configuration, {
    id_token_hint: session.tokens.id_token,
    post_logout_redirect_uri: session.client.post_logout_redirect_uri,
    state,
  });
  const journey = await ua.follow(await ua.get(url.href), {});
  assert(journey.callback, `no redirect to the post_logout_redirect_uri; stopped at ${journey.stopped}`);
  const back = new URL(journey.callback);
  assert(`${back.origin}${back.pathname}` === session.client.post_logout_redirect_uri, `landed on ${journey.callback}`);
  assert(back.searchParams.get("state") === state, `state ${back.searchParams.get("state")}`);

  const silentState = oidc.randomState();
  const silent = oidc.buildAuthorizationUrl(session.configuration, {
    redirect_uri: session.client.redirect_uri,
    scope: "openid",
    prompt: "none",
    state: silentState,
    nonce: oidc.randomNonce(),
  });
  const after = await ua.follow(await ua.get(silent.href), {});
  assert(after.callback, `prompt=none showed a page: ${after.stopped}`);
  try {
    await oidc.authorizationCodeGrant(session.configuration, new URL(after.callback), { expectedState: silentState });
    throw new Error("prompt=none after logout gave a code");
  } catch (error) {
    assert(error.error === "login_required", `expected login_required from openid-client, got ${error.code} ${error.error} ${error.message}`);
  }
  const refresh = session.refreshed?.refresh_token ?? session.tokens.refresh_token;
  try {
    await oidc.refreshTokenGrant(session.configuration, refresh);
    throw new Error("the refresh token of the logged-out session still works");
  } catch (error) {
    assert(error.error === "invalid_grant", `expected invalid_grant, got ${error.code} ${error.error} ${error.message}`);
  }
});

console.log(JSON.stringify(results));
process.exit(results.every((result) => result.ok) ? 0 : 1);
