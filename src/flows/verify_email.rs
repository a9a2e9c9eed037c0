//! Confirming an email address with the token from the verification mail.

use crate::domain::email::{Email, EmailError};
use crate::domain::opaque_token::TokenHash;
use crate::domain::rate_limit::BucketKind;
use crate::domain::short_code;
use crate::flows::throttle::{self, Subject, Throttled};
use crate::flows::{Context, Internal};
use crate::ports::{Crypto, Database, HttpClient};
use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum VerifyEmailError {
    #[error("verification token is unknown, expired or already used")]
    InvalidToken,
    #[error("invalid email: {0}")]
    InvalidEmail(#[from] EmailError),
    #[error("a code is six digits")]
    MalformedCode,
    #[error(transparent)]
    RateLimited(#[from] Throttled),
    #[error(transparent)]
    Internal(#[from] Internal),
}

pub async fn verify_email<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    presented: &str,
) -> Result<(), VerifyEmailError> {
    throttle::take(ctx, &[(BucketKind::TokenPerIp, Subject::Client)]).await??;
    let (bucket, hash) = TokenHash::routed(presented).map_err(|_| VerifyEmailError::InvalidToken)?;
    let nonce = ctx.new_id()?;
    match store::verify_email(&ctx.users(bucket), &hash, &nonce, ctx.now).await.map_err(Internal::from)? {
        true => Ok(()),
        false => Err(VerifyEmailError::InvalidToken),
    }
}

/// Confirms an email with the short code from the verification mail. Every attempt takes a
/// unit from the account's code budget, the client's (its /64 and /48), the email domain's and
/// the client's token budget first; a right code gives the code budgets' units back. The
/// account's budget is per address, so asking for a new mail does not buy more guesses, and
/// each code dies after `short_code::MAX_WRONG_TRIES` wrong ones or `CODE_TTL_SECONDS`.
pub async fn verify_email_with_code<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    raw_email: &str,
    raw_code: &str,
) -> Result<(), VerifyEmailError> {
    let email = Email::parse(raw_email)?;
    let code = short_code::normalise(raw_code).ok_or(VerifyEmailError::MalformedCode)?;
    let code_budgets = [BucketKind::CodePerAccount, BucketKind::CodePerIp, BucketKind::CodePerDomain];
    let budgets = [
        (BucketKind::CodePerAccount, Subject::Email(&email)),
        (BucketKind::CodePerIp, Subject::Client),
        (BucketKind::CodePerDomain, Subject::Domain(&email)),
        (BucketKind::TokenPerIp, Subject::Client),
    ];
    let taken = throttle::take(ctx, &budgets).await??;
    let code_hash = short_code::code_hash(&ctx.config.key_encryption_key.0, &email, &code);
    // A code mailed before a key-encryption-key rotation was hashed under the old key.
    let previous_hash = ctx
        .config
        .key_encryption_key_previous
        .as_ref()
        .map(|previous| short_code::code_hash(&previous.0, &email, &code));
    let nonce = ctx.new_id()?;
    let verified = store::verify_email_by_code(
        &ctx.users_of(&email),
        &email,
        [Some(code_hash.as_str()), previous_hash.as_deref()],
        &nonce,
        short_code::MAX_WRONG_TRIES,
        ctx.now,
    )
    .await
    .map_err(Internal::from)?;
    match verified {
        true => {
            throttle::give_back(ctx, taken.of_kinds(&code_budgets)).await?;
            Ok(())
        }
        false => Err(VerifyEmailError::InvalidToken),
    }
}
