//! `clients`: registered relying parties (RFC 7591), global (never in a user shard).

use chrono::{DateTime, Utc};

use crate::domain::client::{ClientMetadata, RegisteredClient};
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

/// Registered clients as this isolate last read them, for client authentication at the token
/// endpoint: a warm isolate authenticates a known client without a round trip to `DB`, which
/// makes the code grant and a client's refresh grant one round trip each. A client is
/// registered once and never changed in place, so a copy cannot be wrong; it is kept for
/// `max_age_seconds` all the same, so that a change to come (an operator deleting a client)
/// reaches every isolate within that time. A deletion must therefore end the client's codes,
/// grants and refresh tokens in the user shards twice: at once, and again once every copy
/// and every code an authorization request read the client for has expired (`max_age_seconds`
/// plus a code's minute), since a request that read the client just before its deletion can
/// still write a code after the first sweep. Only clients that exist are kept: an unknown
/// id is read again every time, so a client registered a moment ago is found at once. The
/// authorization endpoint reads every request's client from `DB` and refreshes the copy
/// ([`ClientCache::keep`]).
#[derive(Debug)]
pub struct ClientCache {
    max_age_seconds: i64,
    entries: std::cell::RefCell<std::collections::HashMap<String, (i64, RegisteredClient)>>,
}

/// How many clients an isolate keeps; past that the copies are dropped and read again.
const MAX_CACHED_CLIENTS: usize = 256;

impl ClientCache {
    pub fn new(max_age_seconds: i64) -> ClientCache {
        ClientCache { max_age_seconds, entries: Default::default() }
    }

    /// The copy of `client_id` read within `max_age_seconds` of `now`, if any.
    pub fn get(&self, client_id: &str, now: DateTime<Utc>) -> Option<RegisteredClient> {
        let entries = self.entries.borrow();
        let (read_at, client) = entries.get(client_id)?;
        let age = now.timestamp() - read_at;
        (0..self.max_age_seconds).contains(&age).then(|| client.clone())
    }

    /// Drops the copy of `client_id`: `DB` no longer has it.
    pub fn forget(&self, client_id: &str) {
        self.entries.borrow_mut().remove(client_id);
    }

    /// Keeps `client` as read from `DB` at `now`.
    pub fn keep(&self, client: &RegisteredClient, now: DateTime<Utc>) {
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= MAX_CACHED_CLIENTS && !entries.contains_key(&client.client_id) {
            entries.clear();
        }
        entries.insert(client.client_id.clone(), (now.timestamp(), client.clone()));
    }
}

/// A registered client by id: this isolate's copy if it is fresh enough ([`ClientCache`]),
/// else read from `DB` (and kept, if it exists).
pub async fn find_client_cached(
    db: &impl Database,
    cache: &ClientCache,
    client_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<RegisteredClient>, DatabaseError> {
    if let Some(client) = cache.get(client_id, now) {
        return Ok(Some(client));
    }
    let client = super::find_client(db, client_id).await?;
    if let Some(client) = &client {
        cache.keep(client, now);
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::client::{AuthMethod, ClientMetadata};
    use chrono::Duration;

    fn client(id: &str, name: &str) -> RegisteredClient {
        RegisteredClient {
            client_id: id.to_owned(),
            secret_hash: Some("ab".repeat(32)),
            metadata: ClientMetadata {
                redirect_uris: vec!["https://app.example.test/callback".to_owned()],
                post_logout_redirect_uris: Vec::new(),
                client_name: Some(name.to_owned()),
                auth_method: AuthMethod::ClientSecretBasic,
                grant_types: vec!["authorization_code".to_owned()],
                scope: "openid".to_owned(),
                id_token_signed_response_alg: "ES256".to_owned(),
                skip_consent: false,
            },
            registered_with_token: false,
        }
    }

    #[test]
    fn a_kept_client_is_given_back_for_its_max_age_and_no_longer() {
        let cache = ClientCache::new(60);
        let now = DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap_or_default();
        assert_eq!(cache.get("c1", now), None);
        cache.keep(&client("c1", "One"), now);
        assert_eq!(cache.get("c1", now + Duration::seconds(59)), Some(client("c1", "One")));
        assert_eq!(cache.get("c1", now + Duration::seconds(60)), None);
        // A clock that went back does not make a copy younger.
        assert_eq!(cache.get("c1", now - Duration::seconds(1)), None);
        assert_eq!(cache.get("c2", now), None);
        // A fresher read replaces the copy.
        cache.keep(&client("c1", "One, renamed"), now + Duration::seconds(30));
        assert_eq!(cache.get("c1", now + Duration::seconds(80)), Some(client("c1", "One, renamed")));
        // A read that finds no such client drops the copy.
        cache.forget("c1");
        assert_eq!(cache.get("c1", now + Duration::seconds(31)), None);
    }

    #[test]
    fn no_cache_keeps_nothing_and_a_full_one_starts_again() {
        let now = DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap_or_default();
        let none = ClientCache::new(0);
        none.keep(&client("c1", "One"), now);
        assert_eq!(none.get("c1", now), None);
        let cache = ClientCache::new(60);
        for index in 0..MAX_CACHED_CLIENTS {
            cache.keep(&client(&format!("c{index}"), "n"), now);
        }
        assert!(cache.get("c0", now).is_some());
        cache.keep(&client("one more", "n"), now);
        assert!(cache.get("c0", now).is_none());
        assert!(cache.get("one more", now).is_some());
        assert!(cache.entries.borrow().len() <= MAX_CACHED_CLIENTS);
    }
}
