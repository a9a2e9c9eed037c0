//! Emails: what each message says, and how it is handed to the configured provider.

use serde_json::json;

use crate::config::{MailConfig, MailProvider};
use crate::domain::email::Email;
use crate::ports::{HttpClient, OutboundRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    VerifyEmail,
    AlreadyRegistered,
    ResetPassword,
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

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("mail API unreachable: {0}")]
    Unreachable(String),
    #[error("mail API answered {status}: {body}")]
    Rejected { status: u16, body: String },
}

/// The provider's HTTP request for `mail`, or `None` for the `log` provider.
pub fn provider_request(config: &MailConfig, mail: &OutgoingMail) -> Option<OutboundRequest> {
    match config.provider {
        MailProvider::Log => None,
        MailProvider::Resend => {
            let body = json!({
                "from": config.from,
                "to": [mail.to.as_str()],
                "subject": mail.subject,
                "text": mail.text,
                "html": mail.html,
            });
            Some(OutboundRequest {
                method: "POST",
                url: format!("{}/emails", config.api_url),
                headers: vec![
                    ("Authorization".to_owned(), format!("Bearer {}", config.api_key.as_deref().unwrap_or_default())),
                    ("Content-Type".to_owned(), "application/json".to_owned()),
                    ("Idempotency-Key".to_owned(), mail.idempotency_key.clone()),
                ],
                body: body.to_string().into_bytes(),
                timeout_ms: Some(10_000),
            })
        }
    }
}

/// Hands `mail` to the provider. With `log`, the whole message (its link included) goes to the
/// worker's log, which is the point of that provider in development.
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
    log::info!("mail {:?} to {} accepted by the provider", mail.kind, mail.to);
    Ok(())
}
