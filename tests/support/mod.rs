//! Test support: SQLite behind the core's `Database` port (running the real migrations), a map
//! behind its `KeyValue` port, seeded randomness, a fixed clock that tests advance, and an app
//! that drives `api::handle`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use chrono::{DateTime, Duration, Utc};
use edgeid::api::{handle, ApiRequest, ApiResponse};
use edgeid::config::Config;
use edgeid::domain::sealing;
use edgeid::domain::signing::{KeyMaterial, SigningAlg};
use edgeid::flows::{Context, Outbox};
use edgeid::keyring::Keyring;
use edgeid::store::{ClientCache, Directory, UserShards};

/// User shards of every test app: as many as the development configuration declares.
pub const USER_SHARDS: usize = 4;
use edgeid::mail::OutgoingMail;
use edgeid::ports::{
    Crypto, CryptoError, Database, DatabaseError, EntropyError, HttpClient, HttpError, KeyValue, KeyValueError,
    OutboundRequest, OutboundResponse, SqlValue, Statement, StatementOutcome,
};
use jwt_compact::jwk::JsonWebKey;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// SQLite in memory with every file of `migrations/` applied, in name order, exactly as
/// `wrangler d1 migrations apply` does.
pub struct Sqlite {
    connection: RefCell<rusqlite::Connection>,
    /// When set, every batch fails: for testing how the API answers a broken store.
    pub broken: Cell<bool>,
    /// Batches run so far on this database.
    pub batches: Cell<usize>,
    /// Statements run so far on this database (a routed batch's fence included).
    pub statements: Cell<usize>,
    /// Sequential round trips, shared by the databases of one app (`DB` and its user shards).
    pub trips: Rc<RoundTrips>,
    /// When set to `n`, the batch after the next `n` fails (and this is cleared): an
    /// interruption at a chosen point.
    pub fail_after: Cell<Option<usize>>,
    /// While set, every batch that ran here is kept, in order.
    pub recorded: RefCell<Option<Vec<RecordedBatch>>>,
}

/// A batch that ran: its statements as sent, and the rows each changed.
pub type RecordedBatch = (Vec<Statement>, Vec<u64>);

/// Counts sequential round trips across databases: a batch that starts while another is in
/// flight (the flows run some at once, on `DB` and a shard) shares that one's round trip. Each
/// batch yields once before it runs, so batches a flow joins are all in flight together.
#[derive(Debug, Default)]
pub struct RoundTrips {
    in_flight: Cell<usize>,
    sequential: Cell<usize>,
}

impl RoundTrips {
    pub fn count(&self) -> usize {
        self.sequential.get()
    }
}

/// Ready on its second poll: the moment a batch is "on the wire".
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

impl Sqlite {
    pub fn with_migrations() -> Sqlite {
        Sqlite::with_migrations_before("\u{10ffff}")
    }

    /// SQLite with only the migrations whose file names sort before `first_left_out`: a
    /// database as an older release left it (see [`Sqlite::apply_migration`]).
    pub fn with_migrations_before(first_left_out: &str) -> Sqlite {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        connection.pragma_update(None, "foreign_keys", true).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
            .filter(|path| path.file_name().unwrap().to_str().unwrap() < first_left_out)
            .collect();
        files.sort();
        assert!(!files.is_empty());
        for file in files {
            connection.execute_batch(&std::fs::read_to_string(&file).unwrap()).unwrap();
        }
        Sqlite {
            connection: RefCell::new(connection),
            broken: Cell::new(false),
            batches: Cell::new(0),
            statements: Cell::new(0),
            trips: Rc::default(),
            fail_after: Cell::new(None),
            recorded: RefCell::new(None),
        }
    }

    /// The same database, counting its round trips with `trips`.
    pub fn counting_with(mut self, trips: &Rc<RoundTrips>) -> Sqlite {
        self.trips = Rc::clone(trips);
        self
    }

    /// Applies one more file of `migrations/`, as an upgrade's `wrangler d1 migrations apply`.
    pub fn apply_migration(&self, file: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(file);
        self.connection.borrow().execute_batch(&std::fs::read_to_string(path).unwrap()).unwrap();
    }

    pub fn execute(&self, sql: &str) {
        self.connection.borrow().execute(sql, []).unwrap();
    }

    /// A single text value from a query.
    pub fn text(&self, sql: &str) -> String {
        self.connection.borrow().query_row(sql, [], |row| row.get(0)).unwrap()
    }

    /// A single text value from a query, if it finds a row.
    pub fn optional_text(&self, sql: &str) -> Option<String> {
        use rusqlite::OptionalExtension;
        self.connection.borrow().query_row(sql, [], |row| row.get(0)).optional().unwrap()
    }

    /// A single integer from a query, for assertions on stored state.
    pub fn count(&self, sql: &str) -> i64 {
        self.connection.borrow().query_row(sql, [], |row| row.get(0)).unwrap()
    }
}

impl Database for Sqlite {
    async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<StatementOutcome>, DatabaseError> {
        self.batches.set(self.batches.get() + 1);
        self.statements.set(self.statements.get() + statements.len());
        if self.trips.in_flight.get() == 0 {
            self.trips.sequential.set(self.trips.sequential.get() + 1);
        }
        self.trips.in_flight.set(self.trips.in_flight.get() + 1);
        YieldOnce(false).await;
        self.trips.in_flight.set(self.trips.in_flight.get() - 1);
        if self.broken.get() {
            return Err(DatabaseError("disk I/O error (injected)".to_owned()));
        }
        match self.fail_after.get() {
            Some(0) => {
                self.fail_after.set(None);
                return Err(DatabaseError("connection lost (injected)".to_owned()));
            }
            Some(left) => self.fail_after.set(Some(left - 1)),
            None => {}
        }
        let error = |err: rusqlite::Error| DatabaseError(err.to_string());
        let mut connection = self.connection.borrow_mut();
        // Like D1's batch: one transaction, rolled back if any statement fails.
        let transaction = connection.transaction().map_err(error)?;
        let mut outcomes = Vec::new();
        for statement in &statements {
            let mut prepared = transaction.prepare(statement.sql).map_err(error)?;
            let params: Vec<rusqlite::types::Value> = statement
                .params
                .iter()
                .map(|param| match param {
                    SqlValue::Null => rusqlite::types::Value::Null,
                    SqlValue::Integer(value) => rusqlite::types::Value::Integer(*value),
                    SqlValue::Text(value) => rusqlite::types::Value::Text(value.clone()),
                })
                .collect();
            let params = rusqlite::params_from_iter(params);
            if prepared.column_count() == 0 {
                let changes = prepared.execute(params).map_err(error)?;
                outcomes.push(StatementOutcome { rows: Vec::new(), changes: changes as u64 });
                continue;
            }
            let names: Vec<String> = prepared.column_names().into_iter().map(str::to_owned).collect();
            let mut rows = prepared.query(params).map_err(error)?;
            let mut collected = Vec::new();
            while let Some(row) = rows.next().map_err(error)? {
                let mut columns = std::collections::BTreeMap::new();
                for (index, name) in names.iter().enumerate() {
                    let value = match row.get_ref(index).map_err(error)? {
                        rusqlite::types::ValueRef::Null => SqlValue::Null,
                        rusqlite::types::ValueRef::Integer(value) => SqlValue::Integer(value),
                        rusqlite::types::ValueRef::Text(text) => {
                            SqlValue::Text(String::from_utf8_lossy(text).into_owned())
                        }
                        other => return Err(DatabaseError(format!("unexpected column type {other:?}"))),
                    };
                    columns.insert(name.clone(), value);
                }
                collected.push(columns);
            }
            outcomes.push(StatementOutcome { rows: collected, changes: 0 });
        }
        transaction.commit().map_err(error)?;
        if let Some(recorded) = self.recorded.borrow_mut().as_mut() {
            recorded.push((statements, outcomes.iter().map(|outcome| outcome.changes).collect()));
        }
        Ok(outcomes)
    }
}

/// Workers KV behind the core's `KeyValue` port: a map, its reads and writes counted; when
/// `broken` is set every call fails, as an outage would.
#[derive(Default)]
pub struct MemoryKv {
    pub values: RefCell<std::collections::BTreeMap<String, String>>,
    pub reads: Cell<usize>,
    pub writes: Cell<usize>,
    pub broken: Cell<bool>,
}

impl MemoryKv {
    pub fn value(&self, key: &str) -> Option<String> {
        self.values.borrow().get(key).cloned()
    }

    /// Writes behind the port's back: what another writer, or corruption, left there.
    pub fn set(&self, key: &str, value: &str) {
        self.values.borrow_mut().insert(key.to_owned(), value.to_owned());
    }
}

impl KeyValue for MemoryKv {
    async fn get(&self, key: &str) -> Result<Option<String>, KeyValueError> {
        self.reads.set(self.reads.get() + 1);
        if self.broken.get() {
            return Err(KeyValueError("KV GET failed: 503 (injected)".to_owned()));
        }
        Ok(self.value(key))
    }

    async fn put(&self, key: &str, value: &str) -> Result<(), KeyValueError> {
        self.writes.set(self.writes.get() + 1);
        if self.broken.get() {
            return Err(KeyValueError("KV PUT failed: 503 (injected)".to_owned()));
        }
        self.set(key, value);
        Ok(())
    }
}

/// Deterministic "randomness": SHA-256 of a seed and a counter. Reproducible runs, and still
/// distinct values for every call.
pub struct SeededCrypto {
    seed: u64,
    counter: Cell<u64>,
    rsa_keys_handed_out: Cell<usize>,
}

impl SeededCrypto {
    pub fn new(seed: u64) -> SeededCrypto {
        SeededCrypto { seed, counter: Cell::new(0), rsa_keys_handed_out: Cell::new(0) }
    }
}

/// RSA keys for the tests: generating 2048-bit keys natively in a debug build would take
/// seconds, so the "generated" keys are handed out from fixtures, in turn.
const RSA_FIXTURES: &str = include_str!("../fixtures/rsa-keys.json");

impl Crypto for SeededCrypto {
    async fn generate_rsa_key(&self) -> Result<Vec<u8>, CryptoError> {
        let keys: Vec<serde_json::Value> = serde_json::from_str(RSA_FIXTURES).unwrap();
        let index = self.rsa_keys_handed_out.get();
        self.rsa_keys_handed_out.set(index + 1);
        Ok(keys[index % keys.len()].to_string().into_bytes())
    }

    /// RS256 as WebCrypto would (here with the rsa crate: tests may); ES256 and EdDSA are
    /// left to the core's Rust signing, so both paths stay exercised.
    async fn sign_jws(
        &self,
        alg: SigningAlg,
        _kid: &str,
        key: &[u8],
        message: &[u8],
    ) -> Result<Option<Vec<u8>>, CryptoError> {
        use jwt_compact::{Algorithm, AlgorithmSignature};
        if alg != SigningAlg::Rs256 {
            return Ok(None);
        }
        let jwk: JsonWebKey<'_> = serde_json::from_slice(key).map_err(|err| CryptoError(err.to_string()))?;
        let private = rsa::RsaPrivateKey::try_from(&jwk).map_err(|err| CryptoError(err.to_string()))?;
        Ok(Some(jwt_compact::alg::Rsa::rs256().sign(&private, message).as_bytes().into_owned()))
    }

    fn fill(&self, buffer: &mut [u8]) -> Result<(), EntropyError> {
        for chunk in buffer.chunks_mut(32) {
            let counter = self.counter.get();
            self.counter.set(counter + 1);
            let block =
                Sha256::new().chain_update(self.seed.to_le_bytes()).chain_update(counter.to_le_bytes()).finalize();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        Ok(())
    }
}

/// jwt-compact's fixtures' instant (STYLE.md).
pub fn epoch() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2020-09-01T10:00:00Z").unwrap().with_timezone(&Utc)
}

/// The key-encryption key of the tests: fixed, so runs are reproducible.
pub const TEST_KEY_ENCRYPTION_KEY: &str = "ZWRnZWlkLXRlc3Qta2V5LWVuY3J5cHRpb24ta2V5ISE";

/// The private key an ES256 installation signs with, as the worker gets it: read from the key
/// table and unsealed with `KEY_ENCRYPTION_KEY` (the bootstrap key is no function of the
/// configuration alone, so this is the only way to it).
pub fn bootstrap_p256_key(app: &App) -> p256::ecdsa::SigningKey {
    let kid = app.db.text(
        "SELECT kid FROM signing_keys WHERE alg = 'ES256' AND retired_at IS NULL AND compromised_at IS NULL
         ORDER BY activates_at DESC LIMIT 1",
    );
    let sealed = app.db.text(&format!("SELECT private_sealed FROM signing_keys WHERE kid = '{kid}'"));
    let private = sealing::open(&app.config.key_encryption_key.0, kid.as_bytes(), &sealed).unwrap();
    let key = KeyMaterial::from_private_jwk(SigningAlg::Es256, &kid, &private).unwrap();
    let jwk: JsonWebKey<'_> = serde_json::from_slice(&key.private_jwk()).unwrap();
    p256::ecdsa::SigningKey::try_from(&jwk).unwrap()
}

pub fn test_config(overrides: &[(&str, &str)]) -> Config {
    let mut vars = vec![
        ("ISSUER", "https://id.example.test"),
        ("PUBLIC_URL", "https://app.example.test"),
        ("ACCESS_TOKEN_AUDIENCE", "edgeid-tests"),
        ("MAIL_PROVIDER", "resend"),
        ("MAIL_API_URL", "https://mail.example.test"),
        ("MAIL_API_KEY", "re_test_key"),
        ("MAIL_FROM", "edgeid <no-reply@example.test>"),
        ("KEY_ENCRYPTION_KEY", TEST_KEY_ENCRYPTION_KEY),
        ("BREACHED_PASSWORD_API_URL", "https://pwned.example.test"),
        // Budgets are tested by tests/abuse.rs; elsewhere they would only get in the way.
        ("RATE_LIMIT_LOGIN_PER_IP", "off"),
        ("RATE_LIMIT_LOGIN_PER_ACCOUNT", "off"),
        ("RATE_LIMIT_LOGIN_PER_ACCOUNT_NETWORK", "off"),
        ("RATE_LIMIT_CODE_PER_IP", "off"),
        ("RATE_LIMIT_CODE_PER_DOMAIN", "off"),
        ("RATE_LIMIT_MAIL_PER_IP", "off"),
        ("RATE_LIMIT_MAIL_PER_ADDRESS", "off"),
        ("RATE_LIMIT_TOKEN_PER_IP", "off"),
    ];
    for (name, value) in overrides {
        vars.retain(|(existing, _)| existing != name);
        vars.push((name, value));
    }
    Config::from_lookup(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())).unwrap()
}

/// A fake of the Pwned Passwords range API: answers `/range/PREFIX` from a list of breached
/// passwords, padded like the real one; or fails, as an outage would. Records every request.
#[derive(Default)]
pub struct FakeHttp {
    pub breached: RefCell<Vec<&'static str>>,
    pub down: Cell<bool>,
    pub requests: RefCell<Vec<OutboundRequest>>,
}

impl HttpClient for FakeHttp {
    async fn send(&self, request: OutboundRequest) -> Result<OutboundResponse, HttpError> {
        self.requests.borrow_mut().push(request.clone());
        if self.down.get() {
            return Err(HttpError("connection timed out".to_owned()));
        }
        let Some(prefix) = request.url.rsplit_once("/range/").map(|(_, prefix)| prefix.to_owned()) else {
            return Ok(OutboundResponse { status: 404, headers: Vec::new(), body: String::new() });
        };
        let mut body = String::from("00000000000000000000000000000000000:0\r\n");
        for password in self.breached.borrow().iter() {
            let hex: String = sha1::Sha1::digest(password.as_bytes()).iter().map(|b| format!("{b:02X}")).collect();
            if hex[..5] == prefix {
                body.push_str(&format!("{}:42\r\n", &hex[5..]));
            }
        }
        Ok(OutboundResponse { status: 200, headers: Vec::new(), body })
    }
}

/// The API with everything injected: real SQL on SQLite, a clock tests move, captured mail.
pub struct App {
    pub config: Config,
    pub keyring: Keyring,
    /// Registered clients as an isolate keeps them (none by default: tests see a client as
    /// `DB` holds it at once).
    pub clients: ClientCache,
    /// `DB`: what is global.
    pub db: Sqlite,
    /// The user shards (`USERS_0` … `USERS_3`, as the development configuration declares).
    pub shards: UserShards<Sqlite>,
    pub crypto: SeededCrypto,
    pub http: FakeHttp,
    pub now: Cell<DateTime<Utc>>,
    pub mails: RefCell<Vec<OutgoingMail>>,
    /// Deferred account work that failed after its response (the worker logs these).
    pub deferred_failures: RefCell<Vec<String>>,
    /// [`App::round_trips`] when the last response was ready, before its deferred work: what
    /// the response waited for, apart from what ran after it.
    pub round_trips_at_response: Cell<usize>,
}

/// A response with its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub response: ApiResponse,
    pub json: Value,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.response.body).into_owned()
    }

    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.json["error"].as_str()), (status, Some(code)), "{}", self.text());
        assert_eq!(self.response.header("cache-control"), Some("no-store"));
        assert_eq!(self.response.header("content-type"), Some("application/json"));
        assert!(self.json["error_description"].as_str().is_some_and(|d| !d.is_empty()));
    }
}

impl App {
    pub fn new() -> App {
        App::with_config(test_config(&[]))
    }

    pub fn with_config(config: Config) -> App {
        App::with_shards(config, USER_SHARDS)
    }

    /// An app with `shards` user shards (1: a single-database installation's layout).
    pub fn with_shards(config: Config, shards: usize) -> App {
        let trips = Rc::new(RoundTrips::default());
        App {
            config,
            // No cache: tests move the clock and the key table and want to see it at once.
            keyring: Keyring::new(0),
            clients: ClientCache::new(0),
            db: Sqlite::with_migrations().counting_with(&trips),
            shards: UserShards::new(
                (0..shards).map(|_| Sqlite::with_migrations().counting_with(&trips)).collect(),
                Rc::new(Directory::new(600)),
            ),
            crypto: SeededCrypto::new(42),
            http: FakeHttp::default(),
            now: Cell::new(epoch()),
            mails: RefCell::new(Vec::new()),
            deferred_failures: RefCell::new(Vec::new()),
            round_trips_at_response: Cell::new(0),
        }
    }

    /// Runs the cron trigger's key maintenance at the current instant.
    pub fn maintain_keys(&self, force: bool) -> edgeid::keyring::Maintenance {
        pollster::block_on(edgeid::keyring::maintain(&self.db, &self.config, &self.crypto, self.now.get(), force))
            .unwrap()
    }

    pub fn advance(&self, seconds: i64) {
        self.now.set(self.now.get() + Duration::seconds(seconds));
    }

    /// Sequential round trips to the databases so far (`DB` and the shards together).
    pub fn round_trips(&self) -> usize {
        self.db.trips.count()
    }

    /// The user shards' SQLite databases, in order.
    pub fn user_shards(&self) -> impl Iterator<Item = &Sqlite> {
        self.shards.all()
    }

    /// A count over every user shard (a query of account data, which lives there).
    pub fn users_count(&self, sql: &str) -> i64 {
        self.user_shards().map(|shard| shard.count(sql)).sum()
    }

    /// A single text value from the one user shard where `sql` finds a row.
    #[track_caller]
    pub fn users_text(&self, sql: &str) -> String {
        let found: Vec<String> = self.user_shards().filter_map(|shard| shard.optional_text(sql)).collect();
        assert_eq!(found.len(), 1, "{sql}: found in {} shards", found.len());
        found.into_iter().next().unwrap()
    }

    /// Runs `sql` on every user shard.
    pub fn users_execute(&self, sql: &str) {
        self.user_shards().for_each(|shard| shard.execute(sql));
    }

    /// The cron's clean-up, shard by shard, added up.
    pub fn purge(&self, unverified_before: Option<i64>) -> edgeid::store::Purged {
        let mut total = edgeid::store::Purged::default();
        for shard in self.user_shards() {
            let purged = pollster::block_on(edgeid::store::purge(shard, self.now.get(), unverified_before)).unwrap();
            total.one_time_tokens += purged.one_time_tokens;
            total.sessions += purged.sessions;
            total.refresh_tokens += purged.refresh_tokens;
            total.unverified_accounts += purged.unverified_accounts;
            total.authorization_codes += purged.authorization_codes;
            total.browser_sessions += purged.browser_sessions;
        }
        total
    }

    /// Breaks (or mends) every database, `DB` and the shards.
    pub fn break_databases(&self, broken: bool) {
        self.db.broken.set(broken);
        self.user_shards().for_each(|shard| shard.broken.set(broken));
    }

    /// A flow context on this app's ports at its current instant, with no client address or
    /// language, for tests that call a flow directly.
    pub fn context<'a>(&'a self, outbox: &'a Outbox) -> Context<'a, Sqlite, SeededCrypto, FakeHttp> {
        Context {
            config: &self.config,
            keyring: &self.keyring,
            clients: &self.clients,
            db: &self.db,
            shards: &self.shards,
            crypto: &self.crypto,
            http: &self.http,
            now: self.now.get(),
            client_ip: None,
            accept_language: None,
            outbox,
        }
    }

    /// Requests reach the app at 127.0.0.1:8787 unless they name another host.
    pub fn send(&self, mut request: ApiRequest) -> Reply {
        if request.host.is_empty() {
            request.host = "127.0.0.1:8787".to_owned();
        }
        let outbox = Outbox::default();
        let ctx = Context {
            config: &self.config,
            keyring: &self.keyring,
            clients: &self.clients,
            db: &self.db,
            shards: &self.shards,
            crypto: &self.crypto,
            http: &self.http,
            now: self.now.get(),
            client_ip: request.client_ip(),
            accept_language: request.header("accept-language"),
            outbox: &outbox,
        };
        let response = pollster::block_on(handle(&ctx, &request));
        self.round_trips_at_response.set(self.round_trips());
        // What the worker does in `waitUntil`, after the response: the deferred account work.
        for work in outbox.take_deferred() {
            if let Err(err) = pollster::block_on(edgeid::flows::run_deferred(&ctx, work)) {
                self.deferred_failures.borrow_mut().push(err.to_string());
            }
        }
        self.mails.borrow_mut().extend(outbox.take());
        let json = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        Reply { status: response.status, json, response }
    }

    pub fn request(&self, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let mut headers = Vec::new();
        if let Some(content_type) = content_type {
            headers.push(("Content-Type".to_owned(), content_type.to_owned()));
        }
        self.send(ApiRequest {
            method: method.to_owned(),
            host: String::new(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers,
            body: body.to_vec(),
        })
    }

    pub fn post(&self, path: &str, body: Value) -> Reply {
        self.request("POST", path, Some("application/json"), body.to_string().as_bytes())
    }

    /// A JSON POST from the client address `client_ip` (as `CF-Connecting-IP`).
    pub fn post_from(&self, client_ip: &str, path: &str, body: Value) -> Reply {
        self.send(ApiRequest {
            method: "POST".to_owned(),
            host: String::new(),
            path: path.to_owned(),
            query: String::new(),
            headers: vec![
                ("Content-Type".to_owned(), "application/json".to_owned()),
                ("CF-Connecting-IP".to_owned(), client_ip.to_owned()),
            ],
            body: body.to_string().into_bytes(),
        })
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None, b"")
    }

    /// Takes the mails sent so far.
    pub fn take_mails(&self) -> Vec<OutgoingMail> {
        self.mails.take()
    }

    /// The only mail sent since the last call, which must go to `to`.
    #[track_caller]
    pub fn single_mail_to(&self, to: &str) -> OutgoingMail {
        let mails = self.take_mails();
        assert_eq!(mails.len(), 1, "{mails:?}");
        assert_eq!(mails[0].to.as_str(), to);
        mails.into_iter().next().unwrap()
    }

    /// Signs up and verifies `email`, returning nothing but a ready account.
    pub fn verified_account(&self, email: &str, password: &str) {
        assert_eq!(self.post("/v1/signup", serde_json::json!({"email": email, "password": password})).status, 202);
        let token = token_in_link(&self.single_mail_to(email).text, "/verify-email");
        assert_eq!(self.post("/v1/email/verify", serde_json::json!({"token": token})).status, 200);
    }
}

/// The token of the `${PUBLIC_URL}{path}?token=` link in a mail's text body.
#[track_caller]
pub fn token_in_link(text: &str, path: &str) -> String {
    let marker = format!("{path}?token=");
    let start = text.find(&marker).unwrap_or_else(|| panic!("no {marker} link in {text}")) + marker.len();
    text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect()
}
