//! Moving one account to another bucket, which an address change needs (the bucket is the
//! address's), with no instant at which a login finds the account twice or not at all:
//!
//! - within one shard, one batch changes the address and the bucket in place;
//! - across shards, `DB` records the move (`user_moves`, no address), the old row is marked
//!   `leaving`, the new one written `arriving` (with the consents), and then the move's phase
//!   in `DB` switches to `switched`: that single write is when the new row becomes the
//!   account. Before it a login by the old address finds the `leaving` row and takes it, and a
//!   login by the new one finds the `arriving` row and ignores it; after it, the reverse
//!   ([`as_seen_by_login`]). The new row then loses its mark and the old one is deleted.
//!
//! Sessions, refresh and one-time tokens, codes and browser sessions end with the move (they
//! name the old bucket): the account signs in again with its new address. A move interrupted
//! before its switch is given up, after it finished ([`finish_user_moves`], the cron).

use crate::domain::email::Email;
use crate::domain::shard::UserBucket;
use crate::flows::{Context, Internal};
use crate::ports::{Crypto, Database, HttpClient};
use crate::store::{self, Arrival, UserMovePhase, UserRecord};

#[derive(Debug, thiserror::Error)]
pub enum MoveUserError {
    #[error("another account has that address")]
    AddressTaken,
    #[error("no such account in that bucket")]
    NoSuchAccount,
    #[error("the account is already moving")]
    AlreadyMoving,
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// Moves the account `user_id` (now in `from`) to the bucket of `new_email`, with that address.
pub async fn move_user<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    user_id: &str,
    from: UserBucket,
    new_email: &Email,
) -> Result<(), MoveUserError> {
    let to = UserBucket::of_email(new_email);
    let now = ctx.now.timestamp();
    // A fresh read of the map (not the isolate's copy): which case this is.
    let map = store::bucket_map(ctx.db, ctx.shards.count()).await.map_err(Internal::from)?;
    if map.shard_of(from) == map.shard_of(to) {
        let moved = store::move_in_place(&ctx.users(from), store::fence(to), user_id, new_email, to, now)
            .await
            .map_err(Internal::from)?;
        return match moved {
            true => Ok(()),
            false => Err(MoveUserError::AddressTaken),
        };
    }
    if !store::start_user_move(ctx.db, user_id, from, to, now).await.map_err(Internal::from)? {
        return Err(MoveUserError::AlreadyMoving);
    }
    let (source, destination) = (ctx.users(from), ctx.users(to));
    let (source_ref, destination_ref) = (&source, &destination);
    let given_up = |err: MoveUserError| async move {
        let undone = async {
            store::delete_marked(destination_ref, user_id, "arriving").await?;
            store::clear_leaving(source_ref, user_id).await?;
            store::forget_user_move(ctx.db, user_id).await
        };
        match undone.await {
            Ok(()) => err,
            Err(undo) => {
                log::error!("giving up the move of account {user_id} failed ({undo}); the cron finishes it");
                err
            }
        }
    };
    if !store::mark_leaving(&source, user_id, from).await.map_err(Internal::from)? {
        return Err(given_up(MoveUserError::NoSuchAccount).await);
    }
    let Some(old) = store::leaving_row(&source, user_id).await.map_err(Internal::from)? else {
        return Err(given_up(MoveUserError::NoSuchAccount).await);
    };
    match store::write_arriving(&destination, &old, new_email, to).await.map_err(Internal::from)? {
        Arrival::Arrived => {}
        Arrival::AddressTaken => return Err(given_up(MoveUserError::AddressTaken).await),
        // The map changed under the move: both buckets are in one shard now. Try again.
        Arrival::SameShard => {
            return Err(
                given_up(MoveUserError::Internal(Internal::Database(crate::ports::DatabaseError::moving(to)))).await
            )
        }
    }
    if !store::switch_user_move(ctx.db, user_id).await.map_err(Internal::from)? {
        // The cron gave the move up as stale in the meantime (it takes a request an instant).
        store::delete_marked(&destination, user_id, "arriving").await.map_err(Internal::from)?;
        return Err(Internal::Database(crate::ports::DatabaseError::moving(to)).into());
    }
    finish_switched(ctx, user_id, from, to).await?;
    log::info!("account {user_id} moved from {from} to {to}");
    Ok(())
}

/// After the switch: the new row loses its mark, the old row goes, the record goes.
async fn finish_switched<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    user_id: &str,
    from: UserBucket,
    to: UserBucket,
) -> Result<(), Internal> {
    store::settle_arrived(&ctx.users(to), user_id).await?;
    store::delete_marked(&ctx.users(from), user_id, "leaving").await?;
    store::forget_user_move(ctx.db, user_id).await?;
    Ok(())
}

/// The account a login by address found, as the move's switch says: a `leaving` row is the
/// account until the switch, an `arriving` one from the switch on (one read of `DB`, only for a
/// row that carries a mark).
pub async fn as_seen_by_login<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    found: Option<UserRecord>,
) -> Result<Option<UserRecord>, Internal> {
    let Some(user) = found else { return Ok(None) };
    let Some(mark) = user.move_state.as_deref() else { return Ok(Some(user)) };
    let switched =
        store::user_move(ctx.db, &user.id).await?.is_some_and(|moving| moving.phase == UserMovePhase::Switched);
    let visible = match mark {
        // No record: a move given up (the mark is cleared next) — still the account.
        "leaving" => !switched,
        // No record with a mark left: a move given up, or one whose record went after its
        // mark was cleared (then this row no longer carries it).
        _ => switched,
    };
    Ok(visible.then_some(user))
}

/// How long a move may stay before its switch before the cron takes it for one a request left.
pub const STALE_MOVE_SECONDS: i64 = 600;

/// Finishes or gives up the moves that a request left (it failed between two steps): one
/// switched goes on to its end; one not switched after [`STALE_MOVE_SECONDS`] is given up (a
/// request still working on it then finds its switch refused). Run by the cron.
pub async fn finish_user_moves<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
) -> Result<usize, Internal> {
    let mut finished = 0;
    for user_id in store::user_moves(ctx.db).await? {
        let Some(moving) = store::user_move(ctx.db, &user_id).await? else { continue };
        match moving.phase {
            UserMovePhase::Switched => finish_switched(ctx, &user_id, moving.from, moving.to).await?,
            UserMovePhase::Copying if ctx.now.timestamp() - moving.started_at < STALE_MOVE_SECONDS => continue,
            UserMovePhase::Copying => {
                store::delete_marked(&ctx.users(moving.to), &user_id, "arriving").await?;
                store::clear_leaving(&ctx.users(moving.from), &user_id).await?;
                store::forget_user_move(ctx.db, &user_id).await?;
            }
        }
        finished += 1;
    }
    Ok(finished)
}
