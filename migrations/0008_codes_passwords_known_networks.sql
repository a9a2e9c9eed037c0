-- Short codes (src/domain/short_code.rs) live 15 minutes, far less than their link's 24 hours,
-- and die after five wrong tries. A row written before this migration has no code expiry: its
-- code counts as expired (its link keeps working).
ALTER TABLE one_time_tokens ADD COLUMN code_expires_at INTEGER;
ALTER TABLE one_time_tokens ADD COLUMN code_failures INTEGER NOT NULL DEFAULT 0;

-- Which password an account has (src/store/sessions.rs, start_session): a reset, or a sign-up that
-- takes over an unverified account, adds one; a re-hash of the same password does not. A
-- login's session starts only while the version it read is still the account's.
ALTER TABLE users ADD COLUMN password_version INTEGER NOT NULL DEFAULT 0;

-- Networks an account signed in from (src/store/sessions.rs, start_session), by the same keyed name as
-- the account's per-network login budget: the account-wide ceiling on failed logins does not
-- apply to them, so strangers guessing from elsewhere cannot lock the owner out of their own
-- networks. Kept 90 days after the last sign-in there; a password reset forgets them.
CREATE TABLE known_networks (
    key TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
