//! Moving a bucket between user shards (`flows::resharding` runs the steps in order): the
//! move's record in `DB` (`bucket_moves`: phase and lease), the refusals in the shards
//! (`refused_buckets`, which the routing's fence reads), and the copy and clean-up of a bucket's
//! accounts with everything that belongs to them, a page at a time.

use super::{changed_one, changes, integer, optional_text, text};
use crate::domain::shard::UserBucket;
use crate::ports::{Database, DatabaseError, Row, SqlValue, Statement};

/// How far a move got. Each phase can be run again from its start after an interruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovePhase {
    /// Both shards refuse the bucket: nobody reads or writes it while it moves.
    Refusing,
    /// The destination's copy is (re)made from nothing.
    Copying,
    /// The destination serves the bucket and the map names it.
    Switching,
    /// The source's rows of the bucket are deleted.
    Cleaning,
}

impl MovePhase {
    fn as_str(self) -> &'static str {
        match self {
            MovePhase::Refusing => "refusing",
            MovePhase::Copying => "copying",
            MovePhase::Switching => "switching",
            MovePhase::Cleaning => "cleaning",
        }
    }

    fn parse(stored: &str) -> Result<MovePhase, DatabaseError> {
        Ok(match stored {
            "refusing" => MovePhase::Refusing,
            "copying" => MovePhase::Copying,
            "switching" => MovePhase::Switching,
            "cleaning" => MovePhase::Cleaning,
            other => return Err(DatabaseError(format!("bucket move in an unknown phase {other:?}"))),
        })
    }
}

/// A bucket between shards, as `DB` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketMove {
    pub bucket: UserBucket,
    pub from_shard: usize,
    pub to_shard: usize,
    pub phase: MovePhase,
    pub lease: Option<String>,
    pub lease_until: i64,
}

fn move_record(row: &Row) -> Result<BucketMove, DatabaseError> {
    let index = |column: &str| -> Result<usize, DatabaseError> {
        usize::try_from(integer(row, column)?).map_err(|_| DatabaseError(format!("{column} is negative")))
    };
    let bucket = u16::try_from(integer(row, "bucket")?)
        .ok()
        .and_then(UserBucket::new)
        .ok_or_else(|| DatabaseError("a bucket move names no bucket".to_owned()))?;
    Ok(BucketMove {
        bucket,
        from_shard: index("from_shard")?,
        to_shard: index("to_shard")?,
        phase: MovePhase::parse(&text(row, "phase")?)?,
        lease: optional_text(row, "lease")?,
        lease_until: integer(row, "lease_until")?,
    })
}

/// Every bucket move under way, in bucket order.
pub async fn bucket_moves(global: &impl Database) -> Result<Vec<BucketMove>, DatabaseError> {
    let outcomes = global
        .batch(vec![Statement::new(
            "SELECT bucket, from_shard, to_shard, phase, lease, lease_until FROM bucket_moves ORDER BY bucket",
            [],
        )])
        .await?;
    outcomes.first().map_or(Ok(Vec::new()), |outcome| outcome.rows.iter().map(move_record).collect())
}

/// Records a move of `bucket` from `from` to `to`, unless one is under way, leased to `lease`
/// until `lease_until`, with a fresh fencing token (the map's `generations`, one higher). Returns
/// the token if it was recorded.
pub async fn start_bucket_move(
    global: &impl Database,
    bucket: UserBucket,
    from: usize,
    to: usize,
    lease: &str,
    now: i64,
    lease_until: i64,
) -> Result<Option<i64>, DatabaseError> {
    let outcomes = global
        .batch(vec![
            Statement::new(
                "UPDATE bucket_map SET generations = generations + 1
                 WHERE id = 1 AND NOT EXISTS (SELECT 1 FROM bucket_moves WHERE bucket = ?1)",
                [i64::from(bucket.index()).into()],
            ),
            Statement::new(
                "INSERT INTO bucket_moves (bucket, from_shard, to_shard, phase, started_at, lease, lease_until, generation)
                 SELECT ?1, ?2, ?3, 'refusing', ?4, ?5, ?6, generations FROM bucket_map WHERE id = 1
                 ON CONFLICT (bucket) DO NOTHING",
                [
                    i64::from(bucket.index()).into(),
                    (from as i64).into(),
                    (to as i64).into(),
                    now.into(),
                    lease.into(),
                    lease_until.into(),
                ],
            ),
            Statement::new("SELECT generations FROM bucket_map WHERE id = 1", []),
        ])
        .await?;
    if changes(&outcomes, 1) != 1 {
        return Ok(None);
    }
    outcomes.get(2).and_then(|outcome| outcome.rows.first()).map(|row| integer(row, "generations")).transpose()
}

/// Takes the lease on a move, if nobody else holds a live one, with a fresh fencing token
/// (returned): one mover at a time, and a mover that died gives the move up when its lease
/// ends. The token is what the shards' rows are claimed with, so a mover that lost its lease
/// (and carries an older token) can change nothing there any more.
pub async fn lease_bucket_move(
    global: &impl Database,
    bucket: UserBucket,
    lease: &str,
    now: i64,
    lease_until: i64,
) -> Result<Option<i64>, DatabaseError> {
    let params =
        || -> Vec<SqlValue> { vec![i64::from(bucket.index()).into(), lease.into(), now.into(), lease_until.into()] };
    let outcomes = global
        .batch(vec![
            Statement::new(
                "UPDATE bucket_map SET generations = generations + 1
                 WHERE id = 1 AND EXISTS (SELECT 1 FROM bucket_moves WHERE bucket = ?1 AND (lease IS ?2 OR lease_until <= ?3))",
                params().into_iter().take(3),
            ),
            Statement::new(
                "UPDATE bucket_moves SET lease = ?2, lease_until = ?4,
                     generation = (SELECT generations FROM bucket_map WHERE id = 1)
                 WHERE bucket = ?1 AND (lease IS ?2 OR lease_until <= ?3)",
                params(),
            ),
            Statement::new("SELECT generation FROM bucket_moves WHERE bucket = ?1 AND lease = ?2", params().into_iter().take(2)),
        ])
        .await?;
    if changes(&outcomes, 1) != 1 {
        return Ok(None);
    }
    outcomes.get(2).and_then(|outcome| outcome.rows.first()).map(|row| integer(row, "generation")).transpose()
}

/// Moves a move on to `next`, if its lease is still `lease`.
pub async fn set_bucket_move_phase(
    global: &impl Database,
    bucket: UserBucket,
    lease: &str,
    next: MovePhase,
) -> Result<bool, DatabaseError> {
    changed_one(
        global,
        Statement::new(
            "UPDATE bucket_moves SET phase = ?3 WHERE bucket = ?1 AND lease = ?2",
            [i64::from(bucket.index()).into(), lease.into(), next.as_str().into()],
        ),
    )
    .await
}

/// Forgets a finished move (its lease must still be `lease`).
pub async fn finish_bucket_move(
    global: &impl Database,
    bucket: UserBucket,
    lease: &str,
) -> Result<bool, DatabaseError> {
    changed_one(
        global,
        Statement::new(
            "DELETE FROM bucket_moves WHERE bucket = ?1 AND lease = ?2",
            [i64::from(bucket.index()).into(), lease.into()],
        ),
    )
    .await
}

/// The shard stops serving `bucket` (from its next batch on, its fence fails every routed
/// batch of the bucket there), claimed for the mover with fencing token `generation`: unless a
/// mover with a higher token has claimed it already.
pub async fn refuse_bucket(
    shard: &impl Database,
    bucket: UserBucket,
    generation: i64,
    now: i64,
) -> Result<(), DatabaseError> {
    shard
        .batch(vec![Statement::new(
            "INSERT INTO refused_buckets (bucket, refused_at, refused, generation) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (bucket) DO UPDATE SET refused = 1, refused_at = excluded.refused_at, generation = excluded.generation
             WHERE excluded.generation > refused_buckets.generation",
            [i64::from(bucket.index()).into(), now.into(), generation.into()],
        )])
        .await
        .map(drop)
}

/// Claims the bucket's row in a shard for `generation` (a mover taking a move over past its
/// refusals), leaving whether the shard refuses it as it is.
pub async fn claim_bucket(shard: &impl Database, bucket: UserBucket, generation: i64) -> Result<(), DatabaseError> {
    shard
        .batch(vec![Statement::new(
            "UPDATE refused_buckets SET generation = ?2 WHERE bucket = ?1 AND generation < ?2",
            [i64::from(bucket.index()).into(), generation.into()],
        )])
        .await
        .map(drop)
}

/// The shard serves `bucket` again, if `generation` still holds its row.
pub async fn serve_bucket(shard: &impl Database, bucket: UserBucket, generation: i64) -> Result<bool, DatabaseError> {
    changed_one(
        shard,
        Statement::new(
            "UPDATE refused_buckets SET refused = 0 WHERE bucket = ?1 AND generation = ?2",
            [i64::from(bucket.index()).into(), generation.into()],
        ),
    )
    .await
}

/// Rows a page of the copy or the clean-up handles at most.
pub const MOVE_PAGE: i64 = 100;

/// Deletes up to a page of the bucket's accounts from a shard, with everything that belongs to
/// them (the schema's `ON DELETE CASCADE`), if `generation` holds the shard's refusal of the
/// bucket. Returns how many accounts went.
pub async fn delete_bucket_page(
    shard: &impl Database,
    bucket: UserBucket,
    generation: i64,
) -> Result<u64, DatabaseError> {
    let outcomes = shard
        .batch(vec![Statement::new(
            "DELETE FROM users WHERE id IN (SELECT id FROM users WHERE bucket = ?1 LIMIT ?2)
               AND EXISTS (SELECT 1 FROM refused_buckets WHERE bucket = ?1 AND generation = ?3 AND refused = 1)",
            [i64::from(bucket.index()).into(), MOVE_PAGE.into(), generation.into()],
        )])
        .await?;
    Ok(changes(&outcomes, 0))
}

/// One table of what belongs to an account, as the copy reads and writes it: parents before the
/// rows that refer to them.
pub struct CopiedTable {
    pub name: &'static str,
    pub columns: &'static [&'static str],
    select: &'static str,
    insert: &'static str,
}

/// The rows of the bucket's accounts (`?1`) after a rowid (`?2`), a page (`?3`) in rowid order.
macro_rules! copied_table {
    ($name:literal, $of_bucket:literal, [$first:literal $(, $column:literal)*], $placeholders:literal,
     $bucket_param:literal, $generation_param:literal) => {
        CopiedTable {
            name: $name,
            columns: &[$first $(, $column)*],
            select: concat!(
                "SELECT rowid AS copy_rowid, ", $first $(, ", ", $column)*, " FROM ", $name,
                " WHERE ", $of_bucket, " AND rowid > ?2 ORDER BY rowid LIMIT ?3"
            ),
            // Only while the copying mover's token holds the destination's refusal of the bucket
            // (`?bucket` and `?generation` follow the columns' parameters).
            insert: concat!(
                "INSERT INTO ", $name, " (", $first $(, ", ", $column)*, ") SELECT ", $placeholders,
                " WHERE EXISTS (SELECT 1 FROM refused_buckets WHERE bucket = ?", $bucket_param,
                " AND generation = ?", $generation_param, " AND refused = 1)"
            ),
        }
    };
}

/// Every table of an account's, in the order the copy writes them. A test checks this against
/// the schema, so a new column cannot be left behind by a move.
pub const COPIED_TABLES: &[CopiedTable] = &[
    copied_table!(
        "users",
        "bucket = ?1",
        [
            "id",
            "email",
            "password_hash",
            "email_verified_at",
            "password_changed_at",
            "created_at",
            "updated_at",
            "locale",
            "password_version",
            "bucket",
            "move_state"
        ],
        "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11",
        "12",
        "13"
    ),
    copied_table!(
        "sessions",
        "user_id IN (SELECT id FROM users WHERE bucket = ?1)",
        [
            "id",
            "user_id",
            "auth_time",
            "created_at",
            "expires_at",
            "revoked_at",
            "client_id",
            "scope",
            "browser_session_id"
        ],
        "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9",
        "10",
        "11"
    ),
    copied_table!(
        "refresh_tokens",
        "user_id IN (SELECT id FROM users WHERE bucket = ?1)",
        [
            "token_hash",
            "session_id",
            "user_id",
            "issued_at",
            "expires_at",
            "consumed_at",
            "replaced_by",
            "successor_sealed",
            "revoked_at"
        ],
        "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9",
        "10",
        "11"
    ),
    copied_table!(
        "one_time_tokens",
        "user_id IN (SELECT id FROM users WHERE bucket = ?1)",
        [
            "token_hash",
            "user_id",
            "purpose",
            "created_at",
            "expires_at",
            "consumed_at",
            "consumed_by",
            "code_hash",
            "code_expires_at",
            "code_failures"
        ],
        "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10",
        "11",
        "12"
    ),
    copied_table!(
        "browser_sessions",
        "user_id IN (SELECT id FROM users WHERE bucket = ?1)",
        ["id", "cookie_hash", "user_id", "auth_time", "created_at", "expires_at", "ended_at"],
        "?1, ?2, ?3, ?4, ?5, ?6, ?7",
        "8",
        "9"
    ),
    copied_table!(
        "authorization_codes",
        "user_id IN (SELECT id FROM users WHERE bucket = ?1)",
        [
            "code_hash",
            "client_id",
            "user_id",
            "browser_session_id",
            "redirect_uri",
            "scope",
            "nonce",
            "code_challenge",
            "auth_time",
            "created_at",
            "expires_at",
            "consumed_at",
            "session_id"
        ],
        "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13",
        "14",
        "15"
    ),
    copied_table!(
        "consents",
        "user_id IN (SELECT id FROM users WHERE bucket = ?1)",
        ["user_id", "client_id", "scope", "granted_at"],
        "?1, ?2, ?3, ?4",
        "5",
        "6"
    ),
];

/// Copies one page of `table`'s rows of the bucket's accounts from `source` to `destination`,
/// after `after_rowid`, while `generation` holds the destination's refusal of the bucket (a
/// mover that lost its lease copies nothing). Returns the rowid to continue after, or `None` when the table is done.
pub async fn copy_bucket_page(
    source: &impl Database,
    destination: &impl Database,
    table: &CopiedTable,
    bucket: UserBucket,
    generation: i64,
    after_rowid: i64,
) -> Result<Option<i64>, DatabaseError> {
    let outcomes = source
        .batch(vec![Statement::new(
            table.select,
            [i64::from(bucket.index()).into(), after_rowid.into(), MOVE_PAGE.into()],
        )])
        .await?;
    let rows = outcomes.into_iter().next().map(|outcome| outcome.rows).unwrap_or_default();
    let Some(last) = rows.last() else { return Ok(None) };
    let next = integer(last, "copy_rowid")?;
    let full = rows.len() as i64 == MOVE_PAGE;
    let inserts = rows
        .iter()
        .map(|row| {
            let mut params: Vec<SqlValue> =
                table.columns.iter().map(|column| row.get(*column).cloned().unwrap_or(SqlValue::Null)).collect();
            params.extend([i64::from(bucket.index()).into(), generation.into()]);
            Statement::new(table.insert, params)
        })
        .collect();
    destination.batch(inserts).await?;
    Ok(full.then_some(next))
}

/// How many accounts of each bucket a shard holds, and which buckets it refuses: what the
/// check after a reshard compares with the map.
pub async fn shard_census(shard: &impl Database) -> Result<(Vec<(UserBucket, i64)>, Vec<UserBucket>), DatabaseError> {
    let outcomes = shard
        .batch(vec![
            Statement::new("SELECT bucket, count(*) AS accounts FROM users GROUP BY bucket ORDER BY bucket", []),
            Statement::new("SELECT bucket FROM refused_buckets WHERE refused = 1 ORDER BY bucket", []),
        ])
        .await?;
    let bucket = |row: &Row| -> Result<UserBucket, DatabaseError> {
        u16::try_from(integer(row, "bucket")?)
            .ok()
            .and_then(UserBucket::new)
            .ok_or_else(|| DatabaseError("a row names no bucket".to_owned()))
    };
    let rows = |index: usize| super::rows(&outcomes, index);
    let accounts = rows(0).iter().map(|row| Ok((bucket(row)?, integer(row, "accounts")?))).collect::<Result<_, _>>()?;
    let refused = rows(1).iter().map(bucket).collect::<Result<_, _>>()?;
    Ok((accounts, refused))
}
