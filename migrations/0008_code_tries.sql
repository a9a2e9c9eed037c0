-- Short codes (src/domain/short_code.rs) live 15 minutes, far less than their link's 24 hours,
-- and die after five wrong tries. A row written before this migration has no code expiry: its
-- code counts as expired (its link keeps working).
ALTER TABLE one_time_tokens ADD COLUMN code_expires_at INTEGER;
ALTER TABLE one_time_tokens ADD COLUMN code_failures INTEGER NOT NULL DEFAULT 0;
