-- Keys that survive a compromise (src/keyring.rs, README "Signing keys").
--
-- The bootstrap key of ES256 and EdDSA is derived from KEY_ENCRYPTION_KEY and a random salt
-- kept here, one per algorithm: racing first requests read the same salt and derive the same
-- key, while the key-encryption key alone yields no signing key. A salt yields one key, once:
-- the batch that inserts the key records its kid here, an insert needs a salt that has none,
-- and a bootstrap that finds the salt's key retired, compromised, deleted or unopenable
-- replaces the salt (one conditional update) before deriving again. So a retired key never
-- comes back.
CREATE TABLE signing_key_salts (
    alg TEXT PRIMARY KEY CHECK (alg IN ('ES256', 'EdDSA')),
    -- 32 random bytes, base64url.
    salt TEXT NOT NULL,
    -- The key this salt yielded; NULL until then.
    kid TEXT,
    created_at INTEGER NOT NULL
);

-- Set by the operator to retire a compromised key at once (README "Signing keys"): it leaves
-- the JWKS, never signs again, and /userinfo refuses its tokens from that instant. Any value
-- but NULL counts.
ALTER TABLE signing_keys ADD COLUMN compromised_at INTEGER;

-- Bootstrap keys made before this migration were a function of KEY_ENCRYPTION_KEY alone:
-- make every key still signing since its publication (a bootstrap key) due, so that the next
-- cron run publishes a random successor, which signs a publication lead later.
UPDATE signing_keys SET activates_at = 0 WHERE activates_at = published_at AND retired_at IS NULL;
