//! The public documents downstream services read: OpenID Provider metadata (discovery).

use serde_json::{json, Value};

use crate::config::Config;

/// OpenID Connect Discovery 1.0 §3 metadata, also served as RFC 8414 authorization server
/// metadata. Only what is implemented is advertised: the code flow with S256 PKCE, query
/// responses with `iss` (RFC 9207), no request objects, RP-Initiated Logout.
pub fn openid_configuration(config: &Config, algorithms: &[&str]) -> Value {
    let issuer = &config.issuer;
    let mut document = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        "token_endpoint": format!("{issuer}/oauth/token"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "end_session_endpoint": format!("{issuer}/oauth/end-session"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "prompt_values_supported": crate::domain::authorization::Prompt::VALUES,
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algorithms,
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "scopes_supported": ["openid", "email", "offline_access"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "email", "email_verified", "sid", "nonce"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["none"]
    });
    // Advertised only where it is served (RFC 7591 clients register there).
    if config.client_registration != crate::config::ClientRegistration::Off {
        document["registration_endpoint"] = json!(format!("{issuer}/oauth/register"));
    }
    document
}
