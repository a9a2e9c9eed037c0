//! The claims of edgeid's access tokens (RFC 9068) and their validation: header policy and
//! signature by [`PublishedKeys::verify`], then `iss`, `aud`, `exp` and `nbf`. The issuer's own
//! `/userinfo` and every downstream verifier run this same function.

use chrono::{DateTime, Duration, Utc};
use jwt_compact::TimeOptions;
use serde::{Deserialize, Serialize};

use crate::keys::{PublishedKeys, TokenRejected};

/// The `typ` of an access token's header (RFC 9068 §2.1). An ID token's is `JWT`: it is proof
/// of a login for the client, not a credential for an API.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: i64 = 30;

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

/// RFC 9068 §4 validation against a set of public keys: header policy, `typ` and signature,
/// then `iss`, `aud`, `exp` and `nbf` with [`LEEWAY_SECONDS`].
pub fn validate_access_token(
    keys: &PublishedKeys,
    issuer: &str,
    audience: &str,
    now: DateTime<Utc>,
    token: &str,
) -> Result<AccessTokenClaims, TokenRejected> {
    let claims = keys.verify::<AccessTokenClaims>(token, ACCESS_TOKEN_TYPE)?;
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
