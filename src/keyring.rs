//! Signing keys that manage themselves, one active key per algorithm edgeid signs with
//! (`Config::signing_algorithms`: `SIGNING_ALG`, and RS256 beside it): which key of each
//! algorithm signs and which keys are published at an instant, the race-free bootstrap of an
//! algorithm's first key (on a fresh database, for a new algorithm, after a compromise, or when
//! no configured key-encryption key opens the keys there are), and the scheduled maintenance
//! (run by the cron trigger): publish each algorithm's next key a lead time before it signs,
//! keep a retired key published until every token it signed has expired, then delete it, and
//! re-seal keys sealed under the key-encryption key being rotated out. Algorithms never wait
//! on each other: a compromise, a bootstrap or a rotation of one leaves the others' keys alone.
//! And the snapshot of the published key set in KV, which the cron writes every minute (as does
//! a request that bootstraps a key): an isolate whose own read has expired takes it instead of
//! reading D1 while it is younger than [`snapshot_max_age_seconds`], so a new isolate anywhere
//! signs and serves the JWKS without a round trip to the database's region.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::config::Config;
use crate::domain::sealing::{self, ValueKey};
use crate::domain::signing::{KeyError, KeyMaterial, SigningAlg, SigningKeys};
use crate::domain::tokens::LEEWAY_SECONDS;
use crate::ports::{Crypto, Database, DatabaseError, EntropyError, KeyValue, KeyValueError};
use crate::store::{self, SigningKeyRecord, SigningKeySnapshot, StoredSnapshot};

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Entropy(#[from] EntropyError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    KeyValue(#[from] KeyValueError),
    #[error("no signing key is active even after the bootstrap")]
    NoActiveKey,
}

/// What one maintenance run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Maintenance {
    /// The kid of each key published by this run (at most one per algorithm, in the order of
    /// `Config::signing_algorithms`), and when it starts signing.
    pub published: Vec<(String, i64)>,
    /// Keys of algorithms edgeid no longer signs with, retired by this run.
    pub retired: u64,
    pub removed: u64,
    /// Keys that opened only with `KEY_ENCRYPTION_KEY_PREVIOUS`, now sealed under
    /// `KEY_ENCRYPTION_KEY`.
    pub resealed: u64,
}

/// The key table as last read, and the keys assembled from it, for one isolate. Reads of D1
/// are cached for at most `max_cache_seconds`, and never longer than a quarter of the
/// publication lead, so every isolate sees a new key long before it signs; a snapshot from KV
/// (see [`Keyring::refresh_from_snapshot`]) is used until [`snapshot_max_age_seconds`] after
/// the D1 read it holds, and never longer than that either.
#[derive(Debug)]
pub struct Keyring {
    max_cache_seconds: i64,
    /// Reads of the key table issued so far: of overlapping reads, the last issued is kept.
    reads: Cell<u64>,
    cache: RefCell<Option<Cache>>,
    /// The key table as a request read it right after bootstrapping a key, for the adapter to
    /// write to KV once the response is out ([`Keyring::take_snapshot_to_write`]).
    snapshot_to_write: RefCell<Option<SigningKeySnapshot>>,
    /// When KV last had nothing usable: it is not asked again for a cache period, so that
    /// requests that never need keys do not read KV each time while there is no snapshot.
    snapshot_unusable_at: Cell<Option<i64>>,
}

#[derive(Debug)]
struct Cache {
    /// Which read this is (`Keyring::reads` when it was issued; for a snapshot, when it was
    /// taken).
    read: u64,
    /// When the table was read from D1: by this isolate, or by the writer of the snapshot.
    read_at: i64,
    /// How long after `read_at` the table is used: the cache period for this isolate's own
    /// read, the snapshot's maximum age for a snapshot.
    trusted_for: i64,
    /// Whether this isolate read the table from D1 itself (else it is a snapshot from KV).
    from_database: bool,
    table: Rc<Table>,
    assembled: Option<(Selection, Rc<SigningKeys>)>,
}

impl Cache {
    /// Whether the table may still be used at `at`. A read made after `at` (by a request that
    /// started later and finished first) is fresher than needed: keeping it keeps every request
    /// of the isolate on one read. A clock stepped back stretches a read to twice its time at
    /// most.
    fn covers(&self, at: i64) -> bool {
        (-self.trusted_for..self.trusted_for).contains(&(at - self.read_at))
    }
}

/// How long after the D1 read it holds a snapshot in KV is used, at most: the cron writes one
/// every minute and a KV location serves a value for up to a minute after it fetched it, so
/// snapshots reach their readers less than two minutes old; the third minute is room for a
/// late run. Whatever KV serves, and whenever, a key marked compromised therefore stops
/// signing and leaves every document within this time of the command (ARCHITECTURE.md).
pub const SNAPSHOT_MAX_AGE_SECONDS: i64 = 180;

/// How far a snapshot's `read_at` may be ahead of the reader's clock (the writer's clock a
/// little ahead of it) for it to be taken.
pub const SNAPSHOT_CLOCK_SKEW_SECONDS: i64 = 5;

/// How long after the D1 read it holds a snapshot is used: [`SNAPSHOT_MAX_AGE_SECONDS`], and a
/// quarter of the publication lead at most (as an isolate's own read), so that a key the cron
/// publishes after the snapshot was written is in every isolate's JWKS long before it signs.
pub fn snapshot_max_age_seconds(config: &Config) -> i64 {
    SNAPSHOT_MAX_AGE_SECONDS.min(config.key_publication_lead_seconds / 4)
}

/// What [`Keyring::refresh_from_snapshot`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotRefresh {
    /// KV was not asked: the keyring's own read still covers the instant, or KV had nothing
    /// usable less than a cache period ago.
    NotNeeded,
    /// The snapshot is the keyring's read now: no D1 read for keys until it expires.
    Taken,
    /// KV had nothing usable: the keyring is as it was, and reads D1 when asked for keys.
    Unusable(UnusableSnapshot),
}

/// Why a snapshot was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnusableSnapshot {
    /// KV did not answer.
    Store(String),
    Missing,
    /// Not a snapshot this release reads: not JSON, another version, another shape.
    Unreadable(String),
    /// Its tag was made with none of the configured key-encryption keys: edited or forged by
    /// someone who can write KV, or written by a deployment with other keys.
    Unauthenticated,
    /// The D1 read it holds is this old: [`snapshot_max_age_seconds`] or more.
    TooOld {
        age_seconds: i64,
    },
    /// The D1 read it holds is this far ahead of the reader's clock: more than
    /// [`SNAPSHOT_CLOCK_SKEW_SECONDS`].
    Ahead {
        seconds: i64,
    },
    /// By the snapshot, no key of this algorithm edgeid signs with can sign now: none is
    /// active, or the active one opens with no configured key-encryption key. D1 decides (and
    /// a bootstrap adds one).
    NoSigningKey(SigningAlg),
    /// The keys chosen from it could not be made into signing keys.
    Keys(String),
}

/// One read of the key table, and which of its keys of the algorithms edgeid signs with this
/// worker cannot sign with because no configured key-encryption key opens them.
#[derive(Debug)]
struct Table {
    records: Vec<SigningKeyRecord>,
    /// Treated as absent for signing (so the bootstrap makes a fresh key); still published like
    /// any other key until it retires and its tokens expire, since it may have signed some.
    cannot_open: Vec<String>,
}

impl Table {
    /// Opens the private part of every key of the algorithms edgeid signs with that is not
    /// marked compromised (a few microseconds each: a decryption, no RSA operation), and logs
    /// those that open with neither key, once per read.
    fn new(records: Vec<SigningKeyRecord>, config: &Config) -> Table {
        let signed = signed_algorithms(config);
        let cannot_open: Vec<String> = records
            .iter()
            .filter(|key| {
                signed.contains(&key.alg.as_str())
                    && key.compromised_at.is_none()
                    && open_private(key, config).is_none()
            })
            .map(|key| key.kid.clone())
            .collect();
        for kid in &cannot_open {
            log::warn!("signing key {kid} opens with no configured key-encryption key: treated as absent");
        }
        Table { records, cannot_open }
    }

    /// Whether `key` may sign here: not marked compromised, and its private part opens.
    fn can_sign(&self, key: &SigningKeyRecord) -> bool {
        key.compromised_at.is_none() && !self.cannot_open.contains(&key.kid)
    }
}

/// Which configured key-encryption key a private part opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SealedUnder {
    Current,
    Previous,
}

/// The private JWK of `key`, opened with `KEY_ENCRYPTION_KEY` or else
/// `KEY_ENCRYPTION_KEY_PREVIOUS`; `None` if neither opens it.
fn open_private(key: &SigningKeyRecord, config: &Config) -> Option<(Vec<u8>, SealedUnder)> {
    let open = |kek: &[u8; 32]| sealing::open(kek, key.kid.as_bytes(), &key.private_sealed);
    if let Some(private) = open(&config.key_encryption_key.0) {
        return Some((private, SealedUnder::Current));
    }
    let previous = config.key_encryption_key_previous.as_ref()?;
    open(&previous.0).map(|private| (private, SealedUnder::Previous))
}

/// The JWS names of the algorithms edgeid signs with, as the key table spells them.
fn signed_algorithms(config: &Config) -> Vec<&'static str> {
    config.signing_algorithms().into_iter().map(SigningAlg::jws_name).collect()
}

/// Which key signs for each algorithm and which are published: `SigningKeys` is rebuilt only
/// when this changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selection {
    /// One kid per algorithm, in the order of `Config::signing_algorithms` (`SIGNING_ALG`'s
    /// first).
    active: Vec<String>,
    published: Vec<String>,
}

/// How far ahead of a request's clock another request's may be: a bootstrap key added by a
/// request whose instant is up to this much later counts as the bootstrap for this one.
const BOOTSTRAP_SKEW_SECONDS: i64 = 60;

/// How many rounds a derived bootstrap takes at most: a round reads the salt and either inserts
/// its key or replaces a spent salt, and racing requests agree after one replacement.
const BOOTSTRAP_ROUNDS: usize = 4;

/// The instant, shortly after `now`, at which a bootstrap key of `alg` (active from its
/// publication, unlike a rotated key) starts: concurrent first requests take their instants as
/// they start, so the one that won the bootstrap may be a second ahead of the others, which
/// then sign with its key rather than add their own.
fn bootstrapped_ahead(table: &Table, alg: SigningAlg, now: i64) -> Option<i64> {
    let alg = alg.jws_name();
    table
        .records
        .iter()
        .filter(|key| {
            key.alg == alg && key.retired_at.is_none() && key.activates_at == key.published_at && table.can_sign(key)
        })
        .map(|key| key.activates_at)
        .filter(|&at| at > now && at <= now + BOOTSTRAP_SKEW_SECONDS)
        .min()
}

/// The longest an issued token lives, leeway included: how long a retired key stays published.
fn longest_token_lifetime(config: &Config) -> i64 {
    config.access_token_ttl_seconds + LEEWAY_SECONDS
}

/// The key of `alg` that signs at `at`: not marked compromised, openable here, activated and
/// not yet retired. Records come newest activation first, so the first such one signs.
fn active_key(table: &Table, alg: SigningAlg, at: i64) -> Option<&SigningKeyRecord> {
    let alg = alg.jws_name();
    table.records.iter().find(|key| {
        key.alg == alg
            && key.activates_at <= at
            && key.retired_at.is_none_or(|retired| retired > at)
            && table.can_sign(key)
    })
}

/// The key of `alg` that signs at `now`, or at the start of a bootstrap key that a racing
/// request, whose clock is a little ahead, has just added.
fn active_or_ahead(table: &Table, alg: SigningAlg, now: i64) -> Option<&SigningKeyRecord> {
    active_key(table, alg, now).or_else(|| active_key(table, alg, bootstrapped_ahead(table, alg, now)?))
}

/// The algorithms edgeid signs with that have no key signing at `now`: those to bootstrap.
fn without_active_key(table: &Table, config: &Config, now: i64) -> Vec<SigningAlg> {
    config.signing_algorithms().into_iter().filter(|&alg| active_key(table, alg, now).is_none()).collect()
}

/// The key of each algorithm that signs at `now` (or at the start of a racer's bootstrap key,
/// see [`active_or_ahead`]) and the keys published then, of every algorithm; `None` unless
/// every algorithm edgeid signs with has a key. A key marked compromised neither signs nor is
/// published; one that no configured key-encryption key opens is published (like a retired
/// key) but never signs.
fn select_or_ahead(table: &Table, config: &Config, now: i64) -> Option<Selection> {
    let active = config
        .signing_algorithms()
        .into_iter()
        .map(|alg| active_or_ahead(table, alg, now).map(|key| key.kid.clone()))
        .collect::<Option<Vec<String>>>()?;
    let published = table
        .records
        .iter()
        .filter(|key| {
            key.compromised_at.is_none()
                && key.published_at <= now
                && key.retired_at.is_none_or(|retired| retired + longest_token_lifetime(config) > now)
        })
        .map(|key| key.kid.clone())
        .collect();
    Some(Selection { active, published })
}

impl Keyring {
    pub fn new(max_cache_seconds: i64) -> Keyring {
        Keyring {
            max_cache_seconds,
            reads: Cell::new(0),
            cache: RefCell::new(None),
            snapshot_to_write: RefCell::new(None),
            snapshot_unusable_at: Cell::new(None),
        }
    }

    /// Before a request: if no read of the key table covers `now` (a new isolate, or its read
    /// has expired), takes the snapshot in KV in its place, if it is usable:
    ///
    /// - it is there, and is a snapshot of this version (anything else is only unusable);
    /// - the D1 read it holds is younger than [`snapshot_max_age_seconds`], and not ahead of
    ///   `now` by more than [`SNAPSHOT_CLOCK_SKEW_SECONDS`];
    /// - its keys, opened under the configured key-encryption keys exactly as a read of D1
    ///   would be (those that open with neither are published but never sign), give every
    ///   algorithm edgeid signs with a key that signs at `now`, so that nothing needs a
    ///   bootstrap, and those keys assemble.
    ///
    /// Then the keyring uses it until [`snapshot_max_age_seconds`] after that read, exactly as
    /// it uses its own reads of D1, and reads KV again after that (the cron writes it every
    /// minute): the compromise bound is the snapshot's age whatever an isolate refreshes from,
    /// so refreshing from D1 would buy nothing but a round trip. Otherwise nothing changes, and
    /// [`Keyring::signing_keys`] reads D1 (and bootstraps) as before. One KV read at most.
    pub async fn refresh_from_snapshot(
        &self,
        kv: &impl KeyValue,
        config: &Config,
        now: DateTime<Utc>,
    ) -> SnapshotRefresh {
        let at = now.timestamp();
        let asked_lately =
            self.snapshot_unusable_at.get().is_some_and(|then| (0..self.cache_seconds(config)).contains(&(at - then)));
        if self.covers(at) || asked_lately {
            return SnapshotRefresh::NotNeeded;
        }
        let refresh = self.snapshot_from_kv(kv, config, at).await;
        let unusable = matches!(refresh, SnapshotRefresh::Unusable(_));
        self.snapshot_unusable_at.set(unusable.then_some(at));
        refresh
    }

    async fn snapshot_from_kv(&self, kv: &impl KeyValue, config: &Config, at: i64) -> SnapshotRefresh {
        let snapshot = match store::read_signing_key_snapshot(kv, &snapshot_keys(config)).await {
            Ok(StoredSnapshot::Found(snapshot)) => snapshot,
            Ok(StoredSnapshot::Missing) => return SnapshotRefresh::Unusable(UnusableSnapshot::Missing),
            Ok(StoredSnapshot::Unreadable(why)) => return SnapshotRefresh::Unusable(UnusableSnapshot::Unreadable(why)),
            Ok(StoredSnapshot::Unauthenticated) => return SnapshotRefresh::Unusable(UnusableSnapshot::Unauthenticated),
            Err(err) => return SnapshotRefresh::Unusable(UnusableSnapshot::Store(err.to_string())),
        };
        let max_age = snapshot_max_age_seconds(config);
        let age_seconds = at - snapshot.read_at;
        if age_seconds >= max_age {
            return SnapshotRefresh::Unusable(UnusableSnapshot::TooOld { age_seconds });
        }
        if age_seconds < -SNAPSHOT_CLOCK_SKEW_SECONDS {
            return SnapshotRefresh::Unusable(UnusableSnapshot::Ahead { seconds: -age_seconds });
        }
        let table = Table::new(snapshot.keys, config);
        let missing = without_active_key(&table, config, at);
        let selection = match (missing.first(), select_or_ahead(&table, config, at)) {
            (None, Some(selection)) => selection,
            (Some(&alg), _) => return SnapshotRefresh::Unusable(UnusableSnapshot::NoSigningKey(alg)),
            // Every algorithm has an active key, so each has a selected one: not reached.
            (None, None) => return SnapshotRefresh::Unusable(UnusableSnapshot::Keys("no selection".to_owned())),
        };
        let keys = match assemble(&table.records, &selection, config) {
            Ok(keys) => Rc::new(keys),
            Err(err) => return SnapshotRefresh::Unusable(UnusableSnapshot::Keys(err.to_string())),
        };
        let mut cache = self.cache.borrow_mut();
        // Another request of the isolate read the table while KV answered: its read is fresher.
        if cache.as_ref().is_some_and(|cache| cache.covers(at)) {
            return SnapshotRefresh::NotNeeded;
        }
        *cache = Some(Cache {
            read: self.reads.get(),
            read_at: snapshot.read_at,
            trusted_for: max_age,
            from_database: false,
            table: Rc::new(table),
            assembled: Some((selection, keys)),
        });
        SnapshotRefresh::Taken
    }

    /// The key table as this request read it after bootstrapping a key, once: the adapter
    /// writes it to KV after the response, so that new isolates find the new key without
    /// waiting for the cron (or, after a compromise, reading D1).
    pub fn take_snapshot_to_write(&self) -> Option<SigningKeySnapshot> {
        self.snapshot_to_write.take()
    }

    /// Whether a read of the key table (this isolate's own, or a snapshot) covers `at`.
    fn covers(&self, at: i64) -> bool {
        self.cache.borrow().as_ref().is_some_and(|cache| cache.covers(at))
    }

    /// The keys in force at `now`. For each algorithm edgeid signs with that has no key that
    /// can sign (a fresh installation, a new `SIGNING_ALG`, its active key marked compromised
    /// or sealed under a key-encryption key no longer configured), a bootstrap key is added
    /// first, active at once; concurrent requests all end up with the same one. With every
    /// algorithm's key in place this is one read of the key table per cache period.
    pub async fn signing_keys(
        &self,
        db: &impl Database,
        config: &Config,
        crypto: &impl Crypto,
        now: DateTime<Utc>,
    ) -> Result<Rc<SigningKeys>, KeyringError> {
        let mut table = self.table(db, config, now, true).await?;
        let mut bootstrapped = false;
        // A second round only if the first bootstrap judged from a cached read that missed a
        // newer key (one this worker cannot open, added by a deployment with another key).
        for _ in 0..2 {
            let missing = without_active_key(&table, config, now.timestamp());
            if missing.is_empty() {
                break;
            }
            for alg in missing {
                bootstrap(db, config, crypto, alg, now, &table).await?;
            }
            bootstrapped = true;
            table = self.table(db, config, now, false).await?;
        }
        if bootstrapped {
            // Read after the bootstrap, so at least as fresh as `now`.
            *self.snapshot_to_write.borrow_mut() = Some(SigningKeySnapshot::of(&table.records, now.timestamp()));
        }
        let selection = select_or_ahead(&table, config, now.timestamp()).ok_or(KeyringError::NoActiveKey)?;
        if let Some(cache) = self.cache.borrow().as_ref() {
            if let Some((cached_selection, keys)) = &cache.assembled {
                if *cached_selection == selection {
                    return Ok(Rc::clone(keys));
                }
            }
        }
        let keys = Rc::new(assemble(&table.records, &selection, config)?);
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
    /// it returned at `now` without reading D1 or KV again: the end of the cached read (or
    /// snapshot), or the next
    /// instant at which a cached key is published, starts signing, retires or leaves the JWKS,
    /// whichever comes first. `None` before the first read and when that instant is already
    /// here (no cache). Whatever is made from those keys alone (the JWKS, the discovery
    /// document) stays the same until then, and never beyond the cached read: a key marked
    /// compromised leaves the documents replayed from memory when the read it was in expires.
    pub fn unchanged_until(&self, config: &Config, now: i64) -> Option<i64> {
        let cache = self.cache.borrow();
        let cache = cache.as_ref()?;
        let read_expires = cache.read_at + cache.trusted_for;
        let lifetime = longest_token_lifetime(config);
        let next_change = cache
            .table
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

    /// The key table: the cached read (or snapshot) when `reuse` and it covers `now`, else a
    /// read of D1.
    async fn table(
        &self,
        db: &impl Database,
        config: &Config,
        now: DateTime<Utc>,
        reuse: bool,
    ) -> Result<Rc<Table>, DatabaseError> {
        if reuse {
            if let Some(cache) = self.cache.borrow().as_ref().filter(|cache| cache.covers(now.timestamp())) {
                return Ok(Rc::clone(&cache.table));
            }
        }
        let read = self.reads.get() + 1;
        self.reads.set(read);
        let records = store::list_signing_keys(db).await?;
        let mut cache = self.cache.borrow_mut();
        // Concurrent requests' reads overlap: one issued later, which may hold a newer table,
        // is never replaced by an earlier one that happened to answer last. A snapshot taken
        // meanwhile is older than any read of D1, and gives way.
        if let Some(newer) = cache.as_ref().filter(|cache| cache.from_database && cache.read > read) {
            return Ok(Rc::clone(&newer.table));
        }
        let table = Rc::new(Table::new(records, config));
        let assembled = cache.take().and_then(|cache| cache.assembled);
        *cache = Some(Cache {
            read,
            read_at: now.timestamp(),
            trusted_for: self.cache_seconds(config),
            from_database: true,
            table: Rc::clone(&table),
            assembled,
        });
        Ok(table)
    }
}

/// Opens the selected signing keys (one per algorithm; an RSA key is only parsed, its private
/// operations are the platform's) and gathers the published public keys.
fn assemble(records: &[SigningKeyRecord], selection: &Selection, config: &Config) -> Result<SigningKeys, KeyringError> {
    let mut signing = selection.active.iter().map(|kid| {
        let active = records.iter().find(|key| key.kid == *kid).ok_or_else(|| KeyError::Sealed(kid.clone()))?;
        let alg = SigningAlg::from_jws_name(&active.alg).ok_or_else(|| KeyError::Unusable {
            kid: active.kid.clone(),
            alg: active.alg.clone(),
            reason: "not an algorithm edgeid signs with".to_owned(),
        })?;
        let (private, _) = open_private(active, config).ok_or_else(|| KeyError::Sealed(active.kid.clone()))?;
        KeyMaterial::from_private_jwk(alg, &active.kid, &private)
    });
    let primary = signing.next().ok_or(KeyringError::NoActiveKey)??;
    let others = signing.collect::<Result<Vec<KeyMaterial>, KeyError>>()?;
    let published: Vec<Map<String, Value>> = records
        .iter()
        .filter(|key| selection.published.contains(&key.kid))
        .filter_map(|key| serde_json::from_str(&key.public_jwk).ok())
        .collect();
    Ok(SigningKeys::new(primary, others, &published))
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
        compromised_at: None,
    })
}

/// Adds a bootstrap key for `alg`, active at once: nothing can have cached a JWKS without it.
/// ES256 and EdDSA keys are derived (see [`bootstrap_derived`]). An RS256 key cannot be derived
/// (WebCrypto generates it), so racing requests each generate one and a conditional insert lets
/// exactly one in; `table` says which keys cannot sign here.
async fn bootstrap(
    db: &impl Database,
    config: &Config,
    crypto: &impl Crypto,
    alg: SigningAlg,
    now: DateTime<Utc>,
    table: &Table,
) -> Result<(), KeyringError> {
    if alg != SigningAlg::Rs256 {
        return bootstrap_derived(db, config, crypto, alg, now).await;
    }
    let at = now.timestamp();
    let key = KeyMaterial::generate(alg, crypto).await?;
    let record = record(&key, config, crypto, at, at)?;
    let signed = signed_algorithms(config);
    if store::add_signing_key_unless_one_is_active(
        db,
        &record,
        &signed,
        now,
        BOOTSTRAP_SKEW_SECONDS,
        &table.cannot_open,
    )
    .await?
    {
        log::info!("bootstrapped signing key {} ({})", key.kid(), key.alg().jws_name());
    }
    Ok(())
}

/// The ES256 and EdDSA bootstrap: the key is derived from `KEY_ENCRYPTION_KEY` and the
/// algorithm's salt in D1 (`signing_key_salts`), so racing requests, reading the same salt,
/// derive and insert the same key, exactly once. A salt yields one key, once: when the key it
/// yielded can no longer sign (retired, marked compromised, deleted, or sealed under a
/// key-encryption key this worker lacks), the salt is replaced — one conditional update, which
/// one racer wins — and a new key derived. So a retired key never comes back, and the
/// key-encryption key alone yields no signing key.
async fn bootstrap_derived(
    db: &impl Database,
    config: &Config,
    crypto: &impl Crypto,
    signing_alg: SigningAlg,
    now: DateTime<Utc>,
) -> Result<(), KeyringError> {
    let alg = signing_alg.jws_name();
    let at = now.timestamp();
    let signed = signed_algorithms(config);
    for _ in 0..BOOTSTRAP_ROUNDS {
        let (salt, records) = store::bootstrap_salt(db, alg, &fresh_salt(crypto)?, now).await?;
        // The same snapshot as the salt: a key a racer has just added is seen with its salt.
        let table = Table::new(records, config);
        if active_or_ahead(&table, signing_alg, at).is_some() {
            return Ok(());
        }
        match salt.kid {
            None => {
                let key =
                    KeyMaterial::derive_bootstrap(signing_alg, &config.key_encryption_key.0, salt.salt.as_bytes())
                        .ok_or(KeyringError::NoActiveKey)?;
                let record = record(&key, config, crypto, at, at)?;
                if store::add_bootstrap_key(db, &record, &salt.salt, &signed, now).await? {
                    log::info!("bootstrapped signing key {} ({alg})", key.kid());
                }
            }
            Some(spent) => {
                if store::replace_bootstrap_salt(db, alg, &salt.salt, &fresh_salt(crypto)?, now).await? {
                    log::info!("new {alg} bootstrap salt: the key of the last one ({spent}) cannot sign");
                }
            }
        }
    }
    Err(KeyringError::NoActiveKey)
}

/// 256 random bits, base64url: a bootstrap salt.
fn fresh_salt(crypto: &impl Crypto) -> Result<String, EntropyError> {
    let mut salt = [0u8; 32];
    crypto.fill(&mut salt)?;
    Ok(base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, salt))
}

/// The scheduled maintenance, for each algorithm edgeid signs with: bootstraps it if needed,
/// publishes its next key when its active one is due to be replaced within the lead time (or
/// at once with `force`). Then retires the keys of algorithms edgeid no longer signs with,
/// re-seals under `KEY_ENCRYPTION_KEY` the keys that open only with
/// `KEY_ENCRYPTION_KEY_PREVIOUS`, and deletes keys retired or marked compromised whose tokens
/// have all expired.
pub async fn maintain(
    db: &impl Database,
    config: &Config,
    crypto: &impl Crypto,
    now: DateTime<Utc>,
    force: bool,
) -> Result<Maintenance, KeyringError> {
    let mut report = Maintenance::default();
    let at = now.timestamp();
    let signed = signed_algorithms(config);
    let mut table = Table::new(store::list_signing_keys(db).await?, config);
    let missing = without_active_key(&table, config, at);
    if !missing.is_empty() {
        for alg in missing {
            bootstrap(db, config, crypto, alg, now, &table).await?;
        }
        table = Table::new(store::list_signing_keys(db).await?, config);
    }
    for alg in config.signing_algorithms() {
        let name = alg.jws_name();
        let pending = table
            .records
            .iter()
            .any(|key| key.alg == name && key.activates_at > at && key.retired_at.is_none() && table.can_sign(key));
        let due = active_key(&table, alg, at).is_some_and(|active| {
            active.activates_at + config.key_rotation_interval_seconds - config.key_publication_lead_seconds <= at
        });
        if !pending && (due || force) {
            let key = KeyMaterial::generate(alg, crypto).await?;
            let activates_at = at + config.key_publication_lead_seconds;
            store::add_signing_key(db, &record(&key, config, crypto, at, activates_at)?, &signed, now).await?;
            log::info!("published signing key {} ({name}); it signs from {activates_at}", key.kid());
            report.published.push((key.kid().to_owned(), activates_at));
        }
    }
    report.retired = store::retire_signing_keys_of_other_algorithms(db, &signed, now).await?;
    if report.retired > 0 {
        log::info!("retired {} signing keys of algorithms no longer signed with", report.retired);
    }
    report.resealed = reseal(db, config, crypto, &table.records).await?;
    report.removed = store::remove_retired_signing_keys(db, at - longest_token_lifetime(config)).await?;
    Ok(report)
}

/// The cron's snapshot (every minute, and after the hourly maintenance): the key table as one
/// read of D1 at `now` finds it, written to KV for isolates to take instead of reading D1
/// (see [`Keyring::refresh_from_snapshot`]). It holds only what `signing_keys` holds, minus the
/// keys marked compromised: public keys, private parts sealed as stored, validity windows.
/// Returns what it wrote.
pub async fn write_snapshot(
    db: &impl Database,
    kv: &impl KeyValue,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<SigningKeySnapshot, KeyringError> {
    let records = store::list_signing_keys(db).await?;
    let snapshot = SigningKeySnapshot::of(&records, now.timestamp());
    store::write_signing_key_snapshot(kv, &snapshot_key(config), &snapshot).await?;
    Ok(snapshot)
}

/// The key a snapshot is tagged with when written: derived from `KEY_ENCRYPTION_KEY`, so that
/// only a holder of the key that opens the private parts can make a snapshot an isolate takes.
pub fn snapshot_key(config: &Config) -> ValueKey {
    ValueKey::derive(&config.key_encryption_key.0)
}

/// The keys a snapshot's tag is checked against: `KEY_ENCRYPTION_KEY`'s only. Not
/// `KEY_ENCRYPTION_KEY_PREVIOUS`'s: whoever holds the key being rotated out could then forge a
/// snapshot (its `read_at`, a key of their own sealed under that key) with KV's write alone.
/// A snapshot the deployment before the rotation wrote sends new isolates to D1 until the
/// next cron run writes one under the new key (a minute).
fn snapshot_keys(config: &Config) -> Vec<ValueKey> {
    vec![snapshot_key(config)]
}

/// Seals under `KEY_ENCRYPTION_KEY` every key (but those marked compromised, which never open
/// again) that opens only with `KEY_ENCRYPTION_KEY_PREVIOUS`; each update applies only if the
/// key is still as it was read.
async fn reseal(
    db: &impl Database,
    config: &Config,
    crypto: &impl Crypto,
    records: &[SigningKeyRecord],
) -> Result<u64, KeyringError> {
    let mut reseals = Vec::new();
    for key in records.iter().filter(|key| key.compromised_at.is_none()) {
        if let Some((private, SealedUnder::Previous)) = open_private(key, config) {
            let new_sealed = sealing::seal(&config.key_encryption_key.0, key.kid.as_bytes(), &private, crypto)?;
            reseals.push(store::Reseal { kid: key.kid.clone(), old_sealed: key.private_sealed.clone(), new_sealed });
        }
    }
    let resealed = store::reseal_signing_keys(db, &reseals).await?;
    if resealed > 0 {
        log::info!("re-sealed {resealed} signing keys under KEY_ENCRYPTION_KEY");
    }
    Ok(resealed)
}
