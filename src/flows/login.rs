//! Logging in with email and password: one session, one refresh token, signed JWTs.

use chrono::Duration;

use crate::domain::email::{Email, EmailError};
use crate::domain::password::{dummy_password_hash, hash_password, needs_rehash, verify_password, Password};
use crate::domain::rate_limit::{Bucket, BucketKind};
use crate::domain::shard::UserBucket;
use crate::domain::tokens::{issue_tokens, Subject, LOGIN_SCOPE};
use crate::flows::throttle::{self, Throttled};
use crate::flows::{user_move, Context, Deferred, Internal};
use crate::ports::{Crypto, Database, HttpClient};
use crate::store::{self, KnownNetwork, NewSession, SessionKind};

/// How long a network an account signed in from stays exempt from the account-wide ceiling
/// on failed logins, after its last successful sign-in.
pub const KNOWN_NETWORK_DAYS: i64 = 90;

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

/// The token response of API.md §Tokens (RFC 6749 §5.1).
#[derive(Debug, Clone)]
pub struct LoginTokens {
    pub access_token: String,
    /// With the `openid` scope.
    pub id_token: Option<String>,
    /// With `offline_access`, for a client that may use the refresh grant.
    pub refresh_token: Option<String>,
    pub expires_in: i64,
    /// The granted scopes.
    pub scope: String,
}

/// A browser (SSO) session just started by the hosted login page: the cookie's value (shown
/// only in its `Set-Cookie`) and the session's id (the `sid` of its tokens).
#[derive(Debug, Clone)]
pub struct BrowserSignIn {
    pub cookie: String,
    pub session_id: String,
}

/// A password proven right: the account, the budget units to give back and a re-hash, for the
/// batch that starts the session.
struct Proven {
    user: store::UserRecord,
    bucket: UserBucket,
    returned: Vec<store::BucketDraw>,
    rehashed: Option<String>,
    known_network: String,
}

/// A login through the JSON API (`/v1/login`): a session, one refresh token, signed JWTs.
pub async fn login<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    raw_email: &str,
    raw_password: &str,
    nonce: Option<&str>,
) -> Result<LoginTokens, LoginError> {
    let proven = prove_password(ctx, raw_email, raw_password).await?;
    let session_id = ctx.new_id_in(proven.bucket)?;
    let refresh_token = ctx.new_token(proven.bucket)?;
    let session_expires_at = ctx.now + Duration::seconds(ctx.config.session_absolute_ttl_seconds);
    let refresh_expires_at = ctx.now + Duration::seconds(ctx.config.refresh_token_ttl_seconds);
    let kind = SessionKind::Api {
        refresh_token_hash: refresh_token.hash(),
        refresh_token_expires_at: refresh_expires_at.min(session_expires_at),
    };
    start(ctx, &proven, &session_id, kind).await?;
    let user = &proven.user;
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
        refresh_token: Some(refresh_token.plaintext().to_owned()),
        expires_in: signed.expires_in,
        scope: LOGIN_SCOPE.to_owned(),
    })
}

/// The hosted login page: the same checks and budgets as [`login`], and a browser (SSO)
/// session instead of tokens, whose cookie any later authorization request brings.
pub async fn sign_in_browser<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    raw_email: &str,
    raw_password: &str,
) -> Result<BrowserSignIn, LoginError> {
    let proven = prove_password(ctx, raw_email, raw_password).await?;
    let session_id = ctx.new_id_in(proven.bucket)?;
    let cookie = ctx.new_token(proven.bucket)?;
    start(ctx, &proven, &session_id, SessionKind::Browser { cookie_hash: cookie.hash() }).await?;
    Ok(BrowserSignIn { cookie: cookie.plaintext().to_owned(), session_id })
}

/// The login policy (README, "Security"): every attempt first takes a unit from the client's
/// budget, from the account's budget on the client's network and — unless the account signed
/// in from that network within `KNOWN_NETWORK_DAYS` — from the account's ceiling across all
/// networks, in the same round trip as the account's read; a right password gives the
/// account's units back and remembers the network (in the batch that starts the session).
/// While any is spent the login is refused (`429`) before any password is hashed — a refusal
/// costs no Argon2id, so a flood cannot use it to burn CPU — and since the budgets are drawn
/// whether or not the address has an account, a refusal says nothing about it. Unknown
/// addresses cost one Argon2id run, as wrong passwords do.
async fn prove_password<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    raw_email: &str,
    raw_password: &str,
) -> Result<Proven, LoginError> {
    let email = Email::parse(raw_email)?;
    let password = Password::presented(raw_password);
    let budgets = [
        (BucketKind::LoginPerIp, throttle::Subject::Client),
        (BucketKind::LoginPerAccountNetwork, throttle::Subject::AccountOnNetwork(&email)),
        (BucketKind::LoginPerAccount, throttle::Subject::AccountUnlessKnownNetwork(&email)),
    ];
    let bucket = UserBucket::of_email(&email);
    let users = ctx.users(bucket);
    let (taken, outcomes) =
        throttle::take_with(ctx, &budgets, Some((&users, vec![store::find_user_statement(&email)]))).await?;
    let taken = taken?;
    // An account moving to another bucket is in two shards for an instant: the move's switch
    // says which row is the account.
    let user = user_move::as_seen_by_login(ctx, store::user_from(outcomes.first()).map_err(Internal::from)?).await?;
    // An unknown email costs one Argon2id run too, against a hash nobody's password matches
    // that costs what the configured parameters cost (which every account converges on below).
    let dummy_hash = dummy_password_hash(&ctx.config.password_hash);
    let stored_hash = user.as_ref().map_or(dummy_hash.as_str(), |user| user.password_hash.as_str());
    let password_matches = verify_password(&password, stored_hash).map_err(Internal::from)?;
    let user = match user {
        Some(user) if password_matches => user,
        _ => return Err(LoginError::InvalidCredentials),
    };
    // The password was right: the account's units go back (with the session, below).
    let returned = taken.of_kinds(&[BucketKind::LoginPerAccountNetwork, BucketKind::LoginPerAccount]);
    let rehashed = rehash_if_other_parameters(ctx, &user.password_hash, &password)?;
    if ctx.config.require_email_verification && !user.email_verified {
        // Best effort: a failed re-hash is tried again at the next login, never refuses this one.
        if let Some(rehashed) = &rehashed {
            if let Err(err) =
                store::upgrade_password_hash(&users, &user.id, &user.password_hash, rehashed, ctx.now).await
            {
                log::warn!("password re-hash failed for user {}: {err}", user.id);
            }
        }
        throttle::give_back(ctx, returned).await?;
        return Err(LoginError::EmailNotVerified);
    }
    let known_network = throttle::known_network_key(ctx, &email);
    Ok(Proven { user, bucket, returned: returned.draws(), rehashed, known_network })
}

/// Starts the session of a proven login, if the password is still the one it proved.
async fn start<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    proven: &Proven,
    session_id: &str,
    kind: SessionKind<'_>,
) -> Result<(), LoginError> {
    let user = &proven.user;
    let started = store::start_session(
        &ctx.users(proven.bucket),
        &NewSession {
            id: session_id,
            user_id: &user.id,
            expires_at: ctx.now + Duration::seconds(ctx.config.session_absolute_ttl_seconds),
            verified_password_hash: &user.password_hash,
            password_version: user.password_version,
            rehashed_password: proven.rehashed.as_deref(),
            kind,
        },
        ctx.now,
    )
    .await
    .map_err(Internal::from)?;
    if started {
        ctx.outbox.defer(Deferred::AfterSignIn {
            returned: proven.returned.clone(),
            known_network: KnownNetwork {
                key: proven.known_network.clone(),
                expires_at: (ctx.now + Duration::days(KNOWN_NETWORK_DAYS)).timestamp(),
                account_prefix: Bucket::account_prefix(
                    BucketKind::LoginPerAccountNetwork,
                    proven.user.email.as_str(),
                    &ctx.config.bucket_keyer,
                ),
                password_version: proven.user.password_version,
            },
        });
    }
    if !started {
        // The password changed between its check and now (a reset committed): the password
        // this login proved is no longer the account's, and nothing was started.
        log::info!("login of user {} lost a race with a password change", user.id);
        return Err(LoginError::InvalidCredentials);
    }
    Ok(())
}

/// A fresh hash of the password with the configured parameters when the stored one was made
/// with others, stronger or weaker (now that the plaintext is at hand, the only moment it is).
fn rehash_if_other_parameters<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    stored_hash: &str,
    password: &Password,
) -> Result<Option<String>, Internal> {
    if !needs_rehash(stored_hash, &ctx.config.password_hash) {
        return Ok(None);
    }
    let mut salt = [0u8; 16];
    ctx.crypto.fill(&mut salt)?;
    Ok(Some(hash_password(password, &salt, &ctx.config.password_hash)?))
}
