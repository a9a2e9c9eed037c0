//! End to end against `wrangler dev`, restarting one installation (one `--persist-to` state)
//! with other key-encryption keys: a rotation through `KEY_ENCRYPTION_KEY_PREVIOUS` and the
//! cron's re-sealing keeps the signing key; a key-encryption key that opens nothing gives a
//! fresh key and no error; the operator's compromise command takes a key out of the JWKS within
//! the key cache and out of `/userinfo` at once.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::e2e::{access_kid, client, fresh_state_dir, jwks_kids, migrate, npx, post, MailSink, Worker};
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
    let first_kid = {
        let worker = Worker::start_in(&sink, Some(&state), &[&kek("KEY_ENCRYPTION_KEY", KEK_A)]);
        let mut seen = 0;
        assert_eq!(post(&worker, "/v1/signup", json!({"email": EMAIL, "password": PASSWORD})).0, 202);
        let token = token_in_link(sink.wait_for(EMAIL, &mut seen).text(), "/verify-email");
        assert_eq!(post(&worker, "/v1/email/verify", json!({"token": token})).0, 200);
        access_kid(&login(&worker))
    };

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
        wait_for_log(&worker, "resealed: 1");
        assert_eq!(jwks_kids(&worker), vec![first_kid.clone()], "nothing published, nothing new");
    }

    // KEK B alone: the same key still signs, so it was re-sealed.
    {
        let worker = Worker::start_in(&sink, Some(&state), &[&kek("KEY_ENCRYPTION_KEY", KEK_B)]);
        assert_eq!(access_kid(&login(&worker)), first_kid);
        assert!(!worker.log().contains("no configured key-encryption key"), "{}", worker.log());
    }

    // An unrelated KEK C (B lost): no error anywhere, a fresh key signs, the old one stays
    // published. Then the compromise command on the fresh key.
    let worker = Worker::start_in(&sink, Some(&state), &[&kek("KEY_ENCRYPTION_KEY", KEK_C)]);
    assert_eq!(status(&worker, "/healthz"), 200);
    assert_eq!(status(&worker, "/.well-known/openid-configuration"), 200);
    let published = jwks_kids(&worker);
    assert!(published.contains(&first_kid) && published.len() == 2, "{published:?}");
    let tokens = login(&worker);
    let second_kid = access_kid(&tokens);
    assert_ne!(second_kid, first_kid);
    assert_eq!(userinfo_status(&worker, &tokens), 200);
    wait_for_log(&worker, &format!("signing key {first_kid} opens with no configured key-encryption key"));

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
}
