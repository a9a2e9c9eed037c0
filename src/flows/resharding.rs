//! Growing the number of user shards while the worker serves: after an operator binds more
//! shards (`USERS_4`, …) and deploys, [`reshard`] moves buckets, a few per call, until the map
//! is striped over every bound shard (bucket `b` in shard `b mod N`). Each bucket moves in four
//! phases recorded in `DB` (`bucket_moves`), each of which can run again from its start:
//!
//! 1. **refusing**: the source and the destination both refuse the bucket (the fence of every
//!    routed batch), so from here on nobody reads or writes it; its requests get `503` and
//!    their clients try again a second later;
//! 2. **copying**: the destination's rows of the bucket are deleted (a copy an interruption left
//!    half done) and the accounts with everything of theirs are copied, a page at a time;
//! 3. **switching**: the destination serves the bucket, then the map names it (one
//!    compare-and-swap in `DB`); an isolate whose map is older is refused by the source and
//!    reads the map anew;
//! 4. **cleaning**: the source's rows of the bucket are deleted (it keeps refusing the bucket).
//!
//! At no instant do two shards serve a bucket, so no login finds an account twice; an account is
//! unreachable only while its bucket is refused by both, and then its requests say so (`503`)
//! rather than "no such account". A mover holds a lease on each move; another takes over a move
//! whose lease ran out, from its recorded phase.

use crate::domain::shard::{BucketMap, UserBucket};
use crate::flows::{Context, Internal};
use crate::ports::{Crypto, Database, DatabaseError, HttpClient};
use crate::store::{self, BucketMove, MovePhase};

/// How long a mover's lease on a move lasts without being renewed.
pub const LEASE_SECONDS: i64 = 120;

/// What a call to [`reshard`] found and did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// The shards bound, which the map is being striped over.
    pub shards: usize,
    /// Buckets this call moved to the end.
    pub moved: usize,
    /// Buckets not yet where the striping puts them (after this call).
    pub buckets_to_move: usize,
    /// Moves under way that another mover holds.
    pub held_elsewhere: usize,
}

/// Moves at most `max_moves` buckets toward the striping over every bound shard, finishing moves
/// an earlier call left (its own, or any whose lease ran out) first. `lease` names this mover.
pub async fn reshard<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    lease: &str,
    max_moves: usize,
) -> Result<Progress, Internal> {
    let shards = ctx.shards.count();
    let target = BucketMap::striped(shards).map_err(|err| DatabaseError(err.to_string()))?;
    let now = ctx.now.timestamp();
    // Accounts from before shards are filed under their address's bucket first: a move copies
    // by that column, and one left at -1 would stay behind where no login looks.
    for (index, shard) in ctx.shards.all().enumerate() {
        loop {
            let (filed, left) = store::file_unbucketed_accounts(shard, 200).await?;
            if left > 0 {
                return Err(Internal::Database(DatabaseError(format!(
                    "shard {index} holds {left} accounts whose stored address is not in today's normal form; \
                     the cron's normalisation files them (on one shard) before any bucket can move"
                ))));
            }
            if filed < 200 {
                break;
            }
        }
    }
    let mut moved = 0;
    let mut held_elsewhere = 0;
    for under_way in store::bucket_moves(ctx.db).await? {
        if moved == max_moves {
            break;
        }
        match store::lease_bucket_move(ctx.db, under_way.bucket, lease, now, now + LEASE_SECONDS).await? {
            Some(generation) => {
                finish(ctx, &under_way, lease, generation).await?;
                moved += 1;
            }
            None => held_elsewhere += 1,
        }
    }
    let mut map = store::bucket_map(ctx.db, shards).await?;
    for bucket in UserBucket::all() {
        if moved == max_moves {
            break;
        }
        let (from, to) = (map.shard_of(bucket), target.shard_of(bucket));
        if from == to {
            continue;
        }
        let Some(generation) =
            store::start_bucket_move(ctx.db, bucket, from, to, lease, now, now + LEASE_SECONDS).await?
        else {
            continue; // Another mover's, counted above.
        };
        let started = BucketMove {
            bucket,
            from_shard: from,
            to_shard: to,
            phase: MovePhase::Refusing,
            lease: Some(lease.to_owned()),
            lease_until: now + LEASE_SECONDS,
        };
        finish(ctx, &started, lease, generation).await?;
        moved += 1;
        map = store::bucket_map(ctx.db, shards).await?;
    }
    let map = store::bucket_map(ctx.db, shards).await?;
    let buckets_to_move = UserBucket::all().filter(|bucket| map.shard_of(*bucket) != target.shard_of(*bucket)).count();
    Ok(Progress { shards, moved, buckets_to_move, held_elsewhere })
}

/// Runs a leased move from its recorded phase to its end. `generation` is this mover's fencing
/// token: it first claims the bucket's rows in both shards with it, and every step there is
/// conditional on it still holding them, so that a mover whose lease ran out (and who may
/// still be running, slowly) changes nothing once another has taken the move over.
async fn finish<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    under_way: &BucketMove,
    lease: &str,
    generation: i64,
) -> Result<(), Internal> {
    let shard = |index: usize| {
        ctx.shards.shard(index).ok_or_else(|| {
            Internal::Database(DatabaseError(format!(
                "{} is moving between shards {} and {}, and shard {index} is not bound",
                under_way.bucket, under_way.from_shard, under_way.to_shard
            )))
        })
    };
    let (source, destination) = (shard(under_way.from_shard)?, shard(under_way.to_shard)?);
    let bucket = under_way.bucket;
    let now = ctx.now.timestamp();
    let lost = || Internal::Database(DatabaseError(format!("the lease on the move of {bucket} was taken over")));
    let mut phase = under_way.phase;
    // A move taken over past its refusals: claim what is there (refused or served as it is).
    if matches!(phase, MovePhase::Switching | MovePhase::Cleaning) {
        store::claim_bucket(source, bucket, generation).await?;
        store::claim_bucket(destination, bucket, generation).await?;
    }
    loop {
        match phase {
            MovePhase::Refusing => {
                store::refuse_bucket(source, bucket, generation, now).await?;
                store::refuse_bucket(destination, bucket, generation, now).await?;
                phase = MovePhase::Copying;
            }
            MovePhase::Copying => {
                // Claimed again first (a move taken over before its copy was done: nobody serves
                // the bucket then, so both shards may refuse it under this token).
                store::refuse_bucket(source, bucket, generation, now).await?;
                store::refuse_bucket(destination, bucket, generation, now).await?;
                while store::delete_bucket_page(destination, bucket, generation).await? > 0 {}
                for table in store::COPIED_TABLES {
                    let mut after = 0;
                    while let Some(next) =
                        store::copy_bucket_page(source, destination, table, bucket, generation, after).await?
                    {
                        after = next;
                    }
                }
                phase = MovePhase::Switching;
            }
            MovePhase::Switching => {
                // (Served already if an earlier holder got this far: this token claimed it.)
                if !store::serve_bucket(destination, bucket, generation).await? {
                    return Err(lost());
                }
                point_map_at(ctx, bucket, under_way.from_shard, under_way.to_shard).await?;
                phase = MovePhase::Cleaning;
            }
            MovePhase::Cleaning => {
                while store::delete_bucket_page(source, bucket, generation).await? > 0 {}
                if !store::finish_bucket_move(ctx.db, bucket, lease).await? {
                    return Err(lost());
                }
                log::info!("{bucket} moved from shard {} to shard {}", under_way.from_shard, under_way.to_shard);
                return Ok(());
            }
        }
        if !store::set_bucket_move_phase(ctx.db, bucket, lease, phase).await? {
            return Err(lost());
        }
    }
}

/// Makes the map name `to` for `bucket` (if it still names `from`; if it names `to` already, an
/// earlier run of this phase got that far), retrying when another bucket's switch changed the
/// map in between.
async fn point_map_at<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    bucket: UserBucket,
    from: usize,
    to: usize,
) -> Result<(), Internal> {
    for _ in 0..10 {
        let map = store::bucket_map(ctx.db, ctx.shards.count()).await?;
        match map.shard_of(bucket) {
            shard if shard == to => return Ok(()),
            shard if shard == from => {
                if store::swap_bucket_map(ctx.db, &map, &map.with(bucket, to)).await? {
                    return Ok(());
                }
            }
            shard => {
                return Err(Internal::Database(DatabaseError(format!(
                    "the map puts {bucket} in shard {shard}, neither end of its move"
                ))))
            }
        }
    }
    Err(Internal::Database(DatabaseError(format!("the map kept changing while {bucket} switched"))))
}

/// One shard as the check after a reshard sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShardCensus {
    pub shard: usize,
    /// Buckets the map gives it.
    pub buckets: usize,
    pub accounts: i64,
    /// Buckets it refuses (moved away, or moving).
    pub refused: usize,
}

/// The check after a reshard: every account in exactly one shard, the one the map gives its
/// bucket, and no move under way.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub shards: Vec<ShardCensus>,
    pub accounts: i64,
    /// Buckets whose accounts are in a shard the map does not give them (or in two shards).
    pub misplaced_buckets: Vec<u16>,
    pub moves_under_way: usize,
    pub ok: bool,
}

/// Counts every shard's accounts by bucket and compares with the map.
pub async fn check<D: Database, E: Crypto, H: HttpClient>(ctx: &Context<'_, D, E, H>) -> Result<Check, Internal> {
    let map = store::bucket_map(ctx.db, ctx.shards.count()).await?;
    let moves_under_way = store::bucket_moves(ctx.db).await?.len();
    let mut shards = Vec::new();
    let mut misplaced = Vec::new();
    let mut accounts = 0;
    for (index, shard) in ctx.shards.all().enumerate() {
        let (by_bucket, refused) = store::shard_census(shard).await?;
        let held: i64 = by_bucket.iter().map(|(_, count)| count).sum();
        accounts += held;
        misplaced.extend(by_bucket.iter().filter(|(bucket, _)| map.shard_of(*bucket) != index).map(|(b, _)| b.index()));
        // A shard that holds a bucket, or that the map names for it, must also serve it.
        misplaced.extend(by_bucket.iter().filter(|(bucket, _)| refused.contains(bucket)).map(|(b, _)| b.index()));
        misplaced.extend(refused.iter().filter(|bucket| map.shard_of(**bucket) == index).map(|b| b.index()));
        shards.push(ShardCensus {
            shard: index,
            buckets: map.buckets_of(index).count(),
            accounts: held,
            refused: refused.len(),
        });
    }
    misplaced.sort_unstable();
    misplaced.dedup();
    let ok = misplaced.is_empty() && moves_under_way == 0;
    Ok(Check { shards, accounts, misplaced_buckets: misplaced, moves_under_way, ok })
}
