//! The one place that turns errors into HTTP: status, the stable `error` code of API.md and a
//! safe description. Internal details are logged here and never sent.

use crate::domain::client::ClientMetadataError;
use crate::flows::authorization_code::CodeGrantError;
use crate::flows::client_auth::ClientAuthError;
use crate::flows::clients::RegisterError;
use crate::flows::login::LoginError;
use crate::flows::password_reset::{ForgotPasswordError, ResetPasswordError};
use crate::flows::session::{RefreshError, UserinfoError};
use crate::flows::signup::{ResendError, SignupError};
use crate::flows::throttle::Throttled;
use crate::flows::verify_email::VerifyEmailError;
use crate::flows::Internal;

/// An error response: `{"error": code, "error_description": description}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub description: String,
    /// `WWW-Authenticate` for 401s on bearer-protected resources (RFC 6750 §3).
    pub challenge: Option<&'static str>,
    /// `Retry-After` seconds for 429s.
    pub retry_after_seconds: Option<i64>,
}

impl ApiError {
    fn new(status: u16, code: &'static str, description: impl Into<String>) -> ApiError {
        ApiError { status, code, description: description.into(), challenge: None, retry_after_seconds: None }
    }

    pub fn invalid_request(description: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_request", description)
    }

    pub fn not_found() -> ApiError {
        ApiError::new(404, "not_found", "no such endpoint")
    }

    pub fn method_not_allowed(allowed: &str) -> ApiError {
        ApiError::new(405, "method_not_allowed", format!("this endpoint accepts {allowed}"))
    }

    pub fn payload_too_large(limit: usize) -> ApiError {
        ApiError::new(413, "payload_too_large", format!("the request body is larger than {limit} bytes"))
    }

    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            415,
            "unsupported_media_type",
            "send the body as application/json or application/x-www-form-urlencoded",
        )
    }

    pub fn unsupported_grant_type() -> ApiError {
        ApiError::new(400, "unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
    }

    /// RFC 6749 §5.2: the client may not use this grant type.
    pub fn unauthorized_client(grant_type: &str) -> ApiError {
        ApiError::new(400, "unauthorized_client", format!("this client is not registered for {grant_type}"))
    }

    /// 401 `invalid_client` for a token request that names no client where one is needed.
    pub fn client_required() -> ApiError {
        ApiError { challenge: None, ..ApiError::new(401, "invalid_client", "client authentication is required") }
    }

    /// 401 for a missing, malformed, expired or forged bearer token.
    pub fn invalid_bearer_token(detail: &dyn std::fmt::Display) -> ApiError {
        log::info!("bearer token refused: {detail}");
        ApiError {
            challenge: Some("Bearer error=\"invalid_token\""),
            ..ApiError::new(401, "invalid_token", "the access token is missing, invalid or expired")
        }
    }

    /// 429 with `Retry-After`: the same for every account, existing or not.
    pub fn rate_limited(throttled: Throttled) -> ApiError {
        ApiError {
            retry_after_seconds: Some(throttled.retry_after_seconds),
            ..ApiError::new(
                429,
                "rate_limited",
                format!("too many attempts; try again in {} seconds", throttled.retry_after_seconds),
            )
        }
    }

    /// Logs the detail, answers without it.
    /// 503 with `Retry-After: 1`: the account's bucket is between two user shards (a move
    /// takes a second or so), and nothing was changed.
    pub fn moving(detail: &dyn std::fmt::Display) -> ApiError {
        log::warn!("temporarily_unavailable: {detail}");
        ApiError {
            retry_after_seconds: Some(1),
            ..ApiError::new(503, "temporarily_unavailable", "the account is being moved; try again in a second")
        }
    }

    pub fn server_error(detail: &dyn std::fmt::Display) -> ApiError {
        log::error!("server_error: {detail}");
        ApiError::new(500, "server_error", "the server could not complete the request; try again later")
    }

    fn invalid_email(detail: &dyn std::fmt::Display) -> ApiError {
        ApiError::invalid_request(detail.to_string())
    }

    fn weak_password(detail: &dyn std::fmt::Display) -> ApiError {
        ApiError::new(400, "weak_password", format!("{detail}; a long passphrase is best"))
    }

    fn invalid_one_time_token(what: &str) -> ApiError {
        ApiError::new(400, "invalid_token", format!("the {what} is invalid, has expired or was already used"))
    }
}

impl From<Internal> for ApiError {
    fn from(err: Internal) -> ApiError {
        match &err {
            Internal::Database(database) if database.is_moving() => ApiError::moving(database),
            _ => ApiError::server_error(&err),
        }
    }
}

impl From<SignupError> for ApiError {
    fn from(err: SignupError) -> ApiError {
        match err {
            SignupError::InvalidEmail(detail) => ApiError::invalid_email(&detail),
            SignupError::WeakPassword(detail) => ApiError::weak_password(&detail),
            SignupError::RateLimited(throttled) => ApiError::rate_limited(throttled),
            SignupError::Internal(internal) => internal.into(),
        }
    }
}

impl From<ResendError> for ApiError {
    fn from(err: ResendError) -> ApiError {
        match err {
            ResendError::InvalidEmail(detail) => ApiError::invalid_email(&detail),
            ResendError::RateLimited(throttled) => ApiError::rate_limited(throttled),
            ResendError::Internal(internal) => internal.into(),
        }
    }
}

impl From<VerifyEmailError> for ApiError {
    fn from(err: VerifyEmailError) -> ApiError {
        match err {
            VerifyEmailError::InvalidToken => ApiError::invalid_one_time_token("verification link or code"),
            VerifyEmailError::InvalidEmail(detail) => ApiError::invalid_email(&detail),
            VerifyEmailError::MalformedCode => ApiError::invalid_request("the code is the six digits from the email"),
            VerifyEmailError::RateLimited(throttled) => ApiError::rate_limited(throttled),
            VerifyEmailError::Internal(internal) => internal.into(),
        }
    }
}

impl From<LoginError> for ApiError {
    fn from(err: LoginError) -> ApiError {
        match err {
            LoginError::InvalidEmail(detail) => ApiError::invalid_email(&detail),
            LoginError::InvalidCredentials => {
                ApiError::new(401, "invalid_credentials", "the email or the password is wrong")
            }
            LoginError::EmailNotVerified => ApiError::new(
                403,
                "email_not_verified",
                "confirm your email address with the link we sent before signing in",
            ),
            LoginError::RateLimited(throttled) => ApiError::rate_limited(throttled),
            LoginError::Internal(internal) => internal.into(),
        }
    }
}

impl From<ForgotPasswordError> for ApiError {
    fn from(err: ForgotPasswordError) -> ApiError {
        match err {
            ForgotPasswordError::InvalidEmail(detail) => ApiError::invalid_email(&detail),
            ForgotPasswordError::RateLimited(throttled) => ApiError::rate_limited(throttled),
            ForgotPasswordError::Internal(internal) => internal.into(),
        }
    }
}

impl From<ResetPasswordError> for ApiError {
    fn from(err: ResetPasswordError) -> ApiError {
        match err {
            ResetPasswordError::WeakPassword(detail) => ApiError::weak_password(&detail),
            ResetPasswordError::InvalidToken => ApiError::invalid_one_time_token("password reset link"),
            ResetPasswordError::RateLimited(throttled) => ApiError::rate_limited(throttled),
            ResetPasswordError::Internal(internal) => internal.into(),
        }
    }
}

impl From<RefreshError> for ApiError {
    fn from(err: RefreshError) -> ApiError {
        match err {
            RefreshError::InvalidGrant(reason) => {
                log::info!("refresh refused: {reason}");
                ApiError::new(400, "invalid_grant", "the refresh token is invalid, expired or revoked")
            }
            RefreshError::InvalidScope => {
                ApiError::new(400, "invalid_scope", "the requested scope exceeds what was granted")
            }
            RefreshError::Internal(internal) => internal.into(),
        }
    }
}

impl From<CodeGrantError> for ApiError {
    fn from(err: CodeGrantError) -> ApiError {
        match err {
            CodeGrantError::InvalidRequest(detail) => ApiError::invalid_request(detail),
            CodeGrantError::InvalidGrant(reason) => {
                log::info!("authorization code refused: {reason}");
                ApiError::new(400, "invalid_grant", "the authorization code is invalid, expired or already used")
            }
            CodeGrantError::Internal(internal) => internal.into(),
        }
    }
}

impl From<ClientAuthError> for ApiError {
    fn from(err: ClientAuthError) -> ApiError {
        match err {
            ClientAuthError::InvalidClient { basic, reason } => {
                log::info!("client authentication failed: {reason}");
                ApiError {
                    challenge: basic.then_some("Basic realm=\"edgeid\""),
                    ..ApiError::new(401, "invalid_client", "client authentication failed")
                }
            }
            ClientAuthError::Internal(internal) => internal.into(),
        }
    }
}

impl From<RegisterError> for ApiError {
    fn from(err: RegisterError) -> ApiError {
        match err {
            RegisterError::Closed => ApiError::new(403, "access_denied", "client registration is closed"),
            RegisterError::InvalidToken => {
                ApiError::invalid_bearer_token(&"the registration token is missing or wrong")
            }
            RegisterError::Metadata(ClientMetadataError::InvalidRedirectUri(detail)) => {
                ApiError::new(400, "invalid_redirect_uri", detail)
            }
            RegisterError::Metadata(ClientMetadataError::InvalidClientMetadata(detail)) => {
                ApiError::new(400, "invalid_client_metadata", detail)
            }
            RegisterError::Internal(internal) => internal.into(),
        }
    }
}

impl From<UserinfoError> for ApiError {
    fn from(err: UserinfoError) -> ApiError {
        match err {
            UserinfoError::InvalidToken(detail) => ApiError::invalid_bearer_token(&detail),
            UserinfoError::SessionEnded => ApiError::invalid_bearer_token(&"session ended"),
            UserinfoError::Internal(internal) => internal.into(),
        }
    }
}
