// An independent OpenID Connect client (openid-client) against edgeid: discovery, then the
// refresh grant, whose ID token openid-client validates itself (signature through the JWKS,
// iss, aud — which must be the client id, FIRST_PARTY_CLIENT_ID —, exp, iat, sub).
// Usage: node tests/discover_with_openid_client.mjs ISSUER CLIENT_ID REFRESH_TOKEN
// Prints {"metadata", "refreshed": {"refresh_token", "claims"}} and exits 0, or exits 1.
import * as client from "openid-client";

const [issuer, clientId, refreshToken] = process.argv.slice(2);
try {
  const config = await client.discovery(new URL(issuer), clientId, undefined, client.None(), {
    execute: issuer.startsWith("http://") ? [client.allowInsecureRequests] : [],
  });
  const tokens = await client.refreshTokenGrant(config, refreshToken);
  console.log(
    JSON.stringify({
      metadata: config.serverMetadata(),
      refreshed: { refresh_token: tokens.refresh_token, claims: tokens.claims() },
    }),
  );
} catch (error) {
  console.error(`openid-client failed: ${error.code ?? ""} ${error.message}`);
  process.exit(1);
}
