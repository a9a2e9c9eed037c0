//! `one_time_tokens`: verification and reset links (and the short code beside a verification
//! link), each consumed by one conditional `UPDATE` in the batch that acts on it.

use chrono::{DateTime, Utc};

use super::{changes, first_row, integer, prefix_end, text};
use crate::domain::email::Email;
use crate::domain::opaque_token::TokenHash;
use crate::ports::{Database, DatabaseError, SqlValue, Statement};

/// What a one-time token is good for; stored in `one_time_tokens.purpose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
}

impl Purpose {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::ResetPassword => "reset_password",
        }
    }
}

pub struct NewOneTimeToken<'a> {
    pub user_id: &'a str,
    pub purpose: Purpose,
    pub hash: &'a TokenHash,
    pub expires_at: DateTime<Utc>,
    /// The short code's hash and expiry, where the mail carries one (`domain::short_code`).
    pub code_hash: Option<&'a str>,
    pub code_expires_at: Option<DateTime<Utc>>,
}

/// Gives the account of `email` a new one-time token, if there is such an account (and, with
/// `only_unverified`, its email is not verified yet); a reset token voids the older ones.
/// One batch whether or not the account exists, so timing says nothing. Returns the language
/// of the account's mails when a token was stored.
pub async fn issue_token_for_email(
    db: &impl Database,
    email: &Email,
    token: &NewEmailToken<'_>,
    now: DateTime<Utc>,
) -> Result<Option<String>, DatabaseError> {
    let mut statements = Vec::new();
    if token.purpose == Purpose::ResetPassword {
        statements.push(Statement::new(
            "UPDATE one_time_tokens SET consumed_at = ?3, consumed_by = 'superseded'
             WHERE purpose = ?2 AND consumed_at IS NULL AND user_id = (SELECT id FROM users WHERE email = ?1)",
            [email.as_str().into(), token.purpose.as_str().into(), now.timestamp().into()],
        ));
    }
    // Only the newest short code works: each resend would otherwise add one more live code to
    // guess at (older links keep working; they are not guessable).
    if token.code_hash.is_some() {
        statements.push(Statement::new(
            "UPDATE one_time_tokens SET code_hash = NULL
             WHERE purpose = ?2 AND consumed_at IS NULL AND code_hash IS NOT NULL
               AND user_id = (SELECT id FROM users WHERE email = ?1)",
            [email.as_str().into(), token.purpose.as_str().into()],
        ));
    }
    let insert = statements.len();
    statements.push(Statement::new(
        "INSERT INTO one_time_tokens (token_hash, user_id, purpose, created_at, expires_at, code_hash, code_expires_at)
         SELECT ?1, id, ?3, ?4, ?5, ?7, ?8 FROM users WHERE email = ?2 AND (?6 = 0 OR email_verified_at IS NULL)",
        [
            token.hash.as_str().into(),
            email.as_str().into(),
            token.purpose.as_str().into(),
            now.timestamp().into(),
            token.expires_at.timestamp().into(),
            i64::from(token.only_unverified).into(),
            token.code_hash.into(),
            token.code_expires_at.map(|at| at.timestamp()).into(),
        ],
    ));
    statements.push(Statement::new("SELECT locale FROM users WHERE email = ?1", [email.as_str().into()]));
    let outcomes = db.batch(statements).await?;
    if changes(&outcomes, insert) != 1 {
        return Ok(None);
    }
    outcomes.get(insert + 1).and_then(|outcome| outcome.rows.first()).map(|row| text(row, "locale")).transpose()
}

/// A one-time token for whichever account has an email (see [`issue_token_for_email`]).
pub struct NewEmailToken<'a> {
    pub purpose: Purpose,
    pub hash: &'a TokenHash,
    pub expires_at: DateTime<Utc>,
    pub only_unverified: bool,
    pub code_hash: Option<&'a str>,
    pub code_expires_at: Option<DateTime<Utc>>,
}

/// The account (id and email) a live (unconsumed, unexpired) token belongs to. A read only:
/// consuming happens in one of the batches below, which re-check everything.
pub async fn live_token_owner(
    db: &impl Database,
    hash: &TokenHash,
    purpose: Purpose,
    now: DateTime<Utc>,
) -> Result<Option<(String, String)>, DatabaseError> {
    let outcomes = db
        .batch(vec![Statement::new(
            "SELECT u.id, u.email FROM one_time_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = ?1 AND t.purpose = ?2 AND t.consumed_at IS NULL AND t.expires_at > ?3",
            [hash.as_str().into(), purpose.as_str().into(), now.timestamp().into()],
        )])
        .await?;
    first_row(&outcomes).map(|row| Ok((text(row, "id")?, text(row, "email")?))).transpose()
}

/// The statement that consumes a live token for the request identified by `nonce`. Of any
/// number of concurrent requests, exactly one changes the row; the rest of its batch then
/// finds the row by that nonce, so nobody else's batch can act on it.
fn consume(hash: &TokenHash, purpose: Purpose, nonce: &str, now: DateTime<Utc>) -> Statement {
    Statement::new(
        "UPDATE one_time_tokens SET consumed_at = ?4, consumed_by = ?3
         WHERE token_hash = ?1 AND purpose = ?2 AND consumed_at IS NULL AND expires_at > ?4",
        [hash.as_str().into(), purpose.as_str().into(), nonce.into(), now.timestamp().into()],
    )
}

/// Consumes a live verification token of the account of `email` by its short code's hash (under
/// the current key-encryption key, or the previous one during a rotation) and
/// marks the email verified, atomically; of concurrent uses one wins. A code counts only while
/// it is live: younger than its own expiry (shorter than the link's) and with fewer than
/// `max_wrong_tries` wrong tries. A wrong code, in the same batch, counts one more wrong try
/// on the account's live code, which dies at the last one. Returns whether this call consumed
/// the token.
pub async fn verify_email_by_code(
    db: &impl Database,
    email: &Email,
    code_hashes: [Option<&str>; 2],
    nonce: &str,
    max_wrong_tries: u32,
    now: DateTime<Utc>,
) -> Result<bool, DatabaseError> {
    let outcomes = db
        .batch(vec![
            Statement::new(
                "UPDATE one_time_tokens SET consumed_at = ?4, consumed_by = ?3
                 WHERE code_hash IN (?2, ?6) AND purpose = 'verify_email' AND consumed_at IS NULL AND expires_at > ?4
                   AND code_expires_at > ?4 AND code_failures < ?5
                   AND user_id = (SELECT id FROM users WHERE email = ?1)",
                [
                    email.as_str().into(),
                    code_hashes[0].into(),
                    nonce.into(),
                    now.timestamp().into(),
                    i64::from(max_wrong_tries).into(),
                    code_hashes[1].into(),
                ],
            ),
            Statement::new(
                "UPDATE users SET email_verified_at = COALESCE(email_verified_at, ?2), updated_at = ?2
                 WHERE email = ?3
                   AND EXISTS (SELECT 1 FROM one_time_tokens t WHERE t.user_id = users.id AND t.consumed_by = ?1)",
                [nonce.into(), now.timestamp().into(), email.as_str().into()],
            ),
            // Only where the code above was wrong: nothing was consumed by this request.
            Statement::new(
                "UPDATE one_time_tokens SET code_failures = code_failures + 1,
                     code_hash = CASE WHEN code_failures + 1 >= ?3 THEN NULL ELSE code_hash END
                 WHERE purpose = 'verify_email' AND consumed_at IS NULL AND code_hash IS NOT NULL
                   AND user_id = (SELECT id FROM users WHERE email = ?1)
                   AND NOT EXISTS (SELECT 1 FROM one_time_tokens WHERE consumed_by = ?2)",
                [email.as_str().into(), nonce.into(), i64::from(max_wrong_tries).into()],
            ),
        ])
        .await?;
    Ok(changes(&outcomes, 0) >= 1)
}

/// Consumes a verification token and marks its user's email verified, atomically.
/// Returns whether this call consumed the token.
pub async fn verify_email(
    db: &impl Database,
    hash: &TokenHash,
    nonce: &str,
    now: DateTime<Utc>,
) -> Result<bool, DatabaseError> {
    let outcomes = db
        .batch(vec![
            consume(hash, Purpose::VerifyEmail, nonce, now),
            Statement::new(
                "UPDATE users SET email_verified_at = COALESCE(email_verified_at, ?3), updated_at = ?3
                 WHERE id = (SELECT user_id FROM one_time_tokens WHERE token_hash = ?1 AND consumed_by = ?2)",
                [hash.as_str().into(), nonce.into(), now.timestamp().into()],
            ),
        ])
        .await?;
    Ok(changes(&outcomes, 0) == 1)
}

/// Consumes a reset token and, in the same transaction: sets the new password hash, marks the
/// email verified (the token proves control of the mailbox), voids every other one-time token of
/// the user and revokes all of the user's sessions, refresh tokens and browser sessions. The
/// account's budgets are in `DB`: the caller clears them next ([`clear_budgets`]).
pub async fn reset_password(
    db: &impl Database,
    hash: &TokenHash,
    nonce: &str,
    new_password_hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<(String, String, i64)>, DatabaseError> {
    let params = || -> Vec<SqlValue> { vec![hash.as_str().into(), nonce.into(), now.timestamp().into()] };
    let outcomes = db
        .batch(vec![
            consume(hash, Purpose::ResetPassword, nonce, now),
            Statement::new(
                "UPDATE users SET password_hash = ?4, password_changed_at = ?3, password_version = password_version + 1,
                     email_verified_at = COALESCE(email_verified_at, ?3), updated_at = ?3
                 WHERE id = (SELECT user_id FROM one_time_tokens WHERE token_hash = ?1 AND consumed_by = ?2)",
                [hash.as_str().into(), nonce.into(), now.timestamp().into(), new_password_hash.into()],
            ),
            Statement::new(
                "UPDATE one_time_tokens SET consumed_at = ?3, consumed_by = 'superseded'
                 WHERE consumed_at IS NULL
                   AND user_id = (SELECT user_id FROM one_time_tokens WHERE token_hash = ?1 AND consumed_by = ?2)",
                params(),
            ),
            Statement::new(
                "UPDATE sessions SET revoked_at = ?3
                 WHERE revoked_at IS NULL
                   AND user_id = (SELECT user_id FROM one_time_tokens WHERE token_hash = ?1 AND consumed_by = ?2)",
                params(),
            ),
            Statement::new(
                "UPDATE refresh_tokens SET revoked_at = ?3
                 WHERE revoked_at IS NULL
                   AND user_id = (SELECT user_id FROM one_time_tokens WHERE token_hash = ?1 AND consumed_by = ?2)",
                params(),
            ),
            // Who it was, for the "password changed" notice, and its password's new version.
            Statement::new(
                "SELECT email, locale, password_version FROM users
                 WHERE id = (SELECT user_id FROM one_time_tokens WHERE token_hash = ?1 AND consumed_by = ?2)",
                [hash.as_str().into(), nonce.into()],
            ),
            // And its browser (SSO) sessions: a reset signs the account out everywhere.
            Statement::new(
                "UPDATE browser_sessions SET ended_at = ?3
                 WHERE ended_at IS NULL
                   AND user_id = (SELECT user_id FROM one_time_tokens WHERE token_hash = ?1 AND consumed_by = ?2)",
                params(),
            ),
        ])
        .await?;
    if changes(&outcomes, 0) != 1 {
        return Ok(None);
    }
    match outcomes.get(5).and_then(|outcome| outcome.rows.first()) {
        Some(row) => Ok(Some((text(row, "email")?, text(row, "locale")?, integer(row, "password_version")?))),
        None => Err(DatabaseError("the reset account vanished within its own batch".to_owned())),
    }
}

/// Deletes rate-limit buckets (by exact key, and every key under a prefix) and the known
/// networks under the same prefixes, in `DB`: what a password reset starts again.
pub async fn clear_budgets(
    db: &impl Database,
    cleared: &ClearedBudgets,
    password_version: i64,
) -> Result<(), DatabaseError> {
    let mut statements = Vec::new();
    for bucket in &cleared.buckets {
        statements.push(Statement::new("DELETE FROM rate_limits WHERE bucket = ?1", [bucket.as_str().into()]));
    }
    for prefix in &cleared.prefixes {
        statements.push(Statement::new(
            "DELETE FROM rate_limits WHERE bucket >= ?1 AND bucket < ?2",
            [prefix.as_str().into(), prefix_end(prefix).into()],
        ));
        // And the networks it signed in from: whoever knew the old password may have too.
        statements.push(Statement::new(
            "DELETE FROM known_networks WHERE key >= ?1 AND key < ?2",
            [prefix.as_str().into(), prefix_end(prefix).into()],
        ));
        // And the password's new version, so that a login that proved the old one (under way
        // now) remembers nothing after its response.
        statements.push(Statement::new(
            "INSERT INTO budget_resets (prefix, password_version) VALUES (?1, ?2)
             ON CONFLICT (prefix) DO UPDATE SET password_version = max(password_version, excluded.password_version)",
            [prefix.as_str().into(), password_version.into()],
        ));
    }
    if statements.is_empty() {
        return Ok(());
    }
    db.batch(statements).await.map(drop)
}

/// Rate-limit buckets a batch deletes: by exact key, and every key under a prefix.
#[derive(Debug, Clone, Default)]
pub struct ClearedBudgets {
    pub buckets: Vec<String>,
    pub prefixes: Vec<String>,
}
