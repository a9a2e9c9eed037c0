//! The authorization-code grant (RFC 6749 §4.1.3, RFC 7636 §4.6, OIDC Core §3.1.3): a code is
//! redeemed once, by its client, for its redirect URI, with its PKCE verifier, in one
//! conditional `UPDATE`; a second redemption revokes what the first one issued (RFC 6749
//! §4.1.2, RFC 9700 §4.2.4).

use chrono::{DateTime, Duration, Utc};

use crate::domain::authorization::{is_pkce_value, s256_challenge};
use crate::domain::client::RegisteredClient;
use crate::domain::opaque_token::TokenHash;
use std::rc::Rc;

use crate::domain::signing::{SigningAlg, SigningKeys};
use crate::domain::tokens::{issue_grant_tokens, Grant, Subject};
use crate::flows::login::LoginTokens;
use crate::flows::{Context, Internal};
use crate::ports::{Crypto, Database, HttpClient};
use crate::store::{self, Redemption};

#[derive(Debug, thiserror::Error)]
pub enum CodeGrantError {
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// Unknown, expired, used, another client's, another redirect URI, PKCE failed.
    #[error("authorization code refused: {0}")]
    InvalidGrant(&'static str),
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// Redeems `code` for `client`.
pub async fn redeem<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    client: &RegisteredClient,
    code: &str,
    redirect_uri: Option<&str>,
    code_verifier: Option<&str>,
) -> Result<LoginTokens, CodeGrantError> {
    let redirect_uri = redirect_uri.ok_or(CodeGrantError::InvalidRequest("redirect_uri is required"))?;
    let (bucket, hash) = TokenHash::routed(code).map_err(|_| CodeGrantError::InvalidGrant("malformed"))?;
    let users = ctx.users(bucket);
    // A malformed verifier can match no challenge: the code stays as it is, refused.
    let verifier_challenge = match code_verifier {
        Some(verifier) if is_pkce_value(verifier) => Some(s256_challenge(verifier)),
        Some(_) => return Err(CodeGrantError::InvalidGrant("the code_verifier is malformed")),
        None => None,
    };
    let (keys, alg) = keys_for_id_tokens_of(ctx, client).await?;
    let grant_id = ctx.new_id_in(bucket)?;
    let refresh_token = match client.may_use("refresh_token") {
        true => Some(ctx.new_token(bucket)?),
        false => None,
    };
    let grant_expires_at = ctx.now + Duration::seconds(ctx.config.session_absolute_ttl_seconds);
    let refresh_expires_at = ctx.now + Duration::seconds(ctx.config.refresh_token_ttl_seconds);
    let (won, record) = store::redeem_code(
        &users,
        &Redemption {
            code: &hash,
            client_id: &client.client_id,
            redirect_uri,
            verifier_challenge: verifier_challenge.as_deref(),
            grant_id: &grant_id,
            grant_expires_at,
            refresh_token: refresh_token.as_ref().map(|token| (token.hash(), refresh_expires_at)),
        },
        ctx.now,
    )
    .await
    .map_err(Internal::from)?;
    let record = record.ok_or(CodeGrantError::InvalidGrant("unknown"))?;
    if !won {
        // A second redemption by the client, with what the first one had to present (so a
        // leaked used code alone, without its verifier, revokes nothing).
        let presented_all = record.redirect_uri == redirect_uri && record.code_challenge == verifier_challenge;
        if record.consumed && record.client_id == client.client_id && presented_all {
            if let Some(first_grant) = &record.session_id {
                log::warn!("authorization code redeemed twice; revoking grant {first_grant}");
                store::revoke_grant(&users, first_grant, ctx.now).await.map_err(Internal::from)?;
            }
            return Err(CodeGrantError::InvalidGrant("already used"));
        }
        return Err(CodeGrantError::InvalidGrant(
            "expired, another client's, another redirect_uri, a failed PKCE check or an ended session",
        ));
    }
    let auth_time = DateTime::<Utc>::from_timestamp(record.auth_time, 0).unwrap_or(ctx.now);
    let has_offline_access = record.scope.split(' ').any(|scope| scope == "offline_access");
    let signed = issue_grant_tokens(
        ctx.config,
        &keys,
        ctx.crypto,
        ctx.now,
        grant_jti(&grant_id, &ctx.new_id()?),
        &Subject {
            user_id: &record.user_id,
            email: &record.email,
            email_verified: record.email_verified,
            session_id: &record.browser_session_id,
            auth_time,
            nonce: record.nonce.as_deref(),
        },
        &Grant { client_id: &client.client_id, scope: &record.scope, id_token_alg: alg },
    )
    .await
    .map_err(Internal::from)?;
    Ok(LoginTokens {
        access_token: signed.access_token,
        id_token: signed.id_token,
        refresh_token: refresh_token.filter(|_| has_offline_access).map(|token| token.plaintext().to_owned()),
        expires_in: signed.expires_in,
        scope: record.scope,
    })
}

/// The `jti` of an access token issued for a client's grant: the grant's id, a dot, a random
/// id. Unique like any `jti`, and it names the grant, so `/userinfo` refuses the token once
/// that grant has ended (a reused code, a logout) whatever other grants the client holds.
pub fn grant_jti(grant_id: &str, random: &str) -> String {
    format!("{grant_id}.{random}")
}

/// The signing keys and the client's ID-token algorithm, checked to have an active key before
/// a grant spends its code or refresh token: a failure to sign never leaves either consumed
/// (registration accepts only algorithms with a key, so this is a keyring in trouble, not the
/// client's mistake).
pub async fn keys_for_id_tokens_of<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    client: &RegisteredClient,
) -> Result<(Rc<SigningKeys>, SigningAlg), Internal> {
    let keys = ctx.signing_keys().await?;
    let alg = id_token_alg(ctx, client);
    match keys.active_kid_of(alg) {
        Some(_) => Ok((keys, alg)),
        None => Err(crate::keyring::KeyringError::NoActiveKey.into()),
    }
}

/// The client's registered ID token algorithm (registration accepts only those we sign with).
pub fn id_token_alg<D, E, H>(ctx: &Context<'_, D, E, H>, client: &RegisteredClient) -> SigningAlg {
    SigningAlg::from_jws_name(&client.metadata.id_token_signed_response_alg).unwrap_or(ctx.config.signing_alg)
}
