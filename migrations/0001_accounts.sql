-- edgeid accounts, one-time tokens and sessions. Timestamps are Unix seconds (UTC).
-- Secrets (one-time and refresh tokens) are stored only as hex SHA-256 hashes.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    -- Normalised: trimmed, NFC, lower-cased (see src/domain/email.rs).
    email TEXT NOT NULL UNIQUE,
    -- Argon2id PHC string.
    password_hash TEXT NOT NULL,
    email_verified_at INTEGER,
    password_changed_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE one_time_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    -- Set once, by the one request that consumes the token (or supersedes it).
    consumed_at INTEGER,
    -- A random nonce of the consuming request, or 'superseded': lets the statements of the
    -- same batch find the row this request, and only this request, consumed.
    consumed_by TEXT
);

CREATE INDEX one_time_tokens_by_user ON one_time_tokens (user_id, purpose);

-- A session is one login; its refresh tokens form one family.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    auth_time INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    -- Absolute end of the session, however often its refresh token is rotated.
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    -- Rotation: when this token was exchanged, and the hash of its successor.
    consumed_at INTEGER,
    replaced_by TEXT,
    -- The successor's plaintext, sealed (XChaCha20-Poly1305) under a key derived from this
    -- token's own plaintext: a client retrying within the grace window gets the same successor,
    -- and nobody without this token can open it.
    successor_sealed TEXT,
    revoked_at INTEGER
);

CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);
CREATE INDEX refresh_tokens_by_user ON refresh_tokens (user_id);
