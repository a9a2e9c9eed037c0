//! Client authentication at the token endpoint (RFC 6749 §2.3, OIDC Core §9): a confidential
//! client's secret by `client_secret_basic` or `client_secret_post` (either works for any
//! confidential client), a public client's bare `client_id`, and — for the refresh grant of
//! `/v1/login`'s sessions — the first-party app, which sends no client at all.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::client::RegisteredClient;
use crate::flows::{Context, Internal};
use crate::ports::{Crypto, Database, HttpClient};
use crate::store;

/// What the request presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// `Authorization: Basic` (RFC 6749 §2.3.1), already decoded.
    Basic { client_id: &'a str, client_secret: &'a str },
    /// `client_id` and `client_secret` in the form.
    Post { client_id: &'a str, client_secret: &'a str },
    /// Only `client_id`: a public client, or the first-party app by its id.
    ClientId(&'a str),
    /// Nothing: the first-party app (v1's refresh grant).
    Nothing,
}

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The first-party app of `/v1/login` (`FIRST_PARTY_CLIENT_ID`): not a registered client.
    FirstParty,
    Client(Box<RegisteredClient>),
}

#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    /// RFC 6749 §5.2 `invalid_client` (401); `basic` says whether Basic was tried, so the
    /// answer carries `WWW-Authenticate: Basic`.
    #[error("client authentication failed: {reason}")]
    InvalidClient { basic: bool, reason: &'static str },
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// Authenticates the caller. Unknown clients and wrong secrets fail alike, after the same
/// digest comparison.
pub async fn authenticate<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    presented: Presented<'_>,
) -> Result<Caller, ClientAuthError> {
    let basic = matches!(presented, Presented::Basic { .. });
    let fail = |reason: &'static str| ClientAuthError::InvalidClient { basic, reason };
    let (client_id, secret) = match presented {
        Presented::Nothing => return Ok(Caller::FirstParty),
        Presented::ClientId(client_id) if client_id == ctx.config.first_party_client_id => {
            return Ok(Caller::FirstParty)
        }
        Presented::ClientId(client_id) => (client_id, None),
        Presented::Basic { client_id, client_secret } | Presented::Post { client_id, client_secret } => {
            (client_id, Some(client_secret))
        }
    };
    let client = store::find_client_cached(ctx.db, ctx.clients, client_id, ctx.now).await.map_err(Internal::from)?;
    // Stored as the hex of its SHA-256 (`flows::clients`).
    let digest_of = |secret: &str| base16ct::lower::encode_string(&Sha256::digest(secret.as_bytes()));
    let secret_matches = |client: &RegisteredClient, secret: &str| {
        let presented = digest_of(secret);
        let stored = client.secret_hash.as_deref().unwrap_or_default();
        bool::from(presented.as_bytes().ct_eq(stored.as_bytes()))
    };
    match (client, secret) {
        (None, Some(secret)) => {
            // The same work as a known client's comparison.
            let _ = digest_of(secret).as_bytes().ct_eq(&[0u8; 64]);
            Err(fail("unknown client"))
        }
        (None, None) => Err(fail("unknown client")),
        (Some(client), None) if client.metadata.auth_method.is_confidential() => {
            Err(fail("a confidential client must authenticate"))
        }
        (Some(client), None) => Ok(Caller::Client(Box::new(client))),
        (Some(client), Some(_)) if !client.metadata.auth_method.is_confidential() => {
            Err(fail("a public client has no secret"))
        }
        (Some(client), Some(secret)) if secret_matches(&client, secret) => Ok(Caller::Client(Box::new(client))),
        (Some(_), Some(_)) => Err(fail("wrong client secret")),
    }
}
