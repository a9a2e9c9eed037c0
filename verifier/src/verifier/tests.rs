//! The cache policy with a fake issuer and a fake clock, and the refusals the verifier shares
//! with the issuer.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::max_age;
use crate::testing::{access_claims, block_on, jwks, verifier, FakeClock, FakeIssuer, TestKey, AUDIENCE};
use crate::{FetchError, JwksResponse, TokenRejected, Verifier, VerifyError};

const SECOND: Duration = Duration::from_secs(1);

/// An issuer serving one key with `max-age=300`, a clock at the start, a verifier, and a token.
struct Scene {
    key: TestKey,
    issuer: FakeIssuer,
    clock: FakeClock,
    verifier: Verifier,
    token: String,
}

impl Scene {
    fn new() -> Scene {
        Scene::with_cache_control(Some("public, max-age=300"))
    }

    fn with_cache_control(cache_control: Option<&str>) -> Scene {
        let key = TestKey::new("key-1", 7);
        let issuer = FakeIssuer::serving(jwks(&[&key]), cache_control);
        let clock = FakeClock::new();
        let verifier = verifier(&issuer, &clock);
        let token = key.access_token(clock.timestamp());
        Scene { key, issuer, clock, verifier, token }
    }

    fn verify(&self, token: &str) -> Result<crate::AccessTokenClaims, VerifyError> {
        block_on(self.verifier.verify_access_token(token))
    }

    /// The scene's token with another `kid`: what a rotation or a forger presents.
    fn naming(&self, kid: &str) -> String {
        let mut header = self.key.header();
        header["kid"] = json!(kid);
        self.key.sign(&header, &access_claims(self.clock.timestamp()))
    }

    fn requests(&self) -> usize {
        assert_eq!(self.verifier.jwks_fetches(), self.issuer.requests() as u64);
        self.issuer.requests()
    }
}

#[test]
fn keeps_the_jwks_for_its_max_age() {
    for (cache_control, fresh_for) in [
        (Some("public, max-age=300"), 300),
        (Some("max-age=60, must-revalidate"), 60),
        // No Cache-Control: the configured default of five minutes.
        (None, 300),
    ] {
        let scene = Scene::with_cache_control(cache_control);
        let claims = scene.verify(&scene.token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.aud.as_str()), ("user-1", AUDIENCE));
        scene.clock.advance(SECOND * (fresh_for - 1));
        for _ in 0..10 {
            scene.verify(&scene.token).unwrap();
        }
        assert_eq!(scene.requests(), 1, "{cache_control:?}: one fetch serves every token while fresh");
        scene.clock.advance(SECOND);
        scene.verify(&scene.token).unwrap();
        assert_eq!(scene.requests(), 2, "{cache_control:?}: fetched again once stale");
    }
    // no-store: every verification fetches.
    let scene = Scene::with_cache_control(Some("no-store"));
    for expected in 1..=3 {
        scene.verify(&scene.token).unwrap();
        assert_eq!(scene.requests(), expected);
    }
}

#[test]
fn reads_max_age() {
    for (header, expected) in [
        ("public, max-age=300", 300),
        ("max-age=60", 60),
        ("Public, Max-Age=\"120\"", 120),
        ("no-store", 0),
        ("public, max-age=300, no-cache", 0),
        ("public", 0),
        ("max-age=banana", 0),
    ] {
        assert_eq!(max_age(header), Duration::from_secs(expected), "{header}");
    }
}

#[test]
fn an_unknown_kid_refetches_at_most_once_per_interval() {
    let scene = Scene::new();
    scene.verify(&scene.token).unwrap();
    let forged = scene.naming("made-up");
    for _ in 0..5 {
        assert_eq!(scene.verify(&forged), Err(VerifyError::Rejected(TokenRejected::UnknownKey)));
    }
    assert_eq!(scene.requests(), 1, "within a minute of the last fetch, no refetch");
    scene.clock.advance(SECOND * 60);
    assert!(scene.verify(&forged).is_err());
    assert_eq!(scene.requests(), 2);
    assert!(scene.verify(&forged).is_err());
    assert_eq!(scene.requests(), 2);

    // A real rotation: the issuer publishes a key the cached JWKS lacks, and a token names it.
    let next = TestKey::new("key-2", 8);
    scene.issuer.serve(jwks(&[&scene.key, &next]), Some("public, max-age=300"));
    scene.clock.advance(SECOND * 60);
    let rotated = next.access_token(scene.clock.timestamp());
    scene.verify(&rotated).unwrap();
    assert_eq!(scene.requests(), 3);
    scene.verify(&scene.token).unwrap();
    scene.verify(&rotated).unwrap();
    assert_eq!(scene.requests(), 3);
}

#[test]
fn the_unknown_kid_limit_holds_while_fetches_fail() {
    let scene = Scene::new();
    scene.verify(&scene.token).unwrap();
    scene.issuer.go_down();
    let forged = scene.naming("made-up");
    scene.clock.advance(SECOND * 60);
    assert!(scene.verify(&forged).is_err());
    assert_eq!(scene.requests(), 2, "the interval passed: one attempt, which fails");
    // The backoff after that failure (1 s) is long over, the interval (60 s) is not.
    for _ in 0..10 {
        scene.clock.advance(SECOND * 5);
        assert_eq!(scene.verify(&forged), Err(VerifyError::Rejected(TokenRejected::UnknownKey)));
        // Known keys, still fresh, verify all along.
        scene.verify(&scene.token).unwrap();
    }
    assert_eq!(scene.requests(), 2, "a failed attempt counts for the interval");
    scene.clock.advance(SECOND * 10);
    assert!(scene.verify(&forged).is_err());
    assert_eq!(scene.requests(), 3);
}

#[test]
fn backs_off_exponentially_after_failures_and_starts_over_after_a_success() {
    let scene = Scene::new();
    scene.verify(&scene.token).unwrap();
    scene.issuer.go_down();
    scene.clock.advance(SECOND * 300);
    // Stale now: each verification would fetch, but after a failure none is tried for 1 s,
    // then 2 s, 4 s, … up to five minutes. Meanwhile the stale keys verify.
    scene.verify(&scene.token).unwrap();
    assert_eq!(scene.requests(), 1 + 1);
    let expected_pauses = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300];
    for (index, pause) in expected_pauses.into_iter().enumerate() {
        let attempts = scene.requests();
        scene.clock.advance(SECOND * pause - Duration::from_millis(1));
        scene.verify(&scene.token).unwrap();
        assert_eq!(scene.requests(), attempts, "failure {}: no fetch before {pause} s", index + 1);
        scene.clock.advance(Duration::from_millis(1));
        scene.verify(&scene.token).unwrap();
        assert_eq!(scene.requests(), attempts + 1, "failure {}: a fetch after {pause} s", index + 1);
    }

    // The issuer recovers: the next attempt succeeds, and a later failure pauses 1 s again.
    scene.issuer.serve(jwks(&[&scene.key]), Some("public, max-age=300"));
    scene.clock.advance(SECOND * 300);
    scene.verify(&scene.token).unwrap();
    let recovered = scene.requests();
    scene.verify(&scene.token).unwrap();
    assert_eq!(scene.requests(), recovered, "fresh again");
    scene.issuer.go_down();
    scene.clock.advance(SECOND * 300);
    scene.verify(&scene.token).unwrap();
    assert_eq!(scene.requests(), recovered + 1);
    scene.clock.advance(SECOND);
    scene.verify(&scene.token).unwrap();
    assert_eq!(scene.requests(), recovered + 2, "the backoff started over at 1 s");
}

#[test]
fn stale_keys_are_trusted_up_to_max_stale_and_refused_after() {
    let scene = Scene::new();
    scene.verify(&scene.token).unwrap();
    scene.issuer.go_down();
    // Fresh for 300 s, then trusted for 24 h more while every fetch fails.
    scene.clock.advance(SECOND * 300 + SECOND * 24 * 3600 - Duration::from_millis(1));
    scene.verify(&scene.token).unwrap();
    scene.clock.advance(Duration::from_millis(1));
    assert_eq!(
        scene.verify(&scene.token),
        Err(VerifyError::JwksTooStale { stale_for_seconds: 24 * 3600, last_error: "connection refused".to_owned() })
    );
    // Also during the backoff, when no fetch is tried.
    assert!(matches!(scene.verify(&scene.token), Err(VerifyError::JwksTooStale { .. })));
    // Once the issuer answers again, so does the verifier.
    scene.issuer.serve(jwks(&[&scene.key]), Some("public, max-age=300"));
    scene.clock.advance(SECOND * 300);
    scene.verify(&scene.token).unwrap();
}

#[test]
fn without_keys_and_without_the_issuer_nothing_verifies() {
    let scene = Scene::new();
    scene.issuer.go_down();
    let unavailable = Err(VerifyError::JwksUnavailable("connection refused".to_owned()));
    assert_eq!(scene.verify(&scene.token), unavailable);
    // During the backoff the answer stands, without a request.
    assert_eq!(scene.verify(&scene.token), unavailable);
    assert_eq!(scene.requests(), 1);
    for (answer, error) in [
        (JwksResponse { status: 503, cache_control: None, body: String::new() }, "the JWKS request answered 503"),
        (JwksResponse { status: 200, cache_control: None, body: "{}".to_owned() }, "the answer is not a JWK Set"),
    ] {
        scene.issuer.answer(Ok(answer));
        scene.clock.advance(SECOND * 300);
        assert_eq!(scene.verify(&scene.token), Err(VerifyError::JwksUnavailable(error.to_owned())));
    }
    scene.issuer.serve(jwks(&[&scene.key]), None);
    scene.clock.advance(SECOND * 300);
    scene.verify(&scene.token).unwrap();
}

/// Many tasks on a multi-threaded runtime meet a cold cache while the issuer takes 200 ms to
/// answer: one request reaches it, and every task gets its outcome — also with `no-store`,
/// where the keys are stale the moment they arrive, and when the fetch fails.
#[test]
fn one_fetch_in_flight_for_many_concurrent_callers() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_time().build().unwrap();
    for (cache_control, issuer_up) in [(Some("public, max-age=300"), true), (Some("no-store"), true), (None, false)] {
        let scene = Scene::with_cache_control(cache_control);
        if !issuer_up {
            scene.issuer.answer(Err(FetchError("timed out".to_owned())));
        }
        scene.issuer.delay_answers(Duration::from_millis(200));
        let verifier = Arc::new(scene.verifier);
        let token = Arc::new(scene.token);
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (verifier, token) = (Arc::clone(&verifier), Arc::clone(&token));
                runtime.spawn(async move { verifier.verify_access_token(&token).await })
            })
            .collect();
        let outcomes: Vec<_> = runtime.block_on(async {
            let mut outcomes = Vec::new();
            for task in tasks {
                outcomes.push(task.await.unwrap());
            }
            outcomes
        });
        assert_eq!(scene.issuer.requests(), 1, "{cache_control:?}");
        assert_eq!(verifier.jwks_fetches(), 1);
        if issuer_up {
            assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        } else {
            let unavailable = Err(VerifyError::JwksUnavailable("timed out".to_owned()));
            assert!(outcomes.iter().all(|outcome| *outcome == unavailable), "{outcomes:?}");
        }
    }
}

#[test]
fn verifies_only_with_keys_of_the_pinned_algorithms() {
    let scene = Scene::new();
    let mut config = crate::VerifierConfig::for_issuer(crate::testing::ISSUER, AUDIENCE);
    config.algorithms = vec![crate::SigningAlg::EdDsa];
    let pinned = Verifier::with_clock(config.clone(), scene.issuer.clone(), scene.clock.clone());
    let unknown = Err(VerifyError::Rejected(TokenRejected::UnknownKey));
    assert_eq!(block_on(pinned.verify_access_token(&scene.token)).map(drop), unknown, "an ES256 key is ignored");
    config.algorithms = vec![crate::SigningAlg::Es256];
    let pinned = Verifier::with_clock(config, scene.issuer.clone(), scene.clock.clone());
    block_on(pinned.verify_access_token(&scene.token)).unwrap();
}

/// A caller dropped while its fetch is in flight (a client that hung up) leaves nothing held:
/// the next caller fetches.
#[test]
fn a_cancelled_fetch_does_not_block_the_next() {
    let scene = Scene::new();
    scene.issuer.delay_answers(Duration::from_secs(60));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let cancelled = runtime.block_on(async {
        tokio::time::timeout(Duration::from_millis(20), scene.verifier.verify_access_token(&scene.token)).await
    });
    assert!(cancelled.is_err());
    scene.issuer.delay_answers(Duration::ZERO);
    runtime.block_on(scene.verifier.verify_access_token(&scene.token)).unwrap();
    assert_eq!(scene.issuer.requests(), 2);
}

/// What a tokio or axum service needs to share one verifier between tasks.
#[test]
fn the_verifier_is_send_and_sync_and_so_is_its_future() {
    fn shareable<T: Send + Sync + 'static>() {}
    fn sendable<T: Send>(_: &T) {}
    shareable::<Verifier>();
    shareable::<Arc<Verifier>>();
    let scene = Scene::new();
    let future = scene.verifier.verify_access_token(&scene.token);
    sendable(&future);
    drop(future);
    #[cfg(feature = "reqwest")]
    {
        let verifier = Verifier::new(
            crate::VerifierConfig::for_issuer(crate::testing::ISSUER, AUDIENCE),
            crate::ReqwestFetcher::new().unwrap(),
        );
        sendable(&verifier.verify_access_token("token"));
    }
}

/// The refusals of the issuer's own `/userinfo`, through the verifier: each case differs from a
/// token the verifier accepts in one respect.
#[test]
fn refuses_what_the_issuer_refuses() {
    let scene = Scene::new();
    let now = scene.clock.timestamp();
    let key = &scene.key;
    let claims = access_claims(now);
    let with_header = |change: &dyn Fn(&mut Value)| {
        let mut header = key.header();
        change(&mut header);
        key.sign(&header, &claims)
    };
    let with_claims = |change: &dyn Fn(&mut Value)| {
        let mut claims = claims.clone();
        change(&mut claims);
        key.sign(&key.header(), &claims)
    };
    let encode = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let hs256 = {
        use hmac::Mac;
        let mut header = key.header();
        header["alg"] = json!("HS256");
        let input = format!("{}.{}", encode(&header), encode(&claims));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.public_jwk().to_string().as_bytes()).unwrap();
        mac.update(input.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{input}.{tag}")
    };
    let (signed, signature) = scene.token.rsplit_once('.').unwrap();
    let tampered_payload = {
        let mut claims = claims.clone();
        claims["sub"] = json!("someone-else");
        format!("{}.{}.{signature}", encode(&key.header()), encode(&claims))
    };
    let refused = |why: TokenRejected| Err(VerifyError::Rejected(why));
    let invalid = |what: &str| refused(TokenRejected::Invalid(what.to_owned()));
    let wrong_type = || refused(TokenRejected::WrongType("at+jwt".to_owned()));
    let cases: Vec<(&str, String, Result<(), VerifyError>)> = vec![
        ("the token itself", scene.token.clone(), Ok(())),
        (
            "alg none, no signature",
            format!("{}.{}.", encode(&json!({"alg": "none", "kid": "key-1", "typ": "at+jwt"})), encode(&claims)),
            refused(TokenRejected::WrongAlgorithm),
        ),
        ("HS256 keyed with the public key", hs256, refused(TokenRejected::WrongAlgorithm)),
        (
            "EdDSA named for an ES256 key",
            with_header(&|h| h["alg"] = json!("EdDSA")),
            refused(TokenRejected::WrongAlgorithm),
        ),
        ("typ JWT: an ID token", with_header(&|h| h["typ"] = json!("JWT")), wrong_type()),
        ("no typ", with_header(&|h| drop(h.as_object_mut().unwrap().remove("typ"))), wrong_type()),
        (
            "no kid",
            with_header(&|h| drop(h.as_object_mut().unwrap().remove("kid"))),
            refused(TokenRejected::UnknownKey),
        ),
        (
            "jku header",
            with_header(&|h| h["jku"] = json!("https://evil.example/jwks.json")),
            refused(TokenRejected::ForbiddenHeader),
        ),
        ("embedded jwk", with_header(&|h| h["jwk"] = key.public_jwk()), refused(TokenRejected::ForbiddenHeader)),
        ("crit header", with_header(&|h| h["crit"] = json!(["exp"])), refused(TokenRejected::ForbiddenHeader)),
        (
            "another issuer",
            with_claims(&|c| c["iss"] = json!("https://other.example.test")),
            invalid("iss is not this issuer"),
        ),
        (
            "another audience",
            with_claims(&|c| c["aud"] = json!("another-api")),
            invalid("aud is not the configured audience"),
        ),
        ("expired beyond the leeway", with_claims(&|c| c["exp"] = json!(now - 31)), invalid("token has expired")),
        ("expired within the leeway", with_claims(&|c| c["exp"] = json!(now - 29)), Ok(())),
        ("not yet valid", with_claims(&|c| c["nbf"] = json!(now + 31)), invalid("token is not yet ready")),
        ("tampered payload", tampered_payload, invalid("signature has failed verification")),
        ("stripped signature", format!("{signed}."), invalid("signature has failed verification")),
        ("garbage", "not.a.jwt".to_owned(), refused(TokenRejected::Malformed)),
    ];
    for (name, token, expected) in cases {
        assert_eq!(scene.verify(&token).map(drop), expected, "{name}");
    }
    assert_eq!(scene.requests(), 1);
    // A token refused by its header alone never costs a fetch, even with a cold cache.
    let cold = Scene::new();
    assert!(cold.verify(&with_header(&|h| h["typ"] = json!("JWT"))).is_err());
    assert!(cold.verify("garbage").is_err());
    assert_eq!(cold.requests(), 0);
}
