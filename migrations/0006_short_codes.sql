-- Short verification codes (src/domain/short_code.rs): the HMAC of address and code, beside
-- the link's token in the same row, so either consumes it.
ALTER TABLE one_time_tokens ADD COLUMN code_hash TEXT;
CREATE INDEX one_time_tokens_by_code ON one_time_tokens (code_hash) WHERE code_hash IS NOT NULL;
