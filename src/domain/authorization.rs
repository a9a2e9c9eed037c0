//! The authorization request (OpenID Connect Core §3.1.2, RFC 6749 §4.1, RFC 7636) as a
//! pipeline of named checks, in the order the specifications need them, after the way
//! node-oidc-provider's `lib/actions/authorization/check_*.js` are laid out. Reading
//! [`validate`] is reading the rules. Until the client and its redirect URI are known an
//! error is a page ([`Refused::Page`]); after that, every error goes back to the client
//! ([`Refused::Redirect`]) with only `error`, `error_description`, `state` and `iss`.

use std::collections::BTreeSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::domain::client::RegisteredClient;

/// The scopes edgeid grants; any other scope is ignored (OAuth 2.0 §3.3 lets the server
/// grant fewer than asked).
pub const SUPPORTED_SCOPES: [&str; 3] = ["openid", "email", "offline_access"];

/// The request's parameters, as sent (query or form), in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parameters(pub Vec<(String, String)>);

impl Parameters {
    pub fn from_query(query: &str) -> Parameters {
        Parameters(form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }

    /// The value of `name`; an empty value counts as absent (OIDC Core §3.1.2.1 parameters
    /// with no value are treated as omitted, as node-oidc-provider does).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str()).filter(|value| !value.is_empty())
    }

    fn repeated(&self) -> Option<&str> {
        let mut seen = BTreeSet::new();
        self.0.iter().map(|(key, _)| key.as_str()).find(|key| !seen.insert(*key))
    }

    pub fn to_query(&self) -> String {
        let mut serializer = form_urlencoded::Serializer::new(String::new());
        for (key, value) in &self.0 {
            serializer.append_pair(key, value);
        }
        serializer.finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    None,
    Login,
    Consent,
    SelectAccount,
}

impl Prompt {
    pub const VALUES: [&'static str; 4] = ["none", "login", "consent", "select_account"];

    fn parse(value: &str) -> Option<Prompt> {
        Some(match value {
            "none" => Prompt::None,
            "login" => Prompt::Login,
            "consent" => Prompt::Consent,
            "select_account" => Prompt::SelectAccount,
            _ => return None,
        })
    }
}

/// An authorization request that passed every check: what the rest of the flow decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    /// The supported scopes asked for that the client registered, sorted and unique.
    pub scopes: Vec<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub prompt: Vec<Prompt>,
    pub max_age: Option<i64>,
    pub id_token_hint: Option<String>,
    pub login_hint: Option<String>,
}

impl AuthorizationRequest {
    pub fn prompts(&self, prompt: Prompt) -> bool {
        self.prompt.contains(&prompt)
    }

    pub fn scope(&self) -> String {
        self.scopes.join(" ")
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|granted| granted == scope)
    }

    /// Where an error or a code goes.
    pub fn target(&self) -> RedirectTarget {
        RedirectTarget { redirect_uri: self.redirect_uri.clone(), state: self.state.clone() }
    }
}

/// A registered redirect URI and the request's `state`: where a redirected answer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectTarget {
    pub redirect_uri: String,
    pub state: Option<String>,
}

impl RedirectTarget {
    /// `redirect_uri` with `pairs`, `state` and `iss` (RFC 9207) added to its query.
    pub fn location(&self, issuer: &str, pairs: &[(&str, &str)]) -> String {
        let mut serializer = form_urlencoded::Serializer::new(String::new());
        for (key, value) in pairs {
            serializer.append_pair(key, value);
        }
        if let Some(state) = &self.state {
            serializer.append_pair("state", state);
        }
        serializer.append_pair("iss", issuer);
        let separator = if self.redirect_uri.contains('?') { '&' } else { '?' };
        format!("{}{separator}{}", self.redirect_uri, serializer.finish())
    }
}

/// Why a request was refused, and how to say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The client or the redirect URI is unknown: a `400` page, never a redirect.
    Page(String),
    /// Back to the client with an error code of OAuth 2.0 §4.1.2.1 or OIDC Core §3.1.2.6.
    Redirect { target: RedirectTarget, error: &'static str, description: String },
}

impl Refused {
    pub fn redirect(target: &RedirectTarget, error: &'static str, description: impl Into<String>) -> Refused {
        Refused::Redirect { target: target.clone(), error, description: description.into() }
    }
}

/// The checks, in order. The first two decide whether an error may be redirected at all.
pub fn validate(parameters: &Parameters, client: Option<&RegisteredClient>) -> Result<AuthorizationRequest, Refused> {
    let client = check_client(parameters, client)?;
    let target = check_redirect_uri(parameters, client)?;
    let fail = |error: &'static str, description: String| Refused::redirect(&target, error, description);
    check_repeated_parameters(parameters).map_err(|d| fail("invalid_request", d))?;
    check_request_object(parameters).map_err(|(error, d)| fail(error, d))?;
    check_response_type(parameters).map_err(|(error, d)| fail(error, d))?;
    check_response_mode(parameters).map_err(|d| fail("invalid_request", d))?;
    check_client_may_use_codes(client).map_err(|d| fail("unauthorized_client", d))?;
    let scopes = check_scope(parameters, client).map_err(|(error, d)| fail(error, d))?;
    let prompt = check_prompt(parameters).map_err(|d| fail("invalid_request", d))?;
    let max_age = check_max_age(parameters).map_err(|d| fail("invalid_request", d))?;
    let code_challenge = check_pkce(parameters, client).map_err(|d| fail("invalid_request", d))?;
    Ok(AuthorizationRequest {
        client_id: client.client_id.clone(),
        redirect_uri: target.redirect_uri.clone(),
        state: target.state.clone(),
        scopes,
        nonce: parameters.get("nonce").map(str::to_owned),
        code_challenge,
        prompt,
        max_age,
        id_token_hint: parameters.get("id_token_hint").map(str::to_owned),
        login_hint: parameters.get("login_hint").map(str::to_owned),
    })
}

/// `client_id` names a registered client.
fn check_client<'a>(
    parameters: &Parameters,
    client: Option<&'a RegisteredClient>,
) -> Result<&'a RegisteredClient, Refused> {
    if parameters.get("client_id").is_none() {
        return Err(Refused::Page("the request has no client_id".to_owned()));
    }
    if parameters.0.iter().filter(|(key, _)| key == "client_id").count() > 1 {
        return Err(Refused::Page("client_id appears more than once".to_owned()));
    }
    client.ok_or_else(|| Refused::Page("the client_id is not a registered client".to_owned()))
}

/// `redirect_uri` is present (OIDC Core requires it) and, byte for byte, one the client
/// registered.
fn check_redirect_uri(parameters: &Parameters, client: &RegisteredClient) -> Result<RedirectTarget, Refused> {
    if parameters.0.iter().filter(|(key, _)| key == "redirect_uri").count() > 1 {
        return Err(Refused::Page("redirect_uri appears more than once".to_owned()));
    }
    let redirect_uri =
        parameters.get("redirect_uri").ok_or_else(|| Refused::Page("the request has no redirect_uri".to_owned()))?;
    if !client.metadata.redirect_uris.iter().any(|registered| registered == redirect_uri) {
        return Err(Refused::Page("the redirect_uri is not registered for this client".to_owned()));
    }
    // A repeated `state` is refused below, but is still echoed: the first one.
    let state = parameters.0.iter().find(|(key, _)| key == "state").map(|(_, value)| value.clone());
    Ok(RedirectTarget { redirect_uri: redirect_uri.to_owned(), state: state.filter(|state| !state.is_empty()) })
}

/// RFC 6749 §3.1: parameters must not be included more than once.
fn check_repeated_parameters(parameters: &Parameters) -> Result<(), String> {
    match parameters.repeated() {
        Some(name) => Err(format!("the parameter {name} appears more than once")),
        None => Ok(()),
    }
}

/// Request objects (OIDC Core §6) are not supported, and say so.
fn check_request_object(parameters: &Parameters) -> Result<(), (&'static str, String)> {
    if parameters.get("request").is_some() {
        return Err(("request_not_supported", "request objects are not supported".to_owned()));
    }
    if parameters.get("request_uri").is_some() {
        return Err(("request_uri_not_supported", "request_uri is not supported".to_owned()));
    }
    Ok(())
}

/// Only the code flow.
fn check_response_type(parameters: &Parameters) -> Result<(), (&'static str, String)> {
    match parameters.get("response_type") {
        None => Err(("invalid_request", "response_type is required".to_owned())),
        Some("code") => Ok(()),
        Some(other) => {
            Err(("unsupported_response_type", format!("response_type {other:?} is not supported; use code")))
        }
    }
}

/// Only `query` (the code flow's default).
fn check_response_mode(parameters: &Parameters) -> Result<(), String> {
    match parameters.get("response_mode") {
        None | Some("query") => Ok(()),
        Some(other) => Err(format!("response_mode {other:?} is not supported; use query")),
    }
}

fn check_client_may_use_codes(client: &RegisteredClient) -> Result<(), String> {
    match client.may_use("authorization_code") {
        true => Ok(()),
        false => Err("this client is not registered for the authorization code grant".to_owned()),
    }
}

/// The supported scopes asked for that the client registered; unknown ones are ignored,
/// order does not matter. Nothing left to grant is `invalid_scope`.
fn check_scope(parameters: &Parameters, client: &RegisteredClient) -> Result<Vec<String>, (&'static str, String)> {
    let asked = parameters.get("scope").ok_or(("invalid_request", "scope is required".to_owned()))?;
    let registered: Vec<&str> = client.metadata.scope.split(' ').collect();
    let granted: BTreeSet<&str> =
        asked.split(' ').filter(|scope| SUPPORTED_SCOPES.contains(scope) && registered.contains(scope)).collect();
    if granted.is_empty() {
        return Err(("invalid_scope", "none of the requested scopes can be granted to this client".to_owned()));
    }
    Ok(granted.into_iter().map(str::to_owned).collect())
}

/// OIDC Core §3.1.2.1: known values only, and `none` alone.
fn check_prompt(parameters: &Parameters) -> Result<Vec<Prompt>, String> {
    let Some(raw) = parameters.get("prompt") else { return Ok(Vec::new()) };
    let mut prompts = Vec::new();
    for value in raw.split(' ').filter(|value| !value.is_empty()) {
        let prompt = Prompt::parse(value)
            .ok_or_else(|| format!("prompt {value:?} is not one of none, login, consent, select_account"))?;
        if !prompts.contains(&prompt) {
            prompts.push(prompt);
        }
    }
    if prompts.contains(&Prompt::None) && prompts.len() > 1 {
        return Err("prompt=none cannot be combined with another value".to_owned());
    }
    Ok(prompts)
}

/// A non-negative number of seconds.
fn check_max_age(parameters: &Parameters) -> Result<Option<i64>, String> {
    match parameters.get("max_age") {
        None => Ok(None),
        Some(raw) => match raw.parse::<i64>() {
            Ok(seconds) if seconds >= 0 && raw.bytes().all(|byte| byte.is_ascii_digit()) => Ok(Some(seconds)),
            _ => Err("max_age must be a non-negative integer".to_owned()),
        },
    }
}

/// RFC 7636 with S256 only: required for public clients, optional for confidential ones;
/// `plain` (and a challenge without a method, which means `plain`) refused.
fn check_pkce(parameters: &Parameters, client: &RegisteredClient) -> Result<Option<String>, String> {
    let challenge = parameters.get("code_challenge");
    match (challenge, parameters.get("code_challenge_method")) {
        (None, None) if client.metadata.auth_method.is_confidential() => Ok(None),
        (None, None) => Err("a public client must send a code_challenge (PKCE, S256)".to_owned()),
        (None, Some(_)) => Err("code_challenge_method without a code_challenge".to_owned()),
        (Some(_), None) => Err("code_challenge_method is required, and only S256 is supported".to_owned()),
        (Some(_), Some(method)) if method != "S256" => {
            Err(format!("code_challenge_method {method:?} is not supported; use S256"))
        }
        (Some(challenge), Some(_)) => match is_pkce_value(challenge) {
            true => Ok(Some(challenge.to_owned())),
            false => Err("code_challenge must be 43 to 128 characters of [A-Za-z0-9-._~]".to_owned()),
        },
    }
}

/// RFC 7636 §4.1/§4.2: the alphabet and length of a verifier (and so of an S256 challenge,
/// which is 43 characters).
pub fn is_pkce_value(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~'))
}

/// The S256 challenge of a verifier: `BASE64URL(SHA256(verifier))`.
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Scopes present in both space-separated lists.
pub fn covers(granted: &str, asked: &[String]) -> bool {
    let granted: Vec<&str> = granted.split(' ').collect();
    asked.iter().all(|scope| granted.contains(&scope.as_str()))
}

/// The union of two space-separated scope lists, sorted.
pub fn union(granted: &str, more: &[String]) -> String {
    let mut all: BTreeSet<&str> = granted.split(' ').filter(|scope| !scope.is_empty()).collect();
    all.extend(more.iter().map(String::as_str));
    all.into_iter().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_is_the_rfc_7636_appendix_b_example() {
        assert_eq!(
            s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn the_location_keeps_the_registered_query_and_adds_state_and_iss() {
        let target =
            RedirectTarget { redirect_uri: "https://app.example/cb?x=1".to_owned(), state: Some("a b&c".to_owned()) };
        assert_eq!(
            target.location("https://id.example", &[("code", "C")]),
            "https://app.example/cb?x=1&code=C&state=a+b%26c&iss=https%3A%2F%2Fid.example"
        );
    }

    #[test]
    fn scopes_cover_and_union() {
        assert!(covers("email openid", &["openid".to_owned()]));
        assert!(!covers("openid", &["openid".to_owned(), "email".to_owned()]));
        assert_eq!(union("openid", &["email".to_owned(), "openid".to_owned()]), "email openid");
    }
}
