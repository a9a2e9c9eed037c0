//! The Cloudflare adapter: the only code that touches `worker::*`. It reads the environment,
//! builds a `flows::Context` from D1, `crypto.getRandomValues` and the request's instant, runs
//! `api::handle`, and delivers queued mail after the response with `waitUntil`.

mod bench;
mod d1;
mod fetch;
mod mail_queue;
mod webcrypto;

use std::rc::Rc;

use chrono::{DateTime, Utc};
use worker::{event, Context, Env, Headers, MessageBatch, Request, Response, ScheduleContext, ScheduledEvent};

use crate::api::error::ApiError;
use crate::api::request::MAX_BODY_BYTES;
use crate::api::{handle, ApiRequest, ApiResponse, REQUEST_HEADERS};
use crate::config::Config;
use crate::flows;
use crate::keyring::{self, Keyring};
use crate::store;
use webcrypto::WebCrypto;

#[event(fetch)]
async fn fetch(request: Request, env: Env, worker_ctx: Context) -> worker::Result<Response> {
    console_logger::install();
    // The benchmark's floor for this binary: workers-rs's own cost of a request, nothing of
    // edgeid's. Only with BENCH_ENDPOINTS=true (see `bench`).
    if request.path() == "/__bench/constant"
        && env.var("BENCH_ENDPOINTS").is_ok_and(|var| var.to_string() == "true")
        && request.url().is_ok_and(|url| crate::config::is_loopback_host(url.host_str().unwrap_or_default()))
    {
        return Response::ok("ok");
    }
    let response = match respond(request, &env, &worker_ctx).await {
        Ok(response) => response,
        Err(err) => ApiError::server_error(&err).into(),
    };
    to_worker_response(response)
}

async fn respond(mut request: Request, env: &Env, worker_ctx: &Context) -> Result<ApiResponse, String> {
    let config = config(env)?;
    let api_request = match to_api_request(&mut request).await {
        Ok(api_request) => api_request,
        Err(rejection) => return Ok(rejection),
    };
    let db = d1::D1(env.d1("DB").map_err(|err| format!("D1 binding DB: {err}"))?);
    let outbox = flows::Outbox::default();
    let keyring = KEYRING.with(Rc::clone);
    let ctx = flows::Context {
        config: &config,
        keyring: &keyring,
        db: &db,
        crypto: &WebCrypto,
        http: &fetch::Fetcher,
        now: now(),
        client_ip: api_request.client_ip(),
        accept_language: api_request.header("accept-language"),
        outbox: &outbox,
    };
    let response = if bench::enabled(&config)
        && api_request.path.starts_with("/__bench/")
        && crate::config::is_loopback_host(&api_request.host)
    {
        bench::handle(&ctx, &api_request).await.unwrap_or_else(|err| ApiError::from(err).into())
    } else {
        handle(&ctx, &api_request).await
    };

    // Enqueued after the response, so its timing never shows whether a mail was sent.
    let mails = outbox.take();
    if !mails.is_empty() {
        let env = env.clone();
        worker_ctx.wait_until(async move { mail_queue::enqueue(&env, &config, mails).await });
    }
    Ok(response)
}

/// The cron trigger: key rotation and clean-up (`keyring::maintain`). The cron string `rotate`
/// (only reachable locally, `/__scheduled?cron=rotate` or `/cdn-cgi/local/scheduled?cron=rotate`)
/// publishes the next key at once.
#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    console_logger::install();
    let config = match Config::from_lookup(|name| lookup(&env, name)) {
        Ok(config) => config,
        Err(err) => return log::error!("key maintenance skipped: configuration: {err}"),
    };
    let db = match env.d1("DB") {
        Ok(db) => d1::D1(db),
        Err(err) => return log::error!("key maintenance skipped: D1 binding DB: {err}"),
    };
    let force = event.cron() == "rotate";
    match keyring::maintain(&db, &config, &WebCrypto, now(), force).await {
        Ok(report) => log::info!("key maintenance ({}): {report:?}", event.cron()),
        Err(err) => log::error!("key maintenance failed: {err}"),
    }
    match store::remove_full_buckets(&db, now().timestamp_millis()).await {
        Ok(removed) => log::info!("rate limits: {removed} idle buckets removed"),
        Err(err) => log::error!("rate-limit clean-up failed: {err}"),
    }
}

/// Mail delivery: the mail queue and its dead-letter queue (see `mail_queue`).
#[event(queue)]
async fn queue(batch: MessageBatch<String>, env: Env, _ctx: Context) -> worker::Result<()> {
    console_logger::install();
    match Config::from_lookup(|name| lookup(&env, name)) {
        Ok(config) => mail_queue::consume(batch, env, &config).await,
        Err(err) => {
            // Nothing can be delivered without a configuration: keep the mail for later.
            log::error!("mail queue paused: configuration: {err}");
            batch.retry_all_with_options(&worker::QueueRetryOptionsBuilder::new().with_delay_seconds(60).build());
        }
    }
    Ok(())
}

/// A variable from `[vars]`, `--var` or a secret (`wrangler secret put`, `.dev.vars`).
fn lookup(env: &Env, name: &str) -> Option<String> {
    env.var(name).map(|var| var.to_string()).or_else(|_| env.secret(name).map(|secret| secret.to_string())).ok()
}

thread_local! {
    /// The key table as this isolate last read it (see `keyring`): a minute at most.
    static KEYRING: Rc<Keyring> = Rc::new(Keyring::new(60));
    /// The configuration, read and checked once per isolate: an isolate belongs to one
    /// deployment, whose variables and secrets do not change under it.
    static CONFIG: std::cell::RefCell<Option<Rc<Config>>> = const { std::cell::RefCell::new(None) };
}

/// The isolate's configuration (see `CONFIG`). An invalid one is not cached: every request
/// answers `server_error` and logs why, until a deployment fixes it.
fn config(env: &Env) -> Result<Rc<Config>, String> {
    if let Some(config) = CONFIG.with(|cached| cached.borrow().clone()) {
        return Ok(config);
    }
    let config = Rc::new(Config::from_lookup(|name| lookup(env, name)).map_err(|err| format!("configuration: {err}"))?);
    CONFIG.with(|cached| *cached.borrow_mut() = Some(Rc::clone(&config)));
    Ok(config)
}

fn now() -> DateTime<Utc> {
    let millis = worker::Date::now().as_millis();
    DateTime::from_timestamp_millis(i64::try_from(millis).unwrap_or(i64::MAX)).unwrap_or_default()
}

/// Reads the request. Bodies over the limit are refused from `Content-Length` before a byte is
/// read; bodies without one (chunked) are read as they arrive and refused as soon as they pass
/// the limit, so nobody can make the worker buffer more than 16 KiB.
async fn to_api_request(request: &mut Request) -> Result<ApiRequest, ApiResponse> {
    let url = request.url().map_err(|err| ApiResponse::from(ApiError::server_error(&err)))?;
    let all = request.headers();
    let headers: Vec<(String, String)> = REQUEST_HEADERS
        .iter()
        .filter_map(|name| all.get(name).ok().flatten().map(|value| ((*name).to_owned(), value)))
        .collect();
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
        _ => read_body(request).await?,
    };
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    Ok(ApiRequest {
        method,
        host,
        path: url.path().to_owned(),
        query: url.query().unwrap_or_default().to_owned(),
        headers,
        body,
    })
}

async fn read_body(request: &mut Request) -> Result<Vec<u8>, ApiResponse> {
    use futures_util::StreamExt;
    let unreadable = || ApiResponse::from(ApiError::invalid_request("the body could not be read"));
    let mut stream = match request.stream() {
        Ok(stream) => stream,
        // No body at all.
        Err(_) => return Ok(Vec::new()),
    };
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| unreadable())?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::payload_too_large(MAX_BODY_BYTES).into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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
