//! The downstream verifier (`edgeid::verifier`) against the API in process: JWKS caching by
//! `max-age`, refetch on an unknown `kid` at most once per interval, stale keys on an outage,
//! and the same refusals as the issuer.

use std::cell::Cell;

use edgeid::ports::{HttpClient, HttpError, OutboundRequest, OutboundResponse};
use edgeid::verifier::{Verifier, VerifierConfig, VerifyError};
use serde_json::{json, Value};

use crate::support::App;

const PASSWORD: &str = "correct horse battery";

/// Serves the verifier's GETs from the in-process API, or fails while `down` is set.
struct InProcess<'a> {
    app: &'a App,
    down: Cell<bool>,
}

impl HttpClient for InProcess<'_> {
    async fn send(&self, request: OutboundRequest) -> Result<OutboundResponse, HttpError> {
        if self.down.get() {
            return Err(HttpError("connection refused".to_owned()));
        }
        let path = request.url.strip_prefix("https://id.example.test").unwrap();
        let reply = self.app.get(path);
        Ok(OutboundResponse {
            status: reply.status,
            headers: reply.response.headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.clone())).collect(),
            body: reply.text(),
        })
    }
}

fn login(app: &App) -> String {
    let reply = app.post("/v1/login", json!({"email": "down@example.com", "password": PASSWORD}));
    reply.json["access_token"].as_str().unwrap().to_owned()
}

#[test]
fn verifies_locally_caching_the_jwks() {
    let app = App::new();
    app.verified_account("down@example.com", PASSWORD);
    let token = login(&app);
    let http = InProcess { app: &app, down: Cell::new(false) };
    let verifier = Verifier::new(VerifierConfig::for_issuer("https://id.example.test/", "edgeid-tests"), http);
    let verify = |token: &str| pollster::block_on(verifier.verify_access_token(token, app.now.get()));

    let claims = verify(&token).unwrap();
    assert_eq!(claims.scope, "openid email offline_access");
    for _ in 0..10 {
        verify(&token).unwrap();
    }
    assert_eq!(verifier.jwks_fetches(), 1, "one fetch serves every token while fresh");

    // Made-up kids cause at most one refetch per interval.
    let (header, rest) = token.split_once('.').unwrap();
    let mut forged: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap();
    forged["kid"] = json!("made-up");
    let forged = format!(
        "{}.{rest}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, forged.to_string())
    );
    for _ in 0..5 {
        assert!(matches!(verify(&forged), Err(VerifyError::Rejected(_))));
    }
    assert_eq!(verifier.jwks_fetches(), 1);
    app.advance(61);
    assert!(verify(&forged).is_err());
    assert_eq!(verifier.jwks_fetches(), 2);
    assert!(verify(&forged).is_err());
    assert_eq!(verifier.jwks_fetches(), 2);

    // Past max-age (300 s) it fetches again; if the issuer is down, the stale keys still work.
    app.advance(300);
    let fresh_token = login(&app);
    verifier.http().down.set(true);
    verify(&fresh_token).unwrap();
    assert_eq!(verifier.jwks_fetches(), 3);
    verifier.http().down.set(false);
    // Another audience or issuer is refused as the issuer itself would.
    let strict = Verifier::new(
        VerifierConfig::for_issuer("https://id.example.test", "another-app"),
        InProcess { app: &app, down: Cell::new(false) },
    );
    assert!(pollster::block_on(strict.verify_access_token(&fresh_token, app.now.get())).is_err());
}

#[test]
fn a_new_key_is_fetched_when_a_token_names_it() {
    let app = App::new();
    app.verified_account("down@example.com", PASSWORD);
    let es256 = login(&app);
    let http = InProcess { app: &app, down: Cell::new(false) };
    let verifier = Verifier::new(VerifierConfig::for_issuer("https://id.example.test", "edgeid-tests"), http);
    let verify = |token: &str| pollster::block_on(verifier.verify_access_token(token, app.now.get()));
    verify(&es256).unwrap();
    assert_eq!(verifier.jwks_fetches(), 1);

    // The issuer gets a new key that signs at once, without the publication lead (an operator
    // activating a key by hand): the verifier's cached JWKS, still fresh, lacks it.
    app.advance(1);
    assert!(app.maintain_keys(true).published.is_some());
    app.db.execute(&format!(
        "UPDATE signing_keys SET activates_at = {now} WHERE retired_at IS NULL",
        now = app.now.get().timestamp()
    ));
    app.advance(61);
    let rotated = login(&app);
    assert_ne!(rotated.split('.').next(), es256.split('.').next(), "signed with the new kid");
    // Within max-age, yet the kid is unknown: it refetches, once.
    verify(&rotated).unwrap();
    assert_eq!(verifier.jwks_fetches(), 2);
    verify(&es256).unwrap();
    verify(&rotated).unwrap();
    assert_eq!(verifier.jwks_fetches(), 2);
}
