//! Mail end to end through `wrangler dev` and its local queues: a provider that fails for a
//! while still gets every mail exactly once, always with one `Idempotency-Key`; a provider
//! that never recovers sends the mail to the dead-letter queue; Postmark, SendGrid and
//! Mailgun each receive their own API's request at a local sink.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::e2e::{post, CapturedMail, MailSink, Worker};
use crate::support::token_in_link;

const PASSWORD: &str = "correct horse battery";

#[test]
fn mail_survives_a_provider_outage() {
    // The first three attempts get 503: the consumer backs off (1 s, 2 s, 4 s) and retries.
    let sink = MailSink::failing_first(3);
    let worker = Worker::start_with(&sink, &["MAIL_RETRY_BASE_SECONDS:1", "MAIL_MAX_ATTEMPTS:6"]);
    let emails = ["outage-a@example.com", "outage-b@example.com"];
    for email in emails {
        assert_eq!(post(&worker, "/v1/signup", json!({"email": email, "password": PASSWORD})).0, 202);
    }
    let accepted = sink.wait_for_accepted(2);
    // Nothing more arrives: each mail was accepted once.
    std::thread::sleep(Duration::from_secs(3));
    let accepted_now = sink.accepted();
    assert_eq!(accepted_now.len(), 2, "{accepted_now:?}");
    let refused = sink.refused.lock().unwrap().clone();
    assert_eq!(refused.len(), 3);
    for email in emails {
        let delivered: Vec<&CapturedMail> = accepted.iter().filter(|mail| mail.body["to"] == json!([email])).collect();
        assert_eq!(delivered.len(), 1, "{email}");
        let key = delivered[0].header("Idempotency-Key").unwrap();
        // Every refused attempt at this mail carried the same key.
        for attempt in refused.iter().filter(|mail| mail.body["to"] == json!([email])) {
            assert_eq!(attempt.header("Idempotency-Key"), Some(key), "{email}");
        }
    }
    let keys: Vec<&str> = accepted.iter().map(|mail| mail.header("Idempotency-Key").unwrap()).collect();
    assert_ne!(keys[0], keys[1], "each mail has its own key");
    // The delivered link works.
    let token = token_in_link(accepted[0].text(), "/verify-email");
    assert_eq!(post(&worker, "/v1/email/verify", json!({"token": token})).0, 200);
}

#[test]
fn mail_the_provider_never_takes_goes_to_the_dead_letter_queue() {
    let sink = MailSink::failing_first(usize::MAX);
    let worker = Worker::start_with(&sink, &["MAIL_RETRY_BASE_SECONDS:1", "MAIL_MAX_ATTEMPTS:2"]);
    assert_eq!(post(&worker, "/v1/password/forgot", json!({"email": "nobody@example.com"})).0, 202);
    assert_eq!(post(&worker, "/v1/signup", json!({"email": "doomed@example.com", "password": PASSWORD})).0, 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !worker.log().contains("dead letter: mail") {
        assert!(Instant::now() < deadline, "no dead letter recorded:\n{}", worker.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = worker.log();
    // The log names the recipient masked, never the address itself.
    assert!(log.contains("to d\u{2022}\u{2022}\u{2022}@example.com after 2 attempts"), "{log}");
    assert!(!log.contains("doomed@example.com") && !log.contains("nobody@example.com"), "{log}");
    assert_eq!(sink.refused.lock().unwrap().len(), 2, "two attempts, then no more");
    assert!(sink.accepted().is_empty());
    assert!(!log.contains("token="), "mail bodies stay out of the log");
}

/// Signs up through a worker configured for `provider` and returns the request the sink got.
fn signup_through(provider: &str) -> (CapturedMail, Worker, MailSink) {
    let sink = MailSink::start();
    let worker = Worker::start_with(
        &sink,
        &[&format!("MAIL_PROVIDER:{provider}"), "MAIL_FROM:Example <no-reply@mg.example.com>"],
    );
    assert_eq!(post(&worker, "/v1/signup", json!({"email": "provider@example.com", "password": PASSWORD})).0, 202);
    let mail = sink.wait_for_accepted(1).remove(0);
    (mail, worker, sink)
}

fn verify_with_link(worker: &Worker, text: &str) {
    let token = token_in_link(text, "/verify-email");
    assert_eq!(post(worker, "/v1/email/verify", json!({"token": token})).0, 200);
}

#[test]
fn providers_postmark_sendgrid_and_mailgun() {
    let (mail, worker, _sink) = signup_through("postmark");
    assert_eq!(mail.path, "/email");
    assert_eq!(mail.header("X-Postmark-Server-Token"), Some("e2e-mail-api-key"));
    assert_eq!(mail.body["To"], "provider@example.com");
    assert_eq!(mail.body["From"], "Example <no-reply@mg.example.com>");
    assert!(mail.header("Idempotency-Key").is_some());
    verify_with_link(&worker, mail.body["TextBody"].as_str().unwrap());
    drop(worker);

    let (mail, worker, _sink) = signup_through("sendgrid");
    assert_eq!(mail.path, "/v3/mail/send");
    assert_eq!(mail.header("Authorization"), Some("Bearer e2e-mail-api-key"));
    assert_eq!(mail.body["personalizations"][0]["to"][0]["email"], "provider@example.com");
    assert_eq!(mail.body["from"], json!({"email": "no-reply@mg.example.com", "name": "Example"}));
    verify_with_link(&worker, mail.body["content"][0]["value"].as_str().unwrap());
    drop(worker);

    let (mail, worker, _sink) = signup_through("mailgun");
    assert_eq!(mail.path, "/v3/mg.example.com/messages");
    assert_eq!(mail.header("Content-Type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(mail.body, Value::Null, "a form, not JSON");
    let form: Vec<(String, String)> = form_urlencoded::parse(mail.raw.as_bytes()).into_owned().collect();
    let field = |name: &str| form.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(field("to"), "provider@example.com");
    assert!(mail.header("Authorization").unwrap().starts_with("Basic "));
    verify_with_link(&worker, &field("text"));
}
