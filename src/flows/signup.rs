//! Sign-up and resending the verification email.

use chrono::Duration;

use crate::config::{RESET_PASSWORD_TOKEN_TTL_SECONDS, VERIFY_EMAIL_TOKEN_TTL_SECONDS};
use crate::domain::email::{Email, EmailError};
use crate::domain::password::{hash_password, Password, PasswordPolicyError};
use crate::domain::rate_limit::BucketKind;
use crate::domain::shard::UserBucket;
use crate::domain::short_code;
use crate::flows::new_password::{accept_new_password, NewPasswordError};
use crate::flows::throttle::{self, Subject, Throttled};
use crate::flows::{Context, Deferred, Internal};
use crate::mail::{self, Locale};
use crate::ports::{Crypto, Database, HttpClient};
use crate::store::{self, NewEmailToken, NewOneTimeToken, NewUser, Purpose, SignupOutcome};

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

/// Sign-up, resend and forgot all may mail the address: they share its budgets (the mailbox's:
/// `local+tag@domain` is `local@domain`). Counted whether or not the address has an account,
/// so a refusal says nothing about it.
pub(crate) async fn take_mail_budget<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    email: &Email,
) -> Result<Result<throttle::Taken, Throttled>, Internal> {
    // The address's shard is asked nothing about the address, only whether it serves the
    // bucket now (its fence, at the same time as the budgets): a bucket between shards gets a
    // 503 before anything is accepted, rather than account work that would fail after the 202.
    let users = ctx.users_of(email);
    let (taken, _) = throttle::take_with(
        ctx,
        &[(BucketKind::MailPerIp, Subject::Client), (BucketKind::MailPerAddress, Subject::Mailbox(email))],
        Some((&users, vec![crate::ports::Statement::new("SELECT 1 AS serving", [])])),
    )
    .await?;
    Ok(taken)
}

/// Accepts a sign-up: checks the address and the password, takes the mail budgets, hashes the
/// password, and leaves the account to [`finish_signup`] after the response. Whether the
/// address had an account, and which, changes nothing before the response: not its status, its
/// body, its timing, nor what it writes (the budgets, drawn for every address alike).
pub async fn signup<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    raw_email: &str,
    raw_password: &str,
) -> Result<(), SignupError> {
    let email = Email::parse(raw_email)?;
    Password::new_for_policy(raw_password)?;
    let taken = take_mail_budget(ctx, &email).await??;
    let password = match accept_new_password(ctx, raw_password).await {
        Ok(password) => password,
        // A refused password sends nothing: it must not spend the address's mail budget.
        Err(err) => {
            throttle::give_back(ctx, taken).await?;
            return Err(err.into());
        }
    };
    let mut salt = [0u8; 16];
    ctx.crypto.fill(&mut salt).map_err(Internal::from)?;
    let password_hash = hash_password(&password, &salt, &ctx.config.password_hash).map_err(Internal::from)?;
    let locale = Locale::from_accept_language(ctx.accept_language);
    ctx.outbox.defer(Deferred::Signup { email, password_hash, locale });
    Ok(())
}

/// The account side of a sign-up, after the response (`store::create_user`): a new account
/// gets its verification mail; an account nobody verified takes this sign-up's password and
/// gets a fresh verification mail (every older link and code is void); a verified account's
/// owner gets an "already registered" mail with a reset link.
pub(crate) async fn finish_signup<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    email: &Email,
    password_hash: &str,
    locale: Locale,
) -> Result<(), Internal> {
    let bucket = UserBucket::of_email(email);
    let user_id = ctx.new_id()?;
    let verification = ctx.new_token(bucket)?;
    let code = short_code::generate(ctx.crypto)?;
    let code_hash = short_code::code_hash(&ctx.config.key_encryption_key.0, email, &code);
    let reset = ctx.new_token(bucket)?;
    let outcome = store::create_user(
        &ctx.users(bucket),
        &NewUser { id: &user_id, email, password_hash, locale: locale.tag() },
        &NewOneTimeToken {
            user_id: &user_id,
            purpose: Purpose::VerifyEmail,
            hash: verification.hash(),
            expires_at: ctx.now + Duration::seconds(VERIFY_EMAIL_TOKEN_TTL_SECONDS),
            code_hash: Some(&code_hash),
            code_expires_at: Some(ctx.now + Duration::seconds(short_code::CODE_TTL_SECONDS)),
        },
        &NewOneTimeToken {
            user_id: &user_id,
            purpose: Purpose::ResetPassword,
            hash: reset.hash(),
            expires_at: ctx.now + Duration::seconds(RESET_PASSWORD_TOKEN_TTL_SECONDS),
            code_hash: None,
            code_expires_at: None,
        },
        ctx.config.require_email_verification,
        ctx.now,
    )
    .await?;
    let key = ctx.new_id()?;
    let verification_expires_at = ctx.now + Duration::seconds(VERIFY_EMAIL_TOKEN_TTL_SECONDS);
    let reset_expires_at = ctx.now + Duration::seconds(RESET_PASSWORD_TOKEN_TTL_SECONDS);
    ctx.outbox.push(match outcome {
        SignupOutcome::Created => {
            mail::verification_mail(ctx.config, locale, email, verification.plaintext(), &code, key)
                .expiring_at(verification_expires_at)
        }
        SignupOutcome::ReplacedUnverified { locale } => {
            mail::verification_mail(ctx.config, Locale::from_tag(&locale), email, verification.plaintext(), &code, key)
                .expiring_at(verification_expires_at)
        }
        SignupOutcome::AlreadyRegistered { locale } => {
            mail::already_registered_mail(ctx.config, Locale::from_tag(&locale), email, reset.plaintext(), key)
                .expiring_at(reset_expires_at)
        }
    });
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

/// Accepts a resend: the budgets now, the account after the response ([`finish_resend`]). The
/// caller cannot tell whether a mail goes out.
pub async fn resend_verification<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    raw_email: &str,
) -> Result<(), ResendError> {
    let email = Email::parse(raw_email)?;
    take_mail_budget(ctx, &email).await??;
    ctx.outbox.defer(Deferred::ResendVerification { email });
    Ok(())
}

/// Mails a fresh verification link and code if the address belongs to an unverified account;
/// does nothing otherwise. Only the newest code is live.
pub(crate) async fn finish_resend<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    email: &Email,
) -> Result<(), Internal> {
    let bucket = UserBucket::of_email(email);
    let token = ctx.new_token(bucket)?;
    let code = short_code::generate(ctx.crypto)?;
    let code_hash = short_code::code_hash(&ctx.config.key_encryption_key.0, email, &code);
    let issued = store::issue_token_for_email(
        &ctx.users(bucket),
        email,
        &NewEmailToken {
            purpose: Purpose::VerifyEmail,
            hash: token.hash(),
            expires_at: ctx.now + Duration::seconds(VERIFY_EMAIL_TOKEN_TTL_SECONDS),
            only_unverified: true,
            code_hash: Some(&code_hash),
            code_expires_at: Some(ctx.now + Duration::seconds(short_code::CODE_TTL_SECONDS)),
        },
        ctx.now,
    )
    .await?;
    if let Some(locale) = issued {
        let key = ctx.new_id()?;
        let locale = Locale::from_tag(&locale);
        let expires_at = ctx.now + Duration::seconds(VERIFY_EMAIL_TOKEN_TTL_SECONDS);
        ctx.outbox.push(
            mail::verification_mail(ctx.config, locale, email, token.plaintext(), &code, key).expiring_at(expires_at),
        );
    }
    Ok(())
}
