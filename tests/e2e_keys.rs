//! End to end against `wrangler dev`, restarting one installation (one `--persist-to` state)
//! with other key-encryption keys: a rotation through `KEY_ENCRYPTION_KEY_PREVIOUS` and the
//! cron's re-sealing keeps the signing keys (ES256 and the RS256 key beside it); a
//! key-encryption key that opens nothing gives a fresh key of each algorithm and no error; the
//! operator's compromise command takes a key out of the JWKS within the key cache and out of
//! `/userinfo` at once, and leaves the other algorithm's key alone. And the key snapshot in KV:
//! the cron writes the published key set there and nothing else, and a new isolate whose D1 has
//! no key at all serves the JWKS from it.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::e2e::{access_kid, client, fresh_state_dir, jwks_kids, jwks_kids_of, migrate, npx, post, MailSink, Worker};
use crate::support::token_in_link;

const PASSWORD: &str = "correct horse battery";
const EMAIL: &str = "kek-rotation@example.com";
const KEK_A: &str = "ZWRnZWlkLWUyZS1rZXktZW5jcnlwdGlvbi1rZXktQSE";
const KEK_B: &str = "ZWRnZWlkLWUyZS1rZXktZW5jcnlwdGlvbi1rZXktQiE";
const KEK_C: &str = "ZWRnZWlkLWUyZS1rZXktZW5jcnlwdGlvbi1rZXktQyE";

fn login(worker: &Worker) -> Value {
    let (status, tokens) = post(worker, "/v1/login", json!({"email": EMAIL, "password": PASSWORD}));
    assert_eq!(status, 200, "{tokens}");
    tokens
}

fn userinfo_status(worker: &Worker, tokens: &Value) -> u16 {
    let access = tokens["access_token"].as_str().unwrap();
    client().get(worker.url("/userinfo")).bearer_auth(access).send().unwrap().status().as_u16()
}

fn sorted(mut kids: Vec<String>) -> Vec<String> {
    kids.sort();
    kids
}

fn status(worker: &Worker, path: &str) -> u16 {
    client().get(worker.url(path)).send().unwrap().status().as_u16()
}

/// Waits (a few seconds at most) until the worker's log says `what`.
fn wait_for_log(worker: &Worker, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !worker.log().contains(what) {
        assert!(Instant::now() < deadline, "the worker never logged {what:?}:\n{}", worker.log());
        thread::sleep(Duration::from_millis(100));
    }
}

/// The compromise command of README "Signing keys", in its local form.
fn compromise(state: &Path, kid: &str) {
    let command = format!("UPDATE signing_keys SET compromised_at = unixepoch() WHERE kid = '{kid}'");
    let state = state.to_str().unwrap();
    let output = npx(&["wrangler", "d1", "execute", "DB", "--local", "--persist-to", state, "--command", &command])
        .output()
        .unwrap();
    assert!(output.status.success(), "d1 execute failed: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn end_to_end_key_encryption_key_rotation_and_compromise() {
    let sink = MailSink::start();
    let state = fresh_state_dir(&format!("keys-{}", std::process::id()));
    migrate(&state);
    let kek = |name: &str, value: &str| format!("{name}:{value}");

    // KEK A: an account and a login; `--var` wins over the .dev.vars of the checkout.
    let (first_kid, first_rs256) = {
        let worker = Worker::start_in(&sink, Some(&state), &[&kek("KEY_ENCRYPTION_KEY", KEK_A)]);
        let mut seen = 0;
        assert_eq!(post(&worker, "/v1/signup", json!({"email": EMAIL, "password": PASSWORD})).0, 202);
        let token = token_in_link(sink.wait_for(EMAIL, &mut seen).text(), "/verify-email");
        assert_eq!(post(&worker, "/v1/email/verify", json!({"token": token})).0, 200);
        let rs256 = jwks_kids_of(&worker, "RS256");
        assert_eq!(rs256.len(), 1, "an RS256 key beside the ES256 one: {rs256:?}");
        (access_kid(&login(&worker)), rs256[0].clone())
    };
    let both = sorted(vec![first_kid.clone(), first_rs256.clone()]);

    // KEK B with A as the previous one: the same key signs; the cron re-seals it under B.
    {
        let worker = Worker::start_in(
            &sink,
            Some(&state),
            &[&kek("KEY_ENCRYPTION_KEY", KEK_B), &kek("KEY_ENCRYPTION_KEY_PREVIOUS", KEK_A)],
        );
        assert_eq!(access_kid(&login(&worker)), first_kid);
        let cron = client().get(worker.url("/cdn-cgi/local/scheduled?cron=17+*+*+*+*")).send().unwrap();
        assert!(cron.status().is_success(), "{}", cron.status());
        wait_for_log(&worker, "resealed: 2");
        assert_eq!(sorted(jwks_kids(&worker)), both, "nothing published, nothing new");
    }

    // KEK B alone: the same keys still sign, so they were re-sealed.
    {
        let worker = Worker::start_in(&sink, Some(&state), &[&kek("KEY_ENCRYPTION_KEY", KEK_B)]);
        assert_eq!(access_kid(&login(&worker)), first_kid);
        assert_eq!(sorted(jwks_kids(&worker)), both);
        assert!(!worker.log().contains("no configured key-encryption key"), "{}", worker.log());
    }

    // An unrelated KEK C (B lost): no error anywhere, a fresh key of each algorithm signs, the
    // old ones stay published. Then the compromise command on the fresh ES256 key.
    let worker = Worker::start_in(&sink, Some(&state), &[&kek("KEY_ENCRYPTION_KEY", KEK_C)]);
    assert_eq!(status(&worker, "/healthz"), 200);
    assert_eq!(status(&worker, "/.well-known/openid-configuration"), 200);
    let published = jwks_kids(&worker);
    assert!(
        published.contains(&first_kid) && published.contains(&first_rs256) && published.len() == 4,
        "{published:?}"
    );
    let tokens = login(&worker);
    let second_kid = access_kid(&tokens);
    assert_ne!(second_kid, first_kid);
    let second_rs256: Vec<String> =
        jwks_kids_of(&worker, "RS256").into_iter().filter(|kid| *kid != first_rs256).collect();
    assert_eq!(second_rs256.len(), 1, "one fresh RS256 key, however many requests: {second_rs256:?}");
    assert_eq!(userinfo_status(&worker, &tokens), 200);
    wait_for_log(&worker, &format!("signing key {first_kid} opens with no configured key-encryption key"));
    wait_for_log(&worker, &format!("signing key {first_rs256} opens with no configured key-encryption key"));

    compromise(&state, &second_kid);
    assert_eq!(userinfo_status(&worker, &tokens), 401, "refused at once");
    // Out of the JWKS once the isolate reads the key table again (a second here: a quarter of
    // the harness's four-second publication lead), and a fresh key signs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while jwks_kids(&worker).contains(&second_kid) {
        assert!(Instant::now() < deadline, "the compromised key stayed in the JWKS");
        thread::sleep(Duration::from_millis(200));
    }
    let third_kid = access_kid(&login(&worker));
    assert!(third_kid != first_kid && third_kid != second_kid);
    assert!(jwks_kids(&worker).contains(&third_kid));
    assert_eq!(userinfo_status(&worker, &tokens), 401);
    // The RS256 key was not the one compromised: still the same, still published.
    let rs256_now: Vec<String> = jwks_kids_of(&worker, "RS256").into_iter().filter(|kid| *kid != first_rs256).collect();
    assert_eq!(rs256_now, second_rs256, "the compromise of the ES256 key left the RS256 key alone");
}

/// `wrangler kv key ARGS` on the local KV namespace `KV` in `state`: its standard output.
fn local_kv(state: &Path, args: &[&str]) -> String {
    let state = state.to_str().unwrap();
    let mut command = vec!["wrangler", "kv", "key"];
    command.extend(args);
    command.extend(["--binding", "KV", "--local", "--persist-to", state]);
    let output = npx(&command).output().unwrap();
    assert!(output.status.success(), "wrangler kv key {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// How many signing keys the local D1 in `state` holds.
fn stored_signing_keys(state: &Path) -> u64 {
    let state = state.to_str().unwrap();
    let command = "SELECT count(*) AS n FROM signing_keys";
    let output =
        npx(&["wrangler", "d1", "execute", "DB", "--local", "--persist-to", state, "--json", "--command", command])
            .output()
            .unwrap();
    assert!(output.status.success(), "d1 execute failed: {}", String::from_utf8_lossy(&output.stderr));
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    answer[0]["results"][0]["n"].as_u64().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn end_to_end_the_key_snapshot_in_kv() {
    const EMAIL: &str = "kv-snapshot@example.com";
    // A day's lead, so a snapshot is used for its full three minutes (the harness's four-second
    // lead would leave it one).
    const LEAD: &str = "KEY_PUBLICATION_LEAD_SECONDS:86400";
    let sink = MailSink::start();
    let state = fresh_state_dir(&format!("kv-snapshot-{}", std::process::id()));
    migrate(&state);
    let worker = Worker::start_in(&sink, Some(&state), &[LEAD]);
    let mut seen = 0;
    assert_eq!(post(&worker, "/v1/signup", json!({"email": EMAIL, "password": PASSWORD})).0, 202);
    let token = token_in_link(sink.wait_for(EMAIL, &mut seen).text(), "/verify-email");
    assert_eq!(post(&worker, "/v1/email/verify", json!({"token": token})).0, 200);
    let (login_status, tokens) = post(&worker, "/v1/login", json!({"email": EMAIL, "password": PASSWORD}));
    assert_eq!(login_status, 200, "{tokens}");
    // The request that bootstrapped the keys wrote them after its response; the cron's run every
    // minute writes them again.
    wait_for_log(&worker, "key snapshot written after a bootstrap: 2 keys");
    let cron = client().get(worker.url("/cdn-cgi/local/scheduled?cron=*+*+*+*+*")).send().unwrap();
    assert!(cron.status().is_success(), "{}", cron.status());
    wait_for_log(&worker, "key snapshot written: 2 keys");
    let published = sorted(jwks_kids(&worker));
    assert_eq!(published.len(), 2, "{published:?}");

    // A new installation whose D1 has no key but whose KV holds that snapshot (copied): its
    // isolate serves the JWKS and the discovery document from the snapshot and bootstraps
    // nothing, as it would have at its first read of an empty key table.
    let fresh = fresh_state_dir(&format!("kv-snapshot-fresh-{}", std::process::id()));
    migrate(&fresh);
    copy_dir(&state.join("v3/kv"), &fresh.join("v3/kv"));
    {
        let new_isolate = Worker::start_in(&sink, Some(&fresh), &[LEAD]);
        assert_eq!(sorted(jwks_kids(&new_isolate)), published);
        assert_eq!(status(&new_isolate, "/.well-known/openid-configuration"), 200);
        assert!(!new_isolate.log().contains("bootstrapped signing key"), "{}", new_isolate.log());
    }
    assert_eq!(stored_signing_keys(&fresh), 0, "no key was bootstrapped: D1 was not needed");
    drop(worker);

    // KV holds the snapshot under its one key, and nothing else: no account, token, session,
    // code, challenge or counter, and no private key in the clear.
    let listed: Value = serde_json::from_str(&local_kv(&state, &["list"])).unwrap();
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|key| key["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["signing-keys"]);
    let text = local_kv(&state, &["get", "signing-keys"]);
    // The snapshot's text, tagged under the KEK (a new isolate takes nothing else).
    let tagged: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(tagged["tag"].as_str().map(str::len), Some(43), "{tagged}");
    let snapshot: Value = serde_json::from_str(tagged["snapshot"].as_str().unwrap()).unwrap();
    assert_eq!(snapshot["version"], 2);
    let mut kids: Vec<String> =
        snapshot["keys"].as_array().unwrap().iter().map(|key| key["kid"].as_str().unwrap().to_owned()).collect();
    kids.sort();
    assert_eq!(kids, published);
    for key in snapshot["keys"].as_array().unwrap() {
        let public: Value = serde_json::from_str(key["public_jwk"].as_str().unwrap()).unwrap();
        assert!(public.get("d").is_none(), "{public}");
        assert!(!key["private_sealed"].as_str().unwrap().contains('{'), "sealed, not a JWK");
    }
    for absent in [EMAIL, tokens["access_token"].as_str().unwrap(), tokens["refresh_token"].as_str().unwrap()] {
        assert!(!text.contains(absent), "{absent} in KV");
    }
}
