-- Signing keys, managed by the worker itself (src/keyring.rs). Timestamps are Unix seconds.
CREATE TABLE signing_keys (
    -- RFC 7638 thumbprint of the public key.
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL CHECK (alg IN ('ES256', 'EdDSA', 'RS256')),
    -- The public JWK as published in the JWKS.
    public_jwk TEXT NOT NULL,
    -- The private JWK sealed with XChaCha20-Poly1305 under KEY_ENCRYPTION_KEY, bound to kid.
    private_sealed TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- In the JWKS from here on...
    published_at INTEGER NOT NULL,
    -- ...and signing from here on, at least one JWKS cache lifetime later...
    activates_at INTEGER NOT NULL,
    -- ...until a newer key activates; published until the tokens it signed have all expired.
    retired_at INTEGER
);
