//! Every SQL statement edgeid runs, over the `Database` port, by aggregate: one file per
//! table group, each with its statements and its row types (docs/STORAGE.md lists every
//! table, who writes it and which invariant each conditional statement protects). The same
//! text runs on D1 in the worker and on SQLite in `cargo test`. Each function that must be
//! atomic is one batch. Callers use `store::name`: the submodules are re-exported here.

mod authorizations;
mod budgets;
mod clients;
mod floor;
mod keys;
mod mail;
mod maintenance;
mod one_time_tokens;
mod resharding;
mod routing;
mod sessions;
mod user_moves;
mod users;

pub use authorizations::*;
pub use budgets::*;
pub use clients::*;
pub use floor::*;
pub use keys::*;
pub use mail::*;
pub use maintenance::*;
pub use one_time_tokens::*;
pub use resharding::*;
pub use routing::*;
pub use sessions::*;
pub use user_moves::*;
pub use users::*;

use crate::ports::{Database, DatabaseError, Row, SqlValue, Statement, StatementOutcome};

/// Answers when the database does.
pub async fn ping(db: &impl Database) -> Result<(), DatabaseError> {
    db.batch(vec![Statement::new("SELECT 1 AS ok", [])]).await.map(drop)
}

/// The least string above every string that starts with `prefix` (whose last character is
/// ASCII, as bucket keys are): `bucket >= prefix AND bucket < prefix_end(prefix)` is a range
/// scan of the primary key.
pub(crate) fn prefix_end(prefix: &str) -> String {
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

/// Runs one statement and says whether it changed exactly one row (a conditional write that
/// won).
pub(crate) async fn changed_one(db: &impl Database, statement: Statement) -> Result<bool, DatabaseError> {
    Ok(changes(&db.batch(vec![statement]).await?, 0) == 1)
}

pub(crate) fn changes(outcomes: &[StatementOutcome], index: usize) -> u64 {
    outcomes.get(index).map_or(0, |outcome| outcome.changes)
}

/// The rows statement `index` of a batch returned (none if it returned none).
pub(crate) fn rows(outcomes: &[StatementOutcome], index: usize) -> &[Row] {
    outcomes.get(index).map(|outcome| &outcome.rows[..]).unwrap_or_default()
}

pub(crate) fn first_row(outcomes: &[StatementOutcome]) -> Option<&Row> {
    outcomes.first().and_then(|outcome| outcome.rows.first())
}

pub(crate) fn text(row: &Row, column: &str) -> Result<String, DatabaseError> {
    match row.get(column) {
        Some(SqlValue::Text(value)) => Ok(value.clone()),
        other => Err(DatabaseError(format!("column {column} is not text: {other:?}"))),
    }
}

pub(crate) fn integer(row: &Row, column: &str) -> Result<i64, DatabaseError> {
    optional_integer(row, column)?.ok_or_else(|| DatabaseError(format!("column {column} is null")))
}

pub(crate) fn optional_integer(row: &Row, column: &str) -> Result<Option<i64>, DatabaseError> {
    match row.get(column) {
        Some(SqlValue::Integer(value)) => Ok(Some(*value)),
        None | Some(SqlValue::Null) => Ok(None),
        Some(other) => Err(DatabaseError(format!("column {column} is not an integer: {other:?}"))),
    }
}

pub(crate) fn optional_text(row: &Row, column: &str) -> Result<Option<String>, DatabaseError> {
    match row.get(column) {
        Some(SqlValue::Text(value)) => Ok(Some(value.clone())),
        None | Some(SqlValue::Null) => Ok(None),
        Some(other) => Err(DatabaseError(format!("column {column} is not text: {other:?}"))),
    }
}
