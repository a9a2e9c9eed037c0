//! The axum extractor (feature `axum`, for axum 0.8): `AccessToken(claims)` from an
//! `Authorization: Bearer` header, checked by the [`Verifier`] in the router's state.
//!
//! ```text
//! async fn me(AccessToken(claims): AccessToken) -> String { claims.sub }
//! let app = Router::new().route("/me", get(me)).with_state(Arc::new(verifier));
//! ```
//!
//! A state of its own works too, given `impl FromRef<AppState> for Arc<Verifier>`.
//! Refusals follow RFC 6750 §3: `401` with `WWW-Authenticate: Bearer` when the request carries
//! no bearer credentials, `Bearer error="invalid_token"` when it carries one that is not a valid
//! access token (an ID token included); `503` when the keys cannot be had.

use std::sync::Arc;

use axum_core::extract::{FromRef, FromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{HeaderMap, StatusCode};

use crate::{AccessTokenClaims, TokenRejected, Verifier, VerifyError};

/// The claims of a valid access token presented as `Authorization: Bearer …`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessToken(pub AccessTokenClaims);

/// Why [`AccessToken`] refused a request; its response is the one RFC 6750 asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum AccessTokenRejection {
    /// No `Authorization: Bearer` header: the client may not know the resource needs a token.
    Missing,
    /// A bearer token that is not a valid access token of the issuer for this audience.
    Invalid(TokenRejected),
    /// No keys to check it with (see [`VerifyError`]): the token may be fine, so not a 401.
    Unavailable(VerifyError),
}

impl<S> FromRequestParts<S> for AccessToken
where
    Arc<Verifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AccessTokenRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<AccessToken, AccessTokenRejection> {
        let token = bearer_token(&parts.headers)?;
        let verifier = Arc::<Verifier>::from_ref(state);
        match verifier.verify_access_token(token).await {
            Ok(claims) => Ok(AccessToken(claims)),
            Err(VerifyError::Rejected(why)) => {
                log::debug!("bearer token refused: {why}");
                Err(AccessTokenRejection::Invalid(why))
            }
            Err(err) => {
                log::warn!("bearer token not checked: {err}");
                Err(AccessTokenRejection::Unavailable(err))
            }
        }
    }
}

/// The credentials of `Authorization: Bearer <token>` (the scheme in any case, RFC 9110 §11.1).
fn bearer_token(headers: &HeaderMap) -> Result<&str, AccessTokenRejection> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(AccessTokenRejection::Missing);
    };
    let malformed = AccessTokenRejection::Invalid(TokenRejected::Malformed);
    let value = value.to_str().map_err(|_| malformed.clone())?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("Bearer") {
        // Another scheme (Basic, …) is no bearer credential at all.
        return Err(AccessTokenRejection::Missing);
    }
    let token = token.trim_matches(' ');
    if token.is_empty() {
        return Err(malformed);
    }
    Ok(token)
}

impl IntoResponse for AccessTokenRejection {
    fn into_response(self) -> Response {
        let (status, challenge, error, description) = match self {
            AccessTokenRejection::Missing => {
                (StatusCode::UNAUTHORIZED, "Bearer", "invalid_token", "this resource needs a bearer access token")
            }
            AccessTokenRejection::Invalid(_) => (
                StatusCode::UNAUTHORIZED,
                "Bearer error=\"invalid_token\"",
                "invalid_token",
                "the access token is malformed, invalid, expired or not for this resource",
            ),
            AccessTokenRejection::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "",
                "temporarily_unavailable",
                "the access token cannot be checked right now",
            ),
        };
        let body = serde_json::json!({"error": error, "error_description": description}).to_string();
        let headers = [(CONTENT_TYPE, "application/json"), (CACHE_CONTROL, "no-store")];
        match challenge {
            "" => (status, headers, body).into_response(),
            challenge => (status, [(WWW_AUTHENTICATE, challenge)], headers, body).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{block_on, jwks, verifier, FakeClock, FakeIssuer, TestKey};

    fn extract(verifier: &Arc<Verifier>, authorization: Option<&str>) -> Result<AccessToken, AccessTokenRejection> {
        let mut request = http::Request::builder().uri("/me");
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        block_on(AccessToken::from_request_parts(&mut parts, verifier))
    }

    fn response(rejection: AccessTokenRejection) -> (u16, Option<String>, serde_json::Value) {
        let response = rejection.into_response();
        let challenge = response.headers().get(WWW_AUTHENTICATE).map(|value| value.to_str().unwrap().to_owned());
        let status = response.status().as_u16();
        let body = block_on(body_bytes(response));
        (status, challenge, serde_json::from_slice(&body).unwrap())
    }

    async fn body_bytes(response: Response) -> Vec<u8> {
        use http_body_util::BodyExt;
        response.into_body().collect().await.unwrap().to_bytes().to_vec()
    }

    #[test]
    fn turns_a_bearer_header_into_checked_claims_or_the_rfc_6750_answer() {
        let key = TestKey::new("key-1", 7);
        let issuer = FakeIssuer::serving(jwks(&[&key]), None);
        let clock = FakeClock::new();
        let verifier = Arc::new(verifier(&issuer, &clock));
        let token = key.access_token(clock.timestamp());

        let AccessToken(claims) = extract(&verifier, Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(claims.sub, "user-1");
        assert_eq!(extract(&verifier, Some(&format!("bearer  {token} "))).map(|t| t.0), Ok(claims));

        let mut id_header = key.header();
        id_header["typ"] = json!("JWT");
        let id_token = key.sign(&id_header, &crate::testing::access_claims(clock.timestamp()));
        let no_credentials = (401, Some("Bearer".to_owned()));
        let invalid = (401, Some("Bearer error=\"invalid_token\"".to_owned()));
        for (authorization, expected) in [
            (None, no_credentials.clone()),
            (Some(format!("Basic {token}")), no_credentials),
            (Some("Bearer".to_owned()), invalid.clone()),
            (Some("Bearer ".to_owned()), invalid.clone()),
            (Some("Bearer not.a.jwt".to_owned()), invalid.clone()),
            (Some(format!("Bearer {id_token}")), invalid.clone()),
            (Some(format!("Bearer {}x", &token[..token.len() - 1])), invalid),
        ] {
            let rejection = extract(&verifier, authorization.as_deref()).unwrap_err();
            let (status, challenge, body) = response(rejection);
            assert_eq!((status, challenge), expected, "{authorization:?}");
            assert_eq!(body["error"], "invalid_token");
        }
    }

    #[test]
    fn no_keys_is_503_not_401() {
        let key = TestKey::new("key-1", 7);
        let issuer = FakeIssuer::serving(jwks(&[&key]), None);
        issuer.go_down();
        let clock = FakeClock::new();
        let verifier = Arc::new(verifier(&issuer, &clock));
        let rejection = extract(&verifier, Some(&format!("Bearer {}", key.access_token(clock.timestamp()))));
        let (status, challenge, body) = response(rejection.unwrap_err());
        assert_eq!((status, challenge), (503, None));
        assert_eq!(body["error"], "temporarily_unavailable");
    }
}
