//! Sessions after login: rotating refresh tokens (RFC 6749 §6 with RFC 9700 §4.14 reuse
//! detection), ending sessions (logout, RFC 7009 revocation) and userinfo.

use chrono::{DateTime, Duration, Utc};

use crate::domain::opaque_token::{open_successor, seal_successor, TokenHash};
use crate::domain::signing::{token_header, TokenRejected};
use crate::domain::tokens::{issue_tokens, verify_access_token, Subject};
use crate::flows::login::LoginTokens;
use crate::flows::{Context, Internal};
use crate::ports::{Crypto, Database, HttpClient};
use crate::store::{self, RefreshTokenRecord};

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Unknown, expired, revoked or reused: RFC 6749 `invalid_grant` for all of them.
    #[error("refresh token is invalid: {0}")]
    InvalidGrant(&'static str),
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// Exchanges a refresh token for a new one and fresh access and ID tokens.
///
/// - The first exchange of a live token wins (one conditional `UPDATE`).
/// - The same token presented again within the grace window, while its successor is unused, is a
///   client retrying after a lost response: it gets that same successor, so no second branch of
///   the family ever exists, however many requests race.
/// - Any other reuse means the token was copied: the whole family (the session) is revoked.
pub async fn refresh<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    presented: &str,
) -> Result<LoginTokens, RefreshError> {
    let hash = TokenHash::of_presented(presented).map_err(|_| RefreshError::InvalidGrant("malformed"))?;
    let successor = ctx.new_token()?;
    let sealed = seal_successor(presented, &successor, ctx.crypto).map_err(Internal::from)?;
    let sliding_expiry = ctx.now + Duration::seconds(ctx.config.refresh_token_ttl_seconds);
    // One round trip: the rotation and the record, in one batch.
    let (won, record) = store::rotate_refresh_token(ctx.db, &hash, successor.hash(), &sealed, sliding_expiry, ctx.now)
        .await
        .map_err(Internal::from)?;
    let record = record.ok_or(RefreshError::InvalidGrant("unknown"))?;
    if won {
        return Ok(issue(ctx, &record, successor.plaintext().to_owned()).await?);
    }
    let now = ctx.now.timestamp();
    if record.revoked || record.session_revoked {
        return Err(RefreshError::InvalidGrant("revoked"));
    }
    let Some(consumed_at) = record.consumed_at else {
        // Not consumed, yet the rotation did not apply: expired, or its session is.
        return Err(RefreshError::InvalidGrant("expired"));
    };
    let within_grace = now - consumed_at <= ctx.config.refresh_token_reuse_grace_seconds;
    let retried_successor = record.successor_sealed.as_deref().and_then(|sealed| open_successor(presented, sealed));
    match retried_successor {
        Some(successor) if within_grace && !record.successor_used && record.session_expires_at > now => {
            Ok(issue(ctx, &record, successor).await?)
        }
        _ => {
            log::warn!("refresh token reuse detected; revoking session {}", record.session_id);
            store::revoke_family(ctx.db, &hash, ctx.now).await.map_err(Internal::from)?;
            Err(RefreshError::InvalidGrant("reused"))
        }
    }
}

async fn issue<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    record: &RefreshTokenRecord,
    refresh_token: String,
) -> Result<LoginTokens, Internal> {
    let keys = ctx.signing_keys().await?;
    let auth_time = DateTime::<Utc>::from_timestamp(record.auth_time, 0).unwrap_or(ctx.now);
    let signed = issue_tokens(
        ctx.config,
        &keys,
        ctx.crypto,
        ctx.now,
        ctx.new_id()?,
        &Subject {
            user_id: &record.user_id,
            email: &record.email,
            email_verified: record.email_verified,
            session_id: &record.session_id,
            auth_time,
            nonce: None,
        },
    )
    .await?;
    Ok(LoginTokens {
        access_token: signed.access_token,
        id_token: signed.id_token,
        refresh_token,
        expires_in: signed.expires_in,
    })
}

/// Ends the session a refresh token belongs to (logout, RFC 7009 revocation). Anything that is
/// not one of our refresh tokens is ignored: the caller learns nothing either way.
pub async fn end_session<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    presented: &str,
) -> Result<(), Internal> {
    let Ok(hash) = TokenHash::of_presented(presented) else {
        return Ok(());
    };
    Ok(store::revoke_family(ctx.db, &hash, ctx.now).await?)
}

#[derive(Debug, thiserror::Error)]
pub enum UserinfoError {
    #[error("access token refused: {0}")]
    InvalidToken(#[from] TokenRejected),
    /// Its session has ended, or the key that signed it has been marked compromised (checked
    /// in the same query).
    #[error("the session of the access token has ended, or its signing key is marked compromised")]
    SessionEnded,
    #[error(transparent)]
    Internal(#[from] Internal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Userinfo {
    pub sub: String,
    pub email: String,
    pub email_verified: bool,
}

/// The claims about the user behind a valid access token whose session is still live.
pub async fn userinfo<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    access_token: &str,
) -> Result<Userinfo, UserinfoError> {
    let keys = ctx.signing_keys().await?;
    let claims = verify_access_token(ctx.config, &keys, ctx.now, access_token)?;
    // Verified, so the header parses and names a published key.
    let header = token_header(access_token)?;
    let kid = header.get("kid").and_then(serde_json::Value::as_str).unwrap_or_default();
    let user = store::find_session_user(ctx.db, &claims.sub, &claims.sid, kid, ctx.now)
        .await
        .map_err(Internal::from)?
        .ok_or(UserinfoError::SessionEnded)?;
    Ok(Userinfo { sub: user.id, email: user.email, email_verified: user.email_verified })
}
