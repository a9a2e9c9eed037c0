"""Verifies an edgeid access token the way a Python service would: PyJWT's PyJWKClient fetches
the JWKS, the algorithm list is pinned, issuer, audience and typ are checked.

Usage: python tests/verify_with_pyjwt.py JWKS_URL ISSUER AUDIENCE ACCESS_TOKEN
Prints the claims as JSON and exits 0, or prints the error and exits 1.
"""
import json
import sys

import jwt

jwks_url, issuer, audience, token = sys.argv[1:5]
try:
    if jwt.get_unverified_header(token).get("typ") != "at+jwt":
        raise jwt.InvalidTokenError("typ is not at+jwt")
    signing_key = jwt.PyJWKClient(jwks_url).get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=["ES256", "EdDSA", "RS256"],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "iss", "sub", "aud", "jti"]},
    )
except jwt.PyJWTError as error:
    print(f"PyJWT refused the token: {error!r}", file=sys.stderr)
    sys.exit(1)
print(json.dumps(claims))
