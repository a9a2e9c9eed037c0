// Verifies edgeid's tokens the way a Node service would: with `jose`, against the served JWKS.
// The access token's audience is the API (ACCESS_TOKEN_AUDIENCE), the ID token's the client
// (FIRST_PARTY_CLIENT_ID); an ID token must not pass as an access token.
// Usage: node tests/verify_with_jose.mjs JWKS_URL ISSUER AUDIENCE CLIENT_ID ACCESS_TOKEN ID_TOKEN
// Prints both payloads as JSON and exits 0, or prints the error and exits 1.
import { createRemoteJWKSet, jwtVerify } from "jose";

const [jwksUrl, issuer, audience, clientId, accessToken, idToken] = process.argv.slice(2);
// Whatever the issuer signs with, but never "none" or a MAC.
const algorithms = ["ES256", "EdDSA", "RS256"];
const jwks = createRemoteJWKSet(new URL(jwksUrl));
const asAccessToken = { issuer, audience, typ: "at+jwt", algorithms };
try {
  const access = await jwtVerify(accessToken, jwks, asAccessToken);
  const id = await jwtVerify(idToken, jwks, { issuer, audience: clientId, typ: "JWT", algorithms });
  const idAsAccess = await jwtVerify(idToken, jwks, asAccessToken).then(() => true, () => false);
  if (idAsAccess) throw new Error("the ID token passed as an access token");
  for (const claim of ["sub", "jti", "client_id", "scope", "sid", "exp", "iat"]) {
    if (access.payload[claim] === undefined) throw new Error(`access token lacks ${claim}`);
  }
  for (const claim of ["sub", "auth_time", "email", "email_verified", "sid", "exp", "iat"]) {
    if (id.payload[claim] === undefined) throw new Error(`ID token lacks ${claim}`);
  }
  console.log(JSON.stringify({ access: access.payload, id: id.payload }));
} catch (error) {
  console.error(`jose refused the token: ${error.code ?? ""} ${error.message}`);
  process.exit(1);
}
