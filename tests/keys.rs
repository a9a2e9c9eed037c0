//! Signing keys over simulated time: race-free bootstrap, publication before use, retirement,
//! removal after the last token expires, on-demand rotation and a change of algorithm.

use std::future::Future;
use std::task::{Context, Poll, Waker};

use edgeid::api::ApiRequest;
use edgeid::keyring::Keyring;
use serde_json::{json, Value};

use crate::support::{test_config, App};

const PASSWORD: &str = "correct horse battery";
const DAY: i64 = 86_400;

fn kids(app: &App) -> Vec<String> {
    let jwks = app.get("/.well-known/jwks.json").json;
    jwks["keys"].as_array().unwrap().iter().map(|key| key["kid"].as_str().unwrap().to_owned()).collect()
}

fn login(app: &App, email: &str) -> Value {
    let reply = app.post("/v1/login", json!({"email": email, "password": PASSWORD}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json
}

fn kid_of(token: &Value) -> String {
    let token = jwt_compact::UntrustedToken::new(token["access_token"].as_str().unwrap()).unwrap();
    token.header().key_id.clone().unwrap()
}

fn userinfo_status(app: &App, token: &Value) -> u16 {
    app.send(ApiRequest {
        method: "GET".into(),
        path: "/userinfo".into(),
        headers: vec![("Authorization".into(), format!("Bearer {}", token["access_token"].as_str().unwrap()))],
        ..Default::default()
    })
    .status
}

#[test]
fn the_first_key_is_bootstrapped_exactly_once() {
    let app = App::new();
    assert_eq!(app.db.count("SELECT count(*) FROM signing_keys"), 0);
    assert_eq!(app.get("/healthz").status, 200);
    assert_eq!(app.db.count("SELECT count(*) FROM signing_keys"), 1);
    // Other isolates (their own keyrings, empty caches) find it, or would add the same row.
    for _ in 0..5 {
        let isolate = Keyring::new(60);
        let keys = pollster::block_on(isolate.signing_keys(&app.db, &app.config, &app.crypto, app.now.get())).unwrap();
        assert_eq!(keys.active_kid(), kids(&app)[0]);
    }
    app.db.execute("DELETE FROM signing_keys");
    let first = kids(&app);
    app.db.execute("DELETE FROM signing_keys");
    assert_eq!(kids(&app), first, "the bootstrap key is a function of KEY_ENCRYPTION_KEY");
    assert_eq!(app.db.count("SELECT count(*) FROM signing_keys"), 1);
}

/// RS256 keys cannot be derived, so racing first requests each generate one and exactly one
/// goes in, even when their instants straddle a second and the later one inserts first.
#[test]
fn an_rs256_bootstrap_is_exactly_once_across_a_second_boundary() {
    let app = App::with_config(test_config(&[("SIGNING_ALG", "RS256")]));
    app.advance(1);
    assert_eq!(app.get("/healthz").status, 200);
    let winner = app.db.text("SELECT kid FROM signing_keys");
    // A request that started a second earlier (its own isolate) bootstraps after that.
    app.advance(-1);
    let isolate = Keyring::new(60);
    let keys = pollster::block_on(isolate.signing_keys(&app.db, &app.config, &app.crypto, app.now.get())).unwrap();
    assert_eq!(keys.active_kid(), winner, "it signs with the key that won");
    assert_eq!(app.db.count("SELECT count(*) FROM signing_keys"), 1);
    assert_eq!(kids(&app), vec![winner]);
}

/// A database whose first batch takes its snapshot at once but answers only when opened: a
/// read that started first and finishes last.
struct SlowFirstRead<'a> {
    inner: &'a crate::support::Sqlite,
    answered: std::cell::Cell<bool>,
    open: std::cell::Cell<bool>,
}

impl edgeid::ports::Database for SlowFirstRead<'_> {
    async fn batch(
        &self,
        statements: Vec<edgeid::ports::Statement>,
    ) -> Result<Vec<edgeid::ports::StatementOutcome>, edgeid::ports::DatabaseError> {
        let outcome = self.inner.batch(statements).await;
        if !self.answered.replace(true) {
            std::future::poll_fn(|_| if self.open.get() { Poll::Ready(()) } else { Poll::Pending }).await;
        }
        outcome
    }
}

/// Of two overlapping reads of the key table, the one issued later stays cached, whichever
/// answers last: an isolate's JWKS never goes back to an older table.
#[test]
fn a_slow_earlier_read_never_replaces_a_newer_one() {
    let app = App::new();
    app.get("/healthz");
    let keyring = Keyring::new(60);
    let slow = SlowFirstRead { inner: &app.db, answered: Default::default(), open: Default::default() };
    let mut context = Context::from_waker(Waker::noop());
    let started = app.now.get();
    let mut first = std::pin::pin!(keyring.signing_keys(&slow, &app.config, &app.crypto, started));
    assert!(first.as_mut().poll(&mut context).is_pending(), "the first read has its snapshot: one key");

    // A key is published; a request a second later reads the table with it and caches it.
    app.maintain_keys(true);
    app.advance(1);
    let second = pollster::block_on(keyring.signing_keys(&app.db, &app.config, &app.crypto, app.now.get())).unwrap();
    assert_eq!(second.jwks_json().matches("\"kid\"").count(), 2);

    slow.open.set(true);
    let Poll::Ready(first) = first.as_mut().poll(&mut context) else { panic!("the first read was answered") };
    assert_eq!(first.unwrap().jwks_json().matches("\"kid\"").count(), 2, "the newer read serves the older request");
    let third = pollster::block_on(keyring.signing_keys(&app.db, &app.config, &app.crypto, app.now.get())).unwrap();
    assert_eq!(third.jwks_json().matches("\"kid\"").count(), 2, "the cache still holds the newer read");
}

#[test]
fn private_keys_are_sealed_at_rest() {
    let app = App::new();
    app.get("/healthz");
    let stored = app.db.text("SELECT public_jwk || ' ' || private_sealed FROM signing_keys");
    let private = crate::support::bootstrap_p256_key(&app.config);
    let d = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, private.to_bytes());
    assert!(!stored.contains(&d), "the private scalar is stored in the clear");
    assert!(!stored.contains("\"d\""));
    // Deployed with another key-encryption key (new isolates, so a new keyring), the stored key
    // cannot be opened: a server error, nothing leaked.
    let mut app = app;
    app.config = test_config(&[("KEY_ENCRYPTION_KEY", "b3RoZXIta2V5LWVuY3J5cHRpb24ta2V5LW9mLTMyYiE")]);
    app.keyring = Keyring::new(60);
    app.verified_account("sealed@example.com", PASSWORD);
    let reply = app.post("/v1/login", json!({"email": "sealed@example.com", "password": PASSWORD}));
    reply.assert_error(500, "server_error");
}

#[test]
fn keys_rotate_publish_first_and_retire_after_their_tokens_expire() {
    let app = App::with_config(test_config(&[
        ("KEY_ROTATION_INTERVAL_SECONDS", &(30 * DAY).to_string()),
        ("KEY_PUBLICATION_LEAD_SECONDS", &DAY.to_string()),
    ]));
    app.verified_account("rotate@example.com", PASSWORD);
    let first_token = login(&app, "rotate@example.com");
    let first_kid = kid_of(&first_token);
    assert_eq!(kids(&app), vec![first_kid.clone()]);

    // Not due yet: nothing happens.
    app.advance(28 * DAY);
    assert_eq!(app.maintain_keys(false).published, None);
    // Due (30 days minus the one-day lead): the next key is published, not yet signing.
    app.advance(DAY + 1);
    let published = app.maintain_keys(false).published.expect("a key is published");
    let second_kid = published.0;
    assert_eq!(published.1, app.now.get().timestamp() + DAY);
    assert_eq!(kids(&app), [second_kid.clone(), first_kid.clone()]);
    assert_eq!(app.get("/.well-known/jwks.json").response.header("cache-control"), Some("public, max-age=300"));
    let before_switch = login(&app, "rotate@example.com");
    assert_eq!(kid_of(&before_switch), first_kid);
    // Running again while a key is pending publishes nothing more.
    assert_eq!(app.maintain_keys(false).published, None);

    // The lead passes: the new key signs; the old one still verifies what it signed.
    app.advance(DAY - 60);
    let last_of_first = login(&app, "rotate@example.com");
    assert_eq!(kid_of(&last_of_first), first_kid);
    app.advance(60);
    let after_switch = login(&app, "rotate@example.com");
    assert_eq!(kid_of(&after_switch), second_kid);
    assert_eq!(userinfo_status(&app, &last_of_first), 200);
    assert_eq!(kids(&app), [second_kid.clone(), first_kid.clone()]);

    // Once the last token the old key signed has expired (900 s + 30 s leeway), it is gone.
    app.advance(929);
    assert_eq!(kids(&app).len(), 2);
    assert_eq!(app.maintain_keys(false).removed, 0);
    app.advance(1);
    assert_eq!(kids(&app), vec![second_kid.clone()]);
    assert_eq!(app.maintain_keys(false).removed, 1);
    assert_eq!(app.db.count("SELECT count(*) FROM signing_keys"), 1);
    assert_eq!(userinfo_status(&app, &after_switch), 200);
}

#[test]
fn the_documents_say_until_when_they_stay_the_same() {
    const JWKS: &str = "/.well-known/jwks.json";
    const DISCOVERY: &str = "/.well-known/openid-configuration";
    let mut app = App::with_config(test_config(&[("KEY_PUBLICATION_LEAD_SECONDS", "200")]));
    let start = app.now.get().timestamp();
    // The tests' keyring caches nothing: nothing stays the same for any time.
    assert_eq!(app.get(JWKS).response.same_until_ms, None);

    // A read of the key table serves for a quarter of the lead (50 s, under the keyring's 60).
    app.keyring = Keyring::new(60);
    for path in [JWKS, DISCOVERY] {
        let reply = app.get(path);
        assert_eq!((reply.status, reply.response.same_until_ms), (200, Some((start + 50) * 1000)), "{path}");
    }
    // Only a full answer to a GET: not a HEAD, not a 304, and no other route.
    let etag = app.get(JWKS).response.header("etag").unwrap().to_owned();
    let revalidated = app.send(ApiRequest {
        method: "GET".into(),
        path: JWKS.into(),
        headers: vec![("If-None-Match".into(), etag)],
        ..Default::default()
    });
    assert_eq!((revalidated.status, revalidated.response.same_until_ms), (304, None));
    let head = app.send(ApiRequest { method: "HEAD".into(), path: JWKS.into(), ..Default::default() });
    assert_eq!((head.status, head.response.same_until_ms), (200, None));
    for path in ["/healthz", "/.well-known/security.txt", "/login"] {
        assert_eq!(app.get(path).response.same_until_ms, None, "{path}");
    }

    // A key published at +10 signs from +210. Read again at +200, the documents last until +210
    // (when the old key retires), not until the end of the read at +250.
    app.advance(10);
    assert_eq!(app.maintain_keys(true).published.unwrap().1, start + 210);
    app.advance(190);
    assert_eq!(app.get(JWKS).response.same_until_ms, Some((start + 210) * 1000));
    app.advance(10);
    assert_eq!(app.get(DISCOVERY).response.same_until_ms, Some((start + 250) * 1000));

    // A request that started a second before that read (a slow login) uses it too, rather
    // than reading again and moving the read back: the documents' instant stays.
    app.advance(-11);
    assert_eq!(kids(&app).len(), 2);
    app.advance(11);
    assert_eq!(app.get(JWKS).response.same_until_ms, Some((start + 250) * 1000));
}

#[test]
fn an_administrator_can_rotate_on_demand() {
    let app = App::new();
    app.get("/healthz");
    let first = kids(&app);
    let report = app.maintain_keys(true);
    let (kid, activates_at) = report.published.expect("forced rotation publishes");
    assert_eq!(activates_at, app.now.get().timestamp() + app.config.key_publication_lead_seconds);
    assert_eq!(kids(&app), [kid.clone(), first[0].clone()]);
    assert_eq!(app.maintain_keys(true).published, None, "one pending key at a time");
}

#[test]
fn changing_the_algorithm_keeps_old_tokens_verifiable() {
    let mut app = App::new();
    app.verified_account("alg@example.com", PASSWORD);
    let es256_token = login(&app, "alg@example.com");
    app.config = test_config(&[("SIGNING_ALG", "EdDSA")]);
    let eddsa_token = login(&app, "alg@example.com");
    let header = jwt_compact::UntrustedToken::new(eddsa_token["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(header.algorithm(), "EdDSA");
    assert_eq!(userinfo_status(&app, &es256_token), 200);
    assert_eq!(userinfo_status(&app, &eddsa_token), 200);
    let discovery = app.get("/.well-known/openid-configuration").json;
    assert_eq!(discovery["id_token_signing_alg_values_supported"], json!(["EdDSA", "ES256"]));
    app.advance(931);
    assert_eq!(
        app.get("/.well-known/openid-configuration").json["id_token_signing_alg_values_supported"],
        json!(["EdDSA"])
    );
}

#[test]
fn rs256_keys_sign_through_the_crypto_port_and_bootstrap_once() {
    let app = App::with_config(test_config(&[("SIGNING_ALG", "RS256")]));
    // Two isolates meet the empty table: each generates a key, one insert wins.
    for _ in 0..2 {
        let isolate = Keyring::new(60);
        pollster::block_on(isolate.signing_keys(&app.db, &app.config, &app.crypto, app.now.get())).unwrap();
    }
    assert_eq!(app.db.count("SELECT count(*) FROM signing_keys"), 1);

    app.verified_account("rsa@example.com", PASSWORD);
    let tokens = login(&app, "rsa@example.com");
    let jwks = app.get("/.well-known/jwks.json").json;
    let jwk = &jwks["keys"][0];
    assert_eq!((jwk["kty"].as_str(), jwk["alg"].as_str()), (Some("RSA"), Some("RS256")));
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(jwk.get(private).is_none(), "{private}");
    }
    let public: jwt_compact::jwk::JsonWebKey<'_> = serde_json::from_value(jwk.clone()).unwrap();
    let public = rsa::RsaPublicKey::try_from(&public).unwrap();
    for (name, typ) in [("access_token", "at+jwt"), ("id_token", "JWT")] {
        use jwt_compact::AlgorithmExt;
        let token = jwt_compact::UntrustedToken::new(tokens[name].as_str().unwrap()).unwrap();
        assert_eq!(token.algorithm(), "RS256");
        assert_eq!(token.header().token_type.as_deref(), Some(typ));
        assert_eq!(token.header().key_id.as_deref(), jwk["kid"].as_str());
        jwt_compact::alg::Rsa::rs256().validator::<Value>(&public).validate(&token).unwrap();
    }
    assert_eq!(userinfo_status(&app, &tokens), 200);
    let discovery = app.get("/.well-known/openid-configuration").json;
    assert_eq!(discovery["id_token_signing_alg_values_supported"], json!(["RS256"]));

    // Rotation generates the next RSA key the same way.
    let (next, _) = app.maintain_keys(true).published.unwrap();
    app.advance(app.config.key_publication_lead_seconds);
    assert_eq!(kid_of(&login(&app, "rsa@example.com")), next);
    assert_eq!(userinfo_status(&app, &tokens), 401, "the first token has long expired");
}
