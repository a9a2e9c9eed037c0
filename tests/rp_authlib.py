"""A Python relying party we did not write, Authlib, signing a user in through edgeid.

Authlib's `OAuth2Session` (requests) runs the code flow with PKCE (`code_challenge_method='S256'`)
for a confidential client (client_secret_basic) and a public one; the ID token is validated with
joserfc, the JOSE library Authlib itself now points to (`authlib.jose` is deprecated in favour of
it), against the discovered JWKS: signature (RS256), iss, aud, exp, iat, nonce. Then UserInfo.

The browser is a tiny generic user agent: a cookie jar, redirects followed by hand, the hosted
pages' forms read with html.parser and posted with `Origin` of the issuer.

Usage: python tests/rp_authlib.py CONFIG_JSON
  CONFIG_JSON = {"issuer", "email", "password", "clients": {"basic"|"public": {"client_id",
                 "client_secret", "redirect_uri"}}}
Prints one JSON line: [{"name", "ok", "error"?, "seconds"}]; exits 1 if any check failed.
"""

import json
import secrets
import sys
import time
import traceback
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlparse

import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet


class Forms(HTMLParser):
    """Every <form>: action, method, the fields a browser sends, the buttons."""

    def __init__(self, page_url):
        super().__init__(convert_charrefs=True)
        self.page_url = page_url
        self.forms = []
        self.current = None

    def handle_starttag(self, tag, attrs):
        attrs = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.current = {
                "action": urljoin(self.page_url, attrs.get("action", "")),
                "method": attrs.get("method", "get").lower(),
                "fields": [],
                "inputs": [],
                "buttons": [],
            }
        elif self.current is not None and tag == "input" and "name" in attrs:
            kind = attrs.get("type", "text").lower()
            self.current["inputs"].append(attrs["name"])
            if kind == "submit":
                self.current["buttons"].append((attrs["name"], attrs.get("value", "")))
            elif kind in ("checkbox", "radio") and "checked" not in attrs:
                pass
            elif kind not in ("button", "reset", "file", "image"):
                self.current["fields"].append((attrs["name"], attrs.get("value", "")))
        elif self.current is not None and tag == "button" and "name" in attrs:
            self.current["buttons"].append((attrs["name"], attrs.get("value", "")))

    def handle_endtag(self, tag):
        if tag == "form" and self.current is not None:
            self.forms.append(self.current)
            self.current = None


class UserAgent:
    def __init__(self, issuer):
        self.origin = "{0.scheme}://{0.netloc}".format(urlparse(issuer))
        self.http = requests.Session()
        self.logins = 0

    def navigate(self, url, data=None):
        headers = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
        if data is None:
            return self.http.get(url, headers=headers, allow_redirects=False, timeout=30)
        headers.update({"Origin": self.origin, "Sec-Fetch-Site": "same-origin"})
        return self.http.post(url, data=data, headers=headers, allow_redirects=False, timeout=30)

    def authorize(self, url, user):
        """Follows the OP until it redirects elsewhere: returns that callback URL."""
        reply = self.navigate(url)
        for _ in range(20):
            if reply.status_code in (301, 302, 303, 307, 308):
                location = urljoin(reply.url, reply.headers["Location"])
                if not location.startswith(self.origin):
                    return location
                reply = self.navigate(location)
                continue
            forms = Forms(reply.url)
            forms.feed(reply.text)
            login = next((f for f in forms.forms if "password" in f["inputs"]), None)
            consent = next((f for f in forms.forms if ("decision", "allow") in f["buttons"]), None)
            if reply.status_code == 200 and login and self.logins < 3:
                self.logins += 1
                fields = dict(login["fields"])
                fields.update(email=user["email"], password=user["password"])
                reply = self.navigate(login["action"], fields)
            elif reply.status_code == 200 and consent:
                fields = dict(consent["fields"])
                fields["decision"] = "allow"
                reply = self.navigate(consent["action"], fields)
            else:
                raise AssertionError(f"stopped at {reply.status_code} {reply.url}: {reply.text[:300]}")
        raise AssertionError("more than 20 redirects and pages")


def code_flow(config, discovery, jwks, client, auth_method, ua):
    session = OAuth2Session(
        client["client_id"],
        client.get("client_secret"),
        scope="openid email",
        redirect_uri=client["redirect_uri"],
        code_challenge_method="S256",
        token_endpoint_auth_method=auth_method,
    )
    code_verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(16)
    url, state = session.create_authorization_url(
        discovery["authorization_endpoint"], code_verifier=code_verifier, nonce=nonce
    )
    assert "code_challenge_method=S256" in url, url
    callback = ua.authorize(url, {"email": config["email"], "password": config["password"]})
    params = parse_qs(urlparse(callback).query)
    assert "error" not in params, f"authorization refused: {callback}"
    assert params.get("state") == [state], f"state in {callback}"
    assert params.get("iss") == [config["issuer"]], f"RFC 9207 iss in {callback}"
    token = session.fetch_token(
        discovery["token_endpoint"], authorization_response=callback, code_verifier=code_verifier, state=state
    )
    assert token.get("token_type", "").lower() == "bearer", token

    decoded = jwt.decode(token["id_token"], KeySet.import_key_set(jwks), algorithms=["RS256"])
    assert decoded.header.get("kid"), decoded.header
    now = int(time.time())
    jwt.JWTClaimsRegistry(
        now=now,
        leeway=300,
        iss={"essential": True, "value": config["issuer"]},
        aud={"essential": True, "value": client["client_id"]},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True, "value": nonce},
    ).validate(decoded.claims)

    userinfo = session.get(discovery["userinfo_endpoint"], timeout=30)
    assert userinfo.status_code == 200, userinfo.text
    info = userinfo.json()
    assert info["sub"] == decoded.claims["sub"], (info, decoded.claims)
    assert info.get("email") == config["email"], info


def main():
    config = json.loads(sys.argv[1])
    results = []

    def check(name, body):
        started = time.time()
        try:
            body()
            results.append({"name": name, "ok": True, "seconds": time.time() - started})
        except Exception as error:  # noqa: BLE001 - every failure is reported, not raised
            detail = "".join(traceback.format_exception_only(type(error), error)).strip()
            results.append({"name": name, "ok": False, "error": detail, "seconds": time.time() - started})

    state = {}

    def discover():
        discovery = requests.get(config["issuer"] + "/.well-known/openid-configuration", timeout=30).json()
        assert discovery["issuer"] == config["issuer"], discovery["issuer"]
        state["discovery"] = discovery
        state["jwks"] = requests.get(discovery["jwks_uri"], timeout=30).json()

    check("discovery and JWKS", discover)
    ua = UserAgent(config["issuer"])
    check(
        "OAuth2Session code flow + PKCE S256, client_secret_basic; joserfc ID token; UserInfo",
        lambda: code_flow(config, state["discovery"], state["jwks"], config["clients"]["basic"], "client_secret_basic", ua),
    )
    check(
        "OAuth2Session code flow + PKCE S256, public client (SSO); joserfc ID token; UserInfo",
        lambda: code_flow(config, state["discovery"], state["jwks"], config["clients"]["public"], "none", ua),
    )
    print(json.dumps(results))
    sys.exit(0 if all(result["ok"] for result in results) else 1)


if __name__ == "__main__":
    main()
