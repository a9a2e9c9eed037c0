//! User shards, natively: four in-memory SQLite shards behind the routing, as the development
//! configuration declares. Every account is in exactly one shard, the one its bucket maps to;
//! everything issued for it names that bucket; a batch that reaches a shard refusing its bucket
//! changes nothing there and goes where the bucket map now says.

use std::rc::Rc;

use edgeid::domain::email::Email;
use edgeid::domain::shard::{BucketMap, UserBucket};
use edgeid::ports::{Database, Statement};
use edgeid::store::{self, Directory, UserShards};
use serde_json::json;

use crate::support::{test_config, App, Sqlite, USER_SHARDS};

const PASSWORD: &str = "correct horse battery";

fn bucket_of(email: &str) -> UserBucket {
    UserBucket::of_email(&Email::parse(email).unwrap())
}

/// The shard of `email`'s account by the map `DB` holds.
fn shard_of(app: &App, email: &str) -> usize {
    let map = pollster::block_on(store::bucket_map(&app.db, USER_SHARDS)).unwrap();
    map.shard_of(bucket_of(email))
}

fn shard(app: &App, index: usize) -> &Sqlite {
    app.shards.shard(index).unwrap()
}

#[test]
fn every_account_is_in_exactly_one_shard_and_the_accounts_spread_over_all_four() {
    let app = App::new();
    let emails: Vec<String> = (0..24).map(|n| format!("spread{n}@example.com")).collect();
    for email in &emails {
        app.verified_account(email, PASSWORD);
    }
    let mut per_shard = [0; USER_SHARDS];
    for email in &emails {
        let holding: Vec<usize> = (0..USER_SHARDS)
            .filter(|index| {
                shard(&app, *index).count(&format!("SELECT count(*) FROM users WHERE email = '{email}'")) == 1
            })
            .collect();
        assert_eq!(holding, vec![shard_of(&app, email)], "{email}");
        per_shard[holding[0]] += 1;
        let bucket = shard(&app, holding[0]).count(&format!("SELECT bucket FROM users WHERE email = '{email}'"));
        assert_eq!(bucket, i64::from(bucket_of(email).index()));
    }
    assert!(per_shard.iter().all(|count| *count > 0), "{per_shard:?}");
    // `DB` holds no address.
    assert_eq!(app.db.count("SELECT count(*) FROM users"), 0);
    assert_eq!(app.db.count("SELECT count(*) FROM one_time_tokens"), 0);
    // And the map it holds is striped over the four.
    let stored = app.db.text("SELECT shards FROM bucket_map");
    assert_eq!(stored, BucketMap::striped(USER_SHARDS).unwrap().to_stored());
}

#[test]
fn what_is_issued_for_an_account_names_its_bucket_and_lives_in_its_shard() {
    let app = App::new();
    let email = "issued@example.com";
    app.verified_account(email, PASSWORD);
    let login = app.post("/v1/login", json!({"email": email, "password": PASSWORD}));
    assert_eq!(login.status, 200);
    let refresh = login.json["refresh_token"].as_str().unwrap().to_owned();
    let bucket = bucket_of(email);
    assert_eq!(UserBucket::of_issued(&refresh), Some(bucket));
    let claims: serde_json::Value = {
        let payload = login.json["access_token"].as_str().unwrap().split('.').nth(1).unwrap().to_owned();
        use base64::Engine;
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    };
    assert_eq!(UserBucket::of_issued(claims["sid"].as_str().unwrap()), Some(bucket), "the session id");
    let home = shard_of(&app, email);
    for index in 0..USER_SHARDS {
        let sessions = shard(&app, index).count("SELECT count(*) FROM sessions");
        assert_eq!(sessions, i64::from(index == home), "shard {index}");
    }
    // A refresh and a userinfo find it there, and only there.
    let refresh_with = |token: &str| {
        app.request(
            "POST",
            "/oauth/token",
            Some("application/x-www-form-urlencoded"),
            format!("grant_type=refresh_token&refresh_token={token}").as_bytes(),
        )
    };
    let refreshed = refresh_with(&refresh);
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    let access = refreshed.json["access_token"].as_str().unwrap();
    let userinfo = app.send(edgeid::api::ApiRequest {
        method: "GET".into(),
        path: "/userinfo".into(),
        headers: vec![("Authorization".into(), format!("Bearer {access}"))],
        ..Default::default()
    });
    assert_eq!(userinfo.status, 200, "{}", userinfo.text());
    // A token whose prefix names another bucket is looked for there, and not found.
    let other = if bucket.index() == 0 { "001" } else { "000" };
    let forged = format!("{other}{}", &refresh[3..]);
    refresh_with(&forged).assert_error(400, "invalid_grant");
}

/// A bucket moved while this isolate still routes by the old map: the old shard refuses the
/// batch at its fence (nothing of it is written there), the map is read anew, and the batch
/// runs where the bucket is now.
#[test]
fn a_batch_that_reaches_a_shard_refusing_its_bucket_is_sent_where_the_map_now_says() {
    let global = Sqlite::with_migrations();
    let shards =
        UserShards::new(vec![Sqlite::with_migrations(), Sqlite::with_migrations()], Rc::new(Directory::new(600)));
    let bucket = UserBucket::new(6).unwrap();
    let routed = shards.for_bucket(&global, bucket, 1_000);
    let insert = |id: &str| {
        Statement::new(
            "INSERT INTO users (id, email, password_hash, password_changed_at, created_at, updated_at, bucket)
             VALUES (?1, ?2, 'x', 0, 0, 0, 6)",
            [id.into(), format!("{id}@example.com").into()],
        )
    };
    // Striped over two: bucket 6 is in shard 0, and this isolate caches that.
    pollster::block_on(routed.batch(vec![insert("before")])).unwrap();
    assert_eq!(shards.shard(0).unwrap().count("SELECT count(*) FROM users"), 1);

    // The move: shard 0 refuses the bucket, its rows go to shard 1, the map says so.
    shards.shard(0).unwrap().execute("INSERT INTO refused_buckets (bucket, refused_at) VALUES (6, 0)");
    shards.shard(0).unwrap().execute("DELETE FROM users");
    shards.shard(1).unwrap().execute(
        "INSERT INTO users (id, email, password_hash, password_changed_at, created_at, updated_at, bucket)
         VALUES ('before', 'before@example.com', 'x', 0, 0, 0, 6)",
    );
    let map = pollster::block_on(store::bucket_map(&global, 2)).unwrap();
    assert!(pollster::block_on(store::swap_bucket_map(&global, &map, &map.with(bucket, 1))).unwrap());

    // The stale copy sends the batch to shard 0 first: refused, rolled back, sent to shard 1.
    let outcomes = pollster::block_on(
        routed.batch(vec![insert("after"), Statement::new("SELECT count(*) AS users FROM users", [])]),
    )
    .unwrap();
    assert_eq!(outcomes.len(), 2, "the fence's outcome is not the caller's");
    assert_eq!(outcomes[1].rows[0]["users"], edgeid::ports::SqlValue::Integer(2));
    assert_eq!(shards.shard(0).unwrap().count("SELECT count(*) FROM users"), 0, "nothing written behind the fence");
    assert_eq!(shards.shard(1).unwrap().count("SELECT count(*) FROM users"), 2);
    // Other buckets of shard 0 are served as before.
    let other = shards.for_bucket(&global, UserBucket::new(8).unwrap(), 1_000);
    assert!(pollster::block_on(other.batch(vec![Statement::new("SELECT 1", [])])).is_ok());
}

/// While a bucket is between shards (refused by the shard the map still names), its requests
/// are answered `503 temporarily_unavailable` with `Retry-After`, and change nothing; once the
/// move is done they work again.
#[test]
fn a_bucket_in_the_middle_of_a_move_answers_503_and_changes_nothing() {
    let app = App::new();
    let email = "moving@example.com";
    app.verified_account(email, PASSWORD);
    let home = shard(&app, shard_of(&app, email));
    let bucket = bucket_of(email).index();
    home.execute(&format!("INSERT INTO refused_buckets (bucket, refused_at) VALUES ({bucket}, 0)"));
    let refused = app.post("/v1/login", json!({"email": email, "password": PASSWORD}));
    refused.assert_error(503, "temporarily_unavailable");
    assert_eq!(refused.response.header("retry-after"), Some("1"));
    assert_eq!(home.count("SELECT count(*) FROM sessions"), 0);
    home.execute(&format!("DELETE FROM refused_buckets WHERE bucket = {bucket}"));
    assert_eq!(app.post("/v1/login", json!({"email": email, "password": PASSWORD})).status, 200);
    assert_eq!(home.count("SELECT count(*) FROM sessions"), 1);
}

/// The map is created once, striped over the shards bound then; an isolate that later sees more
/// shards bound routes by the stored map, not by a new striping (growing moves buckets
/// explicitly).
#[test]
fn the_bucket_map_is_created_once_and_more_bindings_do_not_restripe_it() {
    let app = App::new();
    app.verified_account("first@example.com", PASSWORD);
    let stored = app.db.text("SELECT shards FROM bucket_map");
    let with_eight = pollster::block_on(store::bucket_map(&app.db, 8)).unwrap();
    assert_eq!(with_eight.to_stored(), stored);
    assert_eq!(with_eight.shards_named(), USER_SHARDS);
    // A map naming shards that are not bound is refused rather than routed by.
    assert!(pollster::block_on(store::bucket_map(&app.db, 2)).is_err());
    let one_shard = App::with_shards(test_config(&[]), 1);
    one_shard.verified_account("alone@example.com", PASSWORD);
    assert_eq!(one_shard.db.text("SELECT shards FROM bucket_map"), BucketMap::striped(1).unwrap().to_stored());
}

/// An app with `shards` bound whose map was striped over four (an installation that grew).
fn grown_app(shards: usize) -> App {
    let app = App::with_shards(test_config(&[("OPERATOR_TOKEN", OPERATOR_TOKEN)]), shards);
    pollster::block_on(store::bucket_map(&app.db, USER_SHARDS)).unwrap();
    app
}

const OPERATOR_TOKEN: &str = "operator-token-for-the-tests-0123456789";

/// Accounts, each logged in once: (email, refresh token).
fn accounts(app: &App, count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|n| {
            let email = format!("grown{n}@example.com");
            app.verified_account(&email, PASSWORD);
            let login = app.post("/v1/login", json!({"email": email, "password": PASSWORD}));
            assert_eq!(login.status, 200);
            (email, login.json["refresh_token"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Every account logs in, and the refresh token it had before still refreshes.
#[track_caller]
fn all_still_work(app: &App, accounts: &[(String, String)]) {
    for (email, refresh) in accounts {
        assert_eq!(app.post("/v1/login", json!({"email": email, "password": PASSWORD})).status, 200, "{email}");
        let refreshed = app.request(
            "POST",
            "/oauth/token",
            Some("application/x-www-form-urlencoded"),
            format!("grant_type=refresh_token&refresh_token={refresh}").as_bytes(),
        );
        assert_eq!(refreshed.status, 200, "{email}: {}", refreshed.text());
    }
}

fn reshard(app: &App, lease: &str, max_moves: usize) -> Result<edgeid::flows::resharding::Progress, String> {
    let outbox = edgeid::flows::Outbox::default();
    pollster::block_on(edgeid::flows::resharding::reshard(&app.context(&outbox), lease, max_moves))
        .map_err(|err| err.to_string())
}

fn check(app: &App) -> edgeid::flows::resharding::Check {
    let outbox = edgeid::flows::Outbox::default();
    pollster::block_on(edgeid::flows::resharding::check(&app.context(&outbox))).unwrap()
}

#[test]
fn growing_from_four_to_eight_shards_moves_half_the_buckets_and_every_account_still_works() {
    let app = grown_app(8);
    let accounts = accounts(&app, 40);
    let before = check(&app);
    assert!(before.ok && before.shards[4..].iter().all(|shard| shard.accounts == 0), "{before:?}");

    let mut moved = 0;
    loop {
        let progress = reshard(&app, "grower", 64).unwrap();
        moved += progress.moved;
        if progress.buckets_to_move == 0 {
            break;
        }
        // Accounts work between calls too (their buckets are where the map says).
        all_still_work(&app, &accounts[..4]);
    }
    assert_eq!(moved, usize::from(edgeid::domain::shard::USER_BUCKETS) / 2);
    let after = check(&app);
    assert!(after.ok, "{after:?}");
    assert_eq!(after.accounts, 40);
    assert!(after.shards.iter().all(|shard| shard.buckets == 128), "{after:?}");
    assert!(after.shards[4..].iter().any(|shard| shard.accounts > 0), "{after:?}");
    assert_eq!(app.db.text("SELECT shards FROM bucket_map"), BucketMap::striped(8).unwrap().to_stored());
    all_still_work(&app, &accounts);
    // Nothing left to do.
    assert_eq!(reshard(&app, "grower", 64).unwrap().moved, 0);
}

/// A mover that stops anywhere (a lost connection to any shard or to `DB`, at any batch) leaves
/// a move that the next call finishes from its recorded phase, losing and duplicating nothing.
#[test]
fn a_reshard_interrupted_at_any_point_resumes_and_loses_nothing() {
    let app = grown_app(6);
    let accounts = accounts(&app, 24);
    let databases: Vec<&Sqlite> = std::iter::once(&app.db).chain(app.user_shards()).collect();
    let mut interruptions = 0;
    for round in 0.. {
        // Interrupt a different database after a different number of batches each round.
        let victim = databases[round % databases.len()];
        victim.fail_after.set(Some(1 + (round * 7) % 23));
        let result = reshard(&app, "mover", 8);
        victim.fail_after.set(None);
        match result {
            Err(_) => interruptions += 1,
            Ok(progress) if progress.buckets_to_move == 0 => break,
            Ok(_) => {}
        }
        assert!(round < 2000, "the reshard never finished");
    }
    assert!(interruptions > 10, "only {interruptions} interruptions");
    let after = check(&app);
    assert!(after.ok, "{after:?}");
    assert_eq!(after.accounts, 24);
    all_still_work(&app, &accounts);
}

/// One mover at a time: a move another mover holds is left alone until its lease runs out,
/// then taken over from its phase.
#[test]
fn a_move_another_mover_holds_is_taken_over_only_when_its_lease_runs_out() {
    let app = grown_app(5);
    let accounts = accounts(&app, 12);
    let first = app.shards.shard(0).unwrap();
    // A mover that died after refusing bucket 4 (shard 0 to shard 4) and copying part of it.
    let bucket = UserBucket::new(4).unwrap();
    let now = app.now.get().timestamp();
    let generation =
        pollster::block_on(store::start_bucket_move(&app.db, bucket, 0, 4, "dead", now, now + 120)).unwrap().unwrap();
    pollster::block_on(store::refuse_bucket(first, bucket, generation, now)).unwrap();
    pollster::block_on(store::refuse_bucket(app.shards.shard(4).unwrap(), bucket, generation, now)).unwrap();
    app.db.execute("UPDATE bucket_moves SET phase = 'copying'");
    let progress = reshard(&app, "other", 64).unwrap();
    assert_eq!(progress.held_elsewhere, 1, "{progress:?}");
    assert_eq!(app.db.text("SELECT lease FROM bucket_moves"), "dead");
    app.advance(edgeid::flows::resharding::LEASE_SECONDS);
    while reshard(&app, "other", 64).unwrap().buckets_to_move > 0 {}
    let after = check(&app);
    assert!(after.ok, "{after:?}");
    all_still_work(&app, &accounts);
}

/// The copy moves every column of every table that belongs to an account: a migration that
/// adds one must add it to `store::COPIED_TABLES` too.
#[test]
fn the_copy_covers_every_column_of_every_account_table() {
    let shard = Sqlite::with_migrations();
    let tables: Vec<String> = {
        let names = shard.text(
            "SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master WHERE type = 'table'
             AND (name = 'users' OR name IN (SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) p
                                             WHERE m.type = 'table' AND p.name = 'user_id')) ORDER BY name)",
        );
        // `user_moves` is `DB`'s: the record of an account's move, not the account's.
        names.split(',').filter(|name| *name != "user_moves").map(str::to_owned).collect()
    };
    let mut copied: Vec<&str> = store::COPIED_TABLES.iter().map(|table| table.name).collect();
    copied.sort_unstable();
    assert_eq!(tables, copied);
    for table in store::COPIED_TABLES {
        let columns = shard.text(&format!(
            "SELECT group_concat(name, ',') FROM (SELECT name FROM pragma_table_info('{}'))",
            table.name
        ));
        let mut expected: Vec<&str> = columns.split(',').collect();
        let mut listed = table.columns.to_vec();
        expected.sort_unstable();
        listed.sort_unstable();
        assert_eq!(listed, expected, "{}", table.name);
    }
}

#[test]
fn the_operator_endpoints_need_the_operator_token() {
    let without = App::new();
    assert_eq!(without.get("/operator/shards").status, 404);
    let app = grown_app(4);
    let operator = |method: &str, token: Option<&str>, body: &str| {
        let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
        if let Some(token) = token {
            headers.push(("Authorization".to_owned(), format!("Bearer {token}")));
        }
        app.send(edgeid::api::ApiRequest {
            method: method.into(),
            path: "/operator/shards".into(),
            headers,
            body: body.as_bytes().to_vec(),
            ..Default::default()
        })
    };
    operator("GET", None, "").assert_error(401, "invalid_token");
    operator("GET", Some("operator-token-for-the-tests-wrong-wrong"), "").assert_error(401, "invalid_token");
    let checked = operator("GET", Some(OPERATOR_TOKEN), "");
    assert_eq!(checked.status, 200, "{}", checked.text());
    assert_eq!(checked.json["ok"], true);
    assert_eq!(checked.json["shards"].as_array().unwrap().len(), 4);
    operator("POST", Some(OPERATOR_TOKEN), r#"{"max_moves": 0}"#).assert_error(400, "invalid_request");
    let step = operator("POST", Some(OPERATOR_TOKEN), "{}");
    assert_eq!((step.status, &step.json["buckets_to_move"]), (200, &json!(0)), "{}", step.text());
    assert_eq!(operator("DELETE", Some(OPERATOR_TOKEN), "").status, 405);
}

fn walk_page(app: &App, cursor: Option<&str>, limit: usize) -> Result<edgeid::flows::user_walk::UserPage, String> {
    let outbox = edgeid::flows::Outbox::default();
    pollster::block_on(edgeid::flows::user_walk::walk_users(&app.context(&outbox), cursor, limit))
        .map_err(|err| err.to_string())
}

/// Walks every page; `between` runs after each page (a reshard step, say). A page refused
/// because buckets moved under it is asked for again with the same cursor.
fn walk_all(app: &App, limit: usize, mut between: impl FnMut()) -> Vec<String> {
    let mut emails = Vec::new();
    let mut cursor: Option<String> = None;
    let mut refusals = 0;
    loop {
        match walk_page(app, cursor.as_deref(), limit) {
            Ok(page) => {
                assert!(page.users.len() <= limit);
                emails.extend(page.users.into_iter().map(|user| user.email));
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            Err(err) => {
                assert!(err.contains("moving"), "{err}");
                refusals += 1;
                assert!(refusals < 100);
            }
        }
        between();
    }
    emails
}

#[test]
fn a_walk_lists_every_account_of_every_shard_exactly_once() {
    let app = App::new();
    let mut expected: Vec<String> = (0..45).map(|n| format!("walked{n}@example.com")).collect();
    for email in &expected {
        app.verified_account(email, PASSWORD);
    }
    expected.sort();
    for limit in [1, 7, 45, 200] {
        let mut listed = walk_all(&app, limit, || {});
        listed.sort();
        assert_eq!(listed, expected, "pages of {limit}");
    }
    let first = walk_page(&app, None, 10).unwrap();
    assert_eq!(first.users.len(), 10);
    assert!(first.users.windows(2).all(|pair| (pair[0].bucket, &pair[0].id) < (pair[1].bucket, &pair[1].id)));
    for bad in ["nonsense", "400.abc", "001.", "zzz.x"] {
        assert_eq!(walk_page(&app, Some(bad), 10).unwrap_err(), "the cursor is not one this walk gave out", "{bad}");
    }
    assert!(walk_page(&app, None, 0).is_err() && walk_page(&app, None, 201).is_err());
}

/// Buckets moving between the pages of a walk (a reshard from four shards to eight, a few
/// buckets after every page) change nothing in what it lists: every account once.
#[test]
fn a_walk_while_buckets_move_still_lists_every_account_exactly_once() {
    let app = grown_app(8);
    let mut expected: Vec<String> = accounts(&app, 40).into_iter().map(|(email, _)| email).collect();
    expected.sort();
    let version = || app.db.count("SELECT version FROM bucket_map");
    let before = version();
    let mut listed = walk_all(&app, 3, || {
        reshard(&app, "walker", 24).unwrap();
    });
    listed.sort();
    assert_eq!(listed, expected);
    assert!(version() > before + 100, "buckets moved during the walk");
    // And in the middle of a move: a bucket refused by both shards is not skipped silently.
    let bucket = UserBucket::new(1).unwrap();
    let now = app.now.get().timestamp();
    let map = pollster::block_on(store::bucket_map(&app.db, 8)).unwrap();
    let (from, to) = (map.shard_of(bucket), (map.shard_of(bucket) + 1) % 8);
    let generation = pollster::block_on(store::start_bucket_move(&app.db, bucket, from, to, "stuck", now, now + 120))
        .unwrap()
        .unwrap();
    pollster::block_on(store::refuse_bucket(app.shards.shard(from).unwrap(), bucket, generation, now)).unwrap();
    let refused = walk_page(&app, None, 200).unwrap_err();
    assert!(refused.contains("moving"), "{refused}");
}

/// An address whose account would be in shard `wanted` (`same`) or not (`!same`).
fn address_in(app: &App, shard: usize, same: bool, tag: &str) -> String {
    (0..).map(|n| format!("{tag}{n}@example.com")).find(|email| (shard_of(app, email) == shard) == same).unwrap()
}

fn move_user(app: &App, user_id: &str, from_email: &str, to_email: &str) -> Result<(), String> {
    let outbox = edgeid::flows::Outbox::default();
    let ctx = app.context(&outbox);
    let to = Email::parse(to_email).unwrap();
    pollster::block_on(edgeid::flows::user_move::move_user(&ctx, user_id, bucket_of(from_email), &to))
        .map_err(|err| err.to_string())
}

fn logs_in(app: &App, email: &str) -> bool {
    match app.post("/v1/login", json!({"email": email, "password": PASSWORD})).status {
        200 => true,
        401 => false,
        other => panic!("login of {email}: {other}"),
    }
}

fn user_id_of(app: &App, email: &str) -> String {
    app.users_text(&format!("SELECT id FROM users WHERE email = '{email}'"))
}

#[test]
fn an_account_moves_to_the_bucket_of_its_new_address_in_another_shard() {
    let app = App::new();
    let old = "mover@example.com";
    app.verified_account(old, PASSWORD);
    let new = address_in(&app, shard_of(&app, old), false, "moved");
    let id = user_id_of(&app, old);
    let login = app.post("/v1/login", json!({"email": old, "password": PASSWORD}));
    shard(&app, shard_of(&app, old)).execute(&format!(
        "INSERT INTO consents (user_id, client_id, scope, granted_at) VALUES ('{id}', 'some-client', 'openid', 1)"
    ));
    move_user(&app, &id, old, &new).unwrap();
    assert!(!logs_in(&app, old) && logs_in(&app, &new));
    assert_eq!(app.users_count(&format!("SELECT count(*) FROM users WHERE id = '{id}'")), 1);
    let home = shard(&app, shard_of(&app, &new));
    assert_eq!(home.count(&format!("SELECT count(*) FROM users WHERE id = '{id}' AND move_state IS NULL")), 1);
    assert_eq!(home.count(&format!("SELECT count(*) FROM consents WHERE user_id = '{id}'")), 1, "consents move");
    assert_eq!(home.count(&format!("SELECT bucket FROM users WHERE id = '{id}'")), i64::from(bucket_of(&new).index()));
    assert_eq!(app.db.count("SELECT count(*) FROM user_moves"), 0);
    // Its sessions named the old bucket: they ended with the move.
    let refresh = login.json["refresh_token"].as_str().unwrap();
    app.request(
        "POST",
        "/oauth/token",
        Some("application/x-www-form-urlencoded"),
        format!("grant_type=refresh_token&refresh_token={refresh}").as_bytes(),
    )
    .assert_error(400, "invalid_grant");
    // A taken address refuses the move and changes nothing.
    app.verified_account("taken@example.com", PASSWORD);
    assert_eq!(move_user(&app, &id, &new, "taken@example.com").unwrap_err(), "another account has that address");
    assert!(logs_in(&app, &new) && logs_in(&app, "taken@example.com"));
    assert_eq!(app.db.count("SELECT count(*) FROM user_moves"), 0);
}

#[test]
fn within_one_shard_an_account_moves_in_place() {
    let app = App::new();
    let old = "inplace@example.com";
    app.verified_account(old, PASSWORD);
    let new = address_in(&app, shard_of(&app, old), true, "inplace-new");
    let id = user_id_of(&app, old);
    move_user(&app, &id, old, &new).unwrap();
    assert!(!logs_in(&app, old) && logs_in(&app, &new));
    assert_eq!(app.users_count(&format!("SELECT count(*) FROM users WHERE id = '{id}'")), 1);
    assert_eq!(app.db.count("SELECT count(*) FROM user_moves"), 0, "no record for a move in place");
}

/// A move stopped at any of its batches (in `DB`, the old shard or the new one) leaves the
/// account findable by exactly one of its two addresses; the cron then finishes a switched move
/// or gives up one that never switched, and the move can be made again.
#[test]
fn a_move_interrupted_anywhere_leaves_the_account_findable_exactly_once() {
    let app = App::new();
    let old = "interrupted@example.com";
    app.verified_account(old, PASSWORD);
    let new = address_in(&app, shard_of(&app, old), false, "interrupted-new");
    let id = user_id_of(&app, old);
    let finish = |app: &App| {
        app.advance(edgeid::flows::user_move::STALE_MOVE_SECONDS);
        let outbox = edgeid::flows::Outbox::default();
        pollster::block_on(edgeid::flows::user_move::finish_user_moves(&app.context(&outbox))).unwrap();
    };
    let mut moved = false;
    let databases: Vec<&Sqlite> = vec![&app.db, shard(&app, shard_of(&app, old)), shard(&app, shard_of(&app, &new))];
    'points: for after in 0..12 {
        for victim in &databases {
            let (from, to) = if moved { (new.as_str(), old) } else { (old, new.as_str()) };
            victim.fail_after.set(Some(after));
            let result = move_user(&app, &id, from, to);
            victim.fail_after.set(None);
            let (at_old, at_new) = (logs_in(&app, old), logs_in(&app, &new));
            assert!(at_old != at_new, "after {after} batches: old {at_old}, new {at_new} ({result:?})");
            finish(&app);
            let (at_old, at_new) = (logs_in(&app, old), logs_in(&app, &new));
            assert!(at_old != at_new, "after the cron: old {at_old}, new {at_new}");
            assert_eq!(app.users_count(&format!("SELECT count(*) FROM users WHERE id = '{id}'")), 1);
            assert_eq!(app.users_count("SELECT count(*) FROM users WHERE move_state IS NOT NULL"), 0);
            moved = at_new;
            if after > 10 && result.is_ok() {
                break 'points;
            }
        }
    }
}
