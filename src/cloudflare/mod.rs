//! The Cloudflare adapter: the only code that touches `worker::*`. It reads the environment,
//! builds a `flows::Context` from D1, `crypto.getRandomValues` and the request's instant (its
//! keyring refreshed from the key snapshot in KV when its own read has expired), runs
//! `api::handle`, and delivers queued mail (and a snapshot a bootstrap made) after the response
//! with `waitUntil`.

mod bench;
mod d1;
mod fetch;
mod kv;
mod mail_queue;
mod webcrypto;

use std::rc::Rc;

use chrono::{DateTime, Utc};
use wasm_bindgen::{JsCast, JsValue};
use worker::{event, web_sys, Context, Env, MessageBatch, ScheduleContext, ScheduledEvent};

use crate::api::error::ApiError;
use crate::api::request::MAX_BODY_BYTES;
use crate::api::{handle, parse_head, ApiRequest, ApiResponse, REQUEST_HEADERS};
use crate::config::Config;
use crate::flows;
use crate::keyring::{self, Keyring, SnapshotRefresh, UnusableSnapshot};
use crate::store;
use webcrypto::WebCrypto;

#[event(fetch)]
async fn fetch(request: web_sys::Request, env: Env, worker_ctx: Context) -> worker::Result<web_sys::Response> {
    console_logger::install();
    let response = match respond(&request, &env, &worker_ctx).await {
        Ok(response) => response,
        Err(err) => ApiError::server_error(&err).into(),
    };
    to_worker_response(&request, &response)
        .map_err(|err| worker::Error::from(format!("building the response: {err:?}")))
}

async fn respond(request: &web_sys::Request, env: &Env, worker_ctx: &Context) -> Result<ApiResponse, String> {
    let config = config(env)?;
    let api_request = match to_api_request(request).await {
        Ok(api_request) => api_request,
        Err(rejection) => return Ok(rejection),
    };
    let bench_route =
        bench::enabled(&config) && api_request.path.starts_with("/__bench/") && api_request.made_on_this_machine();
    // The benchmark's floor for this binary: a request through the adapter, nothing of
    // edgeid's. Only with BENCH_ENDPOINTS=true (see `bench`).
    if bench_route && api_request.path == "/__bench/constant" {
        return Ok(ApiResponse::new(200, "text/plain", b"ok".to_vec()));
    }
    // The flood pre-filter (Rate Limiting bindings: one per client — IPv4 address or IPv6 /64
    // — and one per IPv6 /48, with 16 times the limit) in front of everything that touches D1:
    // cheap, approximate, per Cloudflare location; the exact budgets behind it live in D1 and
    // need D1 to stay responsive.
    if config.rate_limit_prefilter && !bench_route && crate::api::touches_database(&api_request.path) {
        for network in crate::domain::rate_limit::client_networks(api_request.client_ip()) {
            let binding = match network.width {
                crate::domain::rate_limit::NetworkWidth::Client => "RATE_LIMITER",
                crate::domain::rate_limit::NetworkWidth::Site => "RATE_LIMITER_SITE",
            };
            if !prefilter_allows(env, binding, &network.name).await {
                return Ok(ApiError::rate_limited(crate::flows::throttle::Throttled { retry_after_seconds: 60 }).into());
            }
        }
    }
    let bindings = Bindings::of_isolate(env, &config)?;
    let kv = kv::Kv::binding(env, "KV");
    let outbox = flows::Outbox::default();
    // A new isolate, or one whose read of the key table has expired, takes the snapshot from KV
    // (when it is usable) rather than reading D1; the context's instant is the same or later.
    log_snapshot_refresh(&bindings.keyring.refresh_from_snapshot(&kv, &config, now()).await);
    let ctx = bindings.context(&config, &outbox, api_request.client_ip(), api_request.header("accept-language"));
    let response = if bench_route {
        bench::handle(&ctx, &api_request).await.unwrap_or_else(|err| ApiError::from(err).into())
    } else {
        handle(&ctx, &api_request).await
    };

    // After the response: the key table a bootstrap read, for new isolates to find in KV.
    if let Some(snapshot) = bindings.keyring.take_snapshot_to_write() {
        let key = keyring::snapshot_key(&config);
        worker_ctx.wait_until(async move {
            match store::write_signing_key_snapshot(&kv, &key, &snapshot).await {
                Ok(()) => log::info!("key snapshot written after a bootstrap: {} keys", snapshot.keys.len()),
                Err(err) => log::warn!("key snapshot not written after a bootstrap: {err}"),
            }
        });
    }
    // After the response: the deferred account work, then the mail (its and the request's), so
    // that neither shows in the response's timing.
    // The benchmark times this work on its own (`/__bench/after-response`): it is not part of
    // the response's latency.
    let deferred = outbox.take_deferred();
    let mails = outbox.take();
    if !deferred.is_empty() || !mails.is_empty() {
        let env = env.clone();
        let timed = bench::enabled(&config);
        if timed {
            bench::after_response_scheduled();
        }
        worker_ctx.wait_until(async move {
            let started_ms = worker::js_sys::Date::now();
            after_response(env, config, deferred, mails).await;
            if timed {
                bench::after_response_finished(worker::js_sys::Date::now() - started_ms);
            }
        });
    }
    Ok(response)
}

async fn after_response(
    env: Env,
    config: Rc<Config>,
    deferred: Vec<flows::Deferred>,
    mut mails: Vec<crate::mail::OutgoingMail>,
) {
    if !deferred.is_empty() {
        match Bindings::of(&env, &config) {
            Ok(bindings) => {
                let outbox = flows::Outbox::default();
                let ctx = bindings.context(&config, &outbox, None, None);
                for work in deferred {
                    run_deferred_until_served(&ctx, work).await;
                }
                mails.extend(outbox.take());
            }
            Err(err) => log::error!("account work after the response skipped: {err}"),
        }
    }
    if !mails.is_empty() {
        mail_queue::enqueue(&env, &config, mails).await;
    }
}

/// Runs deferred account work, again a second later (for half a minute at most) while its
/// bucket is between shards: a move takes about that long, and the request was already
/// answered.
async fn run_deferred_until_served(ctx: &flows::Context<'_, d1::D1, WebCrypto, fetch::Fetcher>, work: flows::Deferred) {
    for attempt in 1..=30 {
        match flows::run_deferred(ctx, work.clone()).await {
            Ok(()) => return,
            Err(flows::Internal::Database(err)) if err.is_moving() && attempt < 30 => {
                worker::Delay::from(std::time::Duration::from_secs(1)).await;
            }
            Err(err) => return log::error!("account work after the response failed: {err}"),
        }
    }
}

/// Runs as each wasm instance starts. After a panic, worker-build starts a new instance in the
/// same isolate, with an empty keyring: the replays the old one kept (on JavaScript's global
/// object) go with it, so that nothing is answered from a cache this instance did not read.
#[event(start)]
fn start() {
    glue::forget_replays();
}

/// Logs why a refresh found no usable snapshot, where that is news: no snapshot, or an old one,
/// is what a deployment without the cron (or `wrangler dev`) has, and a missing key is what
/// D1 and a bootstrap resolve.
fn log_snapshot_refresh(refresh: &SnapshotRefresh) {
    let SnapshotRefresh::Unusable(why) = refresh else { return };
    match why {
        UnusableSnapshot::Missing | UnusableSnapshot::TooOld { .. } | UnusableSnapshot::NoSigningKey(_) => {}
        UnusableSnapshot::Store(_)
        | UnusableSnapshot::Unreadable(_)
        | UnusableSnapshot::Unauthenticated
        | UnusableSnapshot::Ahead { .. }
        | UnusableSnapshot::Keys(_) => log::warn!("key snapshot in KV not used, reading D1: {why:?}"),
    }
}

/// The cron string of the run every minute (`[triggers]` in wrangler.toml).
const EVERY_MINUTE: &str = "* * * * *";

/// The minute of each hour whose run also does the key maintenance and the clean-up.
const MAINTENANCE_MINUTE: i64 = 17;

/// The cron trigger, every minute: the key snapshot in KV (`keyring::write_snapshot`); at
/// minute 17 of each hour, before it, key rotation and clean-up (`keyring::maintain`). A run of
/// any other cron string (a local `/cdn-cgi/local/scheduled?cron=17+*+*+*+*`, or an
/// installation that kept an hourly trigger) does both. The cron string `rotate` (only
/// reachable locally, `/__scheduled?cron=rotate` or `/cdn-cgi/local/scheduled?cron=rotate`)
/// publishes the next key at once.
#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    console_logger::install();
    let config = match Config::from_lookup(|name| lookup(&env, name)) {
        Ok(config) => config,
        Err(err) => return log::error!("key maintenance skipped: configuration: {err}"),
    };
    let bindings = match Bindings::of(&env, &config) {
        Ok(bindings) => bindings,
        Err(err) => return log::error!("key maintenance skipped: {err}"),
    };
    let db = &bindings.global;
    let scheduled_minute = (event.schedule() as i64).div_euclid(60_000).rem_euclid(60);
    if event.cron() == EVERY_MINUTE && scheduled_minute != MAINTENANCE_MINUTE {
        return write_key_snapshot(&env, db, &config).await;
    }
    let force = event.cron() == "rotate";
    match keyring::maintain(db, &config, &WebCrypto, now(), force).await {
        Ok(report) => log::info!("key maintenance ({}): {report:?}", event.cron()),
        Err(err) => log::error!("key maintenance failed: {err}"),
    }
    match store::remove_full_buckets(db, now().timestamp_millis()).await {
        Ok(removed) => log::info!("rate limits: {removed} idle buckets removed"),
        Err(err) => log::error!("rate-limit clean-up failed: {err}"),
    }
    let unverified_before =
        config.require_email_verification.then(|| now().timestamp() - config.unverified_account_ttl_seconds);
    for (index, shard) in bindings.shards.all().enumerate() {
        match store::purge(shard, now(), unverified_before).await {
            Ok(purged) => log::info!("clean-up of user shard {index}: {purged:?}"),
            Err(err) => log::error!("clean-up of user shard {index} failed: {err}"),
        }
    }
    let outbox = flows::Outbox::default();
    let ctx = bindings.context(&config, &outbox, None, None);
    match flows::user_move::finish_user_moves(&ctx).await {
        Ok(0) => {}
        Ok(finished) => log::info!("account moves a request left: {finished} finished or given up"),
        Err(err) => log::error!("finishing account moves failed: {err}"),
    }
    match flows::normalise_stored_addresses(&ctx).await {
        Ok(report) if report == flows::Normalised::default() => {}
        Ok(report) => log::info!("addresses normalised: {report:?}"),
        Err(err) => log::error!("address normalisation failed: {err}"),
    }
    write_key_snapshot(&env, db, &config).await;
}

/// The key table as D1 holds it now, to KV for new isolates (`keyring::write_snapshot`).
async fn write_key_snapshot(env: &Env, db: &d1::D1, config: &Config) {
    match keyring::write_snapshot(db, &kv::Kv::binding(env, "KV"), config, now()).await {
        Ok(snapshot) => log::info!("key snapshot written: {} keys, read at {}", snapshot.keys.len(), snapshot.read_at),
        Err(err) => log::error!("key snapshot not written: {err}"),
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

/// The databases of a request: `DB` and the user shards `USERS_0`, `USERS_1`, … (as many as are
/// bound, in order; with none, `DB` is the one shard), with the isolate's caches. Every batch
/// to them waits `Config::bench_d1_delay_ms` first (0 but in the benchmark's latency run).
struct Bindings {
    global: d1::D1,
    shards: store::UserShards<d1::D1>,
    keyring: Rc<Keyring>,
    clients: Rc<store::ClientCache>,
}

impl Bindings {
    /// The bindings of `env`, read once per isolate: workerd hands every request of an isolate
    /// the same `env` object, whose bindings do not change, so the D1 objects read from it
    /// are kept with it and read again only for another `env` (one comparison instead of a
    /// property read per database).
    fn of_isolate(env: &Env, config: &Config) -> Result<Rc<Bindings>, String> {
        let kept = BINDINGS.with(|kept| {
            let kept = kept.borrow();
            kept.as_ref().filter(|(of, _)| of == AsRef::<JsValue>::as_ref(env)).map(|(_, bindings)| Rc::clone(bindings))
        });
        if let Some(bindings) = kept {
            return Ok(bindings);
        }
        let bindings = Rc::new(Bindings::of(env, config)?);
        BINDINGS.with(|kept| *kept.borrow_mut() = Some((JsValue::from(env.clone()), Rc::clone(&bindings))));
        Ok(bindings)
    }

    fn of(env: &Env, config: &Config) -> Result<Bindings, String> {
        let delay_ms = config.bench_d1_delay_ms;
        let global = d1::D1::binding(env, "DB")?.delayed(delay_ms);
        let mut shards: Vec<d1::D1> = (0..crate::domain::shard::MAX_USER_SHARDS)
            .map_while(|index| d1::D1::binding(env, &format!("USERS_{index}")).ok())
            .map(|shard| shard.delayed(delay_ms))
            .collect();
        if shards.is_empty() {
            shards.push(d1::D1::binding(env, "DB")?.delayed(delay_ms));
        }
        let directory = DIRECTORY.with(Rc::clone);
        Ok(Bindings {
            global,
            shards: store::UserShards::new(shards, directory),
            keyring: KEYRING.with(Rc::clone),
            clients: CLIENTS.with(Rc::clone),
        })
    }

    /// A flow context over these databases, at this instant.
    fn context<'a>(
        &'a self,
        config: &'a Config,
        outbox: &'a flows::Outbox,
        client_ip: Option<&'a str>,
        accept_language: Option<&'a str>,
    ) -> flows::Context<'a, d1::D1, WebCrypto, fetch::Fetcher> {
        flows::Context {
            config,
            keyring: &self.keyring,
            clients: &self.clients,
            db: &self.global,
            shards: &self.shards,
            crypto: &WebCrypto,
            http: &fetch::Fetcher,
            now: now(),
            client_ip,
            accept_language,
            outbox,
        }
    }
}

thread_local! {
    /// The key table as this isolate last read it, or the snapshot it took from KV (see
    /// `keyring`): a minute at most for its own reads, three minutes after the D1 read for a
    /// snapshot.
    static KEYRING: Rc<Keyring> = Rc::new(Keyring::new(60));
    /// The bucket map as this isolate last read it (`store::routing`): kept until a fence
    /// refuses a batch, ten minutes at most.
    static DIRECTORY: Rc<store::Directory> = Rc::new(store::Directory::new(600));
    /// Registered clients as this isolate last read them (`store::ClientCache`): a minute at
    /// most.
    static CLIENTS: Rc<store::ClientCache> = Rc::new(store::ClientCache::new(60));
    /// The bindings of the `env` every request of this isolate has had (`Bindings::of_isolate`).
    static BINDINGS: std::cell::RefCell<Option<(JsValue, Rc<Bindings>)>> = const { std::cell::RefCell::new(None) };
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
    // A number, not a `Date` object: this runs on every request.
    let millis = worker::js_sys::Date::now();
    DateTime::from_timestamp_millis(millis as i64).unwrap_or_default()
}

/// Whether the pre-filter binding `binding` grants `key` a unit: at once where the runtime has
/// no such binding (`glue.js` answers `true` rather than a promise), else what its promise says.
async fn prefilter_allows(env: &Env, binding: &str, key: &str) -> bool {
    let outcome = glue::prefilter(env, binding, key);
    match outcome.dyn_into::<worker::js_sys::Promise>() {
        // `glue.js` catches the binding's failures: a rejection is not expected, and lets through.
        Ok(promise) => wasm_bindgen_futures::JsFuture::from(promise).await.map_or(true, |granted| granted.is_truthy()),
        Err(granted) => granted.is_truthy(),
    }
}

/// Reads the request: its line and the headers of `REQUEST_HEADERS` in one call into
/// JavaScript (`glue.js`), then the body. Bodies over the limit are refused from
/// `Content-Length` before a byte is read; bodies without one (chunked) are read as they
/// arrive and refused as soon as they pass the limit, so nobody can make the worker buffer
/// more than 16 KiB.
async fn to_api_request(request: &web_sys::Request) -> Result<ApiRequest, ApiResponse> {
    let head = REQUEST_HEADER_NAMES.with(|names| glue::request_head(request, names));
    let Some(parsed) = parse_head(&head) else {
        return Err(ApiError::invalid_request("the request line or its headers could not be read").into());
    };
    // The body of a GET or HEAD is never read, so its declared length does not matter (and the
    // documents `entry.mjs` replays must get the same answer whatever it says).
    let body = match parsed.method {
        "GET" | "HEAD" => Vec::new(),
        _ => {
            let declared_length = parsed
                .headers
                .iter()
                .find(|(name, _)| *name == "content-length")
                .and_then(|(_, value)| value.parse::<usize>().ok());
            if declared_length.is_some_and(|length| length > MAX_BODY_BYTES) {
                return Err(ApiError::payload_too_large(MAX_BODY_BYTES).into());
            }
            read_body(request, declared_length).await?
        }
    };
    Ok(ApiRequest {
        method: parsed.method.to_owned(),
        host: parsed.host.to_ascii_lowercase(),
        path: parsed.path.to_owned(),
        query: parsed.query.to_owned(),
        headers: parsed.headers.into_iter().map(|(name, value)| (name.to_owned(), value.to_owned())).collect(),
        body,
    })
}

async fn read_body(request: &web_sys::Request, declared_length: Option<usize>) -> Result<Vec<u8>, ApiResponse> {
    let limit = u32::try_from(MAX_BODY_BYTES).unwrap_or(u32::MAX);
    // -1: no length declared (a declared length here is at most the limit).
    let declared = declared_length.and_then(|length| i32::try_from(length).ok()).unwrap_or(-1);
    match glue::read_body(request, limit, declared).await {
        Ok(body) if body.is_null() => Err(ApiError::payload_too_large(MAX_BODY_BYTES).into()),
        Ok(body) => Ok(worker::js_sys::Uint8Array::new(&body).to_vec()),
        Err(_) => Err(ApiError::invalid_request("the body could not be read").into()),
    }
}

/// The Response for workerd; an error only if JavaScript refuses a header or the body (a bug:
/// the fetch handler then answers a bare 500). A response the API marks as the same for every
/// GET of its URL for a while (`same_until_ms`) is also handed to `entry.mjs`, which answers
/// those GETs from memory until then without entering wasm.
fn to_worker_response(request: &web_sys::Request, response: &ApiResponse) -> Result<web_sys::Response, JsValue> {
    let mut head = String::new();
    for (name, value) in &response.headers {
        // Values are built by edgeid, never copied from a request; a line break in one would be
        // a bug, and is dropped rather than allowed to split a header.
        debug_assert!(!value.contains(['\n', '\r']), "header {name} has a line break");
        if !head.is_empty() {
            head.push('\n');
        }
        head.push_str(name);
        head.push('\n');
        head.extend(value.chars().filter(|c| !matches!(c, '\n' | '\r')));
    }
    // Most responses repeat the headers of an earlier one (the documents, the token endpoint,
    // errors): their Headers object is built once per isolate. Ones that carry a per-response
    // value (a cookie, a CSP nonce, a redirect) are built each time and not kept. No borrow of
    // the cache is held across a call into JavaScript.
    let unique = response.headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("set-cookie") || value.contains("nonce-") || name.eq_ignore_ascii_case("location")
    });
    let cached = if unique { None } else { RESPONSE_HEADERS.with(|cache| cache.borrow().get(&head).cloned()) };
    let headers = match cached {
        Some(headers) => headers,
        None => {
            let headers = glue::headers_of(&head)?;
            if !unique {
                RESPONSE_HEADERS.with(|cache| {
                    let mut cache = cache.borrow_mut();
                    if cache.len() >= MAX_CACHED_HEADERS {
                        cache.clear();
                    }
                    cache.insert(head, headers.clone());
                });
            }
            headers
        }
    };
    if let Some(until_ms) = response.same_until_ms {
        // Replays are an optimisation: if keeping one fails, the next GET comes here instead.
        let _ = glue::keep_for_replay(request, response.status, &headers, &response.body, until_ms as f64);
    }
    glue::respond(response.status, &headers, &response.body)
}

/// How many distinct header sets an isolate keeps (`RESPONSE_HEADERS`).
const MAX_CACHED_HEADERS: usize = 128;

thread_local! {
    /// `REQUEST_HEADERS` as `glue::request_head` takes them.
    static REQUEST_HEADER_NAMES: String = REQUEST_HEADERS.join("\n");
    /// Headers objects of earlier responses, by their text (see `to_worker_response`).
    static RESPONSE_HEADERS: std::cell::RefCell<std::collections::HashMap<String, JsValue>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

pub(crate) mod glue {
    //! `glue.js`: reading a request, building a response and running a D1 batch, each in
    //! one call.
    use wasm_bindgen::prelude::{wasm_bindgen, JsValue};

    #[wasm_bindgen(module = "/src/cloudflare/glue.js")]
    extern "C" {
        #[wasm_bindgen(js_name = requestHead)]
        pub fn request_head(request: &web_sys::Request, names: &str) -> String;

        #[wasm_bindgen(js_name = readBody, catch)]
        pub async fn read_body(request: &web_sys::Request, limit: u32, declared: i32) -> Result<JsValue, JsValue>;

        #[wasm_bindgen(js_name = headersOf, catch)]
        pub fn headers_of(head: &str) -> Result<JsValue, JsValue>;

        #[wasm_bindgen(js_name = respond, catch)]
        pub fn respond(status: u16, headers: &JsValue, body: &[u8]) -> Result<web_sys::Response, JsValue>;

        #[wasm_bindgen(js_name = keepForReplay, catch)]
        pub fn keep_for_replay(
            request: &web_sys::Request,
            status: u16,
            headers: &JsValue,
            body: &[u8],
            until_ms: f64,
        ) -> Result<(), JsValue>;

        #[wasm_bindgen(js_name = forgetReplays)]
        pub fn forget_replays();

        #[wasm_bindgen(js_name = signJws, catch)]
        pub async fn sign_jws(key: &web_sys::CryptoKey, alg: &str, message: &[u8]) -> Result<JsValue, JsValue>;

        #[wasm_bindgen(js_name = d1Batch, catch)]
        pub async fn d1_batch(db: &JsValue, statements: &str, delay_ms: u32) -> Result<JsValue, JsValue>;

        #[wasm_bindgen(js_name = prefilter)]
        pub fn prefilter(env: &JsValue, binding: &str, key: &str) -> JsValue;
    }
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
