//! The hosted pages: sign-up, login, forgot password, and the pages behind the links in emails
//! (confirm email, choose a new password), plus their result pages and the dev mailbox.
//!
//! They work without JavaScript: each is a form that POSTs (form-encoded) to the JSON API,
//! which answers a browser with a page. A small script, allowed by a per-response nonce,
//! enhances them: it takes one-time tokens out of the address bar, checks that two passwords
//! match before sending, hints at password strength and prevents double submission. A GET
//! never consumes a token, so mail scanners that prefetch links change nothing.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::config::{Branding, Config};
use crate::domain::csrf;
use crate::mail::escape_html;

/// Page content: the frame (head, logo, script) is added by [`render`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: u16,
    pub title: String,
    /// HTML, already escaped where it echoes anything.
    pub body: String,
}

/// What every form carries: the CSRF token of the browser's cookie, and where to go after
/// success (already checked against the allowlist).
#[derive(Debug, Clone, Default)]
pub struct FormContext {
    pub csrf_token: String,
    pub redirect_to: Option<String>,
    /// The sealed authorization request the login page signs in for (`domain::interaction`).
    pub interaction: Option<String>,
}

impl FormContext {
    fn hidden_fields(&self) -> String {
        let mut fields =
            format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", csrf::FIELD, escape_html(&self.csrf_token));
        if let Some(redirect_to) = &self.redirect_to {
            fields.push_str(&format!(
                "<input type=\"hidden\" name=\"redirect_to\" value=\"{}\">",
                escape_html(redirect_to)
            ));
        }
        if let Some(interaction) = &self.interaction {
            fields.push_str(&format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                crate::domain::interaction::FIELD,
                escape_html(interaction)
            ));
        }
        fields
    }

    /// `?redirect_to=…` to carry the destination to another page.
    fn query(&self) -> String {
        match &self.redirect_to {
            Some(redirect_to) => {
                format!(
                    "?{}",
                    form_urlencoded::Serializer::new(String::new()).append_pair("redirect_to", redirect_to).finish()
                )
            }
            None => String::new(),
        }
    }
}

fn style(branding: &Branding) -> String {
    let accent = &branding.accent_color;
    format!(
        "*{{box-sizing:border-box}}\
body{{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f4f5f7;color:#1a1a1a;line-height:1.5}}\
main{{max-width:26rem;margin:3rem auto;padding:2rem;background:#fff;border-radius:.75rem;box-shadow:0 1px 3px rgba(0,0,0,.12)}}\
header{{display:flex;align-items:center;gap:.6rem;font-weight:700;font-size:1.05rem;margin-bottom:1.25rem}}\
header img{{max-height:2rem;max-width:8rem}}\
h1{{font-size:1.4rem;margin:0 0 1rem}}\
label{{display:block;margin:1rem 0 .3rem;font-weight:600}}\
input{{width:100%;padding:.6rem;font-size:1rem;border:1px solid #8a8f98;border-radius:.4rem}}\
button{{width:100%;margin-top:1.5rem;padding:.7rem 1.2rem;font-size:1rem;font-weight:600;background:{accent};color:#fff;border:0;border-radius:.4rem;cursor:pointer}}\
form[aria-busy]{{opacity:.6;cursor:wait}}\
button.secondary{{background:#fff;color:{accent};border:1px solid {accent};margin-top:.75rem}}\
ul.scopes{{padding-left:1.2rem}}\
a{{color:{accent}}}\
button:focus-visible,input:focus-visible,a:focus-visible{{outline:3px solid #ffbf47;outline-offset:2px}}\
.error{{color:#a30000;background:#fdecec;border-left:4px solid #a30000;padding:.6rem .8rem;font-weight:600}}\
.hint{{color:#4a4f57;font-size:.9rem;margin:.3rem 0 0}}\
.links{{margin-top:1.5rem;font-size:.95rem}}.links a{{margin-right:1rem}}\
.mail{{border-top:1px solid #d8dbe0;padding:1rem 0}}.mail pre{{white-space:pre-wrap;word-break:break-all;font-size:.85rem}}\
.meta{{color:#4a4f57;font-size:.85rem}}"
    )
}

/// Progressive enhancement; the page works the same without it.
const SCRIPT: &str = r#"(function () {
  "use strict";
  // One-time tokens leave the address bar (and the history, and screenshots) at once; the
  // form already holds them.
  if (/[?&](token|redirect_to)=/.test(location.search)) {
    history.replaceState(null, "", location.pathname);
  }
  var password = document.getElementById("password");
  var confirmation = document.getElementById("password_confirmation");
  var strength = document.getElementById("strength");
  function length(value) { return Array.from(value).length; }
  if (password && strength) {
    password.addEventListener("input", function () {
      var n = length(password.value);
      strength.textContent = n === 0 ? "" :
        n < 8 ? "Too short: " + (8 - n) + " more character" + (n === 7 ? "" : "s") + " needed." :
        n < 12 ? "Long enough. A few more characters make it much stronger." :
        n < 16 ? "Good." : "Strong.";
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll("form"), function (form) {
    form.addEventListener("submit", function (event) {
      if (password && confirmation && password.value !== confirmation.value) {
        event.preventDefault();
        confirmation.setCustomValidity("The two passwords are not the same.");
        confirmation.reportValidity();
        return;
      }
      // One submission per form. The buttons stay enabled: a disabled button is left out of
      // the form data, and the consent and logout forms say their decision with the button.
      if (form.dataset.sent) { event.preventDefault(); return; }
      form.dataset.sent = "1";
      form.setAttribute("aria-busy", "true");
    });
  });
  if (confirmation) {
    confirmation.addEventListener("input", function () { confirmation.setCustomValidity(""); });
  }
})();"#;

/// The Content-Security-Policy of a page: nothing loads but the logo, only the nonce'd script
/// runs, only the hashed stylesheet applies, forms post only to this origin (and redirect
/// only to the allowlist, and to `form_targets`: the origin of the registered redirect URI an
/// authorization's login or consent form ends at), and nobody frames it.
pub fn content_security_policy(config: &Config, nonce: &str, form_targets: &[String]) -> String {
    let style_hash = STANDARD.encode(Sha256::digest(style(&config.branding).as_bytes()));
    let image = config.branding.logo_url.as_deref().and_then(origin_of).unwrap_or_else(|| "'none'".to_owned());
    let mut origins: Vec<String> =
        config.redirect_allowlist.iter().filter_map(|allowed| origin_of(allowed.as_str())).collect();
    origins.extend(form_targets.iter().filter_map(|target| origin_of(target)));
    origins.sort();
    origins.dedup();
    let form_action = std::iter::once("'self'".to_owned()).chain(origins).collect::<Vec<_>>().join(" ");
    format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'sha256-{style_hash}'; img-src {image}; \
         form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// `scheme://host[:port]` of an absolute URL.
pub(crate) fn origin_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    Some(parsed.origin().ascii_serialization()).filter(|origin| origin != "null")
}

/// The whole document.
pub fn render(page: &Page, branding: &Branding, nonce: &str) -> String {
    let product = escape_html(&branding.product_name);
    let title = escape_html(&page.title);
    let logo = match &branding.logo_url {
        Some(url) => format!("<img src=\"{}\" alt=\"\">", escape_html(url)),
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title} · {product}</title><style>{style}</style></head>\
         <body><main><header>{logo}<span>{product}</span></header><h1>{title}</h1>{body}</main>\
         <script nonce=\"{nonce}\">{SCRIPT}</script></body></html>\n",
        style = style(branding),
        body = page.body,
    )
}

fn page(status: u16, title: &str, body: String) -> Page {
    Page { status, title: title.to_owned(), body }
}

fn error_block(error: Option<&str>) -> (u16, String) {
    match error {
        Some(message) => (400, format!("<p class=\"error\" role=\"alert\" id=\"error\">{}</p>", escape_html(message))),
        None => (200, String::new()),
    }
}

/// An email field, refilled with what was typed.
fn email_field(email: &str, autofocus: bool) -> String {
    let autofocus = if autofocus { " autofocus" } else { "" };
    format!(
        "<label for=\"email\">Email address</label>\
         <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"email\" required maxlength=\"254\" value=\"{}\"{autofocus}>",
        escape_html(email)
    )
}

/// A new password, its strength hint, and the confirmation.
fn new_password_fields(label: &str, repeat_label: &str) -> String {
    format!(
        "<label for=\"password\">{label}</label>\
     <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required minlength=\"8\" maxlength=\"256\" aria-describedby=\"hint strength\">\
     <p class=\"hint\" id=\"hint\">At least 8 characters. A few unrelated words make a strong password that is easy to remember.</p>\
     <p class=\"hint\" id=\"strength\" aria-live=\"polite\"></p>\
     <label for=\"password_confirmation\">{repeat_label}</label>\
     <input id=\"password_confirmation\" name=\"password_confirmation\" type=\"password\" autocomplete=\"new-password\" required minlength=\"8\" maxlength=\"256\">"
    )
}

fn links(links: &[(String, &str)]) -> String {
    if links.is_empty() {
        return String::new();
    }
    let anchors: Vec<String> = links
        .iter()
        .map(|(href, label)| format!("<a href=\"{}\">{}</a>", escape_html(href), escape_html(label)))
        .collect();
    format!("<p class=\"links\">{}</p>", anchors.join(""))
}

/// `GET /signup`.
pub fn signup_form(form: &FormContext, email: &str, error: Option<&str>) -> Page {
    let (status, error) = error_block(error);
    page(
        status,
        "Create your account",
        format!(
            "{error}<form method=\"post\" action=\"/v1/signup\">{hidden}{email}{password}\
             <button type=\"submit\">Create account</button></form>{links}",
            hidden = form.hidden_fields(),
            email = email_field(email, true),
            password = new_password_fields("Password", "Repeat the password"),
            links = links(&[(format!("/login{}", form.query()), "I already have an account")]),
        ),
    )
}

/// `GET /login`.
pub fn login_form(form: &FormContext, email: &str, error: Option<&str>) -> Page {
    let (status, error) = error_block(error);
    page(
        status,
        "Sign in",
        format!(
            "{error}<form method=\"post\" action=\"/v1/login\">{hidden}{email}\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required maxlength=\"256\">\
             <button type=\"submit\">Sign in</button></form>{links}",
            hidden = form.hidden_fields(),
            email = email_field(email, email.is_empty()),
            links = links(&[
                (format!("/forgot-password{}", form.query()), "Forgot your password?"),
                (format!("/signup{}", form.query()), "Create an account"),
            ]),
        ),
    )
}

/// `GET /forgot-password`.
pub fn forgot_password_form(form: &FormContext, email: &str, error: Option<&str>) -> Page {
    let (status, error) = error_block(error);
    page(
        status,
        "Reset your password",
        format!(
            "{error}<p>Enter the email address of your account and we will send you a link to choose a new password.</p>\
             <form method=\"post\" action=\"/v1/password/forgot\">{hidden}{email}\
             <button type=\"submit\">Send the link</button></form>{links}",
            hidden = form.hidden_fields(),
            email = email_field(email, true),
            links = links(&[(format!("/login{}", form.query()), "Back to sign in")]),
        ),
    )
}

pub fn missing_token() -> Page {
    page(
        400,
        "This link is incomplete",
        "<p>The link has no token. Open the link from the email again, or copy the whole address into the browser.</p>"
            .to_owned(),
    )
}

/// `GET /verify-email` without a token: the address and the code from the mail.
pub fn verify_code_form(form: &FormContext, email: &str, error: Option<&str>) -> Page {
    let (status, error) = error_block(error);
    page(
        status,
        "Enter your code",
        format!(
            "{error}<p>Enter your email address and the six-digit code from the email we sent you.</p>\
             <form method=\"post\" action=\"/v1/email/verify\">{hidden}{email}\
             <label for=\"code\">Code</label>\
             <input id=\"code\" name=\"code\" type=\"text\" inputmode=\"numeric\" autocomplete=\"one-time-code\" \
             required pattern=\"[0-9 -]{{6,8}}\" maxlength=\"8\" aria-describedby=\"code-hint\">\
             <p class=\"hint\" id=\"code-hint\">Six digits, for example 123 456.</p>\
             <button type=\"submit\">Confirm my email</button></form>",
            hidden = form.hidden_fields(),
            email = email_field(email, email.is_empty()),
        ),
    )
}

/// `GET /verify-email?token=…`: one button that confirms; without a token, the code form.
pub fn verify_email_form(form: &FormContext, token: Option<&str>) -> Page {
    let Some(token) = token.filter(|token| !token.is_empty()) else {
        return verify_code_form(form, "", None);
    };
    page(
        200,
        "Confirm your email",
        format!(
            "<p>Press the button to confirm your email address.</p>\
             <form method=\"post\" action=\"/v1/email/verify\">{hidden}\
             <input type=\"hidden\" name=\"token\" value=\"{token}\">\
             <button type=\"submit\">Confirm my email</button></form>",
            hidden = form.hidden_fields(),
            token = escape_html(token),
        ),
    )
}

/// `GET /reset-password?token=…`: a new password, twice, for the account named (masked:
/// `j•••@example.com`).
pub fn reset_password_form(
    form: &FormContext,
    token: Option<&str>,
    account: Option<&str>,
    error: Option<&str>,
) -> Page {
    let Some(token) = token.filter(|token| !token.is_empty()) else {
        return missing_token();
    };
    let (status, error) = error_block(error);
    let account = match account {
        Some(account) => format!("<p class=\"account\">For the account <strong>{}</strong>.</p>", escape_html(account)),
        None => String::new(),
    };
    page(
        status,
        "Choose a new password",
        format!(
            "{error}{account}<form method=\"post\" action=\"/v1/password/reset\">{hidden}\
             <input type=\"hidden\" name=\"token\" value=\"{token}\">{password}\
             <button type=\"submit\">Set new password</button></form>",
            hidden = form.hidden_fields(),
            token = escape_html(token),
            password = new_password_fields("New password", "Repeat the new password"),
        ),
    )
}

/// A result page, with links onwards (`(href, label)`).
pub fn result(status: u16, title: &str, message: &str, onward: &[(String, &str)]) -> Page {
    page(status, title, format!("<p>{}</p>{}", escape_html(message), links(onward)))
}

/// A mail as the dev mailbox shows it.
#[derive(Debug, Clone)]
pub struct MailboxEntry {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub sent_at: String,
}

/// `GET /dev/mailbox`: the mails the worker "sent" with `MAIL_PROVIDER=log`, newest first,
/// with their links clickable.
pub fn mailbox(entries: &[MailboxEntry]) -> Page {
    let mut body = String::from(
        "<p>Development only: the mails this worker sent with <code>MAIL_PROVIDER=log</code>, newest first. \
         This page does not exist with any other provider.</p>",
    );
    if entries.is_empty() {
        body.push_str("<p>No mail yet.</p>");
    }
    for entry in entries {
        body.push_str(&format!(
            "<article class=\"mail\"><h2>{subject}</h2><p class=\"meta\">To {to} · {sent_at}</p><pre>{text}</pre></article>",
            subject = escape_html(&entry.subject),
            to = escape_html(&entry.to),
            sent_at = escape_html(&entry.sent_at),
            text = linkify(&entry.text),
        ));
    }
    page(200, "Dev mailbox", body)
}

/// Escapes `text` and turns each http(s) URL in it into a link.
fn linkify(text: &str) -> String {
    let mut html = String::with_capacity(text.len());
    for (index, word) in text.split(' ').enumerate() {
        if index > 0 {
            html.push(' ');
        }
        for (line_index, piece) in word.split('\n').enumerate() {
            if line_index > 0 {
                html.push('\n');
            }
            if piece.starts_with("https://") || piece.starts_with("http://") {
                let escaped = escape_html(piece);
                html.push_str(&format!("<a href=\"{escaped}\">{escaped}</a>"));
            } else {
                html.push_str(&escape_html(piece));
            }
        }
    }
    html
}

/// The consent page (API.md v2): the client by name, the scopes in words, allow or deny.
pub fn consent_form(
    form: &FormContext,
    client_name: &str,
    scopes: &[String],
    account: &str,
    destination: &str,
) -> Page {
    let items: String = scopes
        .iter()
        .map(|scope| {
            let words = match scope.as_str() {
                "openid" => "Know who you are (your account's identifier)",
                "email" => "See your email address",
                "offline_access" => "Stay signed in to your account when you are not using it",
                other => other,
            };
            format!("<li data-scope=\"{}\">{}</li>", escape_html(scope), escape_html(words))
        })
        .collect();
    page(
        200,
        "Allow access?",
        format!(
            "<p><strong class=\"client\">{client}</strong> asks to:</p><ul class=\"scopes\">{items}</ul>\
             <p class=\"meta\">Signed in as {account}. Your answer goes back to {destination}.</p>\
             <form method=\"post\" action=\"/oauth/authorize/consent\">{hidden}\
             <button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\
             <button type=\"submit\" name=\"decision\" value=\"deny\" class=\"secondary\">Deny</button></form>",
            client = escape_html(client_name),
            account = escape_html(account),
            destination = escape_html(destination),
            hidden = form.hidden_fields(),
        ),
    )
}

/// RP-Initiated Logout's confirmation (no valid `id_token_hint`): the hidden `fields` carry
/// the request's `client_id`, `post_logout_redirect_uri` and `state`.
pub fn logout_form(form: &FormContext, client_name: Option<&str>, fields: &[(&str, &str)]) -> Page {
    let hidden: String = fields
        .iter()
        .map(|(name, value)| {
            format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", escape_html(name), escape_html(value))
        })
        .collect();
    let from = match client_name {
        Some(name) => format!("<p><strong class=\"client\">{}</strong> asks to sign you out.</p>", escape_html(name)),
        None => String::new(),
    };
    page(
        200,
        "Sign out?",
        format!(
            "{from}<p>Do you want to sign out of your account on this device?</p>\
             <form method=\"post\" action=\"/oauth/end-session\">{csrf}{hidden}\
             <button type=\"submit\" name=\"decision\" value=\"logout\">Sign out</button></form>",
            csrf = form.hidden_fields(),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linkify_escapes_and_links_urls_only() {
        assert_eq!(
            linkify("Open\nhttps://x.test/a?token=1&b=2 <now>"),
            "Open\n<a href=\"https://x.test/a?token=1&amp;b=2\">https://x.test/a?token=1&amp;b=2</a> &lt;now&gt;"
        );
        assert_eq!(linkify("javascript:alert(1)"), "javascript:alert(1)");
    }
}
