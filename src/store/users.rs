//! The `users` table: accounts, their sign-up (one batch, whatever the address's state), the
//! password re-hash, and the rewrite of addresses stored before IDNA mapping.

use chrono::{DateTime, Utc};

use super::{changes, first_row, integer, optional_integer, optional_text, rows, text, NewOneTimeToken};
use crate::domain::email::Email;
use crate::domain::shard::UserBucket;
use crate::ports::{Database, DatabaseError, Row, Statement, StatementOutcome};

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub email_verified: bool,
    /// Counts the password's replacements (resets, a sign-up taking over an unverified
    /// account), not its re-hashes: what a login's session is conditional on.
    pub password_version: i64,
    /// `leaving` or `arriving` while the account moves to another bucket (`flows::user_move`).
    pub move_state: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignupOutcome {
    Created,
    /// The address had an account that nobody had verified: this sign-up's password replaced
    /// its own, its sessions and one-time tokens ended, and the verification token went to it
    /// (its mails are in `locale`).
    ReplacedUnverified {
        locale: String,
    },
    /// The address has a verified account: a reset token went to it instead.
    AlreadyRegistered {
        locale: String,
    },
}

pub struct NewUser<'a> {
    pub id: &'a str,
    pub email: &'a Email,
    pub password_hash: &'a str,
    /// The language of the user's mails (`mail::Locale` tag).
    pub locale: &'a str,
}

/// A sign-up, in one batch, whatever the address's state (the unique index decides, so two
/// concurrent sign-ups cannot both create it):
/// - a new address: the user and its first verification token;
/// - an address whose account nobody verified: the sign-up's password replaces the account's
///   (whoever signed up before may not own the mailbox: the mailbox owner's own sign-up wins), its
///   sessions and one-time tokens end, and the verification token goes to it, so the only live
///   link confirms the password chosen last;
/// - a verified account: a reset token (`reset`), voiding its older ones.
pub async fn create_user(
    db: &impl Database,
    user: &NewUser<'_>,
    verification: &NewOneTimeToken<'_>,
    reset: &NewOneTimeToken<'_>,
    replace_unverified: bool,
    now: DateTime<Utc>,
) -> Result<SignupOutcome, DatabaseError> {
    let replace = i64::from(replace_unverified);
    let outcomes = db
        .batch(vec![
            Statement::new(
                "INSERT INTO users (id, email, password_hash, email_verified_at, password_changed_at, created_at, updated_at, locale, bucket)
                 VALUES (?1, ?2, ?3, NULL, ?4, ?4, ?4, ?5, ?6)
                 ON CONFLICT (email) DO NOTHING",
                [
                    user.id.into(),
                    user.email.as_str().into(),
                    user.password_hash.into(),
                    now.timestamp().into(),
                    user.locale.into(),
                    i64::from(UserBucket::of_email(user.email).index()).into(),
                ],
            ),
            // An account nobody verified (its id is not the fresh one): the tokens and sessions
            // of whoever signed up before end with its password.
            Statement::new(
                "UPDATE one_time_tokens SET consumed_at = ?3, consumed_by = 'superseded'
                 WHERE consumed_at IS NULL AND ?4 = 1
                   AND user_id = (SELECT id FROM users WHERE email = ?1 AND id != ?2 AND email_verified_at IS NULL)",
                [user.email.as_str().into(), user.id.into(), now.timestamp().into(), replace.into()],
            ),
            Statement::new(
                "UPDATE sessions SET revoked_at = ?3
                 WHERE revoked_at IS NULL AND ?4 = 1
                   AND user_id = (SELECT id FROM users WHERE email = ?1 AND id != ?2 AND email_verified_at IS NULL)",
                [user.email.as_str().into(), user.id.into(), now.timestamp().into(), replace.into()],
            ),
            Statement::new(
                "UPDATE refresh_tokens SET revoked_at = ?3
                 WHERE revoked_at IS NULL AND ?4 = 1
                   AND user_id = (SELECT id FROM users WHERE email = ?1 AND id != ?2 AND email_verified_at IS NULL)",
                [user.email.as_str().into(), user.id.into(), now.timestamp().into(), replace.into()],
            ),
            Statement::new(
                "UPDATE users SET password_hash = ?3, password_changed_at = ?4, updated_at = ?4,
                     password_version = password_version + 1
                 WHERE email = ?1 AND id != ?2 AND email_verified_at IS NULL AND ?5 = 1",
                [
                    user.email.as_str().into(),
                    user.id.into(),
                    user.password_hash.into(),
                    now.timestamp().into(),
                    replace.into(),
                ],
            ),
            // The verification token: for the new account or the replaced one.
            Statement::new(
                "INSERT INTO one_time_tokens (token_hash, user_id, purpose, created_at, expires_at, code_hash, code_expires_at)
                 SELECT ?1, id, ?3, ?4, ?5, ?6, ?7 FROM users
                 WHERE email = ?2 AND email_verified_at IS NULL AND (id = ?8 OR ?9 = 1)",
                [
                    verification.hash.as_str().into(),
                    user.email.as_str().into(),
                    verification.purpose.as_str().into(),
                    now.timestamp().into(),
                    verification.expires_at.timestamp().into(),
                    verification.code_hash.into(),
                    verification.code_expires_at.map(|at| at.timestamp()).into(),
                    user.id.into(),
                    replace.into(),
                ],
            ),
            // A verified account (or, where unverified accounts are live ones, any account that
            // was there before): a reset link instead, the only live one.
            Statement::new(
                "UPDATE one_time_tokens SET consumed_at = ?2, consumed_by = 'superseded'
                 WHERE purpose = 'reset_password' AND consumed_at IS NULL
                   AND user_id = (SELECT id FROM users WHERE email = ?1 AND id != ?3
                                    AND (email_verified_at IS NOT NULL OR ?4 = 0))",
                [user.email.as_str().into(), now.timestamp().into(), user.id.into(), replace.into()],
            ),
            Statement::new(
                "INSERT INTO one_time_tokens (token_hash, user_id, purpose, created_at, expires_at)
                 SELECT ?1, id, 'reset_password', ?3, ?4 FROM users
                 WHERE email = ?2 AND id != ?5 AND (email_verified_at IS NOT NULL OR ?6 = 0)",
                [
                    reset.hash.as_str().into(),
                    user.email.as_str().into(),
                    now.timestamp().into(),
                    reset.expires_at.timestamp().into(),
                    user.id.into(),
                    replace.into(),
                ],
            ),
            Statement::new("SELECT locale, email_verified_at FROM users WHERE email = ?1", [user.email.as_str().into()]),
            // The browser sessions of whoever signed up before end with the replaced password.
            Statement::new(
                "UPDATE browser_sessions SET ended_at = ?3
                 WHERE ended_at IS NULL AND ?4 = 1
                   AND user_id = (SELECT id FROM users WHERE email = ?1 AND id != ?2 AND email_verified_at IS NULL)",
                [user.email.as_str().into(), user.id.into(), now.timestamp().into(), replace.into()],
            ),
        ])
        .await?;
    if changes(&outcomes, 0) == 1 {
        return Ok(SignupOutcome::Created);
    }
    let row = outcomes
        .get(8)
        .and_then(|outcome| outcome.rows.first())
        .ok_or_else(|| DatabaseError("the signed-up account vanished within its own batch".to_owned()))?;
    let locale = text(row, "locale")?;
    Ok(match optional_integer(row, "email_verified_at")? {
        None if replace_unverified => SignupOutcome::ReplacedUnverified { locale },
        _ => SignupOutcome::AlreadyRegistered { locale },
    })
}

pub async fn find_user_by_email(db: &impl Database, email: &Email) -> Result<Option<UserRecord>, DatabaseError> {
    let outcomes = db.batch(vec![find_user_statement(email)]).await?;
    first_row(&outcomes).map(user_record).transpose()
}

/// The statement of [`find_user_by_email`], to ride in another batch ([`user_from`] reads it).
pub fn find_user_statement(email: &Email) -> Statement {
    Statement::new(
        "SELECT id, email, password_hash, email_verified_at, password_version, move_state FROM users WHERE email = ?1",
        [email.as_str().into()],
    )
}

/// The user a [`find_user_statement`] found.
pub fn user_from(outcome: Option<&StatementOutcome>) -> Result<Option<UserRecord>, DatabaseError> {
    outcome.and_then(|outcome| outcome.rows.first()).map(user_record).transpose()
}

pub(crate) fn user_record(row: &Row) -> Result<UserRecord, DatabaseError> {
    Ok(UserRecord {
        id: text(row, "id")?,
        email: text(row, "email")?,
        password_hash: text(row, "password_hash")?,
        email_verified: optional_integer(row, "email_verified_at")?.is_some(),
        password_version: integer(row, "password_version")?,
        move_state: optional_text(row, "move_state")?,
    })
}

/// Accounts whose stored address is not in today's normal form: those with a non-ASCII
/// character, which before IDNA (UTS #46) mapping could be a domain in U-labels. At most
/// `limit` with an id after `after`, in id order, as (id, email, the bucket it is filed under).
pub async fn addresses_to_normalise(
    db: &impl Database,
    after: &str,
    limit: i64,
) -> Result<Vec<(String, String, i64)>, DatabaseError> {
    let outcomes = db
        .batch(vec![Statement::new(
            "SELECT id, email, bucket FROM users WHERE email GLOB '*[^ -~]*' AND id > ?1 ORDER BY id LIMIT ?2",
            [after.into(), limit.into()],
        )])
        .await?;
    rows(&outcomes, 0).iter().map(|row| Ok((text(row, "id")?, text(row, "email")?, integer(row, "bucket")?))).collect()
}

/// Rewrites one account's address into its normal form, and its bucket into that form's,
/// unless another account already has that form (the two were one mailbox all along; an
/// operator decides). Returns whether it did.
pub async fn normalise_address(
    db: &impl Database,
    user_id: &str,
    stored: &str,
    normal: &Email,
    now: DateTime<Utc>,
) -> Result<bool, DatabaseError> {
    let outcomes = db
        .batch(vec![Statement::new(
            "UPDATE users SET email = ?3, updated_at = ?4, bucket = ?5
             WHERE id = ?1 AND email = ?2 AND NOT EXISTS (SELECT 1 FROM users WHERE email = ?3)",
            [
                user_id.into(),
                stored.into(),
                normal.as_str().into(),
                now.timestamp().into(),
                i64::from(UserBucket::of_email(normal).index()).into(),
            ],
        )])
        .await?;
    Ok(changes(&outcomes, 0) == 1)
}

/// Replaces a password hash that just verified with a stronger one, unless it changed since
/// it was read (a reset in between wins).
pub async fn upgrade_password_hash(
    db: &impl Database,
    user_id: &str,
    old_hash: &str,
    new_hash: &str,
    now: DateTime<Utc>,
) -> Result<bool, DatabaseError> {
    let outcomes = db
        .batch(vec![Statement::new(
            "UPDATE users SET password_hash = ?3, updated_at = ?4 WHERE id = ?1 AND password_hash = ?2",
            [user_id.into(), old_hash.into(), new_hash.into(), now.timestamp().into()],
        )])
        .await?;
    Ok(changes(&outcomes, 0) == 1)
}

/// An account as a walk over every shard lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub id: String,
    pub email: String,
    pub email_verified: bool,
    pub created_at: i64,
    pub bucket: i64,
}

/// Up to `limit` accounts of one shard after (`after_bucket`, `after_id`) in (bucket, id)
/// order, leaving out buckets the shard refuses (moved away, or moving: not its to list).
pub async fn users_after(
    shard: &impl Database,
    after_bucket: i64,
    after_id: &str,
    limit: i64,
) -> Result<Vec<UserSummary>, DatabaseError> {
    let outcomes = shard
        .batch(vec![Statement::new(
            "SELECT id, email, email_verified_at, created_at, bucket FROM users
             WHERE (bucket > ?1 OR (bucket = ?1 AND id > ?2))
               AND bucket NOT IN (SELECT bucket FROM refused_buckets WHERE refused = 1)
             ORDER BY bucket, id LIMIT ?3",
            [after_bucket.into(), after_id.into(), limit.into()],
        )])
        .await?;
    rows(&outcomes, 0)
        .iter()
        .map(|row| {
            Ok(UserSummary {
                id: text(row, "id")?,
                email: text(row, "email")?,
                email_verified: optional_integer(row, "email_verified_at")?.is_some(),
                created_at: integer(row, "created_at")?,
                bucket: integer(row, "bucket")?,
            })
        })
        .collect()
}

/// Files up to `limit` accounts written before shards (`bucket` -1) under their address's
/// bucket, in one shard. Returns how many it filed and how many it had to leave (an address not
/// in today's normal form: the cron's normalisation files it when it rewrites it).
pub async fn file_unbucketed_accounts(shard: &impl Database, limit: i64) -> Result<(u64, u64), DatabaseError> {
    let outcomes = shard
        .batch(vec![Statement::new(
            "SELECT id, email FROM users WHERE bucket < 0 ORDER BY id LIMIT ?1",
            [limit.into()],
        )])
        .await?;
    let rows = outcomes.into_iter().next().map(|outcome| outcome.rows).unwrap_or_default();
    let mut updates = Vec::new();
    let mut left = 0;
    for row in &rows {
        let (id, stored) = (text(row, "id")?, text(row, "email")?);
        match Email::parse(&stored) {
            Ok(email) if email.as_str() == stored => updates.push(Statement::new(
                "UPDATE users SET bucket = ?2 WHERE id = ?1 AND bucket < 0",
                [id.into(), i64::from(UserBucket::of_email(&email).index()).into()],
            )),
            _ => left += 1,
        }
    }
    let filed = updates.len() as u64;
    if !updates.is_empty() {
        shard.batch(updates).await?;
    }
    Ok((filed, left))
}
