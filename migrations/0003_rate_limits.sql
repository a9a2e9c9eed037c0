-- Rate-limit budgets (src/domain/rate_limit.rs): one row per bucket, holding the GCRA
-- theoretical arrival time in Unix milliseconds. A row whose tat is in the past is the same as
-- no row, so the hourly cron deletes those.
CREATE TABLE rate_limits (
    -- "<kind>:<first 16 bytes of SHA-256 of what is counted>": no address or email in the clear.
    bucket TEXT PRIMARY KEY,
    tat INTEGER NOT NULL
) WITHOUT ROWID;
