//! Registering clients (RFC 7591): who may, and what a new client gets — an id, and for a
//! confidential client a secret shown this once and stored only as its SHA-256.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ClientRegistration;
use crate::domain::client::{ClientMetadata, ClientMetadataError};
use crate::domain::opaque_token::OpaqueToken;
use crate::flows::{Context, Internal};
use crate::ports::{Crypto, Database, HttpClient};
use crate::store::{self, NewClient};

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("client registration is closed")]
    Closed,
    #[error("the registration token is missing or wrong")]
    InvalidToken,
    #[error(transparent)]
    Metadata(#[from] ClientMetadataError),
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// A registered client, as the `201` answer shows it once.
#[derive(Debug, Clone)]
pub struct Registered {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub issued_at: i64,
    pub metadata: ClientMetadata,
}

/// Registers a client from its metadata. `bearer` is the request's bearer token, if any: with
/// `CLIENT_REGISTRATION=token` it must be `CLIENT_REGISTRATION_TOKEN`; with `open` it may be,
/// and then marks an operator's client (the only kind that may skip consent).
pub async fn register<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    body: &Map<String, Value>,
    bearer: Option<&str>,
) -> Result<Registered, RegisterError> {
    if ctx.config.client_registration == ClientRegistration::Off {
        return Err(RegisterError::Closed);
    }
    let with_token = match bearer {
        Some(presented) => match is_registration_token(ctx, presented) {
            true => true,
            false => return Err(RegisterError::InvalidToken),
        },
        None => false,
    };
    if ctx.config.client_registration == ClientRegistration::Token && !with_token {
        return Err(RegisterError::InvalidToken);
    }
    let metadata = ClientMetadata::parse(body, with_token, &ctx.config.signing_algorithms())?;
    let client_id = ctx.new_id()?;
    let secret = match metadata.auth_method.is_confidential() {
        true => Some(OpaqueToken::secret(ctx.crypto).map_err(Internal::from)?),
        false => None,
    };
    store::register_client(
        ctx.db,
        &NewClient {
            client_id: &client_id,
            secret_hash: secret.as_ref().map(|secret| secret.hash()),
            metadata: &metadata,
            registered_with_token: with_token,
        },
        ctx.now,
    )
    .await
    .map_err(Internal::from)?;
    log::info!("client {client_id} registered ({})", if with_token { "with the registration token" } else { "openly" });
    Ok(Registered {
        client_id,
        client_secret: secret.map(|secret| secret.plaintext().to_owned()),
        issued_at: ctx.now.timestamp(),
        metadata,
    })
}

/// Compares digests in constant time, so the comparison's timing says nothing about how much
/// of the token was right (nor its length).
fn is_registration_token<D, E, H>(ctx: &Context<'_, D, E, H>, presented: &str) -> bool {
    let Some(expected) = &ctx.config.client_registration_token else { return false };
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.0.as_bytes());
    bool::from(presented.ct_eq(&expected))
}
