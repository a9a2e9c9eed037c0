//! Moving one account to another bucket (its address changes; `flows::user_move` runs the
//! steps): the move's record in `DB` (`user_moves`, no address), the `leaving` and `arriving`
//! rows in the shards, and the one switch that decides which of the two is the account.

use super::{changed_one, integer, text};
use crate::domain::email::Email;
use crate::domain::shard::UserBucket;
use crate::ports::{Database, DatabaseError, Statement};

/// Where a move of an account is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserMovePhase {
    /// The new row is being written; the old one is still the account.
    Copying,
    /// The new row is the account; the old one is being deleted.
    Switched,
}

/// An account's move as `DB` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserMove {
    pub user_id: String,
    pub from: UserBucket,
    pub to: UserBucket,
    pub phase: UserMovePhase,
    pub started_at: i64,
}

/// Records a move of `user_id` from `from` to `to`, unless one is under way (then: false).
pub async fn start_user_move(
    global: &impl Database,
    user_id: &str,
    from: UserBucket,
    to: UserBucket,
    now: i64,
) -> Result<bool, DatabaseError> {
    changed_one(
        global,
        Statement::new(
            "INSERT INTO user_moves (user_id, from_bucket, to_bucket, phase, started_at)
             VALUES (?1, ?2, ?3, 'copying', ?4) ON CONFLICT (user_id) DO NOTHING",
            [user_id.into(), i64::from(from.index()).into(), i64::from(to.index()).into(), now.into()],
        ),
    )
    .await
}

/// The move under way of `user_id`, if any.
pub async fn user_move(global: &impl Database, user_id: &str) -> Result<Option<UserMove>, DatabaseError> {
    let outcomes = global
        .batch(vec![Statement::new(
            "SELECT user_id, from_bucket, to_bucket, phase, started_at FROM user_moves WHERE user_id = ?1",
            [user_id.into()],
        )])
        .await?;
    let Some(row) = super::first_row(&outcomes) else { return Ok(None) };
    let bucket = |column: &str| -> Result<UserBucket, DatabaseError> {
        u16::try_from(integer(row, column)?)
            .ok()
            .and_then(UserBucket::new)
            .ok_or_else(|| DatabaseError(format!("a user move's {column} names no bucket")))
    };
    let phase = match text(row, "phase")?.as_str() {
        "switched" => UserMovePhase::Switched,
        _ => UserMovePhase::Copying,
    };
    Ok(Some(UserMove {
        user_id: text(row, "user_id")?,
        from: bucket("from_bucket")?,
        to: bucket("to_bucket")?,
        phase,
        started_at: integer(row, "started_at")?,
    }))
}

/// Every move under way (for the cron to finish those a request left).
pub async fn user_moves(global: &impl Database) -> Result<Vec<String>, DatabaseError> {
    let outcomes = global.batch(vec![Statement::new("SELECT user_id FROM user_moves ORDER BY user_id", [])]).await?;
    super::rows(&outcomes, 0).iter().map(|row| text(row, "user_id")).collect()
}

/// The switch: from here on the new row is the account. True if this call made it.
pub async fn switch_user_move(global: &impl Database, user_id: &str) -> Result<bool, DatabaseError> {
    changed_one(
        global,
        Statement::new(
            "UPDATE user_moves SET phase = 'switched' WHERE user_id = ?1 AND phase = 'copying'",
            [user_id.into()],
        ),
    )
    .await
}

/// Forgets a move, finished or given up.
pub async fn forget_user_move(global: &impl Database, user_id: &str) -> Result<(), DatabaseError> {
    global.batch(vec![Statement::new("DELETE FROM user_moves WHERE user_id = ?1", [user_id.into()])]).await.map(drop)
}

/// Marks the account `leaving` in its old bucket's shard; false if it is not there (or is
/// another move's).
pub async fn mark_leaving(users: &impl Database, user_id: &str, from: UserBucket) -> Result<bool, DatabaseError> {
    let outcomes = users
        .batch(vec![
            Statement::new(
                "UPDATE users SET move_state = 'leaving' WHERE id = ?1 AND bucket = ?2 AND move_state IS NULL",
                [user_id.into(), i64::from(from.index()).into()],
            ),
            Statement::new(
                "SELECT count(*) AS leaving FROM users WHERE id = ?1 AND bucket = ?2 AND move_state = 'leaving'",
                [user_id.into(), i64::from(from.index()).into()],
            ),
        ])
        .await?;
    Ok(outcomes.get(1).and_then(|outcome| outcome.rows.first()).map(|row| integer(row, "leaving")).transpose()?
        == Some(1))
}

/// What writing the `arriving` row found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The row is there (written now, or by an earlier run of this step).
    Arrived,
    /// Another account has the new address.
    AddressTaken,
    /// The account's own row is in this shard (the two buckets are in one shard now).
    SameShard,
}

/// Writes the account's row under its new address and bucket, `arriving`, from the columns of
/// its old row (`old`: what [`leaving_row`] read), with its consents.
pub async fn write_arriving(
    users: &impl Database,
    old: &LeavingRow,
    email: &Email,
    to: UserBucket,
) -> Result<Arrival, DatabaseError> {
    let mut statements = vec![Statement::new(
        "INSERT INTO users (id, email, password_hash, email_verified_at, password_changed_at, created_at, updated_at,
                            locale, password_version, bucket, move_state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'arriving') ON CONFLICT DO NOTHING",
        [
            old.id.as_str().into(),
            email.as_str().into(),
            old.password_hash.as_str().into(),
            old.email_verified_at.into(),
            old.password_changed_at.into(),
            old.created_at.into(),
            old.updated_at.into(),
            old.locale.as_str().into(),
            old.password_version.into(),
            i64::from(to.index()).into(),
        ],
    )];
    statements.extend(old.consents.iter().map(|(client_id, scope, granted_at)| {
        Statement::new(
            "INSERT INTO consents (user_id, client_id, scope, granted_at)
             SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?1 AND move_state = 'arriving')
             ON CONFLICT (user_id, client_id) DO NOTHING",
            [old.id.as_str().into(), client_id.as_str().into(), scope.as_str().into(), (*granted_at).into()],
        )
    }));
    statements.push(Statement::new("SELECT email, move_state FROM users WHERE id = ?1", [old.id.as_str().into()]));
    let outcomes = users.batch(statements).await?;
    let found = outcomes.last().and_then(|outcome| outcome.rows.first());
    Ok(match found {
        Some(row) if super::optional_text(row, "move_state")?.as_deref() == Some("arriving") => {
            match text(row, "email")? == email.as_str() {
                true => Arrival::Arrived,
                false => Arrival::AddressTaken,
            }
        }
        Some(_) => Arrival::SameShard,
        None => Arrival::AddressTaken,
    })
}

/// The columns of a `leaving` account that its new row takes, and its consents.
#[derive(Debug, Clone)]
pub struct LeavingRow {
    pub id: String,
    pub password_hash: String,
    pub email_verified_at: Option<i64>,
    pub password_changed_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub locale: String,
    pub password_version: i64,
    pub consents: Vec<(String, String, i64)>,
}

/// Reads the `leaving` row of `user_id` (`None` once it is gone).
pub async fn leaving_row(users: &impl Database, user_id: &str) -> Result<Option<LeavingRow>, DatabaseError> {
    let outcomes = users
        .batch(vec![
            Statement::new(
                "SELECT id, password_hash, email_verified_at, password_changed_at, created_at, updated_at, locale,
                        password_version
                 FROM users WHERE id = ?1 AND move_state = 'leaving'",
                [user_id.into()],
            ),
            Statement::new(
                "SELECT client_id, scope, granted_at FROM consents WHERE user_id = ?1 ORDER BY client_id",
                [user_id.into()],
            ),
        ])
        .await?;
    let Some(row) = super::first_row(&outcomes) else { return Ok(None) };
    let consents = super::rows(&outcomes, 1)
        .iter()
        .map(|row| Ok((text(row, "client_id")?, text(row, "scope")?, integer(row, "granted_at")?)))
        .collect::<Result<_, DatabaseError>>()?;
    Ok(Some(LeavingRow {
        id: text(row, "id")?,
        password_hash: text(row, "password_hash")?,
        email_verified_at: super::optional_integer(row, "email_verified_at")?,
        password_changed_at: integer(row, "password_changed_at")?,
        created_at: integer(row, "created_at")?,
        updated_at: integer(row, "updated_at")?,
        locale: text(row, "locale")?,
        password_version: integer(row, "password_version")?,
        consents,
    }))
}

/// The new row is the account now: it loses its `arriving` mark.
pub async fn settle_arrived(users: &impl Database, user_id: &str) -> Result<(), DatabaseError> {
    users
        .batch(vec![Statement::new(
            "UPDATE users SET move_state = NULL WHERE id = ?1 AND move_state = 'arriving'",
            [user_id.into()],
        )])
        .await
        .map(drop)
}

/// Deletes the account's row marked `mark` (`leaving` after the switch; `arriving` when a
/// move is given up), with everything that belongs to it there.
pub async fn delete_marked(users: &impl Database, user_id: &str, mark: &str) -> Result<(), DatabaseError> {
    users
        .batch(vec![Statement::new(
            "DELETE FROM users WHERE id = ?1 AND move_state = ?2",
            [user_id.into(), mark.into()],
        )])
        .await
        .map(drop)
}

/// A move given up before its switch: the old row is the account again.
pub async fn clear_leaving(users: &impl Database, user_id: &str) -> Result<(), DatabaseError> {
    users
        .batch(vec![Statement::new(
            "UPDATE users SET move_state = NULL WHERE id = ?1 AND move_state = 'leaving'",
            [user_id.into()],
        )])
        .await
        .map(drop)
}

/// An account's move within one shard: its address and bucket change in place, in one batch
/// (`also_fenced` is the new bucket's fence, so the batch fails unless this shard serves it
/// too); its sessions, tokens and codes end (they name the old bucket). False if the new address
/// is taken or the account is not there.
pub async fn move_in_place(
    users: &impl Database,
    also_fenced: Statement,
    user_id: &str,
    email: &Email,
    to: UserBucket,
    now: i64,
) -> Result<bool, DatabaseError> {
    let id = || -> crate::ports::SqlValue { user_id.into() };
    let outcomes = users
        .batch(vec![
            also_fenced,
            Statement::new(
                "UPDATE users SET email = ?2, bucket = ?3, updated_at = ?4
                 WHERE id = ?1 AND move_state IS NULL AND NOT EXISTS (SELECT 1 FROM users WHERE email = ?2)",
                [id(), email.as_str().into(), i64::from(to.index()).into(), now.into()],
            ),
            Statement::new(
                "DELETE FROM sessions WHERE user_id = ?1 AND EXISTS (SELECT 1 FROM users WHERE id = ?1 AND email = ?2)",
                [id(), email.as_str().into()],
            ),
            Statement::new(
                "DELETE FROM browser_sessions WHERE user_id = ?1 AND EXISTS (SELECT 1 FROM users WHERE id = ?1 AND email = ?2)",
                [id(), email.as_str().into()],
            ),
            Statement::new(
                "DELETE FROM one_time_tokens WHERE user_id = ?1 AND EXISTS (SELECT 1 FROM users WHERE id = ?1 AND email = ?2)",
                [id(), email.as_str().into()],
            ),
            Statement::new(
                "DELETE FROM authorization_codes WHERE user_id = ?1 AND EXISTS (SELECT 1 FROM users WHERE id = ?1 AND email = ?2)",
                [id(), email.as_str().into()],
            ),
        ])
        .await?;
    Ok(super::changes(&outcomes, 1) == 1)
}
