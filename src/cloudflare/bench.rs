//! Measurement endpoints for the benchmark command (`scripts/bench.sh`), only with
//! `BENCH_ENDPOINTS=true` — never set by wrangler.toml, and refused on a public HTTPS
//! deployment. They time work inside the isolate with `Date.now()`, which advances during CPU
//! work in local workerd (not in production, where these routes do not exist anyway).
//!
//! - `GET /__bench/argon2?n=N`: Argon2id with the configured parameters, ms per hash;
//! - `GET /__bench/sign?n=N`: the token pair of a login, ms per token, through WebCrypto and
//!   through jwt-compact in wasm;
//! - `GET /__bench/d1?batches=r,wwiir`: the D1 floor Worker's batches (bench/serve.mjs) through
//!   this worker's D1 adapter, and nothing else;
//! - `POST /__bench/refresh-tokens?n=N`: N fresh sessions of one verified user, their refresh
//!   tokens (to drive the refresh grant without N logins), written to the user's shard;
//! - `GET /__bench/after-response`: how many runs of the work left for after a response
//!   (`waitUntil`) this isolate has started and finished, and how long the last one took, in
//!   ms: the latency run (`bench/latency.mjs`) times that work apart from the response.

use std::cell::Cell;

use chrono::Duration;
use serde_json::json;

use crate::api::{ApiRequest, ApiResponse};
use crate::config::Config;
use crate::domain::email::Email;
use crate::domain::opaque_token::{random_id, OpaqueToken};
use crate::domain::password::{hash_password, Password};
use crate::domain::shard::UserBucket;
use crate::domain::signing::SigningAlg;
use crate::domain::tokens::{issue_tokens, Subject};
use crate::flows::{Context, Internal};
use crate::ports::{Crypto, CryptoError, Database, EntropyError, HttpClient};
use crate::store::{self, NewOneTimeToken, NewSession, NewUser, Purpose};

fn now_ms() -> f64 {
    worker::js_sys::Date::now()
}

fn count(request: &ApiRequest, default: usize, max: usize) -> usize {
    request.query_param("n").and_then(|n| n.parse().ok()).unwrap_or(default).clamp(1, max)
}

fn json_response(value: &serde_json::Value) -> ApiResponse {
    ApiResponse::new(200, "application/json", value.to_string().into_bytes()).with_header("Cache-Control", "no-store")
}

/// The same crypto, but declining to sign: the core then signs in Rust (wasm).
struct RustSigning<'a, E>(&'a E);

impl<E: Crypto> Crypto for RustSigning<'_, E> {
    fn fill(&self, buffer: &mut [u8]) -> Result<(), EntropyError> {
        self.0.fill(buffer)
    }

    async fn generate_rsa_key(&self) -> Result<Vec<u8>, CryptoError> {
        self.0.generate_rsa_key().await
    }

    async fn sign_jws(
        &self,
        alg: SigningAlg,
        kid: &str,
        key: &[u8],
        message: &[u8],
    ) -> Result<Option<Vec<u8>>, CryptoError> {
        match alg {
            SigningAlg::Rs256 => self.0.sign_jws(alg, kid, key, message).await,
            SigningAlg::Es256 | SigningAlg::EdDsa => Ok(None),
        }
    }
}

pub async fn handle<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    request: &ApiRequest,
) -> Result<ApiResponse, Internal> {
    Ok(match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/__bench/argon2") => {
            let n = count(request, 5, 50);
            let password = Password::presented("a benchmark passphrase");
            let started = now_ms();
            for index in 0..n {
                hash_password(&password, &[index as u8; 16], &ctx.config.password_hash)?;
            }
            json_response(&json!({ "n": n, "ms_per_hash": (now_ms() - started) / n as f64 }))
        }
        ("GET", "/__bench/sign") => {
            let n = count(request, 200, 5000);
            let keys = ctx.signing_keys().await?;
            let subject = Subject {
                user_id: "bench-user",
                email: "bench@example.com",
                email_verified: true,
                session_id: "bench-session",
                auth_time: ctx.now,
                nonce: None,
            };
            let mut timings = Vec::new();
            for rust in [false, true] {
                let started = now_ms();
                for index in 0..n {
                    let jti = format!("bench-{index}");
                    if rust {
                        issue_tokens(ctx.config, &keys, &RustSigning(ctx.crypto), ctx.now, jti, &subject).await?;
                    } else {
                        issue_tokens(ctx.config, &keys, ctx.crypto, ctx.now, jti, &subject).await?;
                    }
                }
                // Two tokens (access and ID) per issue.
                timings.push((now_ms() - started) / (2 * n) as f64);
            }
            json_response(&json!({
                "n": n,
                "alg": ctx.config.signing_alg.jws_name(),
                "ms_per_token_webcrypto": timings[0],
                "ms_per_token_wasm": timings[1],
            }))
        }
        ("GET", "/__bench/d1") => {
            // The floor Worker's batches (bench/serve.mjs `d1`), through this worker's D1
            // adapter: what a request's D1 work costs through the wasm, with nothing else.
            let shapes = request.query_param("batches").unwrap_or_default();
            let mut rows = 0;
            let mut new_id = || random_id(ctx.crypto).unwrap_or_default();
            for shape in
                shapes.split(',').filter(|shape| !shape.is_empty() && shape.bytes().all(|b| b"rwi".contains(&b)))
            {
                rows += store::floor_batch(ctx.db, shape, ctx.now.timestamp_millis(), &mut new_id).await?;
            }
            ApiResponse::new(200, "text/plain", format!("ok {rows}").into_bytes())
        }
        ("GET", "/__bench/after-response") => {
            let (started, finished, last_ms) = AFTER_RESPONSE.with(Cell::get);
            json_response(&json!({ "started": started, "finished": finished, "last_ms": last_ms }))
        }
        ("POST", "/__bench/refresh-tokens") => {
            let n = count(request, 100, 5000);
            json_response(&json!({ "refresh_tokens": refresh_tokens(ctx, n).await? }))
        }
        _ => crate::api::error::ApiError::not_found().into(),
    })
}

/// N sessions of one verified benchmark user (created on first use).
async fn refresh_tokens<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    n: usize,
) -> Result<Vec<String>, Internal> {
    let Ok(email) = Email::parse("bench-refresh@example.com") else { return Ok(Vec::new()) };
    let bucket = UserBucket::of_email(&email);
    let users = ctx.users(bucket);
    let user = match store::find_user_by_email(&users, &email).await? {
        Some(user) => user,
        None => {
            let id = random_id(ctx.crypto)?;
            let hash =
                hash_password(&Password::presented("a benchmark passphrase"), &[7; 16], &ctx.config.password_hash)?;
            let verification = OpaqueToken::generate(ctx.crypto, bucket)?;
            let reset = OpaqueToken::generate(ctx.crypto, bucket)?;
            let expires_at = ctx.now + Duration::hours(1);
            store::create_user(
                &users,
                &NewUser { id: &id, email: &email, password_hash: &hash, locale: "en" },
                &NewOneTimeToken {
                    user_id: &id,
                    purpose: Purpose::VerifyEmail,
                    hash: verification.hash(),
                    expires_at,
                    code_hash: None,
                    code_expires_at: None,
                },
                &NewOneTimeToken {
                    user_id: &id,
                    purpose: Purpose::ResetPassword,
                    hash: reset.hash(),
                    expires_at,
                    code_hash: None,
                    code_expires_at: None,
                },
                true,
                ctx.now,
            )
            .await?;
            // Verified, as a login would require.
            store::verify_email(&users, verification.hash(), &random_id(ctx.crypto)?, ctx.now).await?;
            store::find_user_by_email(&users, &email).await?.ok_or_else(|| {
                Internal::Database(crate::ports::DatabaseError("the benchmark user vanished".to_owned()))
            })?
        }
    };
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        let refresh = OpaqueToken::generate(ctx.crypto, bucket)?;
        let session_id = format!("{}{}", bucket.prefix(), random_id(ctx.crypto)?);
        let expires_at = ctx.now + Duration::seconds(ctx.config.session_absolute_ttl_seconds);
        store::start_session(
            &users,
            &NewSession {
                id: &session_id,
                user_id: &user.id,
                expires_at,
                verified_password_hash: &user.password_hash,
                password_version: user.password_version,
                rehashed_password: None,
                kind: store::SessionKind::Api {
                    refresh_token_hash: refresh.hash(),
                    refresh_token_expires_at: ctx.now + Duration::seconds(ctx.config.refresh_token_ttl_seconds),
                },
            },
            ctx.now,
        )
        .await?;
        tokens.push(refresh.plaintext().to_owned());
    }
    Ok(tokens)
}

thread_local! {
    /// Runs of the work after a response in this isolate: started, finished, and the last
    /// one's duration in ms (`/__bench/after-response`).
    static AFTER_RESPONSE: Cell<(u64, u64, f64)> = const { Cell::new((0, 0, 0.0)) };
}

/// A run of the work after a response is scheduled, before the response leaves: a client
/// that has the response sees it counted as started.
pub fn after_response_scheduled() {
    AFTER_RESPONSE.with(|runs| {
        let (started, finished, last_ms) = runs.get();
        runs.set((started + 1, finished, last_ms));
    });
}

/// That run is done, after `elapsed_ms`.
pub fn after_response_finished(elapsed_ms: f64) {
    AFTER_RESPONSE.with(|runs| {
        let (started, finished, _) = runs.get();
        runs.set((started, finished + 1, elapsed_ms));
    });
}

/// Whether the benchmark endpoints are on (`BENCH_ENDPOINTS=true`).
pub fn enabled(config: &Config) -> bool {
    config.bench_endpoints
}
