//! Test support: an issuer that signs tokens and serves (or fails to serve) its JWKS, and a clock
//! the tests move.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use jwt_compact::alg::Es256;
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmSignature};
use serde_json::{json, Value};

use crate::{Clock, FetchError, JwksFetcher, JwksResponse, Verifier, VerifierConfig};

pub(crate) const ISSUER: &str = "https://id.example.test";
pub(crate) const AUDIENCE: &str = "api.example.test";

/// 2020-09-01T10:00:00Z, jwt-compact's fixture instant.
pub(crate) const START_MS: i64 = 1_598_954_400_000;

/// A clock that moves only when told.
#[derive(Debug, Clone)]
pub(crate) struct FakeClock(Arc<AtomicI64>);

impl FakeClock {
    pub(crate) fn new() -> FakeClock {
        FakeClock(Arc::new(AtomicI64::new(START_MS)))
    }

    pub(crate) fn advance(&self, by: Duration) {
        self.0.fetch_add(i64::try_from(by.as_millis()).unwrap(), Ordering::SeqCst);
    }

    pub(crate) fn timestamp(&self) -> i64 {
        self.0.load(Ordering::SeqCst) / 1000
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0.load(Ordering::SeqCst)).unwrap()
    }
}

/// A signing key of the fake issuer.
pub(crate) struct TestKey {
    pub(crate) kid: &'static str,
    key: p256::ecdsa::SigningKey,
}

impl TestKey {
    pub(crate) fn new(kid: &'static str, seed: u8) -> TestKey {
        TestKey { kid, key: p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap() }
    }

    pub(crate) fn public_jwk(&self) -> Value {
        let mut jwk = serde_json::to_value(JsonWebKey::from(self.key.verifying_key())).unwrap();
        jwk["kid"] = json!(self.kid);
        jwk["alg"] = json!("ES256");
        jwk["use"] = json!("sig");
        jwk
    }

    /// A compact JWS of `header` and `claims`, signed with this key whatever the header says.
    pub(crate) fn sign(&self, header: &Value, claims: &Value) -> String {
        let encode = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
        let input = format!("{}.{}", encode(header), encode(claims));
        let signature = Es256.sign(&self.key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_bytes()))
    }

    pub(crate) fn header(&self) -> Value {
        json!({"alg": "ES256", "kid": self.kid, "typ": "at+jwt"})
    }

    /// An access token as edgeid issues it, valid from `iat` for three days.
    pub(crate) fn access_token(&self, iat: i64) -> String {
        self.sign(&self.header(), &access_claims(iat))
    }
}

pub(crate) fn access_claims(iat: i64) -> Value {
    json!({
        "iss": ISSUER, "sub": "user-1", "aud": AUDIENCE, "jti": "token-1",
        "client_id": "edgeid-first-party", "scope": "openid email offline_access", "sid": "session-1",
        "iat": iat, "exp": iat + 3 * 24 * 3600,
    })
}

pub(crate) fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|key| key.public_jwk()).collect::<Vec<_>>()}).to_string()
}

/// The issuer's JWKS endpoint: answers what it was last told to, after `delay`, and counts the
/// requests that reached it.
#[derive(Clone)]
pub(crate) struct FakeIssuer(Arc<IssuerState>);

struct IssuerState {
    answer: Mutex<Result<JwksResponse, FetchError>>,
    delay: Mutex<Duration>,
    requests: AtomicUsize,
}

impl FakeIssuer {
    pub(crate) fn serving(jwks: String, cache_control: Option<&str>) -> FakeIssuer {
        let issuer = FakeIssuer(Arc::new(IssuerState {
            answer: Mutex::new(Err(FetchError(String::new()))),
            delay: Mutex::new(Duration::ZERO),
            requests: AtomicUsize::new(0),
        }));
        issuer.serve(jwks, cache_control);
        issuer
    }

    pub(crate) fn serve(&self, jwks: String, cache_control: Option<&str>) {
        *self.0.answer.lock().unwrap() =
            Ok(JwksResponse { status: 200, cache_control: cache_control.map(str::to_owned), body: jwks });
    }

    pub(crate) fn answer(&self, answer: Result<JwksResponse, FetchError>) {
        *self.0.answer.lock().unwrap() = answer;
    }

    pub(crate) fn go_down(&self) {
        self.answer(Err(FetchError("connection refused".to_owned())));
    }

    pub(crate) fn delay_answers(&self, by: Duration) {
        *self.0.delay.lock().unwrap() = by;
    }

    pub(crate) fn requests(&self) -> usize {
        self.0.requests.load(Ordering::SeqCst)
    }
}

impl JwksFetcher for FakeIssuer {
    fn fetch(&self, url: &str) -> impl Future<Output = Result<JwksResponse, FetchError>> + Send {
        assert_eq!(url, format!("{ISSUER}/.well-known/jwks.json"));
        let state = Arc::clone(&self.0);
        async move {
            state.requests.fetch_add(1, Ordering::SeqCst);
            let delay = *state.delay.lock().unwrap();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            state.answer.lock().unwrap().clone()
        }
    }
}

/// A verifier of [`ISSUER`]'s tokens for [`AUDIENCE`] with the default policy, reading `clock`.
pub(crate) fn verifier(issuer: &FakeIssuer, clock: &FakeClock) -> Verifier {
    Verifier::with_clock(VerifierConfig::for_issuer(ISSUER, AUDIENCE), issuer.clone(), clock.clone())
}

/// Runs a future to completion on a fresh single-threaded runtime (with timers).
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(future)
}
