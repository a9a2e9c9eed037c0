-- Registered clients (relying parties), RFC 7591 (src/domain/client.rs, src/store/clients.rs).
-- The secret of a confidential client is shown once, at registration, and kept only as its
-- SHA-256 (256 random bits: no slow hash needed); a public client has none. URI lists are JSON
-- arrays of the exact strings registered.
CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    client_secret_hash TEXT,
    client_name TEXT,
    redirect_uris TEXT NOT NULL,
    post_logout_redirect_uris TEXT NOT NULL,
    grant_types TEXT NOT NULL,
    scope TEXT NOT NULL,
    token_endpoint_auth_method TEXT NOT NULL
        CHECK (token_endpoint_auth_method IN ('client_secret_basic', 'client_secret_post', 'none')),
    id_token_signed_response_alg TEXT NOT NULL CHECK (id_token_signed_response_alg IN ('RS256', 'ES256', 'EdDSA')),
    skip_consent INTEGER NOT NULL DEFAULT 0,
    -- Registered with CLIENT_REGISTRATION_TOKEN (an operator's client), not by anyone.
    registered_with_token INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
