//! The account lifecycle through `api::handle`, natively: real migrations and SQL on SQLite, a
//! fixed clock moved past expiry, seeded randomness and captured mail.

use chrono::{DateTime, Utc};
use edgeid::domain::tokens::{AccessTokenClaims, IdTokenClaims};
use edgeid::mail::{provider_request, MailKind};
use jwt_compact::alg::Es256;
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{AlgorithmExt, TimeOptions, UntrustedToken};
use serde_json::{json, Value};

use crate::support::{test_config, token_in_link, App};

const PASSWORD: &str = "correct horse battery";

#[test]
fn whole_lifecycle_from_signup_to_password_reset() {
    let app = App::new();
    let signup = app.post("/v1/signup", json!({"email": "  Alice@Example.COM ", "password": PASSWORD}));
    assert_eq!((signup.status, &signup.json), (202, &json!({"status": "verification_email_sent"})));
    assert_eq!(signup.response.header("cache-control"), Some("no-store"));

    let mail = app.single_mail_to("alice@example.com");
    assert_eq!(mail.kind, MailKind::VerifyEmail);
    assert!(mail.text.contains("https://app.example.test/verify-email?token="), "{}", mail.text);
    let verify_token = token_in_link(&mail.text, "/verify-email");
    assert!(mail.html.contains(&verify_token));

    // Correct password, unverified email: 403; a wrong password stays 401.
    app.post("/v1/login", json!({"email": "alice@example.com", "password": PASSWORD}))
        .assert_error(403, "email_not_verified");
    app.post("/v1/login", json!({"email": "alice@example.com", "password": "not the password"}))
        .assert_error(401, "invalid_credentials");

    // Opening the page does not consume the token; the form posts it.
    let page = app.get(&format!("/verify-email?token={verify_token}"));
    assert_eq!(page.status, 200);
    assert!(page.text().contains("action=\"/v1/email/verify\""));
    assert!(page.text().contains(&verify_token));
    let verified = app.post("/v1/email/verify", json!({"token": verify_token}));
    assert_eq!((verified.status, &verified.json), (200, &json!({"status": "email_verified"})));
    app.post("/v1/email/verify", json!({"token": verify_token})).assert_error(400, "invalid_token");

    let login =
        app.post("/v1/login", json!({"email": "ALICE@example.com", "password": PASSWORD, "nonce": "n-0S6_WzA2Mj"}));
    assert_eq!(login.status, 200, "{}", login.text());
    assert_eq!(login.response.header("cache-control"), Some("no-store"));
    assert_eq!(login.json["token_type"], "Bearer");
    assert_eq!(login.json["expires_in"], 900);
    assert_eq!(login.json["refresh_token"].as_str().unwrap().len(), 46);
    let (access, id) = verify_tokens(&app, &login.json);
    assert_eq!(id.email.as_deref(), Some("alice@example.com"));
    assert_eq!(id.email_verified, Some(true));
    assert_eq!(id.nonce.as_deref(), Some("n-0S6_WzA2Mj"));
    assert_eq!(access.sub, id.sub);
    assert_eq!(access.sid, id.sid);
    assert_eq!(app.users_count("SELECT count(*) FROM sessions WHERE revoked_at IS NULL"), 1);
    // Only the hash of the refresh token is stored.
    let refresh = login.json["refresh_token"].as_str().unwrap();
    assert_eq!(app.users_count(&format!("SELECT count(*) FROM refresh_tokens WHERE token_hash = '{refresh}'")), 0);
    assert_eq!(app.users_count("SELECT count(*) FROM refresh_tokens WHERE length(token_hash) = 64"), 1);

    let forgot = app.post("/v1/password/forgot", json!({"email": "alice@example.com"}));
    assert_eq!((forgot.status, &forgot.json), (202, &json!({"status": "reset_email_sent"})));
    let mail = app.single_mail_to("alice@example.com");
    assert_eq!(mail.kind, MailKind::ResetPassword);
    let reset_token = token_in_link(&mail.text, "/reset-password");
    assert!(mail.text.contains(&format!("https://app.example.test/reset-password?token={reset_token}")));
    let page = app.get(&format!("/reset-password?token={reset_token}"));
    assert_eq!(page.status, 200);
    assert!(page.text().contains("action=\"/v1/password/reset\""));

    app.post("/v1/password/reset", json!({"token": reset_token, "password": "short"}))
        .assert_error(400, "weak_password");
    let reset = app.post("/v1/password/reset", json!({"token": reset_token, "password": "a brand new passphrase"}));
    assert_eq!((reset.status, &reset.json), (200, &json!({"status": "password_updated"})));
    app.post("/v1/password/reset", json!({"token": reset_token, "password": "yet another passphrase"}))
        .assert_error(400, "invalid_token");

    // Every session and refresh token of the user is revoked.
    assert_eq!(app.users_count("SELECT count(*) FROM sessions WHERE revoked_at IS NULL"), 0);
    assert_eq!(app.users_count("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL"), 0);
    app.post("/v1/login", json!({"email": "alice@example.com", "password": PASSWORD}))
        .assert_error(401, "invalid_credentials");
    assert_eq!(
        app.post("/v1/login", json!({"email": "alice@example.com", "password": "a brand new passphrase"})).status,
        200
    );
}

/// Verifies both tokens of a token response against the JWKS the API serves, with the algorithm
/// chosen by the test (never by the token), and returns their claims.
fn verify_tokens(app: &App, response: &Value) -> (AccessTokenClaims, IdTokenClaims) {
    let jwks = app.get("/.well-known/jwks.json").json;
    let jwk = &jwks["keys"][0];
    let key =
        p256::ecdsa::VerifyingKey::try_from(&serde_json::from_value::<JsonWebKey<'_>>(jwk.clone()).unwrap()).unwrap();
    let now = app.now.get();
    let time = TimeOptions::new(chrono::Duration::seconds(30), move || now);

    let access = UntrustedToken::new(response["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(access.header().token_type.as_deref(), Some("at+jwt"));
    assert_eq!(access.header().key_id.as_deref(), jwk["kid"].as_str());
    let access = Es256.validator::<AccessTokenClaims>(&key).validate(&access).unwrap();
    access.claims().validate_expiration(&time).unwrap();
    let claims = access.claims();
    assert_eq!(claims.issued_at, Some(now));
    assert_eq!(claims.expiration, Some(now + chrono::Duration::seconds(900)));
    let custom = claims.custom.clone();
    assert_eq!(custom.iss, "https://id.example.test");
    assert_eq!(custom.aud, "edgeid-tests");
    assert_eq!(custom.client_id, "edgeid-first-party");
    assert_eq!(custom.scope, "openid email offline_access");
    assert!(!custom.jti.is_empty());

    let id = UntrustedToken::new(response["id_token"].as_str().unwrap()).unwrap();
    assert_eq!(id.header().token_type.as_deref(), Some("JWT"));
    let id = Es256.validator::<IdTokenClaims>(&key).validate(&id).unwrap();
    id.claims().validate_expiration(&time).unwrap();
    let id_claims = id.claims().custom.clone();
    assert_eq!(id_claims.iss, "https://id.example.test");
    assert_eq!(id_claims.aud, "edgeid-first-party", "the client's id, not the access token's audience");
    assert_eq!(DateTime::<Utc>::from_timestamp(id_claims.auth_time, 0), Some(now));
    (custom, id_claims)
}

#[test]
fn registered_and_unknown_emails_get_identical_answers() {
    let app = App::new();
    app.verified_account("owner@example.com", PASSWORD);

    let cases = [
        (
            "/v1/signup",
            json!({"email": "owner@example.com", "password": "another password"}),
            json!({"email": "nobody@example.com", "password": "another password"}),
        ),
        ("/v1/email/resend", json!({"email": "owner@example.com"}), json!({"email": "nobody@example.com"})),
        ("/v1/password/forgot", json!({"email": "owner@example.com"}), json!({"email": "nobody@example.com"})),
        (
            "/v1/login",
            json!({"email": "owner@example.com", "password": "wrong password"}),
            json!({"email": "nobody@example.com", "password": "wrong password"}),
        ),
    ];
    for (path, registered, unknown) in cases {
        let registered = app.post(path, registered);
        let unknown = app.post(path, unknown);
        assert_eq!((registered.status, &registered.response.body), (unknown.status, &unknown.response.body), "{path}");
        assert_eq!(registered.response.headers, unknown.response.headers, "{path}");
    }
}

#[test]
fn signing_up_with_a_registered_email_mails_its_owner_instead() {
    let app = App::new();
    app.verified_account("owner@example.com", PASSWORD);
    assert_eq!(
        app.post("/v1/signup", json!({"email": "Owner@Example.com", "password": "attacker password"})).status,
        202
    );
    let mail = app.single_mail_to("owner@example.com");
    assert_eq!(mail.kind, MailKind::AlreadyRegistered);
    assert!(!mail.text.contains("/verify-email"));
    // The account is unchanged: the old password works, the new one does not.
    assert_eq!(app.post("/v1/login", json!({"email": "owner@example.com", "password": PASSWORD})).status, 200);
    app.post("/v1/login", json!({"email": "owner@example.com", "password": "attacker password"}))
        .assert_error(401, "invalid_credentials");
    assert_eq!(app.users_count("SELECT count(*) FROM users"), 1);
}

#[test]
fn a_pre_registered_address_cannot_be_hijacked() {
    // Someone signs up with the victim's address and never verifies it. When the victim signs
    // up, their password replaces the squatter's and the squatter's link dies: the only live
    // link confirms the password the mailbox owner chose.
    let app = App::new();
    assert_eq!(
        app.post("/v1/signup", json!({"email": "victim@example.com", "password": "squatter password"})).status,
        202
    );
    let squatter_mail = app.single_mail_to("victim@example.com");
    let squatter_link = token_in_link(&squatter_mail.text, "/verify-email");
    assert_eq!(
        app.post("/v1/signup", json!({"email": "victim@example.com", "password": "victim password"})).status,
        202
    );
    let mail = app.single_mail_to("victim@example.com");
    assert_eq!(mail.kind, MailKind::VerifyEmail);
    app.post("/v1/email/verify", json!({"token": squatter_link})).assert_error(400, "invalid_token");
    assert_eq!(app.post("/v1/email/verify", json!({"token": token_in_link(&mail.text, "/verify-email")})).status, 200);
    assert_eq!(
        app.post("/v1/login", json!({"email": "victim@example.com", "password": "victim password"})).status,
        200
    );
    app.post("/v1/login", json!({"email": "victim@example.com", "password": "squatter password"}))
        .assert_error(401, "invalid_credentials");
    assert_eq!(app.users_count("SELECT count(*) FROM users WHERE email = 'victim@example.com'"), 1);

    // Once verified, a sign-up changes nothing: the owner gets an "already registered" mail
    // with a reset link, and the password stays theirs.
    assert_eq!(
        app.post("/v1/signup", json!({"email": "victim@example.com", "password": "squatter password"})).status,
        202
    );
    let mail = app.single_mail_to("victim@example.com");
    assert_eq!(mail.kind, MailKind::AlreadyRegistered);
    assert!(mail.text.contains("/reset-password?token="));
    app.post("/v1/login", json!({"email": "victim@example.com", "password": "squatter password"}))
        .assert_error(401, "invalid_credentials");
}

#[test]
fn a_later_sign_up_to_an_unverified_address_ends_what_the_earlier_one_started() {
    // The squatter's short code dies with his link when the mailbox owner signs up.
    let app = App::new();
    app.post("/v1/signup", json!({"email": "early@example.com", "password": "squatter password"}));
    let squatter_code = crate::abuse::code_in(&app.single_mail_to("early@example.com").text);
    app.post("/v1/signup", json!({"email": "early@example.com", "password": "owner password"}));
    let owner_code = crate::abuse::code_in(&app.single_mail_to("early@example.com").text);
    if squatter_code != owner_code {
        app.post("/v1/email/verify", json!({"email": "early@example.com", "code": squatter_code}))
            .assert_error(400, "invalid_token");
    }
    assert_eq!(app.post("/v1/email/verify", json!({"email": "early@example.com", "code": owner_code})).status, 200);
    assert_eq!(app.post("/v1/login", json!({"email": "early@example.com", "password": "owner password"})).status, 200);
}

#[test]
fn where_unverified_accounts_sign_in_a_sign_up_never_replaces_one() {
    // With REQUIRE_EMAIL_VERIFICATION=false an unverified account is a live account: a later
    // sign-up must not take it over (its password, sessions and `sub` stay), the owner gets an
    // "already registered" mail instead, and the cron does not delete it.
    let app = App::with_config(test_config(&[("REQUIRE_EMAIL_VERIFICATION", "false")]));
    app.post("/v1/signup", json!({"email": "live@example.com", "password": "first password"}));
    app.take_mails();
    let session = app.post("/v1/login", json!({"email": "live@example.com", "password": "first password"}));
    assert_eq!(session.status, 200);
    app.post("/v1/signup", json!({"email": "live@example.com", "password": "stranger password"}));
    assert_eq!(app.single_mail_to("live@example.com").kind, MailKind::AlreadyRegistered);
    app.post("/v1/login", json!({"email": "live@example.com", "password": "stranger password"}))
        .assert_error(401, "invalid_credentials");
    assert_eq!(app.post("/v1/login", json!({"email": "live@example.com", "password": "first password"})).status, 200);
    let refresh = session.json["refresh_token"].as_str().unwrap();
    let refreshed = app.request(
        "POST",
        "/oauth/token",
        Some("application/x-www-form-urlencoded"),
        format!("grant_type=refresh_token&refresh_token={refresh}").as_bytes(),
    );
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    app.advance(30 * 86_400);
    let purged = app.purge(None);
    assert_eq!(purged.unverified_accounts, 0);
    assert_eq!(app.users_count("SELECT count(*) FROM users WHERE email = 'live@example.com'"), 1);
}

#[test]
fn one_time_tokens_expire() {
    let app = App::new();
    app.post("/v1/signup", json!({"email": "late@example.com", "password": PASSWORD}));
    let verify_token = token_in_link(&app.single_mail_to("late@example.com").text, "/verify-email");
    app.advance(24 * 3600);
    app.post("/v1/email/verify", json!({"token": verify_token})).assert_error(400, "invalid_token");

    // A resend gives a fresh link that works, just before its own expiry.
    app.post("/v1/email/resend", json!({"email": "late@example.com"}));
    let verify_token = token_in_link(&app.single_mail_to("late@example.com").text, "/verify-email");
    app.advance(24 * 3600 - 1);
    assert_eq!(app.post("/v1/email/verify", json!({"token": verify_token})).status, 200);

    app.post("/v1/password/forgot", json!({"email": "late@example.com"}));
    let reset_token = token_in_link(&app.single_mail_to("late@example.com").text, "/reset-password");
    app.advance(3600);
    app.post("/v1/password/reset", json!({"token": reset_token, "password": "new passphrase"}))
        .assert_error(400, "invalid_token");
    app.post("/v1/password/forgot", json!({"email": "late@example.com"}));
    let reset_token = token_in_link(&app.single_mail_to("late@example.com").text, "/reset-password");
    app.advance(3599);
    assert_eq!(app.post("/v1/password/reset", json!({"token": reset_token, "password": "new passphrase"})).status, 200);
}

#[test]
fn a_newer_reset_token_voids_older_ones() {
    let app = App::new();
    app.verified_account("twice@example.com", PASSWORD);
    app.post("/v1/password/forgot", json!({"email": "twice@example.com"}));
    let first = token_in_link(&app.single_mail_to("twice@example.com").text, "/reset-password");
    app.post("/v1/password/forgot", json!({"email": "twice@example.com"}));
    let second = token_in_link(&app.single_mail_to("twice@example.com").text, "/reset-password");
    assert_ne!(first, second);
    app.post("/v1/password/reset", json!({"token": first, "password": "new passphrase"}))
        .assert_error(400, "invalid_token");
    assert_eq!(app.post("/v1/password/reset", json!({"token": second, "password": "new passphrase"})).status, 200);
}

#[test]
fn tokens_are_bound_to_their_purpose() {
    let app = App::new();
    app.post("/v1/signup", json!({"email": "mixed@example.com", "password": PASSWORD}));
    let verify_token = token_in_link(&app.single_mail_to("mixed@example.com").text, "/verify-email");
    app.post("/v1/password/reset", json!({"token": verify_token, "password": "new passphrase"}))
        .assert_error(400, "invalid_token");
    app.post("/v1/password/forgot", json!({"email": "mixed@example.com"}));
    let reset_token = token_in_link(&app.single_mail_to("mixed@example.com").text, "/reset-password");
    app.post("/v1/email/verify", json!({"token": reset_token})).assert_error(400, "invalid_token");
    // Both are still good for their own purpose.
    assert_eq!(app.post("/v1/email/verify", json!({"token": verify_token})).status, 200);
    assert_eq!(app.post("/v1/password/reset", json!({"token": reset_token, "password": "new passphrase"})).status, 200);
}

#[test]
fn resend_only_mails_unverified_accounts() {
    let app = App::new();
    app.verified_account("done@example.com", PASSWORD);
    assert_eq!(app.post("/v1/email/resend", json!({"email": "done@example.com"})).status, 202);
    assert_eq!(app.post("/v1/email/resend", json!({"email": "ghost@example.com"})).status, 202);
    assert!(app.take_mails().is_empty());
}

#[test]
fn passwords_and_emails_are_normalised() {
    let app = App::new();
    // "é" composed at sign-up, decomposed at login; the email in another case and NFD form.
    app.post("/v1/signup", json!({"email": "Jose\u{301}@Example.com", "password": "caf\u{e9} au lait"}));
    let token = token_in_link(&app.single_mail_to("jos\u{e9}@example.com").text, "/verify-email");
    app.post("/v1/email/verify", json!({"token": token}));
    let login = app.post("/v1/login", json!({"email": " JOS\u{c9}@EXAMPLE.COM", "password": "cafe\u{301} au lait"}));
    assert_eq!(login.status, 200, "{}", login.text());
}

#[test]
fn login_without_verification_when_configured() {
    let app = App::with_config(test_config(&[("REQUIRE_EMAIL_VERIFICATION", "false")]));
    app.post("/v1/signup", json!({"email": "quick@example.com", "password": PASSWORD}));
    let login = app.post("/v1/login", json!({"email": "quick@example.com", "password": PASSWORD}));
    assert_eq!(login.status, 200);
    let id = UntrustedToken::new(login.json["id_token"].as_str().unwrap()).unwrap();
    let claims = id.deserialize_claims_unchecked::<IdTokenClaims>().unwrap();
    assert_eq!(claims.custom.email_verified, Some(false));
}

#[test]
fn eddsa_when_configured() {
    let app = App::with_config(test_config(&[("SIGNING_ALG", "EdDSA")]));
    app.verified_account("ed@example.com", PASSWORD);
    let login = app.post("/v1/login", json!({"email": "ed@example.com", "password": PASSWORD}));
    let jwks = app.get("/.well-known/jwks.json").json;
    // The EdDSA key, and the RS256 key edgeid signs with beside it.
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let eddsa = keys.iter().find(|key| key["alg"] == "EdDSA").unwrap();
    assert!(keys.iter().any(|key| key["alg"] == "RS256"));
    let key = ed25519_compact::PublicKey::try_from(&serde_json::from_value::<JsonWebKey<'_>>(eddsa.clone()).unwrap())
        .unwrap();
    let token = UntrustedToken::new(login.json["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(token.algorithm(), "EdDSA");
    jwt_compact::alg::Ed25519.validator::<AccessTokenClaims>(&key).validate(&token).unwrap();
    let discovery = app.get("/.well-known/openid-configuration").json;
    assert_eq!(discovery["id_token_signing_alg_values_supported"], json!(["EdDSA", "RS256"]));
}

/// (method, path, content type, body) → (status, error code)
#[test]
fn bad_input_gets_the_contract_error() {
    let app = App::new();
    app.verified_account("taken@example.com", PASSWORD);
    let json = Some("application/json");
    let form = Some("application/x-www-form-urlencoded");
    let big = format!("{{\"email\": \"{}\"}}", "a".repeat(16 * 1024));
    let long_email = format!("{}@{}.com", "a".repeat(64), "b".repeat(190));
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("GET", "/nowhere", None, vec![], 404, "not_found"),
        ("GET", "/v1/signup", None, vec![], 405, "method_not_allowed"),
        ("DELETE", "/.well-known/jwks.json", None, vec![], 405, "method_not_allowed"),
        ("POST", "/v1/signup", json, big.into_bytes(), 413, "payload_too_large"),
        ("POST", "/v1/signup", None, b"{}".to_vec(), 415, "unsupported_media_type"),
        ("POST", "/v1/signup", Some("text/plain"), b"{}".to_vec(), 415, "unsupported_media_type"),
        (
            "POST",
            "/v1/signup",
            Some("multipart/form-data; boundary=x"),
            b"--x--".to_vec(),
            415,
            "unsupported_media_type",
        ),
        ("POST", "/v1/signup", json, b"{\"email\": ".to_vec(), 400, "invalid_request"),
        ("POST", "/v1/signup", json, b"".to_vec(), 400, "invalid_request"),
        ("POST", "/v1/signup", json, b"[1, 2]".to_vec(), 400, "invalid_request"),
        ("POST", "/v1/signup", json, b"\"text\"".to_vec(), 400, "invalid_request"),
        ("POST", "/v1/signup", json, b"{\"email\": 5, \"password\": \"long enough\"}".to_vec(), 400, "invalid_request"),
        ("POST", "/v1/signup", json, b"{\"email\": \"new@example.com\"}".to_vec(), 400, "invalid_request"),
        (
            "POST",
            "/v1/signup",
            json,
            b"{\"email\": \"not-an-email\", \"password\": \"long enough\"}".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/signup",
            json,
            format!("{{\"email\": \"{long_email}\", \"password\": \"long enough\"}}").into_bytes(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/signup",
            json,
            b"{\"email\": \"a@example.com\\r\\nBcc: x@y.z\", \"password\": \"long enough\"}".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/signup",
            json,
            b"{\"email\": \"new@example.com\", \"password\": \"short\"}".to_vec(),
            400,
            "weak_password",
        ),
        (
            "POST",
            "/v1/signup",
            json,
            format!("{{\"email\": \"new@example.com\", \"password\": \"{}\"}}", "p".repeat(257)).into_bytes(),
            400,
            "weak_password",
        ),
        ("POST", "/v1/signup", form, b"email=new%40example.com&password=short".to_vec(), 400, "weak_password"),
        (
            "POST",
            "/v1/signup",
            form,
            b"email=a%40example.com&email=b%40example.com&password=long+enough".to_vec(),
            400,
            "invalid_request",
        ),
        ("POST", "/v1/signup", form, b"email=%FF%FE&password=long+enough".to_vec(), 400, "invalid_request"),
        (
            "POST",
            "/v1/login",
            json,
            b"{\"email\": \"taken@example.com\", \"password\": null}".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/login",
            json,
            b"{\"email\": \"taken@example.com\", \"password\": [\"x\"]}".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/login",
            json,
            b"{\"email\": \"taken@example\", \"password\": \"wrong password\"}".to_vec(),
            401,
            "invalid_credentials",
        ),
        ("POST", "/v1/email/verify", json, b"{}".to_vec(), 400, "invalid_request"),
        ("POST", "/v1/email/verify", json, b"{\"token\": \"\"}".to_vec(), 400, "invalid_token"),
        ("POST", "/v1/email/verify", json, b"{\"token\": \"../../etc/passwd\"}".to_vec(), 400, "invalid_token"),
        (
            "POST",
            "/v1/email/verify",
            json,
            format!("{{\"token\": \"000{}\"}}", "A".repeat(43)).into_bytes(),
            400,
            "invalid_token",
        ),
        (
            "POST",
            "/v1/password/reset",
            json,
            format!("{{\"token\": \"000{}\", \"password\": \"new passphrase\"}}", "A".repeat(43)).into_bytes(),
            400,
            "invalid_token",
        ),
        (
            "POST",
            "/v1/password/reset",
            json,
            b"{\"token\": \"x\", \"password\": \"new passphrase\", \"password_confirmation\": \"other\"}".to_vec(),
            400,
            "invalid_request",
        ),
        ("POST", "/v1/password/forgot", json, b"{\"email\": \"\"}".to_vec(), 400, "invalid_request"),
        ("POST", "/v1/email/resend", json, b"{\"email\": \"\\u0000@example.com\"}".to_vec(), 400, "invalid_request"),
    ];
    for (method, path, content_type, body, status, code) in cases {
        let reply = app.request(method, path, content_type, &body);
        assert_eq!(
            (reply.status, reply.json["error"].as_str()),
            (status, Some(code)),
            "{method} {path} {}",
            String::from_utf8_lossy(&body[..body.len().min(120)])
        );
        reply.assert_error(status, code);
    }
    // Nothing half-written: still exactly one account, and no mail.
    assert_eq!(app.users_count("SELECT count(*) FROM users"), 1);
    assert!(app.take_mails().is_empty());
    let not_allowed = app.request("GET", "/v1/signup", None, b"");
    assert_eq!(not_allowed.response.header("allow"), Some("POST"));
}

#[test]
fn a_broken_store_is_a_server_error_without_details() {
    let app = App::new();
    app.break_databases(true);
    for reply in [app.post("/v1/login", json!({"email": "x@example.com", "password": PASSWORD})), app.get("/healthz")] {
        reply.assert_error(500, "server_error");
        assert!(!reply.text().contains("disk"), "{}", reply.text());
    }
    // A sign-up asks the address's shard whether it serves the bucket before it answers (the
    // same question for every address of the bucket): a broken store is a 500, and nothing is
    // left to fail after a 202.
    let signup = app.post("/v1/signup", json!({"email": "x@example.com", "password": PASSWORD}));
    signup.assert_error(500, "server_error");
    assert!(app.deferred_failures.borrow().is_empty());
    assert!(app.take_mails().is_empty());
    app.break_databases(false);
    assert_eq!(app.get("/healthz").json, json!({"status": "ok"}));
    // Only the user shards broken: `DB` answers, the account's shard does not.
    app.user_shards().for_each(|shard| shard.broken.set(true));
    let login = app.post("/v1/login", json!({"email": "x@example.com", "password": PASSWORD}));
    login.assert_error(500, "server_error");
    assert!(!login.text().contains("disk"), "{}", login.text());
}

#[test]
fn discovery_and_jwks_are_cacheable_and_public() {
    let app = App::new();
    let discovery = app.get("/.well-known/openid-configuration");
    assert_eq!(discovery.status, 200);
    for field in [
        "issuer",
        "jwks_uri",
        "token_endpoint",
        "userinfo_endpoint",
        "revocation_endpoint",
        "response_types_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
        "grant_types_supported",
        "scopes_supported",
        "claims_supported",
        "token_endpoint_auth_methods_supported",
    ] {
        assert!(!discovery.json[field].is_null(), "{field}");
    }
    assert_eq!(discovery.json["issuer"], "https://id.example.test");
    assert_eq!(discovery.json["jwks_uri"], "https://id.example.test/.well-known/jwks.json");
    assert_eq!(discovery.json["id_token_signing_alg_values_supported"], json!(["ES256", "RS256"]));
    assert_eq!(discovery.json["code_challenge_methods_supported"], json!(["S256"]));

    let jwks = app.get("/.well-known/jwks.json");
    assert_eq!(jwks.status, 200);
    let keys = jwks.json["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "an ES256 key and the RS256 key beside it");
    let es256 = keys.iter().find(|key| key["alg"] == "ES256").unwrap();
    for member in ["kid", "kty", "alg", "use", "crv", "x", "y"] {
        assert!(es256.get(member).is_some(), "{member}");
    }
    let rs256 = keys.iter().find(|key| key["alg"] == "RS256").unwrap();
    for member in ["kid", "kty", "alg", "use", "n", "e"] {
        assert!(rs256.get(member).is_some(), "{member}");
    }
    for key in keys {
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(key.get(private).is_none(), "{private}");
        }
        assert_eq!(key["use"], "sig");
    }
    assert!(jwks.response.header("cache-control").unwrap().starts_with("public, max-age="));
    assert_eq!(jwks.response.header("access-control-allow-origin"), Some("*"));

    let etag = jwks.response.header("etag").unwrap().to_owned();
    let mut request = edgeid::api::ApiRequest {
        method: "GET".into(),
        path: "/.well-known/jwks.json".into(),
        headers: vec![("If-None-Match".into(), etag.clone())],
        ..Default::default()
    };
    let revalidated = app.send(request.clone());
    assert_eq!((revalidated.status, revalidated.response.body.len()), (304, 0));
    request.headers = vec![("If-None-Match".into(), "\"something-else\"".into())];
    assert_eq!(app.send(request).status, 200);

    let security_txt = app.get("/.well-known/security.txt");
    assert_eq!(security_txt.status, 200);
    assert!(security_txt.text().contains("Contact: "));
    assert!(security_txt.text().contains("Expires: "));
}

#[test]
fn pages_escape_what_they_echo_and_need_a_token() {
    let app = App::new();
    for path in ["/reset-password", "/reset-password?token=", "/reset-password?other=1"] {
        let page = app.get(path);
        assert_eq!(page.status, 400, "{path}");
        assert!(page.text().contains("incomplete"));
    }
    // Without a token, the verify page asks for the code from the mail instead.
    for path in ["/verify-email", "/verify-email?token="] {
        let page = app.get(path);
        assert_eq!(page.status, 200, "{path}");
        assert!(page.text().contains("autocomplete=\"one-time-code\""));
    }
    // A reset link that is not live says so, echoing nothing; the verify page echoes its token
    // into the form, escaped.
    let page = app.get("/reset-password?token=%22%3E%3Cscript%3Ealert(1)%3C/script%3E");
    assert_eq!(page.status, 400);
    assert!(!page.text().contains("<script>") && !page.text().contains("script&gt;"), "{}", page.text());
    let page = app.get("/verify-email?token=%22%3E%3Cscript%3Ealert(1)%3C/script%3E");
    assert!(!page.text().contains("<script>"), "{}", page.text());
    assert!(page.text().contains("&quot;&gt;&lt;script&gt;"));
    let csp = page.response.header("content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'none'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(page.response.header("referrer-policy"), Some("no-referrer"));
    // HEAD works for pages and documents, without a body.
    let head = app.request("HEAD", "/.well-known/jwks.json", None, b"");
    assert_eq!((head.status, head.response.body.len()), (200, 0));
}

#[test]
fn resend_requests_have_the_documented_shape() {
    let app = App::new();
    app.post("/v1/signup", json!({"email": "shape@example.com", "password": PASSWORD}));
    let mail = app.single_mail_to("shape@example.com");
    let request = provider_request(&app.config.mail, &mail).unwrap();
    assert_eq!((request.method, request.url.as_str()), ("POST", "https://mail.example.test/emails"));
    let header = |name: &str| request.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    assert_eq!(header("Authorization"), Some("Bearer re_test_key"));
    assert_eq!(header("Content-Type"), Some("application/json"));
    assert_eq!(header("Idempotency-Key"), Some(mail.idempotency_key.as_str()));
    assert!(!mail.idempotency_key.is_empty());
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["from"], "edgeid <no-reply@example.test>");
    assert_eq!(body["to"], json!(["shape@example.com"]));
    assert_eq!(body["subject"], "Confirm your email for edgeid");
    assert!(body["text"].as_str().unwrap().contains("https://app.example.test/verify-email?token="));
    assert!(body["html"].as_str().unwrap().contains("<a href=\"https://app.example.test/verify-email?token="));

    let log_config = test_config(&[
        ("MAIL_PROVIDER", "log"),
        ("PUBLIC_URL", "http://127.0.0.1:8787"),
        ("ISSUER", "http://127.0.0.1:8787"),
    ]);
    assert!(provider_request(&log_config.mail, &mail).is_none());
}

/// Addresses stored before domains were mapped to A-labels are brought into that form by the
/// cron, so their owners still sign in (with any spelling) and a new sign-up finds them. Such
/// addresses are a single-database installation's (v1 stored them): one shard.
#[test]
fn addresses_stored_before_idna_mapping_are_normalised() {
    let app = App::with_shards(test_config(&[]), 1);
    app.verified_account("anna@example.com", PASSWORD);
    app.verified_account("bob@example.com", PASSWORD);
    app.verified_account("cyril@example.com", PASSWORD);
    // As v1 stored them: the domain in U-labels; one whose normal form another account has;
    // one whose domain mixes scripts (refused today).
    app.users_execute("UPDATE users SET email = 'anna@bücher.example' WHERE email = 'anna@example.com'");
    app.users_execute("INSERT INTO users (id, email, password_hash, password_changed_at, created_at, updated_at) SELECT 'twin', 'bob@xn--bcher-kva.example', password_hash, 0, 0, 0 FROM users WHERE email = 'bob@example.com'");
    app.users_execute("UPDATE users SET email = 'bob@bücher.example' WHERE email = 'bob@example.com'");
    app.users_execute("UPDATE users SET email = 'cyril@\u{430}pple.com' WHERE email = 'cyril@example.com'");
    app.post("/v1/login", json!({"email": "anna@bücher.example", "password": PASSWORD}))
        .assert_error(401, "invalid_credentials");
    let outbox = edgeid::flows::Outbox::default();
    let ctx = app.context(&outbox);
    let report = pollster::block_on(edgeid::flows::normalise_stored_addresses(&ctx)).unwrap();
    assert_eq!(report, edgeid::flows::Normalised { rewritten: 1, collisions: 1, refused: 1 });
    for spelling in ["anna@bücher.example", "anna@xn--bcher-kva.example", "anna@BU\u{308}CHER.example"] {
        assert_eq!(app.post("/v1/login", json!({"email": spelling, "password": PASSWORD})).status, 200, "{spelling}");
    }
    assert_eq!(pollster::block_on(edgeid::flows::normalise_stored_addresses(&ctx)).unwrap().rewritten, 0);
    let bucket =
        |email: &str| edgeid::domain::shard::UserBucket::of_email(&edgeid::domain::email::Email::parse(email).unwrap());
    assert_eq!(
        app.users_count("SELECT bucket FROM users WHERE email = 'anna@xn--bcher-kva.example'"),
        i64::from(bucket("anna@bücher.example").index()),
        "filed under its new form's bucket"
    );
}

/// With shards, an address whose normal form hashes to another bucket would have to move: the
/// cron leaves it as it is and says so, rather than file it where no login looks.
#[test]
fn with_shards_an_address_whose_normal_form_is_in_another_bucket_is_kept() {
    let app = App::new();
    app.verified_account("anna@example.com", PASSWORD);
    app.users_execute("UPDATE users SET email = 'anna@bücher.example' WHERE email = 'anna@example.com'");
    let outbox = edgeid::flows::Outbox::default();
    let report = pollster::block_on(edgeid::flows::normalise_stored_addresses(&app.context(&outbox))).unwrap();
    assert_eq!(report, edgeid::flows::Normalised { rewritten: 0, collisions: 0, refused: 1 });
    assert_eq!(app.users_count("SELECT count(*) FROM users WHERE email = 'anna@bücher.example'"), 1);
}
