//! `rate_limits`: GCRA buckets, drawn on by one conditional upsert each (`domain::rate_limit`);
//! `known_networks`: the networks an account signed in from. Both in `DB`, keyed by HMAC names.

use super::{changes, integer, optional_integer};
use crate::ports::{Database, DatabaseError, Statement};

/// One budget drawn on by a request: a bucket and the GCRA parameters of its limit.
#[derive(Debug, Clone)]
pub struct BucketDraw {
    pub bucket: String,
    pub cost_ms: i64,
    pub tolerance_ms: i64,
    /// A `known_networks` key: while it is live the budget is not drawn on at all (an account's
    /// ceiling does not apply to a network it signed in from).
    pub unless_known: Option<String>,
}

/// What drawing on a bucket did: whether a unit was taken, and the bucket's TAT afterwards;
/// `exempt` when the draw was skipped for a known network (nothing taken, nothing refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    pub taken: bool,
    pub exempt: bool,
    pub tat_ms: i64,
}

/// Takes one unit from each bucket that has one (`domain::rate_limit::admit`, in SQL): a
/// conditional upsert per bucket, so concurrent requests are counted exactly. One batch.
pub async fn take_from_buckets(
    db: &impl Database,
    draws: &[BucketDraw],
    now_ms: i64,
) -> Result<Vec<BucketState>, DatabaseError> {
    const PER_DRAW: usize = 2;
    let now_seconds = now_ms.div_euclid(1000);
    let mut statements = Vec::with_capacity(draws.len() * PER_DRAW);
    for draw in draws {
        let params = [
            draw.bucket.as_str().into(),
            now_ms.into(),
            draw.cost_ms.into(),
            draw.tolerance_ms.into(),
            draw.unless_known.as_deref().into(),
            now_seconds.into(),
        ];
        statements.push(match draw.unless_known {
            None => Statement::new(
                "INSERT INTO rate_limits (bucket, tat) VALUES (?1, ?2 + ?3)
                 ON CONFLICT (bucket) DO UPDATE SET tat = max(rate_limits.tat, ?2) + ?3
                 WHERE max(rate_limits.tat, ?2) + ?3 - ?4 <= ?2",
                params.into_iter().take(4),
            ),
            Some(_) => Statement::new(
                "INSERT INTO rate_limits (bucket, tat)
                 SELECT ?1, ?2 + ?3 WHERE NOT EXISTS (SELECT 1 FROM known_networks WHERE key = ?5 AND expires_at > ?6)
                 ON CONFLICT (bucket) DO UPDATE SET tat = max(rate_limits.tat, ?2) + ?3
                 WHERE max(rate_limits.tat, ?2) + ?3 - ?4 <= ?2
                   AND NOT EXISTS (SELECT 1 FROM known_networks WHERE key = ?5 AND expires_at > ?6)",
                params,
            ),
        });
        // The bucket's state after the draw, and whether the draw was exempt, in one read.
        statements.push(Statement::new(
            "SELECT (SELECT tat FROM rate_limits WHERE bucket = ?1) AS tat,
                    (SELECT count(*) FROM known_networks WHERE key = ?2 AND expires_at > ?3) AS known",
            [draw.bucket.as_str().into(), draw.unless_known.as_deref().into(), now_seconds.into()],
        ));
    }
    let outcomes = db.batch(statements).await?;
    (0..draws.len())
        .map(|index| {
            let row = outcomes.get(index * PER_DRAW + 1).and_then(|outcome| outcome.rows.first());
            let tat_ms = row.map(|row| optional_integer(row, "tat")).transpose()?.flatten().unwrap_or(now_ms);
            let exempt = row.map(|row| integer(row, "known")).transpose()?.is_some_and(|known| known > 0);
            Ok(BucketState { taken: !exempt && changes(&outcomes, index * PER_DRAW) == 1, exempt, tat_ms })
        })
        .collect::<Result<Vec<_>, DatabaseError>>()
}

/// A network an account signed in from, remembered until `expires_at` (`known_networks`), by a
/// login that proved the account's password of `password_version` (its budgets share
/// `account_prefix`).
#[derive(Debug, Clone)]
pub struct KnownNetwork {
    pub key: String,
    pub expires_at: i64,
    pub account_prefix: String,
    pub password_version: i64,
}

/// What a session that started leaves for `DB`, after the response: the budget units its
/// login gives back (a right password does not count against the account), and the network
/// it signed in from — unless a password reset has replaced the password the login proved
/// (`budget_resets`): whoever knew the old password gets nothing remembered.
pub async fn after_sign_in(
    db: &impl Database,
    returned: &[BucketDraw],
    known_network: &KnownNetwork,
) -> Result<(), DatabaseError> {
    let mut statements: Vec<Statement> = returned.iter().map(return_statement).collect();
    statements.push(Statement::new(
        "INSERT INTO known_networks (key, expires_at)
         SELECT ?1, ?2 WHERE NOT EXISTS (SELECT 1 FROM budget_resets WHERE prefix = ?3 AND password_version > ?4)
         ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at",
        [
            known_network.key.as_str().into(),
            known_network.expires_at.into(),
            known_network.account_prefix.as_str().into(),
            known_network.password_version.into(),
        ],
    ));
    db.batch(statements).await.map(drop)
}

/// Puts back one unit taken from each bucket (a request that turned out not to count).
pub async fn return_to_buckets(db: &impl Database, draws: &[BucketDraw]) -> Result<(), DatabaseError> {
    db.batch(draws.iter().map(return_statement).collect()).await.map(drop)
}

fn return_statement(draw: &BucketDraw) -> Statement {
    Statement::new(
        "UPDATE rate_limits SET tat = tat - ?2 WHERE bucket = ?1",
        [draw.bucket.as_str().into(), draw.cost_ms.into()],
    )
}

/// Deletes buckets that are full again (their TAT has passed): the same as having no row; and
/// known networks that have expired.
pub async fn remove_full_buckets(db: &impl Database, now_ms: i64) -> Result<u64, DatabaseError> {
    let outcomes = db
        .batch(vec![
            Statement::new("DELETE FROM rate_limits WHERE tat < ?1", [now_ms.into()]),
            Statement::new("DELETE FROM known_networks WHERE expires_at <= ?1", [now_ms.div_euclid(1000).into()]),
        ])
        .await?;
    Ok(changes(&outcomes, 0))
}
