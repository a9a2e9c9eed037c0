//! Mail natively: each provider's request shape (the real APIs' shapes, the same
//! `Idempotency-Key`), the queue consumer's decisions (retry with backoff, give up), and the
//! queued message's round trip.

use edgeid::config::MailConfig;
use edgeid::mail::{next_step, provider_request, MailError, NextStep, OutgoingMail, QueuedMail};
use edgeid::ports::OutboundRequest;
use serde_json::{json, Value};

use crate::support::{test_config, App};

fn signup_mail() -> OutgoingMail {
    let app = App::new();
    app.post("/v1/signup", json!({"email": "shape@example.com", "password": "correct horse battery"}));
    app.single_mail_to("shape@example.com")
}

fn mail_config(provider: &str) -> MailConfig {
    test_config(&[
        ("MAIL_PROVIDER", provider),
        ("MAIL_API_KEY", "secret-key"),
        ("MAIL_FROM", "Example App <no-reply@mg.example.test>"),
    ])
    .mail
}

fn header<'a>(request: &'a OutboundRequest, name: &str) -> Option<&'a str> {
    request.headers.iter().find(|(candidate, _)| candidate == name).map(|(_, value)| value.as_str())
}

#[test]
fn postmark_sendgrid_and_mailgun_get_their_own_api_shapes() {
    let mail = signup_mail();
    let link = "https://app.example.test/verify-email?token=";

    let postmark = provider_request(&mail_config("postmark"), &mail).unwrap();
    assert_eq!(postmark.url, "https://mail.example.test/email");
    assert_eq!(header(&postmark, "X-Postmark-Server-Token"), Some("secret-key"));
    let body: Value = serde_json::from_slice(&postmark.body).unwrap();
    assert_eq!(body["From"], "Example App <no-reply@mg.example.test>");
    assert_eq!(body["To"], "shape@example.com");
    assert_eq!(body["Subject"], "Confirm your email");
    assert!(body["TextBody"].as_str().unwrap().contains(link));
    assert!(body["HtmlBody"].as_str().unwrap().contains(link));
    assert_eq!(body["MessageStream"], "outbound");

    let sendgrid = provider_request(&mail_config("sendgrid"), &mail).unwrap();
    assert_eq!(sendgrid.url, "https://mail.example.test/v3/mail/send");
    assert_eq!(header(&sendgrid, "Authorization"), Some("Bearer secret-key"));
    let body: Value = serde_json::from_slice(&sendgrid.body).unwrap();
    assert_eq!(body["personalizations"], json!([{"to": [{"email": "shape@example.com"}]}]));
    assert_eq!(body["from"], json!({"email": "no-reply@mg.example.test", "name": "Example App"}));
    assert_eq!(body["content"][0]["type"], "text/plain");
    assert!(body["content"][0]["value"].as_str().unwrap().contains(link));
    assert_eq!(body["content"][1]["type"], "text/html");
    assert_eq!(body["custom_args"]["idempotency_key"], mail.idempotency_key.as_str());

    let mailgun = provider_request(&mail_config("mailgun"), &mail).unwrap();
    assert_eq!(mailgun.url, "https://mail.example.test/v3/mg.example.test/messages");
    // Basic base64("api:secret-key")
    assert_eq!(header(&mailgun, "Authorization"), Some("Basic YXBpOnNlY3JldC1rZXk="));
    assert_eq!(header(&mailgun, "Content-Type"), Some("application/x-www-form-urlencoded"));
    let form: Vec<(String, String)> = form_urlencoded::parse(&mailgun.body).into_owned().collect();
    let field = |name: &str| form.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    assert_eq!(field("from"), Some("Example App <no-reply@mg.example.test>"));
    assert_eq!(field("to"), Some("shape@example.com"));
    assert_eq!(field("subject"), Some("Confirm your email"));
    assert!(field("text").unwrap().contains(link));
    assert!(field("html").unwrap().contains(link));

    for request in [&postmark, &sendgrid, &mailgun] {
        assert_eq!(request.method, "POST");
        assert_eq!(header(request, "Idempotency-Key"), Some(mail.idempotency_key.as_str()));
        assert!(request.timeout_ms.is_some());
    }
}

#[test]
fn transient_failures_are_retried_with_backoff_and_the_rest_given_up() {
    let config = test_config(&[("MAIL_MAX_ATTEMPTS", "4"), ("MAIL_RETRY_BASE_SECONDS", "30")]).mail;
    let mut queued = QueuedMail::new(&signup_mail());
    let unavailable = || Err(MailError::Rejected { status: 503, body: String::new() });
    let mut delays = Vec::new();
    while let NextStep::RetryAfter { attempt, delay_seconds } = next_step(&config, &queued, unavailable()) {
        assert_eq!(attempt, queued.attempt + 1);
        delays.push(delay_seconds);
        queued.attempt = attempt;
    }
    assert_eq!(delays, [30, 60, 120]);
    assert!(
        matches!(next_step(&config, &queued, unavailable()), NextStep::DeadLetter { reason } if reason.contains("after 4 attempts"))
    );

    let fresh = QueuedMail::new(&signup_mail());
    for transient in [
        MailError::Unreachable("timed out".to_owned()),
        MailError::Rejected { status: 429, body: String::new() },
        MailError::Rejected { status: 500, body: String::new() },
        MailError::Rejected { status: 408, body: String::new() },
    ] {
        assert!(matches!(
            next_step(&config, &fresh, Err(transient)),
            NextStep::RetryAfter { attempt: 1, delay_seconds: 30 }
        ));
    }
    for permanent in [401, 403, 404, 422] {
        let outcome = Err(MailError::Rejected { status: permanent, body: "no".to_owned() });
        assert!(
            matches!(next_step(&config, &fresh, outcome), NextStep::DeadLetter { reason } if reason.contains("permanent"))
        );
    }
    assert_eq!(next_step(&config, &fresh, Ok(())), NextStep::Delivered);

    // The delay doubles up to an hour and stays there.
    let long = test_config(&[("MAIL_MAX_ATTEMPTS", "50"), ("MAIL_RETRY_BASE_SECONDS", "600")]).mail;
    let late = QueuedMail { attempt: 30, ..QueuedMail::new(&signup_mail()) };
    assert!(matches!(next_step(&long, &late, unavailable()), NextStep::RetryAfter { delay_seconds: 3600, .. }));
}

#[test]
fn queued_mail_round_trips_and_its_recipient_is_checked_again() {
    let mail = signup_mail();
    let queued = QueuedMail::new(&mail);
    let json = serde_json::to_string(&queued).unwrap();
    assert!(!format!("{queued:?}").contains("token="), "Debug keeps the link out of logs");
    let back: QueuedMail = serde_json::from_str(&json).unwrap();
    assert_eq!(back, queued);
    assert_eq!(back.to_mail().unwrap(), mail);
    let tampered = QueuedMail { to: "a@example.com\r\nBcc: b@example.com".to_owned(), ..back };
    assert!(tampered.to_mail().is_err());
}
