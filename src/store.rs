//! Every SQL statement edgeid runs, over the `Database` port. The same text runs on D1 in the
//! worker and on SQLite in `cargo test`. Each function that must be atomic is one batch.

use chrono::{DateTime, Utc};

use crate::domain::email::Email;
use crate::domain::opaque_token::TokenHash;
use crate::ports::{Database, DatabaseError, Row, SqlValue, Statement, StatementOutcome};

/// What a one-time token is good for; stored in `one_time_tokens.purpose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::ResetPassword => "reset_password",
        }
    }
}

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub email_verified: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupOutcome {
    Created,
    AlreadyRegistered,
}

pub struct NewUser<'a> {
    pub id: &'a str,
    pub email: &'a Email,
    pub password_hash: &'a str,
}

pub struct NewOneTimeToken<'a> {
    pub user_id: &'a str,
    pub purpose: Purpose,
    pub hash: &'a TokenHash,
    pub expires_at: DateTime<Utc>,
}

pub struct NewSession<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub expires_at: DateTime<Utc>,
    pub refresh_token_hash: &'a TokenHash,
    pub refresh_token_expires_at: DateTime<Utc>,
}

/// Answers when the database does.
pub async fn ping(db: &impl Database) -> Result<(), DatabaseError> {
    db.batch(vec![Statement::new("SELECT 1 AS ok", [])]).await.map(drop)
}

/// Creates the user and its first verification token together, or nothing at all when the
/// email is taken (the unique index decides, so two concurrent sign-ups cannot both win).
pub async fn create_user(
    db: &impl Database,
    user: &NewUser<'_>,
    verification: &NewOneTimeToken<'_>,
    now: DateTime<Utc>,
) -> Result<SignupOutcome, DatabaseError> {
    let outcomes = db
        .batch(vec![
            Statement::new(
                "INSERT INTO users (id, email, password_hash, email_verified_at, password_changed_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, NULL, ?4, ?4, ?4)
                 ON CONFLICT (email) DO NOTHING",
                [user.id.into(), user.email.as_str().into(), user.password_hash.into(), now.timestamp().into()],
            ),
            // Inserts only if the row above was created: the id is fresh and random.
            Statement::new(
                "INSERT INTO one_time_tokens (token_hash, user_id, purpose, created_at, expires_at)
                 SELECT ?1, id, ?3, ?4, ?5 FROM users WHERE id = ?2",
                [
                    verification.hash.as_str().into(),
                    user.id.into(),
                    verification.purpose.as_str().into(),
                    now.timestamp().into(),
                    verification.expires_at.timestamp().into(),
                ],
            ),
        ])
        .await?;
    Ok(match changes(&outcomes, 0) {
        0 => SignupOutcome::AlreadyRegistered,
        _ => SignupOutcome::Created,
    })
}

pub async fn find_user_by_email(db: &impl Database, email: &Email) -> Result<Option<UserRecord>, DatabaseError> {
    let outcomes = db
        .batch(vec![Statement::new(
            "SELECT id, email, password_hash, email_verified_at FROM users WHERE email = ?1",
            [email.as_str().into()],
        )])
        .await?;
    first_row(&outcomes)
        .map(|row| {
            Ok(UserRecord {
                id: text(row, "id")?,
                email: text(row, "email")?,
                password_hash: text(row, "password_hash")?,
                email_verified: !matches!(row.get("email_verified_at"), None | Some(SqlValue::Null)),
            })
        })
        .transpose()
}

/// Stores a new one-time token. A new reset token voids the user's older ones, so only the
/// newest reset email works.
pub async fn insert_one_time_token(
    db: &impl Database,
    token: &NewOneTimeToken<'_>,
    now: DateTime<Utc>,
) -> Result<(), DatabaseError> {
    let mut statements = Vec::new();
    if token.purpose == Purpose::ResetPassword {
        statements.push(Statement::new(
            "UPDATE one_time_tokens SET consumed_at = ?3, consumed_by = 'superseded'
             WHERE user_id = ?1 AND purpose = ?2 AND consumed_at IS NULL",
            [token.user_id.into(), token.purpose.as_str().into(), now.timestamp().into()],
        ));
    }
    statements.push(Statement::new(
        "INSERT INTO one_time_tokens (token_hash, user_id, purpose, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        [
            token.hash.as_str().into(),
            token.user_id.into(),
            token.purpose.as_str().into(),
            now.timestamp().into(),
            token.expires_at.timestamp().into(),
        ],
    ));
    db.batch(statements).await.map(drop)
}

/// The user a live (unconsumed, unexpired) token belongs to. A read only: consuming happens
/// in one of the batches below, which re-check everything.
pub async fn live_token_owner(
    db: &impl Database,
    hash: &TokenHash,
    purpose: Purpose,
    now: DateTime<Utc>,
) -> Result<Option<String>, DatabaseError> {
    let outcomes = db
        .batch(vec![Statement::new(
            "SELECT user_id FROM one_time_tokens
             WHERE token_hash = ?1 AND purpose = ?2 AND consumed_at IS NULL AND expires_at > ?3",
            [hash.as_str().into(), purpose.as_str().into(), now.timestamp().into()],
        )])
        .await?;
    first_row(&outcomes).map(|row| text(row, "user_id")).transpose()
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
/// the user and revokes all of the user's sessions and refresh tokens.
pub async fn reset_password(
    db: &impl Database,
    hash: &TokenHash,
    nonce: &str,
    new_password_hash: &str,
    now: DateTime<Utc>,
) -> Result<bool, DatabaseError> {
    let params = || -> Vec<SqlValue> { vec![hash.as_str().into(), nonce.into(), now.timestamp().into()] };
    let outcomes = db
        .batch(vec![
            consume(hash, Purpose::ResetPassword, nonce, now),
            Statement::new(
                "UPDATE users SET password_hash = ?4, password_changed_at = ?3,
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
        ])
        .await?;
    Ok(changes(&outcomes, 0) == 1)
}

/// Starts a session with its first refresh token.
pub async fn start_session(
    db: &impl Database,
    session: &NewSession<'_>,
    now: DateTime<Utc>,
) -> Result<(), DatabaseError> {
    db.batch(vec![
        Statement::new(
            "INSERT INTO sessions (id, user_id, auth_time, created_at, expires_at) VALUES (?1, ?2, ?3, ?3, ?4)",
            [
                session.id.into(),
                session.user_id.into(),
                now.timestamp().into(),
                session.expires_at.timestamp().into(),
            ],
        ),
        Statement::new(
            "INSERT INTO refresh_tokens (token_hash, session_id, user_id, issued_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            [
                session.refresh_token_hash.as_str().into(),
                session.id.into(),
                session.user_id.into(),
                now.timestamp().into(),
                session.refresh_token_expires_at.timestamp().into(),
            ],
        ),
    ])
    .await
    .map(drop)
}

fn changes(outcomes: &[StatementOutcome], index: usize) -> u64 {
    outcomes.get(index).map_or(0, |outcome| outcome.changes)
}

fn first_row(outcomes: &[StatementOutcome]) -> Option<&Row> {
    outcomes.first().and_then(|outcome| outcome.rows.first())
}

fn text(row: &Row, column: &str) -> Result<String, DatabaseError> {
    match row.get(column) {
        Some(SqlValue::Text(value)) => Ok(value.clone()),
        other => Err(DatabaseError(format!("column {column} is not text: {other:?}"))),
    }
}
