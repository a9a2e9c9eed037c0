//! Client registration (RFC 7591) natively: who may register, what a client gets (a secret
//! shown once and stored hashed), and the metadata rules as HTTP errors.

use edgeid::api::ApiRequest;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::{test_config, App, Reply};

const TOKEN: &str = "registration-token-for-the-native-tests-0123456789";

fn app(mode: &str) -> App {
    App::with_config(test_config(&[("CLIENT_REGISTRATION", mode), ("CLIENT_REGISTRATION_TOKEN", TOKEN)]))
}

fn register(app: &App, token: Option<&str>, body: Value) -> Reply {
    let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    if let Some(token) = token {
        headers.push(("Authorization".to_owned(), format!("Bearer {token}")));
    }
    app.send(ApiRequest {
        method: "POST".into(),
        path: "/oauth/register".into(),
        headers,
        body: body.to_string().into_bytes(),
        ..Default::default()
    })
}

#[test]
fn a_confidential_client_gets_a_secret_once_and_it_is_stored_hashed() {
    let app = app("token");
    let reply =
        register(&app, Some(TOKEN), json!({"redirect_uris": ["https://app.example.com/cb"], "client_name": "App"}));
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(reply.response.header("cache-control"), Some("no-store"));
    let client = &reply.json;
    let secret = client["client_secret"].as_str().unwrap();
    assert!(secret.len() >= 43, "256 bits");
    assert_eq!(client["client_secret_expires_at"], 0);
    assert_eq!(client["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(client["grant_types"], json!(["authorization_code", "refresh_token"]));
    assert_eq!(client["response_types"], json!(["code"]));
    assert_eq!(client["id_token_signed_response_alg"], "RS256");
    assert_eq!(client["redirect_uris"], json!(["https://app.example.com/cb"]));
    assert_eq!(client["client_name"], "App");
    assert_eq!(client["client_id_issued_at"], app.now.get().timestamp());
    let id = client["client_id"].as_str().unwrap();
    let stored = app.db.text(&format!("SELECT client_secret_hash FROM clients WHERE client_id = '{id}'"));
    let expected: String = Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(stored, expected);
    assert_eq!(app.db.count(&format!("SELECT count(*) FROM clients WHERE client_secret_hash = '{secret}'")), 0);
}

#[test]
fn a_public_client_gets_no_secret() {
    let app = app("token");
    let reply = register(
        &app,
        Some(TOKEN),
        json!({"redirect_uris": ["http://127.0.0.1:5173/cb"], "token_endpoint_auth_method": "none", "skip_consent": true}),
    );
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert!(reply.json.get("client_secret").is_none());
    assert_eq!(reply.json["skip_consent"], true);
    assert_eq!(app.db.count("SELECT count(*) FROM clients WHERE client_secret_hash IS NULL AND skip_consent = 1"), 1);
}

#[test]
fn who_may_register_follows_client_registration() {
    let body = json!({"redirect_uris": ["https://app.example.com/cb"]});
    let token_only = app("token");
    for token in [None, Some("wrong"), Some(&TOKEN[..TOKEN.len() - 1])] {
        let reply = register(&token_only, token, body.clone());
        reply.assert_error(401, "invalid_token");
        assert!(reply.response.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")));
    }
    let open = app("open");
    assert_eq!(register(&open, None, body.clone()).status, 201);
    register(&open, Some("wrong"), body.clone()).assert_error(401, "invalid_token");
    // An open registration never skips consent: only an operator's client may.
    let skip = json!({"redirect_uris": ["https://app.example.com/cb"], "skip_consent": true});
    register(&open, None, skip.clone()).assert_error(400, "invalid_client_metadata");
    assert_eq!(register(&open, Some(TOKEN), skip).status, 201);
    let off = app("off");
    register(&off, Some(TOKEN), body.clone()).assert_error(403, "access_denied");
    register(&off, None, body).assert_error(403, "access_denied");
    // Without a configured token, nobody's token is right.
    let unconfigured = App::with_config(test_config(&[]));
    register(&unconfigured, Some(TOKEN), json!({"redirect_uris": ["https://a.example/cb"]}))
        .assert_error(401, "invalid_token");
    assert_eq!(off.db.count("SELECT count(*) FROM clients"), 0);
}

#[test]
fn bad_metadata_is_a_clear_error_and_stores_nothing() {
    let app = app("token");
    for (body, code) in [
        (json!({}), "invalid_redirect_uri"),
        (json!({"redirect_uris": ["http://app.example.com/cb"]}), "invalid_redirect_uri"),
        (json!({"redirect_uris": ["https://app.example.com/cb#x"]}), "invalid_redirect_uri"),
        (json!({"redirect_uris": [7]}), "invalid_redirect_uri"),
        (json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["password"]}), "invalid_client_metadata"),
        (
            json!({"redirect_uris": ["https://a.example/cb"], "id_token_signed_response_alg": "none"}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "tls_client_auth"}),
            "invalid_client_metadata",
        ),
    ] {
        register(&app, Some(TOKEN), body.clone()).assert_error(400, code);
    }
    // Not JSON, or not an object: the media type and the request, as everywhere.
    let form = app.send(ApiRequest {
        method: "POST".into(),
        path: "/oauth/register".into(),
        headers: vec![
            ("Content-Type".into(), "application/x-www-form-urlencoded".into()),
            ("Authorization".into(), format!("Bearer {TOKEN}")),
        ],
        body: b"redirect_uris=https://a.example/cb".to_vec(),
        ..Default::default()
    });
    form.assert_error(415, "unsupported_media_type");
    app.request("GET", "/oauth/register", None, b"").assert_error(405, "method_not_allowed");
    assert_eq!(app.db.count("SELECT count(*) FROM clients"), 0);
}

/// A client may only ask for ID tokens edgeid can sign: `SIGNING_ALG` or RS256
/// (`Config::signing_algorithms`), never another algorithm it only knows the name of.
#[test]
fn the_id_token_algorithm_must_be_one_edgeid_signs_with() {
    let body =
        |alg: &str| json!({"redirect_uris": ["https://app.example.com/cb"], "id_token_signed_response_alg": alg});
    let registered = |app: &App, alg: &str| {
        let reply = register(app, Some(TOKEN), body(alg));
        assert_eq!(reply.status, 201, "{alg}: {}", reply.text());
        assert_eq!(reply.json["id_token_signed_response_alg"], alg);
    };
    let es256 = app("token");
    registered(&es256, "RS256");
    registered(&es256, "ES256");
    register(&es256, Some(TOKEN), body("EdDSA")).assert_error(400, "invalid_client_metadata");

    let rs256_only = App::with_config(test_config(&[
        ("CLIENT_REGISTRATION", "token"),
        ("CLIENT_REGISTRATION_TOKEN", TOKEN),
        ("SIGNING_ALG", "RS256"),
    ]));
    registered(&rs256_only, "RS256");
    for alg in ["ES256", "EdDSA"] {
        register(&rs256_only, Some(TOKEN), body(alg)).assert_error(400, "invalid_client_metadata");
    }
    assert_eq!(rs256_only.db.count("SELECT count(*) FROM clients"), 1);
}
