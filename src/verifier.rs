//! Verifying edgeid's access tokens downstream, in any Rust service: fetch the JWKS once, keep
//! it as long as its `Cache-Control: max-age` allows, refetch when a token names an unknown
//! `kid` (a rotation) at most once per interval, and validate signature, `typ`, `iss`, `aud`,
//! `exp` and `nbf` locally, with no call to edgeid per token.
//!
//! ```text
//! let verifier = Verifier::new(VerifierConfig::for_issuer("https://id.example.com", "edgeid"), my_http_client);
//! let claims = verifier.verify_access_token(token, DateTime::<Utc>::from(SystemTime::now())).await?;
//! ```
//!
//! `my_http_client` implements [`HttpClient`] with whatever the service uses (reqwest, hyper,
//! a Worker's `fetch` or a Service Binding).

use std::cell::RefCell;
use std::rc::Rc;

use chrono::{DateTime, Utc};

use crate::domain::signing::{token_header, PublishedKeys, TokenRejected};
use crate::domain::tokens::{validate_access_token, AccessTokenClaims};
use crate::ports::{HttpClient, OutboundRequest};

#[derive(Debug, Clone)]
pub struct VerifierConfig {
    pub issuer: String,
    pub audience: String,
    pub jwks_url: String,
    /// Used when the JWKS response carries no `max-age`.
    pub default_max_age_seconds: i64,
    /// The least time between two fetches caused by unknown `kid`s, so that tokens with made-up
    /// `kid`s cannot make the verifier hammer the issuer.
    pub unknown_kid_refetch_interval_seconds: i64,
}

impl VerifierConfig {
    /// Defaults for an edgeid issuer: its JWKS at `/.well-known/jwks.json`, five minutes when
    /// the response does not say, one refetch a minute at most for unknown keys.
    pub fn for_issuer(issuer: &str, audience: &str) -> VerifierConfig {
        let issuer = issuer.trim_end_matches('/').to_owned();
        VerifierConfig {
            jwks_url: format!("{issuer}/.well-known/jwks.json"),
            issuer,
            audience: audience.to_owned(),
            default_max_age_seconds: 300,
            unknown_kid_refetch_interval_seconds: 60,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("token refused: {0}")]
    Rejected(#[from] TokenRejected),
    #[error("the JWKS could not be fetched: {0}")]
    JwksUnavailable(String),
}

struct Jwks {
    keys: Rc<PublishedKeys>,
    fetched_at: i64,
    fresh_until: i64,
}

pub struct Verifier<H> {
    config: VerifierConfig,
    http: H,
    jwks: RefCell<Option<Jwks>>,
    fetches: RefCell<u64>,
}

impl<H> std::fmt::Debug for Verifier<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<H: HttpClient> Verifier<H> {
    pub fn new(config: VerifierConfig, http: H) -> Verifier<H> {
        Verifier { config, http, jwks: RefCell::new(None), fetches: RefCell::new(0) }
    }

    pub fn http(&self) -> &H {
        &self.http
    }

    /// How many times the JWKS has been fetched (for monitoring and tests).
    pub fn jwks_fetches(&self) -> u64 {
        *self.fetches.borrow()
    }

    /// Validates an edgeid access token at `now` and returns its claims.
    pub async fn verify_access_token(&self, token: &str, now: DateTime<Utc>) -> Result<AccessTokenClaims, VerifyError> {
        let at = now.timestamp();
        let kid = token_header(token)?.get("kid").and_then(|kid| kid.as_str().map(str::to_owned));
        let cached = self.jwks.borrow().as_ref().map(|jwks| (Rc::clone(&jwks.keys), jwks.fetched_at, jwks.fresh_until));
        let keys = match cached {
            Some((keys, _, fresh_until)) if at < fresh_until => {
                let known = kid.as_deref().is_some_and(|kid| keys.contains(kid));
                let may_refetch = self
                    .jwks
                    .borrow()
                    .as_ref()
                    .is_some_and(|jwks| at - jwks.fetched_at >= self.config.unknown_kid_refetch_interval_seconds);
                if known || kid.is_none() || !may_refetch {
                    keys
                } else {
                    self.fetch(at).await?
                }
            }
            // Stale or never fetched. If the issuer cannot be reached, stale keys still verify
            // tokens they signed (stale-if-error): an outage must not log everyone out.
            Some((stale, _, _)) => match self.fetch(at).await {
                Ok(keys) => keys,
                Err(err) => {
                    log::warn!("using the stale JWKS: {err}");
                    stale
                }
            },
            None => self.fetch(at).await?,
        };
        Ok(validate_access_token(&keys, &self.config.issuer, &self.config.audience, now, token)?)
    }

    async fn fetch(&self, at: i64) -> Result<Rc<PublishedKeys>, VerifyError> {
        *self.fetches.borrow_mut() += 1;
        let response = self
            .http
            .send(OutboundRequest {
                method: "GET",
                url: self.config.jwks_url.clone(),
                headers: vec![("Accept".to_owned(), "application/json".to_owned())],
                body: Vec::new(),
                timeout_ms: Some(5_000),
            })
            .await
            .map_err(|err| VerifyError::JwksUnavailable(err.to_string()))?;
        if response.status != 200 {
            return Err(VerifyError::JwksUnavailable(format!("status {}", response.status)));
        }
        let keys = Rc::new(
            PublishedKeys::from_jwks_json(&response.body)
                .ok_or_else(|| VerifyError::JwksUnavailable("not a JWK Set".to_owned()))?,
        );
        let max_age = response.header("cache-control").map_or(self.config.default_max_age_seconds, max_age_seconds);
        *self.jwks.borrow_mut() = Some(Jwks { keys: Rc::clone(&keys), fetched_at: at, fresh_until: at + max_age });
        Ok(keys)
    }
}

/// `max-age` of a `Cache-Control` value; `no-store`/`no-cache` mean zero.
fn max_age_seconds(cache_control: &str) -> i64 {
    let mut max_age = 0;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return 0;
        }
        if let Some(value) = lower.strip_prefix("max-age=") {
            max_age = value.trim_matches('"').parse().unwrap_or(0);
        }
    }
    max_age
}

#[cfg(test)]
mod tests {
    use super::max_age_seconds;

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
            assert_eq!(max_age_seconds(header), expected, "{header}");
        }
    }
}
