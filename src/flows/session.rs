//! Sessions after login: rotating refresh tokens (RFC 6749 §6 with RFC 9700 §4.14 reuse
//! detection), ending sessions (logout, RFC 7009 revocation) and userinfo.

use chrono::{DateTime, Duration, Utc};

use crate::domain::authorization::covers;
use crate::domain::opaque_token::{open_successor, seal_successor, TokenHash};
use crate::domain::shard::UserBucket;
use crate::domain::signing::{token_header, TokenRejected};
use crate::domain::tokens::{issue_grant_tokens, issue_tokens, verify_access_token, Grant, Subject, LOGIN_SCOPE};
use crate::flows::authorization_code::{grant_jti, id_token_alg, keys_for_id_tokens_of};
use crate::flows::client_auth::Caller;
use crate::flows::login::LoginTokens;
use crate::flows::{issued_bucket, Context, Internal};
use crate::ports::{Crypto, Database, HttpClient};
use crate::store::{self, RefreshTokenRecord};

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Unknown, expired, revoked or reused: RFC 6749 `invalid_grant` for all of them.
    #[error("refresh token is invalid: {0}")]
    InvalidGrant(&'static str),
    /// The `scope` asked for is not within the grant's (RFC 6749 §6).
    #[error("the requested scope exceeds the grant's")]
    InvalidScope,
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
    caller: &Caller,
    presented: &str,
    narrowed_scope: Option<&str>,
) -> Result<LoginTokens, RefreshError> {
    let (bucket, hash) = TokenHash::routed(presented).map_err(|_| RefreshError::InvalidGrant("malformed"))?;
    let users = ctx.users(bucket);
    let client_id = match caller {
        Caller::FirstParty => None,
        Caller::Client(client) => Some(client.client_id.as_str()),
    };
    // Narrowing is checked before the rotation, so that a refused scope costs the client
    // nothing (one more round trip, only for requests that narrow).
    if let Some(scope) = narrowed_scope {
        let record = store::find_refresh_token(&users, &hash).await.map_err(Internal::from)?;
        match record {
            Some(record) if record.client_id.as_deref() == client_id => {
                let granted = record.scope.as_deref().unwrap_or(LOGIN_SCOPE);
                let asked: Vec<String> = scope.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect();
                if !covers(granted, &asked) {
                    return Err(RefreshError::InvalidScope);
                }
            }
            _ => return Err(RefreshError::InvalidGrant("unknown, or another client's")),
        }
    }
    // The key a client's ID token needs, before the token is spent (as the code grant does).
    if let Caller::Client(client) = caller {
        keys_for_id_tokens_of(ctx, client).await?;
    }
    let successor = ctx.new_token(bucket)?;
    let sealed = seal_successor(presented, &successor, ctx.crypto).map_err(Internal::from)?;
    let sliding_expiry = ctx.now + Duration::seconds(ctx.config.refresh_token_ttl_seconds);
    // One round trip: the rotation and the record, in one batch.
    let (won, record) =
        store::rotate_refresh_token(&users, client_id, &hash, successor.hash(), &sealed, sliding_expiry, ctx.now)
            .await
            .map_err(Internal::from)?;
    let record = record.ok_or(RefreshError::InvalidGrant("unknown"))?;
    // Another client's token: refused, and nothing about it changes (its owner keeps it).
    if record.client_id.as_deref() != client_id {
        return Err(RefreshError::InvalidGrant("another client's"));
    }
    if won {
        return Ok(issue(ctx, caller, &record, successor.plaintext().to_owned(), narrowed_scope).await?);
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
            Ok(issue(ctx, caller, &record, successor, narrowed_scope).await?)
        }
        _ => {
            log::warn!("refresh token reuse detected; revoking session {}", record.session_id);
            store::revoke_family(&users, &hash, ctx.now).await.map_err(Internal::from)?;
            Err(RefreshError::InvalidGrant("reused"))
        }
    }
}

async fn issue<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    caller: &Caller,
    record: &RefreshTokenRecord,
    refresh_token: String,
    narrowed_scope: Option<&str>,
) -> Result<LoginTokens, Internal> {
    let keys = ctx.signing_keys().await?;
    let auth_time = DateTime::<Utc>::from_timestamp(record.auth_time, 0).unwrap_or(ctx.now);
    // A code-flow grant's tokens name the browser session they were issued in.
    let sid = record.browser_session_id.as_deref().unwrap_or(&record.session_id);
    let subject = Subject {
        user_id: &record.user_id,
        email: &record.email,
        email_verified: record.email_verified,
        session_id: sid,
        auth_time,
        nonce: None,
    };
    let granted = record.scope.as_deref().unwrap_or(LOGIN_SCOPE);
    let scope = narrowed_scope.map(|asked| narrowed(granted, asked)).unwrap_or_else(|| granted.to_owned());
    let signed = match caller {
        Caller::FirstParty if narrowed_scope.is_none() => {
            issue_tokens(ctx.config, &keys, ctx.crypto, ctx.now, ctx.new_id()?, &subject).await?
        }
        Caller::FirstParty => {
            let grant = Grant {
                client_id: &ctx.config.first_party_client_id,
                scope: &scope,
                id_token_alg: ctx.config.signing_alg,
            };
            issue_grant_tokens(ctx.config, &keys, ctx.crypto, ctx.now, ctx.new_id()?, &subject, &grant).await?
        }
        Caller::Client(client) => {
            let grant = Grant { client_id: &client.client_id, scope: &scope, id_token_alg: id_token_alg(ctx, client) };
            let jti = grant_jti(&record.session_id, &ctx.new_id()?);
            issue_grant_tokens(ctx.config, &keys, ctx.crypto, ctx.now, jti, &subject, &grant).await?
        }
    };
    Ok(LoginTokens {
        access_token: signed.access_token,
        id_token: signed.id_token,
        refresh_token: Some(refresh_token),
        expires_in: signed.expires_in,
        scope,
    })
}

/// The granted scopes among those asked for, in the grant's order.
fn narrowed(granted: &str, asked: &str) -> String {
    let asked: Vec<&str> = asked.split(' ').collect();
    granted.split(' ').filter(|scope| asked.contains(scope)).collect::<Vec<_>>().join(" ")
}

/// Ends the session a refresh token belongs to (logout, RFC 7009 revocation). Anything that is
/// not one of our refresh tokens is ignored: the caller learns nothing either way.
pub async fn end_session<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    presented: &str,
) -> Result<(), Internal> {
    let Ok((bucket, hash)) = TokenHash::routed(presented) else {
        return Ok(());
    };
    Ok(store::revoke_family(&ctx.users(bucket), &hash, ctx.now).await?)
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
    /// With the `email` scope: the address and whether it is verified.
    pub email: Option<(String, bool)>,
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
    // A client's grant is named by its tokens' `jti` (`authorization_code::grant_jti`).
    let grant = claims.jti.split_once('.').map_or("", |(grant, _)| grant);
    // The session is in the shard its id names; the key's state in `DB`: both at once.
    let bucket = UserBucket::of_issued(&claims.sid).ok_or(UserinfoError::SessionEnded)?;
    let users = ctx.users(bucket);
    let (user, compromised) = futures_util::future::join(
        store::find_session_user(&users, &claims.sub, &claims.sid, &claims.client_id, grant, ctx.now),
        store::is_signing_key_compromised(ctx.db, kid),
    )
    .await;
    if compromised.map_err(Internal::from)? {
        return Err(UserinfoError::SessionEnded);
    }
    let user = user.map_err(Internal::from)?.ok_or(UserinfoError::SessionEnded)?;
    let with_email = claims.scope.split(' ').any(|scope| scope == "email");
    Ok(Userinfo { sub: user.id, email: with_email.then_some((user.email, user.email_verified)) })
}

/// The live browser session a cookie names, if any.
pub async fn browser_session<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    session_cookie: Option<&str>,
) -> Result<Option<store::BrowserSession>, Internal> {
    let Some((bucket, hash)) = session_cookie.and_then(|cookie| TokenHash::routed(cookie).ok()) else {
        return Ok(None);
    };
    Ok(store::find_browser_session(&ctx.users(bucket), &hash, ctx.now).await?)
}

/// Logs a browser out (RP-Initiated Logout): its session ends, with every grant issued in it
/// and their refresh tokens.
pub async fn log_out<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    session: &store::BrowserSession,
) -> Result<(), Internal> {
    store::end_browser_session(&ctx.users(issued_bucket(&session.id)?), &session.id, &session.user_id, ctx.now).await?;
    Ok(())
}
