//! The cron's clean-up across tables: what has expired or ended.

use chrono::{DateTime, Utc};

use super::changes;
use crate::ports::{Database, DatabaseError, SqlValue, Statement};

/// What one clean-up run deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    pub one_time_tokens: u64,
    pub sessions: u64,
    pub refresh_tokens: u64,
    pub unverified_accounts: u64,
    /// Authorization codes a day past their expiry (kept that long so a late second
    /// redemption still finds the grant it must revoke).
    pub authorization_codes: u64,
    /// Browser sessions that ended (logout, reset) or passed their absolute end.
    pub browser_sessions: u64,
}

/// Rows one statement of [`purge`] deletes at most, so a run stays well inside D1's limits
/// however much has piled up; a run repeats each statement until it deletes fewer.
const PURGE_CHUNK: i64 = 500;

/// Chunks per statement and run: a backlog beyond that waits for the next (hourly) run.
const PURGE_MAX_CHUNKS: usize = 20;

/// The cron's clean-up: one-time tokens that expired or were used (kept a day after use, for
/// the record), sessions that ended (revoked or past their absolute end) with their refresh
/// tokens, refresh tokens of live sessions that expired, and accounts created before
/// `unverified_before` (Unix seconds) whose email nobody verified, with everything of theirs
/// (the schema's `ON DELETE CASCADE`), so an address somebody else signed up is free (however
/// often it was signed up again since: nobody can hold an address by repeating sign-ups).
/// `None` keeps unverified accounts (where they can sign in, they are accounts like others).
pub async fn purge(
    db: &impl Database,
    now: DateTime<Utc>,
    unverified_before: Option<i64>,
) -> Result<Purged, DatabaseError> {
    let unverified_before = unverified_before.unwrap_or(i64::MIN);
    let now = now.timestamp();
    let day_ago = now - 86_400;
    let mut purged = Purged::default();
    let statements: [(&'static str, Vec<SqlValue>, &mut u64); 6] = [
        (
            "DELETE FROM one_time_tokens WHERE token_hash IN (SELECT token_hash FROM one_time_tokens
               WHERE expires_at <= ?1 OR consumed_at <= ?2 LIMIT ?3)",
            vec![now.into(), day_ago.into(), PURGE_CHUNK.into()],
            &mut purged.one_time_tokens,
        ),
        (
            "DELETE FROM refresh_tokens WHERE token_hash IN (SELECT r.token_hash FROM refresh_tokens r
               JOIN sessions s ON s.id = r.session_id
               WHERE s.revoked_at IS NOT NULL OR s.expires_at <= ?1 OR r.expires_at <= ?1 LIMIT ?2)",
            vec![now.into(), PURGE_CHUNK.into()],
            &mut purged.refresh_tokens,
        ),
        (
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions
               WHERE revoked_at IS NOT NULL OR expires_at <= ?1 LIMIT ?2)",
            vec![now.into(), PURGE_CHUNK.into()],
            &mut purged.sessions,
        ),
        (
            "DELETE FROM users WHERE id IN (SELECT id FROM users
               WHERE email_verified_at IS NULL AND created_at <= ?1 LIMIT ?2)",
            vec![unverified_before.into(), PURGE_CHUNK.into()],
            &mut purged.unverified_accounts,
        ),
        (
            "DELETE FROM authorization_codes WHERE code_hash IN (SELECT code_hash FROM authorization_codes
               WHERE expires_at <= ?1 LIMIT ?2)",
            vec![day_ago.into(), PURGE_CHUNK.into()],
            &mut purged.authorization_codes,
        ),
        (
            "DELETE FROM browser_sessions WHERE id IN (SELECT id FROM browser_sessions
               WHERE ended_at IS NOT NULL OR expires_at <= ?1 LIMIT ?2)",
            vec![now.into(), PURGE_CHUNK.into()],
            &mut purged.browser_sessions,
        ),
    ];
    for (sql, params, count) in statements {
        for _ in 0..PURGE_MAX_CHUNKS {
            let outcomes = db.batch(vec![Statement::new(sql, params.clone())]).await?;
            let deleted = changes(&outcomes, 0);
            *count += deleted;
            if deleted < PURGE_CHUNK as u64 {
                break;
            }
        }
    }
    Ok(purged)
}
