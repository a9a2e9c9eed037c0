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
    /// Counts the password's replacements (resets, a sign-up taking over an unverified
    /// account), not its re-hashes: what a login's session is conditional on.
    pub password_version: i64,
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

pub struct NewOneTimeToken<'a> {
    pub user_id: &'a str,
    pub purpose: Purpose,
    pub hash: &'a TokenHash,
    pub expires_at: DateTime<Utc>,
    /// The short code's hash and expiry, where the mail carries one (`domain::short_code`).
    pub code_hash: Option<&'a str>,
    pub code_expires_at: Option<DateTime<Utc>>,
}

pub struct NewSession<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub expires_at: DateTime<Utc>,
    pub refresh_token_hash: &'a TokenHash,
    pub refresh_token_expires_at: DateTime<Utc>,
    /// The password hash the login verified (a re-hash replaces only that one)...
    pub verified_password_hash: &'a str,
    /// ...and the password's version when it was read: the session starts only while the
    /// account still has that password, so a reset that committed after the check leaves this
    /// login with nothing, while another login's re-hash (same password) does not.
    pub password_version: i64,
    /// A fresh hash of the same password with the configured parameters, to replace the
    /// verified one in the same batch (`domain::password::needs_rehash`).
    pub rehashed_password: Option<&'a str>,
}

/// Answers when the database does.
pub async fn ping(db: &impl Database) -> Result<(), DatabaseError> {
    db.batch(vec![Statement::new("SELECT 1 AS ok", [])]).await.map(drop)
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
                "INSERT INTO users (id, email, password_hash, email_verified_at, password_changed_at, created_at, updated_at, locale)
                 VALUES (?1, ?2, ?3, NULL, ?4, ?4, ?4, ?5)
                 ON CONFLICT (email) DO NOTHING",
                [
                    user.id.into(),
                    user.email.as_str().into(),
                    user.password_hash.into(),
                    now.timestamp().into(),
                    user.locale.into(),
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

pub async fn find_user_by_email(db: &impl Database, email: &Email) -> Result<Option<UserRecord>, DatabaseError> {
    let outcomes = db.batch(vec![find_user_statement(email)]).await?;
    first_row(&outcomes).map(user_record).transpose()
}

/// The statement of [`find_user_by_email`], to ride in another batch ([`user_from`] reads it).
pub fn find_user_statement(email: &Email) -> Statement {
    Statement::new(
        "SELECT id, email, password_hash, email_verified_at, password_version FROM users WHERE email = ?1",
        [email.as_str().into()],
    )
}

/// The user a [`find_user_statement`] found.
pub fn user_from(outcome: Option<&StatementOutcome>) -> Result<Option<UserRecord>, DatabaseError> {
    outcome.and_then(|outcome| outcome.rows.first()).map(user_record).transpose()
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
/// the user and revokes all of the user's sessions and refresh tokens.
pub async fn reset_password(
    db: &impl Database,
    hash: &TokenHash,
    nonce: &str,
    new_password_hash: &str,
    cleared_budgets: &ClearedBudgets,
    now: DateTime<Utc>,
) -> Result<Option<(String, String)>, DatabaseError> {
    let params = || -> Vec<SqlValue> { vec![hash.as_str().into(), nonce.into(), now.timestamp().into()] };
    let mut statements = Vec::new();
    // The account's failed-login budgets start again (only if this request consumed the token).
    for bucket in &cleared_budgets.buckets {
        statements.push(Statement::new(
            "DELETE FROM rate_limits WHERE bucket = ?3
               AND EXISTS (SELECT 1 FROM one_time_tokens WHERE token_hash = ?1 AND consumed_by = ?2)",
            [hash.as_str().into(), nonce.into(), bucket.as_str().into()],
        ));
    }
    for prefix in &cleared_budgets.prefixes {
        statements.push(Statement::new(
            "DELETE FROM rate_limits WHERE bucket >= ?3 AND bucket < ?4
               AND EXISTS (SELECT 1 FROM one_time_tokens WHERE token_hash = ?1 AND consumed_by = ?2)",
            [hash.as_str().into(), nonce.into(), prefix.as_str().into(), prefix_end(prefix).into()],
        ));
        // And the networks it signed in from: whoever knew the old password may have too.
        statements.push(Statement::new(
            "DELETE FROM known_networks WHERE key >= ?3 AND key < ?4
               AND EXISTS (SELECT 1 FROM one_time_tokens WHERE token_hash = ?1 AND consumed_by = ?2)",
            [hash.as_str().into(), nonce.into(), prefix.as_str().into(), prefix_end(prefix).into()],
        ));
    }
    let cleared = statements.len();
    let outcomes = db
        .batch(
            vec![
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
                // Who it was, for the "password changed" notice.
                Statement::new(
                    "SELECT email, locale FROM users
                 WHERE id = (SELECT user_id FROM one_time_tokens WHERE token_hash = ?1 AND consumed_by = ?2)",
                    [hash.as_str().into(), nonce.into()],
                ),
            ]
            .into_iter()
            .chain(statements)
            .collect(),
        )
        .await?;
    debug_assert!(outcomes.len() == cleared + 6);
    if changes(&outcomes, 0) != 1 {
        return Ok(None);
    }
    match outcomes.get(5).and_then(|outcome| outcome.rows.first()) {
        Some(row) => Ok(Some((text(row, "email")?, text(row, "locale")?))),
        None => Err(DatabaseError("the reset account vanished within its own batch".to_owned())),
    }
}

/// A network an account signed in from, remembered until `expires_at` (`known_networks`).
#[derive(Debug, Clone, Copy)]
pub struct KnownNetwork<'a> {
    pub key: &'a str,
    pub expires_at: DateTime<Utc>,
}

/// Rate-limit buckets a batch deletes: by exact key, and every key under a prefix.
#[derive(Debug, Clone, Default)]
pub struct ClearedBudgets {
    pub buckets: Vec<String>,
    pub prefixes: Vec<String>,
}

/// The least string above every string that starts with `prefix` (whose last character is
/// ASCII, as bucket keys are): `bucket >= prefix AND bucket < prefix_end(prefix)` is a range
/// scan of the primary key.
fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.to_owned();
    match end.pop() {
        Some(last) if last.is_ascii() && last != '\x7f' => end.push(char::from(last as u8 + 1)),
        Some(last) => {
            end.push(last);
            end.push('\u{10ffff}');
        }
        None => end.push('\u{10ffff}'),
    }
    end
}

/// Starts a session with its first refresh token, if the account's password is still the one
/// the login verified (its version unchanged; a re-hash, written here only over the verified
/// hash, keeps the version); in the
/// same batch, and only if the session started, puts back the budget units in `returned` (a
/// login that turned out right). Returns whether the session started.
pub async fn start_session(
    db: &impl Database,
    session: &NewSession<'_>,
    returned: &[BucketDraw],
    known_network: Option<&KnownNetwork<'_>>,
    now: DateTime<Utc>,
) -> Result<bool, DatabaseError> {
    let mut statements = Vec::with_capacity(returned.len() + 3);
    if let Some(rehashed) = session.rehashed_password {
        statements.push(Statement::new(
            "UPDATE users SET password_hash = ?3, updated_at = ?4 WHERE id = ?1 AND password_hash = ?2",
            [session.user_id.into(), session.verified_password_hash.into(), rehashed.into(), now.timestamp().into()],
        ));
    }
    let insert = statements.len();
    statements.extend([
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
                session.refresh_token_hash.as_str().into(),
                session.id.into(),
                now.timestamp().into(),
                session.refresh_token_expires_at.timestamp().into(),
            ],
        ),
    ]);
    statements.extend(returned.iter().map(|draw| {
        Statement::new(
            "UPDATE rate_limits SET tat = tat - ?2 WHERE bucket = ?1 AND EXISTS (SELECT 1 FROM sessions WHERE id = ?3)",
            [draw.bucket.as_str().into(), draw.cost_ms.into(), session.id.into()],
        )
    }));
    if let Some(known) = known_network {
        statements.push(Statement::new(
            "INSERT INTO known_networks (key, expires_at) SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?3)
             ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at",
            [known.key.into(), known.expires_at.timestamp().into(), session.id.into()],
        ));
    }
    let outcomes = db.batch(statements).await?;
    Ok(changes(&outcomes, insert) == 1)
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
}

/// Rotates `old` into `new` if `old` is live and its session too: one conditional `UPDATE`
/// decides, so of concurrent rotations exactly one wins; the successor inherits the session and
/// never outlives it. Returns whether this call won.
pub async fn rotate_refresh_token(
    db: &impl Database,
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
                               WHERE s.id = refresh_tokens.session_id AND s.revoked_at IS NULL AND s.expires_at > ?4)",
                [old.as_str().into(), new.as_str().into(), successor_sealed.into(), now.timestamp().into()],
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

fn refresh_token_query(hash: &TokenHash) -> Statement {
    Statement::new(
        "SELECT r.session_id, r.user_id, r.consumed_at, r.successor_sealed, r.revoked_at, r.expires_at,
                s.auth_time, s.revoked_at AS session_revoked_at, s.expires_at AS session_expires_at,
                u.email, u.email_verified_at,
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

/// The user behind an access token, if its session is still live and the key that signed it
/// (`kid`) has not been marked compromised: checked here, in the same round trip, so that a
/// compromise refuses its tokens at once, whatever key table an isolate has cached.
pub async fn find_session_user(
    db: &impl Database,
    user_id: &str,
    session_id: &str,
    kid: &str,
    now: DateTime<Utc>,
) -> Result<Option<UserRecord>, DatabaseError> {
    let outcomes = db
        .batch(vec![Statement::new(
            "SELECT u.id, u.email, u.password_hash, u.email_verified_at, u.password_version
             FROM users u JOIN sessions s ON s.user_id = u.id
             WHERE u.id = ?1 AND s.id = ?2 AND s.revoked_at IS NULL AND s.expires_at > ?3
               AND NOT EXISTS (SELECT 1 FROM signing_keys WHERE kid = ?4 AND compromised_at IS NOT NULL)",
            [user_id.into(), session_id.into(), now.timestamp().into(), kid.into()],
        )])
        .await?;
    first_row(&outcomes).map(user_record).transpose()
}

fn user_record(row: &Row) -> Result<UserRecord, DatabaseError> {
    Ok(UserRecord {
        id: text(row, "id")?,
        email: text(row, "email")?,
        password_hash: text(row, "password_hash")?,
        email_verified: optional_integer(row, "email_verified_at")?.is_some(),
        password_version: integer(row, "password_version")?,
    })
}

fn integer(row: &Row, column: &str) -> Result<i64, DatabaseError> {
    optional_integer(row, column)?.ok_or_else(|| DatabaseError(format!("column {column} is null")))
}

fn optional_integer(row: &Row, column: &str) -> Result<Option<i64>, DatabaseError> {
    match row.get(column) {
        Some(SqlValue::Integer(value)) => Ok(Some(*value)),
        None | Some(SqlValue::Null) => Ok(None),
        Some(other) => Err(DatabaseError(format!("column {column} is not an integer: {other:?}"))),
    }
}

fn optional_text(row: &Row, column: &str) -> Result<Option<String>, DatabaseError> {
    match row.get(column) {
        Some(SqlValue::Text(value)) => Ok(Some(value.clone())),
        None | Some(SqlValue::Null) => Ok(None),
        Some(other) => Err(DatabaseError(format!("column {column} is not text: {other:?}"))),
    }
}

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

/// Adds a (random) key that activates at `key.activates_at`; every key not yet retired retires
/// then. A kid already in the table fails the batch, leaving everything as it was: no key is
/// ever inserted twice, so a retired one never comes back.
pub async fn add_signing_key(
    db: &impl Database,
    key: &SigningKeyRecord,
    now: DateTime<Utc>,
) -> Result<(), DatabaseError> {
    db.batch(vec![
        Statement::new(
            "UPDATE signing_keys SET retired_at = ?2
             WHERE kid != ?1 AND (retired_at IS NULL OR retired_at > ?2)",
            [key.kid.as_str().into(), key.activates_at.into()],
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
/// then retires the others. Keys marked compromised, and those named in `cannot_sign` (whose
/// private part this worker cannot open), count as absent. Of concurrent calls with different
/// (random) keys exactly one inserts, even when their instants straddle a second: the RS256
/// bootstrap, whose key cannot be derived. Returns whether this call's key went in.
pub async fn add_signing_key_unless_one_is_active(
    db: &impl Database,
    key: &SigningKeyRecord,
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
                 WHERE kid != ?1 AND (retired_at IS NULL OR retired_at > ?2)
                   AND EXISTS (SELECT 1 FROM signing_keys WHERE kid = ?1 AND created_at = ?2)",
                [key.kid.as_str().into(), now.timestamp().into()],
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
/// yet; then retires the others and records the key as the salt's. Concurrent callers with the
/// same salt derive the same key: exactly one batch inserts it. A kid already in the table is
/// never brought back (the salt is spent all the same, so the next bootstrap replaces it).
/// Returns whether this call's key went in.
pub async fn add_bootstrap_key(
    db: &impl Database,
    key: &SigningKeyRecord,
    salt: &str,
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
                 WHERE kid != ?1 AND (retired_at IS NULL OR retired_at > ?5)
                   AND EXISTS (SELECT 1 FROM signing_keys WHERE kid = ?1 AND private_sealed = ?4 AND created_at = ?5)
                   AND EXISTS (SELECT 1 FROM signing_key_salts WHERE alg = ?2 AND salt = ?6 AND kid IS NULL)",
                params(),
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
/// Statements in `also` run in the same batch, after the buckets' (whatever the buckets say);
/// their outcomes come back second.
pub async fn take_from_buckets(
    db: &impl Database,
    draws: &[BucketDraw],
    now_ms: i64,
    also: Vec<Statement>,
) -> Result<(Vec<BucketState>, Vec<StatementOutcome>), DatabaseError> {
    const PER_DRAW: usize = 3;
    let now_seconds = now_ms.div_euclid(1000);
    let mut statements = Vec::with_capacity(draws.len() * PER_DRAW + also.len());
    for draw in draws {
        // With no exemption key, `?5` is NULL and the NOT EXISTS always holds.
        statements.push(Statement::new(
            "INSERT INTO rate_limits (bucket, tat)
             SELECT ?1, ?2 + ?3 WHERE NOT EXISTS (SELECT 1 FROM known_networks WHERE key = ?5 AND expires_at > ?6)
             ON CONFLICT (bucket) DO UPDATE SET tat = max(rate_limits.tat, ?2) + ?3
             WHERE max(rate_limits.tat, ?2) + ?3 - ?4 <= ?2
               AND NOT EXISTS (SELECT 1 FROM known_networks WHERE key = ?5 AND expires_at > ?6)",
            [
                draw.bucket.as_str().into(),
                now_ms.into(),
                draw.cost_ms.into(),
                draw.tolerance_ms.into(),
                draw.unless_known.as_deref().into(),
                now_seconds.into(),
            ],
        ));
        statements.push(Statement::new("SELECT tat FROM rate_limits WHERE bucket = ?1", [draw.bucket.as_str().into()]));
        statements.push(Statement::new(
            "SELECT count(*) AS known FROM known_networks WHERE key = ?1 AND expires_at > ?2",
            [draw.unless_known.as_deref().into(), now_seconds.into()],
        ));
    }
    statements.extend(also);
    let mut outcomes = db.batch(statements).await?;
    let states = (0..draws.len())
        .map(|index| {
            let tat_ms = outcomes
                .get(index * PER_DRAW + 1)
                .and_then(|outcome| outcome.rows.first())
                .map(|row| integer(row, "tat"))
                .transpose()?
                .unwrap_or(now_ms);
            let exempt = outcomes
                .get(index * PER_DRAW + 2)
                .and_then(|outcome| outcome.rows.first())
                .map(|row| integer(row, "known"))
                .transpose()?
                .is_some_and(|known| known > 0);
            Ok(BucketState { taken: !exempt && changes(&outcomes, index * PER_DRAW) == 1, exempt, tat_ms })
        })
        .collect::<Result<Vec<_>, DatabaseError>>()?;
    let also_outcomes = outcomes.split_off((draws.len() * PER_DRAW).min(outcomes.len()));
    Ok((states, also_outcomes))
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

/// Accounts whose stored address is not in today's normal form: those with a non-ASCII
/// character, which before IDNA (UTS #46) mapping could be a domain in U-labels. At most
/// `limit` with an id after `after`, in id order, as (id, email).
pub async fn addresses_to_normalise(
    db: &impl Database,
    after: &str,
    limit: i64,
) -> Result<Vec<(String, String)>, DatabaseError> {
    let outcomes = db
        .batch(vec![Statement::new(
            "SELECT id, email FROM users WHERE email GLOB '*[^ -~]*' AND id > ?1 ORDER BY id LIMIT ?2",
            [after.into(), limit.into()],
        )])
        .await?;
    outcomes
        .first()
        .map(|outcome| &outcome.rows[..])
        .unwrap_or_default()
        .iter()
        .map(|row| Ok((text(row, "id")?, text(row, "email")?)))
        .collect()
}

/// Rewrites one account's address into its normal form, unless another account already has
/// that form (the two were one mailbox all along; an operator decides). Returns whether it did.
pub async fn normalise_address(
    db: &impl Database,
    user_id: &str,
    stored: &str,
    normal: &Email,
    now: DateTime<Utc>,
) -> Result<bool, DatabaseError> {
    let outcomes = db
        .batch(vec![Statement::new(
            "UPDATE users SET email = ?3, updated_at = ?4
             WHERE id = ?1 AND email = ?2 AND NOT EXISTS (SELECT 1 FROM users WHERE email = ?3)",
            [user_id.into(), stored.into(), normal.as_str().into(), now.timestamp().into()],
        )])
        .await?;
    Ok(changes(&outcomes, 0) == 1)
}

/// What one clean-up run deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    pub one_time_tokens: u64,
    pub sessions: u64,
    pub refresh_tokens: u64,
    pub unverified_accounts: u64,
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
    let statements: [(&'static str, Vec<SqlValue>, &mut u64); 4] = [
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

/// A mail the queue consumer gave up on (bodies are not kept: they carry tokens).
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub idempotency_key: &'a str,
    pub kind: &'a str,
    pub recipient: &'a str,
    pub attempts: u32,
    pub reason: &'a str,
}

pub async fn record_dead_letter(
    db: &impl Database,
    letter: &DeadLetter<'_>,
    now: DateTime<Utc>,
) -> Result<(), DatabaseError> {
    db.batch(vec![Statement::new(
        "INSERT INTO mail_dead_letters (idempotency_key, kind, recipient, attempts, reason, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        [
            letter.idempotency_key.into(),
            letter.kind.into(),
            letter.recipient.into(),
            i64::from(letter.attempts).into(),
            letter.reason.into(),
            now.timestamp().into(),
        ],
    )])
    .await
    .map(drop)
}

/// Keeps a mail "sent" with `MAIL_PROVIDER=log` for the dev mailbox; only the newest 50 stay.
pub async fn add_to_dev_mailbox(
    db: &impl Database,
    recipient: &str,
    subject: &str,
    text: &str,
    now: DateTime<Utc>,
) -> Result<(), DatabaseError> {
    db.batch(vec![
        Statement::new(
            "INSERT INTO dev_mailbox (recipient, subject, text, created_at) VALUES (?1, ?2, ?3, ?4)",
            [recipient.into(), subject.into(), text.into(), now.timestamp().into()],
        ),
        Statement::new(
            "DELETE FROM dev_mailbox WHERE id NOT IN (SELECT id FROM dev_mailbox ORDER BY id DESC LIMIT 50)",
            [],
        ),
    ])
    .await
    .map(drop)
}

/// The dev mailbox, newest first.
pub async fn list_dev_mailbox(
    db: &impl Database,
    limit: i64,
) -> Result<Vec<crate::api::pages::MailboxEntry>, DatabaseError> {
    let outcomes = db
        .batch(vec![Statement::new(
            "SELECT recipient, subject, text, created_at FROM dev_mailbox ORDER BY id DESC LIMIT ?1",
            [limit.into()],
        )])
        .await?;
    outcomes
        .first()
        .map(|outcome| outcome.rows.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|row| {
            let sent_at = DateTime::from_timestamp(integer(row, "created_at")?, 0).unwrap_or_default();
            Ok(crate::api::pages::MailboxEntry {
                to: text(row, "recipient")?,
                subject: text(row, "subject")?,
                text: text(row, "text")?,
                sent_at: sent_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            })
        })
        .collect()
}
