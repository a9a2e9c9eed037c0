//! Sign-up and resending the verification email.

use chrono::Duration;

use crate::config::{RESET_PASSWORD_TOKEN_TTL_SECONDS, VERIFY_EMAIL_TOKEN_TTL_SECONDS};
use crate::domain::email::{Email, EmailError};
use crate::domain::password::{hash_password, Password, PasswordPolicyError};
use crate::domain::rate_limit::BucketKind;
use crate::flows::new_password::{accept_new_password, NewPasswordError};
use crate::flows::throttle::{self, Subject, Throttled};
use crate::flows::{Context, Internal};
use crate::mail;
use crate::ports::{Crypto, Database, HttpClient};
use crate::store::{self, NewOneTimeToken, NewUser, Purpose, SignupOutcome};

#[derive(Debug, thiserror::Error)]
pub enum SignupError {
    #[error("invalid email: {0}")]
    InvalidEmail(#[from] EmailError),
    #[error("weak password: {0}")]
    WeakPassword(#[from] PasswordPolicyError),
    #[error(transparent)]
    RateLimited(#[from] Throttled),
    #[error(transparent)]
    Internal(#[from] Internal),
}

impl From<NewPasswordError> for SignupError {
    fn from(err: NewPasswordError) -> SignupError {
        match err {
            NewPasswordError::Weak(weak) => SignupError::WeakPassword(weak),
            NewPasswordError::Internal(internal) => SignupError::Internal(internal),
        }
    }
}

/// Sign-up, resend and forgot all may mail the address: they share its budgets. Counted
/// whether or not the address has an account, so a refusal says nothing about it.
pub(crate) async fn take_mail_budget<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    email: &Email,
) -> Result<Result<throttle::Taken, Throttled>, Internal> {
    throttle::take(
        ctx,
        &[(BucketKind::MailPerIp, Subject::Client), (BucketKind::MailPerAddress, Subject::Email(email))],
    )
    .await
}

/// Creates an unverified account and mails a verification link. For a registered address
/// the caller sees exactly the same result, and the owner gets an "already registered" mail.
pub async fn signup<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    raw_email: &str,
    raw_password: &str,
) -> Result<(), SignupError> {
    let email = Email::parse(raw_email)?;
    Password::new_for_policy(raw_password)?;
    take_mail_budget(ctx, &email).await??;
    let password = accept_new_password(ctx, raw_password).await?;
    // Hash before looking anything up, so both outcomes cost one Argon2id run.
    let mut salt = [0u8; 16];
    ctx.crypto.fill(&mut salt).map_err(Internal::from)?;
    let password_hash = hash_password(&password, &salt, &ctx.config.password_hash).map_err(Internal::from)?;

    let user_id = ctx.new_id()?;
    let token = ctx.new_token()?;
    let outcome = store::create_user(
        ctx.db,
        &NewUser { id: &user_id, email: &email, password_hash: &password_hash },
        &NewOneTimeToken {
            user_id: &user_id,
            purpose: Purpose::VerifyEmail,
            hash: token.hash(),
            expires_at: ctx.now + Duration::seconds(VERIFY_EMAIL_TOKEN_TTL_SECONDS),
        },
        ctx.now,
    )
    .await
    .map_err(Internal::from)?;

    match outcome {
        SignupOutcome::Created => {
            let mail = mail::verification_mail(&ctx.config.public_url, &email, token.plaintext(), ctx.new_id()?);
            ctx.outbox.push(mail);
        }
        SignupOutcome::AlreadyRegistered => mail_already_registered(ctx, &email).await?,
    }
    Ok(())
}

async fn mail_already_registered<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    email: &Email,
) -> Result<(), Internal> {
    // The row can only vanish between the two statements if the account is deleted meanwhile;
    // then there is nobody to tell.
    let Some(user) = store::find_user_by_email(ctx.db, email).await? else {
        return Ok(());
    };
    let token = ctx.new_token()?;
    store::insert_one_time_token(
        ctx.db,
        &NewOneTimeToken {
            user_id: &user.id,
            purpose: Purpose::ResetPassword,
            hash: token.hash(),
            expires_at: ctx.now + Duration::seconds(RESET_PASSWORD_TOKEN_TTL_SECONDS),
        },
        ctx.now,
    )
    .await?;
    ctx.outbox.push(mail::already_registered_mail(&ctx.config.public_url, email, token.plaintext(), ctx.new_id()?));
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    #[error("invalid email: {0}")]
    InvalidEmail(#[from] EmailError),
    #[error(transparent)]
    RateLimited(#[from] Throttled),
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// Mails a fresh verification link if the address belongs to an unverified account; does
/// nothing otherwise. The caller cannot tell which happened.
pub async fn resend_verification<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    raw_email: &str,
) -> Result<(), ResendError> {
    let email = Email::parse(raw_email)?;
    take_mail_budget(ctx, &email).await??;
    let user = store::find_user_by_email(ctx.db, &email).await.map_err(Internal::from)?;
    let Some(user) = user.filter(|user| !user.email_verified) else {
        return Ok(());
    };
    let token = ctx.new_token()?;
    store::insert_one_time_token(
        ctx.db,
        &NewOneTimeToken {
            user_id: &user.id,
            purpose: Purpose::VerifyEmail,
            hash: token.hash(),
            expires_at: ctx.now + Duration::seconds(VERIFY_EMAIL_TOKEN_TTL_SECONDS),
        },
        ctx.now,
    )
    .await
    .map_err(Internal::from)?;
    ctx.outbox.push(mail::verification_mail(&ctx.config.public_url, &email, token.plaintext(), ctx.new_id()?));
    Ok(())
}
