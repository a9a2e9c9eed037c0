//! Logging in with email and password: one session, one refresh token, signed JWTs.

use chrono::Duration;

use crate::domain::email::{Email, EmailError};
use crate::domain::password::{verify_password, Password, DUMMY_PASSWORD_HASH};
use crate::domain::tokens::{issue_tokens, Subject};
use crate::flows::{Context, Internal};
use crate::ports::{Crypto, Database};
use crate::store::{self, NewSession};

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("invalid email: {0}")]
    InvalidEmail(#[from] EmailError),
    /// Unknown email or wrong password: deliberately one variant.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("email not verified")]
    EmailNotVerified,
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// The token response of API.md §Tokens.
#[derive(Debug, Clone)]
pub struct LoginTokens {
    pub access_token: String,
    pub id_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
}

pub async fn login<D: Database, E: Crypto>(
    ctx: &Context<'_, D, E>,
    raw_email: &str,
    raw_password: &str,
    nonce: Option<&str>,
) -> Result<LoginTokens, LoginError> {
    let email = Email::parse(raw_email)?;
    let password = Password::presented(raw_password);
    let user = store::find_user_by_email(ctx.db, &email).await.map_err(Internal::from)?;
    // An unknown email costs one Argon2id run too, against a hash nobody's password matches.
    let stored_hash = user.as_ref().map_or(DUMMY_PASSWORD_HASH, |user| user.password_hash.as_str());
    let password_matches = verify_password(&password, stored_hash).map_err(Internal::from)?;
    let user = match user {
        Some(user) if password_matches => user,
        _ => return Err(LoginError::InvalidCredentials),
    };
    if ctx.config.require_email_verification && !user.email_verified {
        return Err(LoginError::EmailNotVerified);
    }

    let session_id = ctx.new_id()?;
    let refresh_token = ctx.new_token()?;
    let session_expires_at = ctx.now + Duration::seconds(ctx.config.session_absolute_ttl_seconds);
    let refresh_expires_at = ctx.now + Duration::seconds(ctx.config.refresh_token_ttl_seconds);
    store::start_session(
        ctx.db,
        &NewSession {
            id: &session_id,
            user_id: &user.id,
            expires_at: session_expires_at,
            refresh_token_hash: refresh_token.hash(),
            refresh_token_expires_at: refresh_expires_at.min(session_expires_at),
        },
        ctx.now,
    )
    .await
    .map_err(Internal::from)?;

    let keys = ctx.signing_keys().await?;
    let signed = issue_tokens(
        ctx.config,
        &keys,
        ctx.crypto,
        ctx.now,
        ctx.new_id()?,
        &Subject {
            user_id: &user.id,
            email: &user.email,
            email_verified: user.email_verified,
            session_id: &session_id,
            auth_time: ctx.now,
            nonce,
        },
    )
    .await
    .map_err(Internal::from)?;
    Ok(LoginTokens {
        access_token: signed.access_token,
        id_token: signed.id_token,
        refresh_token: refresh_token.plaintext().to_owned(),
        expires_in: signed.expires_in,
    })
}
