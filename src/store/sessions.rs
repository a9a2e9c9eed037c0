//! `sessions` and `refresh_tokens`: a login's session, its rotating refresh tokens, revocation.

use chrono::{DateTime, Utc};

use super::users::user_record;
use super::{changes, first_row, integer, optional_integer, optional_text, text, UserRecord};
use crate::domain::opaque_token::TokenHash;
use crate::ports::{Database, DatabaseError, Row, SqlValue, Statement};

pub struct NewSession<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub expires_at: DateTime<Utc>,
    /// The password hash the login verified (a re-hash replaces only that one)...
    pub verified_password_hash: &'a str,
    /// ...and the password's version when it was read: the session starts only while the
    /// account still has that password, so a reset that committed after the check leaves this
    /// login with nothing, while another login's re-hash (same password) does not.
    pub password_version: i64,
    /// A fresh hash of the same password with the configured parameters, to replace the
    /// verified one in the same batch (`domain::password::needs_rehash`).
    pub rehashed_password: Option<&'a str>,
    /// What the login starts: an API session with its first refresh token (`/v1/login`), or a
    /// browser (SSO) session named by the SHA-256 of its cookie (the hosted login page).
    pub kind: SessionKind<'a>,
}

#[derive(Debug, Clone, Copy)]
pub enum SessionKind<'a> {
    Api { refresh_token_hash: &'a TokenHash, refresh_token_expires_at: DateTime<Utc> },
    Browser { cookie_hash: &'a TokenHash },
}

/// Starts a session with its first refresh token, if the account's password is still the one
/// the login verified (its version unchanged; a re-hash, written here only over the verified
/// hash, keeps the version). Returns whether the session started; the budgets it gives back and
/// the network it remembers are `DB`'s, for after the response ([`after_sign_in`]).
pub async fn start_session(
    db: &impl Database,
    session: &NewSession<'_>,
    now: DateTime<Utc>,
) -> Result<bool, DatabaseError> {
    let mut statements = Vec::with_capacity(3);
    if let Some(rehashed) = session.rehashed_password {
        statements.push(Statement::new(
            "UPDATE users SET password_hash = ?3, updated_at = ?4 WHERE id = ?1 AND password_hash = ?2",
            [session.user_id.into(), session.verified_password_hash.into(), rehashed.into(), now.timestamp().into()],
        ));
    }
    let insert = statements.len();
    match session.kind {
        SessionKind::Api { refresh_token_hash, refresh_token_expires_at } => statements.extend([
            Statement::new(
                "INSERT INTO sessions (id, user_id, auth_time, created_at, expires_at)
                 SELECT ?1, id, ?3, ?3, ?4 FROM users WHERE id = ?2 AND password_version = ?5",
                [
                    session.id.into(),
                    session.user_id.into(),
                    now.timestamp().into(),
                    session.expires_at.timestamp().into(),
                    session.password_version.into(),
                ],
            ),
            Statement::new(
                "INSERT INTO refresh_tokens (token_hash, session_id, user_id, issued_at, expires_at)
                 SELECT ?1, id, user_id, ?3, ?4 FROM sessions WHERE id = ?2",
                [
                    refresh_token_hash.as_str().into(),
                    session.id.into(),
                    now.timestamp().into(),
                    refresh_token_expires_at.timestamp().into(),
                ],
            ),
        ]),
        SessionKind::Browser { cookie_hash } => statements.push(Statement::new(
            "INSERT INTO browser_sessions (id, cookie_hash, user_id, auth_time, created_at, expires_at)
             SELECT ?1, ?6, id, ?3, ?3, ?4 FROM users WHERE id = ?2 AND password_version = ?5",
            [
                session.id.into(),
                session.user_id.into(),
                now.timestamp().into(),
                session.expires_at.timestamp().into(),
                session.password_version.into(),
                cookie_hash.as_str().into(),
            ],
        )),
    }
    let outcomes = db.batch(statements).await?;
    Ok(changes(&outcomes, insert) == 1)
}

/// A refresh token with what a rotation needs to know about its session and user.
#[derive(Debug, Clone)]
pub struct RefreshTokenRecord {
    pub session_id: String,
    pub user_id: String,
    pub email: String,
    pub email_verified: bool,
    pub auth_time: i64,
    pub consumed_at: Option<i64>,
    pub successor_sealed: Option<String>,
    /// Whether the token this one was rotated into has itself been used or revoked.
    pub successor_used: bool,
    pub revoked: bool,
    pub expires_at: i64,
    pub session_revoked: bool,
    pub session_expires_at: i64,
    /// The client the grant belongs to; `None` for the first-party app's `/v1/login` sessions.
    pub client_id: Option<String>,
    /// The granted scope of a code-flow grant (`None`: a first-party session's fixed scope).
    pub scope: Option<String>,
    /// The browser session (`sid`) a code-flow grant was issued in.
    pub browser_session_id: Option<String>,
}

/// Rotates `old` into `new` if `old` is live, its session too, and it belongs to `client_id`
/// (`None`: the first-party app): one conditional `UPDATE` decides, so of concurrent rotations
/// exactly one wins, and another client's presentation changes nothing; the successor inherits
/// the session and never outlives it. Returns whether this call won.
pub async fn rotate_refresh_token(
    db: &impl Database,
    client_id: Option<&str>,
    old: &TokenHash,
    new: &TokenHash,
    successor_sealed: &str,
    new_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(bool, Option<RefreshTokenRecord>), DatabaseError> {
    let outcomes = db
        .batch(vec![
            Statement::new(
                "UPDATE refresh_tokens SET consumed_at = ?4, replaced_by = ?2, successor_sealed = ?3
                 WHERE token_hash = ?1 AND consumed_at IS NULL AND revoked_at IS NULL AND expires_at > ?4
                   AND EXISTS (SELECT 1 FROM sessions s
                               WHERE s.id = refresh_tokens.session_id AND s.revoked_at IS NULL AND s.expires_at > ?4
                                 AND s.client_id IS ?5)",
                [
                    old.as_str().into(),
                    new.as_str().into(),
                    successor_sealed.into(),
                    now.timestamp().into(),
                    client_id.into(),
                ],
            ),
            Statement::new(
                "INSERT INTO refresh_tokens (token_hash, session_id, user_id, issued_at, expires_at)
                 SELECT ?2, r.session_id, r.user_id, ?3, min(?4, s.expires_at)
                 FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id
                 WHERE r.token_hash = ?1 AND r.replaced_by = ?2",
                [old.as_str().into(), new.as_str().into(), now.timestamp().into(), new_expires_at.timestamp().into()],
            ),
            // What the caller needs either way, read in the same round trip.
            refresh_token_query(old),
        ])
        .await?;
    let record = outcomes.get(2).and_then(|outcome| outcome.rows.first()).map(refresh_token_record).transpose()?;
    Ok((changes(&outcomes, 0) == 1, record))
}

/// A refresh token and its grant, read alone (a refresh that narrows its scope checks it
/// before rotating).
pub async fn find_refresh_token(
    db: &impl Database,
    hash: &TokenHash,
) -> Result<Option<RefreshTokenRecord>, DatabaseError> {
    let outcomes = db.batch(vec![refresh_token_query(hash)]).await?;
    first_row(&outcomes).map(refresh_token_record).transpose()
}

fn refresh_token_query(hash: &TokenHash) -> Statement {
    Statement::new(
        "SELECT r.session_id, r.user_id, r.consumed_at, r.successor_sealed, r.revoked_at, r.expires_at,
                s.auth_time, s.revoked_at AS session_revoked_at, s.expires_at AS session_expires_at,
                s.client_id, s.scope, s.browser_session_id, u.email, u.email_verified_at,
                (SELECT count(*) FROM refresh_tokens n
                  WHERE n.token_hash = r.replaced_by AND (n.consumed_at IS NOT NULL OR n.revoked_at IS NOT NULL))
                  AS successor_used
         FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id JOIN users u ON u.id = r.user_id
         WHERE r.token_hash = ?1",
        [hash.as_str().into()],
    )
}

fn refresh_token_record(row: &Row) -> Result<RefreshTokenRecord, DatabaseError> {
    Ok(RefreshTokenRecord {
        session_id: text(row, "session_id")?,
        user_id: text(row, "user_id")?,
        email: text(row, "email")?,
        email_verified: optional_integer(row, "email_verified_at")?.is_some(),
        auth_time: integer(row, "auth_time")?,
        consumed_at: optional_integer(row, "consumed_at")?,
        successor_sealed: optional_text(row, "successor_sealed")?,
        successor_used: integer(row, "successor_used")? > 0,
        revoked: optional_integer(row, "revoked_at")?.is_some(),
        expires_at: integer(row, "expires_at")?,
        session_revoked: optional_integer(row, "session_revoked_at")?.is_some(),
        session_expires_at: integer(row, "session_expires_at")?,
        client_id: optional_text(row, "client_id")?,
        scope: optional_text(row, "scope")?,
        browser_session_id: optional_text(row, "browser_session_id")?,
    })
}

/// Ends the session `refresh_token` belongs to, with every refresh token of its family.
/// Unknown tokens change nothing.
pub async fn revoke_family(
    db: &impl Database,
    refresh_token: &TokenHash,
    now: DateTime<Utc>,
) -> Result<(), DatabaseError> {
    let params = || -> Vec<SqlValue> { vec![refresh_token.as_str().into(), now.timestamp().into()] };
    db.batch(vec![
        Statement::new(
            "UPDATE sessions SET revoked_at = ?2
             WHERE revoked_at IS NULL AND id = (SELECT session_id FROM refresh_tokens WHERE token_hash = ?1)",
            params(),
        ),
        Statement::new(
            "UPDATE refresh_tokens SET revoked_at = ?2
             WHERE revoked_at IS NULL
               AND session_id = (SELECT session_id FROM refresh_tokens WHERE token_hash = ?1)",
            params(),
        ),
    ])
    .await
    .map(drop)
}

/// The user behind an access token, if its session is still live (the caller checks at the
/// same time, in `DB`, that the key that signed it is not marked compromised:
/// [`is_signing_key_compromised`](super::is_signing_key_compromised)). The token's `sid` names a first-party session (`/v1/login`), or the browser session a client's
/// grant was issued in; then that grant (`grant_id`, from the token's `jti`) must be live, of
/// that client, in that browser session, so a logout, a reset or a reused code ends its access
/// tokens here too.
pub async fn find_session_user(
    db: &impl Database,
    user_id: &str,
    session_id: &str,
    client_id: &str,
    grant_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<UserRecord>, DatabaseError> {
    let outcomes = db
        .batch(vec![Statement::new(
            "SELECT u.id, u.email, u.password_hash, u.email_verified_at, u.password_version
             FROM users u
             WHERE u.id = ?1
               AND EXISTS (SELECT 1 FROM sessions s
                           WHERE s.user_id = u.id AND s.revoked_at IS NULL AND s.expires_at > ?3
                             AND ((s.id = ?2 AND s.client_id IS NULL)
                                  OR (s.id = ?5 AND s.browser_session_id = ?2 AND s.client_id = ?4)))",
            [user_id.into(), session_id.into(), now.timestamp().into(), client_id.into(), grant_id.into()],
        )])
        .await?;
    first_row(&outcomes).map(user_record).transpose()
}
