//! `signing_keys` and `signing_key_salts`: the keyring's storage (`crate::keyring` decides);
//! and the snapshot of the published key set that KV holds, its format and its one key.

use chrono::{DateTime, Utc};

use super::{changes, integer, optional_integer, optional_text, text};
use crate::domain::sealing::ValueKey;
use crate::ports::{Database, DatabaseError, KeyValue, KeyValueError, SqlValue, Statement, StatementOutcome};

/// A signing key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub alg: String,
    pub public_jwk: String,
    pub private_sealed: String,
    pub published_at: i64,
    pub activates_at: i64,
    pub retired_at: Option<i64>,
    /// Set by the operator (README, "Signing keys"): the key never signs, is never published and
    /// verifies nothing from then on.
    pub compromised_at: Option<i64>,
}

const LIST_SIGNING_KEYS: &str =
    "SELECT kid, alg, public_jwk, private_sealed, published_at, activates_at, retired_at, compromised_at
     FROM signing_keys ORDER BY activates_at DESC, kid";

fn signing_key_records(outcome: Option<&StatementOutcome>) -> Result<Vec<SigningKeyRecord>, DatabaseError> {
    outcome
        .map(|outcome| &outcome.rows[..])
        .unwrap_or_default()
        .iter()
        .map(|row| {
            Ok(SigningKeyRecord {
                kid: text(row, "kid")?,
                alg: text(row, "alg")?,
                public_jwk: text(row, "public_jwk")?,
                private_sealed: text(row, "private_sealed")?,
                published_at: integer(row, "published_at")?,
                activates_at: integer(row, "activates_at")?,
                retired_at: optional_integer(row, "retired_at")?,
                compromised_at: optional_integer(row, "compromised_at")?,
            })
        })
        .collect()
}

/// Every signing key still in the table, newest activation first.
pub async fn list_signing_keys(db: &impl Database) -> Result<Vec<SigningKeyRecord>, DatabaseError> {
    let outcomes = db.batch(vec![Statement::new(LIST_SIGNING_KEYS, [])]).await?;
    signing_key_records(outcomes.first())
}

/// The algorithms edgeid signs with, as a JSON array for `json_each`.
fn algorithms_json(signed_algorithms: &[&str]) -> String {
    serde_json::Value::from(signed_algorithms.to_vec()).to_string()
}

/// Adds a (random) key that activates at `key.activates_at`; every key it replaces that is not
/// yet retired retires then: the others of its algorithm (each algorithm has its own active
/// key) and those of algorithms edgeid no longer signs with, so that a change of `SIGNING_ALG`
/// retires the old algorithm's keys (the same in both bootstraps). A kid already in the table fails the
/// batch, leaving everything as it was: no key is ever inserted twice, so a retired one never
/// comes back. `signed_algorithms` are those edgeid signs with.
pub async fn add_signing_key(
    db: &impl Database,
    key: &SigningKeyRecord,
    signed_algorithms: &[&str],
    now: DateTime<Utc>,
) -> Result<(), DatabaseError> {
    db.batch(vec![
        Statement::new(
            "UPDATE signing_keys SET retired_at = ?2
             WHERE kid != ?1 AND (alg = ?3 OR alg NOT IN (SELECT value FROM json_each(?4)))
               AND (retired_at IS NULL OR retired_at > ?2)",
            [
                key.kid.as_str().into(),
                key.activates_at.into(),
                key.alg.as_str().into(),
                algorithms_json(signed_algorithms).into(),
            ],
        ),
        Statement::new(
            "INSERT INTO signing_keys (kid, alg, public_jwk, private_sealed, created_at, published_at, activates_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            [
                key.kid.as_str().into(),
                key.alg.as_str().into(),
                key.public_jwk.as_str().into(),
                key.private_sealed.as_str().into(),
                now.timestamp().into(),
                key.published_at.into(),
                key.activates_at.into(),
            ],
        ),
    ])
    .await
    .map(drop)
}

/// Retires at `now` every key not yet retired of an algorithm edgeid no longer signs with (not in
/// `signed_algorithms`): the cron's part of a change of `SIGNING_ALG` that needed no bootstrap
/// (to RS256, whose key was there already). Returns how many keys it retired.
pub async fn retire_signing_keys_of_other_algorithms(
    db: &impl Database,
    signed_algorithms: &[&str],
    now: DateTime<Utc>,
) -> Result<u64, DatabaseError> {
    let outcomes = db
        .batch(vec![Statement::new(
            "UPDATE signing_keys SET retired_at = ?2
             WHERE alg NOT IN (SELECT value FROM json_each(?1)) AND (retired_at IS NULL OR retired_at > ?2)",
            [algorithms_json(signed_algorithms).into(), now.timestamp().into()],
        )])
        .await?;
    Ok(changes(&outcomes, 0))
}

/// Deletes keys retired, or marked compromised, before `before`: no unexpired token can carry
/// their kid (and a token that does is refused for naming no published key).
pub async fn remove_retired_signing_keys(db: &impl Database, before: i64) -> Result<u64, DatabaseError> {
    let outcomes = db
        .batch(vec![Statement::new(
            "DELETE FROM signing_keys
             WHERE (retired_at IS NOT NULL AND retired_at <= ?1) OR (compromised_at IS NOT NULL AND compromised_at <= ?1)",
            [before.into()],
        )])
        .await?;
    Ok(changes(&outcomes, 0))
}

/// Adds `key`, active at once, only if no key of its algorithm is active at `now`, nor another
/// bootstrap key (active from its publication) starting within `skew_seconds` after `now`;
/// then retires those it replaces (as [`add_signing_key`]). Keys marked compromised, and those named
/// in `cannot_sign` (whose private part this worker cannot open), count as absent. Of
/// concurrent calls with different (random) keys exactly one inserts, even when their instants
/// straddle a second: the RS256 bootstrap, whose key cannot be derived. Keys of other
/// algorithms neither stop nor are stopped by it. Returns whether this call's key went in.
pub async fn add_signing_key_unless_one_is_active(
    db: &impl Database,
    key: &SigningKeyRecord,
    signed_algorithms: &[&str],
    now: DateTime<Utc>,
    skew_seconds: i64,
    cannot_sign: &[String],
) -> Result<bool, DatabaseError> {
    let cannot_sign = serde_json::Value::from(cannot_sign.to_vec()).to_string();
    let outcomes = db
        .batch(vec![
            Statement::new(
                "INSERT INTO signing_keys (kid, alg, public_jwk, private_sealed, created_at, published_at, activates_at)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?5, ?5
                 WHERE NOT EXISTS (SELECT 1 FROM signing_keys
                                   WHERE alg = ?2 AND (retired_at IS NULL OR retired_at > ?5)
                                     AND compromised_at IS NULL
                                     AND kid NOT IN (SELECT value FROM json_each(?7))
                                     AND (activates_at <= ?5
                                          OR (activates_at = published_at AND activates_at <= ?5 + ?6)))",
                [
                    key.kid.as_str().into(),
                    key.alg.as_str().into(),
                    key.public_jwk.as_str().into(),
                    key.private_sealed.as_str().into(),
                    now.timestamp().into(),
                    skew_seconds.into(),
                    cannot_sign.into(),
                ],
            ),
            Statement::new(
                "UPDATE signing_keys SET retired_at = ?2
                 WHERE kid != ?1 AND (alg = ?3 OR alg NOT IN (SELECT value FROM json_each(?4)))
                   AND (retired_at IS NULL OR retired_at > ?2)
                   AND EXISTS (SELECT 1 FROM signing_keys WHERE kid = ?1 AND created_at = ?2)",
                [
                    key.kid.as_str().into(),
                    now.timestamp().into(),
                    key.alg.as_str().into(),
                    algorithms_json(signed_algorithms).into(),
                ],
            ),
        ])
        .await?;
    Ok(changes(&outcomes, 0) == 1)
}

/// The salt an algorithm's bootstrap key is derived from (`signing_key_salts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapSalt {
    /// base64url.
    pub salt: String,
    /// The key this salt yielded, once it did: a salt yields one key, once.
    pub kid: Option<String>,
}

/// The bootstrap salt of `alg`, `fresh` becoming it if there is none yet, read in the same
/// batch as the key table: concurrent callers read the same salt, and judge its key by the
/// table as it was at that instant.
pub async fn bootstrap_salt(
    db: &impl Database,
    alg: &str,
    fresh: &str,
    now: DateTime<Utc>,
) -> Result<(BootstrapSalt, Vec<SigningKeyRecord>), DatabaseError> {
    let outcomes = db
        .batch(vec![
            Statement::new(
                "INSERT INTO signing_key_salts (alg, salt, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (alg) DO NOTHING",
                [alg.into(), fresh.into(), now.timestamp().into()],
            ),
            Statement::new("SELECT salt, kid FROM signing_key_salts WHERE alg = ?1", [alg.into()]),
            Statement::new(LIST_SIGNING_KEYS, []),
        ])
        .await?;
    let row = outcomes
        .get(1)
        .and_then(|outcome| outcome.rows.first())
        .ok_or_else(|| DatabaseError(format!("no bootstrap salt for {alg} after inserting one")))?;
    let salt = BootstrapSalt { salt: text(row, "salt")?, kid: optional_text(row, "kid")? };
    Ok((salt, signing_key_records(outcomes.get(2))?))
}

/// Adds the bootstrap key derived from `salt`, active at once, if that salt has yielded no key
/// yet; then retires those it replaces (as [`add_signing_key`]) and records the key as the salt's. Concurrent callers with the
/// same salt derive the same key: exactly one batch inserts it. A kid already in the table is
/// never brought back (the salt is spent all the same, so the next bootstrap replaces it).
/// Returns whether this call's key went in.
pub async fn add_bootstrap_key(
    db: &impl Database,
    key: &SigningKeyRecord,
    salt: &str,
    signed_algorithms: &[&str],
    now: DateTime<Utc>,
) -> Result<bool, DatabaseError> {
    let params = || -> Vec<SqlValue> {
        vec![
            key.kid.as_str().into(),
            key.alg.as_str().into(),
            key.public_jwk.as_str().into(),
            key.private_sealed.as_str().into(),
            now.timestamp().into(),
            salt.into(),
        ]
    };
    let mut retire_params = params();
    retire_params.push(algorithms_json(signed_algorithms).into());
    let outcomes = db
        .batch(vec![
            Statement::new(
                "INSERT INTO signing_keys (kid, alg, public_jwk, private_sealed, created_at, published_at, activates_at)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?5, ?5
                 WHERE EXISTS (SELECT 1 FROM signing_key_salts WHERE alg = ?2 AND salt = ?6 AND kid IS NULL)
                 ON CONFLICT (kid) DO NOTHING",
                params(),
            ),
            // Only after this batch's own insert: its sealed form has a fresh random nonce.
            Statement::new(
                "UPDATE signing_keys SET retired_at = ?5
                 WHERE kid != ?1 AND (alg = ?2 OR alg NOT IN (SELECT value FROM json_each(?7)))
                   AND (retired_at IS NULL OR retired_at > ?5)
                   AND EXISTS (SELECT 1 FROM signing_keys WHERE kid = ?1 AND private_sealed = ?4 AND created_at = ?5)
                   AND EXISTS (SELECT 1 FROM signing_key_salts WHERE alg = ?2 AND salt = ?6 AND kid IS NULL)",
                retire_params,
            ),
            Statement::new(
                "UPDATE signing_key_salts SET kid = ?1 WHERE alg = ?2 AND salt = ?3 AND kid IS NULL",
                [key.kid.as_str().into(), key.alg.as_str().into(), salt.into()],
            ),
        ])
        .await?;
    Ok(changes(&outcomes, 0) == 1)
}

/// Replaces the bootstrap salt of `alg` with `fresh`, if it is still `spent`: of concurrent
/// callers, one wins and the others read its salt. Returns whether this call replaced it.
pub async fn replace_bootstrap_salt(
    db: &impl Database,
    alg: &str,
    spent: &str,
    fresh: &str,
    now: DateTime<Utc>,
) -> Result<bool, DatabaseError> {
    let outcomes = db
        .batch(vec![Statement::new(
            "UPDATE signing_key_salts SET salt = ?3, kid = NULL, created_at = ?4 WHERE alg = ?1 AND salt = ?2",
            [alg.into(), spent.into(), fresh.into(), now.timestamp().into()],
        )])
        .await?;
    Ok(changes(&outcomes, 0) == 1)
}

/// A key's private part sealed anew: `(kid, as stored, as it should be)`.
pub struct Reseal {
    pub kid: String,
    pub old_sealed: String,
    pub new_sealed: String,
}

/// Stores each key's private part sealed anew (under the current key-encryption key), only
/// where it is still as it was read. One batch; returns how many keys were re-sealed.
pub async fn reseal_signing_keys(db: &impl Database, reseals: &[Reseal]) -> Result<u64, DatabaseError> {
    if reseals.is_empty() {
        return Ok(0);
    }
    let statements = reseals
        .iter()
        .map(|reseal| {
            Statement::new(
                "UPDATE signing_keys SET private_sealed = ?3 WHERE kid = ?1 AND private_sealed = ?2",
                [reseal.kid.as_str().into(), reseal.old_sealed.as_str().into(), reseal.new_sealed.as_str().into()],
            )
        })
        .collect();
    let outcomes = db.batch(statements).await?;
    Ok(outcomes.iter().map(|outcome| outcome.changes).sum())
}

/// Whether the key `kid` is marked compromised: `/userinfo` asks at the same time as it reads
/// the token's session, so a compromise refuses its tokens at once, whatever key table an
/// isolate has cached.
pub async fn is_signing_key_compromised(db: &impl Database, kid: &str) -> Result<bool, DatabaseError> {
    let outcomes = db
        .batch(vec![Statement::new(
            "SELECT count(*) AS compromised FROM signing_keys WHERE kid = ?1 AND compromised_at IS NOT NULL",
            [kid.into()],
        )])
        .await?;
    Ok(super::first_row(&outcomes).map(|row| super::integer(row, "compromised")).transpose()?.unwrap_or(0) > 0)
}

/// The KV key of the signing-key snapshot (docs/STORAGE.md).
pub const SIGNING_KEY_SNAPSHOT_KEY: &str = "signing-keys";

/// The snapshot's version: a reader takes no other (an older or newer release's snapshot is
/// simply not there for it). Version 2 is version 1 with its tag (an older release reads the
/// tagged value as no snapshot, and this one reads an untagged one as none).
pub const SIGNING_KEY_SNAPSHOT_VERSION: u32 = 2;

/// The published key set as one read of `signing_keys` found it, as KV holds it: every key but
/// those marked compromised (which never sign and are never published), each exactly as stored,
/// its private part sealed under the key-encryption key, with its validity window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeySnapshot {
    /// When the key table it holds was read from D1 (Unix seconds, the writer's clock just
    /// before the read, so the table is at least that fresh): its age is counted from here.
    pub read_at: i64,
    /// Newest activation first, as [`list_signing_keys`] returns them; `compromised_at` is
    /// `None` throughout.
    pub keys: Vec<SigningKeyRecord>,
}

/// The snapshot as it is written to KV (docs/STORAGE.md): JSON, the stored columns by name.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotJson {
    version: u32,
    read_at: i64,
    keys: Vec<SnapshotKeyJson>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotKeyJson {
    kid: String,
    alg: String,
    /// The column's text as it is (a JSON object, with the `kid`).
    public_jwk: String,
    private_sealed: String,
    published_at: i64,
    activates_at: i64,
    retired_at: Option<i64>,
}

/// Only the version, read before the rest: another version may have another shape.
#[derive(serde::Deserialize)]
struct SnapshotVersion {
    version: u32,
}

impl SigningKeySnapshot {
    /// The snapshot of a read of the key table made at `read_at` (or later).
    pub fn of(records: &[SigningKeyRecord], read_at: i64) -> SigningKeySnapshot {
        let keys = records.iter().filter(|key| key.compromised_at.is_none()).cloned().collect();
        SigningKeySnapshot { read_at, keys }
    }

    pub fn to_json(&self) -> String {
        let keys = self
            .keys
            .iter()
            .map(|key| SnapshotKeyJson {
                kid: key.kid.clone(),
                alg: key.alg.clone(),
                public_jwk: key.public_jwk.clone(),
                private_sealed: key.private_sealed.clone(),
                published_at: key.published_at,
                activates_at: key.activates_at,
                retired_at: key.retired_at,
            })
            .collect();
        let json = SnapshotJson { version: SIGNING_KEY_SNAPSHOT_VERSION, read_at: self.read_at, keys };
        // Strings and integers only: serialising cannot fail.
        serde_json::to_string(&json).unwrap_or_default()
    }

    /// Reads a snapshot back; why not, for anything else than what [`SigningKeySnapshot::to_json`]
    /// writes: not JSON, another version, another shape, a kid twice or empty, a public key that
    /// is no JSON object naming its own kid.
    pub fn from_json(text: &str) -> Result<SigningKeySnapshot, String> {
        let version: SnapshotVersion = serde_json::from_str(text).map_err(not_a_snapshot)?;
        if version.version != SIGNING_KEY_SNAPSHOT_VERSION {
            return Err(format!("version {} (this release reads {SIGNING_KEY_SNAPSHOT_VERSION})", version.version));
        }
        let json: SnapshotJson = serde_json::from_str(text).map_err(not_a_snapshot)?;
        let mut keys = Vec::with_capacity(json.keys.len());
        for key in json.keys {
            if key.kid.is_empty() || keys.iter().any(|seen: &SigningKeyRecord| seen.kid == key.kid) {
                return Err(format!("kid {:?} empty or twice", key.kid));
            }
            let names_its_kid = serde_json::from_str::<serde_json::Value>(&key.public_jwk)
                .is_ok_and(|jwk| jwk.get("kid").and_then(serde_json::Value::as_str) == Some(key.kid.as_str()));
            if !names_its_kid {
                return Err(format!("the public key of {} is not a JWK with its kid", key.kid));
            }
            keys.push(SigningKeyRecord {
                kid: key.kid,
                alg: key.alg,
                public_jwk: key.public_jwk,
                private_sealed: key.private_sealed,
                published_at: key.published_at,
                activates_at: key.activates_at,
                retired_at: key.retired_at,
                compromised_at: None,
            });
        }
        // The keyring takes the first active key of an algorithm as the one that signs: the
        // order of `LIST_SIGNING_KEYS`, whatever order the text had.
        keys.sort_by(|a, b| b.activates_at.cmp(&a.activates_at).then_with(|| a.kid.cmp(&b.kid)));
        Ok(SigningKeySnapshot { read_at: json.read_at, keys })
    }
}

/// What KV holds under [`SIGNING_KEY_SNAPSHOT_KEY`]: the snapshot's text (what
/// [`SigningKeySnapshot::to_json`] writes) and its tag under the key-encryption key
/// ([`ValueKey`]), which covers the text byte for byte and the KV key's name.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TaggedSnapshot {
    snapshot: String,
    tag: String,
}

/// The most a snapshot in KV may take: a real one is a few KB (a key's public JWK and sealed
/// private part are at most about 3 KB, for RS256), so this is room for dozens of keys.
pub const MAX_SNAPSHOT_BYTES: usize = 256 * 1024;

/// The value to store in KV for the snapshot text `text`: tagged under `key`.
pub fn tagged_snapshot(key: &ValueKey, text: &str) -> String {
    let tagged = TaggedSnapshot { snapshot: text.to_owned(), tag: key.tag(SIGNING_KEY_SNAPSHOT_KEY, text.as_bytes()) };
    // Two strings: serialising cannot fail.
    serde_json::to_string(&tagged).unwrap_or_default()
}

/// Why a text is no snapshot, without quoting it (serde's messages may quote the value).
fn not_a_snapshot(err: serde_json::Error) -> String {
    format!("not a snapshot: {:?} error at line {} column {}", err.classify(), err.line(), err.column())
}

/// What KV holds under [`SIGNING_KEY_SNAPSHOT_KEY`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredSnapshot {
    Missing,
    /// Something this release cannot read, and why.
    Unreadable(String),
    /// A snapshot whose tag no configured key-encryption key made: written by someone who holds
    /// none of them (or edited since), or by a deployment with other keys.
    Unauthenticated,
    Found(SigningKeySnapshot),
}

/// The signing-key snapshot in KV (one read), taken only if one of `keys` tagged it. A value
/// that cannot be read or whose tag fails is no error: it is [`StoredSnapshot::Unreadable`] or
/// [`StoredSnapshot::Unauthenticated`], and the caller reads D1 instead.
pub async fn read_signing_key_snapshot(kv: &impl KeyValue, keys: &[ValueKey]) -> Result<StoredSnapshot, KeyValueError> {
    let Some(value) = kv.get(SIGNING_KEY_SNAPSHOT_KEY).await? else {
        return Ok(StoredSnapshot::Missing);
    };
    // Whoever can write KV could put megabytes there for every new isolate to parse and MAC.
    if value.len() > MAX_SNAPSHOT_BYTES {
        return Ok(StoredSnapshot::Unreadable(format!("{} bytes, over {MAX_SNAPSHOT_BYTES}", value.len())));
    }
    let tagged: TaggedSnapshot = match serde_json::from_str(&value) {
        Ok(tagged) => tagged,
        Err(err) => return Ok(StoredSnapshot::Unreadable(not_a_snapshot(err))),
    };
    // Nothing of the text is read before its tag holds.
    if !keys.iter().any(|key| key.verify(SIGNING_KEY_SNAPSHOT_KEY, tagged.snapshot.as_bytes(), &tagged.tag)) {
        return Ok(StoredSnapshot::Unauthenticated);
    }
    Ok(match SigningKeySnapshot::from_json(&tagged.snapshot) {
        Ok(snapshot) => StoredSnapshot::Found(snapshot),
        Err(reason) => StoredSnapshot::Unreadable(reason),
    })
}

/// Replaces the signing-key snapshot in KV (one write), tagged under `key`.
pub async fn write_signing_key_snapshot(
    kv: &impl KeyValue,
    key: &ValueKey,
    snapshot: &SigningKeySnapshot,
) -> Result<(), KeyValueError> {
    kv.put(SIGNING_KEY_SNAPSHOT_KEY, &tagged_snapshot(key, &snapshot.to_json())).await
}
