//! Logging in with email and password: one session, one refresh token, signed JWTs.

use chrono::Duration;

use crate::domain::email::{Email, EmailError};
use crate::domain::password::{dummy_password_hash, hash_password, needs_rehash, verify_password, Password};
use crate::domain::rate_limit::BucketKind;
use crate::domain::tokens::{issue_tokens, Subject};
use crate::flows::throttle::{self, Throttled};
use crate::flows::{Context, Internal};
use crate::ports::{Crypto, Database, HttpClient};
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
    RateLimited(#[from] Throttled),
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

pub async fn login<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    raw_email: &str,
    raw_password: &str,
    nonce: Option<&str>,
) -> Result<LoginTokens, LoginError> {
    let email = Email::parse(raw_email)?;
    let password = Password::presented(raw_password);
    let dummy_hash = dummy_password_hash(&ctx.config.password_hash);
    // Every attempt takes a unit from the client's and the account's budgets before the
    // password is looked at, so concurrent guesses are counted exactly; a right password gives
    // the account's unit back. While throttled even the right password is refused, after the
    // same Argon2id run as any other failure: the answer and its timing say nothing.
    let budgets = [
        (BucketKind::LoginPerIp, throttle::Subject::Client),
        (BucketKind::LoginPerAccount, throttle::Subject::Email(&email)),
    ];
    // The account is read in the same round trip as the budgets.
    let (taken, outcomes) = throttle::take_with(ctx, &budgets, vec![store::find_user_statement(&email)]).await?;
    let taken = match taken {
        Ok(taken) => taken,
        Err(throttled) => {
            let _ = verify_password(&password, &dummy_hash);
            return Err(throttled.into());
        }
    };
    let user = store::user_from(outcomes.first()).map_err(Internal::from)?;
    // An unknown email costs one Argon2id run too, against a hash nobody's password matches.
    let stored_hash = user.as_ref().map_or(dummy_hash.as_str(), |user| user.password_hash.as_str());
    let password_matches = verify_password(&password, stored_hash).map_err(Internal::from)?;
    let user = match user {
        Some(user) if password_matches => user,
        _ => return Err(LoginError::InvalidCredentials),
    };
    // The password was right: the account's unit goes back (with the session, below).
    let returned = taken.of_kind(BucketKind::LoginPerAccount);
    // Best effort: a failed upgrade is tried again at the next login, never refuses this one.
    if let Err(err) = upgrade_hash_if_weaker(ctx, &user.id, &user.password_hash, &password).await {
        log::warn!("password hash upgrade failed for user {}: {err}", user.id);
    }
    if ctx.config.require_email_verification && !user.email_verified {
        throttle::give_back(ctx, returned).await?;
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
        &returned.draws(),
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

/// Re-hashes a password whose stored hash is weaker than the configured parameters, now that
/// the plaintext is at hand (the only moment it is).
async fn upgrade_hash_if_weaker<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    user_id: &str,
    stored_hash: &str,
    password: &Password,
) -> Result<(), Internal> {
    if !needs_rehash(stored_hash, &ctx.config.password_hash) {
        return Ok(());
    }
    let mut salt = [0u8; 16];
    ctx.crypto.fill(&mut salt)?;
    let upgraded = hash_password(password, &salt, &ctx.config.password_hash)?;
    if store::upgrade_password_hash(ctx.db, user_id, stored_hash, &upgraded, ctx.now).await? {
        log::info!("upgraded the password hash of user {user_id} to the configured parameters");
    }
    Ok(())
}
