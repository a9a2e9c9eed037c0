-- The OpenID Provider (API.md v2): browser (SSO) sessions, authorization codes, consents, and
-- the grant a code redemption starts (src/store/authorizations.rs, docs/STORAGE.md).

-- A browser's sign-in at the hosted login page. The cookie carries 256 random bits; only their
-- SHA-256 is kept. `id` is public: the `sid` of every token issued in this session.
CREATE TABLE browser_sessions (
    id TEXT PRIMARY KEY,
    cookie_hash TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The last password check (OIDC `auth_time`).
    auth_time INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    -- Set by a logout, a password reset, or a sign-up that replaced an unverified account.
    ended_at INTEGER
);

CREATE INDEX browser_sessions_by_user ON browser_sessions (user_id);

-- A code lives 60 s and is consumed by one conditional UPDATE that also checks every binding
-- (client, redirect URI, PKCE); `session_id` names the grant its redemption started, so a
-- second redemption can revoke it.
CREATE TABLE authorization_codes (
    code_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    browser_session_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    scope TEXT NOT NULL,
    nonce TEXT,
    -- S256 challenge (base64url of SHA-256), or NULL when none was sent.
    code_challenge TEXT,
    auth_time INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    consumed_at INTEGER,
    session_id TEXT
);

CREATE INDEX authorization_codes_by_expiry ON authorization_codes (expires_at);

-- What a user allowed a client, per scope (space-separated, the union of every approval).
CREATE TABLE consents (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- A grant is a session too: the code flow's sessions carry their client, their scope, the
-- browser session they were issued in (its `sid`) and the code that started them, and the
-- nonce of that authorization. v1 logins leave these NULL (the first-party app).
ALTER TABLE sessions ADD COLUMN client_id TEXT;
ALTER TABLE sessions ADD COLUMN scope TEXT;
ALTER TABLE sessions ADD COLUMN browser_session_id TEXT;

CREATE INDEX sessions_by_browser_session ON sessions (browser_session_id);
