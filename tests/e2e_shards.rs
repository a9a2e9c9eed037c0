//! End to end, user shards under `wrangler dev`: the development configuration's four shards
//! hold every account exactly once (read from the local databases themselves), and growing the
//! same installation to eight shards with the README's command (`scripts/reshard.mjs`) while
//! accounts keep logging in and refreshing leaves every account able to do both, each in
//! exactly one shard.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::{json, Value};

use crate::e2e::{client, fresh_state_dir, migrate, migrate_configured, post, repository, tool, MailSink, Worker};
use crate::support::token_in_link;

const PASSWORD: &str = "correct horse battery";
const OPERATOR_TOKEN: &str = "e2e-operator-token-0123456789abcdefghijkl";
const ACCOUNTS: usize = 24;

/// The repository's configuration with `USERS_4` … `USERS_7` bound too, its paths made
/// absolute so it works from `dir` (with the same `.dev.vars` beside it).
fn eight_shard_config(dir: &Path) -> PathBuf {
    let root = repository().to_str().unwrap().to_owned();
    let mut config = std::fs::read_to_string(repository().join("wrangler.toml")).unwrap();
    for (relative, absolute) in [
        ("main = \"src/", format!("main = \"{root}/src/")),
        ("command = \"sh scripts/", format!("command = \"sh {root}/scripts/")),
        ("migrations_dir = \"migrations\"", format!("migrations_dir = \"{root}/migrations\"")),
        (
            "watch_dir = [\"src\", \"verifier/src\", \"migrations\", \".well-known\"]",
            format!("watch_dir = [\"{root}/src\"]"),
        ),
    ] {
        assert!(config.contains(relative), "wrangler.toml no longer has {relative:?}");
        config = config.replace(relative, &absolute);
    }
    for shard in 4..8 {
        config.push_str(&format!(
            "\n[[d1_databases]]\nbinding = \"USERS_{shard}\"\ndatabase_name = \"edgeid-users-{shard}\"\n\
             database_id = \"00000000-0000-0000-0000-0000000000{:02}\"\nmigrations_dir = \"{root}/migrations\"\n",
            20 + shard
        ));
    }
    let path = dir.join("wrangler.toml");
    std::fs::write(&path, config).unwrap();
    std::fs::copy(repository().join(".dev.vars"), dir.join(".dev.vars")).unwrap();
    path
}

/// Which local databases (SQLite files of `state`) hold each address, and how many hold
/// signing keys (`DB` only).
fn where_accounts_are(state: &Path, emails: &[String]) -> (Vec<Vec<PathBuf>>, usize) {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(state.join("v3/d1")).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "sqlite") && !path.ends_with("metadata.sqlite") {
                files.push(path);
            }
        }
    }
    let mut holding = vec![Vec::new(); emails.len()];
    let mut with_keys = 0;
    for file in &files {
        let db = rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let count = |sql: &str| -> i64 { db.query_row(sql, [], |row| row.get(0)).unwrap_or(0) };
        if count("SELECT count(*) FROM signing_keys") > 0 {
            with_keys += 1;
            assert_eq!(count("SELECT count(*) FROM users"), 0, "DB holds no account: {}", file.display());
        }
        for (index, email) in emails.iter().enumerate() {
            let found: i64 =
                db.query_row("SELECT count(*) FROM users WHERE email = ?1", [email], |row| row.get(0)).unwrap_or(0);
            if found > 0 {
                holding[index].push(file.clone());
            }
        }
    }
    (holding, with_keys)
}

#[track_caller]
fn each_in_exactly_one_shard(state: &Path, emails: &[String], shards: usize) {
    let (holding, with_keys) = where_accounts_are(state, emails);
    assert_eq!(with_keys, 1, "one DB");
    let mut used = std::collections::BTreeSet::new();
    for (email, files) in emails.iter().zip(&holding) {
        assert_eq!(files.len(), 1, "{email} is in {files:?}");
        used.insert(files[0].clone());
    }
    assert!(used.len() > 1 && used.len() <= shards, "accounts in {} databases", used.len());
}

fn refresh(worker: &Worker, token: &str) -> (u16, Value) {
    let response = client()
        .post(worker.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=refresh_token&refresh_token={token}"))
        .send()
        .unwrap();
    (response.status().as_u16(), response.json().unwrap_or(Value::Null))
}

#[test]
fn e2e_user_shards_hold_each_account_once_and_grow_from_four_to_eight_while_serving() {
    let sink = MailSink::start();
    let state = fresh_state_dir("shards");
    migrate(&state);
    let emails: Vec<String> = (0..ACCOUNTS).map(|n| format!("sharded{n}@example.com")).collect();
    let mut refresh_tokens = Vec::new();
    {
        let worker = Worker::start_in(&sink, Some(&state), &[]);
        for email in &emails {
            let mut seen = 0;
            assert_eq!(post(&worker, "/v1/signup", json!({"email": email, "password": PASSWORD})).0, 202);
            let token = token_in_link(sink.wait_for(email, &mut seen).text(), "/verify-email");
            assert_eq!(post(&worker, "/v1/email/verify", json!({"token": token})).0, 200);
            let (status, login) = post(&worker, "/v1/login", json!({"email": email, "password": PASSWORD}));
            assert_eq!(status, 200, "{login}");
            refresh_tokens.push(login["refresh_token"].as_str().unwrap().to_owned());
        }
    }
    each_in_exactly_one_shard(&state, &emails, 4);

    // The same installation with eight shards bound: migrations on the new ones, then the
    // reshard while a client keeps logging in and refreshing.
    let config_dir = state.join("eight");
    std::fs::create_dir_all(&config_dir).unwrap();
    let config = eight_shard_config(&config_dir);
    migrate_configured(&state, &config);
    let operator = format!("OPERATOR_TOKEN:{OPERATOR_TOKEN}");
    let worker = Arc::new(Worker::start_configured(&sink, Some(&state), Some(&config), &[&operator]));
    let tokens = Arc::new(Mutex::new(refresh_tokens));
    let stop = Arc::new(AtomicBool::new(false));
    let (served, unavailable) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (worker, tokens, stop, emails) =
            (Arc::clone(&worker), Arc::clone(&tokens), Arc::clone(&stop), emails.clone());
        let (served, unavailable) = (Arc::clone(&served), Arc::clone(&unavailable));
        thread::spawn(move || {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                let index = round % emails.len();
                round += 1;
                let (status, login) = post(&worker, "/v1/login", json!({"email": emails[index], "password": PASSWORD}));
                let token = tokens.lock().unwrap()[index].clone();
                let (refreshed, answer) = refresh(&worker, &token);
                for status in [status, refreshed] {
                    match status {
                        200 => served.fetch_add(1, Ordering::Relaxed),
                        // Its bucket was between shards: the client tries again later.
                        503 => unavailable.fetch_add(1, Ordering::Relaxed),
                        other => panic!("{other} during the reshard: {login} {answer}"),
                    };
                }
                if refreshed == 200 {
                    tokens.lock().unwrap()[index] = answer["refresh_token"].as_str().unwrap().to_owned();
                }
            }
        })
    };
    let reshard = tool("node", &["scripts/reshard.mjs", "--url", &worker.url(""), "--max-moves", "64"])
        .env("OPERATOR_TOKEN", OPERATOR_TOKEN)
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let report = String::from_utf8_lossy(&reshard.stdout).into_owned();
    assert!(reshard.status.success(), "{report}{}", String::from_utf8_lossy(&reshard.stderr));
    assert!(report.contains("512 buckets moved, 0 to go"), "{report}");
    assert!(report.contains(&format!("check ok: {ACCOUNTS} accounts")), "{report}");
    assert!(served.load(Ordering::Relaxed) > 0, "the load ran");
    eprintln!(
        "reshard under load: {} requests served, {} answered 503 while their bucket moved",
        served.load(Ordering::Relaxed),
        unavailable.load(Ordering::Relaxed)
    );

    // Afterwards every account logs in, and its latest refresh token refreshes.
    for (email, token) in emails.iter().zip(tokens.lock().unwrap().iter()) {
        assert_eq!(post(&worker, "/v1/login", json!({"email": email, "password": PASSWORD})).0, 200, "{email}");
        let (status, answer) = refresh(&worker, token);
        assert_eq!(status, 200, "{email}: {answer}");
    }
    drop(Arc::try_unwrap(worker).ok().expect("the load thread is done"));
    each_in_exactly_one_shard(&state, &emails, 8);
}
