-- User shards (API.md v5; src/domain/shard.rs, src/store/routing.rs, docs/STORAGE.md). The same
-- migrations run on DB and on every user shard (USERS_0 … USERS_{N-1}), so one database can
-- still be all of them; in a sharded installation DB's account tables stay empty and the
-- shards' global tables do.

-- In a user shard: the virtual bucket of each account (src/domain/shard.rs), which the
-- resharding command moves by. Rows written before shards have -1 until the reshard (or the
-- cron) files them under their address's bucket (store::file_unbucketed_accounts).
ALTER TABLE users ADD COLUMN bucket INTEGER NOT NULL DEFAULT -1;
CREATE INDEX users_by_bucket ON users (bucket, id);

-- In a user shard: an account being moved to another bucket (src/flows/user_move.rs), 'leaving'
-- in its old bucket's shard and 'arriving' in its new one's; which one a login sees is the
-- move's phase in DB (user_moves). NULL for every other account.
ALTER TABLE users ADD COLUMN move_state TEXT CHECK (move_state IN ('leaving', 'arriving'));

-- In a user shard: buckets a move has touched here, and whether the shard refuses them (moved
-- away, or being moved). Every routed batch starts with the fence below, which fails the whole
-- batch for a refused bucket. `generation` is the fencing token of the move that last claimed
-- the row: a mover only writes a bucket's rows here while its own generation is the row's, and
-- a higher generation (a mover that took the move over) always wins.
CREATE TABLE refused_buckets (
    bucket INTEGER PRIMARY KEY,
    refused_at INTEGER NOT NULL,
    refused INTEGER NOT NULL DEFAULT 1 CHECK (refused IN (0, 1)),
    generation INTEGER NOT NULL DEFAULT 0
);

-- Never holds a row: inserting a bucket number (>= 0) is how the fence fails a batch.
CREATE TABLE bucket_fence (
    bucket INTEGER NOT NULL,
    CONSTRAINT edgeid_bucket_refused CHECK (bucket < 0)
);

-- In DB: which shard holds each bucket (comma-separated shard numbers, bucket by bucket), and
-- its version; every change is one compare-and-swap on the version.
CREATE TABLE bucket_map (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    shards TEXT NOT NULL,
    version INTEGER NOT NULL,
    -- The last fencing token handed to a mover (bucket_moves.generation): only ever grows.
    generations INTEGER NOT NULL DEFAULT 0
);

-- In DB: a bucket being moved between shards (src/flows/resharding.rs), how far the move got
-- (resumable from its phase), and who is working on it until when (one mover at a time).
CREATE TABLE bucket_moves (
    bucket INTEGER PRIMARY KEY,
    from_shard INTEGER NOT NULL,
    to_shard INTEGER NOT NULL,
    phase TEXT NOT NULL CHECK (phase IN ('refusing', 'copying', 'switching', 'cleaning')),
    started_at INTEGER NOT NULL,
    lease TEXT,
    lease_until INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0
);

-- In DB: an account moving to another bucket (its address changes): no address here, only where
-- from and to, and whether the new row has become the account (the one switch a login sees).
CREATE TABLE user_moves (
    user_id TEXT PRIMARY KEY,
    from_bucket INTEGER NOT NULL,
    to_bucket INTEGER NOT NULL,
    phase TEXT NOT NULL CHECK (phase IN ('copying', 'switched')),
    started_at INTEGER NOT NULL
);

-- In DB: the password version a reset gave an account when it cleared its login budgets and
-- known networks, by the same keyed prefix (no address): a login's work after its response
-- (which remembers its network) remembers nothing for a login that proved an older password.
CREATE TABLE budget_resets (
    prefix TEXT PRIMARY KEY,
    password_version INTEGER NOT NULL
) WITHOUT ROWID;
