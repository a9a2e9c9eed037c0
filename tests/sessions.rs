//! Sessions after login, natively: refresh rotation with reuse detection and its grace window,
//! lifetimes, logout and revocation, and userinfo's refusal of every forged token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use edgeid::api::ApiRequest;
use serde_json::{json, Value};

use crate::support::{test_config, App, Reply};

const PASSWORD: &str = "correct horse battery";

fn logged_in(app: &App, email: &str) -> Value {
    app.verified_account(email, PASSWORD);
    let login = app.post("/v1/login", json!({"email": email, "password": PASSWORD}));
    assert_eq!(login.status, 200, "{}", login.text());
    login.json
}

fn form(app: &App, path: &str, body: &str) -> Reply {
    app.request("POST", path, Some("application/x-www-form-urlencoded"), body.as_bytes())
}

fn refresh(app: &App, refresh_token: &str) -> Reply {
    form(app, "/oauth/token", &format!("grant_type=refresh_token&refresh_token={refresh_token}"))
}

fn userinfo(app: &App, access_token: &str) -> Reply {
    app.send(ApiRequest {
        method: "GET".into(),
        path: "/userinfo".into(),
        headers: vec![("Authorization".into(), format!("Bearer {access_token}"))],
        ..Default::default()
    })
}

fn token(reply: &Reply, name: &str) -> String {
    reply.json[name].as_str().unwrap_or_else(|| panic!("no {name} in {}", reply.text())).to_owned()
}

#[test]
fn refresh_rotates_and_a_reused_token_revokes_the_family() {
    let app = App::new();
    let login = logged_in(&app, "rotate@example.com");
    let first = login["refresh_token"].as_str().unwrap();

    app.advance(60);
    let second = refresh(&app, first);
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.response.header("cache-control"), Some("no-store"));
    assert_ne!(token(&second, "refresh_token"), first);
    assert_eq!(userinfo(&app, &token(&second, "access_token")).status, 200);

    let third = refresh(&app, &token(&second, "refresh_token"));
    assert_eq!(third.status, 200);

    // The first token again, long after the grace window: a thief. The family is revoked.
    app.advance(60);
    refresh(&app, first).assert_error(400, "invalid_grant");
    refresh(&app, &token(&third, "refresh_token")).assert_error(400, "invalid_grant");
    userinfo(&app, &token(&third, "access_token")).assert_error(401, "invalid_token");
    assert_eq!(app.users_count("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL"), 0);
}

#[test]
fn a_retry_within_the_grace_window_gets_the_same_successor() {
    let app = App::new();
    let login = logged_in(&app, "retry@example.com");
    let first = login["refresh_token"].as_str().unwrap();
    let lost = refresh(&app, first);
    app.advance(10);
    let retried = refresh(&app, first);
    assert_eq!(retried.status, 200, "{}", retried.text());
    assert_eq!(token(&retried, "refresh_token"), token(&lost, "refresh_token"));
    // One branch: exactly two refresh tokens exist, the consumed first and its one successor.
    assert_eq!(app.users_count("SELECT count(*) FROM refresh_tokens"), 2);
    assert_eq!(refresh(&app, &token(&retried, "refresh_token")).status, 200);

    // Once the successor has been used, the retry is no longer benign.
    refresh(&app, first).assert_error(400, "invalid_grant");
    assert_eq!(app.users_count("SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL"), 1);
}

#[test]
fn the_grace_window_is_configurable_and_ends() {
    let app = App::with_config(test_config(&[("REFRESH_TOKEN_REUSE_GRACE_SECONDS", "0")]));
    let login = logged_in(&app, "strict@example.com");
    let first = login["refresh_token"].as_str().unwrap();
    assert_eq!(refresh(&app, first).status, 200);
    app.advance(1);
    refresh(&app, first).assert_error(400, "invalid_grant");
}

#[test]
fn lifetimes_slide_but_the_session_has_an_absolute_end() {
    let app = App::with_config(test_config(&[
        ("REFRESH_TOKEN_TTL_SECONDS", "3600"),
        ("SESSION_ABSOLUTE_TTL_SECONDS", "10000"),
    ]));
    let login = logged_in(&app, "slide@example.com");
    // An unused refresh token expires after its sliding lifetime.
    app.advance(3600);
    refresh(&app, login["refresh_token"].as_str().unwrap()).assert_error(400, "invalid_grant");

    let login = app.post("/v1/login", json!({"email": "slide@example.com", "password": PASSWORD})).json;
    let mut current = login["refresh_token"].as_str().unwrap().to_owned();
    // Used every 50 minutes, it keeps sliding, until the session's absolute end.
    for _ in 0..3 {
        app.advance(3000);
        let next = refresh(&app, &current);
        assert_eq!(next.status, 200, "{}", next.text());
        current = token(&next, "refresh_token");
    }
    app.advance(1001);
    refresh(&app, &current).assert_error(400, "invalid_grant");
}

#[test]
fn token_endpoint_speaks_rfc_6749() {
    let app = App::new();
    form(&app, "/oauth/token", "grant_type=password&username=a&password=b").assert_error(400, "unsupported_grant_type");
    form(&app, "/oauth/token", "grant_type=client_credentials").assert_error(400, "unsupported_grant_type");
    // The code grant needs a client: the first-party app has no codes.
    form(&app, "/oauth/token", "grant_type=authorization_code&code=x").assert_error(401, "invalid_client");
    form(&app, "/oauth/token", "refresh_token=x").assert_error(400, "invalid_request");
    form(&app, "/oauth/token", "grant_type=refresh_token").assert_error(400, "invalid_request");
    refresh(&app, "not-a-token").assert_error(400, "invalid_grant");
    refresh(&app, &format!("000{}", "A".repeat(43))).assert_error(400, "invalid_grant");
}

#[test]
fn logout_and_revocation_end_the_session() {
    let app = App::new();
    let first = logged_in(&app, "leave@example.com");
    let second = app.post("/v1/login", json!({"email": "leave@example.com", "password": PASSWORD})).json;

    let logout = app.post("/v1/logout", json!({"refresh_token": first["refresh_token"]}));
    assert_eq!((logout.status, logout.response.body.len()), (204, 0));
    refresh(&app, first["refresh_token"].as_str().unwrap()).assert_error(400, "invalid_grant");
    userinfo(&app, first["access_token"].as_str().unwrap()).assert_error(401, "invalid_token");
    // The other session is untouched.
    assert_eq!(userinfo(&app, second["access_token"].as_str().unwrap()).status, 200);

    // RFC 7009: 200 for a valid token, an unknown one, and garbage alike.
    for token_value in [second["refresh_token"].as_str().unwrap(), "unknown-token", &format!("3ff{}", "B".repeat(43))] {
        let revoked = form(&app, "/oauth/revoke", &format!("token={token_value}&token_type_hint=refresh_token"));
        assert_eq!(revoked.status, 200, "{token_value}");
    }
    refresh(&app, second["refresh_token"].as_str().unwrap()).assert_error(400, "invalid_grant");
    form(&app, "/oauth/revoke", "").assert_error(400, "invalid_request");
    assert_eq!(app.post("/v1/logout", json!({"refresh_token": "whatever"})).status, 204);
}

#[test]
fn userinfo_answers_for_a_valid_access_token() {
    let app = App::new();
    let login = logged_in(&app, "who@example.com");
    let reply = userinfo(&app, login["access_token"].as_str().unwrap());
    assert_eq!(reply.status, 200);
    assert_eq!(reply.response.header("cache-control"), Some("no-store"));
    assert_eq!(reply.json["email"], "who@example.com");
    assert_eq!(reply.json["email_verified"], true);
    assert!(reply.json["sub"].as_str().is_some_and(|sub| !sub.is_empty()));

    // Expired, with the leeway: fine at exp + 29 s, refused at exp + 31 s.
    app.advance(900 + 29);
    assert_eq!(userinfo(&app, login["access_token"].as_str().unwrap()).status, 200);
    app.advance(2);
    userinfo(&app, login["access_token"].as_str().unwrap()).assert_error(401, "invalid_token");
}

fn segments(token: &str) -> (Value, Value, String) {
    let mut parts = token.split('.');
    let mut decode = || serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    let header = decode();
    let claims = decode();
    (header, claims, parts.next().unwrap().to_owned())
}

fn encode(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

#[test]
fn userinfo_refuses_every_forged_token() {
    let app = App::new();
    let login = logged_in(&app, "forge@example.com");
    let access = login["access_token"].as_str().unwrap();
    let (header, claims, signature) = segments(access);
    let jwks = app.get("/.well-known/jwks.json").json;
    let with_header = |change: &dyn Fn(&mut Value)| {
        let mut header = header.clone();
        change(&mut header);
        format!("{}.{}.{signature}", encode(&header), encode(&claims))
    };
    let with_claims = |change: &dyn Fn(&mut Value)| {
        let mut claims = claims.clone();
        change(&mut claims);
        format!("{}.{}.{signature}", encode(&header), encode(&claims))
    };
    // HS256 "signed" with our public key as the secret: the classic algorithm confusion.
    let hs256 = {
        use hmac::Mac;
        let mut header = header.clone();
        header["alg"] = json!("HS256");
        let input = format!("{}.{}", encode(&header), encode(&claims));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(jwks["keys"][0].to_string().as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    };
    let id_token = login["id_token"].as_str().unwrap().to_owned();
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none, no signature",
            format!("{}.{}.", encode(&json!({"alg": "none", "typ": "at+jwt"})), encode(&claims)),
        ),
        ("alg none, kept kid", with_header(&|h| h["alg"] = json!("none"))),
        ("HS256 keyed with the public key", hs256),
        ("unknown kid", with_header(&|h| h["kid"] = json!("not-our-key"))),
        ("no kid", with_header(&|h| drop(h.as_object_mut().unwrap().remove("kid")))),
        ("jku header", with_header(&|h| h["jku"] = json!("https://evil.example/jwks.json"))),
        ("x5u header", with_header(&|h| h["x5u"] = json!("https://evil.example/cert.pem"))),
        ("embedded jwk", with_header(&|h| h["jwk"] = jwks["keys"][0].clone())),
        ("crit header", with_header(&|h| h["crit"] = json!(["exp"]))),
        ("typ JWT", with_header(&|h| h["typ"] = json!("JWT"))),
        ("tampered sub", with_claims(&|c| c["sub"] = json!("someone-else"))),
        ("tampered exp", with_claims(&|c| c["exp"] = json!(4_102_444_800_i64))),
        ("stripped signature", format!("{}.{}.", encode(&header), encode(&claims))),
        ("two segments", format!("{}.{}", encode(&header), encode(&claims))),
        ("garbage", "not.a.jwt".to_owned()),
        ("an ID token", id_token),
    ];
    for (name, forged) in cases {
        let reply = userinfo(&app, &forged);
        reply.assert_error(401, "invalid_token");
        assert_eq!(reply.response.header("www-authenticate"), Some("Bearer error=\"invalid_token\""), "{name}");
    }

    // Missing or non-Bearer credentials.
    for headers in [
        vec![],
        vec![("Authorization".to_owned(), format!("Basic {access}"))],
        vec![("Authorization".to_owned(), "Bearer ".to_owned())],
    ] {
        let reply =
            app.send(ApiRequest { method: "GET".into(), path: "/userinfo".into(), headers, ..Default::default() });
        reply.assert_error(401, "invalid_token");
        assert!(reply.response.header("www-authenticate").is_some_and(|value| value.starts_with("Bearer")));
    }

    // A token for another audience or issuer, properly signed by us, is refused too.
    for overrides in [[("ACCESS_TOKEN_AUDIENCE", "another-app")], [("ISSUER", "https://other.example.test")]] {
        let other = App::with_config(test_config(&overrides));
        let foreign = logged_in(&other, "forge@example.com");
        userinfo(&app, foreign["access_token"].as_str().unwrap()).assert_error(401, "invalid_token");
    }
    assert_eq!(userinfo(&app, access).status, 200);
}

/// Tokens properly signed with our own key whose header breaks the policy: the signature is
/// valid, so only the header checks stand between them and acceptance.
#[test]
fn userinfo_refuses_validly_signed_tokens_with_forbidden_headers() {
    use jwt_compact::{AlgorithmExt, Claims, Header};

    #[derive(serde::Serialize)]
    struct Crit {
        crit: Vec<&'static str>,
    }

    let app = App::new();
    let login = logged_in(&app, "header@example.com");
    let access = login["access_token"].as_str().unwrap();
    let (header, claims, _) = segments(access);
    let kid = header["kid"].as_str().unwrap().to_owned();
    let key = crate::support::bootstrap_p256_key(&app);
    let mut claims: Claims<Value> = Claims::new(claims);
    claims.expiration = None;
    let sign = |header: Header<Crit>| jwt_compact::alg::Es256.token(&header, &claims, &key).unwrap();
    let base = || Header::new(Crit { crit: vec![] }).with_key_id(kid.clone()).with_token_type("at+jwt");
    // `crit`, even empty, names extensions we do not implement (RFC 7515 §4.1.11).
    userinfo(&app, &sign(base())).assert_error(401, "invalid_token");
    let plain = jwt_compact::alg::Es256
        .token(&Header::empty().with_key_id(kid.clone()).with_token_type("at+jwt"), &claims, &key)
        .unwrap();
    assert_eq!(userinfo(&app, &plain).status, 200, "the test key signs tokens the API accepts");
    let cases = [
        (
            "jku",
            Header::empty()
                .with_key_id(kid.clone())
                .with_token_type("at+jwt")
                .with_key_set_url("https://evil.example/jwks"),
        ),
        (
            "x5u",
            Header::empty()
                .with_key_id(kid.clone())
                .with_token_type("at+jwt")
                .with_certificate_url("https://evil.example/c.pem"),
        ),
        ("typ JWT", Header::empty().with_key_id(kid.clone()).with_token_type("JWT")),
        ("no typ", Header::empty().with_key_id(kid.clone())),
        ("no kid", Header::empty().with_token_type("at+jwt")),
    ];
    for (name, header) in cases {
        let token = jwt_compact::alg::Es256.token(&header, &claims, &key).unwrap();
        let reply = userinfo(&app, &token);
        assert_eq!(reply.status, 401, "{name}");
    }
}

#[test]
fn a_password_reset_ends_every_session() {
    let app = App::new();
    let login = logged_in(&app, "reset@example.com");
    app.post("/v1/password/forgot", json!({"email": "reset@example.com"}));
    let reset_token = crate::support::token_in_link(&app.single_mail_to("reset@example.com").text, "/reset-password");
    assert_eq!(app.post("/v1/password/reset", json!({"token": reset_token, "password": "new passphrase"})).status, 200);
    refresh(&app, login["refresh_token"].as_str().unwrap()).assert_error(400, "invalid_grant");
    userinfo(&app, login["access_token"].as_str().unwrap()).assert_error(401, "invalid_token");
}

/// The cron's clean-up: expired and used one-time tokens, ended sessions with their refresh
/// tokens, and accounts nobody verified within `UNVERIFIED_ACCOUNT_TTL_DAYS` go; live things
/// stay.
#[test]
fn the_cron_purges_what_has_ended_and_keeps_what_lives() {
    let app = App::with_config(test_config(&[("UNVERIFIED_ACCOUNT_TTL_DAYS", "7")]));
    app.verified_account("kept@example.com", PASSWORD);
    let live = app.post("/v1/login", json!({"email": "kept@example.com", "password": PASSWORD}));
    assert_eq!(live.status, 200);
    let ended = app.post("/v1/login", json!({"email": "kept@example.com", "password": PASSWORD}));
    app.post("/v1/logout", json!({"refresh_token": ended.json["refresh_token"]}));
    app.post("/v1/signup", json!({"email": "abandoned@example.com", "password": PASSWORD}));
    app.take_mails();
    let purge = |app: &App| {
        let unverified_before = app.now.get().timestamp() - app.config.unverified_account_ttl_seconds;
        app.purge(Some(unverified_before))
    };
    let first = purge(&app);
    assert_eq!((first.sessions, first.refresh_tokens, first.unverified_accounts), (1, 1, 0), "{first:?}");
    assert_eq!(app.users_count("SELECT count(*) FROM users"), 2);

    // Six days on the abandoned sign-up is still there (its link died after one), even signed
    // up again (which does not move its age); on day seven it goes, with its tokens, and the
    // address is free. The verified account and its live session stay.
    app.advance(6 * 86_400);
    app.post("/v1/signup", json!({"email": "abandoned@example.com", "password": "another passphrase"}));
    app.take_mails();
    let second = purge(&app);
    assert_eq!(second.unverified_accounts, 0);
    assert!(second.one_time_tokens >= 1, "{second:?}");
    app.advance(86_400);
    assert_eq!(purge(&app).unverified_accounts, 1);
    assert_eq!(app.users_count("SELECT count(*) FROM users WHERE email = 'abandoned@example.com'"), 0);
    assert_eq!(app.users_count("SELECT count(*) FROM one_time_tokens WHERE purpose = 'verify_email'"), 0);
    let refreshed = app.request(
        "POST",
        "/oauth/token",
        Some("application/x-www-form-urlencoded"),
        format!("grant_type=refresh_token&refresh_token={}", live.json["refresh_token"].as_str().unwrap()).as_bytes(),
    );
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
}
