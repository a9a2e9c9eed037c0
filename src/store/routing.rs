//! The shard routing, in one place above the aggregates: `DB` holds what is global (keys,
//! clients, budgets, the bucket map), and each user shard (`USERS_0` … `USERS_{N-1}`) the
//! accounts of the buckets the map gives it, with everything that belongs to them. A flow asks
//! [`UserShards::for_bucket`] for the database of one bucket and hands it to the aggregates'
//! functions like any other database: [`Routed`] sends each batch to the bucket's shard behind
//! a fence, so a batch that reaches a shard which no longer holds the bucket (this isolate's map
//! is older than a move) changes nothing there and is sent again after the map is read anew.

use std::cell::RefCell;
use std::rc::Rc;

use crate::domain::shard::{BucketMap, UserBucket};
use crate::ports::{Database, DatabaseError, Statement, StatementOutcome};

use super::{first_row, integer, rows, text};

/// The fence every routed batch starts with: it fails the batch (rolling all of it back) in a
/// shard that refuses the bucket, by inserting a row the table's `CHECK` forbids. The error
/// names the constraint, which is how [`is_fence_refusal`] recognises it.
const FENCE: &str = "INSERT INTO bucket_fence (bucket)
     SELECT ?1 WHERE EXISTS (SELECT 1 FROM refused_buckets WHERE bucket = ?1 AND refused = 1)";
const FENCE_CONSTRAINT: &str = "edgeid_bucket_refused";

/// Whether a batch failed at its fence.
pub fn is_fence_refusal(err: &DatabaseError) -> bool {
    err.0.contains(FENCE_CONSTRAINT)
}

/// Every bucket the map holds a shard for is served there unless that shard refuses it: a
/// move inserts the refusal in the old shard before it copies anything (`resharding`). A batch
/// about two buckets of one shard (an account moving between them) adds the second's itself.
pub fn fence(bucket: UserBucket) -> Statement {
    Statement::new(FENCE, [i64::from(bucket.index()).into()])
}

/// The bucket map as stored in `DB`, created striped over `shards` on first use (one
/// conditional insert, so concurrent first uses agree on one map).
pub async fn bucket_map(global: &impl Database, shards: usize) -> Result<BucketMap, DatabaseError> {
    const READ: &str = "SELECT shards, version FROM bucket_map WHERE id = 1";
    let outcomes = global.batch(vec![Statement::new(READ, [])]).await?;
    if let Some(row) = first_row(&outcomes) {
        return parse_map(row, shards);
    }
    let striped = BucketMap::striped(shards).map_err(|err| DatabaseError(err.to_string()))?;
    let outcomes = global
        .batch(vec![
            Statement::new(
                "INSERT INTO bucket_map (id, shards, version) VALUES (1, ?1, 1) ON CONFLICT (id) DO NOTHING",
                [striped.to_stored().into()],
            ),
            Statement::new(READ, []),
        ])
        .await?;
    let row = outcomes.get(1).and_then(|outcome| outcome.rows.first());
    parse_map(row.ok_or_else(|| DatabaseError("the bucket map vanished within its own batch".to_owned()))?, shards)
}

fn parse_map(row: &crate::ports::Row, shards: usize) -> Result<BucketMap, DatabaseError> {
    BucketMap::parse(&text(row, "shards")?, integer(row, "version")?, shards)
        .map_err(|err| DatabaseError(format!("bucket map: {err}")))
}

/// The bucket map's version and the buckets being moved: a walk over every shard reads them
/// before and after, and trusts what it read in between only if they did not change.
pub async fn routing_state(global: &impl Database) -> Result<(Option<i64>, Vec<i64>), DatabaseError> {
    let outcomes = global
        .batch(vec![
            Statement::new("SELECT version FROM bucket_map WHERE id = 1", []),
            Statement::new("SELECT bucket FROM bucket_moves ORDER BY bucket", []),
        ])
        .await?;
    let version = first_row(&outcomes).map(|row| integer(row, "version")).transpose()?;
    let moving = rows(&outcomes, 1).iter().map(|row| integer(row, "bucket")).collect::<Result<_, _>>()?;
    Ok((version, moving))
}

/// Replaces the map if it is still at `expected.version`: `true` if this call changed it.
pub async fn swap_bucket_map(
    global: &impl Database,
    expected: &BucketMap,
    next: &BucketMap,
) -> Result<bool, DatabaseError> {
    let outcomes = global
        .batch(vec![Statement::new(
            "UPDATE bucket_map SET shards = ?1, version = version + 1 WHERE id = 1 AND version = ?2",
            [next.to_stored().into(), expected.version.into()],
        )])
        .await?;
    Ok(super::changes(&outcomes, 0) == 1)
}

/// The isolate's copy of the bucket map. It may be older than `DB`'s, which is safe (a batch
/// that reaches the wrong shard stops at its fence and is sent again after a fresh read), so it
/// is kept until a fence says otherwise, or for `max_age_seconds` at most.
#[derive(Debug)]
pub struct Directory {
    max_age_seconds: i64,
    cache: RefCell<Option<(Rc<BucketMap>, i64)>>,
}

impl Directory {
    pub fn new(max_age_seconds: i64) -> Directory {
        Directory { max_age_seconds, cache: RefCell::new(None) }
    }

    async fn map(&self, global: &impl Database, shards: usize, now: i64) -> Result<Rc<BucketMap>, DatabaseError> {
        if let Some((map, read_at)) = self.cache.borrow().as_ref() {
            if now - read_at < self.max_age_seconds && now >= *read_at {
                return Ok(Rc::clone(map));
            }
        }
        let map = Rc::new(bucket_map(global, shards).await?);
        *self.cache.borrow_mut() = Some((Rc::clone(&map), now));
        Ok(map)
    }

    /// Drops the copy if it is still the map of `version`.
    fn forget(&self, version: i64) {
        let mut cache = self.cache.borrow_mut();
        if cache.as_ref().is_some_and(|(map, _)| map.version == version) {
            *cache = None;
        }
    }
}

/// The user shards of this request: the bound databases, in binding order, and the isolate's
/// directory. With no `USERS_*` binding, `DB` is the one shard (a single-database installation).
pub struct UserShards<D> {
    shards: Vec<D>,
    directory: Rc<Directory>,
}

impl<D: Database> UserShards<D> {
    /// `shards` must not be empty.
    pub fn new(shards: Vec<D>, directory: Rc<Directory>) -> UserShards<D> {
        assert!(!shards.is_empty(), "at least one user shard");
        UserShards { shards, directory }
    }

    pub fn count(&self) -> usize {
        self.shards.len()
    }

    /// Shard `index`, directly: maintenance and resharding, which walk every shard.
    pub fn shard(&self, index: usize) -> Option<&D> {
        self.shards.get(index)
    }

    /// The databases of every shard, in order.
    pub fn all(&self) -> impl Iterator<Item = &D> {
        self.shards.iter()
    }

    /// The database of `bucket`'s accounts; `global` is `DB`, where the bucket map lives.
    pub fn for_bucket<'a>(&'a self, global: &'a D, bucket: UserBucket, now: i64) -> Routed<'a, D> {
        Routed { global, shards: self, bucket, now }
    }

    /// The bucket map this isolate routes by.
    pub async fn map(&self, global: &D, now: i64) -> Result<Rc<BucketMap>, DatabaseError> {
        self.directory.map(global, self.shards.len(), now).await
    }
}

/// One bucket's database: each batch goes to the shard that holds the bucket, behind the fence.
pub struct Routed<'a, D> {
    global: &'a D,
    shards: &'a UserShards<D>,
    bucket: UserBucket,
    now: i64,
}

impl<D> Routed<'_, D> {
    pub fn bucket(&self) -> UserBucket {
        self.bucket
    }
}

/// How often a refused batch is sent again after a fresh read of the map before the request
/// gives up (the bucket is in the middle of a move).
const ATTEMPTS: usize = 3;

impl<D: Database> Database for Routed<'_, D> {
    async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<StatementOutcome>, DatabaseError> {
        for _ in 0..ATTEMPTS {
            let map = self.shards.map(self.global, self.now).await?;
            let shard = map.shard_of(self.bucket);
            let database = self.shards.shards.get(shard).ok_or_else(|| {
                DatabaseError(format!("the bucket map puts {} in shard {shard}, which is not bound", self.bucket))
            })?;
            let mut fenced = Vec::with_capacity(statements.len() + 1);
            fenced.push(fence(self.bucket));
            fenced.extend(statements.iter().cloned());
            match database.batch(fenced).await {
                Ok(mut outcomes) => {
                    outcomes.remove(0);
                    return Ok(outcomes);
                }
                Err(err) if is_fence_refusal(&err) => self.shards.directory.forget(map.version),
                Err(err) => return Err(err),
            }
        }
        Err(DatabaseError::moving(self.bucket))
    }
}
