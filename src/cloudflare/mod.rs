//! The Cloudflare adapter: the only code that touches `worker::*`. It reads the environment,
//! builds a `flows::Context` from D1, `crypto.getRandomValues` and the request's instant, runs
//! `api::handle`, and delivers queued mail after the response with `waitUntil`.

mod d1;
mod fetch;

use std::cell::RefCell;
use std::rc::Rc;

use chrono::{DateTime, Utc};
use worker::{event, Context, Env, Headers, Request, Response};

use crate::api::error::ApiError;
use crate::api::request::MAX_BODY_BYTES;
use crate::api::{handle, ApiRequest, ApiResponse};
use crate::config::Config;
use crate::domain::signing::{SigningAlg, SigningKeys};
use crate::flows;
use crate::mail;
use crate::ports::{Entropy, EntropyError};

#[event(fetch)]
async fn fetch(request: Request, env: Env, worker_ctx: Context) -> worker::Result<Response> {
    console_logger::install();
    let response = match respond(request, &env, &worker_ctx).await {
        Ok(response) => response,
        Err(err) => ApiError::server_error(&err).into(),
    };
    to_worker_response(response)
}

async fn respond(mut request: Request, env: &Env, worker_ctx: &Context) -> Result<ApiResponse, String> {
    let config = Config::from_lookup(|name| lookup(env, name)).map_err(|err| format!("configuration: {err}"))?;
    let keys = signing_keys(env, config.signing_alg)?;
    let api_request = match to_api_request(&mut request).await {
        Ok(api_request) => api_request,
        Err(rejection) => return Ok(rejection),
    };
    let db = d1::D1(env.d1("DB").map_err(|err| format!("D1 binding DB: {err}"))?);
    let outbox = flows::Outbox::default();
    let ctx =
        flows::Context { config: &config, keys: &keys, db: &db, entropy: &WebCrypto, now: now(), outbox: &outbox };
    let response = handle(&ctx, &api_request).await;

    let mails = outbox.take();
    if !mails.is_empty() {
        let mail_config = config.mail.clone();
        worker_ctx.wait_until(async move {
            for mail in &mails {
                if let Err(err) = mail::deliver(&mail_config, &fetch::Fetcher, mail).await {
                    log::error!("mail {:?} to {} was not delivered: {err}", mail.kind, mail.to);
                }
            }
        });
    }
    Ok(response)
}

/// A variable from `[vars]`, `--var` or a secret (`wrangler secret put`, `.dev.vars`).
fn lookup(env: &Env, name: &str) -> Option<String> {
    env.var(name).map(|var| var.to_string()).or_else(|_| env.secret(name).map(|secret| secret.to_string())).ok()
}

thread_local! {
    /// Parsed keys for the life of the isolate: parsing derives public keys, which is the
    /// costly part, and the secret only changes with a new deployment.
    static KEYS: RefCell<Option<(String, SigningAlg, Rc<SigningKeys>)>> = const { RefCell::new(None) };
}

fn signing_keys(env: &Env, alg: SigningAlg) -> Result<Rc<SigningKeys>, String> {
    let secret = lookup(env, "SIGNING_KEYS").ok_or("SIGNING_KEYS is not set (see README: Configuration)")?;
    KEYS.with(|cache| {
        if let Some((cached_secret, cached_alg, keys)) = cache.borrow().as_ref() {
            if *cached_secret == secret && *cached_alg == alg {
                return Ok(Rc::clone(keys));
            }
        }
        let keys = Rc::new(SigningKeys::from_secret(&secret, alg).map_err(|err| err.to_string())?);
        *cache.borrow_mut() = Some((secret, alg, Rc::clone(&keys)));
        Ok(keys)
    })
}

fn now() -> DateTime<Utc> {
    let millis = worker::Date::now().as_millis();
    DateTime::from_timestamp_millis(i64::try_from(millis).unwrap_or(i64::MAX)).unwrap_or_default()
}

struct WebCrypto;

impl Entropy for WebCrypto {
    fn fill(&self, buffer: &mut [u8]) -> Result<(), EntropyError> {
        getrandom::getrandom(buffer).map_err(|err| EntropyError(err.to_string()))
    }
}

/// Reads the request. Bodies over the limit are refused from `Content-Length` before a byte is
/// read; bodies without one are read and then measured by the API.
async fn to_api_request(request: &mut Request) -> Result<ApiRequest, ApiResponse> {
    let url = request.url().map_err(|err| ApiResponse::from(ApiError::server_error(&err)))?;
    let headers: Vec<(String, String)> = request.headers().entries().collect();
    let declared_length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse::<usize>().ok());
    if declared_length.is_some_and(|length| length > MAX_BODY_BYTES) {
        return Err(ApiError::payload_too_large(MAX_BODY_BYTES).into());
    }
    let method = request.method().to_string();
    let body = match method.as_str() {
        "GET" | "HEAD" => Vec::new(),
        _ => request
            .bytes()
            .await
            .map_err(|_| ApiResponse::from(ApiError::invalid_request("the body could not be read")))?,
    };
    Ok(ApiRequest {
        method,
        path: url.path().to_owned(),
        query: url.query().unwrap_or_default().to_owned(),
        headers,
        body,
    })
}

fn to_worker_response(response: ApiResponse) -> worker::Result<Response> {
    let headers = Headers::new();
    for (name, value) in &response.headers {
        headers.append(name, value)?;
    }
    let body = if response.body.is_empty() { None } else { Some(response.body) };
    let worker_response = match body {
        Some(body) => Response::from_bytes(body)?,
        None => Response::empty()?,
    };
    Ok(worker_response.with_status(response.status).with_headers(headers))
}

mod console_logger {
    //! `log` records go to the Workers console (`wrangler dev` prints them; `wrangler tail` in
    //! production).

    struct Console;

    impl log::Log for Console {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= log::Level::Info
        }

        fn log(&self, record: &log::Record<'_>) {
            match record.level() {
                log::Level::Error => worker::console_error!("{}", record.args()),
                log::Level::Warn => worker::console_warn!("{}", record.args()),
                _ => worker::console_log!("{}", record.args()),
            }
        }

        fn flush(&self) {}
    }

    static CONSOLE: Console = Console;

    pub fn install() {
        // Fails harmlessly on every request after the first in an isolate.
        if log::set_logger(&CONSOLE).is_ok() {
            log::set_max_level(log::LevelFilter::Info);
        }
    }
}
