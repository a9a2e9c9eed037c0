//! The JWTs edgeid issues: RFC 9068 access tokens and OpenID Connect ID tokens. The access
//! token's claims and their validation are edgeid-verifier's, so that `/userinfo` and every
//! downstream service check the same way.

use chrono::{DateTime, Duration, Utc};
use jwt_compact::Claims;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::domain::signing::{SigningError, SigningKeys, TokenRejected};
use crate::ports::Crypto;

pub use edgeid_verifier::claims::{validate_access_token, AccessTokenClaims, ACCESS_TOKEN_TYPE, LEEWAY_SECONDS};

/// The scopes every first-party login grants.
pub const LOGIN_SCOPE: &str = "openid email offline_access";

/// OpenID Connect Core §2 claims besides `exp` and `iat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub auth_time: i64,
    pub email: String,
    pub email_verified: bool,
    pub sid: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nonce: Option<String>,
}

/// Everything a login or refresh knows about the subject of the tokens.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub user_id: &'a str,
    pub email: &'a str,
    pub email_verified: bool,
    pub session_id: &'a str,
    pub auth_time: DateTime<Utc>,
    pub nonce: Option<&'a str>,
}

/// A signed access token and ID token.
#[derive(Debug, Clone)]
pub struct SignedTokens {
    pub access_token: String,
    pub id_token: String,
    pub expires_in: i64,
}

pub async fn issue_tokens(
    config: &Config,
    keys: &SigningKeys,
    crypto: &impl Crypto,
    now: DateTime<Utc>,
    jti: String,
    subject: &Subject<'_>,
) -> Result<SignedTokens, SigningError> {
    let lifetime = Duration::seconds(config.access_token_ttl_seconds);
    // One client today, the first-party app the JSON API serves. OpenID Connect requires the
    // ID token's `aud` to be its client id; the access token's `aud` is the API it is for, and
    // its `client_id` the app that holds it (RFC 9068 §2.2).
    let client_id = config.first_party_client_id.clone();
    let access = timed(
        AccessTokenClaims {
            iss: config.issuer.clone(),
            sub: subject.user_id.to_owned(),
            aud: config.access_token_audience.clone(),
            jti,
            client_id: client_id.clone(),
            scope: LOGIN_SCOPE.to_owned(),
            sid: subject.session_id.to_owned(),
        },
        now,
        lifetime,
    );
    let id = timed(
        IdTokenClaims {
            iss: config.issuer.clone(),
            sub: subject.user_id.to_owned(),
            aud: client_id,
            auth_time: subject.auth_time.timestamp(),
            email: subject.email.to_owned(),
            email_verified: subject.email_verified,
            sid: subject.session_id.to_owned(),
            nonce: subject.nonce.map(str::to_owned),
        },
        now,
        lifetime,
    );
    Ok(SignedTokens {
        access_token: keys.sign(ACCESS_TOKEN_TYPE, &access, crypto).await?,
        id_token: keys.sign("JWT", &id, crypto).await?,
        expires_in: config.access_token_ttl_seconds,
    })
}

/// Validates an access token presented to us (userinfo) with
/// [`validate_access_token`]: header policy and signature, then `iss`, `aud`, `exp` and `nbf`.
pub fn verify_access_token(
    config: &Config,
    keys: &SigningKeys,
    now: DateTime<Utc>,
    token: &str,
) -> Result<AccessTokenClaims, TokenRejected> {
    validate_access_token(keys.published(), &config.issuer, &config.access_token_audience, now, token)
}

fn timed<T>(custom: T, now: DateTime<Utc>, lifetime: Duration) -> Claims<T> {
    let mut claims = Claims::new(custom);
    claims.issued_at = Some(now);
    claims.expiration = Some(now + lifetime);
    claims
}
