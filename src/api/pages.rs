//! The HTML pages behind the links in emails. They work without JavaScript: each is a form that
//! POSTs to the JSON API (form-encoded), which answers a browser with a result page. A GET never
//! consumes a token, so mail scanners that prefetch links change nothing.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::mail::escape_html;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#1a1a1a}\
h1{font-size:1.4rem}label{display:block;margin:1rem 0 .25rem;font-weight:600}\
input{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}\
button{margin-top:1.25rem;padding:.6rem 1.2rem;font-size:1rem;background:#1f4fd1;color:#fff;border:0;border-radius:.3rem;cursor:pointer}\
button:focus,input:focus{outline:3px solid #ffbf47}.error{color:#a30000;font-weight:600}.hint{color:#555;font-size:.9rem}";

/// An HTML page with its Content-Security-Policy: nothing loads, nothing frames it, and forms
/// only post back to this origin. The one inline stylesheet is allowed by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: u16,
    pub html: String,
}

impl Page {
    pub fn content_security_policy() -> String {
        let style_hash = STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
        format!(
            "default-src 'none'; style-src 'sha256-{style_hash}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
    }
}

fn page(status: u16, title: &str, body: &str) -> Page {
    let title = escape_html(title);
    Page {
        status,
        html: format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
             <meta name=\"robots\" content=\"noindex\"><title>{title}</title><style>{STYLE}</style></head>\
             <body><main><h1>{title}</h1>{body}</main></body></html>\n"
        ),
    }
}

fn missing_token() -> Page {
    page(
        400,
        "This link is incomplete",
        "<p>The link has no token. Open the link from the email again, or copy the whole address into the browser.</p>",
    )
}

/// `GET /verify-email?token=…`: one button that confirms.
pub fn verify_email_form(token: Option<&str>) -> Page {
    let Some(token) = token.filter(|token| !token.is_empty()) else {
        return missing_token();
    };
    let token = escape_html(token);
    page(
        200,
        "Confirm your email",
        &format!(
            "<p>Press the button to confirm your email address.</p>\
             <form method=\"post\" action=\"/v1/email/verify\">\
             <input type=\"hidden\" name=\"token\" value=\"{token}\">\
             <button type=\"submit\">Confirm my email</button></form>"
        ),
    )
}

/// `GET /reset-password?token=…`: a new password, twice.
pub fn reset_password_form(token: Option<&str>, error: Option<&str>) -> Page {
    let Some(token) = token.filter(|token| !token.is_empty()) else {
        return missing_token();
    };
    let token = escape_html(token);
    let (status, error) = match error {
        Some(message) => (400, format!("<p class=\"error\" role=\"alert\" id=\"error\">{}</p>", escape_html(message))),
        None => (200, String::new()),
    };
    page(
        status,
        "Choose a new password",
        &format!(
            "{error}<form method=\"post\" action=\"/v1/password/reset\">\
             <input type=\"hidden\" name=\"token\" value=\"{token}\">\
             <label for=\"password\">New password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required minlength=\"8\" aria-describedby=\"hint\">\
             <p class=\"hint\" id=\"hint\">At least 8 characters. A few unrelated words make a strong password.</p>\
             <label for=\"password_confirmation\">Repeat the new password</label>\
             <input id=\"password_confirmation\" name=\"password_confirmation\" type=\"password\" autocomplete=\"new-password\" required minlength=\"8\">\
             <button type=\"submit\">Set new password</button></form>"
        ),
    )
}

/// The page a browser sees after posting one of the forms above.
pub fn result(status: u16, title: &str, message: &str) -> Page {
    page(status, title, &format!("<p>{}</p>", escape_html(message)))
}
