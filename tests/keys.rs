//! Signing keys over simulated time, one active key per algorithm (`SIGNING_ALG` and RS256
//! beside it): race-free bootstrap, publication before use, retirement, removal after the last
//! token expires, on-demand rotation and a change of algorithm; and keys that survive a
//! compromise: rotation of the key-encryption key, keys no configured key-encryption key opens,
//! salted bootstrap keys that never come back, and the operator's compromise command, which
//! stops one algorithm's key and never another's; and the key snapshot in KV, which a new
//! isolate signs from without reading D1 while it is usable, and never past its maximum age.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use edgeid::api::ApiRequest;
use edgeid::domain::sealing;
use edgeid::domain::signing::{KeyMaterial, SigningAlg, SigningKeys};
use edgeid::keyring::{
    self, Keyring, SnapshotRefresh, UnusableSnapshot, SNAPSHOT_CLOCK_SKEW_SECONDS, SNAPSHOT_MAX_AGE_SECONDS,
};
use edgeid::store::{self, SigningKeySnapshot, SIGNING_KEY_SNAPSHOT_KEY};
use serde_json::{json, Value};

use crate::support::{test_config, App, MemoryKv, SeededCrypto, Sqlite, TEST_KEY_ENCRYPTION_KEY};

/// Key-encryption keys besides the tests' own (`TEST_KEY_ENCRYPTION_KEY`): the next one of a
/// rotation, and an unrelated one (the old one lost).
const NEXT_KEK: &str = "ZWRnZWlkLXRlc3QtbmV4dC1rZXktZW5jcnlwdGlvbiE";
const UNRELATED_KEK: &str = "ZWRnZWlkLXRlc3QtbG9zdC1rZXktZW5jcnlwdGlvbiE";

/// What README "Signing keys" tells an operator to run against D1 for a compromised key.
fn compromise(app: &App, kid: &str) {
    app.db.execute(&format!("UPDATE signing_keys SET compromised_at = unixepoch() WHERE kid = '{kid}'"));
}

/// The keys an isolate with its own `keyring` uses at the app's instant.
fn keys_of(app: &App, keyring: &Keyring) -> Rc<SigningKeys> {
    pollster::block_on(keyring.signing_keys(&app.db, &app.config, &app.crypto, app.now.get())).unwrap()
}

const PASSWORD: &str = "correct horse battery";
const DAY: i64 = 86_400;

/// Every kid in the JWKS, in its order.
fn kids(app: &App) -> Vec<String> {
    let jwks = app.get("/.well-known/jwks.json").json;
    jwks["keys"].as_array().unwrap().iter().map(|key| key["kid"].as_str().unwrap().to_owned()).collect()
}

/// The kids of `alg`'s keys in the JWKS, in its order.
fn kids_of(app: &App, alg: &str) -> Vec<String> {
    let jwks = app.get("/.well-known/jwks.json").json;
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|key| key["alg"] == alg)
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// The key that signs for `alg` at the app's instant (its own keyring).
fn signing_kid(app: &App, alg: SigningAlg) -> String {
    keys_of(app, &app.keyring).active_kid_of(alg).unwrap_or_else(|| panic!("no {alg:?} key signs")).to_owned()
}

fn count_of(app: &App, alg: &str) -> i64 {
    app.db.count(&format!("SELECT count(*) FROM signing_keys WHERE alg = '{alg}'"))
}

/// The key a cron run published for the algorithm at `position` of `Config::signing_algorithms`.
fn published(report: &edgeid::keyring::Maintenance, position: usize) -> (String, i64) {
    report.published.get(position).cloned().unwrap_or_else(|| panic!("nothing published at {position}: {report:?}"))
}

/// A token signed with the keys' RS256 key, as an ID token for a relying party would be.
fn rs256_token(app: &App, keys: &SigningKeys) -> String {
    let claims = jwt_compact::Claims::new(json!({"sub": "relying-party-user"}));
    pollster::block_on(keys.sign_with(SigningAlg::Rs256, "JWT", &claims, &app.crypto)).unwrap()
}

fn login(app: &App, email: &str) -> Value {
    let reply = app.post("/v1/login", json!({"email": email, "password": PASSWORD}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json
}

fn kid_of(token: &Value) -> String {
    let token = jwt_compact::UntrustedToken::new(token["access_token"].as_str().unwrap()).unwrap();
    token.header().key_id.clone().unwrap()
}

fn userinfo_status(app: &App, token: &Value) -> u16 {
    app.send(ApiRequest {
        method: "GET".into(),
        path: "/userinfo".into(),
        headers: vec![("Authorization".into(), format!("Bearer {}", token["access_token"].as_str().unwrap()))],
        ..Default::default()
    })
    .status
}

#[test]
fn the_first_key_of_each_algorithm_is_bootstrapped_exactly_once() {
    let app = App::new();
    assert_eq!(app.db.count("SELECT count(*) FROM signing_keys"), 0);
    assert_eq!(app.get("/healthz").status, 200);
    assert_eq!((count_of(&app, "ES256"), count_of(&app, "RS256")), (1, 1));
    let (es256, rs256) = (kids_of(&app, "ES256")[0].clone(), kids_of(&app, "RS256")[0].clone());
    // Other isolates (their own keyrings, empty caches) find them.
    for _ in 0..5 {
        let keys = keys_of(&app, &Keyring::new(60));
        assert_eq!(keys.active_kid(), es256, "SIGNING_ALG's key signs by default");
        assert_eq!(keys.active_kid_of(SigningAlg::Rs256), Some(rs256.as_str()));
    }
    assert_eq!(app.db.count("SELECT count(*) FROM signing_keys"), 2);
    // Only the derived bootstrap keeps a salt.
    assert_eq!(app.db.text("SELECT group_concat(alg) FROM signing_key_salts"), "ES256");
}

/// Both algorithms publish and sign from the first request: the JWKS lists both, discovery
/// names both (`SIGNING_ALG` first), access tokens stay ES256, and the RS256 key signs tokens
/// that verify against the JWKS; an algorithm edgeid does not sign with is an error.
#[test]
fn rs256_signs_beside_signing_alg_from_the_first_request() {
    let app = App::new();
    app.verified_account("beside@example.com", PASSWORD);
    let tokens = login(&app, "beside@example.com");
    let jwks = app.get("/.well-known/jwks.json").json;
    let mut algorithms: Vec<&str> =
        jwks["keys"].as_array().unwrap().iter().map(|key| key["alg"].as_str().unwrap()).collect();
    algorithms.sort();
    assert_eq!(algorithms, ["ES256", "RS256"]);
    let discovery = app.get("/.well-known/openid-configuration").json;
    assert_eq!(discovery["id_token_signing_alg_values_supported"], json!(["ES256", "RS256"]));
    assert_eq!(
        jwt_compact::UntrustedToken::new(tokens["access_token"].as_str().unwrap()).unwrap().algorithm(),
        "ES256"
    );
    assert_eq!(kid_of(&tokens), kids_of(&app, "ES256")[0]);

    let keys = keys_of(&app, &app.keyring);
    let token = rs256_token(&app, &keys);
    let header = edgeid::domain::signing::token_header(&token).unwrap();
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("RS256"), Some(kids_of(&app, "RS256")[0].as_str()))
    );
    // Verified by what the JWKS publishes, as a relying party would.
    let published = edgeid_verifier::keys::PublishedKeys::from_jwks_json(&jwks.to_string()).unwrap();
    assert!(published.verify::<Value>(&token, "JWT").is_ok());
    let claims = jwt_compact::Claims::new(json!({}));
    assert!(pollster::block_on(keys.sign_with(SigningAlg::EdDsa, "JWT", &claims, &app.crypto)).is_err());
}

/// A database whose batches each wait for a turn that the test hands out: concurrent requests'
/// round trips interleave exactly as the test says.
struct Turns<'a> {
    inner: &'a crate::support::Sqlite,
    turns: Cell<usize>,
}

impl<'a> Turns<'a> {
    fn new(inner: &'a crate::support::Sqlite) -> Turns<'a> {
        Turns { inner, turns: Cell::new(0) }
    }
}

impl edgeid::ports::Database for Turns<'_> {
    async fn batch(
        &self,
        statements: Vec<edgeid::ports::Statement>,
    ) -> Result<Vec<edgeid::ports::StatementOutcome>, edgeid::ports::DatabaseError> {
        std::future::poll_fn(|_| match self.turns.get() {
            0 => Poll::Pending,
            turns => {
                self.turns.set(turns - 1);
                Poll::Ready(())
            }
        })
        .await;
        self.inner.batch(statements).await
    }
}

/// Lets the request behind `future` run its next round trip (and what follows it, up to the
/// next one); its result if that was its last.
fn one_round_trip<F: Future>(db: &Turns<'_>, future: Pin<&mut F>) -> Poll<F::Output> {
    db.turns.set(db.turns.get() + 1);
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// Two requests (two isolates) bootstrap at once, each round trip of the one answered right
/// after the same of the other: both read the table without a usable key, both read the salt
/// before either inserts, both insert (the ES256 key derived, the RS256 key each its own).
/// Exactly one key per algorithm goes in and both sign with them: `(ES256 kid, RS256 kid)`.
fn race_two_bootstraps(app: &App) -> (String, String) {
    let (keyring_a, keyring_b) = (Keyring::new(60), Keyring::new(60));
    let (db_a, db_b) = (Turns::new(&app.db), Turns::new(&app.db));
    let now = app.now.get();
    let mut a = std::pin::pin!(keyring_a.signing_keys(&db_a, &app.config, &app.crypto, now));
    let mut b = std::pin::pin!(keyring_b.signing_keys(&db_b, &app.config, &app.crypto, now));
    let (mut done_a, mut done_b) = (None, None);
    let kids = |keys: Rc<SigningKeys>| {
        (keys.active_kid().to_owned(), keys.active_kid_of(SigningAlg::Rs256).unwrap().to_owned())
    };
    for _ in 0..24 {
        if done_a.is_none() {
            if let Poll::Ready(keys) = one_round_trip(&db_a, a.as_mut()) {
                done_a = Some(kids(keys.unwrap()));
            }
        }
        if done_b.is_none() {
            if let Poll::Ready(keys) = one_round_trip(&db_b, b.as_mut()) {
                done_b = Some(kids(keys.unwrap()));
            }
        }
    }
    let (kids_a, kids_b) = (done_a.expect("a finished"), done_b.expect("b finished"));
    assert_eq!(kids_a, kids_b, "both sign with the one key of each algorithm inserted");
    kids_a
}

#[test]
fn concurrent_bootstraps_insert_exactly_one_key_per_algorithm() {
    let app = App::new();
    let (es256, rs256) = race_two_bootstraps(&app);
    assert_eq!((count_of(&app, "ES256"), count_of(&app, "RS256")), (1, 1));
    assert_eq!(app.db.text("SELECT kid FROM signing_key_salts WHERE alg = 'ES256'"), es256);
    assert_eq!((kids_of(&app, "ES256"), kids_of(&app, "RS256")), (vec![es256.clone()], vec![rs256.clone()]));

    // The same after a compromise of the ES256 key: both find the salt spent, one replaces it,
    // both derive the key of the new salt, one inserts it. The RS256 key is left alone.
    compromise(&app, &es256);
    let (fresh, same_rs256) = race_two_bootstraps(&app);
    assert_ne!(fresh, es256);
    assert_eq!(same_rs256, rs256);
    assert_eq!(app.db.count("SELECT count(*) FROM signing_keys WHERE compromised_at IS NULL"), 2);
    assert_eq!(app.db.text("SELECT kid FROM signing_key_salts WHERE alg = 'ES256'"), fresh);
    assert_eq!(kids_of(&app, "ES256"), vec![fresh.clone()]);

    // And of the RS256 key: each racer generates its own, one goes in; ES256 is left alone.
    compromise(&app, &rs256);
    let (same_es256, fresh_rs256) = race_two_bootstraps(&app);
    assert_eq!(same_es256, fresh);
    assert_ne!(fresh_rs256, rs256);
    assert_eq!(app.db.count("SELECT count(*) FROM signing_keys WHERE compromised_at IS NULL AND alg = 'RS256'"), 1);
    assert_eq!(kids_of(&app, "RS256"), vec![fresh_rs256]);
}

/// "Never comes back": no key, once it stops signing (retired, compromised, deleted), ever
/// signs again or reappears in the table. Bootstrap keys are derived from the key-encryption
/// key and a stored salt, and a salt yields one key once; so every bootstrap after the first
/// makes a key never seen before, while a bootstrap that races the first gets the same key.
#[test]
fn a_bootstrap_key_needs_the_stored_salt_and_never_comes_back() {
    let mut app = App::new();
    app.get("/healthz");
    let first = kids_of(&app, "ES256")[0].clone();
    let first_salt = app.db.text("SELECT salt FROM signing_key_salts WHERE alg = 'ES256'");
    // The same key-encryption key on another database (another salt): another key. Knowing
    // the key-encryption key alone yields no signing key.
    let mut elsewhere = App::new();
    elsewhere.crypto = SeededCrypto::new(7);
    elsewhere.get("/healthz");
    assert_ne!(kids_of(&elsewhere, "ES256")[0], first);

    let mut seen = BTreeSet::from([first.clone()]);
    let mut fresh = |app: &App, why: &str| {
        let kid = keys_of(app, &app.keyring).active_kid().to_owned();
        assert!(seen.insert(kid.clone()), "{why}: {kid} came back");
        assert_eq!(app.db.count(&format!("SELECT count(*) FROM signing_keys WHERE kid = '{kid}'")), 1);
        kid
    };

    // Deleted by hand: the salt has yielded its key, so it is replaced and a new key derived.
    app.db.execute("DELETE FROM signing_keys");
    fresh(&app, "deleted");
    assert_ne!(app.db.text("SELECT salt FROM signing_key_salts WHERE alg = 'ES256'"), first_salt);
    // A salt row deleted too: a new salt, a new key.
    app.db.execute("DELETE FROM signing_keys");
    app.db.execute("DELETE FROM signing_key_salts");
    let es256 = fresh(&app, "deleted with its salt");

    // ES256 → EdDSA → ES256: the ES256 key the switch retired stays retired, a new one signs.
    app.config = test_config(&[("SIGNING_ALG", "EdDSA")]);
    fresh(&app, "first EdDSA");
    let retired_at = app.db.count(&format!("SELECT retired_at FROM signing_keys WHERE kid = '{es256}'"));
    app.config = test_config(&[]);
    fresh(&app, "ES256 again");
    assert_eq!(app.db.count(&format!("SELECT retired_at FROM signing_keys WHERE kid = '{es256}'")), retired_at);
    // Once the cron has deleted the retired keys, switching again still makes new keys.
    app.advance(931);
    assert!(app.maintain_keys(false).removed >= 2);
    for alg in ["EdDSA", "ES256", "EdDSA", "ES256"] {
        app.config = test_config(&[("SIGNING_ALG", alg)]);
        fresh(&app, alg);
        app.advance(931);
        app.maintain_keys(false);
    }
    // Rotated keys are random and inserted once: a kid already in the table fails the insert.
    app.db.execute("UPDATE signing_keys SET retired_at = 1");
    let duplicate = app.db.text("SELECT kid FROM signing_keys LIMIT 1");
    let record = pollster::block_on(edgeid::store::list_signing_keys(&app.db)).unwrap().remove(0);
    assert_eq!(record.kid, duplicate);
    let signed = ["ES256", "RS256"];
    assert!(pollster::block_on(edgeid::store::add_signing_key(&app.db, &record, &signed, app.now.get())).is_err());
    assert_eq!(app.db.count("SELECT count(*) FROM signing_keys WHERE retired_at IS NULL OR retired_at != 1"), 0);
}

/// RS256 keys cannot be derived, so racing first requests each generate one and exactly one
/// goes in, even when their instants straddle a second and the later one inserts first: alone
/// (`SIGNING_ALG=RS256`) and beside ES256.
#[test]
fn an_rs256_bootstrap_is_exactly_once_across_a_second_boundary() {
    for config in [test_config(&[("SIGNING_ALG", "RS256")]), test_config(&[])] {
        let app = App::with_config(config);
        let algorithms = app.config.signing_algorithms();
        app.advance(1);
        assert_eq!(app.get("/healthz").status, 200);
        let winners: Vec<String> = algorithms.iter().map(|&alg| signing_kid(&app, alg)).collect();
        // A request that started a second earlier (its own isolate) bootstraps after that.
        app.advance(-1);
        let isolate = Keyring::new(60);
        let keys = pollster::block_on(isolate.signing_keys(&app.db, &app.config, &app.crypto, app.now.get())).unwrap();
        for (alg, winner) in algorithms.iter().zip(&winners) {
            assert_eq!(keys.active_kid_of(*alg), Some(winner.as_str()), "{alg:?}: it signs with the key that won");
        }
        assert_eq!(app.db.count("SELECT count(*) FROM signing_keys"), algorithms.len() as i64);
        let mut published = kids(&app);
        published.sort();
        let mut expected = winners.clone();
        expected.sort();
        assert_eq!(published, expected);
    }
}

/// A database whose first batch takes its snapshot at once but answers only when opened: a
/// read that started first and finishes last.
struct SlowFirstRead<'a> {
    inner: &'a crate::support::Sqlite,
    answered: std::cell::Cell<bool>,
    open: std::cell::Cell<bool>,
}

impl edgeid::ports::Database for SlowFirstRead<'_> {
    async fn batch(
        &self,
        statements: Vec<edgeid::ports::Statement>,
    ) -> Result<Vec<edgeid::ports::StatementOutcome>, edgeid::ports::DatabaseError> {
        let outcome = self.inner.batch(statements).await;
        if !self.answered.replace(true) {
            std::future::poll_fn(|_| if self.open.get() { Poll::Ready(()) } else { Poll::Pending }).await;
        }
        outcome
    }
}

/// Of two overlapping reads of the key table, the one issued later stays cached, whichever
/// answers last: an isolate's JWKS never goes back to an older table.
#[test]
fn a_slow_earlier_read_never_replaces_a_newer_one() {
    let app = App::new();
    app.get("/healthz");
    let keyring = Keyring::new(60);
    let slow = SlowFirstRead { inner: &app.db, answered: Default::default(), open: Default::default() };
    let mut context = Context::from_waker(Waker::noop());
    let started = app.now.get();
    let mut first = std::pin::pin!(keyring.signing_keys(&slow, &app.config, &app.crypto, started));
    assert!(first.as_mut().poll(&mut context).is_pending(), "the first read has its snapshot: a key per algorithm");

    // A key per algorithm is published; a request a second later reads the table with them and
    // caches it.
    app.maintain_keys(true);
    app.advance(1);
    let second = pollster::block_on(keyring.signing_keys(&app.db, &app.config, &app.crypto, app.now.get())).unwrap();
    assert_eq!(second.jwks_json().matches("\"kid\"").count(), 4);

    slow.open.set(true);
    let Poll::Ready(first) = first.as_mut().poll(&mut context) else { panic!("the first read was answered") };
    assert_eq!(first.unwrap().jwks_json().matches("\"kid\"").count(), 4, "the newer read serves the older request");
    let third = pollster::block_on(keyring.signing_keys(&app.db, &app.config, &app.crypto, app.now.get())).unwrap();
    assert_eq!(third.jwks_json().matches("\"kid\"").count(), 4, "the cache still holds the newer read");
}

#[test]
fn private_keys_are_sealed_at_rest() {
    let app = App::new();
    app.get("/healthz");
    let stored = app.db.text("SELECT group_concat(public_jwk || ' ' || private_sealed, ' ') FROM signing_keys");
    assert!(stored.contains("\"RSA\"") && stored.contains("\"EC\""), "both algorithms' keys");
    let private = crate::support::bootstrap_p256_key(&app);
    let d = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, private.to_bytes());
    assert!(!stored.contains(&d), "the private scalar is stored in the clear");
    // Nor the RSA key's private exponent (the first key the tests' crypto "generates").
    let rsa: Vec<Value> = serde_json::from_str(include_str!("fixtures/rsa-keys.json")).unwrap();
    assert!(stored.contains(rsa[0]["n"].as_str().unwrap()), "the RS256 key is the first fixture");
    assert!(!stored.contains(rsa[0]["d"].as_str().unwrap()), "the RSA private exponent is stored in the clear");
    assert!(!stored.contains("\"d\""));
    let salt = app.db.text("SELECT salt FROM signing_key_salts");
    assert!(!stored.contains(&salt));
}

/// Rotating the key-encryption key: with the old one in `KEY_ENCRYPTION_KEY_PREVIOUS`, keys
/// of both algorithms sealed under it keep signing (no new key is made); the cron re-seals them
/// all under the new one; afterwards they open without the old key.
#[test]
fn keys_sealed_under_the_previous_key_encryption_key_work_and_are_resealed() {
    let mut app = App::new();
    app.verified_account("kek@example.com", PASSWORD);
    let before = login(&app, "kek@example.com");
    let kid = kid_of(&before);
    let rs256 = signing_kid(&app, SigningAlg::Rs256);
    let report = app.maintain_keys(true);
    let ((pending, _), (pending_rs256, _)) = (published(&report, 0), published(&report, 1));
    let sealed = |app: &App| app.db.text("SELECT group_concat(private_sealed, ' ') FROM signing_keys ORDER BY kid");
    let sealed_under_old = sealed(&app);

    app.config =
        test_config(&[("KEY_ENCRYPTION_KEY", NEXT_KEK), ("KEY_ENCRYPTION_KEY_PREVIOUS", TEST_KEY_ENCRYPTION_KEY)]);
    app.keyring = Keyring::new(0);
    assert_eq!(kid_of(&login(&app, "kek@example.com")), kid);
    assert_eq!(signing_kid(&app, SigningAlg::Rs256), rs256);
    assert_eq!(userinfo_status(&app, &before), 200);
    assert_eq!(kids_of(&app, "ES256"), [pending.clone(), kid.clone()]);
    assert_eq!(kids_of(&app, "RS256"), [pending_rs256.clone(), rs256.clone()]);
    assert_eq!(app.db.count("SELECT count(*) FROM signing_keys"), 4, "no new key");

    let report = app.maintain_keys(false);
    assert_eq!((report.resealed, report.published), (4, vec![]));
    assert_ne!(sealed(&app), sealed_under_old);
    assert_eq!(app.maintain_keys(false).resealed, 0, "nothing left to re-seal");
    // Each key now opens with the new key-encryption key, and not with the old one.
    for kid in [&kid, &pending, &rs256, &pending_rs256] {
        let stored = app.db.text(&format!("SELECT private_sealed FROM signing_keys WHERE kid = '{kid}'"));
        assert!(sealing::open(&app.config.key_encryption_key.0, kid.as_bytes(), &stored).is_some());
        let old = test_config(&[]).key_encryption_key;
        assert!(sealing::open(&old.0, kid.as_bytes(), &stored).is_none());
    }

    // The old key removed: the same keys sign, and the pending ones take over on time.
    app.config = test_config(&[("KEY_ENCRYPTION_KEY", NEXT_KEK)]);
    assert_eq!(kid_of(&login(&app, "kek@example.com")), kid);
    assert_eq!(signing_kid(&app, SigningAlg::Rs256), rs256);
    app.advance(app.config.key_publication_lead_seconds);
    assert_eq!(kid_of(&login(&app, "kek@example.com")), pending);
    assert_eq!(signing_kid(&app, SigningAlg::Rs256), pending_rs256);
    assert_eq!(app.db.count("SELECT count(*) FROM signing_keys"), 4);
}

/// Deployed with a key-encryption key that opens none of the stored keys (the old one lost):
/// every endpoint answers as usual, a fresh key of each algorithm signs at once, and the old
/// ones, which cannot sign, stay published until the tokens they signed have expired.
#[test]
fn a_key_no_configured_key_encryption_key_opens_is_treated_as_absent() {
    for (alg, algorithms) in [("ES256", json!(["ES256", "RS256"])), ("RS256", json!(["RS256"]))] {
        let mut app = App::with_config(test_config(&[("SIGNING_ALG", alg)]));
        let signed = app.config.signing_algorithms();
        app.verified_account("lost@example.com", PASSWORD);
        let before = login(&app, "lost@example.com");
        let old_kids: Vec<String> = signed.iter().map(|&alg| signing_kid(&app, alg)).collect();
        assert_eq!(kid_of(&before), old_kids[0]);

        app.config = test_config(&[("SIGNING_ALG", alg), ("KEY_ENCRYPTION_KEY", UNRELATED_KEK)]);
        app.keyring = Keyring::new(60);
        assert_eq!(app.get("/healthz").status, 200, "{alg}");
        let discovery = app.get("/.well-known/openid-configuration");
        assert_eq!(
            (discovery.status, discovery.json["id_token_signing_alg_values_supported"].clone()),
            (200, algorithms)
        );
        let published = kids(&app);
        assert_eq!(published.len(), 2 * signed.len(), "{alg}: {published:?}");
        let mut fresh_kids = Vec::new();
        for (&signing_alg, old_kid) in signed.iter().zip(&old_kids) {
            assert!(published.contains(old_kid), "{alg}: {old_kid} still published");
            let fresh_kid = signing_kid(&app, signing_alg);
            assert!(fresh_kid != *old_kid && published.contains(&fresh_kid), "{alg}: a fresh {signing_alg:?} key");
            fresh_kids.push(fresh_kid);
        }
        let after = login(&app, "lost@example.com");
        assert_eq!(kid_of(&after), fresh_kids[0], "{alg}: the fresh key signs");
        assert_eq!(userinfo_status(&app, &before), 200, "{alg}: the old key's tokens still verify");
        assert_eq!(userinfo_status(&app, &after), 200, "{alg}");
        // Another isolate (no cache) agrees, and nothing more is added.
        let elsewhere = keys_of(&app, &Keyring::new(0));
        for (&signing_alg, fresh_kid) in signed.iter().zip(&fresh_kids) {
            assert_eq!(elsewhere.active_kid_of(signing_alg), Some(fresh_kid.as_str()), "{alg}");
        }
        assert_eq!(app.db.count("SELECT count(*) FROM signing_keys"), 2 * signed.len() as i64, "{alg}");
        // The cron cannot re-seal them, and deletes them with the others retired once their
        // tokens expire.
        assert_eq!(app.maintain_keys(false).resealed, 0);
        app.advance(931);
        app.keyring = Keyring::new(0);
        let mut left = kids(&app);
        left.sort();
        fresh_kids.sort();
        assert_eq!(left, fresh_kids, "{alg}");
        assert_eq!(app.maintain_keys(false).removed, signed.len() as u64, "{alg}");
    }
}

/// The compromise command: the key leaves the JWKS and discovery at the isolate's next read of
/// the key table, never signs again, and `/userinfo` refuses its tokens at once, even while the
/// isolate's keyring still caches it; a fresh key (of a new salt) signs. The RS256 key beside
/// it is untouched throughout, until it is compromised too.
#[test]
fn a_compromised_key_is_retired_at_once() {
    let mut app = App::with_config(test_config(&[("KEY_PUBLICATION_LEAD_SECONDS", "200")]));
    app.keyring = Keyring::new(60);
    app.verified_account("compromise@example.com", PASSWORD);
    let token = login(&app, "compromise@example.com");
    let kid = kid_of(&token);
    let rs256 = signing_kid(&app, SigningAlg::Rs256);
    assert_eq!(userinfo_status(&app, &token), 200);
    let read_at = app.now.get().timestamp();
    let until = app.get("/.well-known/jwks.json").response.same_until_ms.unwrap();

    compromise(&app, &kid);
    assert_eq!(userinfo_status(&app, &token), 401, "refused at once, from the warm cache too");
    // The cached read (a quarter of the lead: 50 s) still lists it; JWKS and discovery are
    // replayed from memory no longer than that read.
    assert!(until <= (read_at + 50) * 1000, "{until}");
    app.advance(50);
    assert!(!kids(&app).contains(&kid), "out of the JWKS after the next read");
    let fresh = login(&app, "compromise@example.com");
    let fresh_kid = kid_of(&fresh);
    assert_ne!(fresh_kid, kid);
    assert_eq!(kids_of(&app, "ES256"), vec![fresh_kid.clone()]);
    assert_eq!((kids_of(&app, "RS256"), signing_kid(&app, SigningAlg::Rs256)), (vec![rs256.clone()], rs256.clone()));
    assert_eq!(userinfo_status(&app, &fresh), 200);
    assert_eq!(userinfo_status(&app, &token), 401);
    let discovery = app.get("/.well-known/openid-configuration").json;
    assert_eq!(discovery["id_token_signing_alg_values_supported"], json!(["ES256", "RS256"]));

    // A compromised key that was only published (not yet signing) leaves too, and does not hold
    // up the rotation: the next run publishes another (of its algorithm only: the RS256 key
    // published beside it is still pending).
    app.advance(1);
    let (pending, _) = published(&app.maintain_keys(true), 0);
    compromise(&app, &pending);
    app.keyring = Keyring::new(0);
    assert_eq!(kids_of(&app, "ES256"), vec![fresh_kid.clone()]);
    let report = app.maintain_keys(true);
    assert_eq!(report.published.len(), 1, "{report:?}");
    let (next, activates_at) = published(&report, 0);
    app.advance(activates_at - app.now.get().timestamp());
    assert_eq!(kid_of(&login(&app, "compromise@example.com")), next);

    // Every key at once (a copy of D1 and the key-encryption key leaked): a fresh one of each
    // algorithm signs.
    let rs256_before: Vec<String> = kids_of(&app, "RS256");
    app.db.execute("UPDATE signing_keys SET compromised_at = unixepoch() WHERE compromised_at IS NULL");
    let last = login(&app, "compromise@example.com");
    assert!(![kid.as_str(), pending.as_str(), next.as_str(), fresh_kid.as_str()].contains(&kid_of(&last).as_str()));
    assert_eq!(kids_of(&app, "ES256"), vec![kid_of(&last)]);
    let rs256_after = kids_of(&app, "RS256");
    assert!(rs256_after.len() == 1 && !rs256_before.contains(&rs256_after[0]), "{rs256_before:?} {rs256_after:?}");
}

/// A compromised RS256 key is replaced by a fresh RS256 key at the next read, while the
/// `SIGNING_ALG` key goes on signing; `/userinfo` refuses nothing it signed.
#[test]
fn a_compromised_rs256_key_does_not_stop_the_signing_alg_key() {
    let app = App::with_config(test_config(&[("KEY_PUBLICATION_LEAD_SECONDS", "200")]));
    app.verified_account("rsa-compromise@example.com", PASSWORD);
    let token = login(&app, "rsa-compromise@example.com");
    let es256 = kid_of(&token);
    let rs256 = signing_kid(&app, SigningAlg::Rs256);

    compromise(&app, &rs256);
    let fresh_rs256 = signing_kid(&app, SigningAlg::Rs256);
    assert_ne!(fresh_rs256, rs256);
    assert_eq!(signing_kid(&app, SigningAlg::Es256), es256, "the ES256 key still signs");
    assert_eq!(kids_of(&app, "RS256"), vec![fresh_rs256.clone()]);
    assert_eq!(kids_of(&app, "ES256"), vec![es256.clone()]);
    assert_eq!(userinfo_status(&app, &token), 200);
    assert_eq!(kid_of(&login(&app, "rsa-compromise@example.com")), es256);
    // The fresh RS256 key signs what verifies against the JWKS.
    let jwks = app.get("/.well-known/jwks.json").text();
    let published = edgeid_verifier::keys::PublishedKeys::from_jwks_json(&jwks).unwrap();
    let keys = keys_of(&app, &app.keyring);
    assert!(published.verify::<Value>(&rs256_token(&app, &keys), "JWT").is_ok());
    assert_eq!(count_of(&app, "RS256"), 2, "one fresh key, whatever the reads");
    // The rotation of either is unaffected: both publish their next key.
    assert_eq!(app.maintain_keys(true).published.len(), 2);
}

/// An installation upgraded from a release whose bootstrap key was a function of the
/// key-encryption key alone: the migration makes that key due, so the next cron run publishes
/// a random successor.
#[test]
fn an_upgrade_rotates_a_bootstrap_key_made_from_the_key_encryption_key_alone() {
    // A key as that release stored it: bootstrapped (active from its publication), sealed
    // under the key-encryption key. Made here by today's code, then moved to a database of
    // the old schema.
    let donor = App::new();
    donor.get("/healthz");
    let (kid, row) = (
        kids_of(&donor, "ES256")[0].clone(),
        donor.db.text("SELECT alg || '|' || public_jwk || '|' || private_sealed FROM signing_keys WHERE alg = 'ES256'"),
    );
    let mut app = App::new();
    app.db = Sqlite::with_migrations_before("0007");
    let at = app.now.get().timestamp();
    let fields: Vec<&str> = row.splitn(3, '|').collect();
    app.db.execute(&format!(
        "INSERT INTO signing_keys (kid, alg, public_jwk, private_sealed, created_at, published_at, activates_at)
         VALUES ('{kid}', '{}', '{}', '{}', {at}, {at}, {at})",
        fields[0], fields[1], fields[2]
    ));
    app.db.apply_migration("0007_key_salts.sql");

    app.advance(60);
    assert_eq!(keys_of(&app, &app.keyring).active_kid(), kid, "it still signs after the upgrade");
    // An RS256 key came in beside it at that first request, and is not due.
    let rs256 = signing_kid(&app, SigningAlg::Rs256);
    let report = app.maintain_keys(false);
    assert_eq!(report.published.len(), 1, "only the old ES256 key is due: {report:?}");
    let (successor, activates_at) = published(&report, 0);
    assert_eq!(activates_at, app.now.get().timestamp() + app.config.key_publication_lead_seconds);
    app.advance(app.config.key_publication_lead_seconds);
    assert_eq!(keys_of(&app, &app.keyring).active_kid(), successor);
    assert_eq!(signing_kid(&app, SigningAlg::Rs256), rs256);
}

/// Each algorithm's key rotates on the same schedule: published by the cron a lead before it
/// signs, the old one published until its last token expires, then deleted.
#[test]
fn keys_rotate_publish_first_and_retire_after_their_tokens_expire() {
    let app = App::with_config(test_config(&[
        ("KEY_ROTATION_INTERVAL_SECONDS", &(30 * DAY).to_string()),
        ("KEY_PUBLICATION_LEAD_SECONDS", &DAY.to_string()),
    ]));
    app.verified_account("rotate@example.com", PASSWORD);
    let first_token = login(&app, "rotate@example.com");
    let first_kid = kid_of(&first_token);
    let first_rs256 = signing_kid(&app, SigningAlg::Rs256);
    assert_eq!(kids_of(&app, "ES256"), vec![first_kid.clone()]);
    assert_eq!(kids_of(&app, "RS256"), vec![first_rs256.clone()]);

    // Not due yet: nothing happens.
    app.advance(28 * DAY);
    assert_eq!(app.maintain_keys(false).published, vec![]);
    // Due (30 days minus the one-day lead): the next key of each algorithm is published, not
    // yet signing.
    app.advance(DAY + 1);
    let report = app.maintain_keys(false);
    let ((second_kid, activates_at), (second_rs256, rs256_activates_at)) =
        (published(&report, 0), published(&report, 1));
    assert_eq!((activates_at, rs256_activates_at), (app.now.get().timestamp() + DAY, app.now.get().timestamp() + DAY));
    assert_eq!(kids_of(&app, "ES256"), [second_kid.clone(), first_kid.clone()]);
    assert_eq!(kids_of(&app, "RS256"), [second_rs256.clone(), first_rs256.clone()]);
    assert_eq!(app.get("/.well-known/jwks.json").response.header("cache-control"), Some("public, max-age=300"));
    let before_switch = login(&app, "rotate@example.com");
    assert_eq!(kid_of(&before_switch), first_kid);
    assert_eq!(signing_kid(&app, SigningAlg::Rs256), first_rs256);
    // Running again while a key is pending publishes nothing more.
    assert_eq!(app.maintain_keys(false).published, vec![]);

    // The lead passes: the new keys sign; the old ones still verify what they signed.
    app.advance(DAY - 60);
    let last_of_first = login(&app, "rotate@example.com");
    assert_eq!(kid_of(&last_of_first), first_kid);
    let last_rs256_token = rs256_token(&app, &keys_of(&app, &app.keyring));
    app.advance(60);
    let after_switch = login(&app, "rotate@example.com");
    assert_eq!(kid_of(&after_switch), second_kid);
    assert_eq!(signing_kid(&app, SigningAlg::Rs256), second_rs256);
    assert_eq!(userinfo_status(&app, &last_of_first), 200);
    assert!(keys_of(&app, &app.keyring).published().verify::<Value>(&last_rs256_token, "JWT").is_ok());
    assert_eq!(kids_of(&app, "ES256"), [second_kid.clone(), first_kid.clone()]);
    assert_eq!(kids_of(&app, "RS256"), [second_rs256.clone(), first_rs256.clone()]);

    // Once the last token the old keys signed has expired (900 s + 30 s leeway), they are gone.
    app.advance(929);
    assert_eq!(kids(&app).len(), 4);
    assert_eq!(app.maintain_keys(false).removed, 0);
    app.advance(1);
    assert_eq!((kids_of(&app, "ES256"), kids_of(&app, "RS256")), (vec![second_kid.clone()], vec![second_rs256]));
    assert_eq!(app.maintain_keys(false).removed, 2);
    assert_eq!(app.db.count("SELECT count(*) FROM signing_keys"), 2);
    assert_eq!(userinfo_status(&app, &after_switch), 200);
}

#[test]
fn the_documents_say_until_when_they_stay_the_same() {
    const JWKS: &str = "/.well-known/jwks.json";
    const DISCOVERY: &str = "/.well-known/openid-configuration";
    let mut app = App::with_config(test_config(&[("KEY_PUBLICATION_LEAD_SECONDS", "200")]));
    let start = app.now.get().timestamp();
    // The tests' keyring caches nothing: nothing stays the same for any time.
    assert_eq!(app.get(JWKS).response.same_until_ms, None);

    // A read of the key table serves for a quarter of the lead (50 s, under the keyring's 60).
    app.keyring = Keyring::new(60);
    for path in [JWKS, DISCOVERY] {
        let reply = app.get(path);
        assert_eq!((reply.status, reply.response.same_until_ms), (200, Some((start + 50) * 1000)), "{path}");
    }
    // Only a full answer to a GET: not a HEAD, not a 304, and no other route.
    let etag = app.get(JWKS).response.header("etag").unwrap().to_owned();
    let revalidated = app.send(ApiRequest {
        method: "GET".into(),
        path: JWKS.into(),
        headers: vec![("If-None-Match".into(), etag)],
        ..Default::default()
    });
    assert_eq!((revalidated.status, revalidated.response.same_until_ms), (304, None));
    let head = app.send(ApiRequest { method: "HEAD".into(), path: JWKS.into(), ..Default::default() });
    assert_eq!((head.status, head.response.same_until_ms), (200, None));
    for path in ["/healthz", "/.well-known/security.txt", "/login"] {
        assert_eq!(app.get(path).response.same_until_ms, None, "{path}");
    }

    // A key published at +10 signs from +210. Read again at +200, the documents last until +210
    // (when the old key retires), not until the end of the read at +250.
    app.advance(10);
    assert_eq!(published(&app.maintain_keys(true), 0).1, start + 210);
    app.advance(190);
    assert_eq!(app.get(JWKS).response.same_until_ms, Some((start + 210) * 1000));
    app.advance(10);
    assert_eq!(app.get(DISCOVERY).response.same_until_ms, Some((start + 250) * 1000));

    // A request that started a second before that read (a slow login) uses it too, rather
    // than reading again and moving the read back: the documents' instant stays.
    app.advance(-11);
    assert_eq!(kids(&app).len(), 4);
    app.advance(11);
    assert_eq!(app.get(JWKS).response.same_until_ms, Some((start + 250) * 1000));
}

#[test]
fn an_administrator_can_rotate_on_demand() {
    let app = App::new();
    app.get("/healthz");
    let first = (kids_of(&app, "ES256"), kids_of(&app, "RS256"));
    let report = app.maintain_keys(true);
    assert_eq!(report.published.len(), 2, "forced rotation publishes a key per algorithm");
    let lead = app.config.key_publication_lead_seconds;
    for (position, (alg, first)) in [("ES256", &first.0), ("RS256", &first.1)].into_iter().enumerate() {
        let (kid, activates_at) = published(&report, position);
        assert_eq!(activates_at, app.now.get().timestamp() + lead);
        assert_eq!(kids_of(&app, alg), [kid.clone(), first[0].clone()], "{alg}");
    }
    assert_eq!(app.maintain_keys(true).published, vec![], "one pending key at a time");
}

#[test]
fn changing_the_algorithm_keeps_old_tokens_verifiable() {
    let mut app = App::new();
    app.verified_account("alg@example.com", PASSWORD);
    let es256_token = login(&app, "alg@example.com");
    app.config = test_config(&[("SIGNING_ALG", "EdDSA")]);
    let eddsa_token = login(&app, "alg@example.com");
    let header = jwt_compact::UntrustedToken::new(eddsa_token["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(header.algorithm(), "EdDSA");
    assert_eq!(userinfo_status(&app, &es256_token), 200);
    assert_eq!(userinfo_status(&app, &eddsa_token), 200);
    let discovery = app.get("/.well-known/openid-configuration").json;
    // The algorithms that sign first (SIGNING_ALG leading), then the retired ES256 key's.
    assert_eq!(discovery["id_token_signing_alg_values_supported"], json!(["EdDSA", "RS256", "ES256"]));
    app.advance(931);
    assert_eq!(
        app.get("/.well-known/openid-configuration").json["id_token_signing_alg_values_supported"],
        json!(["EdDSA", "RS256"])
    );
}

/// `SIGNING_ALG` changed to RS256, whose key is there already: no bootstrap, RS256 signs
/// everything at once, and the cron retires the ES256 key, which stays published until its
/// tokens have expired and then goes.
#[test]
fn switching_to_rs256_retires_the_old_algorithm_through_the_cron() {
    let mut app = App::new();
    app.verified_account("to-rsa@example.com", PASSWORD);
    let es256_token = login(&app, "to-rsa@example.com");
    let rs256 = signing_kid(&app, SigningAlg::Rs256);

    app.config = test_config(&[("SIGNING_ALG", "RS256")]);
    let rs256_token = login(&app, "to-rsa@example.com");
    assert_eq!(kid_of(&rs256_token), rs256, "the RS256 key beside it signs");
    assert_eq!(app.db.count("SELECT count(*) FROM signing_keys"), 2, "no bootstrap");
    assert_eq!(userinfo_status(&app, &es256_token), 200);
    let report = app.maintain_keys(false);
    assert_eq!((report.retired, report.published), (1, vec![]));
    assert_eq!(app.maintain_keys(false).retired, 0, "retired once");
    assert_eq!(kids(&app).len(), 2, "still published for its tokens");
    app.advance(931);
    assert_eq!(kids(&app), vec![rs256.clone()]);
    assert_eq!(app.maintain_keys(false).removed, 1);
    assert_eq!(
        app.get("/.well-known/openid-configuration").json["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
}

#[test]
fn rs256_keys_sign_through_the_crypto_port_and_bootstrap_once() {
    let app = App::with_config(test_config(&[("SIGNING_ALG", "RS256")]));
    // Two isolates meet the empty table: each generates a key, one insert wins.
    for _ in 0..2 {
        let isolate = Keyring::new(60);
        pollster::block_on(isolate.signing_keys(&app.db, &app.config, &app.crypto, app.now.get())).unwrap();
    }
    assert_eq!(app.db.count("SELECT count(*) FROM signing_keys"), 1);

    app.verified_account("rsa@example.com", PASSWORD);
    let tokens = login(&app, "rsa@example.com");
    let jwks = app.get("/.well-known/jwks.json").json;
    let jwk = &jwks["keys"][0];
    assert_eq!((jwk["kty"].as_str(), jwk["alg"].as_str()), (Some("RSA"), Some("RS256")));
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(jwk.get(private).is_none(), "{private}");
    }
    let public: jwt_compact::jwk::JsonWebKey<'_> = serde_json::from_value(jwk.clone()).unwrap();
    let public = rsa::RsaPublicKey::try_from(&public).unwrap();
    for (name, typ) in [("access_token", "at+jwt"), ("id_token", "JWT")] {
        use jwt_compact::AlgorithmExt;
        let token = jwt_compact::UntrustedToken::new(tokens[name].as_str().unwrap()).unwrap();
        assert_eq!(token.algorithm(), "RS256");
        assert_eq!(token.header().token_type.as_deref(), Some(typ));
        assert_eq!(token.header().key_id.as_deref(), jwk["kid"].as_str());
        jwt_compact::alg::Rsa::rs256().validator::<Value>(&public).validate(&token).unwrap();
    }
    assert_eq!(userinfo_status(&app, &tokens), 200);
    let discovery = app.get("/.well-known/openid-configuration").json;
    assert_eq!(discovery["id_token_signing_alg_values_supported"], json!(["RS256"]));

    // Rotation generates the next RSA key the same way, and only it: one algorithm.
    let report = app.maintain_keys(true);
    assert_eq!(report.published.len(), 1);
    let (next, _) = published(&report, 0);
    app.advance(app.config.key_publication_lead_seconds);
    assert_eq!(kid_of(&login(&app, "rsa@example.com")), next);
    assert_eq!(userinfo_status(&app, &tokens), 401, "the first token has long expired");
}

// The key snapshot in KV: written by the cron (and by a request that bootstraps a key), taken
// by a new isolate instead of a read of D1 while it is usable, and never trusted beyond its
// maximum age, which bounds how long a key marked compromised can go on signing.

const JWKS: &str = "/.well-known/jwks.json";

/// The cron's snapshot at the app's instant.
fn write_snapshot(app: &App, kv: &MemoryKv) -> SigningKeySnapshot {
    pollster::block_on(keyring::write_snapshot(&app.db, kv, &app.config, app.now.get())).unwrap()
}

/// Writes `snapshot` as the adapter does after a bootstrap: tagged under the app's KEK.
fn put_snapshot(app: &App, kv: &MemoryKv, snapshot: &SigningKeySnapshot) {
    pollster::block_on(store::write_signing_key_snapshot(kv, &keyring::snapshot_key(&app.config), snapshot)).unwrap();
}

/// What the adapter does before each request, at the app's instant, for the isolate `keyring`.
fn refresh(app: &App, keyring: &Keyring, kv: &MemoryKv) -> SnapshotRefresh {
    pollster::block_on(keyring.refresh_from_snapshot(kv, &app.config, app.now.get()))
}

/// A new isolate for the app's requests: an empty keyring that caches a read of D1 for a
/// minute, as the worker's does, refreshed from KV as the adapter does.
fn new_isolate(app: &mut App, kv: &MemoryKv) -> SnapshotRefresh {
    app.keyring = Keyring::new(60);
    refresh(app, &app.keyring, kv)
}

/// What KV holds, as JSON: the snapshot's text and its tag.
fn tagged_json(kv: &MemoryKv) -> Value {
    serde_json::from_str(&kv.value(SIGNING_KEY_SNAPSHOT_KEY).expect("a snapshot in KV")).unwrap()
}

/// The snapshot in KV (the tagged text), as JSON.
fn snapshot_json(kv: &MemoryKv) -> Value {
    serde_json::from_str(tagged_json(kv)["snapshot"].as_str().expect("the snapshot's text")).unwrap()
}

/// D1's key table as the snapshot should hold it: every key not marked compromised, each
/// column as stored, newest activation first.
fn stored_keys(app: &App) -> Value {
    serde_json::from_str(&app.db.text(
        "SELECT json_group_array(json_object('kid', kid, 'alg', alg, 'public_jwk', public_jwk,
                'private_sealed', private_sealed, 'published_at', published_at,
                'activates_at', activates_at, 'retired_at', retired_at))
         FROM (SELECT * FROM signing_keys WHERE compromised_at IS NULL ORDER BY activates_at DESC, kid)",
    ))
    .unwrap()
}

/// The kid of every key a snapshot holds.
fn snapshot_kids(snapshot: &SigningKeySnapshot) -> BTreeSet<String> {
    snapshot.keys.iter().map(|key| key.kid.clone()).collect()
}

/// Claims signed by the keys' `SIGNING_ALG` key and by their RS256 key.
fn sign_both(app: &App, keys: &SigningKeys) -> (String, String) {
    let claims = jwt_compact::Claims::new(json!({"sub": "snapshot-user"}));
    (pollster::block_on(keys.sign("JWT", &claims, &app.crypto)).unwrap(), rs256_token(app, keys))
}

#[test]
fn the_cron_writes_the_published_key_set_to_kv_and_nothing_else() {
    let app = App::new();
    app.verified_account("snapshot@example.com", PASSWORD);
    let tokens = login(&app, "snapshot@example.com");
    // A pending key of each algorithm, one of them already marked compromised.
    let report = app.maintain_keys(true);
    let ((pending_es256, _), (pending_rs256, _)) = (published(&report, 0), published(&report, 1));
    compromise(&app, &pending_rs256);
    let kv = MemoryKv::default();
    app.advance(7);

    let snapshot = write_snapshot(&app, &kv);
    assert_eq!(kv.writes.get(), 1);
    assert_eq!(kv.values.borrow().keys().collect::<Vec<_>>(), [SIGNING_KEY_SNAPSHOT_KEY], "one key, nothing else");
    let tagged = tagged_json(&kv);
    assert_eq!(tagged.as_object().unwrap().len(), 2, "the snapshot's text and its tag: {tagged}");
    assert_eq!(tagged["tag"].as_str().unwrap().len(), 43, "HMAC-SHA256, base64url");
    let json = snapshot_json(&kv);
    assert_eq!((json["version"].clone(), json["read_at"].clone()), (json!(2), json!(app.now.get().timestamp())));
    assert_eq!(json["keys"], stored_keys(&app), "every key but the compromised one, exactly as D1 holds it");
    assert_eq!(json.as_object().unwrap().len(), 3, "{json}");
    assert_eq!(snapshot.read_at, app.now.get().timestamp());
    let kids = snapshot_kids(&snapshot);
    assert!(kids.contains(&kid_of(&tokens)) && kids.contains(&pending_es256) && !kids.contains(&pending_rs256));
    assert_eq!(kids.len(), 3);

    // Public keys and sealed private parts only: nothing in the clear that signs.
    let text = kv.value(SIGNING_KEY_SNAPSHOT_KEY).unwrap();
    for key in json["keys"].as_array().unwrap() {
        let public: Value = serde_json::from_str(key["public_jwk"].as_str().unwrap()).unwrap();
        assert!(public.get("d").is_none() && public.get("p").is_none(), "{public}");
        let kid = key["kid"].as_str().unwrap();
        let sealed = key["private_sealed"].as_str().unwrap();
        let private: Value = serde_json::from_slice(
            &sealing::open(&app.config.key_encryption_key.0, kid.as_bytes(), sealed).expect("sealed under the KEK"),
        )
        .unwrap();
        let d = private["d"].as_str().unwrap();
        assert!(!text.contains(d), "the private part of {kid} is in KV in the clear");
    }
    // No account data of any kind.
    for secret in
        ["snapshot@example.com", tokens["access_token"].as_str().unwrap(), tokens["refresh_token"].as_str().unwrap()]
    {
        assert!(!text.contains(secret), "{secret} in KV");
    }
    // Written again, it is the table as it is then.
    app.advance(60);
    assert_eq!(write_snapshot(&app, &kv).read_at, app.now.get().timestamp());
    assert_eq!((kv.writes.get(), kv.values.borrow().len()), (2, 1));
}

#[test]
fn a_new_isolate_signs_and_serves_the_jwks_from_the_snapshot_without_d1() {
    let mut app = App::new();
    app.verified_account("isolate@example.com", PASSWORD);
    let kid = kid_of(&login(&app, "isolate@example.com"));
    let rs256 = signing_kid(&app, SigningAlg::Rs256);
    let jwks_from_d1 = app.get(JWKS).text();
    let kv = MemoryKv::default();
    let written = write_snapshot(&app, &kv).read_at;

    app.advance(30);
    assert_eq!(new_isolate(&mut app, &kv), SnapshotRefresh::Taken);
    let batches = app.db.batches.get();
    let jwks = app.get(JWKS);
    assert_eq!((jwks.status, jwks.text()), (200, jwks_from_d1.clone()), "the same JWKS as from D1");
    // Replayed from memory no longer than the snapshot is trusted (three minutes after its read).
    assert_eq!(jwks.response.same_until_ms, Some((written + SNAPSHOT_MAX_AGE_SECONDS) * 1000));
    assert_eq!(app.get("/.well-known/openid-configuration").status, 200);
    let keys = keys_of(&app, &app.keyring);
    assert_eq!((keys.active_kid(), keys.active_kid_of(SigningAlg::Rs256)), (kid.as_str(), Some(rs256.as_str())));
    let (es256_token, rs256_token) = sign_both(&app, &keys);
    assert_eq!(app.db.batches.get(), batches, "no D1 batch for the JWKS, the discovery document or signing");
    let published = edgeid_verifier::keys::PublishedKeys::from_jwks_json(&jwks_from_d1).unwrap();
    assert!(published.verify::<Value>(&es256_token, "JWT").is_ok());
    assert!(published.verify::<Value>(&rs256_token, "JWT").is_ok());

    // Within its window neither KV nor D1 is asked again.
    app.advance(100);
    assert_eq!(refresh(&app, &app.keyring, &kv), SnapshotRefresh::NotNeeded);
    keys_of(&app, &app.keyring);
    assert_eq!((kv.reads.get(), app.db.batches.get()), (1, batches));

    // The cron wrote a fresh one meanwhile: when the first expires, the isolate takes it, still
    // without D1.
    app.advance(-10);
    let rewritten = write_snapshot(&app, &kv).read_at;
    app.advance(written + SNAPSHOT_MAX_AGE_SECONDS - app.now.get().timestamp());
    let batches = app.db.batches.get();
    assert_eq!(refresh(&app, &app.keyring, &kv), SnapshotRefresh::Taken);
    assert_eq!(keys_of(&app, &app.keyring).active_kid(), kid);
    assert_eq!((kv.reads.get(), app.db.batches.get()), (2, batches));

    // No cron since: once that one is as old as the bound too, the isolate reads D1.
    app.advance(rewritten + SNAPSHOT_MAX_AGE_SECONDS - app.now.get().timestamp());
    let too_old = UnusableSnapshot::TooOld { age_seconds: SNAPSHOT_MAX_AGE_SECONDS };
    assert_eq!(refresh(&app, &app.keyring, &kv), SnapshotRefresh::Unusable(too_old));
    assert_eq!(keys_of(&app, &app.keyring).active_kid(), kid);
    assert_eq!(app.db.batches.get(), batches + 1, "one read of D1");
}

/// What a snapshot holds, edited, and tagged again under the test KEK (as by a holder of the
/// key: what a reader checks beyond the tag).
fn edited(snapshot: &Value, edit: impl FnOnce(&mut Value)) -> String {
    tagged(&edited_text(snapshot, edit))
}

/// The text of a snapshot, edited (and not tagged).
fn edited_text(snapshot: &Value, edit: impl FnOnce(&mut Value)) -> String {
    let mut snapshot = snapshot.clone();
    edit(&mut snapshot);
    snapshot.to_string()
}

/// A snapshot text tagged under the test configuration's KEK, as KV holds it.
fn tagged(text: &str) -> String {
    store::tagged_snapshot(&keyring::snapshot_key(&test_config(&[])), text)
}

/// A new isolate does not take what KV holds (`None`: nothing), for the reason `expected`
/// says, and reads D1 instead, for the keys a read of D1 gives.
#[track_caller]
fn check_unusable(app: &mut App, kv: &MemoryKv, value: Option<&str>, expected: impl Fn(&UnusableSnapshot) -> bool) {
    let from_d1 = keys_of(app, &Keyring::new(60)).jwks_json().to_owned();
    kv.values.borrow_mut().clear();
    if let Some(value) = value {
        kv.set(SIGNING_KEY_SNAPSHOT_KEY, value);
    }
    match new_isolate(app, kv) {
        SnapshotRefresh::Unusable(why) => assert!(expected(&why), "unusable, but for another reason: {why:?}"),
        other => panic!("{value:?}: {other:?}"),
    }
    let batches = app.db.batches.get();
    let keys = keys_of(app, &app.keyring);
    assert_eq!(app.db.batches.get(), batches + 1, "read D1 instead");
    assert_eq!(keys.jwks_json(), from_d1);
}

#[test]
fn a_snapshot_that_is_not_usable_sends_the_isolate_to_d1() {
    let mut app = App::new();
    app.get("/healthz");
    let kv = MemoryKv::default();
    let now = app.now.get().timestamp();
    write_snapshot(&app, &kv);
    let good = snapshot_json(&kv);
    let es256 = signing_kid(&app, SigningAlg::Es256);
    let index_of = |alg: &str| good["keys"].as_array().unwrap().iter().position(|key| key["alg"] == alg).unwrap();
    let (es256_at, rs256_at) = (index_of("ES256"), index_of("RS256"));

    use UnusableSnapshot::*;
    let unreadable = |why: &UnusableSnapshot| matches!(why, Unreadable(_));
    check_unusable(&mut app, &kv, None, |why| *why == Missing);
    for garbage in ["", "not json", "[]", "{}", "{\"version\": 1}", "{\"version\": \"1\"}", "\u{0}\u{ffff}"] {
        check_unusable(&mut app, &kv, Some(garbage), unreadable);
    }
    let cases: Vec<(&str, String)> = vec![
        ("another version", edited(&good, |s| s["version"] = json!(3))),
        ("the first version", edited(&good, |s| s["version"] = json!(1))),
        ("an unknown field", edited(&good, |s| s["keys"][0]["compromised_at"] = json!(now))),
        ("keys not a list", edited(&good, |s| s["keys"] = json!({}))),
        (
            "a key without its sealed part",
            edited(&good, |s| drop(s["keys"][0].as_object_mut().unwrap().remove("private_sealed"))),
        ),
        ("a kid twice", edited(&good, |s| s["keys"][1]["kid"] = s["keys"][0]["kid"].clone())),
        (
            "a public key naming another kid",
            edited(&good, |s| s["keys"][0]["public_jwk"] = s["keys"][1]["public_jwk"].clone()),
        ),
        ("a public key that is no JSON", edited(&good, |s| s["keys"][0]["public_jwk"] = json!("{"))),
        ("a read instant that is no number", edited(&good, |s| s["read_at"] = json!("now"))),
    ];
    for (name, value) in &cases {
        eprintln!("snapshot with {name}");
        check_unusable(&mut app, &kv, Some(value), unreadable);
    }
    check_unusable(
        &mut app,
        &kv,
        Some(&edited(&good, |s| s["version"] = json!(3))),
        |why| matches!(why, Unreadable(reason) if reason.contains("version 3")),
    );
    // What KV holds is not a tagged text: the text alone (as version 1 wrote it), the tag
    // missing, another field, the text not a string.
    let good_text = good.to_string();
    let good_tag = tagged_json(&kv)["tag"].clone();
    let with_tag = |value: Value| serde_json::to_string(&value).unwrap();
    // Larger than any snapshot: not even parsed.
    let huge = tagged(&format!("{}{}", good_text, " ".repeat(store::MAX_SNAPSHOT_BYTES)));
    check_unusable(
        &mut app,
        &kv,
        Some(&huge),
        |why| matches!(why, Unreadable(reason) if reason.contains("bytes, over")),
    );
    for untagged in [
        good_text.clone(),
        with_tag(json!({"snapshot": good_text})),
        with_tag(json!({"snapshot": good_text, "tag": good_tag, "mac": good_tag})),
        with_tag(json!({"snapshot": good, "tag": good_tag})),
    ] {
        check_unusable(&mut app, &kv, Some(&untagged), unreadable);
    }

    // Too old (three minutes after its read), or ahead of the clock by more than a few seconds.
    let read_at = |at: i64| edited(&good, |s| s["read_at"] = json!(at));
    check_unusable(&mut app, &kv, Some(&read_at(now - SNAPSHOT_MAX_AGE_SECONDS)), |why| {
        *why == TooOld { age_seconds: SNAPSHOT_MAX_AGE_SECONDS }
    });
    check_unusable(&mut app, &kv, Some(&read_at(now - 10 * DAY)), |why| matches!(why, TooOld { .. }));
    check_unusable(&mut app, &kv, Some(&read_at(now + SNAPSHOT_CLOCK_SKEW_SECONDS + 1)), |why| {
        *why == Ahead { seconds: SNAPSHOT_CLOCK_SKEW_SECONDS + 1 }
    });
    for usable in [now - SNAPSHOT_MAX_AGE_SECONDS + 1, now + SNAPSHOT_CLOCK_SKEW_SECONDS] {
        kv.set(SIGNING_KEY_SNAPSHOT_KEY, &read_at(usable));
        assert_eq!(new_isolate(&mut app, &kv), SnapshotRefresh::Taken, "read at {usable}");
    }

    // No key that signs now for an algorithm: none of it, its only key retired, or a key that
    // opens with no configured key-encryption key (here: another key's sealed part), exactly as
    // a read of D1 would count it. D1 decides.
    let no_signing_key = |alg: SigningAlg| move |why: &UnusableSnapshot| *why == NoSigningKey(alg);
    let without_rs256 = edited(&good, |s| s["keys"].as_array_mut().unwrap().retain(|key| key["alg"] != "RS256"));
    check_unusable(&mut app, &kv, Some(&without_rs256), no_signing_key(SigningAlg::Rs256));
    check_unusable(
        &mut app,
        &kv,
        Some(&edited(&good, |s| s["keys"][es256_at]["retired_at"] = json!(now))),
        no_signing_key(SigningAlg::Es256),
    );
    check_unusable(
        &mut app,
        &kv,
        Some(&edited(&good, |s| s["keys"][es256_at]["activates_at"] = json!(now + 1))),
        no_signing_key(SigningAlg::Es256),
    );
    let swapped =
        edited(&good, |s| s["keys"][es256_at]["private_sealed"] = s["keys"][rs256_at]["private_sealed"].clone());
    check_unusable(&mut app, &kv, Some(&swapped), no_signing_key(SigningAlg::Es256));
    // Tagged and sealed under a KEK this worker does not have: the tag fails first; tagged
    // under its own KEK, the keys still open with none of its keys.
    app.config = test_config(&[("KEY_ENCRYPTION_KEY", UNRELATED_KEK)]);
    check_unusable(&mut app, &kv, Some(&tagged(&good.to_string())), |why| *why == Unauthenticated);
    let own_tag = store::tagged_snapshot(&keyring::snapshot_key(&app.config), &good.to_string());
    check_unusable(&mut app, &kv, Some(&own_tag), no_signing_key(SigningAlg::Es256));
    app.config = test_config(&[]);
    // Opens, but is not the key its kid names: it is not assembled.
    let other = KeyMaterial::generate(SigningAlg::Es256, &app.crypto);
    let other = pollster::block_on(other).unwrap();
    let sealed =
        sealing::seal(&app.config.key_encryption_key.0, es256.as_bytes(), &other.private_jwk(), &app.crypto).unwrap();
    check_unusable(
        &mut app,
        &kv,
        Some(&edited(&good, |s| s["keys"][es256_at]["private_sealed"] = json!(sealed))),
        |why| matches!(why, Keys(_)),
    );

    // KV down.
    kv.set(SIGNING_KEY_SNAPSHOT_KEY, &tagged(&good.to_string()));
    kv.broken.set(true);
    let from_d1 = keys_of(&app, &Keyring::new(60)).jwks_json().to_owned();
    assert!(matches!(new_isolate(&mut app, &kv), SnapshotRefresh::Unusable(Store(_))));
    assert_eq!(keys_of(&app, &app.keyring).jwks_json(), from_d1);
    kv.broken.set(false);
    assert_eq!(new_isolate(&mut app, &kv), SnapshotRefresh::Taken, "the same snapshot, KV back");
}

/// Whoever can write KV but holds no key-encryption key (another Worker bound to the namespace,
/// an API token scoped to KV) can neither forge a snapshot nor edit one: not its `read_at`, to
/// keep a snapshot from before a compromise alive, nor its keys. Every byte of the text is
/// covered. A snapshot tagged under `KEY_ENCRYPTION_KEY_PREVIOUS` (an isolate of the deployment
/// before a KEK rotation wrote it) is not taken, configured or not.
#[test]
fn a_snapshot_not_tagged_by_a_holder_of_the_kek_is_not_taken() {
    let mut app = App::new();
    app.get("/healthz");
    let kv = MemoryKv::default();
    write_snapshot(&app, &kv);
    let written = kv.value(SIGNING_KEY_SNAPSHOT_KEY).unwrap();
    let text = tagged_json(&kv)["snapshot"].as_str().unwrap().to_owned();
    let tag = tagged_json(&kv)["tag"].as_str().unwrap().to_owned();
    let good = snapshot_json(&kv);
    let now = app.now.get().timestamp();
    let with = |text: &str, tag: &str| json!({"snapshot": text, "tag": tag}).to_string();

    let unauthenticated = |why: &UnusableSnapshot| *why == UnusableSnapshot::Unauthenticated;
    let edits = [
        edited_text(&good, |s| s["read_at"] = json!(now + 1)),
        edited_text(&good, |s| drop(s["keys"].as_array_mut().unwrap().pop())),
        format!("{text} "),
        // The same JSON, another order of its fields.
        good.to_string(),
    ];
    for edit in &edits {
        assert_ne!(edit, &text);
        check_unusable(&mut app, &kv, Some(&with(edit, &tag)), unauthenticated);
    }
    let flipped = format!("{}{}", if tag.starts_with('A') { 'B' } else { 'A' }, &tag[1..]);
    for forged in [flipped.as_str(), &tag[..tag.len() - 1], "", "not base64!"] {
        check_unusable(&mut app, &kv, Some(&with(&text, forged)), unauthenticated);
    }
    // Tagged under a key derived from another KEK.
    let foreign = store::tagged_snapshot(&sealing::ValueKey::derive(&[7; 32]), &text);
    check_unusable(&mut app, &kv, Some(&foreign), unauthenticated);
    kv.set(SIGNING_KEY_SNAPSHOT_KEY, &written);
    assert_eq!(new_isolate(&mut app, &kv), SnapshotRefresh::Taken, "as written");

    // The KEK rotated: the previous KEK's snapshot is not taken, even while that KEK is
    // configured (whoever holds it alone could forge one: see below).
    app.config =
        test_config(&[("KEY_ENCRYPTION_KEY", NEXT_KEK), ("KEY_ENCRYPTION_KEY_PREVIOUS", TEST_KEY_ENCRYPTION_KEY)]);
    check_unusable(&mut app, &kv, Some(&written), unauthenticated);
    app.config = test_config(&[("KEY_ENCRYPTION_KEY", NEXT_KEK)]);
    check_unusable(&mut app, &kv, Some(&written), unauthenticated);
}

/// Nothing usable in KV: it is not asked again for a cache period (a minute), so requests that
/// never need keys do not each read KV.
#[test]
fn kv_is_asked_once_a_cache_period_while_it_has_nothing_usable() {
    let app = App::new();
    let kv = MemoryKv::default();
    let isolate = Keyring::new(60);
    assert_eq!(refresh(&app, &isolate, &kv), SnapshotRefresh::Unusable(UnusableSnapshot::Missing));
    app.advance(59);
    assert_eq!(refresh(&app, &isolate, &kv), SnapshotRefresh::NotNeeded);
    assert_eq!(kv.reads.get(), 1);
    app.get("/healthz");
    write_snapshot(&app, &kv);
    app.advance(1);
    assert_eq!(refresh(&app, &isolate, &kv), SnapshotRefresh::Taken);
    assert_eq!(kv.reads.get(), 2);
}

/// The usable age follows the publication lead: a quarter of it when that is under three
/// minutes (as an isolate's own read), so a key published after the snapshot was written is
/// in every JWKS long before it signs.
#[test]
fn a_short_publication_lead_shortens_the_snapshots_life() {
    let mut app = App::with_config(test_config(&[("KEY_PUBLICATION_LEAD_SECONDS", "200")]));
    assert_eq!(keyring::snapshot_max_age_seconds(&app.config), 50);
    app.get("/healthz");
    let kv = MemoryKv::default();
    let written = write_snapshot(&app, &kv).read_at;
    app.advance(49);
    assert_eq!(new_isolate(&mut app, &kv), SnapshotRefresh::Taken);
    assert_eq!(app.get(JWKS).response.same_until_ms, Some((written + 50) * 1000));
    app.advance(1);
    assert_eq!(new_isolate(&mut app, &kv), SnapshotRefresh::Unusable(UnusableSnapshot::TooOld { age_seconds: 50 }));
    assert_eq!(keyring::snapshot_max_age_seconds(&test_config(&[])), SNAPSHOT_MAX_AGE_SECONDS);
}

/// The compromise command while KV still serves a snapshot from before it (the cron has not run
/// since, or its write, or that of the isolate that bootstrapped the fresh key, has not reached
/// this location): an isolate that takes it signs with the key and publishes it until the
/// snapshot is three minutes old, and no longer, whichever isolate and whenever it took it;
/// `/userinfo` refuses the key's tokens at once all along. Once the bootstrapping isolate's
/// snapshot arrives, new isolates take it.
#[test]
fn a_key_compromised_after_the_snapshot_stops_signing_within_its_maximum_age() {
    let mut app = App::new();
    app.verified_account("snapshot-compromise@example.com", PASSWORD);
    let tokens = login(&app, "snapshot-compromise@example.com");
    let kid = kid_of(&tokens);
    let rs256 = signing_kid(&app, SigningAlg::Rs256);
    let kv = MemoryKv::default();
    let written = write_snapshot(&app, &kv).read_at;
    let bound = written + SNAPSHOT_MAX_AGE_SECONDS;
    app.advance(10);
    compromise(&app, &kid);

    let early = Keyring::new(60);
    assert_eq!(refresh(&app, &early, &kv), SnapshotRefresh::Taken);
    assert_eq!(keys_of(&app, &early).active_kid(), kid, "within the bound");
    // The app's own isolate reads D1 for every request: it refuses the key's tokens, and
    // bootstraps a fresh key at once, leaving a snapshot to write.
    assert_eq!(userinfo_status(&app, &tokens), 401, "refused at once");
    let fresh = signing_kid(&app, SigningAlg::Es256);
    assert_ne!(fresh, kid);
    let snapshot = app.keyring.take_snapshot_to_write().expect("a bootstrap leaves a snapshot to write");
    assert_eq!(app.keyring.take_snapshot_to_write(), None, "once");
    assert_eq!(snapshot.read_at, app.now.get().timestamp());
    assert!(snapshot_kids(&snapshot).contains(&fresh) && !snapshot_kids(&snapshot).contains(&kid));

    app.advance(bound - 1 - app.now.get().timestamp());
    assert_eq!(new_isolate(&mut app, &kv), SnapshotRefresh::Taken);
    assert_eq!(keys_of(&app, &app.keyring).active_kid(), kid, "a second before the bound");
    let replay_until = app.get(JWKS).response.same_until_ms.unwrap();
    assert!(replay_until <= bound * 1000, "no document replayed past the bound: {replay_until}");

    // At the bound: no isolate signs with it or publishes it, whether it took the snapshot
    // early, late, or is new; the fresh key signs, the RS256 key goes on.
    app.advance(1);
    let late = std::mem::replace(&mut app.keyring, Keyring::new(60));
    for keyring in [&early, &late, &Keyring::new(60)] {
        assert!(matches!(refresh(&app, keyring, &kv), SnapshotRefresh::Unusable(UnusableSnapshot::TooOld { .. })));
        let keys = keys_of(&app, keyring);
        assert_eq!(keys.active_kid(), fresh);
        assert!(!keys.jwks_json().contains(&kid), "out of the JWKS");
        assert_eq!(keys.active_kid_of(SigningAlg::Rs256), Some(rs256.as_str()));
    }

    // The bootstrapping isolate's snapshot arrives: a new isolate takes it, with no D1 read and
    // no compromised key.
    put_snapshot(&app, &kv, &snapshot);
    assert_eq!(new_isolate(&mut app, &kv), SnapshotRefresh::Taken);
    let batches = app.db.batches.get();
    assert!(!kids(&app).contains(&kid));
    assert_eq!(keys_of(&app, &app.keyring).active_kid(), fresh);
    assert_eq!(app.db.batches.get(), batches);
}

/// When the cron's snapshot after the command comes first, it has no key of that algorithm
/// that signs: new isolates read D1 at once, the first bootstraps, and its snapshot follows.
#[test]
fn after_a_compromise_the_crons_snapshot_sends_new_isolates_to_d1() {
    let mut app = App::new();
    app.get("/healthz");
    let kid = signing_kid(&app, SigningAlg::Es256);
    let kv = MemoryKv::default();
    compromise(&app, &kid);
    app.advance(1);
    let snapshot = write_snapshot(&app, &kv);
    assert!(!snapshot_kids(&snapshot).contains(&kid), "a compromised key is never in KV");
    assert_eq!(
        new_isolate(&mut app, &kv),
        SnapshotRefresh::Unusable(UnusableSnapshot::NoSigningKey(SigningAlg::Es256))
    );
    let fresh = signing_kid(&app, SigningAlg::Es256);
    assert_ne!(fresh, kid);
    let after_bootstrap = app.keyring.take_snapshot_to_write().unwrap();
    put_snapshot(&app, &kv, &after_bootstrap);
    assert_eq!(new_isolate(&mut app, &kv), SnapshotRefresh::Taken);
    assert_eq!(signing_kid(&app, SigningAlg::Es256), fresh);
}

/// A request with nothing to bootstrap leaves nothing to write; the first request of an
/// installation, with no snapshot anywhere, bootstraps and leaves one.
#[test]
fn only_a_bootstrap_leaves_a_snapshot_to_write() {
    let mut app = App::new();
    let kv = MemoryKv::default();
    assert_eq!(new_isolate(&mut app, &kv), SnapshotRefresh::Unusable(UnusableSnapshot::Missing));
    let keys = keys_of(&app, &app.keyring);
    let snapshot = app.keyring.take_snapshot_to_write().unwrap();
    let expected: BTreeSet<String> =
        [keys.active_kid(), keys.active_kid_of(SigningAlg::Rs256).unwrap()].into_iter().map(str::to_owned).collect();
    assert_eq!(snapshot_kids(&snapshot), expected);
    app.advance(61);
    keys_of(&app, &app.keyring);
    assert_eq!(app.keyring.take_snapshot_to_write(), None, "a read of D1 without a bootstrap");
}

/// A read of D1 that was issued before a snapshot was taken, and answers after, replaces it:
/// a snapshot is older than any read of D1, whatever the order of their answers.
#[test]
fn a_snapshot_never_replaces_a_read_of_d1_that_answers_after_it() {
    let app = App::new();
    app.get("/healthz");
    let kv = MemoryKv::default();
    write_snapshot(&app, &kv);
    // A key of each algorithm published since the snapshot: D1 has four, KV two.
    app.maintain_keys(true);
    let keyring = Keyring::new(60);
    let slow = SlowFirstRead { inner: &app.db, answered: Default::default(), open: Default::default() };
    let mut context = Context::from_waker(Waker::noop());
    let mut read = std::pin::pin!(keyring.signing_keys(&slow, &app.config, &app.crypto, app.now.get()));
    assert!(read.as_mut().poll(&mut context).is_pending());
    assert_eq!(refresh(&app, &keyring, &kv), SnapshotRefresh::Taken);
    assert_eq!(keys_of(&app, &keyring).jwks_json().matches("\"kid\"").count(), 2, "the snapshot meanwhile");

    slow.open.set(true);
    let Poll::Ready(keys) = read.as_mut().poll(&mut context) else { panic!("the read of D1 was answered") };
    assert_eq!(keys.unwrap().jwks_json().matches("\"kid\"").count(), 4);
    let batches = app.db.batches.get();
    assert_eq!(keys_of(&app, &keyring).jwks_json().matches("\"kid\"").count(), 4, "D1's read is kept");
    assert_eq!(app.db.batches.get(), batches);
}

/// Review 6: whoever holds the key-encryption key being rotated out (`KEY_ENCRYPTION_KEY_PREVIOUS`,
/// e.g. from an old `.dev.vars`, a CI secret, a former operator) but not the current one, and can
/// write KV, forges a snapshot: tagged under the previous KEK, `read_at` now, and an ES256 key of
/// their own sealed under the previous KEK, active. While the previous KEK is configured (from
/// the rotation's deploy until step 4 of the README's procedure, or for good if it is forgotten)
/// new isolates take it: they sign with, and publish, the attacker's key; rewritten every
/// minute, it never expires. Without the snapshot path that attacker would need D1's write.
#[test]
fn a_snapshot_forged_under_the_previous_kek_alone_is_not_taken() {
    let mut app = App::new();
    app.get("/healthz");
    app.config =
        test_config(&[("KEY_ENCRYPTION_KEY", NEXT_KEK), ("KEY_ENCRYPTION_KEY_PREVIOUS", TEST_KEY_ENCRYPTION_KEY)]);
    let kv = MemoryKv::default();
    write_snapshot(&app, &kv);
    // What the attacker knows: the previous KEK, and what KV holds (readable to them).
    let old_kek = app.config.key_encryption_key_previous.as_ref().unwrap().0;
    let mut forged = snapshot_json(&kv);
    let mine = pollster::block_on(KeyMaterial::generate(SigningAlg::Es256, &app.crypto)).unwrap();
    let sealed = sealing::seal(&old_kek, mine.kid().as_bytes(), &mine.private_jwk(), &app.crypto).unwrap();
    let now = app.now.get().timestamp();
    let es256_at =
        forged["keys"].as_array().unwrap().iter().position(|key| key["alg"] == "ES256").expect("an ES256 key");
    forged["keys"][es256_at] = json!({
        "kid": mine.kid(), "alg": "ES256",
        "public_jwk": serde_json::to_string(mine.public_jwk()).unwrap(),
        "private_sealed": sealed, "published_at": now - 1, "activates_at": now - 1, "retired_at": null,
    });
    forged["read_at"] = json!(now);
    let value = store::tagged_snapshot(&sealing::ValueKey::derive(&old_kek), &forged.to_string());
    kv.set(SIGNING_KEY_SNAPSHOT_KEY, &value);

    let refreshed = new_isolate(&mut app, &kv);
    let keys = keys_of(&app, &app.keyring);
    assert_ne!(keys.active_kid_of(SigningAlg::Es256), Some(mine.kid()), "signs with the attacker's key");
    assert!(!keys.jwks_json().contains(mine.kid()), "publishes the attacker's key");
    assert_ne!(refreshed, SnapshotRefresh::Taken, "a snapshot made without the current KEK was taken");
}
