//! The OpenID Provider natively (API.md v2), through `api::handle` with the injected clock: the
//! authorization endpoint's checks and redirects, the SSO session, `prompt`/`max_age`/
//! `id_token_hint`, consent and its memory, the code grant (expiry, binding, PKCE, reuse),
//! client authentication, refresh bound to its client, userinfo by scope, RP-Initiated Logout,
//! and discovery. Each test names the OpenID Foundation module whose rule it checks, where
//! there is one; the end-to-end replicas with relying-party libraries are tests/e2e_provider.rs.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use edgeid::api::ApiRequest;
use edgeid::ports::SqlValue;
use serde_json::{json, Value};

use crate::pages::Browser;
use crate::support::{test_config, token_in_link, App, Reply};

const TOKEN: &str = "registration-token-for-the-native-tests-0123456789";
const PASSWORD: &str = "correct horse battery";
const REDIRECT: &str = "https://app.example.test/callback";
const ISSUER: &str = "https://id.example.test";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn app() -> App {
    App::with_config(test_config(&[("CLIENT_REGISTRATION", "token"), ("CLIENT_REGISTRATION_TOKEN", TOKEN)]))
}

/// A registered client: its id and, for a confidential one, its secret.
#[derive(Debug, Clone)]
struct Client {
    id: String,
    secret: Option<String>,
}

fn register(app: &App, metadata: Value) -> Client {
    let mut body = json!({"redirect_uris": [REDIRECT], "client_name": "Acme Notes"});
    for (key, value) in metadata.as_object().unwrap() {
        body[key] = value.clone();
    }
    let reply = app.send(ApiRequest {
        method: "POST".into(),
        path: "/oauth/register".into(),
        headers: vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("Authorization".to_owned(), format!("Bearer {TOKEN}")),
        ],
        body: body.to_string().into_bytes(),
        ..Default::default()
    });
    assert_eq!(reply.status, 201, "{}", reply.text());
    Client {
        id: reply.json["client_id"].as_str().unwrap().to_owned(),
        secret: reply.json["client_secret"].as_str().map(str::to_owned),
    }
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        serializer.append_pair(key, value);
    }
    serializer.finish()
}

/// `/oauth/authorize?…` for `client` with the usual parameters, `extra` added (an empty value
/// removes a parameter).
fn authorize_path(client: &Client, extra: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &client.id),
        ("redirect_uri", REDIRECT),
        ("scope", "openid email"),
        ("state", "st&te 1"),
        ("nonce", "n-0S6_WzA2Mj"),
    ];
    for (key, value) in extra {
        pairs.retain(|(candidate, _)| candidate != key);
        if !value.is_empty() {
            pairs.push((key, value));
        }
    }
    format!("/oauth/authorize?{}", query(&pairs))
}

/// The query parameters of a redirect to the client.
fn redirect_parameters(location: &str) -> Vec<(String, String)> {
    assert!(location.starts_with(REDIRECT), "{location}");
    let query = location.split_once('?').map(|(_, query)| query).unwrap_or_default();
    form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn parameter(parameters: &[(String, String)], name: &str) -> Option<String> {
    parameters.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone())
}

/// Where a browser ends up: it follows our own redirects until a page or the client.
enum Landed {
    Page(Reply),
    Client(Vec<(String, String)>),
}

fn follow(browser: &Browser, mut reply: Reply) -> Landed {
    loop {
        if reply.status != 303 && reply.status != 302 {
            return Landed::Page(reply);
        }
        let location = reply.response.header("location").unwrap().to_owned();
        if location.starts_with(REDIRECT) {
            return Landed::Client(redirect_parameters(&location));
        }
        reply = browser.get(&location);
    }
}

fn page(landed: Landed) -> Reply {
    match landed {
        Landed::Page(reply) => reply,
        Landed::Client(parameters) => panic!("expected a page, went back to the client with {parameters:?}"),
    }
}

fn back_at_client(landed: Landed) -> Vec<(String, String)> {
    match landed {
        Landed::Client(parameters) => parameters,
        Landed::Page(reply) => panic!("expected a redirect to the client, got {}: {}", reply.status, reply.text()),
    }
}

fn is_login_page(reply: &Reply) -> bool {
    reply.status == 200 && reply.text().contains("name=\"password\"") && reply.text().contains("name=\"interaction\"")
}

fn is_consent_page(reply: &Reply) -> bool {
    reply.status == 200 && reply.text().contains("value=\"allow\"")
}

/// Starts an authorization in `browser`, signs in when asked, allows when asked; the code.
fn code_for(browser: &Browser, client: &Client, extra: &[(&str, &str)], email: &str) -> Vec<(String, String)> {
    let mut landed = follow(browser, browser.get(&authorize_path(client, extra)));
    loop {
        match landed {
            Landed::Client(parameters) => return parameters,
            Landed::Page(reply) if is_login_page(&reply) => {
                landed = follow(browser, browser.submit(&reply, &[("email", email), ("password", PASSWORD)]));
            }
            Landed::Page(reply) if is_consent_page(&reply) => {
                landed = follow(browser, browser.submit(&reply, &[("decision", "allow")]));
            }
            Landed::Page(reply) => panic!("unexpected page {}: {}", reply.status, reply.text()),
        }
    }
}

enum Auth<'a> {
    Basic,
    Post,
    /// A public client: only `client_id`.
    Public,
    /// Exactly these headers and fields.
    Raw(&'a [(&'a str, &'a str)], &'a [(&'a str, &'a str)]),
}

fn token_request(app: &App, client: &Client, auth: Auth, fields: &[(&str, &str)]) -> Reply {
    let mut pairs: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut headers = vec![("Content-Type".to_owned(), "application/x-www-form-urlencoded".to_owned())];
    let secret = client.secret.clone().unwrap_or_default();
    match auth {
        Auth::Basic => {
            let credentials = STANDARD.encode(format!("{}:{}", client.id, secret));
            headers.push(("Authorization".to_owned(), format!("Basic {credentials}")));
        }
        Auth::Post => {
            pairs.push(("client_id".to_owned(), client.id.clone()));
            pairs.push(("client_secret".to_owned(), secret));
        }
        Auth::Public => pairs.push(("client_id".to_owned(), client.id.clone())),
        Auth::Raw(extra_headers, extra_fields) => {
            headers.extend(extra_headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            pairs.extend(extra_fields.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        }
    }
    let body = {
        let mut serializer = form_urlencoded::Serializer::new(String::new());
        for (key, value) in &pairs {
            serializer.append_pair(key, value);
        }
        serializer.finish()
    };
    app.send(ApiRequest {
        method: "POST".into(),
        path: "/oauth/token".into(),
        headers,
        body: body.into_bytes(),
        ..Default::default()
    })
}

fn redeem(app: &App, client: &Client, auth: Auth, code: &str, extra: &[(&str, &str)]) -> Reply {
    let mut fields = vec![("grant_type", "authorization_code"), ("code", code), ("redirect_uri", REDIRECT)];
    fields.extend_from_slice(extra);
    token_request(app, client, auth, &fields)
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn header(jwt: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').next().unwrap()).unwrap()).unwrap()
}

fn userinfo(app: &App, method: &str, access_token: &str) -> Reply {
    app.send(ApiRequest {
        method: method.into(),
        path: "/userinfo".into(),
        headers: vec![("Authorization".to_owned(), format!("Bearer {access_token}"))],
        ..Default::default()
    })
}

fn code_of(parameters: &[(String, String)]) -> String {
    parameter(parameters, "code").unwrap_or_else(|| panic!("no code in {parameters:?}"))
}

#[test]
fn oidcc_server_the_code_flow_with_login_consent_and_tokens() {
    let app = app();
    app.verified_account("alice@example.com", PASSWORD);
    let client = register(&app, json!({}));
    let browser = Browser::new(&app);

    // No session: the login page, with the request sealed in it, the hint prefilled.
    let login = page(follow(&browser, browser.get(&authorize_path(&client, &[("login_hint", "alice@example.com")]))));
    assert!(is_login_page(&login), "{}", login.text());
    assert!(login.text().contains("value=\"alice@example.com\""));
    // Its form may end at the client's redirect URI (CSP form-action follows redirects).
    let csp = login.response.header("content-security-policy").unwrap();
    assert!(csp.contains("form-action 'self' https://app.example.test;"), "{csp}");
    let wrong = browser.submit(&login, &[("email", "alice@example.com"), ("password", "not the password")]);
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    assert!(wrong.text().contains("name=\"interaction\""), "the form keeps the request");
    let consent =
        page(follow(&browser, browser.submit(&login, &[("email", "alice@example.com"), ("password", PASSWORD)])));
    assert!(is_consent_page(&consent), "{}", consent.text());
    assert!(consent.text().contains("Acme Notes"));
    assert!(consent.text().contains("goes back to app.example.test"), "the page names where the answer goes");
    assert!(consent.text().contains("data-scope=\"email\"") && consent.text().contains("data-scope=\"openid\""));
    assert_eq!(consent.response.header("x-frame-options"), Some("DENY"));
    assert!(consent.response.header("content-security-policy").unwrap().contains("frame-ancestors 'none'"));

    let parameters = back_at_client(follow(&browser, browser.submit(&consent, &[("decision", "allow")])));
    assert_eq!(parameter(&parameters, "state").as_deref(), Some("st&te 1"), "state byte for byte");
    assert_eq!(parameter(&parameters, "iss").as_deref(), Some(ISSUER), "RFC 9207");
    assert_eq!(parameters.len(), 3, "{parameters:?}");
    let tokens = redeem(&app, &client, Auth::Basic, &code_of(&parameters), &[]);
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    assert_eq!(tokens.response.header("cache-control"), Some("no-store"));
    assert_eq!(tokens.json["token_type"], "Bearer");
    assert_eq!(tokens.json["scope"], "email openid");
    assert!(tokens.json.get("refresh_token").is_none(), "no offline_access, no refresh token");

    let id_token = tokens.json["id_token"].as_str().unwrap();
    let id = claims(id_token);
    assert_eq!(header(id_token)["typ"], "JWT");
    assert_eq!(id["aud"], client.id.as_str());
    assert_eq!(id["iss"], ISSUER);
    assert_eq!(id["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(id["email"], "alice@example.com");
    assert_eq!(id["auth_time"], app.now.get().timestamp());
    let access_token = tokens.json["access_token"].as_str().unwrap();
    let access = claims(access_token);
    assert_eq!(header(access_token)["typ"], "at+jwt");
    assert_eq!(access["client_id"], client.id.as_str());
    assert_eq!(access["scope"], "email openid");
    assert_eq!(access["sid"], id["sid"], "one sid: the browser session");
    assert_eq!(access["sub"], id["sub"]);

    for method in ["GET", "POST"] {
        let info = userinfo(&app, method, access_token);
        assert_eq!(info.status, 200, "{method}: {}", info.text());
        assert_eq!(info.json, json!({"sub": id["sub"], "email": "alice@example.com", "email_verified": true}));
    }
    // RFC 6750 §2.2: in a form body.
    let body = format!("access_token={access_token}");
    let info = app.request("POST", "/userinfo", Some("application/x-www-form-urlencoded"), body.as_bytes());
    assert_eq!(info.status, 200, "{}", info.text());
}

#[test]
fn oidcc_scope_email_and_offline_access_decide_claims_and_refresh_tokens() {
    let app = app();
    app.verified_account("scopes@example.com", PASSWORD);
    let client = register(&app, json!({}));
    let browser = Browser::new(&app);
    // Unknown scopes are ignored, order does not matter.
    let parameters = code_for(&browser, &client, &[("scope", "profile openid banana")], "scopes@example.com");
    let tokens = redeem(&app, &client, Auth::Post, &code_of(&parameters), &[]);
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    assert_eq!(tokens.json["scope"], "openid");
    let id = claims(tokens.json["id_token"].as_str().unwrap());
    assert!(id.get("email").is_none(), "{id}");
    let info = userinfo(&app, "GET", tokens.json["access_token"].as_str().unwrap());
    assert_eq!(info.json, json!({"sub": id["sub"]}));

    // offline_access: asked on the consent page (the previous consent did not cover it).
    let mut landed = follow(&browser, browser.get(&authorize_path(&client, &[("scope", "offline_access openid")])));
    let consent = match landed {
        Landed::Page(reply) => reply,
        Landed::Client(parameters) => panic!("{parameters:?}"),
    };
    assert!(consent.text().contains("data-scope=\"offline_access\""));
    landed = follow(&browser, browser.submit(&consent, &[("decision", "allow")]));
    let tokens = redeem(&app, &client, Auth::Basic, &code_of(&back_at_client(landed)), &[]);
    let refresh_token = tokens.json["refresh_token"].as_str().unwrap();

    // Without openid: an OAuth access token only.
    let parameters = code_for(&browser, &client, &[("scope", "email")], "scopes@example.com");
    let tokens = redeem(&app, &client, Auth::Basic, &code_of(&parameters), &[]);
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    assert!(tokens.json.get("id_token").is_none());

    // oidcc-refresh-token: the refreshed ID token keeps auth_time, has a new iat.
    let first_auth_time = app.now.get().timestamp();
    app.advance(120);
    let refreshed =
        token_request(&app, &client, Auth::Basic, &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]);
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    let id = claims(refreshed.json["id_token"].as_str().unwrap());
    assert_eq!(id["auth_time"], first_auth_time);
    assert_eq!(id["iat"], app.now.get().timestamp());
    assert_eq!(id["aud"], client.id.as_str());
    // A narrower scope is granted; a wider one refused.
    let next = refreshed.json["refresh_token"].as_str().unwrap();
    let wider = token_request(
        &app,
        &client,
        Auth::Basic,
        &[("grant_type", "refresh_token"), ("refresh_token", next), ("scope", "openid email")],
    );
    wider.assert_error(400, "invalid_scope");
    let narrower = token_request(
        &app,
        &client,
        Auth::Basic,
        &[("grant_type", "refresh_token"), ("refresh_token", next), ("scope", "offline_access")],
    );
    assert_eq!(narrower.status, 200, "{}", narrower.text());
    assert_eq!(narrower.json["scope"], "offline_access");
    assert!(narrower.json.get("id_token").is_none());
}

#[test]
fn sso_consent_is_remembered_per_client_and_prompt_consent_always_asks() {
    let app = app();
    app.verified_account("sso@example.com", PASSWORD);
    let first = register(&app, json!({}));
    let second = register(&app, json!({"client_name": "Second"}));
    let first_party = register(&app, json!({"skip_consent": true}));
    let browser = Browser::new(&app);
    code_for(&browser, &first, &[], "sso@example.com");

    // Another client: no password (SSO), but its own consent.
    let consent = page(follow(&browser, browser.get(&authorize_path(&second, &[]))));
    assert!(is_consent_page(&consent) && consent.text().contains("Second"), "{}", consent.text());
    let denied = back_at_client(follow(&browser, browser.submit(&consent, &[("decision", "deny")])));
    assert_eq!(parameter(&denied, "error").as_deref(), Some("access_denied"));
    assert_eq!(parameter(&denied, "state").as_deref(), Some("st&te 1"));
    assert_eq!(parameter(&denied, "iss").as_deref(), Some(ISSUER));

    // The first client's consent is remembered: straight back with a code.
    let again = back_at_client(follow(&browser, browser.get(&authorize_path(&first, &[]))));
    assert!(parameter(&again, "code").is_some());
    // prompt=consent asks again.
    let asked = page(follow(&browser, browser.get(&authorize_path(&first, &[("prompt", "consent")]))));
    assert!(is_consent_page(&asked));
    // A first-party app registered with skip_consent never asks.
    let direct = back_at_client(follow(&browser, browser.get(&authorize_path(&first_party, &[]))));
    assert!(parameter(&direct, "code").is_some());
    // The consent form is CSRF-protected like every form.
    let forged = browser.submit_with(&asked, &[("decision", "allow")], &[("Origin", "https://evil.example")]);
    assert_eq!(forged.status, 400);
    assert!(forged.response.header("location").is_none());
}

#[test]
fn oidcc_prompt_none_not_logged_in_and_logged_in() {
    let app = app();
    app.verified_account("none@example.com", PASSWORD);
    let client = register(&app, json!({}));
    let browser = Browser::new(&app);
    let refused = back_at_client(follow(&browser, browser.get(&authorize_path(&client, &[("prompt", "none")]))));
    assert_eq!(parameter(&refused, "error").as_deref(), Some("login_required"));
    assert_eq!(parameter(&refused, "state").as_deref(), Some("st&te 1"));
    // Signed in elsewhere, but no consent for this client yet.
    let other = register(&app, json!({"skip_consent": true}));
    code_for(&browser, &other, &[], "none@example.com");
    let refused = back_at_client(follow(&browser, browser.get(&authorize_path(&client, &[("prompt", "none")]))));
    assert_eq!(parameter(&refused, "error").as_deref(), Some("consent_required"));
    code_for(&browser, &client, &[], "none@example.com");
    // oidcc-prompt-none-logged-in: a code, no page.
    let parameters = back_at_client(follow(&browser, browser.get(&authorize_path(&client, &[("prompt", "none")]))));
    assert!(parameter(&parameters, "code").is_some(), "{parameters:?}");
    let combined = back_at_client(follow(&browser, browser.get(&authorize_path(&client, &[("prompt", "none login")]))));
    assert_eq!(parameter(&combined, "error").as_deref(), Some("invalid_request"));
}

#[test]
fn oidcc_prompt_login_and_oidcc_max_age_ask_for_the_password_again() {
    let app = app();
    app.verified_account("again@example.com", PASSWORD);
    let client = register(&app, json!({"skip_consent": true}));
    let browser = Browser::new(&app);
    let first = code_for(&browser, &client, &[], "again@example.com");
    let first_auth_time =
        claims(redeem(&app, &client, Auth::Basic, &code_of(&first), &[]).json["id_token"].as_str().unwrap())
            ["auth_time"]
            .clone();

    app.advance(30);
    let login = page(follow(&browser, browser.get(&authorize_path(&client, &[("prompt", "login")]))));
    assert!(is_login_page(&login), "prompt=login shows the login page despite the session");
    // After signing in, the request goes on: no second login page.
    let parameters = back_at_client(follow(
        &browser,
        browser.submit(&login, &[("email", "again@example.com"), ("password", PASSWORD)]),
    ));
    let tokens = redeem(&app, &client, Auth::Basic, &code_of(&parameters), &[]);
    let auth_time = claims(tokens.json["id_token"].as_str().unwrap())["auth_time"].clone();
    assert_eq!(auth_time, app.now.get().timestamp());
    assert_ne!(auth_time, first_auth_time);

    // oidcc-max-age-10000: the session is young enough.
    app.advance(5);
    let young = back_at_client(follow(&browser, browser.get(&authorize_path(&client, &[("max_age", "10000")]))));
    assert!(parameter(&young, "code").is_some());
    // oidcc-max-age-1: older than a second: the password again, and a fresh auth_time.
    let login = page(follow(&browser, browser.get(&authorize_path(&client, &[("max_age", "1")]))));
    assert!(is_login_page(&login));
    let parameters = back_at_client(follow(
        &browser,
        browser.submit(&login, &[("email", "again@example.com"), ("password", PASSWORD)]),
    ));
    let id = claims(redeem(&app, &client, Auth::Basic, &code_of(&parameters), &[]).json["id_token"].as_str().unwrap());
    assert_eq!(id["auth_time"], app.now.get().timestamp());
    // Under prompt=none an old session is login_required.
    app.advance(5);
    let refused = back_at_client(follow(
        &browser,
        browser.get(&authorize_path(&client, &[("max_age", "1"), ("prompt", "none")])),
    ));
    assert_eq!(parameter(&refused, "error").as_deref(), Some("login_required"));
    let invalid = back_at_client(follow(&browser, browser.get(&authorize_path(&client, &[("max_age", "-1")]))));
    assert_eq!(parameter(&invalid, "error").as_deref(), Some("invalid_request"));
}

#[test]
fn oidcc_id_token_hint_names_the_user_and_a_forged_hint_is_refused() {
    let app = app();
    app.verified_account("hint@example.com", PASSWORD);
    app.verified_account("other@example.com", PASSWORD);
    let client = register(&app, json!({"skip_consent": true}));
    let browser = Browser::new(&app);
    let parameters = code_for(&browser, &client, &[], "hint@example.com");
    let hint =
        redeem(&app, &client, Auth::Basic, &code_of(&parameters), &[]).json["id_token"].as_str().unwrap().to_owned();
    // The same user, even with the hint expired: no page.
    app.advance(3600);
    let same = back_at_client(follow(
        &browser,
        browser.get(&authorize_path(&client, &[("id_token_hint", &hint), ("prompt", "none")])),
    ));
    assert!(parameter(&same, "code").is_some(), "{same:?}");
    // Another user's session: the hint's user must sign in.
    let other_browser = Browser::new(&app);
    code_for(&other_browser, &client, &[], "other@example.com");
    let refused = back_at_client(follow(
        &other_browser,
        other_browser.get(&authorize_path(&client, &[("id_token_hint", &hint), ("prompt", "none")])),
    ));
    assert_eq!(parameter(&refused, "error").as_deref(), Some("login_required"));
    let login = page(follow(&other_browser, other_browser.get(&authorize_path(&client, &[("id_token_hint", &hint)]))));
    assert!(is_login_page(&login));
    // A hint with a broken signature.
    let mut forged = hint.clone();
    forged.pop();
    forged.push(if hint.ends_with('A') { 'B' } else { 'A' });
    let invalid =
        back_at_client(follow(&browser, browser.get(&authorize_path(&client, &[("id_token_hint", &forged)]))));
    assert_eq!(parameter(&invalid, "error").as_deref(), Some("invalid_request"));
}

#[test]
fn oidcc_ensure_registered_redirect_uri_errors_before_the_client_is_known_are_pages() {
    let app = app();
    let client = register(&app, json!({}));
    let browser = Browser::new(&app);
    let unknown = Client { id: "no-such-client".to_owned(), secret: None };
    for path in [
        authorize_path(&unknown, &[]),
        authorize_path(&client, &[("redirect_uri", "https://app.example.test/callback/other")]),
        authorize_path(&client, &[("redirect_uri", "https://app.example.test/callback?x=1")]),
        authorize_path(&client, &[("redirect_uri", "https://evil.example/callback")]),
        // oidcc-ensure-redirect-uri-in-authorization-request
        authorize_path(&client, &[("redirect_uri", "")]),
        authorize_path(&client, &[("client_id", "")]),
    ] {
        let reply = browser.get(&path);
        assert_eq!(reply.status, 400, "{path}: {}", reply.text());
        assert!(reply.response.header("location").is_none(), "{path}");
        assert!(reply.response.header("content-type").unwrap().starts_with("text/html"));
    }
}

/// A client, the parameters changed for it, and the error they must get.
type Case<'a> = (Client, Vec<(&'a str, &'a str)>, &'a str);

#[test]
fn authorization_errors_redirect_with_only_error_description_state_and_iss() {
    let app = app();
    let client = register(&app, json!({}));
    let public = register(&app, json!({"token_endpoint_auth_method": "none"}));
    let browser = Browser::new(&app);
    let cases: Vec<Case> = vec![
        // oidcc-response-type-missing
        (client.clone(), vec![("response_type", "")], "invalid_request"),
        (client.clone(), vec![("response_type", "token")], "unsupported_response_type"),
        (client.clone(), vec![("response_type", "code id_token")], "unsupported_response_type"),
        (client.clone(), vec![("request", "eyJhbGciOiJub25lIn0.e30.")], "request_not_supported"),
        (client.clone(), vec![("request_uri", "https://app.example.test/request.jwt")], "request_uri_not_supported"),
        (client.clone(), vec![("scope", "profile")], "invalid_scope"),
        (client.clone(), vec![("scope", "")], "invalid_request"),
        (client.clone(), vec![("prompt", "sometimes")], "invalid_request"),
        (client.clone(), vec![("response_mode", "fragment")], "invalid_request"),
        // PKCE: plain refused, a method is required, S256 challenges have a shape.
        (client.clone(), vec![("code_challenge", VERIFIER), ("code_challenge_method", "plain")], "invalid_request"),
        (client.clone(), vec![("code_challenge", CHALLENGE)], "invalid_request"),
        (client.clone(), vec![("code_challenge_method", "S256")], "invalid_request"),
        (client.clone(), vec![("code_challenge", "short"), ("code_challenge_method", "S256")], "invalid_request"),
        // A public client must use PKCE.
        (public.clone(), vec![], "invalid_request"),
    ];
    for (client, extra, error) in cases {
        let reply = browser.get(&authorize_path(&client, &extra));
        assert_eq!(reply.status, 303, "{extra:?}: {}", reply.text());
        let parameters = redirect_parameters(reply.response.header("location").unwrap());
        assert_eq!(parameter(&parameters, "error").as_deref(), Some(error), "{extra:?}");
        let names: Vec<&str> = parameters.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["error", "error_description", "state", "iss"], "{extra:?}");
    }
    // A repeated parameter is refused; its first state is still echoed.
    let path = format!("{}&scope=openid", authorize_path(&client, &[]));
    let parameters = redirect_parameters(browser.get(&path).response.header("location").unwrap());
    assert_eq!(parameter(&parameters, "error").as_deref(), Some("invalid_request"));
    // Accepted and ignored, never an error: ui_locales, display, acr_values, claims_locales, unknowns.
    app.verified_account("ignored@example.com", PASSWORD);
    let extra = [
        ("ui_locales", "fr-CA"),
        ("display", "popup"),
        ("acr_values", "urn:x"),
        ("claims_locales", "de"),
        ("banana", "1"),
    ];
    let parameters = code_for(&browser, &client, &extra, "ignored@example.com");
    assert!(parameter(&parameters, "code").is_some());
}

#[test]
fn authorize_answers_post_like_get() {
    let app = app();
    app.verified_account("post@example.com", PASSWORD);
    let client = register(&app, json!({"skip_consent": true}));
    let browser = Browser::new(&app);
    code_for(&browser, &client, &[], "post@example.com");
    let body = authorize_path(&client, &[]).split_once('?').unwrap().1.to_owned();
    let mut headers = vec![("Content-Type".to_owned(), "application/x-www-form-urlencoded".to_owned())];
    headers.push((
        "Cookie".to_owned(),
        format!("__Host-edgeid-session={}", browser.cookie("__Host-edgeid-session").unwrap()),
    ));
    let reply = app.send(ApiRequest {
        method: "POST".into(),
        path: "/oauth/authorize".into(),
        headers,
        body: body.into_bytes(),
        ..Default::default()
    });
    assert_eq!(reply.status, 303);
    assert!(parameter(&redirect_parameters(reply.response.header("location").unwrap()), "code").is_some());
}

#[test]
fn pkce_binds_the_code_and_downgrades_are_refused() {
    let app = app();
    app.verified_account("pkce@example.com", PASSWORD);
    let public = register(&app, json!({"token_endpoint_auth_method": "none", "skip_consent": true}));
    let confidential = register(&app, json!({"skip_consent": true}));
    let browser = Browser::new(&app);
    let with_challenge = [("code_challenge", CHALLENGE), ("code_challenge_method", "S256")];

    let code = code_of(&code_for(&browser, &public, &with_challenge, "pkce@example.com"));
    redeem(&app, &public, Auth::Public, &code, &[]).assert_error(400, "invalid_grant");
    redeem(&app, &public, Auth::Public, &code, &[("code_verifier", &"x".repeat(43))])
        .assert_error(400, "invalid_grant");
    redeem(&app, &public, Auth::Public, &code, &[("code_verifier", "short")]).assert_error(400, "invalid_grant");
    // Failed checks consume nothing: the right verifier still works, once.
    let tokens = redeem(&app, &public, Auth::Public, &code, &[("code_verifier", VERIFIER)]);
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    assert!(tokens.json["refresh_token"].is_null());

    // A verifier for a code issued without a challenge is a downgrade attempt.
    let code = code_of(&code_for(&browser, &confidential, &[], "pkce@example.com"));
    redeem(&app, &confidential, Auth::Basic, &code, &[("code_verifier", VERIFIER)]).assert_error(400, "invalid_grant");
    assert_eq!(redeem(&app, &confidential, Auth::Basic, &code, &[]).status, 200);
    // A confidential client may use PKCE too.
    let code = code_of(&code_for(&browser, &confidential, &with_challenge, "pkce@example.com"));
    redeem(&app, &confidential, Auth::Basic, &code, &[]).assert_error(400, "invalid_grant");
    assert_eq!(redeem(&app, &confidential, Auth::Basic, &code, &[("code_verifier", VERIFIER)]).status, 200);
}

#[test]
fn oidcc_codereuse_a_second_redemption_revokes_what_the_first_issued() {
    let app = app();
    app.verified_account("reuse@example.com", PASSWORD);
    let client = register(&app, json!({"skip_consent": true}));
    let other = register(&app, json!({"skip_consent": true}));
    let browser = Browser::new(&app);
    let code = code_of(&code_for(&browser, &client, &[("scope", "openid offline_access")], "reuse@example.com"));
    // Another client, another redirect URI: refused, and the code is untouched.
    redeem(&app, &other, Auth::Basic, &code, &[]).assert_error(400, "invalid_grant");
    token_request(
        &app,
        &client,
        Auth::Basic,
        &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", "https://app.example.test/other")],
    )
    .assert_error(400, "invalid_grant");
    let first = redeem(&app, &client, Auth::Basic, &code, &[]);
    assert_eq!(first.status, 200, "{}", first.text());
    let access_token = first.json["access_token"].as_str().unwrap();
    assert_eq!(userinfo(&app, "GET", access_token).status, 200);
    app.advance(5);
    redeem(&app, &client, Auth::Basic, &code, &[]).assert_error(400, "invalid_grant");
    assert_eq!(userinfo(&app, "GET", access_token).status, 401, "the first redemption's access token is revoked");
    token_request(
        &app,
        &client,
        Auth::Basic,
        &[("grant_type", "refresh_token"), ("refresh_token", first.json["refresh_token"].as_str().unwrap())],
    )
    .assert_error(400, "invalid_grant");
    // The browser session itself lives on: a new code works.
    let code = code_of(&code_for(&browser, &client, &[], "reuse@example.com"));
    assert_eq!(redeem(&app, &client, Auth::Basic, &code, &[]).status, 200);
}

/// The benchmark's floor for the code grant (`bench/floor-batches.json`, which the floor Worker
/// bench/floor-worker.mjs runs) is this grant's own D1 batch: the same statements, each
/// parameter what the file names, each changing the rows the file says. A change to the grant's
/// SQL fails here until the file follows (the message shows what the grant sent).
#[test]
fn the_code_grants_batch_is_the_benchmark_floors() {
    let app = app();
    app.verified_account("floor@example.com", PASSWORD);
    let client = register(
        &app,
        json!({"skip_consent": true, "grant_types": ["authorization_code", "refresh_token"], "id_token_signed_response_alg": "ES256"}),
    );
    let browser = Browser::new(&app);
    let pkce =
        [("scope", "openid email offline_access"), ("code_challenge", CHALLENGE), ("code_challenge_method", "S256")];
    let code = code_of(&code_for(&browser, &client, &pkce, "floor@example.com"));
    let databases = || std::iter::once(&app.db).chain(app.user_shards());
    databases().for_each(|db| *db.recorded.borrow_mut() = Some(Vec::new()));
    let granted = redeem(&app, &client, Auth::Basic, &code, &[("code_verifier", VERIFIER)]);
    assert_eq!(granted.status, 200, "{}", granted.text());
    let batches: Vec<_> = databases().flat_map(|db| db.recorded.borrow_mut().take().unwrap()).collect();
    let redemption: Vec<_> = batches
        .into_iter()
        .filter(|(batch, _)| batch.iter().any(|statement| statement.sql.starts_with("UPDATE authorization_codes")))
        .collect();
    assert_eq!(redemption.len(), 1, "one batch redeems the code");
    let (sent, changed) = &redemption[0];
    let spec: Value = serde_json::from_str(include_str!("../bench/floor-batches.json")).unwrap();
    let floor = spec["code_grant"]["statements"].as_array().unwrap();
    let as_sent = || {
        let statements: Vec<Value> = sent.iter().map(|statement| json!({"sql": statement.sql})).collect();
        serde_json::to_string_pretty(&statements).unwrap()
    };
    let floor_sql: Vec<&str> = floor.iter().map(|statement| statement["sql"].as_str().unwrap()).collect();
    let sent_sql: Vec<&str> = sent.iter().map(|statement| statement.sql).collect();
    assert_eq!(floor_sql, sent_sql, "bench/floor-batches.json is not the grant's batch, which is:\n{}", as_sent());
    let now = app.now.get();
    let grant_id = app.users_text("SELECT id FROM sessions WHERE client_id IS NOT NULL");
    let refresh = granted.json["refresh_token"].as_str().unwrap();
    let hash_of = |token: &str| edgeid::domain::opaque_token::TokenHash::routed(token).unwrap().1.as_str().to_owned();
    let text = |value: String| SqlValue::Text(value);
    let expected = |role: &str| -> Option<SqlValue> {
        Some(match role {
            "code" => text(hash_of(&code)),
            "now" => SqlValue::Integer(now.timestamp()),
            "client_id" => text(client.id.clone()),
            "redirect_uri" => text(REDIRECT.to_owned()),
            "code_challenge" => text(CHALLENGE.to_owned()),
            "grant_id" => text(grant_id.clone()),
            "grant_expires_at" => SqlValue::Integer(now.timestamp() + app.config.session_absolute_ttl_seconds),
            "refresh_token" => text(hash_of(refresh)),
            "refresh_expires_at" => SqlValue::Integer(now.timestamp() + app.config.refresh_token_ttl_seconds),
            // The account's bucket: any integer.
            "bucket" => return None,
            other => panic!("bench/floor-batches.json names an unknown parameter {other}"),
        })
    };
    let floor_changes: Vec<u64> = floor.iter().map(|statement| statement["changes"].as_u64().unwrap()).collect();
    assert_eq!(&floor_changes, changed, "rows each statement changed");
    for (statement, spec) in sent.iter().zip(floor) {
        let roles: Vec<&str> = spec["params"].as_array().unwrap().iter().map(|role| role.as_str().unwrap()).collect();
        assert_eq!(roles.len(), statement.params.len(), "parameters of {}", statement.sql);
        for (role, value) in roles.iter().zip(&statement.params) {
            match expected(role) {
                Some(expected) => assert_eq!(value, &expected, "{role} in {}", statement.sql),
                None => assert!(matches!(value, SqlValue::Integer(bucket) if *bucket >= 0), "{role}: {value:?}"),
            }
        }
    }
}

#[test]
fn a_code_lives_sixty_seconds() {
    let app = app();
    app.verified_account("expiry@example.com", PASSWORD);
    let client = register(&app, json!({"skip_consent": true}));
    let browser = Browser::new(&app);
    let code = code_of(&code_for(&browser, &client, &[], "expiry@example.com"));
    app.advance(59);
    assert_eq!(redeem(&app, &client, Auth::Basic, &code, &[]).status, 200);
    let code = code_of(&code_for(&browser, &client, &[], "expiry@example.com"));
    app.advance(60);
    redeem(&app, &client, Auth::Basic, &code, &[]).assert_error(400, "invalid_grant");
    redeem(&app, &client, Auth::Basic, "not-a-code", &[]).assert_error(400, "invalid_grant");
    token_request(&app, &client, Auth::Basic, &[("grant_type", "authorization_code"), ("code", &code)])
        .assert_error(400, "invalid_request");
}

#[test]
fn client_authentication_basic_post_and_their_failures() {
    let app = app();
    app.verified_account("auth@example.com", PASSWORD);
    let basic_client = register(&app, json!({"skip_consent": true}));
    let post_client = register(&app, json!({"skip_consent": true, "token_endpoint_auth_method": "client_secret_post"}));
    let public = register(&app, json!({"skip_consent": true, "token_endpoint_auth_method": "none"}));
    let browser = Browser::new(&app);
    // Either method works for any confidential client (oidcc-client-secret-basic/-post).
    for (client, auth) in [
        (&basic_client, Auth::Post),
        (&post_client, Auth::Basic),
        (&basic_client, Auth::Basic),
        (&post_client, Auth::Post),
    ] {
        let code = code_of(&code_for(&browser, client, &[], "auth@example.com"));
        assert_eq!(redeem(&app, client, auth, &code, &[]).status, 200);
    }
    let code = code_of(&code_for(&browser, &basic_client, &[], "auth@example.com"));
    let wrong = Client { secret: Some("wrong".to_owned()), ..basic_client.clone() };
    let failed = redeem(&app, &wrong, Auth::Basic, &code, &[]);
    failed.assert_error(401, "invalid_client");
    assert_eq!(failed.response.header("www-authenticate"), Some("Basic realm=\"edgeid\""));
    let failed = redeem(&app, &wrong, Auth::Post, &code, &[]);
    failed.assert_error(401, "invalid_client");
    assert!(failed.response.header("www-authenticate").is_none());
    // A confidential client without its secret; a public client with one; an unknown client.
    redeem(&app, &basic_client, Auth::Public, &code, &[]).assert_error(401, "invalid_client");
    let public_with_secret = Client { secret: Some("x".to_owned()), ..public.clone() };
    redeem(&app, &public_with_secret, Auth::Post, &code, &[]).assert_error(401, "invalid_client");
    redeem(&app, &Client { id: "nobody".to_owned(), secret: Some("x".to_owned()) }, Auth::Basic, &code, &[])
        .assert_error(401, "invalid_client");
    // Two methods at once; a malformed Basic header.
    let basic =
        format!("Basic {}", STANDARD.encode(format!("{}:{}", basic_client.id, basic_client.secret.clone().unwrap())));
    let both = [("client_id", basic_client.id.as_str()), ("client_secret", basic_client.secret.as_deref().unwrap())];
    redeem(&app, &basic_client, Auth::Raw(&[("Authorization", &basic)], &both), &code, &[])
        .assert_error(400, "invalid_request");
    redeem(&app, &basic_client, Auth::Raw(&[("Authorization", "Basic !!!")], &[]), &code, &[])
        .assert_error(401, "invalid_client");
    // None of it spent the code.
    assert_eq!(redeem(&app, &basic_client, Auth::Basic, &code, &[]).status, 200);
}

#[test]
fn a_refresh_token_belongs_to_its_client() {
    let app = app();
    app.verified_account("bound@example.com", PASSWORD);
    let client = register(&app, json!({"skip_consent": true}));
    let other = register(&app, json!({"skip_consent": true}));
    let browser = Browser::new(&app);
    let code = code_of(&code_for(&browser, &client, &[("scope", "openid offline_access")], "bound@example.com"));
    let tokens = redeem(&app, &client, Auth::Basic, &code, &[]);
    let refresh_token = tokens.json["refresh_token"].as_str().unwrap();
    let fields = [("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
    token_request(&app, &other, Auth::Basic, &fields).assert_error(400, "invalid_grant");
    // Without client authentication it is the first-party app's request: not its token either.
    let anonymous = app.request(
        "POST",
        "/oauth/token",
        Some("application/x-www-form-urlencoded"),
        format!("grant_type=refresh_token&refresh_token={refresh_token}").as_bytes(),
    );
    anonymous.assert_error(400, "invalid_grant");
    // Its owner still refreshes: nothing was consumed or revoked.
    assert_eq!(token_request(&app, &client, Auth::Basic, &fields).status, 200);
    // A client registered without the refresh grant gets no refresh token.
    let no_refresh = register(&app, json!({"skip_consent": true, "grant_types": ["authorization_code"]}));
    let code = code_of(&code_for(&browser, &no_refresh, &[("scope", "openid offline_access")], "bound@example.com"));
    let tokens = redeem(&app, &no_refresh, Auth::Basic, &code, &[]);
    assert_eq!(tokens.status, 200);
    assert!(tokens.json.get("refresh_token").is_none());
    token_request(&app, &no_refresh, Auth::Basic, &fields).assert_error(400, "unauthorized_client");
}

fn end_session(browser: &Browser, pairs: &[(&str, &str)]) -> Reply {
    browser.get(&format!("/oauth/end-session?{}", query(pairs)))
}

#[test]
fn oidcc_rp_initiated_logout_with_a_hint_ends_the_session_and_its_refresh_tokens() {
    let app = app();
    app.verified_account("logout@example.com", PASSWORD);
    let logout_uri = "https://app.example.test/logged-out";
    let client = register(&app, json!({"skip_consent": true, "post_logout_redirect_uris": [logout_uri]}));
    let browser = Browser::new(&app);
    let code = code_of(&code_for(&browser, &client, &[("scope", "openid offline_access")], "logout@example.com"));
    let tokens = redeem(&app, &client, Auth::Basic, &code, &[]);
    let hint = tokens.json["id_token"].as_str().unwrap();

    // Unregistered destinations, a query added, a forged hint: a page, never a redirect.
    for pairs in [
        vec![("id_token_hint", hint), ("post_logout_redirect_uri", "https://evil.example/")],
        vec![("id_token_hint", hint), ("post_logout_redirect_uri", "https://app.example.test/logged-out?x=1")],
        vec![("id_token_hint", &hint[..hint.len() - 2]), ("post_logout_redirect_uri", logout_uri)],
        vec![("post_logout_redirect_uri", logout_uri)],
        vec![("id_token_hint", hint), ("client_id", "another"), ("post_logout_redirect_uri", logout_uri)],
    ] {
        let reply = end_session(&browser, &pairs);
        assert_eq!(reply.status, 400, "{pairs:?}: {}", reply.text());
        assert!(reply.response.header("location").is_none());
    }
    // Still signed in.
    assert!(parameter(
        &back_at_client(follow(&browser, browser.get(&authorize_path(&client, &[("prompt", "none")])))),
        "code"
    )
    .is_some());

    app.advance(3600); // an expired hint is fine
    let reply =
        end_session(&browser, &[("id_token_hint", hint), ("post_logout_redirect_uri", logout_uri), ("state", "bye 1")]);
    assert_eq!(reply.status, 303, "{}", reply.text());
    assert_eq!(reply.response.header("location"), Some("https://app.example.test/logged-out?state=bye+1"));
    assert!(browser.cookie("__Host-edgeid-session").is_none(), "the cookie is cleared");
    let refused = back_at_client(follow(&browser, browser.get(&authorize_path(&client, &[("prompt", "none")]))));
    assert_eq!(parameter(&refused, "error").as_deref(), Some("login_required"));
    token_request(
        &app,
        &client,
        Auth::Basic,
        &[("grant_type", "refresh_token"), ("refresh_token", tokens.json["refresh_token"].as_str().unwrap())],
    )
    .assert_error(400, "invalid_grant");
}

#[test]
fn oidcc_rp_initiated_logout_without_a_hint_asks_first() {
    let app = app();
    app.verified_account("confirm@example.com", PASSWORD);
    let logout_uri = "https://app.example.test/logged-out";
    let client = register(&app, json!({"skip_consent": true, "post_logout_redirect_uris": [logout_uri]}));
    let browser = Browser::new(&app);
    code_for(&browser, &client, &[], "confirm@example.com");
    let confirm =
        end_session(&browser, &[("client_id", &client.id), ("post_logout_redirect_uri", logout_uri), ("state", "s")]);
    assert_eq!(confirm.status, 200, "{}", confirm.text());
    assert!(confirm.text().contains("value=\"logout\""));
    // Not yet signed out.
    assert!(parameter(
        &back_at_client(follow(&browser, browser.get(&authorize_path(&client, &[("prompt", "none")])))),
        "code"
    )
    .is_some());
    // A forged confirmation does nothing.
    let forged = browser.submit_with(&confirm, &[("decision", "logout")], &[("Origin", "https://evil.example")]);
    assert_eq!(forged.status, 400);
    let done = browser.submit(&confirm, &[("decision", "logout")]);
    assert_eq!(done.status, 303, "{}", done.text());
    assert_eq!(done.response.header("location"), Some("https://app.example.test/logged-out?state=s"));
    let refused = back_at_client(follow(&browser, browser.get(&authorize_path(&client, &[("prompt", "none")]))));
    assert_eq!(parameter(&refused, "error").as_deref(), Some("login_required"));
    // oidcc-rp-initiated-logout-no-params: a confirmation, then a page.
    let confirm = end_session(&browser, &[]);
    assert_eq!(confirm.status, 200);
    assert_eq!(browser.submit(&confirm, &[("decision", "logout")]).status, 200);
}

#[test]
fn a_password_reset_ends_the_browser_session() {
    let app = app();
    app.verified_account("reset@example.com", PASSWORD);
    let client = register(&app, json!({"skip_consent": true}));
    let browser = Browser::new(&app);
    code_for(&browser, &client, &[], "reset@example.com");
    assert_eq!(app.post("/v1/password/forgot", json!({"email": "reset@example.com"})).status, 202);
    let token = token_in_link(&app.single_mail_to("reset@example.com").text, "/reset-password");
    assert_eq!(app.post("/v1/password/reset", json!({"token": token, "password": "a whole new password"})).status, 200);
    let refused = back_at_client(follow(&browser, browser.get(&authorize_path(&client, &[("prompt", "none")]))));
    assert_eq!(parameter(&refused, "error").as_deref(), Some("login_required"));
}

#[test]
fn an_interaction_cannot_be_altered_or_replayed_late() {
    let app = app();
    app.verified_account("tamper@example.com", PASSWORD);
    let client = register(&app, json!({}));
    let browser = Browser::new(&app);
    let login = page(follow(&browser, browser.get(&authorize_path(&client, &[("prompt", "login")]))));
    let tampered = Reply {
        response: edgeid::api::ApiResponse {
            body: login
                .text()
                .replacen("name=\"interaction\" value=\"", "name=\"interaction\" value=\"x", 1)
                .into_bytes(),
            ..login.response.clone()
        },
        status: 200,
        json: Value::Null,
    };
    let refused = browser.submit(&tampered, &[("email", "tamper@example.com"), ("password", PASSWORD)]);
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused.response.header("set-cookie").is_none_or(|cookie| !cookie.contains("__Host-edgeid-session")),
        "no sign-in"
    );
    app.advance(31 * 60);
    let late = browser.submit(&login, &[("email", "tamper@example.com"), ("password", PASSWORD)]);
    assert_eq!(late.status, 400);
}

#[test]
fn oidcc_discovery_endpoint_verification_advertises_what_is_served() {
    let app = app();
    let discovery = app.get("/.well-known/openid-configuration");
    assert_eq!(discovery.status, 200);
    let document = &discovery.json;
    assert_eq!(document["authorization_endpoint"], format!("{ISSUER}/oauth/authorize"));
    assert_eq!(document["end_session_endpoint"], format!("{ISSUER}/oauth/end-session"));
    assert_eq!(document["registration_endpoint"], format!("{ISSUER}/oauth/register"));
    assert_eq!(document["response_types_supported"], json!(["code"]));
    assert_eq!(document["response_modes_supported"], json!(["query"]));
    assert_eq!(document["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(document["grant_types_supported"], json!(["authorization_code", "refresh_token"]));
    assert_eq!(
        document["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post", "none"])
    );
    assert_eq!(document["prompt_values_supported"], json!(["none", "login", "consent", "select_account"]));
    assert_eq!(document["authorization_response_iss_parameter_supported"], true);
    for field in ["request_parameter_supported", "request_uri_parameter_supported", "claims_parameter_supported"] {
        assert_eq!(document[field], false, "{field}");
    }
    // Every advertised algorithm has a key in the JWKS.
    let jwks = app.get("/.well-known/jwks.json").json;
    for alg in document["id_token_signing_alg_values_supported"].as_array().unwrap() {
        assert!(jwks["keys"].as_array().unwrap().iter().any(|key| key["alg"] == *alg), "{alg}");
    }
    // RFC 8414: the same document.
    let metadata = app.get("/.well-known/oauth-authorization-server");
    assert_eq!(metadata.status, 200);
    assert_eq!(metadata.json, discovery.json);
    assert_eq!(app.request("DELETE", "/oauth/authorize", None, b"").status, 405);
    assert_eq!(app.request("PUT", "/userinfo", None, b"").response.header("allow"), Some("GET, HEAD, POST"));
}

#[test]
fn bad_input_on_every_provider_endpoint_is_a_clear_error_never_a_500() {
    let app = app();
    let client = register(&app, json!({}));
    let long = "x".repeat(20_000);
    let garbage: Vec<(&str, &str, Option<&str>, Vec<u8>)> = vec![
        ("GET", "/oauth/authorize", None, Vec::new()),
        ("GET", "/oauth/authorize?%ff%fe=%00", None, Vec::new()),
        ("POST", "/oauth/authorize", Some("application/json"), b"{}".to_vec()),
        ("POST", "/oauth/authorize", Some("application/x-www-form-urlencoded"), vec![0xff, 0xfe]),
        ("POST", "/oauth/authorize", Some("application/x-www-form-urlencoded"), long.clone().into_bytes()),
        ("GET", "/oauth/authorize/resume", None, Vec::new()),
        ("GET", "/oauth/authorize/resume?interaction=a.b", None, Vec::new()),
        ("POST", "/oauth/authorize/consent", Some("application/x-www-form-urlencoded"), b"decision=allow".to_vec()),
        ("POST", "/oauth/authorize/consent", Some("text/plain"), b"decision=allow".to_vec()),
        ("POST", "/oauth/token", Some("application/x-www-form-urlencoded"), b"grant_type=authorization_code".to_vec()),
        (
            "POST",
            "/oauth/token",
            Some("application/x-www-form-urlencoded"),
            b"grant_type=authorization_code&client_id=%00&code=x".to_vec(),
        ),
        (
            "POST",
            "/oauth/token",
            Some("application/x-www-form-urlencoded"),
            b"grant_type=refresh_token&refresh_token=x&scope=%ff".to_vec(),
        ),
        ("POST", "/oauth/token", Some("application/json"), b"[1]".to_vec()),
        ("GET", "/oauth/end-session?id_token_hint=a.b.c", None, Vec::new()),
        ("GET", "/oauth/end-session?post_logout_redirect_uri=javascript:alert(1)&client_id=x", None, Vec::new()),
        ("POST", "/oauth/end-session", Some("application/x-www-form-urlencoded"), b"decision=logout".to_vec()),
        ("POST", "/oauth/end-session", Some("application/json"), b"{}".to_vec()),
        ("POST", "/userinfo", Some("application/x-www-form-urlencoded"), b"access_token=x".to_vec()),
        ("POST", "/userinfo", Some("application/json"), b"{\"access_token\": 1}".to_vec()),
    ];
    for (method, path, content_type, body) in garbage {
        let reply = app.request(method, path, content_type, &body);
        assert!((400..500).contains(&reply.status), "{method} {path}: {} {}", reply.status, reply.text());
    }
    let path = authorize_path(&client, &[("state", &long[..4000]), ("nonce", &long[..4000])]);
    let reply = app.get(&path);
    assert!(reply.status < 500, "{}", reply.status);
    let basic = [("Authorization", "Basic "), ("Authorization", "Bearer x"), ("Authorization", "Basic Og==")];
    for (name, value) in basic {
        let reply = token_request(
            &app,
            &client,
            Auth::Raw(&[(name, value)], &[]),
            &[("grant_type", "authorization_code"), ("code", "x")],
        );
        assert!((400..500).contains(&reply.status), "{value}: {}", reply.text());
    }
}

// ---------------------------------------------------------------------------------------------
// Security review of 71fde27: each test proves a finding fixed (an attack that worked).
// ---------------------------------------------------------------------------------------------

/// Finding: an `id_token_hint` alone, from any party that holds one (an RP's back end, a log,
/// an expired token), ends the session it names — without that browser, its cookie or a
/// confirmation — and with it the refresh tokens of every client in that browser session.
#[test]
fn review_provider_a_hint_alone_does_not_end_somebody_elses_session() {
    let app = app();
    app.verified_account("victim@example.com", PASSWORD);
    let victim_app = register(&app, json!({"skip_consent": true}));
    let other_app = register(&app, json!({"skip_consent": true}));
    let victim = Browser::new(&app);
    let code = code_of(&code_for(&victim, &victim_app, &[], "victim@example.com"));
    let hint = redeem(&app, &victim_app, Auth::Basic, &code, &[]).json["id_token"].as_str().unwrap().to_owned();
    // The same browser session also holds another app's refresh token.
    let code = code_of(&code_for(&victim, &other_app, &[("scope", "openid offline_access")], "victim@example.com"));
    let other_tokens = redeem(&app, &other_app, Auth::Basic, &code, &[]);
    let other_refresh = other_tokens.json["refresh_token"].as_str().unwrap().to_owned();

    // Somebody else, with no cookie at all (a server-side fetch, or an <img> on any site).
    app.advance(3600);
    let stranger = Browser::new(&app);
    let reply = end_session(&stranger, &[("id_token_hint", &hint)]);
    assert!(reply.status < 500, "{}", reply.text());

    let still = back_at_client(follow(&victim, victim.get(&authorize_path(&victim_app, &[("prompt", "none")]))));
    assert!(parameter(&still, "code").is_some(), "the victim's SSO session was ended by a stranger: {still:?}");
    let refreshed = token_request(
        &app,
        &other_app,
        Auth::Basic,
        &[("grant_type", "refresh_token"), ("refresh_token", &other_refresh)],
    );
    assert_eq!(refreshed.status, 200, "another app's refresh token was revoked by a stranger: {}", refreshed.text());
}

/// Finding: logout CSRF. An attacker's *own* ID token is a "valid hint", so a top-level GET
/// to end-session from any site skips the confirmation and clears the victim's SSO cookie
/// (and may redirect to the attacker's registered post_logout_redirect_uri).
#[test]
fn review_provider_a_hint_for_another_user_still_asks_before_clearing_the_cookie() {
    let app = app();
    app.verified_account("victim2@example.com", PASSWORD);
    app.verified_account("attacker@example.com", PASSWORD);
    let client = register(&app, json!({"skip_consent": true}));
    let attacker = Browser::new(&app);
    let code = code_of(&code_for(&attacker, &client, &[], "attacker@example.com"));
    let attackers_hint = redeem(&app, &client, Auth::Basic, &code, &[]).json["id_token"].as_str().unwrap().to_owned();

    let victim = Browser::new(&app);
    code_for(&victim, &client, &[], "victim2@example.com");
    assert!(victim.cookie("__Host-edgeid-session").is_some());
    let reply = end_session(&victim, &[("id_token_hint", &attackers_hint)]);
    assert!(
        reply.status == 200 && reply.text().contains("value=\"logout\""),
        "a hint for another user than the browser's must ask first; got {} {:?}: {}",
        reply.status,
        reply.response.header("set-cookie"),
        reply.text()
    );
    assert!(victim.cookie("__Host-edgeid-session").is_some(), "the victim's cookie was cleared without asking");
}

/// Finding: a client registered with the default `id_token_signed_response_alg` (RS256) while
/// the keyring signs ES256 gets a 500 at the token endpoint, after its code was consumed and a
/// grant with a refresh token was created; the retry is then "already used" and revokes it.
#[test]
fn review_provider_a_default_rs256_client_never_gets_a_500_for_its_code() {
    let app = app();
    app.verified_account("rs256@example.com", PASSWORD);
    let client = register(&app, json!({"skip_consent": true, "id_token_signed_response_alg": "RS256"}));
    let browser = Browser::new(&app);
    let code = code_of(&code_for(&browser, &client, &[], "rs256@example.com"));
    let first = redeem(&app, &client, Auth::Basic, &code, &[]);
    assert!(first.status < 500, "a registered client's valid code gave {}: {}", first.status, first.text());
}

/// Finding: /userinfo checks "a live grant of this client in this browser session", not the
/// grant the token came from. An access token whose grant a code reuse revoked works again as
/// soon as the same client gets any other grant in that browser session.
#[test]
fn review_provider_a_revoked_grants_access_token_stays_revoked() {
    let app = app();
    app.verified_account("revived@example.com", PASSWORD);
    let client = register(&app, json!({"skip_consent": true}));
    let browser = Browser::new(&app);
    let code = code_of(&code_for(&browser, &client, &[], "revived@example.com"));
    let first = redeem(&app, &client, Auth::Basic, &code, &[]);
    let stolen = first.json["access_token"].as_str().unwrap().to_owned();
    app.advance(2);
    redeem(&app, &client, Auth::Basic, &code, &[]).assert_error(400, "invalid_grant");
    assert_eq!(userinfo(&app, "GET", &stolen).status, 401, "revoked by the reuse");
    // The user signs in to the app again (same browser session): a new grant.
    let code = code_of(&code_for(&browser, &client, &[], "revived@example.com"));
    assert_eq!(redeem(&app, &client, Auth::Basic, &code, &[]).status, 200);
    assert_eq!(userinfo(&app, "GET", &stolen).status, 401, "the revoked grant's access token is accepted again");
}

/// Finding: for a public client, anybody who sees a used code (history, logs, Referer) revokes
/// the legitimate grant with the bare client_id: the reuse branch runs before (without) the
/// PKCE and redirect_uri checks.
#[test]
fn review_provider_a_leaked_used_code_without_its_verifier_revokes_nothing() {
    let app = app();
    app.verified_account("leak@example.com", PASSWORD);
    let public = register(&app, json!({"token_endpoint_auth_method": "none", "skip_consent": true}));
    let browser = Browser::new(&app);
    let pkce = [("code_challenge", CHALLENGE), ("code_challenge_method", "S256"), ("scope", "openid offline_access")];
    let code = code_of(&code_for(&browser, &public, &pkce, "leak@example.com"));
    let tokens = redeem(&app, &public, Auth::Public, &code, &[("code_verifier", VERIFIER)]);
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let refresh = tokens.json["refresh_token"].as_str().unwrap().to_owned();
    // The attacker: the code and the public client_id, no verifier.
    app.advance(5);
    redeem(&app, &public, Auth::Public, &code, &[]).assert_error(400, "invalid_grant");
    let refreshed =
        token_request(&app, &public, Auth::Public, &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]);
    assert_eq!(refreshed.status, 200, "the legitimate grant was revoked: {}", refreshed.text());
}

/// HEAD is answered like GET: a HEAD of /oauth/authorize stores a code (a write on a safe
/// method nobody needs). Low; proves only that the write happens.
#[test]
fn review_provider_head_of_authorize_stores_no_code() {
    let app = app();
    app.verified_account("head@example.com", PASSWORD);
    let client = register(&app, json!({"skip_consent": true}));
    let browser = Browser::new(&app);
    code_for(&browser, &client, &[], "head@example.com");
    let before = app.users_count("SELECT count(*) FROM authorization_codes");
    let path = authorize_path(&client, &[]);
    let (path, query) = path.split_once('?').unwrap();
    let cookie = format!("__Host-edgeid-session={}", browser.cookie("__Host-edgeid-session").unwrap());
    let reply = app.send(ApiRequest {
        method: "HEAD".into(),
        path: path.into(),
        query: query.into(),
        headers: vec![("Cookie".to_owned(), cookie)],
        ..Default::default()
    });
    assert!(reply.status < 500);
    assert_eq!(app.users_count("SELECT count(*) FROM authorization_codes"), before, "HEAD stored a code");
}

/// Functional (CSP): after a wrong password the login page is rendered again without the
/// client's origin in `form-action`, so browsers that enforce form-action on redirects block
/// the second, right attempt's final 303 to the client.
#[test]
fn review_provider_the_login_page_after_a_wrong_password_keeps_the_clients_form_action() {
    let app = app();
    app.verified_account("csp@example.com", PASSWORD);
    let client = register(&app, json!({}));
    let browser = Browser::new(&app);
    let login = page(follow(&browser, browser.get(&authorize_path(&client, &[]))));
    let wrong = browser.submit(&login, &[("email", "csp@example.com"), ("password", "not the password")]);
    assert_eq!(wrong.status, 401);
    let csp = wrong.response.header("content-security-policy").unwrap();
    assert!(csp.contains("https://app.example.test"), "{csp}");
}

// ---------------------------------------------------------------------------------------------
// Security review 12b of the fixes (c7026d5, 3293729, 8842b5f, c1773cd): each test asserts the
// behaviour the fix should have, and fails on this branch (the finding).
// ---------------------------------------------------------------------------------------------

/// Finding (low): end-session compares only the hint's `sub` with the browser's user, not its
/// `sid`. Any ID token the user was ever issued — by any client, in a session long ended,
/// expired, seen in a log or a Referer (the hint travels in a URL) — logs that user out of
/// every later browser session with a cross-site GET, no confirmation. A hint whose `sid` is
/// not this browser session proves no RP holds a current session here: ask first.
#[test]
fn review_provider_a_hint_from_an_ended_session_asks_before_ending_this_one() {
    let app = app();
    app.verified_account("oldhint@example.com", PASSWORD);
    let client = register(&app, json!({"skip_consent": true}));
    let browser = Browser::new(&app);
    let code = code_of(&code_for(&browser, &client, &[], "oldhint@example.com"));
    let old_hint = redeem(&app, &client, Auth::Basic, &code, &[]).json["id_token"].as_str().unwrap().to_owned();
    // The user signs out and, a day later, in again: a new browser session.
    let confirm = end_session(&browser, &[]);
    assert_eq!(browser.submit(&confirm, &[("decision", "logout")]).status, 200);
    app.advance(86_400);
    let code = code_of(&code_for(&browser, &client, &[], "oldhint@example.com"));
    let new_hint = redeem(&app, &client, Auth::Basic, &code, &[]).json["id_token"].as_str().unwrap().to_owned();
    assert_ne!(claims(&old_hint)["sid"], claims(&new_hint)["sid"], "two browser sessions");

    // Whoever kept the day-old hint: a link on any site.
    let reply = end_session(&browser, &[("id_token_hint", &old_hint)]);
    assert!(
        reply.status == 200 && reply.text().contains("value=\"logout\""),
        "a hint of an ended session logged this one out without asking: {} {:?}",
        reply.status,
        reply.response.header("set-cookie"),
    );
    let still = back_at_client(follow(&browser, browser.get(&authorize_path(&client, &[("prompt", "none")]))));
    assert!(parameter(&still, "code").is_some(), "{still:?}");
}

/// Finding (low): "codes are spent only when their ID token can be signed" (8842b5f) guards the
/// code grant only. The refresh grant rotates the refresh token first and signs after, so a
/// client whose `id_token_signed_response_alg` has no signing key (registered with ES256, then
/// `SIGNING_ALG` moved to EdDSA, which the keyring supports) gets a 500 *and* loses its
/// refresh token: its retry after the grace window is "reuse", and the family is revoked.
#[test]
fn review_provider_a_refresh_that_cannot_sign_spends_nothing() {
    let app = app();
    app.verified_account("refresh-alg@example.com", PASSWORD);
    let client = register(&app, json!({"skip_consent": true, "id_token_signed_response_alg": "ES256"}));
    let browser = Browser::new(&app);
    let code = code_of(&code_for(&browser, &client, &[("scope", "openid offline_access")], "refresh-alg@example.com"));
    let tokens = redeem(&app, &client, Auth::Basic, &code, &[]);
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let refresh = tokens.json["refresh_token"].as_str().unwrap().to_owned();
    let refresh_with = |app: &App| {
        token_request(app, &client, Auth::Basic, &[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
    };

    // The operator moves SIGNING_ALG: no key signs ES256 any more.
    let app = App { config: test_config(&[("SIGNING_ALG", "EdDSA")]), ..app };
    let failed = refresh_with(&app);
    assert!(failed.status >= 500, "expected the keyring's 500 here: {} {}", failed.status, failed.text());

    // Back to ES256 (or the client re-registers its algorithm); the client retries later.
    let app = App { config: test_config(&[]), ..app };
    app.advance(60);
    let retried = refresh_with(&app);
    assert_eq!(retried.status, 200, "the refresh token was spent by a refresh that could not sign: {}", retried.text());
}

/// An isolate keeps the clients it has read (`store::ClientCache`, a minute): once the
/// authorization endpoint has read a client, its code grant is one round trip (the shard's
/// batch) and so is its refresh grant; a wrong secret is refused all the same and spends
/// nothing; past the minute the client is read from `DB` again.
#[test]
fn a_warm_token_endpoint_authenticates_a_known_client_without_reading_db() {
    let mut app = app();
    app.keyring = edgeid::keyring::Keyring::new(60);
    app.clients = edgeid::store::ClientCache::new(60);
    app.verified_account("warm@example.com", PASSWORD);
    let client = register(&app, json!({"skip_consent": true}));
    let browser = Browser::new(&app);
    let offline = [("scope", "openid offline_access")];
    // The first grant also reads the signing keys.
    let code = code_of(&code_for(&browser, &client, &offline, "warm@example.com"));
    assert_eq!(redeem(&app, &client, Auth::Basic, &code, &[]).status, 200);
    let code = code_of(&code_for(&browser, &client, &offline, "warm@example.com"));
    let wrong = Client { secret: Some("wrong".to_owned()), ..client.clone() };
    redeem(&app, &wrong, Auth::Basic, &code, &[]).assert_error(401, "invalid_client");
    let before = app.round_trips();
    let tokens = redeem(&app, &client, Auth::Basic, &code, &[]);
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    assert_eq!(app.round_trips() - before, 1, "the code grant with the client known to the isolate");
    // A refresh with the token of `tokens`: its reply and the round trips it made.
    let refresh = |tokens: &Reply| {
        let refresh_token = tokens.json["refresh_token"].as_str().unwrap().to_owned();
        let before = app.round_trips();
        let fields = [("grant_type", "refresh_token"), ("refresh_token", refresh_token.as_str())];
        let refreshed = token_request(&app, &client, Auth::Basic, &fields);
        assert_eq!(refreshed.status, 200, "{}", refreshed.text());
        (app.round_trips() - before, refreshed)
    };
    let (trips, refreshed) = refresh(&tokens);
    assert_eq!(trips, 1, "the client's refresh grant");
    // A minute later the copy is read again (the keys too: their cache is a minute as well).
    app.advance(61);
    let (trips, _) = refresh(&refreshed);
    assert!(trips >= 2, "the client is read from DB again");
}
