//! Races the store must win, played out with a store that lets another request commit in the
//! middle of this one (between two of its batches), natively and deterministically.

use std::cell::RefCell;
use std::rc::Rc;

use edgeid::domain::opaque_token::TokenHash;
use edgeid::flows::login::{login, LoginError};
use edgeid::flows::{Context, Outbox};
use edgeid::ports::{Database, DatabaseError, Statement, StatementOutcome};
use edgeid::store::{self, Directory, UserShards};
use serde_json::json;

use crate::support::{token_in_link, App, Sqlite};

const PASSWORD: &str = "correct horse battery";

/// What runs in the middle: another request's work on the same database.
type Interloper<'a> = Box<dyn FnOnce(&Sqlite) + 'a>;

/// A shared, one-shot interloper: it runs on whichever database first sees its trigger.
type Pending<'a> = Rc<RefCell<Option<Interloper<'a>>>>;

/// SQLite that, just before the first batch containing `trigger`, runs the interloper on the
/// same database: another request committing in between.
struct Interleaving<'a> {
    inner: &'a Sqlite,
    trigger: &'static str,
    interloper: Pending<'a>,
}

impl Database for Interleaving<'_> {
    async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<StatementOutcome>, DatabaseError> {
        if statements.iter().any(|statement| statement.sql.contains(self.trigger)) {
            let interloper = self.interloper.borrow_mut().take();
            if let Some(interloper) = interloper {
                interloper(self.inner);
            }
        }
        self.inner.batch(statements).await
    }
}

/// Logs in through `DB` and user shards that run `interloper` before the first batch with
/// `trigger` (in the account's shard, where sessions are); says whether it ran.
fn login_through<'a>(
    app: &'a App,
    trigger: &'static str,
    interloper: Option<Interloper<'a>>,
    email: &str,
    password: &str,
) -> (Result<(), LoginError>, bool) {
    let pending: Pending<'a> = Rc::new(RefCell::new(interloper));
    let db = Interleaving { inner: &app.db, trigger, interloper: Rc::clone(&pending) };
    let shards = UserShards::new(
        app.user_shards().map(|inner| Interleaving { inner, trigger, interloper: Rc::clone(&pending) }).collect(),
        Rc::new(Directory::new(600)),
    );
    let outbox = Outbox::default();
    let ctx = Context {
        config: &app.config,
        keyring: &app.keyring,
        clients: &app.clients,
        db: &db,
        shards: &shards,
        crypto: &app.crypto,
        http: &app.http,
        now: app.now.get(),
        client_ip: Some("203.0.113.9"),
        accept_language: None,
        outbox: &outbox,
    };
    let result = pollster::block_on(login(&ctx, email, password, None)).map(drop);
    let ran = pending.borrow().is_none();
    (result, ran)
}

/// A login verifies the password, then starts the session in a second batch. A reset that
/// commits between the two must leave that login with `invalid_credentials` and no session:
/// the password it proved is no longer the account's.
#[test]
fn a_login_cannot_outlive_a_reset_that_commits_during_it() {
    let app = App::new();
    app.verified_account("raced@example.com", PASSWORD);
    // Sign the first token now, so that no key bootstrap batch stands between the two.
    assert_eq!(app.post("/v1/login", json!({"email": "raced@example.com", "password": PASSWORD})).status, 200);
    app.post("/v1/password/forgot", json!({"email": "raced@example.com"}));
    let reset_token = token_in_link(&app.single_mail_to("raced@example.com").text, "/reset-password");
    let sessions = || app.users_count("SELECT count(*) FROM sessions WHERE revoked_at IS NULL");
    assert_eq!(sessions(), 1);

    let now = app.now.get();
    let reset: Interloper<'_> = Box::new(|db: &Sqlite| {
        let hash = TokenHash::of_presented(&reset_token).unwrap();
        let reset = pollster::block_on(store::reset_password(
            db,
            &hash,
            "interloper",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            now,
        ));
        assert!(reset.unwrap().is_some(), "the reset committed");
    });
    let (result, ran) = login_through(&app, "INSERT INTO sessions", Some(reset), "raced@example.com", PASSWORD);
    assert!(matches!(result, Err(LoginError::InvalidCredentials)));
    assert!(ran, "the reset ran between the two batches");
    assert_eq!(sessions(), 0, "the reset ended the old session and the raced login started none");
    assert_eq!(app.users_count("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL"), 0);

    // Without an interloper the same path starts a session: the refusal above was the race's.
    app.verified_account("calm@example.com", PASSWORD);
    assert!(login_through(&app, "INSERT INTO sessions", None, "calm@example.com", PASSWORD).0.is_ok());
}

/// The same race with a re-hash in flight: the re-hash only replaces the hash that was
/// verified, so it cannot undo a reset either.
#[test]
fn a_rehash_cannot_undo_a_reset() {
    let app = App::new();
    app.verified_account("rehash@example.com", PASSWORD);
    assert_eq!(app.post("/v1/login", json!({"email": "rehash@example.com", "password": PASSWORD})).status, 200);
    app.post("/v1/password/forgot", json!({"email": "rehash@example.com"}));
    let reset_token = token_in_link(&app.single_mail_to("rehash@example.com").text, "/reset-password");
    let stronger = App { config: crate::support::test_config(&[("ARGON2_ITERATIONS", "3")]), ..app };
    let reset_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let now = stronger.now.get();
    let reset: Interloper<'_> = Box::new(|db: &Sqlite| {
        let hash = TokenHash::of_presented(&reset_token).unwrap();
        let reset = pollster::block_on(store::reset_password(db, &hash, "interloper", reset_hash, now));
        assert!(reset.unwrap().is_some());
    });
    let (result, ran) = login_through(&stronger, "INSERT INTO sessions", Some(reset), "rehash@example.com", PASSWORD);
    assert!(matches!(result, Err(LoginError::InvalidCredentials)) && ran);
    assert_eq!(stronger.users_text("SELECT password_hash FROM users WHERE email = 'rehash@example.com'"), reset_hash);
}

/// Two logins of one account, both re-hashing to new parameters: the first one's re-hash
/// commits between the second's check and its session. The same password is still the
/// account's, so the second login succeeds too (its own re-hash simply does not apply).
#[test]
fn a_concurrent_rehash_does_not_refuse_a_right_password() {
    let app = App::new();
    app.verified_account("twice@example.com", PASSWORD);
    assert_eq!(app.post("/v1/login", json!({"email": "twice@example.com", "password": PASSWORD})).status, 200);
    let stronger = App { config: crate::support::test_config(&[("ARGON2_ITERATIONS", "3")]), ..app };
    let verified = stronger.users_text("SELECT password_hash FROM users WHERE email = 'twice@example.com'");
    let user_id = stronger.users_text("SELECT id FROM users WHERE email = 'twice@example.com'");
    let now = stronger.now.get();
    let rehash: Interloper<'_> = Box::new(|db: &Sqlite| {
        let other = "$argon2id$v=19$m=19456,t=3,p=1$b3RoZXJzYWx0b3RoZXI$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(pollster::block_on(store::upgrade_password_hash(db, &user_id, &verified, other, now)).unwrap());
    });
    let (result, ran) = login_through(&stronger, "INSERT INTO sessions", Some(rehash), "twice@example.com", PASSWORD);
    assert!(result.is_ok() && ran);
}
