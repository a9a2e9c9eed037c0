//! edgeid-verifier against the API in process: the JWKS and `Cache-Control` exactly as the API
//! serves them, real tokens, a rotation picked up through an unknown `kid`, and the refusals of
//! `/userinfo`. The cache policy itself (backoff, staleness, single flight) is tested in the
//! crate, with a fake issuer.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use edgeid::api::ApiRequest;
use edgeid_verifier::{
    Clock, FetchError, JwksFetcher, JwksResponse, TokenRejected, Verifier, VerifierConfig, VerifyError,
};
use serde_json::json;

use crate::support::App;

const PASSWORD: &str = "correct horse battery";

/// The API's answer to `GET /.well-known/jwks.json` at the instant the test last asked, served
/// to the verifier. (The in-process app is single-threaded; a fetcher must be `Send + Sync`.)
#[derive(Clone, Default)]
struct Issuer {
    answer: Arc<Mutex<Option<JwksResponse>>>,
    now: Arc<Mutex<Option<DateTime<Utc>>>>,
    requests: Arc<Mutex<usize>>,
}

impl Issuer {
    /// Takes the API's current JWKS answer and time.
    fn catch_up(&self, app: &App) {
        let reply = app.get("/.well-known/jwks.json");
        let cache_control = reply.response.header("cache-control").map(str::to_owned);
        *self.answer.lock().unwrap() = Some(JwksResponse { status: reply.status, cache_control, body: reply.text() });
        *self.now.lock().unwrap() = Some(app.now.get());
    }

    fn requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }
}

impl JwksFetcher for Issuer {
    async fn fetch(&self, url: &str) -> Result<JwksResponse, FetchError> {
        assert_eq!(url, "https://id.example.test/.well-known/jwks.json");
        *self.requests.lock().unwrap() += 1;
        self.answer.lock().unwrap().clone().ok_or_else(|| FetchError("not served yet".to_owned()))
    }
}

impl Clock for Issuer {
    fn now(&self) -> DateTime<Utc> {
        self.now.lock().unwrap().unwrap_or_default()
    }
}

fn login(app: &App) -> serde_json::Value {
    let reply = app.post("/v1/login", json!({"email": "down@example.com", "password": PASSWORD}));
    assert_eq!(reply.status, 200);
    reply.json
}

/// A verifier of the test API's access tokens, and `verify`, which first brings its issuer
/// (and its clock) up to the API's present.
fn verifier_of<'a>(app: &'a App, audience: &str) -> (Issuer, impl Fn(&str) -> Result<(), VerifyError> + 'a) {
    let issuer = Issuer::default();
    // A trailing slash on the issuer is tolerated.
    let config = VerifierConfig::for_issuer("https://id.example.test/", audience);
    let verifier = Verifier::with_clock(config, issuer.clone(), issuer.clone());
    let caught_up = issuer.clone();
    let verify = move |token: &str| {
        caught_up.catch_up(app);
        let claims = pollster::block_on(verifier.verify_access_token(token))?;
        assert_eq!(claims.scope, "openid email offline_access");
        Ok(())
    };
    (issuer, verify)
}

#[test]
fn verifies_the_api_tokens_caching_the_jwks_for_its_max_age() {
    let app = App::new();
    app.verified_account("down@example.com", PASSWORD);
    let tokens = login(&app);
    let access = tokens["access_token"].as_str().unwrap();
    let (issuer, verify) = verifier_of(&app, "edgeid-tests");
    for _ in 0..10 {
        verify(access).unwrap();
    }
    assert_eq!(issuer.requests(), 1, "one fetch serves every token while fresh");
    // The API's JWKS says max-age=300.
    app.advance(299);
    verify(access).unwrap();
    assert_eq!(issuer.requests(), 1);
    app.advance(1);
    verify(access).unwrap();
    assert_eq!(issuer.requests(), 2);

    // An ID token is not an access token; nor is a token for another audience.
    let refused = Err(VerifyError::Rejected(TokenRejected::WrongType("at+jwt".to_owned())));
    assert_eq!(verify(tokens["id_token"].as_str().unwrap()), refused);
    let (_, strict) = verifier_of(&app, "another-app");
    assert_eq!(
        strict(access),
        Err(VerifyError::Rejected(TokenRejected::Invalid("aud is not the configured audience".to_owned())))
    );
    // The token lives 900 s, and both tolerate 30 s of skew: `/userinfo` and the verifier
    // accept it and refuse it at the same instants.
    let userinfo = |token: &str| {
        let headers = vec![("Authorization".to_owned(), format!("Bearer {token}"))];
        app.send(ApiRequest { method: "GET".into(), path: "/userinfo".into(), headers, ..Default::default() }).status
    };
    app.advance(900 + 30 - 300);
    assert_eq!((userinfo(access), verify(access)), (200, Ok(())));
    app.advance(1);
    let expired = Err(VerifyError::Rejected(TokenRejected::Invalid("token has expired".to_owned())));
    assert_eq!((userinfo(access), verify(access)), (401, expired));
}

#[test]
fn a_new_key_is_fetched_when_a_token_names_it() {
    let app = App::new();
    app.verified_account("down@example.com", PASSWORD);
    let es256 = login(&app)["access_token"].as_str().unwrap().to_owned();
    let (issuer, verify) = verifier_of(&app, "edgeid-tests");
    verify(&es256).unwrap();
    assert_eq!(issuer.requests(), 1);

    // The issuer gets a new key that signs at once, without the publication lead (an operator
    // activating a key by hand): the verifier's cached JWKS, still fresh, lacks it.
    app.advance(1);
    assert!(!app.maintain_keys(true).published.is_empty());
    app.db.execute(&format!(
        "UPDATE signing_keys SET activates_at = {now} WHERE retired_at IS NULL",
        now = app.now.get().timestamp()
    ));
    app.advance(61);
    let rotated = login(&app)["access_token"].as_str().unwrap().to_owned();
    assert_ne!(rotated.split('.').next(), es256.split('.').next(), "signed with the new kid");
    // Within max-age, yet the kid is unknown: it refetches, once.
    verify(&rotated).unwrap();
    assert_eq!(issuer.requests(), 2);
    verify(&es256).unwrap();
    verify(&rotated).unwrap();
    assert_eq!(issuer.requests(), 2);
}
