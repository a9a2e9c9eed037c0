//! Signing keys that manage themselves: which key signs and which are published at an instant,
//! the race-free bootstrap of the first key, and the scheduled rotation (run by the cron
//! trigger): publish the next key a lead time before it signs, keep a retired key published
//! until every token it signed has expired, then delete it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::config::Config;
use crate::domain::sealing;
use crate::domain::signing::{KeyError, KeyMaterial, SigningAlg, SigningKeys};
use crate::domain::tokens::LEEWAY_SECONDS;
use crate::ports::{Crypto, Database, DatabaseError, EntropyError};
use crate::store::{self, SigningKeyRecord};

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Entropy(#[from] EntropyError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("no signing key is active even after the bootstrap")]
    NoActiveKey,
}

/// What one maintenance run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Maintenance {
    /// The kid of a key published by this run, and when it starts signing.
    pub published: Option<(String, i64)>,
    pub removed: u64,
}

/// The key table as last read, and the keys assembled from it, for one isolate. Reads are
/// cached for at most `max_cache_seconds`, and never longer than a quarter of the publication
/// lead, so every isolate sees a new key long before it signs.
#[derive(Debug)]
pub struct Keyring {
    max_cache_seconds: i64,
    /// Reads of the key table issued so far: of overlapping reads, the last issued is kept.
    reads: Cell<u64>,
    cache: RefCell<Option<Cache>>,
}

#[derive(Debug)]
struct Cache {
    /// Which read this is (`Keyring::reads` when it was issued).
    read: u64,
    read_at: i64,
    records: Rc<Vec<SigningKeyRecord>>,
    assembled: Option<(Selection, Rc<SigningKeys>)>,
}

/// Which key signs and which are published: `SigningKeys` is rebuilt only when this changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selection {
    active: String,
    published: Vec<String>,
}

/// How far ahead of a request's clock another request's may be: an RS256 bootstrap key added
/// by a request whose instant is up to this much later counts as the bootstrap for this one.
const BOOTSTRAP_SKEW_SECONDS: i64 = 60;

/// The instant, shortly after `now`, at which a bootstrap key of the configured algorithm
/// (active from its publication, unlike a rotated key) starts: concurrent first requests take
/// their instants as they start, so the one that won the bootstrap may be a second ahead of
/// the others, which then sign with its key rather than add their own.
fn bootstrapped_ahead(records: &[SigningKeyRecord], config: &Config, now: i64) -> Option<i64> {
    let alg = config.signing_alg.jws_name();
    records
        .iter()
        .filter(|key| key.alg == alg && key.retired_at.is_none() && key.activates_at == key.published_at)
        .map(|key| key.activates_at)
        .filter(|&at| at > now && at <= now + BOOTSTRAP_SKEW_SECONDS)
        .min()
}

/// The longest an issued token lives, leeway included: how long a retired key stays published.
fn longest_token_lifetime(config: &Config) -> i64 {
    config.access_token_ttl_seconds + LEEWAY_SECONDS
}

fn select(records: &[SigningKeyRecord], config: &Config, now: i64) -> Option<Selection> {
    let alg = config.signing_alg.jws_name();
    // Records come newest activation first, so the first live one of our algorithm signs.
    let active = records
        .iter()
        .find(|key| key.alg == alg && key.activates_at <= now && key.retired_at.is_none_or(|retired| retired > now))?;
    let published = records
        .iter()
        .filter(|key| {
            key.published_at <= now
                && key.retired_at.is_none_or(|retired| retired + longest_token_lifetime(config) > now)
        })
        .map(|key| key.kid.clone())
        .collect();
    Some(Selection { active: active.kid.clone(), published })
}

impl Keyring {
    pub fn new(max_cache_seconds: i64) -> Keyring {
        Keyring { max_cache_seconds, reads: Cell::new(0), cache: RefCell::new(None) }
    }

    /// The keys in force at `now`. If no key of the configured algorithm is active (a fresh
    /// installation, or a new `SIGNING_ALG`), the bootstrap key is added first: it is derived
    /// from the key-encryption key, so concurrent requests all add the same row, exactly once.
    pub async fn signing_keys(
        &self,
        db: &impl Database,
        config: &Config,
        crypto: &impl Crypto,
        now: DateTime<Utc>,
    ) -> Result<Rc<SigningKeys>, KeyringError> {
        let cache_seconds = self.cache_seconds(config);
        let mut records = self.records(db, now, cache_seconds).await?;
        if select(&records, config, now.timestamp()).is_none() {
            bootstrap(db, config, crypto, now).await?;
            records = self.records(db, now, 0).await?;
        }
        let selection = select(&records, config, now.timestamp())
            .or_else(|| select(&records, config, bootstrapped_ahead(&records, config, now.timestamp())?))
            .ok_or(KeyringError::NoActiveKey)?;
        if let Some(cache) = self.cache.borrow().as_ref() {
            if let Some((cached_selection, keys)) = &cache.assembled {
                if *cached_selection == selection {
                    return Ok(Rc::clone(keys));
                }
            }
        }
        let keys = Rc::new(assemble(&records, &selection, config)?);
        if let Some(cache) = self.cache.borrow_mut().as_mut() {
            cache.assembled = Some((selection, Rc::clone(&keys)));
        }
        Ok(keys)
    }

    /// How long a read of the key table is used: at most `max_cache_seconds`, and a quarter of
    /// the publication lead.
    fn cache_seconds(&self, config: &Config) -> i64 {
        self.max_cache_seconds.min(config.key_publication_lead_seconds / 4)
    }

    /// Until when (Unix seconds, exclusive) [`Keyring::signing_keys`] keeps returning the keys
    /// it returned at `now` without reading D1 again: the end of the cached read, or the next
    /// instant at which a cached key is published, starts signing, retires or leaves the JWKS,
    /// whichever comes first. `None` before the first read and when that instant is already
    /// here (no cache). Whatever is made from those keys alone (the JWKS, the discovery
    /// document) stays the same until then.
    pub fn unchanged_until(&self, config: &Config, now: i64) -> Option<i64> {
        let cache = self.cache.borrow();
        let cache = cache.as_ref()?;
        let read_expires = cache.read_at + self.cache_seconds(config);
        let lifetime = longest_token_lifetime(config);
        let next_change = cache
            .records
            .iter()
            .flat_map(|key| {
                [Some(key.published_at), Some(key.activates_at), key.retired_at, key.retired_at.map(|at| at + lifetime)]
            })
            .flatten()
            .filter(|&at| at > now)
            .min();
        Some(next_change.map_or(read_expires, |at| at.min(read_expires))).filter(|&until| until > now)
    }

    async fn records(
        &self,
        db: &impl Database,
        now: DateTime<Utc>,
        cache_seconds: i64,
    ) -> Result<Rc<Vec<SigningKeyRecord>>, DatabaseError> {
        if let Some(cache) = self.cache.borrow().as_ref() {
            // A read made after `now` (by a request that started later and finished first) is
            // fresher than needed: keeping it keeps every request of the isolate on one read.
            // A clock stepped back stretches a read to twice its time at most.
            if (-cache_seconds..cache_seconds).contains(&(now.timestamp() - cache.read_at)) {
                return Ok(Rc::clone(&cache.records));
            }
        }
        let read = self.reads.get() + 1;
        self.reads.set(read);
        let records = Rc::new(store::list_signing_keys(db).await?);
        let mut cache = self.cache.borrow_mut();
        // Concurrent requests' reads overlap: one issued later, which may hold a newer table,
        // is never replaced by an earlier one that happened to answer last.
        if let Some(newer) = cache.as_ref().filter(|cache| cache.read > read) {
            return Ok(Rc::clone(&newer.records));
        }
        let assembled = cache.take().and_then(|cache| cache.assembled);
        *cache = Some(Cache { read, read_at: now.timestamp(), records: Rc::clone(&records), assembled });
        Ok(records)
    }
}

fn assemble(records: &[SigningKeyRecord], selection: &Selection, config: &Config) -> Result<SigningKeys, KeyError> {
    let active = records
        .iter()
        .find(|key| key.kid == selection.active)
        .ok_or_else(|| KeyError::Sealed(selection.active.clone()))?;
    let alg = SigningAlg::from_jws_name(&active.alg).unwrap_or(config.signing_alg);
    let private = sealing::open(&config.key_encryption_key.0, active.kid.as_bytes(), &active.private_sealed)
        .ok_or_else(|| KeyError::Sealed(active.kid.clone()))?;
    let material = KeyMaterial::from_private_jwk(alg, &active.kid, &private)?;
    let published: Vec<Map<String, Value>> = records
        .iter()
        .filter(|key| selection.published.contains(&key.kid))
        .filter_map(|key| serde_json::from_str(&key.public_jwk).ok())
        .collect();
    Ok(SigningKeys::new(material, &published))
}

fn record(
    key: &KeyMaterial,
    config: &Config,
    crypto: &impl Crypto,
    published_at: i64,
    activates_at: i64,
) -> Result<SigningKeyRecord, EntropyError> {
    let private_sealed = sealing::seal(&config.key_encryption_key.0, key.kid().as_bytes(), &key.private_jwk(), crypto)?;
    Ok(SigningKeyRecord {
        kid: key.kid().to_owned(),
        alg: key.alg().jws_name().to_owned(),
        public_jwk: Value::Object(key.public_jwk().clone()).to_string(),
        private_sealed,
        published_at,
        activates_at,
        retired_at: None,
    })
}

/// Adds a first key for the configured algorithm, active at once: nothing can have cached a
/// JWKS without it. ES256 and EdDSA keys are derived from the key-encryption key, so racing
/// requests insert the same row. An RS256 key cannot be derived (WebCrypto generates it), so
/// racing requests each generate one and a conditional insert lets exactly one in.
async fn bootstrap(
    db: &impl Database,
    config: &Config,
    crypto: &impl Crypto,
    now: DateTime<Utc>,
) -> Result<(), KeyringError> {
    let at = now.timestamp();
    match KeyMaterial::derive_bootstrap(config.signing_alg, &config.key_encryption_key.0) {
        Some(key) => {
            log::info!("bootstrapping signing key {} ({})", key.kid(), key.alg().jws_name());
            store::add_signing_key(db, &record(&key, config, crypto, at, at)?, now).await?;
        }
        None => {
            let key = KeyMaterial::generate(config.signing_alg, crypto).await?;
            let record = record(&key, config, crypto, at, at)?;
            if store::add_signing_key_unless_one_is_active(db, &record, now, BOOTSTRAP_SKEW_SECONDS).await? {
                log::info!("bootstrapped signing key {} ({})", key.kid(), key.alg().jws_name());
            }
        }
    }
    Ok(())
}

/// The scheduled maintenance: bootstraps if needed, publishes the next key when the active one
/// is due to be replaced within the lead time (or at once with `force`), and deletes retired
/// keys whose tokens have all expired.
pub async fn maintain(
    db: &impl Database,
    config: &Config,
    crypto: &impl Crypto,
    now: DateTime<Utc>,
    force: bool,
) -> Result<Maintenance, KeyringError> {
    let mut report = Maintenance::default();
    let at = now.timestamp();
    let mut records = store::list_signing_keys(db).await?;
    if select(&records, config, at).is_none() {
        bootstrap(db, config, crypto, now).await?;
        records = store::list_signing_keys(db).await?;
    }
    let alg = config.signing_alg.jws_name();
    let pending = records.iter().any(|key| key.alg == alg && key.activates_at > at && key.retired_at.is_none());
    let due = select(&records, config, at)
        .and_then(|selection| records.iter().find(|key| key.kid == selection.active))
        .is_some_and(|active| {
            active.activates_at + config.key_rotation_interval_seconds - config.key_publication_lead_seconds <= at
        });
    if !pending && (due || force) {
        let key = KeyMaterial::generate(config.signing_alg, crypto).await?;
        let activates_at = at + config.key_publication_lead_seconds;
        store::add_signing_key(db, &record(&key, config, crypto, at, activates_at)?, now).await?;
        log::info!("published signing key {}; it signs from {activates_at}", key.kid());
        report.published = Some((key.kid().to_owned(), activates_at));
    }
    report.removed = store::remove_retired_signing_keys(db, at - longest_token_lifetime(config)).await?;
    Ok(report)
}
