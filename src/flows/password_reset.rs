//! "Forgot password": mailing a reset link, and setting a new password with it.

use chrono::Duration;

use crate::config::RESET_PASSWORD_TOKEN_TTL_SECONDS;
use crate::domain::email::{Email, EmailError};
use crate::domain::opaque_token::TokenHash;
use crate::domain::password::{hash_password, Password, PasswordPolicyError};
use crate::domain::rate_limit::{Bucket, BucketKind};
use crate::domain::shard::UserBucket;
use crate::flows::new_password::{accept_new_password, NewPasswordError};
use crate::flows::signup::take_mail_budget;
use crate::flows::throttle::{self, Subject, Throttled};
use crate::flows::{Context, Deferred, Internal};
use crate::mail::{self, Locale};
use crate::ports::{Crypto, Database, HttpClient};
use crate::store::{self, ClearedBudgets, NewEmailToken, Purpose};

#[derive(Debug, thiserror::Error)]
pub enum ForgotPasswordError {
    #[error("invalid email: {0}")]
    InvalidEmail(#[from] EmailError),
    #[error(transparent)]
    RateLimited(#[from] Throttled),
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// Accepts a "forgot password": the budgets now, the account after the response
/// ([`finish_forgot`]), so the caller cannot tell whether the address has an account.
pub async fn forgot_password<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    raw_email: &str,
) -> Result<(), ForgotPasswordError> {
    let email = Email::parse(raw_email)?;
    take_mail_budget(ctx, &email).await??;
    ctx.outbox.defer(Deferred::ForgotPassword { email });
    Ok(())
}

/// Mails a reset link when the address has an account (voiding its older links); does nothing
/// otherwise.
pub(crate) async fn finish_forgot<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    email: &Email,
) -> Result<(), Internal> {
    let bucket = UserBucket::of_email(email);
    let token = ctx.new_token(bucket)?;
    let issued = store::issue_token_for_email(
        &ctx.users(bucket),
        email,
        &NewEmailToken {
            purpose: Purpose::ResetPassword,
            hash: token.hash(),
            expires_at: ctx.now + Duration::seconds(RESET_PASSWORD_TOKEN_TTL_SECONDS),
            only_unverified: false,
            code_hash: None,
            code_expires_at: None,
        },
        ctx.now,
    )
    .await?;
    if let Some(locale) = issued {
        let key = ctx.new_id()?;
        let expires_at = ctx.now + Duration::seconds(RESET_PASSWORD_TOKEN_TTL_SECONDS);
        ctx.outbox.push(
            mail::reset_mail(ctx.config, Locale::from_tag(&locale), email, token.plaintext(), key)
                .expiring_at(expires_at),
        );
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ResetPasswordError {
    #[error("weak password: {0}")]
    WeakPassword(#[from] PasswordPolicyError),
    #[error("reset token is unknown, expired or already used")]
    InvalidToken,
    #[error(transparent)]
    RateLimited(#[from] Throttled),
    #[error(transparent)]
    Internal(#[from] Internal),
}

impl From<NewPasswordError> for ResetPasswordError {
    fn from(err: NewPasswordError) -> ResetPasswordError {
        match err {
            NewPasswordError::Weak(weak) => ResetPasswordError::WeakPassword(weak),
            NewPasswordError::Internal(internal) => ResetPasswordError::Internal(internal),
        }
    }
}

/// Sets a new password with a reset token; every session of the user ends.
pub async fn reset_password<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    presented: &str,
    raw_password: &str,
) -> Result<(), ResetPasswordError> {
    // The length policy first: a form with a short password can be fixed and sent again.
    Password::new_for_policy(raw_password)?;
    throttle::take(ctx, &[(BucketKind::TokenPerIp, Subject::Client)]).await??;
    let (bucket, hash) = TokenHash::routed(presented).map_err(|_| ResetPasswordError::InvalidToken)?;
    let users = ctx.users(bucket);
    // A cheap read first, so that a dead token costs no Argon2id run; the batch below checks
    // again and is the only thing that decides.
    let Some((_, owner_email)) =
        store::live_token_owner(&users, &hash, Purpose::ResetPassword, ctx.now).await.map_err(Internal::from)?
    else {
        return Err(ResetPasswordError::InvalidToken);
    };
    // Only for a live token does the password go to the breach check (and Argon2id).
    let password: Password = accept_new_password(ctx, raw_password).await?;
    let mut salt = [0u8; 16];
    ctx.crypto.fill(&mut salt).map_err(Internal::from)?;
    let password_hash = hash_password(&password, &salt, &ctx.config.password_hash).map_err(Internal::from)?;
    let nonce = ctx.new_id()?;
    // A reset proves the mailbox: the account's failed-login budgets start again, so a
    // stranger's guesses cannot keep its owner out once they have chosen a new password.
    let keyer = &ctx.config.bucket_keyer;
    let cleared = ClearedBudgets {
        buckets: vec![Bucket::new(BucketKind::LoginPerAccount, &owner_email, keyer).key],
        prefixes: vec![Bucket::account_prefix(BucketKind::LoginPerAccountNetwork, &owner_email, keyer)],
    };
    match store::reset_password(&users, &hash, &nonce, &password_hash, ctx.now).await.map_err(Internal::from)? {
        Some((email, locale, password_version)) => {
            // The reset has committed: a failure here leaves budgets that run out by themselves,
            // and must not make the answer (or the notice) say otherwise.
            if let Err(err) = store::clear_budgets(ctx.db, &cleared, password_version).await {
                log::error!("reset committed, but its budgets were not cleared: {err}");
            }
            // The owner hears of every change: if it was not them, the notice says what to do.
            if let Ok(email) = Email::parse(&email) {
                let key = ctx.new_id()?;
                ctx.outbox.push(mail::password_changed_mail(ctx.config, Locale::from_tag(&locale), &email, key));
            }
            Ok(())
        }
        None => Err(ResetPasswordError::InvalidToken),
    }
}
