//! The verifier: one JWKS cache shared by every task of a service, and the policy for when it
//! may call the issuer.
//!
//! - Keys are fresh for the response's `Cache-Control: max-age` (a default when it has none).
//! - A token naming an unknown `kid` (a rotation) refetches at most once per interval, counted
//!   from the last attempt whether it succeeded or not, so made-up `kid`s cannot make the
//!   verifier hammer the issuer, also while the issuer is failing.
//! - One fetch in flight: callers that need one while it runs wait for it and share its outcome.
//! - After a failed fetch, no fetch at all for a delay that doubles with each failure in a row
//!   (1 s up to 5 min by default) and resets on success. Meanwhile stale keys keep verifying the
//!   tokens they signed — an outage of the issuer must not log everyone out — but only for
//!   `max_stale` (24 h by default) past their freshness; after that, verification fails.
//!
//! Time comes from a [`Clock`] and HTTP from a [`JwksFetcher`], so the policy is tested with a
//! fake clock and a fake issuer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::claims::{validate_access_token, AccessTokenClaims, ACCESS_TOKEN_TYPE};
use crate::keys::{typed_header, PublishedKeys, SigningAlg, TokenRejected};

/// What a [`Verifier`] checks tokens against, and how it treats the issuer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifierConfig {
    /// The `iss` every token must carry, without a trailing slash.
    pub issuer: String,
    /// The `aud` every token must carry: edgeid's `ACCESS_TOKEN_AUDIENCE`.
    pub audience: String,
    pub jwks_url: String,
    /// The only algorithms tokens may be signed with; keys of others in the JWKS are ignored.
    /// Pin the issuer's `SIGNING_ALG` (plus the previous one during a change of algorithm).
    pub algorithms: Vec<SigningAlg>,
    /// How long keys stay fresh when the JWKS response carries no `Cache-Control`.
    pub default_max_age: Duration,
    /// The least time between two fetch attempts caused by unknown `kid`s.
    pub unknown_kid_refetch_interval: Duration,
    /// The pause after a failed fetch; it doubles with each further failure in a row…
    pub backoff_initial: Duration,
    /// …up to this.
    pub backoff_max: Duration,
    /// How long past their freshness keys are still trusted while the issuer cannot be reached.
    pub max_stale: Duration,
}

impl VerifierConfig {
    /// Defaults for an edgeid issuer: its JWKS at `/.well-known/jwks.json`, any algorithm edgeid
    /// signs with (ES256, EdDSA, RS256; never `none` or a MAC), five minutes when
    /// the response does not say, one refetch a minute at most for unknown keys, backoff from
    /// 1 s to 5 min, stale keys trusted for a day.
    pub fn for_issuer(issuer: &str, audience: &str) -> VerifierConfig {
        let issuer = issuer.trim_end_matches('/').to_owned();
        VerifierConfig {
            jwks_url: format!("{issuer}/.well-known/jwks.json"),
            issuer,
            audience: audience.to_owned(),
            algorithms: vec![SigningAlg::Es256, SigningAlg::EdDsa, SigningAlg::Rs256],
            default_max_age: Duration::from_secs(300),
            unknown_kid_refetch_interval: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_stale: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// The issuer's answer to a JWKS request, as a [`JwksFetcher`] hands it over: the verifier
/// itself checks the status, reads `Cache-Control` and parses the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksResponse {
    pub status: u16,
    pub cache_control: Option<String>,
    pub body: String,
}

/// The request did not complete (no connection, a timeout, an unreadable body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

/// GETs the JWKS. An implementation must give up in bounded time (the ready
/// [`ReqwestFetcher`](crate::ReqwestFetcher) after 5 s): while one fetch runs, callers that need
/// keys wait for it.
pub trait JwksFetcher: Send + Sync + 'static {
    fn fetch(&self, url: &str) -> impl Future<Output = Result<JwksResponse, FetchError>> + Send;
}

/// Where the verifier reads the time: for the cache and for `exp`/`nbf`.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from(std::time::SystemTime::now())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The token is not a valid access token of this issuer for this audience.
    #[error("token refused: {0}")]
    Rejected(#[from] TokenRejected),
    /// No keys yet, and the issuer's JWKS cannot be had (now, or during the backoff after a
    /// failure).
    #[error("the JWKS could not be fetched: {0}")]
    JwksUnavailable(String),
    /// The last keys went stale longer ago than `max_stale` and the issuer still cannot be
    /// reached: they are no longer trusted.
    #[error("the cached JWKS has been stale for {stale_for_seconds} s, longer than it may be trusted, and the issuer cannot be reached: {last_error}")]
    JwksTooStale { stale_for_seconds: i64, last_error: String },
}

/// A parsed JWKS and the instants that bound its use, in milliseconds since the epoch.
struct CachedKeys {
    keys: PublishedKeys,
    fresh_until: i64,
    trusted_until: i64,
}

#[derive(Default)]
struct CacheState {
    keys: Option<Arc<CachedKeys>>,
    /// When the last fetch attempt ended.
    last_attempt_at: Option<i64>,
    failures_in_a_row: u32,
    /// No fetch before this instant (the backoff after a failure).
    no_fetch_before: i64,
    last_error: Option<String>,
}

/// Verifies edgeid's access tokens locally. `Send + Sync`: build one per issuer and share it
/// (in an `Arc`) between every task of a service.
pub struct Verifier {
    config: VerifierConfig,
    fetcher: Box<dyn ErasedFetcher>,
    clock: Box<dyn Clock>,
    state: Mutex<CacheState>,
    /// Held for the length of a fetch: the one in flight.
    in_flight: tokio::sync::Mutex<()>,
    /// Fetch attempts so far; a caller that waited for the one in flight compares it with what
    /// it saw before, to share that fetch's outcome rather than start another.
    attempts: AtomicU64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(config: VerifierConfig, fetcher: impl JwksFetcher) -> Verifier {
        Verifier::with_clock(config, fetcher, SystemClock)
    }

    pub fn with_clock(config: VerifierConfig, fetcher: impl JwksFetcher, clock: impl Clock) -> Verifier {
        Verifier {
            config,
            fetcher: Box::new(fetcher),
            clock: Box::new(clock),
            state: Mutex::default(),
            in_flight: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// How many times the JWKS has been fetched, successfully or not (for monitoring and tests).
    pub fn jwks_fetches(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Validates an edgeid access token and returns its claims: header policy, `typ` `at+jwt`
    /// (an ID token is refused), signature with the key its `kid` names and that key's own
    /// algorithm, `iss`, `aud`, `exp` and `nbf` (30 s leeway).
    pub async fn verify_access_token(&self, token: &str) -> Result<AccessTokenClaims, VerifyError> {
        // What needs no key is checked first: a token refused by its header never costs a fetch.
        let header = typed_header(token, ACCESS_TOKEN_TYPE)?;
        let kid = header.get("kid").and_then(Value::as_str);
        let keys = self.keys_for(kid).await?;
        Ok(validate_access_token(&keys.keys, &self.config.issuer, &self.config.audience, self.clock.now(), token)?)
    }

    /// The keys to verify a token naming `kid` with, fetching them first when the policy says so.
    async fn keys_for(&self, kid: Option<&str>) -> Result<Arc<CachedKeys>, VerifyError> {
        let attempts_seen = self.attempts.load(Ordering::SeqCst);
        {
            let state = self.state();
            let now = self.now_ms();
            if !self.should_fetch(&state, kid, now) {
                return self.usable_keys(&state, now);
            }
        }
        let _in_flight = self.in_flight.lock().await;
        {
            let state = self.state();
            let now = self.now_ms();
            // A fetch that ended while this caller waited answers for it too, whatever it brought.
            if self.attempts.load(Ordering::SeqCst) != attempts_seen || !self.should_fetch(&state, kid, now) {
                return self.usable_keys(&state, now);
            }
        }
        let outcome = self.fetch().await;
        let now = self.now_ms();
        let mut state = self.state();
        self.record(&mut state, outcome, now);
        self.attempts.fetch_add(1, Ordering::SeqCst);
        self.usable_keys(&state, now)
    }

    fn should_fetch(&self, state: &CacheState, kid: Option<&str>, now: i64) -> bool {
        if now < state.no_fetch_before {
            return false;
        }
        match &state.keys {
            None => true,
            Some(cached) if now >= cached.fresh_until => true,
            Some(cached) => {
                let unknown = kid.is_some_and(|kid| !cached.keys.contains(kid));
                let interval = millis(self.config.unknown_kid_refetch_interval);
                unknown && state.last_attempt_at.is_none_or(|at| now.saturating_sub(at) >= interval)
            }
        }
    }

    /// The keys as they are, without fetching: fresh, stale within the bound, or an error.
    fn usable_keys(&self, state: &CacheState, now: i64) -> Result<Arc<CachedKeys>, VerifyError> {
        let last_error = || state.last_error.clone().unwrap_or_else(|| "no fetch has completed yet".to_owned());
        match &state.keys {
            None => Err(VerifyError::JwksUnavailable(last_error())),
            // Fresh, or stale within the bound (`trusted_until` is never before `fresh_until`).
            Some(cached) if now < cached.trusted_until => Ok(Arc::clone(cached)),
            Some(cached) => Err(VerifyError::JwksTooStale {
                stale_for_seconds: now.saturating_sub(cached.fresh_until) / 1000,
                last_error: last_error(),
            }),
        }
    }

    /// One GET of the JWKS, parsed, with how long it stays fresh.
    async fn fetch(&self) -> Result<(PublishedKeys, Duration), String> {
        let response = self.fetcher.fetch(&self.config.jwks_url).await.map_err(|err| err.0)?;
        if response.status != 200 {
            return Err(format!("the JWKS request answered {}", response.status));
        }
        let keys = PublishedKeys::from_jwks_json(&response.body)
            .ok_or_else(|| "the answer is not a JWK Set".to_owned())?
            .restricted_to(&self.config.algorithms);
        let max_age = response.cache_control.as_deref().map_or(self.config.default_max_age, max_age);
        Ok((keys, max_age))
    }

    fn record(&self, state: &mut CacheState, outcome: Result<(PublishedKeys, Duration), String>, now: i64) {
        state.last_attempt_at = Some(now);
        match outcome {
            Ok((keys, max_age)) => {
                let fresh_until = now.saturating_add(millis(max_age));
                let trusted_until = fresh_until.saturating_add(millis(self.config.max_stale));
                state.keys = Some(Arc::new(CachedKeys { keys, fresh_until, trusted_until }));
                // `no_fetch_before` has passed, or this fetch would not have started.
                state.failures_in_a_row = 0;
                state.last_error = None;
            }
            Err(err) => {
                state.failures_in_a_row = state.failures_in_a_row.saturating_add(1);
                let doublings = state.failures_in_a_row.saturating_sub(1).min(31);
                let backoff = self.config.backoff_initial.saturating_mul(1 << doublings).min(self.config.backoff_max);
                state.no_fetch_before = now.saturating_add(millis(backoff));
                log::warn!(
                    "fetching {} failed ({} in a row; no fetch for {backoff:?}): {err}",
                    self.config.jwks_url,
                    state.failures_in_a_row
                );
                state.last_error = Some(err);
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, CacheState> {
        // Every update of the state is a few assignments that cannot panic half-way.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }
}

/// [`JwksFetcher`] as an object, so that [`Verifier`] is one type whatever fetches for it.
trait ErasedFetcher: Send + Sync {
    fn fetch<'a>(&'a self, url: &'a str)
        -> Pin<Box<dyn Future<Output = Result<JwksResponse, FetchError>> + Send + 'a>>;
}

impl<T: JwksFetcher> ErasedFetcher for T {
    fn fetch<'a>(
        &'a self,
        url: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<JwksResponse, FetchError>> + Send + 'a>> {
        Box::pin(JwksFetcher::fetch(self, url))
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// `max-age` of a `Cache-Control` value; `no-store`/`no-cache` mean zero.
fn max_age(cache_control: &str) -> Duration {
    let mut seconds = 0;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Duration::ZERO;
        }
        if let Some(value) = lower.strip_prefix("max-age=") {
            seconds = value.trim_matches('"').parse().unwrap_or(0);
        }
    }
    Duration::from_secs(seconds)
}

#[cfg(test)]
mod tests;
