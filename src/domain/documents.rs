//! The public documents downstream services read: OpenID Provider metadata (discovery).

use serde_json::{json, Value};

use crate::config::Config;

/// OpenID Connect Discovery 1.0 §3 metadata. Only what is implemented is advertised: the token
/// endpoint offers the refresh grant, and there is no authorization endpoint yet, so
/// `code_challenge_methods_supported` is absent.
pub fn openid_configuration(config: &Config, algorithms: &[&str]) -> Value {
    let issuer = &config.issuer;
    let mut document = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "token_endpoint": format!("{issuer}/oauth/token"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algorithms,
        "grant_types_supported": ["refresh_token"],
        "scopes_supported": ["openid", "email", "offline_access"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "email", "email_verified", "sid", "nonce"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"]
    });
    // Advertised only where it is served (RFC 7591 clients register there).
    if config.client_registration != crate::config::ClientRegistration::Off {
        document["registration_endpoint"] = json!(format!("{issuer}/oauth/register"));
    }
    document
}
