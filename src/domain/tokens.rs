//! The claims of the JWTs edgeid issues: RFC 9068 access tokens and OpenID Connect ID tokens.

use chrono::{DateTime, Duration, Utc};
use jwt_compact::{Claims, TimeOptions};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::domain::signing::{PublishedKeys, SigningError, SigningKeys, TokenRejected};
use crate::ports::Crypto;

/// The scopes every first-party login grants.
pub const LOGIN_SCOPE: &str = "openid email offline_access";

/// RFC 9068 §2.2 claims besides `exp` and `iat`, which jwt-compact's `Claims` carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
    pub sid: String,
}

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
    // There is one client today, the application edgeid fronts; the access token's audience
    // names it, and OpenID Connect requires the ID token's `aud` to be that client's id.
    let client_id = config.access_token_audience.clone();
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
        access_token: keys.sign("at+jwt", &access, crypto).await?,
        id_token: keys.sign("JWT", &id, crypto).await?,
        expires_in: config.access_token_ttl_seconds,
    })
}

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: i64 = 30;

/// Validates an access token presented to us (userinfo): header and signature by
/// [`PublishedKeys::verify`], then `iss`, `aud`, `exp` and `nbf` with a small leeway.
pub fn verify_access_token(
    config: &Config,
    keys: &SigningKeys,
    now: DateTime<Utc>,
    token: &str,
) -> Result<AccessTokenClaims, TokenRejected> {
    validate_access_token(keys.published(), &config.issuer, &config.access_token_audience, now, token)
}

/// RFC 9068 §4 validation against a set of public keys: header policy and signature, then
/// `iss`, `aud`, `exp` and `nbf` with [`LEEWAY_SECONDS`].
pub fn validate_access_token(
    keys: &PublishedKeys,
    issuer: &str,
    audience: &str,
    now: DateTime<Utc>,
    token: &str,
) -> Result<AccessTokenClaims, TokenRejected> {
    let claims = keys.verify::<AccessTokenClaims>(token, "at+jwt")?;
    let time = TimeOptions::new(Duration::seconds(LEEWAY_SECONDS), move || now);
    let invalid = |err: jwt_compact::ValidationError| TokenRejected::Invalid(err.to_string());
    claims.validate_expiration(&time).map_err(invalid)?;
    if claims.not_before.is_some() {
        claims.validate_maturity(&time).map_err(invalid)?;
    }
    if claims.custom.iss != issuer {
        return Err(TokenRejected::Invalid("iss is not this issuer".to_owned()));
    }
    if claims.custom.aud != audience {
        return Err(TokenRejected::Invalid("aud is not the configured audience".to_owned()));
    }
    Ok(claims.custom)
}

fn timed<T>(custom: T, now: DateTime<Utc>, lifetime: Duration) -> Claims<T> {
    let mut claims = Claims::new(custom);
    claims.issued_at = Some(now);
    claims.expiration = Some(now + lifetime);
    claims
}
