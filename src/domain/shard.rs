//! Which user shard holds what: every account lives in one of `USER_BUCKETS` virtual buckets,
//! chosen from a hash of its normalised email, and a bucket map in `DB` says which shard
//! (`USERS_0` … `USERS_{N-1}`) holds each bucket. Growing the number of shards moves whole
//! buckets; nobody is rehashed. Everything issued for an account (its sessions' ids, refresh
//! and one-time tokens, authorization codes, the browser session's cookie) starts with its
//! bucket, so a request finds the shard from what it presents, without reading `DB`.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::domain::email::Email;

/// The number of virtual buckets. Fixed for the life of an installation: it is in every token.
pub const USER_BUCKETS: u16 = 1024;

/// Characters of the bucket prefix of identifiers and tokens: three lowercase hex digits.
pub const BUCKET_PREFIX_CHARS: usize = 3;

/// The most user shards a map may name (a map lists one shard per bucket).
pub const MAX_USER_SHARDS: usize = USER_BUCKETS as usize;

/// A virtual bucket of accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserBucket(u16);

impl UserBucket {
    /// The bucket of an account: the first 32 bits of SHA-256 over a domain tag and the
    /// normalised address, modulo [`USER_BUCKETS`]. Not keyed: it must never change, whatever
    /// keys rotate (a keyed hash would only stop someone from choosing addresses that land in
    /// one bucket, which sign-up's budgets already bound).
    pub fn of_email(email: &Email) -> UserBucket {
        let digest = Sha256::new().chain_update(b"edgeid user bucket v1\0").chain_update(email.as_str()).finalize();
        let head = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        UserBucket((head % u32::from(USER_BUCKETS)) as u16)
    }

    /// The bucket numbered `index`, if there is one.
    pub fn new(index: u16) -> Option<UserBucket> {
        (index < USER_BUCKETS).then_some(UserBucket(index))
    }

    pub fn index(self) -> u16 {
        self.0
    }

    /// Every bucket, in order.
    pub fn all() -> impl Iterator<Item = UserBucket> {
        (0..USER_BUCKETS).map(UserBucket)
    }

    /// The prefix that identifiers and tokens of this bucket start with.
    pub fn prefix(self) -> String {
        format!("{:03x}", self.0)
    }

    /// The bucket an identifier or token was issued in, from its prefix; `None` for anything
    /// that does not start with one (a forgery, or a token issued before shards).
    pub fn of_issued(issued: &str) -> Option<UserBucket> {
        let prefix = issued.get(..BUCKET_PREFIX_CHARS)?;
        if !prefix.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        u16::from_str_radix(prefix, 16).ok().and_then(UserBucket::new)
    }
}

impl fmt::Display for UserBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bucket {}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketMapError {
    #[error("the bucket map lists {0} buckets, not {USER_BUCKETS}")]
    WrongLength(usize),
    #[error("the bucket map names shard {0:?}, which is not a shard number")]
    NotANumber(String),
    #[error("the bucket map names shard {named}, but only {available} user shards are bound")]
    UnboundShard { named: usize, available: usize },
    #[error("{0} user shards cannot be: between 1 and {MAX_USER_SHARDS}")]
    ShardCount(usize),
}

/// Which shard holds each bucket, as `DB` records it (`bucket_map`), with its version (every
/// change is one compare-and-swap on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketMap {
    shards: Vec<u16>,
    pub version: i64,
}

impl BucketMap {
    /// The map of a new installation with `shards` user shards: bucket `b` in shard
    /// `b mod shards`. Growing to N shards moves each bucket to `b mod N` (see `resharding`),
    /// so a fully grown installation is again this layout for its new N.
    pub fn striped(shards: usize) -> Result<BucketMap, BucketMapError> {
        if shards == 0 || shards > MAX_USER_SHARDS {
            return Err(BucketMapError::ShardCount(shards));
        }
        Ok(BucketMap { shards: UserBucket::all().map(|bucket| bucket.0 % shards as u16).collect(), version: 0 })
    }

    /// Reads the stored form (shard numbers, comma-separated, bucket by bucket), checking each
    /// named shard is among the `available` bound ones.
    pub fn parse(stored: &str, version: i64, available: usize) -> Result<BucketMap, BucketMapError> {
        let shards = stored
            .split(',')
            .map(|part| part.parse::<u16>().map_err(|_| BucketMapError::NotANumber(part.chars().take(8).collect())))
            .collect::<Result<Vec<u16>, _>>()?;
        if shards.len() != usize::from(USER_BUCKETS) {
            return Err(BucketMapError::WrongLength(shards.len()));
        }
        if let Some(named) = shards.iter().map(|shard| usize::from(*shard)).find(|shard| *shard >= available) {
            return Err(BucketMapError::UnboundShard { named, available });
        }
        Ok(BucketMap { shards, version })
    }

    /// The stored form.
    pub fn to_stored(&self) -> String {
        self.shards.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
    }

    pub fn shard_of(&self, bucket: UserBucket) -> usize {
        usize::from(self.shards[usize::from(bucket.0)])
    }

    /// The same map with `bucket` in `shard`.
    pub fn with(&self, bucket: UserBucket, shard: usize) -> BucketMap {
        let mut shards = self.shards.clone();
        shards[usize::from(bucket.0)] = shard as u16;
        BucketMap { shards, version: self.version }
    }

    /// The buckets `shard` holds.
    pub fn buckets_of(&self, shard: usize) -> impl Iterator<Item = UserBucket> + '_ {
        UserBucket::all().filter(move |bucket| self.shard_of(*bucket) == shard)
    }

    /// The highest shard number the map names, plus one.
    pub fn shards_named(&self) -> usize {
        self.shards.iter().map(|shard| usize::from(*shard) + 1).max().unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(n: usize) -> Email {
        Email::parse(&format!("user{n}@example{}.com", n % 97)).unwrap()
    }

    #[test]
    fn a_bucket_never_changes_for_an_address() {
        // Pinned: these values are in every token ever issued; changing the hash is a migration.
        let pinned = [("ada@example.com", 0x111), ("bob@example.org", 0x023), ("zoë@bücher.de", 0x135)];
        for (address, bucket) in pinned {
            let email = Email::parse(address).unwrap();
            assert_eq!(UserBucket::of_email(&email).index(), bucket, "{address}");
            assert_eq!(UserBucket::of_email(&Email::parse(&address.to_uppercase()).unwrap()).index(), bucket);
        }
    }

    #[test]
    fn sixty_four_thousand_addresses_spread_evenly_over_4_and_16_shards() {
        for shards in [4usize, 16] {
            let map = BucketMap::striped(shards).unwrap();
            let mut counts = vec![0usize; shards];
            let total = 64 * 1024;
            for n in 0..total {
                counts[map.shard_of(UserBucket::of_email(&email(n)))] += 1;
            }
            let share = total / shards;
            for (shard, count) in counts.iter().enumerate() {
                let off = (*count as f64 - share as f64).abs() / share as f64;
                assert!(off <= 0.05, "{shards} shards: shard {shard} holds {count}, {:.1} % from {share}", off * 100.0);
            }
        }
    }

    #[test]
    fn the_prefix_round_trips_and_nothing_else_parses() {
        for bucket in UserBucket::all() {
            let issued = format!("{}rest-of-the-token", bucket.prefix());
            assert_eq!(UserBucket::of_issued(&issued), Some(bucket));
        }
        for bad in ["", "3f", "400abc", "fffabc", "3FAabc", "g00abc", "-01abc", "é00", "+1a"] {
            assert_eq!(UserBucket::of_issued(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_stored_map_round_trips_and_is_checked_against_the_bound_shards() {
        let map = BucketMap::striped(4).unwrap().with(UserBucket::new(5).unwrap(), 6);
        let stored = map.to_stored();
        assert_eq!(BucketMap::parse(&stored, 3, 8).unwrap(), BucketMap { version: 3, ..map.clone() });
        assert_eq!(BucketMap::parse(&stored, 3, 4), Err(BucketMapError::UnboundShard { named: 6, available: 4 }));
        assert_eq!(BucketMap::parse("0,1", 0, 4), Err(BucketMapError::WrongLength(2)));
        assert!(matches!(BucketMap::parse(&stored.replace("6", "x"), 0, 8), Err(BucketMapError::NotANumber(_))));
        assert_eq!(map.shards_named(), 7);
        assert_eq!(BucketMap::striped(0), Err(BucketMapError::ShardCount(0)));
        assert_eq!(map.buckets_of(6).collect::<Vec<_>>(), vec![UserBucket::new(5).unwrap()]);
    }

    #[test]
    fn growing_the_stripes_moves_buckets_but_rehashes_nobody() {
        let four = BucketMap::striped(4).unwrap();
        let eight = BucketMap::striped(8).unwrap();
        let moved = UserBucket::all().filter(|bucket| four.shard_of(*bucket) != eight.shard_of(*bucket)).count();
        assert_eq!(moved, usize::from(USER_BUCKETS) / 2);
        for n in 0..1000 {
            let bucket = UserBucket::of_email(&email(n));
            assert!(eight.shard_of(bucket) % 4 == four.shard_of(bucket));
        }
    }
}
