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
    assert_eq!(body["Subject"], "Confirm your email for edgeid");
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
    assert_eq!(field("subject"), Some("Confirm your email for edgeid"));
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
    let mut queued = QueuedMail::new(&signup_mail(), 0);
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

    let fresh = QueuedMail::new(&signup_mail(), 0);
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
    let long = test_config(&[("MAIL_MAX_ATTEMPTS", "20"), ("MAIL_RETRY_BASE_SECONDS", "600")]).mail;
    let late = QueuedMail { attempt: 15, ..QueuedMail::new(&signup_mail(), 0) };
    assert!(matches!(next_step(&long, &late, unavailable()), NextStep::RetryAfter { delay_seconds: 3600, .. }));
}

/// Retries end inside the provider's 24 h idempotency window: a configuration whose retries
/// would run longer is refused, and a mail queued a day ago is not attempted again.
#[test]
fn every_retry_falls_inside_the_idempotency_window() {
    assert_eq!(
        edgeid::mail::retry_window_seconds(&test_config(&[]).mail),
        30 + 60 + 120 + 240 + 480 + 960 + 1920 + 3600 * 2
    );
    assert!(
        edgeid::mail::retry_window_seconds(
            &test_config(&[("MAIL_MAX_ATTEMPTS", "20"), ("MAIL_RETRY_BASE_SECONDS", "600")]).mail
        ) < 23 * 3600
    );
    let too_long = edgeid::config::Config::from_lookup(|name| match name {
        "MAIL_MAX_ATTEMPTS" => Some("30".to_owned()),
        "MAIL_RETRY_BASE_SECONDS" => Some("600".to_owned()),
        "ISSUER" => Some("http://127.0.0.1:8787".to_owned()),
        "MAIL_PROVIDER" => Some("log".to_owned()),
        "KEY_ENCRYPTION_KEY" => Some(crate::support::TEST_KEY_ENCRYPTION_KEY.to_owned()),
        _ => None,
    });
    assert!(matches!(too_long, Err(edgeid::config::ConfigError::Invalid { name: "MAIL_MAX_ATTEMPTS", .. })));
    let queued = QueuedMail::new(&signup_mail(), 1_000);
    assert_eq!(queued.too_late(1_000 + 23 * 3600), None);
    assert!(queued.too_late(1_000 + 24 * 3600).unwrap().contains("idempotency"));
}

/// A reset mail is never delivered after its link died: the person would only ask again.
#[test]
fn mail_whose_link_expired_is_not_delivered() {
    let app = App::new();
    app.verified_account("late-mail@example.com", "correct horse battery");
    app.post("/v1/password/forgot", json!({"email": "late-mail@example.com"}));
    let mail = app.single_mail_to("late-mail@example.com");
    let sent_at = app.now.get().timestamp();
    assert_eq!(mail.expires_at, Some(sent_at + 3600));
    let queued = QueuedMail::new(&mail, sent_at);
    assert_eq!(queued.too_late(sent_at + 3599), None);
    assert!(queued.too_late(sent_at + 3600).unwrap().contains("expired"));
    // A queued message from before expiries were recorded still goes out.
    let legacy: QueuedMail = serde_json::from_str(
        &serde_json::to_string(&QueuedMail { expires_at: None, queued_at: None, ..queued }).unwrap(),
    )
    .unwrap();
    assert_eq!(legacy.too_late(i64::MAX / 2), None);
}

#[test]
fn queued_mail_round_trips_and_its_recipient_is_checked_again() {
    let mail = signup_mail();
    let queued = QueuedMail::new(&mail, 0);
    let json = serde_json::to_string(&queued).unwrap();
    assert!(!format!("{queued:?}").contains("token="), "Debug keeps the link out of logs");
    let back: QueuedMail = serde_json::from_str(&json).unwrap();
    assert_eq!(back, queued);
    assert_eq!(back.to_mail().unwrap(), mail);
    let tampered = QueuedMail { to: "a@example.com\r\nBcc: b@example.com".to_owned(), ..back };
    assert!(tampered.to_mail().is_err());
}

#[test]
fn mails_speak_the_language_of_the_sign_up_and_say_when_a_password_changed() {
    let app = App::new();
    let signup = |email: &str, accept_language: &str| {
        app.send(edgeid::api::ApiRequest {
            method: "POST".into(),
            path: "/v1/signup".into(),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Accept-Language".into(), accept_language.into()),
            ],
            body: json!({"email": email, "password": "correct horse battery"}).to_string().into_bytes(),
            ..Default::default()
        })
    };
    assert_eq!(signup("anna@example.com", "de-AT,de;q=0.9,en;q=0.5").status, 202);
    let german = app.single_mail_to("anna@example.com");
    assert_eq!(german.subject, "Bestätigen Sie Ihre E-Mail-Adresse für edgeid");
    assert!(german.html.contains("<html lang=\"de\">"));
    assert!(german.text.contains("https://app.example.test/verify-email?token="));
    // Later mails use the language stored at sign-up, whatever the later request says.
    app.post("/v1/password/forgot", json!({"email": "anna@example.com"}));
    let reset = app.single_mail_to("anna@example.com");
    assert_eq!(reset.subject, "Setzen Sie Ihr edgeid-Passwort zurück");
    let token = crate::support::token_in_link(&reset.text, "/reset-password");
    assert_eq!(app.post("/v1/password/reset", json!({"token": token, "password": "a new passphrase"})).status, 200);
    let notice = app.single_mail_to("anna@example.com");
    assert_eq!(notice.kind, edgeid::mail::MailKind::PasswordChanged);
    assert_eq!(notice.subject, "Ihr edgeid-Passwort wurde geändert");
    assert!(notice.text.contains("https://app.example.test/forgot-password"));
    // A registered address signing up again hears of it in its own language too.
    assert_eq!(signup("anna@example.com", "en").status, 202);
    assert_eq!(app.single_mail_to("anna@example.com").subject, "Sie haben bereits ein Konto bei edgeid");

    assert_eq!(signup("bob@example.com", "fr-FR, fr;q=0.9").status, 202);
    let english = app.single_mail_to("bob@example.com");
    assert_eq!(english.subject, "Confirm your email for edgeid");
    assert!(english.html.contains("Confirm my email"), "the button");
}

#[test]
fn templates_are_branded_and_escaped() {
    let app = App::with_config(test_config(&[("PRODUCT_NAME", "Acme <b>&</b>"), ("ACCENT_COLOR", "#aa3300")]));
    app.post("/v1/signup", json!({"email": "brand@example.com", "password": "correct horse battery"}));
    let mail = app.single_mail_to("brand@example.com");
    assert_eq!(mail.subject, "Confirm your email for Acme <b>&</b>");
    assert!(mail.html.contains("Acme &lt;b&gt;&amp;&lt;/b&gt;") && !mail.html.contains("<b>&</b>"));
    assert!(mail.html.contains("background:#aa3300"));
}

/// Sign-up, resend and forgot cost the same round trips to D1 whether or not the address has
/// an account, before their response (what its timing shows) and in all, so their timing says
/// nothing (the mail itself leaves after the response).
#[test]
fn registered_and_unknown_addresses_cost_the_same_round_trips() {
    let app = App::new();
    app.verified_account("known@example.com", "correct horse battery");
    app.users_execute("INSERT INTO users (id, email, password_hash, password_changed_at, created_at, updated_at) VALUES ('u2', 'unverified@example.com', 'x', 0, 0, 0)");
    // (status, round trips before the response, in all)
    let cost = |path: &str, email: &str| {
        let before = app.round_trips();
        let status = app.post(path, json!({"email": email, "password": "another passphrase"})).status;
        (status, app.round_trips_at_response.get() - before, app.round_trips() - before)
    };
    for path in ["/v1/signup", "/v1/password/forgot", "/v1/email/resend"] {
        let registered =
            cost(path, if path == "/v1/email/resend" { "unverified@example.com" } else { "known@example.com" });
        let unknown = cost(path, &format!("nobody-{}@example.com", path.len()));
        assert_eq!(registered, unknown, "{path}");
    }
    // Already registered, a new account's verification, a reset, a resent verification.
    assert_eq!(app.take_mails().len(), 4);
}

/// What a provider says about a refused mail goes to the log and the dead-letter table: never
/// with an address in it.
#[test]
fn provider_answers_lose_their_addresses() {
    let body = r#"{"message": "The to address <Jane.Doe+x@example.com> is invalid", "to": "jane@example.com"}"#;
    let cleaned = edgeid::mail::without_addresses(body);
    assert!(!cleaned.contains("example.com"), "{cleaned}");
    assert!(cleaned.contains("The to address <[address]> is invalid"), "{cleaned}");
    assert_eq!(edgeid::mail::without_addresses("no address here"), "no address here");
}
