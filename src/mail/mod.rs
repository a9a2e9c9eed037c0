//! Emails: what each message says (the texts are data, in `templates`), each provider's request for it, and what to do when a
//! delivery attempt fails (the queue consumer in the adapter follows [`next_step`]).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::json;

pub mod templates;

pub use templates::Locale;
use templates::Template;

use crate::config::{Branding, Config, MailConfig, MailProvider};
use crate::domain::email::{Email, EmailError};
use crate::domain::short_code;
use crate::ports::{HttpClient, OutboundRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    VerifyEmail,
    AlreadyRegistered,
    ResetPassword,
    PasswordChanged,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::VerifyEmail => "verify_email",
            MailKind::AlreadyRegistered => "already_registered",
            MailKind::ResetPassword => "reset_password",
            MailKind::PasswordChanged => "password_changed",
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
    /// When the link inside stops working (Unix seconds): the mail is not delivered after it.
    pub expires_at: Option<i64>,
}

impl OutgoingMail {
    /// The mail with the expiry of the token its link carries.
    pub fn expiring_at(mut self, at: chrono::DateTime<chrono::Utc>) -> OutgoingMail {
        self.expires_at = Some(at.timestamp());
        self
    }
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
/// It also carries the short code, for confirming where the link cannot be opened.
pub fn verification_mail(
    config: &Config,
    locale: Locale,
    to: &Email,
    token: &str,
    code: &str,
    key: String,
) -> OutgoingMail {
    let link = format!("{}/verify-email?token={token}", config.public_url);
    compose(MailKind::VerifyEmail, locale, &config.branding, to, &link, Some(code), key)
}

/// Sent instead of a verification mail when someone signs up with a registered address. It
/// carries a reset link rather than a verification link, so that whoever registered the
/// address first cannot have their password confirmed by the mailbox's owner.
pub fn already_registered_mail(
    config: &Config,
    locale: Locale,
    to: &Email,
    reset_token: &str,
    key: String,
) -> OutgoingMail {
    let link = format!("{}/reset-password?token={reset_token}", config.public_url);
    compose(MailKind::AlreadyRegistered, locale, &config.branding, to, &link, None, key)
}

/// `${PUBLIC_URL}/reset-password?token=TOKEN` (API.md).
pub fn reset_mail(config: &Config, locale: Locale, to: &Email, token: &str, key: String) -> OutgoingMail {
    let link = format!("{}/reset-password?token={token}", config.public_url);
    compose(MailKind::ResetPassword, locale, &config.branding, to, &link, None, key)
}

/// The notice after a password change, with the way back in if it was not the owner.
pub fn password_changed_mail(config: &Config, locale: Locale, to: &Email, key: String) -> OutgoingMail {
    let link = format!("{}/forgot-password", config.public_url);
    compose(MailKind::PasswordChanged, locale, &config.branding, to, &link, None, key)
}

/// Used only if a kind lacked a template in every language, which a unit test rules out.
const FALLBACK: Template = Template {
    subject: "A message from {product}",
    paragraphs: &[],
    action: None,
    link_hint: "",
    code_hint: None,
    footer: "",
    signature: "— {product}",
};

/// A mail from its template: text, and HTML that looks like the hosted pages.
fn compose(
    kind: MailKind,
    locale: Locale,
    branding: &Branding,
    to: &Email,
    link: &str,
    code: Option<&str>,
    idempotency_key: String,
) -> OutgoingMail {
    let template =
        templates::template(kind, locale).or_else(|| templates::template(kind, Locale::En)).unwrap_or(&FALLBACK);
    let fill = |text: &str| text.replace("{product}", &branding.product_name);
    let subject = fill(template.subject);
    let paragraphs: Vec<String> = template.paragraphs.iter().map(|paragraph| fill(paragraph)).collect();

    let code_line = match (code, template.code_hint) {
        (Some(code), Some(hint)) => Some((fill(hint), short_code::display(code))),
        _ => None,
    };
    let mut text = paragraphs.join("\n\n");
    text.push_str(&format!("\n\n{}\n{link}\n", fill(template.link_hint)));
    if let Some((hint, code)) = &code_line {
        text.push_str(&format!("\n{hint} {code}\n"));
    }
    text.push_str(&format!("\n{}\n\n{}\n", fill(template.footer), fill(template.signature)));

    let accent = &branding.accent_color;
    let muted = "color:#4a4f57;font-size:13px;line-height:1.5";
    let mut body = String::new();
    for paragraph in &paragraphs {
        body.push_str(&format!("<p style=\"margin:0 0 16px\">{}</p>", escape_html(paragraph)));
    }
    let href = escape_html(link);
    if let Some(action) = template.action {
        body.push_str(&format!(
            "<p style=\"margin:24px 0\"><a href=\"{href}\" style=\"display:inline-block;background:{accent};color:#ffffff;\
             padding:12px 20px;border-radius:6px;text-decoration:none;font-weight:600\">{}</a></p>",
            escape_html(&fill(action))
        ));
    }
    body.push_str(&format!(
        "<p style=\"{muted}\">{}<br><a href=\"{href}\" style=\"color:{accent};word-break:break-all\">{href}</a></p>",
        escape_html(&fill(template.link_hint)),
    ));
    if let Some((hint, code)) = &code_line {
        body.push_str(&format!(
            "<p style=\"margin:16px 0\">{}<br><strong style=\"font-size:24px;letter-spacing:4px\">{}</strong></p>",
            escape_html(hint),
            escape_html(code)
        ));
    }
    body.push_str(&format!("<p style=\"{muted}\">{}</p>", escape_html(&fill(template.footer))));
    let html = format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{title}</title></head>\
         <body style=\"margin:0;padding:0;background:#f4f5f7;font-family:system-ui,-apple-system,'Segoe UI',sans-serif;color:#1a1a1a\">\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\"><tr><td align=\"center\" style=\"padding:24px\">\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" style=\"max-width:480px;background:#ffffff;border-radius:12px\">\
         <tr><td style=\"padding:32px;font-size:15px;line-height:1.5\">\
         <p style=\"margin:0 0 20px;font-weight:700;font-size:17px\">{product}</p>{body}</td></tr></table>\
         </td></tr></table></body></html>",
        lang = locale.tag(),
        title = escape_html(&subject),
        product = escape_html(&branding.product_name),
    );
    OutgoingMail { kind, to: to.clone(), subject, text, html, idempotency_key, expires_at: None }
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
        log::info!("mail to {} — {}\n{}", mail.to.masked(), mail.subject, mail.text);
        return Ok(());
    };
    let response = http.send(request).await.map_err(|err| MailError::Unreachable(err.to_string()))?;
    if !(200..300).contains(&response.status) {
        let body: String = without_addresses(&response.body).chars().take(500).collect();
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
    /// When the mail's link expires (Unix seconds): never delivered after that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// When the request queued it (Unix seconds): the retries end within the provider's
    /// idempotency window, measured from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<i64>,
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
    pub fn new(mail: &OutgoingMail, now: i64) -> QueuedMail {
        QueuedMail {
            kind: mail.kind,
            to: mail.to.as_str().to_owned(),
            subject: mail.subject.clone(),
            text: mail.text.clone(),
            html: mail.html.clone(),
            idempotency_key: mail.idempotency_key.clone(),
            attempt: 0,
            expires_at: mail.expires_at,
            queued_at: Some(now),
            failure: None,
        }
    }

    /// Why this mail must not be attempted at `now`, if it must not: its link has expired (a
    /// reset link that arrives dead is worse than none: the person asks again), or its retries
    /// have run past the window in which the provider recognises its `Idempotency-Key`.
    pub fn too_late(&self, now: i64) -> Option<String> {
        if self.expires_at.is_some_and(|expires_at| now >= expires_at) {
            return Some("its link expired before it could be delivered".to_owned());
        }
        if self.queued_at.is_some_and(|queued_at| now - queued_at >= IDEMPOTENCY_WINDOW_SECONDS) {
            return Some("its retries ran past the provider's 24 h idempotency window".to_owned());
        }
        None
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
            expires_at: self.expires_at,
        })
    }
}

/// A provider's answer with every word that holds an `@` replaced: refusals often quote the
/// recipient, and what a failure says goes to the log and the dead-letter table.
pub fn without_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains('@') {
            out.push_str("[address]");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ',' | ';' | '(' | ')' | '[' | ']' | '{' | '}') {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// How long providers recognise an `Idempotency-Key` (Resend: 24 h): no attempt is made later,
/// and the configured retries must fit well inside it (`retry_window_seconds`).
pub const IDEMPOTENCY_WINDOW_SECONDS: i64 = 24 * 60 * 60;

/// The delay before attempt `attempt + 1` (1-based `attempt`): the base, doubled per attempt,
/// at most an hour.
pub fn retry_delay_seconds(config: &MailConfig, attempt: u32) -> u32 {
    let delay = u64::from(config.retry_base_seconds) << attempt.saturating_sub(1).min(20);
    u32::try_from(delay.min(3600)).unwrap_or(3600)
}

/// From the first attempt to the last, with every delay taken in full.
pub fn retry_window_seconds(config: &MailConfig) -> i64 {
    (1..config.max_attempts).map(|attempt| i64::from(retry_delay_seconds(config, attempt))).sum()
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
            NextStep::RetryAfter { attempt: attempts, delay_seconds: retry_delay_seconds(config, attempts) }
        }
        Err(err) if err.is_transient() => NextStep::DeadLetter { reason: format!("{err} (after {attempts} attempts)") },
        Err(err) => NextStep::DeadLetter { reason: format!("{err} (permanent)") },
    }
}
