-- Short codes (src/domain/short_code.rs) live 15 minutes, far less than their link's 24 hours,
-- and die after five wrong tries. A row written before this migration has no code expiry: its
-- code counts as expired (its link keeps working).
ALTER TABLE one_time_tokens ADD COLUMN code_expires_at INTEGER;
ALTER TABLE one_time_tokens ADD COLUMN code_failures INTEGER NOT NULL DEFAULT 0;

-- Which password an account has (src/store.rs, start_session): a reset, or a sign-up that
-- takes over an unverified account, adds one; a re-hash of the same password does not. A
-- login's session starts only while the version it read is still the account's.
ALTER TABLE users ADD COLUMN password_version INTEGER NOT NULL DEFAULT 0;
