//! Registered clients (relying parties): RFC 7591 client metadata as edgeid accepts it, checked
//! once at registration so that everything stored is usable as it is. Redirect URIs are kept as
//! the exact strings registered: an authorization request must name one of them byte for byte.

use serde_json::{Map, Value};

use crate::domain::signing::SigningAlg;

/// How a client authenticates at the token endpoint (RFC 7591 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A confidential client sending its secret in `Authorization: Basic` (the default)...
    ClientSecretBasic,
    /// ...or in the form body. Either works for any confidential client.
    ClientSecretPost,
    /// A public client (a browser or native app): no secret, PKCE required.
    None,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::None => "none",
        }
    }

    pub fn is_confidential(self) -> bool {
        self != AuthMethod::None
    }
}

/// The grant types a client may use.
pub const GRANT_TYPES: [&str; 3] = ["authorization_code", "refresh_token", "client_credentials"];
/// The scopes a client may register.
pub const SCOPES: [&str; 3] = ["openid", "email", "offline_access"];

/// Metadata that passed every rule, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMetadata {
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub client_name: Option<String>,
    pub auth_method: AuthMethod,
    pub grant_types: Vec<String>,
    /// Space-separated, as registered (`openid email offline_access` when absent).
    pub scope: String,
    pub id_token_signed_response_alg: String,
    /// A first-party app: no consent page. Only with the registration token.
    pub skip_consent: bool,
}

/// A client as stored: its id, the SHA-256 of its secret if it is confidential, its metadata,
/// and whether an operator registered it (with `CLIENT_REGISTRATION_TOKEN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredClient {
    pub client_id: String,
    pub secret_hash: Option<String>,
    pub metadata: ClientMetadata,
    pub registered_with_token: bool,
}

impl RegisteredClient {
    /// Whether this client's users see a consent page: every client but an operator's
    /// first-party app registered with `skip_consent`.
    pub fn asks_consent(&self) -> bool {
        !(self.metadata.skip_consent && self.registered_with_token)
    }

    pub fn may_use(&self, grant_type: &str) -> bool {
        self.metadata.grant_types.iter().any(|grant| grant == grant_type)
    }

    /// The name the consent page shows: the registered one, or the client id.
    pub fn display_name(&self) -> &str {
        self.metadata.client_name.as_deref().unwrap_or(&self.client_id)
    }
}

/// Why metadata was refused: the two error codes of RFC 7591 §3.2.2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientMetadataError {
    #[error("{0}")]
    InvalidRedirectUri(String),
    #[error("{0}")]
    InvalidClientMetadata(String),
}

use ClientMetadataError::{InvalidClientMetadata, InvalidRedirectUri};

const MAX_URIS: usize = 20;
const MAX_URI_BYTES: usize = 2000;
const MAX_CLIENT_NAME_CHARS: usize = 200;

impl ClientMetadata {
    /// Checks a registration request's JSON object. Unknown members are ignored (RFC 7591 §2);
    /// known ones must have the right type and a value edgeid serves. `with_registration_token`
    /// says whether the request carried `CLIENT_REGISTRATION_TOKEN` (only then `skip_consent`);
    /// `signing_algorithms` are those edgeid signs with (`Config::signing_algorithms`), the only
    /// ones an `id_token_signed_response_alg` may name.
    pub fn parse(
        body: &Map<String, Value>,
        with_registration_token: bool,
        signing_algorithms: &[SigningAlg],
    ) -> Result<ClientMetadata, ClientMetadataError> {
        let auth_method = match optional_string(body, "token_endpoint_auth_method")?.as_deref() {
            None | Some("client_secret_basic") => AuthMethod::ClientSecretBasic,
            Some("client_secret_post") => AuthMethod::ClientSecretPost,
            Some("none") => AuthMethod::None,
            Some(other) => {
                return Err(InvalidClientMetadata(format!(
                    "token_endpoint_auth_method {other:?} is not one of client_secret_basic, client_secret_post, none"
                )))
            }
        };
        let grant_types = match string_list(body, "grant_types", InvalidClientMetadata)? {
            None => vec!["authorization_code".to_owned(), "refresh_token".to_owned()],
            Some(list) if list.is_empty() => return Err(InvalidClientMetadata("grant_types is empty".to_owned())),
            Some(list) => {
                if let Some(unknown) = list.iter().find(|grant| !GRANT_TYPES.contains(&grant.as_str())) {
                    return Err(InvalidClientMetadata(format!("grant type {unknown:?} is not supported")));
                }
                dedup(list)
            }
        };
        let has = |grant: &str| grant_types.iter().any(|candidate| candidate == grant);
        if has("client_credentials") && !auth_method.is_confidential() {
            return Err(InvalidClientMetadata("client_credentials needs a confidential client".to_owned()));
        }
        if let Some(response_types) = string_list(body, "response_types", InvalidClientMetadata)? {
            if response_types.iter().any(|response_type| response_type != "code") {
                return Err(InvalidClientMetadata("the only response type is code".to_owned()));
            }
        }
        let redirect_uris = string_list(body, "redirect_uris", InvalidRedirectUri)?.unwrap_or_default();
        if redirect_uris.is_empty() && has("authorization_code") {
            return Err(InvalidRedirectUri("redirect_uris is required for the authorization code grant".to_owned()));
        }
        check_uris("redirect_uris", &redirect_uris)?;
        let post_logout_redirect_uris =
            string_list(body, "post_logout_redirect_uris", InvalidClientMetadata)?.unwrap_or_default();
        check_uris("post_logout_redirect_uris", &post_logout_redirect_uris)?;
        let client_name = optional_string(body, "client_name")?;
        if let Some(name) = &client_name {
            if name.trim().is_empty()
                || name.chars().count() > MAX_CLIENT_NAME_CHARS
                || name.chars().any(char::is_control)
            {
                return Err(InvalidClientMetadata(format!(
                    "client_name must be 1 to {MAX_CLIENT_NAME_CHARS} characters without control characters"
                )));
            }
        }
        let scope = match optional_string(body, "scope")? {
            None => SCOPES.join(" "),
            Some(scope) => {
                let scopes: Vec<&str> = scope.split(' ').filter(|scope| !scope.is_empty()).collect();
                if let Some(unknown) = scopes.iter().find(|scope| !SCOPES.contains(scope)) {
                    return Err(InvalidClientMetadata(format!("scope {unknown:?} is not offered")));
                }
                if scopes.is_empty() {
                    return Err(InvalidClientMetadata("scope is empty".to_owned()));
                }
                dedup(scopes.into_iter().map(str::to_owned).collect()).join(" ")
            }
        };
        // RS256 by default (OIDC Registration §2); only an algorithm edgeid has a key of, so
        // every registered client can be issued its ID tokens.
        let id_token_signed_response_alg = optional_string(body, "id_token_signed_response_alg")?
            .unwrap_or_else(|| SigningAlg::Rs256.jws_name().to_owned());
        if !signing_algorithms.iter().any(|signed| signed.jws_name() == id_token_signed_response_alg) {
            let offered: Vec<&str> = signing_algorithms.iter().map(|alg| alg.jws_name()).collect();
            return Err(InvalidClientMetadata(format!(
                "id_token_signed_response_alg {id_token_signed_response_alg:?} is not one of {}",
                offered.join(", ")
            )));
        }
        let skip_consent = match body.get("skip_consent") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::Bool(true)) if with_registration_token => true,
            Some(Value::Bool(true)) => {
                return Err(InvalidClientMetadata("skip_consent needs the registration token".to_owned()))
            }
            Some(_) => return Err(InvalidClientMetadata("skip_consent must be a boolean".to_owned())),
        };
        Ok(ClientMetadata {
            redirect_uris,
            post_logout_redirect_uris,
            client_name,
            auth_method,
            grant_types,
            scope,
            id_token_signed_response_alg,
            skip_consent,
        })
    }
}

fn optional_string(body: &Map<String, Value>, name: &str) -> Result<Option<String>, ClientMetadataError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(InvalidClientMetadata(format!("{name} must be a string"))),
    }
}

fn string_list(
    body: &Map<String, Value>,
    name: &str,
    error: fn(String) -> ClientMetadataError,
) -> Result<Option<Vec<String>>, ClientMetadataError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(values)) if values.len() <= MAX_URIS => values
            .iter()
            .map(|value| value.as_str().map(str::to_owned).ok_or_else(|| error(format!("{name} must hold strings"))))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(Value::Array(_)) => Err(error(format!("{name} holds more than {MAX_URIS} entries"))),
        Some(_) => Err(error(format!("{name} must be an array of strings"))),
    }
}

fn dedup(list: Vec<String>) -> Vec<String> {
    let mut seen = Vec::with_capacity(list.len());
    for item in list {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

/// The registration rules of the contract: absolute, no fragment, `https` — or plain `http`
/// to this machine (`127.0.0.1`, `[::1]`, `localhost`, any port) for native and local apps.
fn check_uris(name: &str, uris: &[String]) -> Result<(), ClientMetadataError> {
    let error = |reason: String| match name {
        "redirect_uris" => InvalidRedirectUri(reason),
        _ => InvalidClientMetadata(reason),
    };
    for uri in uris {
        if uri.len() > MAX_URI_BYTES || uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(error(format!("{name}: {uri:?} is not a URI")));
        }
        let parsed = url::Url::parse(uri).map_err(|_| error(format!("{name}: {uri:?} is not an absolute URI")))?;
        if parsed.fragment().is_some() || uri.contains('#') {
            return Err(error(format!("{name}: {uri:?} has a fragment")));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(error(format!("{name}: {uri:?} carries user information")));
        }
        let local = matches!(parsed.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"));
        match parsed.scheme() {
            "https" if parsed.host_str().is_some() => {}
            "http" if local => {}
            "http" => return Err(error(format!("{name}: {uri:?} is plain http to another machine"))),
            _ => return Err(error(format!("{name}: {uri:?} is not an https URI"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value, with_token: bool) -> Result<ClientMetadata, ClientMetadataError> {
        ClientMetadata::parse(body.as_object().unwrap(), with_token, &[SigningAlg::Es256, SigningAlg::Rs256])
    }

    #[test]
    fn defaults_are_a_confidential_code_client_with_rs256_id_tokens() {
        let metadata = parse(json!({"redirect_uris": ["https://app.example.com/cb"], "extension": 1}), false).unwrap();
        assert_eq!(metadata.auth_method, AuthMethod::ClientSecretBasic);
        assert_eq!(metadata.grant_types, ["authorization_code", "refresh_token"]);
        assert_eq!(metadata.scope, "openid email offline_access");
        assert_eq!(metadata.id_token_signed_response_alg, "RS256");
        assert!(!metadata.skip_consent);
    }

    #[test]
    fn redirect_uris_follow_the_registration_rules() {
        for good in [
            "https://app.example.com/callback?x=1",
            "http://127.0.0.1:5173/cb",
            "http://[::1]:8080/cb",
            "http://localhost/cb",
            "com.example.app:/oauth2redirect",
        ] {
            let result = parse(json!({"redirect_uris": [good]}), false);
            // A private-use scheme is not https: refused (native apps use loopback here).
            assert_eq!(result.is_ok(), !good.starts_with("com."), "{good}");
        }
        for bad in [
            "/relative",
            "https://app.example.com/cb#fragment",
            "https://app.example.com/cb#",
            "http://app.example.com/cb",
            "http://127.0.0.1.example.com/cb",
            "https://user:pass@app.example.com/cb",
            "javascript:alert(1)",
            "https://app.example.com/c b",
        ] {
            assert!(
                matches!(
                    parse(json!({"redirect_uris": [bad]}), false),
                    Err(ClientMetadataError::InvalidRedirectUri(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(parse(json!({}), false), Err(ClientMetadataError::InvalidRedirectUri(_))));
        assert!(matches!(
            parse(json!({"redirect_uris": "https://a.example"}), false),
            Err(ClientMetadataError::InvalidRedirectUri(_))
        ));
        // A machine client needs none.
        assert!(parse(json!({"grant_types": ["client_credentials"]}), false).is_ok());
    }

    #[test]
    fn metadata_edgeid_does_not_serve_is_refused() {
        let uris = json!(["https://app.example.com/cb"]);
        for body in [
            json!({"redirect_uris": uris, "token_endpoint_auth_method": "private_key_jwt"}),
            json!({"redirect_uris": uris, "grant_types": ["implicit"]}),
            json!({"redirect_uris": uris, "grant_types": []}),
            json!({"redirect_uris": uris, "response_types": ["code id_token"]}),
            json!({"redirect_uris": uris, "scope": "openid admin"}),
            json!({"redirect_uris": uris, "id_token_signed_response_alg": "none"}),
            json!({"redirect_uris": uris, "id_token_signed_response_alg": "HS256"}),
            json!({"redirect_uris": uris, "client_name": ""}),
            json!({"redirect_uris": uris, "client_name": 7}),
            json!({"redirect_uris": uris, "skip_consent": "yes"}),
            json!({"redirect_uris": uris, "post_logout_redirect_uris": ["http://evil.example/"]}),
            json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "none"}),
        ] {
            assert!(matches!(parse(body.clone(), true), Err(ClientMetadataError::InvalidClientMetadata(_))), "{body}");
        }
    }

    /// Only an algorithm edgeid signs with: with `SIGNING_ALG=ES256`, RS256 and ES256 but not
    /// EdDSA; with `SIGNING_ALG=RS256`, RS256 alone.
    #[test]
    fn the_id_token_algorithm_is_one_edgeid_signs_with() {
        let body =
            |alg: &str| json!({"redirect_uris": ["https://app.example.com/cb"], "id_token_signed_response_alg": alg});
        let with = |signed: &[SigningAlg], alg: &str| {
            ClientMetadata::parse(body(alg).as_object().unwrap(), false, signed)
                .map(|metadata| metadata.id_token_signed_response_alg)
        };
        let es256 = [SigningAlg::Es256, SigningAlg::Rs256];
        assert_eq!(with(&es256, "RS256").as_deref(), Ok("RS256"));
        assert_eq!(with(&es256, "ES256").as_deref(), Ok("ES256"));
        assert!(matches!(with(&es256, "EdDSA"), Err(ClientMetadataError::InvalidClientMetadata(_))));
        assert!(matches!(with(&[SigningAlg::Rs256], "ES256"), Err(ClientMetadataError::InvalidClientMetadata(_))));
        assert_eq!(with(&[SigningAlg::EdDsa, SigningAlg::Rs256], "EdDSA").as_deref(), Ok("EdDSA"));
    }

    #[test]
    fn skip_consent_needs_the_registration_token() {
        let body = json!({"redirect_uris": ["https://app.example.com/cb"], "skip_consent": true});
        assert!(parse(body.clone(), true).unwrap().skip_consent);
        assert!(matches!(parse(body, false), Err(ClientMetadataError::InvalidClientMetadata(_))));
    }
}
