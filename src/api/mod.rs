//! HTTP: routing, request parsing and responses, independent of the Workers runtime.
//! `handle(ctx, request)` is the whole API; the adapter converts to and from `worker` types,
//! and replays the responses `handle` marks as unchanged for a while (`same_until_ms`).

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::{is_loopback_host, MailProvider};
use crate::domain::documents::openid_configuration;
use crate::domain::signing::{PublicDocuments, SigningKeys};
use crate::flows::{login, password_reset, session, signup, verify_email, Context};
use crate::ports::{Crypto, Database, HttpClient};
use crate::store;

pub mod browser;
pub mod error;
pub mod head;
pub mod oauth;
pub mod operator;
pub mod pages;
pub mod request;

use browser::{FormKind, PageKind};
use error::ApiError;
pub use head::parse_head;
use request::{parse_body, BodyFormat, Fields};

/// An incoming request. Header names are matched case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct ApiRequest {
    pub method: String,
    /// `host[:port]` of the URL the request was made to.
    pub host: String,
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Every request header the API reads, lower-case. The adapter copies only these into an
/// [`ApiRequest`] (reading each costs a call across the wasm boundary); reading any other is a
/// bug that debug builds, and so the tests, catch.
pub const REQUEST_HEADERS: &[&str] = &[
    "accept",
    "accept-language",
    "authorization",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "content-length",
    "content-type",
    "cookie",
    "if-none-match",
    "origin",
    "sec-fetch-site",
];

impl ApiRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        debug_assert!(REQUEST_HEADERS.contains(&name), "the API reads header {name:?}: add it to REQUEST_HEADERS");
        self.headers.iter().find(|(candidate, _)| candidate.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(candidate, _)| candidate == name)
            .map(|(_, value)| value.into_owned())
    }

    /// The client's address as Cloudflare's edge saw it. Cloudflare sets `CF-Connecting-IP` on
    /// every request and overwrites whatever a client sent, so it cannot be spoofed there. With
    /// "Pseudo IPv4" set to overwrite headers, it holds a made-up address from 240.0.0.0/4
    /// (class E, never a real client) for an IPv6 client, whose real address is then in
    /// `CF-Connecting-IPv6`. That header is read only in that case: elsewhere nothing promises
    /// that a client's own copy is removed, and a header the client chooses would let it pick
    /// a new /48 for every request.
    pub fn client_ip(&self) -> Option<&str> {
        let connecting = self.header("cf-connecting-ip").map(str::trim).filter(|ip| !ip.is_empty());
        let pseudo_ipv4 = connecting
            .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
            .is_some_and(|ip| ip.octets()[0] >= 240 && !ip.is_broadcast());
        match pseudo_ipv4 {
            true => self.header("cf-connecting-ipv6").map(str::trim).filter(|ip| !ip.is_empty()).or(connecting),
            false => connecting,
        }
    }

    /// Whether the request was made on this machine: to a loopback host, and from a loopback
    /// peer. In production Cloudflare always sets the peer (`CF-Connecting-IP`); locally
    /// (`wrangler dev`) it is absent or this machine. Development-only features need both, so
    /// neither a forged `Host` nor a deployment that kept the development defaults opens them.
    pub fn made_on_this_machine(&self) -> bool {
        let is_loopback = |ip: &str| {
            ip.trim().parse::<std::net::IpAddr>().is_ok_and(|ip| match ip {
                std::net::IpAddr::V4(v4) => v4.is_loopback(),
                std::net::IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
            })
        };
        // Every peer header present must name this machine, whichever one budgets would read.
        let peers_are_local =
            ["cf-connecting-ip", "cf-connecting-ipv6"].iter().all(|name| self.header(name).is_none_or(is_loopback));
        peers_are_local && is_loopback_host(&self.host)
    }

    /// A browser that submitted one of our HTML forms and expects a page back.
    fn wants_html(&self, fields: &Fields) -> bool {
        fields.format == BodyFormat::Form && self.header("accept").is_some_and(|accept| accept.contains("text/html"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// For a response to a GET that every GET of the same host and path would get, byte for
    /// byte, until this instant (Unix milliseconds, exclusive), whatever its query and headers
    /// other than `If-None-Match`: the adapter may answer those from memory until then (the
    /// JWKS and discovery documents, which read neither).
    pub same_until_ms: Option<i64>,
}

impl ApiResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(candidate, _)| candidate.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    pub(crate) fn new(status: u16, content_type: &str, body: Vec<u8>) -> ApiResponse {
        ApiResponse {
            status,
            headers: vec![
                ("Content-Type".to_owned(), content_type.to_owned()),
                ("X-Content-Type-Options".to_owned(), "nosniff".to_owned()),
                ("Referrer-Policy".to_owned(), "no-referrer".to_owned()),
                // Ignored over plain HTTP (local development); over HTTPS, browsers never
                // downgrade to HTTP for this host again.
                ("Strict-Transport-Security".to_owned(), "max-age=31536000".to_owned()),
            ],
            body,
            same_until_ms: None,
        }
    }

    pub(crate) fn with_header(mut self, name: &str, value: impl Into<String>) -> ApiResponse {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// A JSON response that no cache may keep (every account endpoint, every token).
    pub(crate) fn private_json(status: u16, body: &Value) -> ApiResponse {
        ApiResponse::new(status, "application/json", body.to_string().into_bytes())
            .with_header("Cache-Control", "no-store")
    }

    fn status(status: u16, value: &str) -> ApiResponse {
        ApiResponse::private_json(status, &json!({ "status": value }))
    }

    /// A public document that caches may keep for `max_age` seconds, revalidated by its ETag
    /// ([`etag_of`] its body).
    fn public_json(request: &ApiRequest, body: &str, etag: &str, max_age: i64) -> ApiResponse {
        let matches = request.header("if-none-match").is_some_and(|candidates| {
            candidates.split(',').any(|candidate| {
                let candidate = candidate.trim();
                candidate == "*" || candidate.trim_start_matches("W/") == etag
            })
        });
        let (status, body) = if matches { (304, Vec::new()) } else { (200, body.as_bytes().to_vec()) };
        ApiResponse::new(status, "application/json", body)
            .with_header("Cache-Control", format!("public, max-age={max_age}"))
            .with_header("ETag", etag.to_owned())
            .with_header("Access-Control-Allow-Origin", "*")
    }

    /// Marks a document made from the signing keys alone (and the configuration, which an
    /// isolate never sees change) as unchanged while the keys are (`until`, Unix seconds, from
    /// `Context::signing_keys_and_until`). Only a full answer: a 304 depends on the request's
    /// `If-None-Match`.
    fn same_until(mut self, until: Option<i64>) -> ApiResponse {
        if self.status == 200 {
            self.same_until_ms = until.map(|seconds| seconds * 1000);
        }
        self
    }
}

impl From<ApiError> for ApiResponse {
    fn from(err: ApiError) -> ApiResponse {
        let description = crate::domain::authorization::error_description(&err.description);
        let response =
            ApiResponse::private_json(err.status, &json!({ "error": err.code, "error_description": description }));
        let response = match err.challenge {
            Some(challenge) => response.with_header("WWW-Authenticate", challenge),
            None => response,
        };
        match err.retry_after_seconds {
            Some(seconds) => response.with_header("Retry-After", seconds.to_string()),
            None => response,
        }
    }
}

/// The token response of API.md §Tokens (RFC 6749 §5.1): `id_token` with `openid`,
/// `refresh_token` with `offline_access`.
pub(crate) fn token_response(tokens: &login::LoginTokens) -> ApiResponse {
    /// RFC 6749 §5.1's members, written straight from the tokens (the members in the order a
    /// `serde_json::Value` would write them).
    #[derive(serde::Serialize)]
    struct TokenResponse<'a> {
        access_token: &'a str,
        expires_in: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        id_token: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        refresh_token: Option<&'a str>,
        scope: &'a str,
        token_type: &'static str,
    }
    let body = TokenResponse {
        access_token: &tokens.access_token,
        expires_in: tokens.expires_in,
        id_token: tokens.id_token.as_deref(),
        refresh_token: tokens.refresh_token.as_deref(),
        scope: &tokens.scope,
        token_type: "Bearer",
    };
    // Strings and integers only: writing them cannot fail.
    let body = serde_json::to_vec(&body).unwrap_or_default();
    ApiResponse::new(200, "application/json", body)
        .with_header("Cache-Control", "no-store")
        .with_header("Pragma", "no-cache")
}

/// A strong ETag: the first 128 bits of the body's SHA-256.
fn etag_of(body: &str) -> String {
    format!("\"{}\"", base16ct::lower::encode_string(&Sha256::digest(body.as_bytes())[..16]))
}

/// The JWKS and discovery documents of a key set with their ETags, made once per key set.
fn public_documents(config: &crate::config::Config, keys: &SigningKeys) -> PublicDocuments {
    let discovery = openid_configuration(config, keys.algorithms()).to_string();
    PublicDocuments { jwks_etag: etag_of(keys.jwks_json()), discovery_etag: etag_of(&discovery), discovery }
}

const SECURITY_TXT: &str = include_str!("../../.well-known/security.txt");
/// Where `/.well-known/change-password` sends password managers (W3C "A Well-Known URL for
/// Changing Passwords"): the first line of `.well-known/change-password` that is not a comment.
const CHANGE_PASSWORD: &str = include_str!("../../.well-known/change-password");

fn change_password_location() -> &'static str {
    CHANGE_PASSWORD
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .unwrap_or("/forgot-password")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Discovery,
    Jwks,
    SecurityTxt,
    ChangePassword,
    SignupPage,
    LoginPage,
    ForgotPasswordPage,
    DevMailbox,
    Signup,
    VerifyEmail,
    ResendVerification,
    Login,
    ForgotPassword,
    ResetPassword,
    VerifyEmailPage,
    ResetPasswordPage,
    Token,
    Register,
    Authorize,
    AuthorizeResume,
    AuthorizeConsent,
    EndSession,
    Revoke,
    Logout,
    Userinfo,
    OperatorShards,
}

impl Route {
    fn find(path: &str) -> Option<Route> {
        Some(match path {
            "/healthz" => Route::Health,
            "/.well-known/openid-configuration" | "/.well-known/oauth-authorization-server" => Route::Discovery,
            "/.well-known/jwks.json" => Route::Jwks,
            "/.well-known/security.txt" => Route::SecurityTxt,
            "/.well-known/change-password" => Route::ChangePassword,
            "/signup" => Route::SignupPage,
            "/login" => Route::LoginPage,
            "/forgot-password" => Route::ForgotPasswordPage,
            "/dev/mailbox" => Route::DevMailbox,
            "/v1/signup" => Route::Signup,
            "/v1/email/verify" => Route::VerifyEmail,
            "/v1/email/resend" => Route::ResendVerification,
            "/v1/login" => Route::Login,
            "/v1/password/forgot" => Route::ForgotPassword,
            "/v1/password/reset" => Route::ResetPassword,
            "/verify-email" => Route::VerifyEmailPage,
            "/reset-password" => Route::ResetPasswordPage,
            "/oauth/token" => Route::Token,
            "/oauth/register" => Route::Register,
            "/oauth/authorize" => Route::Authorize,
            "/oauth/authorize/resume" => Route::AuthorizeResume,
            "/oauth/authorize/consent" => Route::AuthorizeConsent,
            "/oauth/end-session" => Route::EndSession,
            "/oauth/revoke" => Route::Revoke,
            "/v1/logout" => Route::Logout,
            "/userinfo" => Route::Userinfo,
            "/operator/shards" => Route::OperatorShards,
            _ => return None,
        })
    }

    /// Whether answering may touch D1 (beyond the isolate's cached key table): the routes the
    /// adapter's flood pre-filter guards, so that a flood cannot saturate the database the exact
    /// budgets live in.
    fn touches_database(self) -> bool {
        !matches!(
            self,
            Route::Discovery
                | Route::Jwks
                | Route::SecurityTxt
                | Route::ChangePassword
                | Route::SignupPage
                | Route::LoginPage
                | Route::ForgotPasswordPage
        )
    }

    /// Whether a `GET` may write (a code, a logout): no `HEAD` there.
    fn writes_on_get(self) -> bool {
        matches!(self, Route::Authorize | Route::AuthorizeResume | Route::EndSession)
    }

    /// The methods a route answers (`HEAD` too wherever a `GET` writes nothing).
    fn methods(self) -> &'static [&'static str] {
        match self {
            Route::Health
            | Route::Discovery
            | Route::Jwks
            | Route::SecurityTxt
            | Route::ChangePassword
            | Route::SignupPage
            | Route::LoginPage
            | Route::ForgotPasswordPage
            | Route::DevMailbox
            | Route::VerifyEmailPage
            | Route::ResetPasswordPage
            | Route::AuthorizeResume => &["GET"],
            // OIDC Core §3.1.2.1, §5.3.1 and RP-Initiated Logout §2: both.
            Route::Authorize | Route::EndSession | Route::Userinfo => &["GET", "POST"],
            // The check reads; a step of the reshard writes.
            Route::OperatorShards => &["GET", "POST"],
            Route::Signup
            | Route::VerifyEmail
            | Route::ResendVerification
            | Route::Login
            | Route::ForgotPassword
            | Route::ResetPassword
            | Route::Token
            | Route::Register
            | Route::AuthorizeConsent
            | Route::Revoke
            | Route::Logout => &["POST"],
        }
    }
}

/// Whether a request to `path` may touch D1 (see `Route::touches_database`); unknown paths
/// do not.
pub fn touches_database(path: &str) -> bool {
    Route::find(path).is_some_and(Route::touches_database)
}

/// The whole HTTP API.
pub async fn handle<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    request: &ApiRequest,
) -> ApiResponse {
    let route = match Route::find(&request.path) {
        // The dev mailbox exists only where mail goes nowhere but the log.
        Some(Route::DevMailbox) if ctx.config.mail.provider != MailProvider::Log => None,
        route => route,
    };
    let Some(route) = route else {
        return ApiError::not_found().into();
    };
    // `log` writes every link to the log and opens the dev mailbox: whatever the configuration
    // says, it answers only requests made to this machine (a deployment that kept the dev
    // defaults fails loudly instead of exposing its users' mail).
    if ctx.config.mail.provider == MailProvider::Log && !request.made_on_this_machine() {
        return ApiError::server_error(&"MAIL_PROVIDER=log answers only requests to this machine").into();
    }
    let methods = route.methods();
    // HEAD only where a GET changes nothing: an authorization issues a code, a logout logs out.
    let head_allowed = methods.contains(&"GET") && !route.writes_on_get();
    let is_head = request.method == "HEAD" && head_allowed;
    if !methods.contains(&request.method.as_str()) && !is_head {
        let mut allowed = methods.to_vec();
        if head_allowed {
            allowed.insert(1, "HEAD");
        }
        let allowed = allowed.join(", ");
        return ApiResponse::from(ApiError::method_not_allowed(&allowed)).with_header("Allow", allowed);
    }
    let mut response = match dispatch(ctx, route, request).await {
        Ok(response) => response,
        Err(err) => err.into(),
    };
    if is_head {
        response.body.clear();
        response.same_until_ms = None;
    }
    response
}

async fn dispatch<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    route: Route,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    Ok(match route {
        Route::Health => {
            store::ping(ctx.db).await.map_err(|err| ApiError::server_error(&err))?;
            // Ready means ready to sign: this bootstraps the first key on a fresh database.
            ctx.signing_keys().await?;
            ApiResponse::status(200, "ok")
        }
        Route::Discovery => {
            let (keys, until) = ctx.signing_keys_and_until().await?;
            let documents = keys.documents(|keys| public_documents(ctx.config, keys));
            ApiResponse::public_json(
                request,
                &documents.discovery,
                &documents.discovery_etag,
                ctx.config.jwks_max_age_seconds(),
            )
            .same_until(until)
        }
        Route::Jwks => {
            let (keys, until) = ctx.signing_keys_and_until().await?;
            let documents = keys.documents(|keys| public_documents(ctx.config, keys));
            ApiResponse::public_json(request, keys.jwks_json(), &documents.jwks_etag, ctx.config.jwks_max_age_seconds())
                .same_until(until)
        }
        Route::SecurityTxt => ApiResponse::new(200, "text/plain; charset=utf-8", SECURITY_TXT.as_bytes().to_vec())
            .with_header("Cache-Control", "public, max-age=86400"),
        Route::ChangePassword => ApiResponse::new(302, "text/plain; charset=utf-8", Vec::new())
            .with_header("Location", change_password_location())
            .with_header("Cache-Control", "public, max-age=86400"),
        Route::SignupPage => browser::page(ctx, request, PageKind::Signup).await,
        Route::LoginPage => browser::page(ctx, request, PageKind::Login).await,
        Route::ForgotPasswordPage => browser::page(ctx, request, PageKind::ForgotPassword).await,
        Route::VerifyEmailPage => browser::page(ctx, request, PageKind::VerifyEmail).await,
        Route::ResetPasswordPage => browser::page(ctx, request, PageKind::ResetPassword).await,
        Route::DevMailbox => browser::mailbox(ctx).await,
        Route::Signup => {
            let fields = parse_body(request)?;
            if request.wants_html(&fields) {
                return Ok(browser::submit(ctx, request, FormKind::Signup, &fields).await);
            }
            signup::signup(ctx, fields.required("email")?, fields.required("password")?).await?;
            ApiResponse::status(202, "verification_email_sent")
        }
        Route::ResendVerification => {
            let fields = parse_body(request)?;
            signup::resend_verification(ctx, fields.required("email")?).await?;
            ApiResponse::status(202, "verification_email_sent")
        }
        Route::ForgotPassword => {
            let fields = parse_body(request)?;
            if request.wants_html(&fields) {
                return Ok(browser::submit(ctx, request, FormKind::ForgotPassword, &fields).await);
            }
            password_reset::forgot_password(ctx, fields.required("email")?).await?;
            ApiResponse::status(202, "reset_email_sent")
        }
        Route::Login => {
            let fields = parse_body(request)?;
            if request.wants_html(&fields) {
                return Ok(browser::submit(ctx, request, FormKind::Login, &fields).await);
            }
            let tokens =
                login::login(ctx, fields.required("email")?, fields.required("password")?, fields.optional("nonce")?)
                    .await?;
            token_response(&tokens)
        }
        Route::Token => oauth::token(ctx, request).await?,
        Route::Register => oauth::register(ctx, request).await?,
        Route::Authorize => oauth::authorize(ctx, request).await?,
        Route::AuthorizeResume => oauth::resume(ctx, request).await?,
        Route::AuthorizeConsent => oauth::consent(ctx, request).await?,
        Route::EndSession => oauth::end_session(ctx, request).await?,
        Route::Revoke => {
            // RFC 7009 §2.2: 200 whether or not the token was valid.
            let fields = parse_body(request)?;
            session::end_session(ctx, fields.required("token")?).await?;
            ApiResponse::new(200, "application/json", b"{}".to_vec()).with_header("Cache-Control", "no-store")
        }
        Route::Logout => {
            let fields = parse_body(request)?;
            session::end_session(ctx, fields.required("refresh_token")?).await?;
            let mut response =
                ApiResponse::new(204, "application/json", Vec::new()).with_header("Cache-Control", "no-store");
            response.headers.retain(|(name, _)| name != "Content-Type");
            response
        }
        Route::Userinfo => oauth::userinfo(ctx, request).await?,
        Route::OperatorShards => operator::shards(ctx, request).await?,
        Route::VerifyEmail => {
            let fields = parse_body(request)?;
            if request.wants_html(&fields) {
                return Ok(browser::submit(ctx, request, FormKind::VerifyEmail, &fields).await);
            }
            // The link's token, or the mail's short code with the address.
            match fields.optional("code")? {
                Some(code) => verify_email::verify_email_with_code(ctx, fields.required("email")?, code).await?,
                None => verify_email::verify_email(ctx, fields.required("token")?).await?,
            }
            ApiResponse::status(200, "email_verified")
        }
        Route::ResetPassword => {
            let fields = parse_body(request)?;
            if request.wants_html(&fields) {
                return Ok(browser::submit(ctx, request, FormKind::ResetPassword, &fields).await);
            }
            reset_password(ctx, &fields).await?;
            ApiResponse::status(200, "password_updated")
        }
    })
}

/// The token of an `Authorization: Bearer …` header (RFC 6750 §2.1).
pub(crate) fn bearer_token(request: &ApiRequest) -> Result<&str, ApiError> {
    let header =
        request.header("authorization").ok_or_else(|| ApiError::invalid_bearer_token(&"no Authorization header"))?;
    match header.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(ApiError::invalid_bearer_token(&"Authorization is not a Bearer token")),
    }
}

pub(crate) async fn reset_password<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    fields: &Fields,
) -> Result<(), ApiError> {
    let token = fields.required("token")?;
    let password = fields.new_password()?;
    password_reset::reset_password(ctx, token, password).await?;
    Ok(())
}
