//! The JWTs edgeid issues: RFC 9068 access tokens and OpenID Connect ID tokens. The access
//! token's claims and their validation are edgeid-verifier's, so that `/userinfo` and every
//! downstream service check the same way.

use chrono::{DateTime, Duration, Utc};
use jwt_compact::Claims;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::domain::signing::{SigningAlg, SigningError, SigningKeys, TokenRejected};
use crate::ports::Crypto;

pub use edgeid_verifier::claims::{validate_access_token, AccessTokenClaims, ACCESS_TOKEN_TYPE, LEEWAY_SECONDS};

/// The scopes every first-party login grants.
pub const LOGIN_SCOPE: &str = "openid email offline_access";

/// OpenID Connect Core §2 claims besides `exp` and `iat`. `email` and `email_verified` only
/// with the `email` scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email_verified: Option<bool>,
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

/// Who the tokens are for: a client and what it was granted.
#[derive(Debug, Clone)]
pub struct Grant<'a> {
    pub client_id: &'a str,
    /// Space-separated granted scopes: the access token's `scope`.
    pub scope: &'a str,
    /// The algorithm of the client's ID tokens (`id_token_signed_response_alg`).
    pub id_token_alg: SigningAlg,
}

impl Grant<'_> {
    fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|granted| granted == scope)
    }
}

/// A signed access token and, with the `openid` scope, an ID token.
#[derive(Debug, Clone)]
pub struct SignedTokens {
    pub access_token: String,
    pub id_token: Option<String>,
    pub expires_in: i64,
}

/// The first-party app's tokens (`/v1/login` and its refresh grant): `aud` of the ID token =
/// `FIRST_PARTY_CLIENT_ID`, the fixed `LOGIN_SCOPE`, the configured `SIGNING_ALG`.
pub async fn issue_tokens(
    config: &Config,
    keys: &SigningKeys,
    crypto: &impl Crypto,
    now: DateTime<Utc>,
    jti: String,
    subject: &Subject<'_>,
) -> Result<SignedTokens, SigningError> {
    let grant =
        Grant { client_id: &config.first_party_client_id, scope: LOGIN_SCOPE, id_token_alg: config.signing_alg };
    issue_grant_tokens(config, keys, crypto, now, jti, subject, &grant).await
}

/// Tokens for a client's grant. The access token's `aud` is the API it is for and its
/// `client_id` the app that holds it (RFC 9068 §2.2); the ID token's `aud` is the client
/// (OIDC Core §2), signed with the client's algorithm.
pub async fn issue_grant_tokens(
    config: &Config,
    keys: &SigningKeys,
    crypto: &impl Crypto,
    now: DateTime<Utc>,
    jti: String,
    subject: &Subject<'_>,
    grant: &Grant<'_>,
) -> Result<SignedTokens, SigningError> {
    let lifetime = Duration::seconds(config.access_token_ttl_seconds);
    let access = timed(
        AccessTokenClaims {
            iss: config.issuer.clone(),
            sub: subject.user_id.to_owned(),
            aud: config.access_token_audience.clone(),
            jti,
            client_id: grant.client_id.to_owned(),
            scope: grant.scope.to_owned(),
            sid: subject.session_id.to_owned(),
        },
        now,
        lifetime,
    );
    let id_claims = match grant.has_scope("openid") {
        false => None,
        true => {
            let with_email = grant.has_scope("email");
            let id = timed(
                IdTokenClaims {
                    iss: config.issuer.clone(),
                    sub: subject.user_id.to_owned(),
                    aud: grant.client_id.to_owned(),
                    auth_time: subject.auth_time.timestamp(),
                    email: with_email.then(|| subject.email.to_owned()),
                    email_verified: with_email.then_some(subject.email_verified),
                    sid: subject.session_id.to_owned(),
                    nonce: subject.nonce.map(str::to_owned),
                },
                now,
                lifetime,
            );
            Some(id)
        }
    };
    // Both signatures at once: in the worker each is a WebCrypto promise, and one wake of the
    // request's task for both costs less than one after the other.
    let id_token = async {
        match &id_claims {
            None => Ok(None),
            Some(id) => keys.sign_with(grant.id_token_alg, "JWT", id, crypto).await.map(Some),
        }
    };
    let (access_token, id_token) =
        futures_util::future::join(keys.sign(ACCESS_TOKEN_TYPE, &access, crypto), id_token).await;
    Ok(SignedTokens { access_token: access_token?, id_token: id_token?, expires_in: config.access_token_ttl_seconds })
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
