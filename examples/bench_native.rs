//! The native side of the benchmark command (scripts/bench.sh): the same code as the worker,
//! compiled for the host. Prints JSON:
//! - `argon2_ms_per_hash`: Argon2id at the OWASP minimum, as the worker hashes;
//! - `verify_us_per_token`: edgeid-verifier checking an access token against a cached JWKS,
//!   as a downstream Rust service does.
//!
//! - with `round-trips`, `round_trips`: the sequential D1 round trips (batches) of each
//!   provider flow, counted on the tests' SQLite behind the same `Database` port
//!   (tests/support), requests going through `api::handle` as in the worker; and `flows`:
//!   each flow's round trips (in all, before its response, after it) and statements in `DB`
//!   and in the shards, the provider flows' included. bench/latency.mjs compares the round
//!   trips before the response with what a delay per round trip adds to the worker's latency.
//!
//! `cargo run --release --example bench_native -- ISSUER AUDIENCE ACCESS_TOKEN JWKS_FILE`, or
//! `… -- argon2 N` for `argon2_ms_per_hash` alone over N hashes (the benchmark interleaves
//! these runs with the worker's, on the same core), or `… -- round-trips`.

use std::time::Instant;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use edgeid::api::ApiRequest;
use edgeid::domain::password::{hash_password, HashParams, Password};
use edgeid::flows::Outbox;
use edgeid::keyring::Keyring;
use edgeid::store::ClientCache;
use edgeid_verifier::{FetchError, JwksFetcher, JwksResponse, Verifier, VerifierConfig};
use serde_json::json;

// The tests' SQLite `Database` (every batch counted), seeded crypto and app driver.
#[allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "../tests/support/mod.rs"]
mod support;

/// Serves the JWKS the benchmark fetched from the worker, as the issuer would.
struct CachedJwks(String);

impl JwksFetcher for CachedJwks {
    async fn fetch(&self, _url: &str) -> Result<JwksResponse, FetchError> {
        Ok(JwksResponse { status: 200, cache_control: Some("public, max-age=300".to_owned()), body: self.0.clone() })
    }
}

/// Milliseconds per Argon2id hash at the OWASP minimum, over `hashes` hashes.
fn argon2_ms(hashes: u32) -> Result<f64, String> {
    let password = Password::presented("a benchmark passphrase");
    let started = Instant::now();
    for index in 0..hashes {
        hash_password(&password, &[index as u8; 16], &HashParams::OWASP_MINIMUM).map_err(|err| err.to_string())?;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0 / f64::from(hashes))
}

const REGISTRATION_TOKEN: &str = "registration-token-for-the-benchmark-0123456789";
const REDIRECT: &str = "https://app.example.test/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn form(pairs: &[(&str, &str)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        serializer.append_pair(key, value);
    }
    serializer.finish()
}

/// What one request (with the work it leaves for after its response) asks of the databases:
/// sequential round trips (in all; before the response, which its latency waits for; after
/// it, in `waitUntil`), and statements in `DB` and in the user shards (a routed batch's fence
/// included).
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Cost {
    round_trips: usize,
    before_response: usize,
    after_response: usize,
    db_statements: usize,
    shard_statements: usize,
}

fn statements(app: &support::App) -> (usize, usize) {
    (app.db.statements.get(), app.user_shards().map(|shard| shard.statements.get()).sum())
}

fn costed(app: &support::App, request: ApiRequest) -> (Cost, support::Reply) {
    let (trips, (db, shards)) = (app.round_trips(), statements(app));
    let reply = app.send(request);
    let (db_after, shards_after) = statements(app);
    let (at_response, after) = (app.round_trips_at_response.get(), app.round_trips());
    let cost = Cost {
        round_trips: after - trips,
        before_response: at_response - trips,
        after_response: after - at_response,
        db_statements: db_after - db,
        shard_statements: shards_after - shards,
    };
    (cost, reply)
}

/// A JSON POST from a client address, so that the per-client budgets are drawn as in production.
fn json_post(path: &str, body: serde_json::Value) -> ApiRequest {
    ApiRequest {
        method: "POST".into(),
        path: path.into(),
        headers: vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("CF-Connecting-IP".to_owned(), "203.0.113.7".to_owned()),
        ],
        body: body.to_string().into_bytes(),
        ..Default::default()
    }
}

/// The account flows' costs with every budget at its default, each after a warm-up (the bucket
/// map and the key table cached, as in a busy isolate): sign-up (with its work after the response), verification by link,
/// login (with its budgets given back after the response), the first-party refresh, userinfo,
/// a forgot-password and the reset; and `/healthz` (one batch, the latency run's check of its
/// timer).
fn flow_costs() -> Result<serde_json::Value, String> {
    // Every budget at its default (API.md), as an installation runs.
    let mut app = support::App::with_config(support::test_config(&[
        ("RATE_LIMIT_LOGIN_PER_IP", "100/900"),
        ("RATE_LIMIT_LOGIN_PER_ACCOUNT", "100/3600"),
        ("RATE_LIMIT_LOGIN_PER_ACCOUNT_NETWORK", "10/900"),
        ("RATE_LIMIT_CODE_PER_IP", "30/3600"),
        ("RATE_LIMIT_CODE_PER_DOMAIN", "100/3600"),
        ("RATE_LIMIT_MAIL_PER_IP", "30/3600"),
        ("RATE_LIMIT_MAIL_PER_ADDRESS", "5/3600"),
        ("RATE_LIMIT_TOKEN_PER_IP", "60/900"),
    ]));
    let password = "a benchmark passphrase";
    app.verified_account("warm@example.com", password);
    app.get("/.well-known/jwks.json");
    app.keyring = Keyring::new(60);
    app.post("/v1/login", json!({"email": "warm@example.com", "password": password}));
    let email = "costs@example.com";
    let (signup, _) = costed(&app, json_post("/v1/signup", json!({"email": email, "password": password})));
    let token = support::token_in_link(&app.single_mail_to(email).text, "/verify-email");
    let (verify, _) = costed(&app, json_post("/v1/email/verify", json!({"token": token})));
    let (login, reply) = costed(&app, json_post("/v1/login", json!({"email": email, "password": password})));
    let refresh_token = reply.json["refresh_token"].as_str().ok_or(format!("login: {}", reply.text()))?.to_owned();
    let access = reply.json["access_token"].as_str().unwrap_or_default().to_owned();
    let (refresh, _) = costed(
        &app,
        ApiRequest {
            method: "POST".into(),
            path: "/oauth/token".into(),
            headers: vec![("Content-Type".to_owned(), "application/x-www-form-urlencoded".to_owned())],
            body: form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh_token)]).into_bytes(),
            ..Default::default()
        },
    );
    let (userinfo, _) = costed(
        &app,
        ApiRequest {
            method: "GET".into(),
            path: "/userinfo".into(),
            headers: vec![("Authorization".to_owned(), format!("Bearer {access}"))],
            ..Default::default()
        },
    );
    let (forgot, _) = costed(&app, json_post("/v1/password/forgot", json!({"email": email})));
    let reset_token = support::token_in_link(&app.single_mail_to(email).text, "/reset-password");
    let (reset, _) =
        costed(&app, json_post("/v1/password/reset", json!({"token": reset_token, "password": "another passphrase"})));
    let (jwks, _) =
        costed(&app, ApiRequest { method: "GET".into(), path: "/.well-known/jwks.json".into(), ..Default::default() });
    let (health, _) = costed(&app, ApiRequest { method: "GET".into(), path: "/healthz".into(), ..Default::default() });
    Ok(json!({
        "signup": signup, "verify_email": verify, "login": login, "refresh_first_party": refresh,
        "userinfo": userinfo, "forgot_password": forgot, "reset_password": reset, "jwks": jwks,
        "healthz": health,
    }))
}

fn token_request(client_id: &str, secret: &str, fields: &[(&str, &str)]) -> ApiRequest {
    let credentials = STANDARD.encode(format!("{client_id}:{secret}"));
    ApiRequest {
        method: "POST".into(),
        path: "/oauth/token".into(),
        headers: vec![
            ("Content-Type".to_owned(), "application/x-www-form-urlencoded".to_owned()),
            ("Authorization".to_owned(), format!("Basic {credentials}")),
        ],
        body: form(fields).into_bytes(),
        ..Default::default()
    }
}

/// Round trips (and each flow's `Cost`, statements included) of the provider's flows, as the
/// benchmark drives them: a skip_consent
/// confidential client (client_secret_basic), a browser session from the hosted login's
/// sign-in, `GET /oauth/authorize` with its cookie, the code redeemed with PKCE (first with an
/// empty key cache, as an isolate's first grant, then warm), the refresh grant of that client,
/// and the first-party refresh grant of `/v1/login` (the one bench/run.mjs loads). The key
/// cache lasts a minute, as the worker's does.
fn round_trips() -> Result<(serde_json::Value, serde_json::Value), String> {
    let mut app = support::App::with_config(support::test_config(&[
        ("CLIENT_REGISTRATION", "token"),
        ("CLIENT_REGISTRATION_TOKEN", REGISTRATION_TOKEN),
    ]));
    let (email, password) = ("bench-codes@example.com", "a benchmark passphrase");
    app.verified_account(email, password);
    // The key table as a running installation has it (the first read makes the bootstrap
    // key), then an isolate's empty key cache.
    app.get("/.well-known/jwks.json");
    app.keyring = Keyring::new(60);
    app.clients = ClientCache::new(60);
    let registered = app.send(ApiRequest {
        method: "POST".into(),
        path: "/oauth/register".into(),
        headers: vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("Authorization".to_owned(), format!("Bearer {REGISTRATION_TOKEN}")),
        ],
        body: json!({
            "redirect_uris": [REDIRECT],
            "client_name": "Benchmark",
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "client_secret_basic",
            "id_token_signed_response_alg": "ES256",
            "skip_consent": true,
        })
        .to_string()
        .into_bytes(),
        ..Default::default()
    });
    let field = |name: &str| {
        registered.json[name].as_str().map(str::to_owned).ok_or(format!("no {name}: {}", registered.text()))
    };
    let (client_id, secret) = (field("client_id")?, field("client_secret")?);
    let outbox = Outbox::default();
    let ctx = app.context(&outbox);
    let signed_in = pollster::block_on(edgeid::flows::login::sign_in_browser(&ctx, email, password))
        .map_err(|err| format!("browser sign-in: {err}"))?;
    let authorize = || {
        let query = form(&[
            ("response_type", "code"),
            ("client_id", &client_id),
            ("redirect_uri", REDIRECT),
            ("scope", "openid email offline_access"),
            ("state", "s"),
            ("nonce", "n"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ]);
        let (cost, reply) = costed(
            &app,
            ApiRequest {
                method: "GET".into(),
                path: "/oauth/authorize".into(),
                query,
                headers: vec![("Cookie".to_owned(), format!("__Host-edgeid-session={}", signed_in.cookie))],
                ..Default::default()
            },
        );
        let location = reply.response.header("location").unwrap_or_default().to_owned();
        let code = form_urlencoded::parse(location.split_once('?').map(|(_, q)| q).unwrap_or_default().as_bytes())
            .find(|(key, _)| key == "code")
            .map(|(_, value)| value.into_owned())
            .ok_or(format!("authorize: {} {location} {}", reply.status, reply.text()))?;
        Ok::<_, String>((cost, code))
    };
    let redeem = |code: &str| {
        let (cost, reply) = costed(
            &app,
            token_request(
                &client_id,
                &secret,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", VERIFIER),
                ],
            ),
        );
        match reply.json["refresh_token"].as_str() {
            Some(refresh) if reply.status == 200 => Ok((cost, refresh.to_owned())),
            _ => Err(format!("code grant: {} {}", reply.status, reply.text())),
        }
    };
    let (authorized, first_code) = authorize()?;
    let (_, second_code) = authorize()?;
    // The key cache is empty for the first grant that signs (the authorizations did not sign).
    let (cold, _) = redeem(&first_code)?;
    let (warm, refresh_token) = redeem(&second_code)?;
    let (client_refresh, reply) = costed(
        &app,
        token_request(&client_id, &secret, &[("grant_type", "refresh_token"), ("refresh_token", &refresh_token)]),
    );
    if reply.status != 200 {
        return Err(format!("client refresh: {} {}", reply.status, reply.text()));
    }
    let login = app.post("/v1/login", json!({"email": email, "password": password}));
    let first_party = login.json["refresh_token"].as_str().ok_or(format!("login: {}", login.text()))?;
    let (first_party, reply) = costed(
        &app,
        ApiRequest {
            method: "POST".into(),
            path: "/oauth/token".into(),
            headers: vec![("Content-Type".to_owned(), "application/x-www-form-urlencoded".to_owned())],
            body: form(&[("grant_type", "refresh_token"), ("refresh_token", first_party)]).into_bytes(),
            ..Default::default()
        },
    );
    if reply.status != 200 {
        return Err(format!("first-party refresh: {} {}", reply.status, reply.text()));
    }
    let round_trips = json!({
        "authorize_with_session": authorized.round_trips,
        "code_grant_keys_cached": warm.round_trips,
        "code_grant_first_in_isolate": cold.round_trips,
        "refresh_grant_client": client_refresh.round_trips,
        "refresh_grant_first_party": first_party.round_trips,
    });
    let flows = json!({
        "authorize_with_session": authorized,
        "code_grant": warm,
        "code_grant_first_in_isolate": cold,
        "refresh_client": client_refresh,
    });
    Ok((round_trips, flows))
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|mode| mode == "round-trips") {
        let (round_trips, provider_flows) = round_trips()?;
        let mut flows = flow_costs()?;
        if let (Some(flows), serde_json::Value::Object(provider_flows)) = (flows.as_object_mut(), provider_flows) {
            flows.extend(provider_flows);
        }
        println!("{}", json!({ "round_trips": round_trips, "flows": flows }));
        return Ok(());
    }
    if let [mode, hashes] = args.as_slice() {
        if mode == "argon2" {
            let hashes = hashes.parse::<u32>().map_err(|err| err.to_string())?.max(1);
            println!("{{\"argon2_ms_per_hash\": {:.3}}}", argon2_ms(hashes)?);
            return Ok(());
        }
    }
    let [issuer, audience, token, jwks_file] = args.as_slice() else {
        return Err("usage: bench_native ISSUER AUDIENCE ACCESS_TOKEN JWKS_FILE | bench_native argon2 N".to_owned());
    };
    let argon2_ms = argon2_ms(20)?;

    let jwks = std::fs::read_to_string(jwks_file).map_err(|err| err.to_string())?;
    let verifier = Verifier::new(VerifierConfig::for_issuer(issuer, audience), CachedJwks(jwks));
    // The first call fetches the JWKS; the rest are the cached case being measured.
    pollster::block_on(verifier.verify_access_token(token)).map_err(|err| err.to_string())?;
    let verifications = 20_000;
    let started = Instant::now();
    for _ in 0..verifications {
        pollster::block_on(verifier.verify_access_token(token)).map_err(|err| err.to_string())?;
    }
    let verify_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(verifications);
    println!("{{\"argon2_ms_per_hash\": {argon2_ms:.3}, \"verify_us_per_token\": {verify_us:.3}}}");
    Ok(())
}
