// Verifies edgeid's tokens the way a Node service would: with `jose`, against the served JWKS.
// Usage: node tests/verify_with_jose.mjs JWKS_URL ISSUER AUDIENCE ACCESS_TOKEN ID_TOKEN
// Prints both payloads as JSON and exits 0, or prints the error and exits 1.
import { createRemoteJWKSet, jwtVerify } from "jose";

const [jwksUrl, issuer, audience, accessToken, idToken] = process.argv.slice(2);
// Whatever the issuer signs with, but never "none" or a MAC.
const algorithms = ["ES256", "EdDSA", "RS256"];
const jwks = createRemoteJWKSet(new URL(jwksUrl));
try {
  const access = await jwtVerify(accessToken, jwks, { issuer, audience, typ: "at+jwt", algorithms });
  const id = await jwtVerify(idToken, jwks, { issuer, audience, typ: "JWT", algorithms });
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
