//! Emails: what each message says, each provider's request for it, and what to do when a
//! delivery attempt fails (the queue consumer in the adapter follows [`next_step`]).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::json;

use crate::config::{MailConfig, MailProvider};
use crate::domain::email::{Email, EmailError};
use crate::ports::{HttpClient, OutboundRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    VerifyEmail,
    AlreadyRegistered,
    ResetPassword,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::VerifyEmail => "verify_email",
            MailKind::AlreadyRegistered => "already_registered",
            MailKind::ResetPassword => "reset_password",
        }
    }
}

/// A composed message. `idempotency_key` stays the same for every delivery attempt, so a
/// provider that already accepted it does not send it twice.
#[derive(Clone, PartialEq)]
pub struct OutgoingMail {
    pub kind: MailKind,
    pub to: Email,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub idempotency_key: String,
}

impl std::fmt::Debug for OutgoingMail {
    // The bodies carry one-time tokens: keep them out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingMail")
            .field("kind", &self.kind)
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// `${PUBLIC_URL}/verify-email?token=TOKEN` (API.md).
pub fn verification_mail(public_url: &str, to: &Email, token: &str, idempotency_key: String) -> OutgoingMail {
    let link = format!("{public_url}/verify-email?token={token}");
    compose(
        MailKind::VerifyEmail,
        to,
        "Confirm your email",
        &["Confirm your email address to finish creating your account.", "Open this link within 24 hours:"],
        Some(&link),
        "If you did not sign up, ignore this email: no account is activated without it.",
        idempotency_key,
    )
}

/// Sent instead of a verification mail when someone signs up with a registered address. It
/// carries a reset link rather than a verification link, so that whoever registered the
/// address first cannot have their password confirmed by the mailbox's owner.
pub fn already_registered_mail(
    public_url: &str,
    to: &Email,
    reset_token: &str,
    idempotency_key: String,
) -> OutgoingMail {
    let link = format!("{public_url}/reset-password?token={reset_token}");
    compose(
        MailKind::AlreadyRegistered,
        to,
        "You already have an account",
        &[
            "Someone tried to create an account with this email address, but you already have one.",
            "Sign in with your password, or choose a new one within 1 hour here:",
        ],
        Some(&link),
        "If this was not you, ignore this email: your account has not changed.",
        idempotency_key,
    )
}

/// `${PUBLIC_URL}/reset-password?token=TOKEN` (API.md).
pub fn reset_mail(public_url: &str, to: &Email, token: &str, idempotency_key: String) -> OutgoingMail {
    let link = format!("{public_url}/reset-password?token={token}");
    compose(
        MailKind::ResetPassword,
        to,
        "Reset your password",
        &["Someone asked to reset the password of your account.", "Choose a new password within 1 hour here:"],
        Some(&link),
        "If you did not ask for this, ignore this email: your password has not changed.",
        idempotency_key,
    )
}

fn compose(
    kind: MailKind,
    to: &Email,
    subject: &str,
    paragraphs: &[&str],
    link: Option<&str>,
    footer: &str,
    idempotency_key: String,
) -> OutgoingMail {
    let mut text = paragraphs.join("\n\n");
    let mut html = String::from("<!doctype html><html><body style=\"font-family:sans-serif\">");
    for paragraph in paragraphs {
        html.push_str(&format!("<p>{}</p>", escape_html(paragraph)));
    }
    if let Some(link) = link {
        text.push_str(&format!("\n\n{link}"));
        let link = escape_html(link);
        html.push_str(&format!("<p><a href=\"{link}\">{link}</a></p>"));
    }
    text.push_str(&format!("\n\n{footer}\n"));
    html.push_str(&format!("<p style=\"color:#555\">{}</p></body></html>", escape_html(footer)));
    OutgoingMail { kind, to: to.clone(), subject: subject.to_owned(), text, html, idempotency_key }
}

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape_html(raw: &str) -> String {
    let mut escaped = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    #[error("mail API unreachable: {0}")]
    Unreachable(String),
    #[error("mail API answered {status}: {body}")]
    Rejected { status: u16, body: String },
}

impl MailError {
    /// Whether trying again later may succeed: the API was unreachable, too slow, overloaded
    /// (5xx), or rate limiting us (429, 408). Any other refusal (a bad key, a bad address)
    /// would fail the same way every time.
    pub fn is_transient(&self) -> bool {
        match self {
            MailError::Unreachable(_) => true,
            MailError::Rejected { status, .. } => *status >= 500 || *status == 429 || *status == 408,
        }
    }
}

/// The provider's HTTP request for `mail`, or `None` for the `log` provider. Every provider
/// gets the same `Idempotency-Key` header on every attempt; where the API has a field for our
/// own data, the key goes there too, so a delivery can be traced.
pub fn provider_request(config: &MailConfig, mail: &OutgoingMail) -> Option<OutboundRequest> {
    let key = config.api_key.as_deref().unwrap_or_default();
    let json = |url: String, auth: (&str, String), body: serde_json::Value| OutboundRequest {
        method: "POST",
        url,
        headers: vec![
            (auth.0.to_owned(), auth.1),
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("Accept".to_owned(), "application/json".to_owned()),
            ("Idempotency-Key".to_owned(), mail.idempotency_key.clone()),
        ],
        body: body.to_string().into_bytes(),
        timeout_ms: Some(PROVIDER_TIMEOUT_MS),
    };
    let to = mail.to.as_str();
    Some(match config.provider {
        MailProvider::Log => return None,
        // https://resend.com/docs/api-reference/emails/send-email
        MailProvider::Resend => json(
            format!("{}/emails", config.api_url),
            ("Authorization", format!("Bearer {key}")),
            json!({
                "from": config.from.header_value(),
                "to": [to],
                "subject": mail.subject,
                "text": mail.text,
                "html": mail.html,
            }),
        ),
        // https://postmarkapp.com/developer/api/email-api#send-a-single-email
        MailProvider::Postmark => json(
            format!("{}/email", config.api_url),
            ("X-Postmark-Server-Token", key.to_owned()),
            json!({
                "From": config.from.header_value(),
                "To": to,
                "Subject": mail.subject,
                "TextBody": mail.text,
                "HtmlBody": mail.html,
                "MessageStream": "outbound",
                "Metadata": { "idempotency_key": mail.idempotency_key },
            }),
        ),
        // https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send
        MailProvider::Sendgrid => {
            let mut from = json!({ "email": config.from.address });
            if let Some(name) = &config.from.name {
                from["name"] = json!(name);
            }
            json(
                format!("{}/v3/mail/send", config.api_url),
                ("Authorization", format!("Bearer {key}")),
                json!({
                    "personalizations": [{ "to": [{ "email": to }] }],
                    "from": from,
                    "subject": mail.subject,
                    "content": [
                        { "type": "text/plain", "value": mail.text },
                        { "type": "text/html", "value": mail.html },
                    ],
                    "custom_args": { "idempotency_key": mail.idempotency_key },
                }),
            )
        }
        // https://documentation.mailgun.com/docs/mailgun/api-reference/openapi-final/tag/Messages/
        MailProvider::Mailgun => {
            let body = form_urlencoded::Serializer::new(String::new())
                .append_pair("from", &config.from.header_value())
                .append_pair("to", to)
                .append_pair("subject", &mail.subject)
                .append_pair("text", &mail.text)
                .append_pair("html", &mail.html)
                .append_pair("v:idempotency_key", &mail.idempotency_key)
                .finish();
            OutboundRequest {
                method: "POST",
                url: format!("{}/v3/{}/messages", config.api_url, config.mailgun_domain),
                headers: vec![
                    ("Authorization".to_owned(), format!("Basic {}", STANDARD.encode(format!("api:{key}")))),
                    ("Content-Type".to_owned(), "application/x-www-form-urlencoded".to_owned()),
                    ("Accept".to_owned(), "application/json".to_owned()),
                    ("Idempotency-Key".to_owned(), mail.idempotency_key.clone()),
                ],
                body: body.into_bytes(),
                timeout_ms: Some(PROVIDER_TIMEOUT_MS),
            }
        }
    })
}

/// A provider that has not answered in this long is treated as down for this attempt.
const PROVIDER_TIMEOUT_MS: u32 = 10_000;

/// Hands `mail` to the provider, once. With `log`, the whole message (its link included) goes
/// to the worker's log, which is the point of that provider in development.
pub async fn deliver(config: &MailConfig, http: &impl HttpClient, mail: &OutgoingMail) -> Result<(), MailError> {
    let Some(request) = provider_request(config, mail) else {
        log::info!("mail to {} — {}\n{}", mail.to, mail.subject, mail.text);
        return Ok(());
    };
    let response = http.send(request).await.map_err(|err| MailError::Unreachable(err.to_string()))?;
    if !(200..300).contains(&response.status) {
        let body: String = response.body.chars().take(500).collect();
        return Err(MailError::Rejected { status: response.status, body });
    }
    Ok(())
}

/// A mail on the queue: the message and how many delivery attempts it has had. The request
/// path enqueues it with `attempt: 0`; each transient failure enqueues it again, delayed,
/// with one more.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueuedMail {
    pub kind: MailKind,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub idempotency_key: String,
    pub attempt: u32,
    /// Set on the way to the dead-letter queue: why delivery was given up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl std::fmt::Debug for QueuedMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedMail")
            .field("kind", &self.kind)
            .field("to", &self.to)
            .field("idempotency_key", &self.idempotency_key)
            .field("attempt", &self.attempt)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl QueuedMail {
    pub fn new(mail: &OutgoingMail) -> QueuedMail {
        QueuedMail {
            kind: mail.kind,
            to: mail.to.as_str().to_owned(),
            subject: mail.subject.clone(),
            text: mail.text.clone(),
            html: mail.html.clone(),
            idempotency_key: mail.idempotency_key.clone(),
            attempt: 0,
            failure: None,
        }
    }

    /// The message again, checked like any input: its address must still parse.
    pub fn to_mail(&self) -> Result<OutgoingMail, EmailError> {
        Ok(OutgoingMail {
            kind: self.kind,
            to: Email::parse(&self.to)?,
            subject: self.subject.clone(),
            text: self.text.clone(),
            html: self.html.clone(),
            idempotency_key: self.idempotency_key.clone(),
        })
    }
}

/// What the queue consumer does after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    /// Enqueue again with `attempt` and this delay.
    RetryAfter {
        attempt: u32,
        delay_seconds: u32,
    },
    /// Give up: to the dead-letter queue, with the reason.
    DeadLetter {
        reason: String,
    },
}

/// The consumer's decision: retry transient failures with exponential backoff (the base
/// doubled per attempt, at most an hour) until `max_attempts`, give up at once on permanent
/// ones.
pub fn next_step(config: &MailConfig, queued: &QueuedMail, outcome: Result<(), MailError>) -> NextStep {
    let attempts = queued.attempt + 1;
    match outcome {
        Ok(()) => NextStep::Delivered,
        Err(err) if err.is_transient() && attempts < config.max_attempts => {
            let delay = u64::from(config.retry_base_seconds) << (attempts - 1).min(20);
            NextStep::RetryAfter { attempt: attempts, delay_seconds: u32::try_from(delay.min(3600)).unwrap_or(3600) }
        }
        Err(err) if err.is_transient() => NextStep::DeadLetter { reason: format!("{err} (after {attempts} attempts)") },
        Err(err) => NextStep::DeadLetter { reason: format!("{err} (permanent)") },
    }
}
