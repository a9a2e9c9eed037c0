//! `clients`: registered relying parties (RFC 7591), global (never in a user shard).

use chrono::{DateTime, Utc};

use crate::domain::client::ClientMetadata;
use crate::domain::opaque_token::TokenHash;
use crate::ports::{Database, DatabaseError, Statement};

/// A client to store: its metadata, and the hash of its secret if it is confidential.
pub struct NewClient<'a> {
    pub client_id: &'a str,
    pub secret_hash: Option<&'a TokenHash>,
    pub metadata: &'a ClientMetadata,
    pub registered_with_token: bool,
}

/// Stores a newly registered client. Its id is fresh and random: the insert cannot collide
/// with another client but by a broken random source, which then fails loudly here.
pub async fn register_client(
    db: &impl Database,
    client: &NewClient<'_>,
    now: DateTime<Utc>,
) -> Result<(), DatabaseError> {
    let metadata = client.metadata;
    let list = |values: &[String]| serde_json::Value::from(values.to_vec()).to_string();
    db.batch(vec![Statement::new(
        "INSERT INTO clients (client_id, client_secret_hash, client_name, redirect_uris, post_logout_redirect_uris,
             grant_types, scope, token_endpoint_auth_method, id_token_signed_response_alg, skip_consent,
             registered_with_token, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        [
            client.client_id.into(),
            client.secret_hash.map(TokenHash::as_str).into(),
            metadata.client_name.as_deref().into(),
            list(&metadata.redirect_uris).into(),
            list(&metadata.post_logout_redirect_uris).into(),
            list(&metadata.grant_types).into(),
            metadata.scope.as_str().into(),
            metadata.auth_method.as_str().into(),
            metadata.id_token_signed_response_alg.as_str().into(),
            i64::from(metadata.skip_consent).into(),
            i64::from(client.registered_with_token).into(),
            now.timestamp().into(),
        ],
    )])
    .await
    .map(drop)
}
