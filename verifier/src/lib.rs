//! Verifying edgeid's access tokens in any Rust service, locally, with no call to edgeid per
//! token: the JWKS is fetched once and shared by every task, and each token's header, signature,
//! `typ`, `iss`, `aud`, `exp` and `nbf` are checked here.
//!
//! ```text
//! use std::sync::Arc;
//! use edgeid_verifier::{ReqwestFetcher, Verifier, VerifierConfig};
//!
//! let config = VerifierConfig::for_issuer("https://id.example.com", "edgeid");
//! let verifier = Arc::new(Verifier::new(config, ReqwestFetcher::new()?));
//! let claims = verifier.verify_access_token(&token).await?; // claims.sub, claims.scope, …
//! ```
//!
//! Reading order: `keys` (published keys and the JWS checks; the algorithm is the key's, never
//! the token's), `claims` (the access token's claims and their validation, which edgeid's own
//! `/userinfo` runs too), `verifier` (the shared JWKS cache and when it may call the issuer),
//! then the optional `reqwest` client and `axum` extractor.
//!
//! Features: `reqwest` ([`ReqwestFetcher`]; reqwest's TLS is the application's, or
//! `rustls-tls`), `axum` ([`AccessToken`], for axum 0.8).

pub mod claims;
pub mod keys;
mod verifier;

#[cfg(feature = "axum")]
mod axum_extractor;
#[cfg(feature = "reqwest")]
mod reqwest_fetcher;
#[cfg(test)]
mod testing;

#[cfg(feature = "axum")]
pub use axum_extractor::{AccessToken, AccessTokenRejection};
pub use claims::{validate_access_token, AccessTokenClaims, ACCESS_TOKEN_TYPE, LEEWAY_SECONDS};
pub use keys::{PublishedKeys, SigningAlg, TokenRejected};
#[cfg(feature = "reqwest")]
pub use reqwest_fetcher::{ReqwestFetcher, MAX_JWKS_BYTES};
pub use verifier::{Clock, FetchError, JwksFetcher, JwksResponse, SystemClock, Verifier, VerifierConfig, VerifyError};
