//! The browser side of the API: the hosted pages (GET) and the form posts they make, answered
//! with pages instead of JSON. Every form post is checked twice for cross-site forgery (same
//! origin by `Sec-Fetch-Site`/`Origin`, and the signed double-submit token of `domain::csrf`);
//! every `redirect_to` is checked against `REDIRECT_ALLOWLIST`; errors are put in words.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::api::error::ApiError;
use crate::api::pages::{self, FormContext, Page};
use crate::api::request::Fields;
use crate::api::{ApiRequest, ApiResponse};
use crate::domain::csrf::{self, CsrfKey};
use crate::domain::interaction;
use crate::domain::redirect;
use crate::flows::{authorize, login, password_reset, signup, verify_email, Context, Internal};
use crate::ports::{Crypto, Database, HttpClient};
use crate::store;

/// Which page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    Signup,
    Login,
    ForgotPassword,
    VerifyEmail,
    ResetPassword,
}

/// Which form was posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormKind {
    Signup,
    Login,
    ForgotPassword,
    VerifyEmail,
    ResetPassword,
}

impl FormKind {
    /// The page the form lives on, to send a person back to.
    fn page_path(self) -> &'static str {
        match self {
            FormKind::Signup => "/signup",
            FormKind::Login => "/login",
            FormKind::ForgotPassword => "/forgot-password",
            FormKind::VerifyEmail => "/verify-email",
            FormKind::ResetPassword => "/reset-password",
        }
    }
}

/// A page response: the per-response script nonce in the CSP, and the CSRF cookie when the
/// page has a form.
pub(crate) struct Rendered {
    pub(crate) page: Page,
    pub(crate) csrf_cookie: Option<String>,
    pub(crate) retry_after_seconds: Option<i64>,
}

fn respond<D: Database, E: Crypto, H: HttpClient>(ctx: &Context<'_, D, E, H>, rendered: Rendered) -> ApiResponse {
    respond_with(ctx, rendered, &[])
}

/// [`respond`], where the page's form may end at `form_targets` (a client's redirect URI).
pub(crate) fn respond_with<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    rendered: Rendered,
    form_targets: &[String],
) -> ApiResponse {
    let mut nonce_bytes = [0u8; 16];
    if ctx.crypto.fill(&mut nonce_bytes).is_err() {
        return ApiError::server_error(&"no randomness for a script nonce").into();
    }
    let nonce = URL_SAFE_NO_PAD.encode(nonce_bytes);
    let html = pages::render(&rendered.page, &ctx.config.branding, &nonce);
    let mut response = ApiResponse::new(rendered.page.status, "text/html; charset=utf-8", html.into_bytes())
        .with_header("Cache-Control", "no-store")
        .with_header("Content-Security-Policy", pages::content_security_policy(ctx.config, &nonce, form_targets))
        .with_header("X-Frame-Options", "DENY")
        .with_header("Cross-Origin-Opener-Policy", "same-origin");
    if let Some(cookie) = rendered.csrf_cookie {
        response = response.with_header("Set-Cookie", csrf::set_cookie(&cookie, secure(ctx)));
    }
    if let Some(seconds) = rendered.retry_after_seconds {
        response = response.with_header("Retry-After", seconds.to_string());
    }
    response
}

/// The SSO cookie's name: with `__Host-` over HTTPS, so no subdomain can plant one.
fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-edgeid-session"
    } else {
        "edgeid-session"
    }
}

/// The browser (SSO) session cookie's value, if the browser sent one.
pub(crate) fn session_cookie<'r, D, E, H>(ctx: &Context<'_, D, E, H>, request: &'r ApiRequest) -> Option<&'r str> {
    let name = session_cookie_name(secure(ctx));
    request
        .header("cookie")?
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(candidate, _)| *candidate == name)
        .map(|(_, value)| value)
}

/// `Set-Cookie` for a new browser session: HttpOnly, SameSite=Lax, as long as the session.
pub(crate) fn set_session_cookie<D, E, H>(ctx: &Context<'_, D, E, H>, value: &str) -> String {
    let secure_attribute = if secure(ctx) { "; Secure" } else { "" };
    format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure_attribute}",
        session_cookie_name(secure(ctx)),
        ctx.config.session_absolute_ttl_seconds
    )
}

/// `Set-Cookie` that removes the browser session cookie (a logout).
pub(crate) fn clear_session_cookie<D, E, H>(ctx: &Context<'_, D, E, H>) -> String {
    let secure_attribute = if secure(ctx) { "; Secure" } else { "" };
    format!("{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure_attribute}", session_cookie_name(secure(ctx)))
}

/// Whether the pages are served over HTTPS (the cookie is then `Secure` and `__Host-`).
pub(crate) fn secure<D, E, H>(ctx: &Context<'_, D, E, H>) -> bool {
    ctx.config.public_url.starts_with("https://")
}

fn csrf_key<D, E, H>(ctx: &Context<'_, D, E, H>) -> CsrfKey {
    CsrfKey::derive(&ctx.config.key_encryption_key.0)
}

/// The browser's CSRF cookie, or a new one.
pub(crate) fn csrf_cookie<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    request: &ApiRequest,
) -> Result<String, Internal> {
    match csrf::cookie_value(request.header("cookie"), secure(ctx)) {
        Some(value) => Ok(value.to_owned()),
        None => Ok(csrf::new_cookie_value(ctx.crypto)?),
    }
}

/// A form context for this browser: its cookie's token, and the checked destination.
pub(crate) fn form_context<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    cookie: &str,
    redirect_to: Option<String>,
) -> FormContext {
    FormContext { csrf_token: csrf_key(ctx).form_token(cookie), redirect_to, interaction: None }
}

/// `redirect_to` from a query or a form: absent, allowed, or refused.
enum Destination {
    None,
    Allowed(String),
    Refused,
}

fn destination<D, E, H>(ctx: &Context<'_, D, E, H>, raw: Option<&str>) -> Destination {
    match raw.filter(|raw| !raw.is_empty()) {
        None => Destination::None,
        Some(raw) => match redirect::check(&ctx.config.redirect_allowlist, raw) {
            Some(url) => Destination::Allowed(url.to_string()),
            None => {
                log::info!("redirect refused: {raw:?} is not on REDIRECT_ALLOWLIST");
                Destination::Refused
            }
        },
    }
}

/// An authorization's login or consent page that outlived its interaction (or was altered).
pub(crate) fn expired_interaction() -> Page {
    pages::result(
        400,
        "This sign-in has expired",
        "It was started too long ago, or the page was changed. Go back to the app and sign in again from there.",
        &[],
    )
}

fn refused_destination() -> Page {
    pages::result(
        400,
        "This link goes somewhere we don't know",
        "It asks to send you to an address that is not on this site's list of trusted destinations, so we \
         stopped here. Go back to the app and start again from there.",
        &[],
    )
}

/// `GET` of a hosted page.
pub async fn page<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    request: &ApiRequest,
    kind: PageKind,
) -> ApiResponse {
    let redirect_to = match destination(ctx, request.query_param("redirect_to").as_deref()) {
        Destination::None => None,
        Destination::Allowed(url) => Some(url),
        Destination::Refused => {
            return respond(ctx, Rendered { page: refused_destination(), csrf_cookie: None, retry_after_seconds: None })
        }
    };
    let cookie = match csrf_cookie(ctx, request) {
        Ok(cookie) => cookie,
        Err(err) => return ApiError::from(err).into(),
    };
    let mut form = form_context(ctx, &cookie, redirect_to);
    let token = request.query_param("token");
    let page = match kind {
        PageKind::Signup => pages::signup_form(&form, "", None),
        PageKind::Login => {
            // Signing in for an authorization request: the form carries it, the email is
            // prefilled from `login_hint`, and the form may end at the client's redirect URI.
            let sealed = request.query_param(interaction::FIELD).filter(|sealed| !sealed.is_empty());
            let Some(sealed) = sealed else {
                let page = pages::login_form(&form, "", None);
                return respond(ctx, Rendered { page, csrf_cookie: Some(cookie), retry_after_seconds: None });
            };
            let Some(opened) = authorize::open_interaction(ctx, &sealed) else {
                return respond(
                    ctx,
                    Rendered { page: expired_interaction(), csrf_cookie: None, retry_after_seconds: None },
                );
            };
            let parameters = opened.parameters();
            let hint = parameters.get("login_hint").unwrap_or_default().to_owned();
            let targets: Vec<String> = parameters.get("redirect_uri").map(str::to_owned).into_iter().collect();
            form.interaction = Some(sealed);
            let page = pages::login_form(&form, &hint, None);
            return respond_with(
                ctx,
                Rendered { page, csrf_cookie: Some(cookie), retry_after_seconds: None },
                &targets,
            );
        }
        PageKind::ForgotPassword => pages::forgot_password_form(&form, "", None),
        PageKind::VerifyEmail => pages::verify_email_form(&form, token.as_deref()),
        PageKind::ResetPassword => match token.as_deref().filter(|token| !token.is_empty()) {
            // The page names the account it resets (masked), so a person who opened somebody
            // else's link, or an old one, sees it before choosing a password. A read only: a
            // GET never consumes the token.
            Some(token) => match reset_account(ctx, token).await {
                Ok(Some(account)) => pages::reset_password_form(&form, Some(token), Some(&account), None),
                Ok(None) => pages::result(
                    400,
                    "This link does not work",
                    "This password reset link is invalid, has expired or was already used. Ask for a new one.",
                    &[(format!("/forgot-password{}", query(&form.redirect_to)), "Forgot password")],
                ),
                Err(err) => return ApiError::from(err).into(),
            },
            None => pages::reset_password_form(&form, None, None, None),
        },
    };
    respond(ctx, Rendered { page, csrf_cookie: Some(cookie), retry_after_seconds: None })
}

/// The masked address (`j•••@example.com`) of the account a live reset link resets.
async fn reset_account<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    token: &str,
) -> Result<Option<String>, Internal> {
    let Ok((bucket, hash)) = crate::domain::opaque_token::TokenHash::routed(token) else { return Ok(None) };
    let owner = store::live_token_owner(&ctx.users(bucket), &hash, store::Purpose::ResetPassword, ctx.now).await?;
    Ok(owner
        .map(|(_, email)| crate::domain::email::Email::parse(&email).map_or_else(|_| email.clone(), |e| e.masked())))
}

/// Whether a form post comes from one of our own pages: the browser says so (`Sec-Fetch-Site`,
/// `Origin`), and it brings the CSRF token of its cookie.
pub(crate) fn same_site_form<D, E, H>(
    ctx: &Context<'_, D, E, H>,
    request: &ApiRequest,
    fields: &Fields,
) -> Result<(), String> {
    if let Some(site) = request.header("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return Err(format!("Sec-Fetch-Site is {site:?}"));
        }
    }
    // The pages are served at PUBLIC_URL (the links in mails) or at ISSUER. Browsers send
    // `Origin: null` for posts from a page with `Referrer-Policy: no-referrer` (ours): that
    // says nothing, and Sec-Fetch-Site and the token decide.
    if let Some(origin) = request.header("origin").filter(|origin| *origin != "null") {
        let ours = [&ctx.config.public_url, &ctx.config.issuer].into_iter().any(|url| origin_of(url) == origin);
        if !ours {
            return Err(format!("Origin {origin:?} is another site"));
        }
    }
    let cookie = csrf::cookie_value(request.header("cookie"), secure(ctx)).ok_or("no CSRF cookie")?;
    let presented = fields.optional(csrf::FIELD).ok().flatten().ok_or("no CSRF token")?;
    // A form opened before a key-encryption-key rotation still carries the old key's token.
    let previous = ctx.config.key_encryption_key_previous.as_ref().map(|previous| CsrfKey::derive(&previous.0));
    if csrf_key(ctx).verify(cookie, presented) || previous.is_some_and(|previous| previous.verify(cookie, presented)) {
        Ok(())
    } else {
        Err("CSRF token does not match the cookie".to_owned())
    }
}

/// `scheme://host[:port]` of one of our configured base URLs.
fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or_default()),
        None => String::new(),
    }
}

/// A form post from a browser (form-encoded, `Accept: text/html`).
pub async fn submit<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    request: &ApiRequest,
    kind: FormKind,
    fields: &Fields,
) -> ApiResponse {
    let rendered = match same_site_form(ctx, request, fields) {
        Ok(()) => submit_checked(ctx, request, kind, fields).await,
        Err(reason) => {
            log::info!("form post refused: {reason}");
            let page = pages::result(
                400,
                "This form has expired",
                "For your safety we only accept this form from a page we have just shown you. Go back, reload the \
                 page and try again.",
                &[(kind.page_path().to_owned(), "Start again")],
            );
            Ok(Rendered { page, csrf_cookie: None, retry_after_seconds: None }.into())
        }
    };
    match rendered {
        Ok(Outcome::Page(rendered)) => respond_with(ctx, rendered, &interaction_targets(ctx, kind, fields)),
        Ok(Outcome::SignedIn { location, session_cookie }) => {
            redirect(&location).with_header("Set-Cookie", set_session_cookie(ctx, &session_cookie))
        }
        Ok(Outcome::SignedInPage { page, session_cookie }) => {
            respond(ctx, Rendered { page, csrf_cookie: None, retry_after_seconds: None })
                .with_header("Set-Cookie", set_session_cookie(ctx, &session_cookie))
        }
        Err(err) => ApiError::from(err).into(),
    }
}

/// Where a login form shown again (after a wrong password) may end: the redirect URI of the
/// authorization request it signs in for, as on its first showing.
fn interaction_targets<D, E, H>(ctx: &Context<'_, D, E, H>, kind: FormKind, fields: &Fields) -> Vec<String> {
    if kind != FormKind::Login {
        return Vec::new();
    }
    let sealed = fields.optional(interaction::FIELD).ok().flatten().unwrap_or_default();
    authorize::open_interaction(ctx, sealed)
        .and_then(|opened| opened.parameters().get("redirect_uri").map(str::to_owned))
        .into_iter()
        .collect()
}

enum Outcome {
    Page(Rendered),
    /// `303` that also starts a browser session (`Set-Cookie`).
    SignedIn {
        location: String,
        session_cookie: String,
    },
    /// A page that also starts a browser session.
    SignedInPage {
        page: Page,
        session_cookie: String,
    },
}

impl From<Rendered> for Outcome {
    fn from(rendered: Rendered) -> Outcome {
        Outcome::Page(rendered)
    }
}

/// `303 See Other`: after a successful post, the browser GETs the destination.
pub(crate) fn redirect(location: &str) -> ApiResponse {
    let mut response = ApiResponse::new(303, "text/plain; charset=utf-8", Vec::new())
        .with_header("Location", location.to_owned())
        .with_header("Cache-Control", "no-store");
    response.headers.retain(|(name, _)| name != "Content-Type");
    response
}

/// The error in words a person understands, and what the page should answer with.
fn in_words(err: &ApiError) -> String {
    match err.code {
        "invalid_credentials" => "The email address or the password is not right. Check both and try again.".to_owned(),
        "email_not_verified" => {
            "Your email address is not confirmed yet. Open the link in the email we sent you, then sign in.".to_owned()
        }
        "rate_limited" => {
            let minutes = (err.retry_after_seconds.unwrap_or(60) + 59) / 60;
            format!(
                "Too many attempts. For your account's safety, please wait {minutes} minute{} and try again.",
                if minutes == 1 { "" } else { "s" }
            )
        }
        "weak_password" => sentence(&err.description),
        "invalid_token" => "This link has expired or was already used. Ask for a new one.".to_owned(),
        "invalid_request" if err.description.contains("email") => {
            "That does not look like an email address. Check it and try again.".to_owned()
        }
        "invalid_request" => sentence(&err.description),
        _ => "Something went wrong on our side. Please try again in a moment.".to_owned(),
    }
}

/// `the two passwords are not the same` → `The two passwords are not the same.`
fn sentence(description: &str) -> String {
    let mut chars = description.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str().trim_end_matches('.')),
        None => String::new(),
    }
}

async fn submit_checked<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    request: &ApiRequest,
    kind: FormKind,
    fields: &Fields,
) -> Result<Outcome, Internal> {
    let redirect_to = match destination(ctx, fields.optional("redirect_to").ok().flatten()) {
        Destination::None => None,
        Destination::Allowed(url) => Some(url),
        Destination::Refused => {
            return Ok(Rendered { page: refused_destination(), csrf_cookie: None, retry_after_seconds: None }.into())
        }
    };
    let cookie = csrf_cookie(ctx, request)?;
    let form = form_context(ctx, &cookie, redirect_to.clone());
    let field = |name: &str| fields.optional(name).ok().flatten().unwrap_or_default();
    let email = field("email");
    let onward = |label: &'static str| -> Vec<(String, &'static str)> {
        let mut links = vec![(format!("/login{}", query(&redirect_to)), label)];
        if let Some(app) = ctx.config.redirect_allowlist.first() {
            links.push((app.as_str().to_owned(), "Back to the app"));
        }
        links
    };
    // A failed form comes back with the error; an expired link ends on a result page.
    let again = |page: Page, err: &ApiError| -> Outcome {
        let page = Page { status: err.status, ..page };
        Rendered { page, csrf_cookie: Some(cookie.clone()), retry_after_seconds: err.retry_after_seconds }.into()
    };
    let done = |page: Page| -> Outcome { Rendered { page, csrf_cookie: None, retry_after_seconds: None }.into() };
    Ok(match kind {
        FormKind::Signup => {
            let result = match fields.new_password() {
                Ok(password) => signup::signup(ctx, email, password).await.map_err(ApiError::from),
                Err(err) => Err(err),
            };
            match result {
                Ok(()) => done(pages::result(
                    202,
                    "Check your email",
                    &format!(
                        "If {email} can receive mail, a message with a link to confirm it is on its way. The link works for 24 hours."
                    ),
                    &onward("Go to sign in"),
                )),
                Err(err) => again(pages::signup_form(&form, email, Some(&in_words(&err))), &err),
            }
        }
        FormKind::Login => {
            // An authorization request this sign-in is for, checked before the password is.
            let sealed = fields.optional(interaction::FIELD).ok().flatten().filter(|sealed| !sealed.is_empty());
            let interaction = match sealed {
                None => None,
                Some(sealed) => match authorize::open_interaction(ctx, sealed) {
                    Some(opened) => Some(opened),
                    None => return Ok(done(expired_interaction())),
                },
            };
            let form = FormContext { interaction: sealed.map(str::to_owned), ..form.clone() };
            match login::sign_in_browser(ctx, email, field("password")).await.map_err(ApiError::from) {
                // Back to the authorization request, which now names this session as signed in
                // for it: it goes on to consent or the code, whatever it asked of the login.
                Ok(signed_in) => match interaction {
                    Some(mut interaction) => {
                        interaction.signed_in = Some(signed_in.session_id);
                        let sealed = authorize::interaction_key(ctx).seal(&interaction);
                        let query = form_urlencoded::Serializer::new(String::new())
                            .append_pair(interaction::FIELD, &sealed)
                            .finish();
                        Outcome::SignedIn {
                            location: format!("/oauth/authorize/resume?{query}"),
                            session_cookie: signed_in.cookie,
                        }
                    }
                    // The hosted login alone: signed in here (SSO for the apps that send the
                    // browser through /oauth/authorize), and back to the app when it said where.
                    None => match &redirect_to {
                        Some(destination) => {
                            Outcome::SignedIn { location: destination.clone(), session_cookie: signed_in.cookie }
                        }
                        None => Outcome::SignedInPage {
                            page: pages::result(
                                200,
                                "You are signed in",
                                "Your email and password are right. You can close this page and return to the app.",
                                &[],
                            ),
                            session_cookie: signed_in.cookie,
                        },
                    },
                },
                Err(err) => again(pages::login_form(&form, email, Some(&in_words(&err))), &err),
            }
        }
        FormKind::ForgotPassword => match password_reset::forgot_password(ctx, email).await.map_err(ApiError::from) {
            Ok(()) => done(pages::result(
                202,
                "Check your email",
                &format!(
                    "If {email} belongs to an account, a message with a link to choose a new password is on its way. \
                     The link works for one hour."
                ),
                &onward("Back to sign in"),
            )),
            Err(err) => again(pages::forgot_password_form(&form, email, Some(&in_words(&err))), &err),
        },
        FormKind::VerifyEmail => {
            let by_code = fields.optional("code").ok().flatten();
            let result = match by_code {
                Some(code) => verify_email::verify_email_with_code(ctx, email, code).await,
                None => verify_email::verify_email(ctx, field("token")).await,
            };
            match (result.map_err(ApiError::from), by_code) {
                // Confirming does not sign anyone in: the person must prove the password too. If
                // somebody else signed up with this address, their password does not work for
                // the owner, who then resets it (which ends every session of the account).
                (Ok(()), _) => done(pages::result(
                    200,
                    "Email confirmed",
                    "Your email address is confirmed. Sign in with the password you chose when you signed up. \
                     If you did not sign up yourself, or that password does not work, choose a new one with \
                     \"Forgot password\": it signs out everybody else.",
                    &[onward("Sign in"), vec![(format!("/forgot-password{}", query(&redirect_to)), "Forgot password")]]
                        .concat(),
                )),
                (Err(err), Some(_)) if err.status < 500 => {
                    let words = match err.code {
                        "invalid_token" => {
                            "That code is not right, or it has expired. Check the newest email and try again."
                                .to_owned()
                        }
                        _ => in_words(&err),
                    };
                    again(pages::verify_code_form(&form, email, Some(&words)), &err)
                }
                (Err(err), _) => {
                    again(pages::result(err.status, "This link does not work", &in_words(&err), &[]), &err)
                }
            }
        }
        FormKind::ResetPassword => {
            let token = field("token");
            let result = crate::api::reset_password(ctx, fields).await;
            match result {
                Ok(()) => done(pages::result(
                    200,
                    "Password changed",
                    "Your new password is set and every other session has been signed out. You can sign in now.",
                    &onward("Sign in"),
                )),
                // The form can be fixed and sent again: the token was not used.
                Err(err) if err.code != "invalid_token" && err.status < 500 => {
                    let account = reset_account(ctx, token).await?;
                    again(
                        pages::reset_password_form(&form, Some(token), account.as_deref(), Some(&in_words(&err))),
                        &err,
                    )
                }
                Err(err) => again(pages::result(err.status, "This link does not work", &in_words(&err), &[]), &err),
            }
        }
    })
}

fn query(redirect_to: &Option<String>) -> String {
    match redirect_to {
        Some(url) => {
            format!("?{}", form_urlencoded::Serializer::new(String::new()).append_pair("redirect_to", url).finish())
        }
        None => String::new(),
    }
}

/// `GET /dev/mailbox`: only with `MAIL_PROVIDER=log`.
pub async fn mailbox<D: Database, E: Crypto, H: HttpClient>(ctx: &Context<'_, D, E, H>) -> ApiResponse {
    match store::list_dev_mailbox(ctx.db, 50).await {
        Ok(entries) => {
            respond(ctx, Rendered { page: pages::mailbox(&entries), csrf_cookie: None, retry_after_seconds: None })
        }
        Err(err) => ApiError::server_error(&err).into(),
    }
}
