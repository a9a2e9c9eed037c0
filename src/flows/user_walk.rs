//! A walk over every account of every shard, a page at a time, that lists each account exactly
//! once however the pages fall (the admin API lists users with it). The order is (bucket, id):
//! a bucket's accounts are all in one shard, so a cursor of the last (bucket, id) listed is a
//! place in the whole installation, not in one shard, and stays right while buckets move
//! between pages. Within a page every shard is asked at once for its accounts after the cursor
//! (leaving out buckets it refuses), and the answers are merged; the page is trusted only if
//! the bucket map did not change while it was read and no bucket it spans was between shards
//! (otherwise: `503`, and the same cursor works a moment later).

use crate::domain::shard::USER_BUCKETS;
use crate::flows::{Context, Internal};
use crate::ports::{Crypto, Database, DatabaseError, HttpClient};
use crate::store::{self, UserSummary};

/// The most accounts a page lists.
pub const MAX_PAGE: usize = 200;

/// One page, and the cursor of the next (`None`: that was the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPage {
    pub users: Vec<UserSummary>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("the cursor is not one this walk gave out")]
    InvalidCursor,
    #[error("the page size must be 1 to {MAX_PAGE}")]
    InvalidLimit,
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// Where a walk is: after this bucket's account with this id (`None`: at the start).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    bucket: i64,
    id: String,
}

/// The cursor of a position: the bucket as three hex digits, a dot, the id.
fn cursor_of(position: &Position) -> String {
    format!("{:03x}.{}", position.bucket, position.id)
}

fn parse_cursor(cursor: &str) -> Option<Position> {
    let (bucket, id) = cursor.split_once('.')?;
    let well_formed = bucket.len() == 3
        && !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    let bucket = i64::from_str_radix(bucket, 16).ok().filter(|bucket| *bucket < i64::from(USER_BUCKETS))?;
    well_formed.then(|| Position { bucket, id: id.to_owned() })
}

/// The page of up to `limit` accounts after `cursor` (from the start without one).
pub async fn walk_users<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    cursor: Option<&str>,
    limit: usize,
) -> Result<UserPage, WalkError> {
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(WalkError::InvalidLimit);
    }
    let after = match cursor {
        Some(cursor) => parse_cursor(cursor).ok_or(WalkError::InvalidCursor)?,
        None => Position { bucket: -1, id: String::new() },
    };
    let before = store::routing_state(ctx.db).await.map_err(Internal::from)?;
    let pages = futures_util::future::join_all(
        ctx.shards.all().map(|shard| store::users_after(shard, after.bucket, &after.id, limit as i64)),
    )
    .await;
    let after_reading = store::routing_state(ctx.db).await.map_err(Internal::from)?;
    let mut users = Vec::new();
    for page in pages {
        users.extend(page.map_err(Internal::from)?);
    }
    users.sort_by(|a, b| (a.bucket, &a.id).cmp(&(b.bucket, &b.id)));
    users.truncate(limit);
    let full = users.len() == limit;
    // The buckets this page answers for: from the cursor's to the last listed (or to the end).
    let last_bucket = match (full, users.last()) {
        (true, Some(last)) => last.bucket,
        _ => i64::from(USER_BUCKETS) - 1,
    };
    let (version, moving) = &before;
    let spanned_move =
        moving.iter().chain(&after_reading.1).any(|bucket| (after.bucket..=last_bucket).contains(bucket));
    if *version != after_reading.0 || spanned_move {
        return Err(Internal::Database(DatabaseError::moving_buckets()).into());
    }
    let next_cursor =
        users.last().filter(|_| full).map(|last| cursor_of(&Position { bucket: last.bucket, id: last.id.clone() }));
    Ok(UserPage { users, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_nothing_else_parses() {
        let position = Position { bucket: 0x2a7, id: "AbC-d_9".to_owned() };
        assert_eq!(parse_cursor(&cursor_of(&position)), Some(position));
        for bad in [
            "",
            ".",
            "2a7.",
            "2a7",
            "400.abc",
            "2a7.a b",
            "2a7.é",
            "02a7.abc",
            "zzz.abc",
            &format!("000.{}", "a".repeat(65)),
        ] {
            assert_eq!(parse_cursor(bad), None, "{bad:?}");
        }
    }
}
