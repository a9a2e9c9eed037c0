//! The provider's OAuth and OpenID endpoints: client registration (RFC 7591), the
//! authorization endpoint with its hosted-page hand-overs (login, consent), the token endpoint
//! (client authentication, then the grant's handler), userinfo and RP-Initiated Logout.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::json;

use crate::api::error::ApiError;
use crate::api::request::{parse_body, BodyFormat, Fields, MAX_BODY_BYTES};
use crate::api::{bearer_token, browser, pages, token_response, ApiRequest, ApiResponse};
use crate::domain::authorization::{Parameters, Refused};
use crate::domain::interaction;
use crate::flows::authorize::{self, Authorized};
use crate::flows::client_auth::{self, Caller, ClientAuthError, Presented};
use crate::flows::{authorization_code, clients, session, Context};
use crate::ports::{Crypto, Database, HttpClient};

/// `POST /oauth/register`: a JSON object of client metadata in, `201` with the client out.
pub async fn register<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    // Who may register comes first: a closed or token-only endpoint says nothing about bodies.
    let bearer = match request.header("authorization") {
        None => None,
        Some(_) => Some(bearer_token(request)?),
    };
    let fields = parse_body(request)?;
    let body = fields.json_object().ok_or_else(ApiError::unsupported_media_type)?;
    let registered = clients::register(ctx, &body, bearer).await?;
    let metadata = &registered.metadata;
    let mut answer = json!({
        "client_id": registered.client_id,
        "client_id_issued_at": registered.issued_at,
        "redirect_uris": metadata.redirect_uris,
        "post_logout_redirect_uris": metadata.post_logout_redirect_uris,
        "token_endpoint_auth_method": metadata.auth_method.as_str(),
        "grant_types": metadata.grant_types,
        "response_types": if metadata.grant_types.iter().any(|grant| grant == "authorization_code") { vec!["code"] } else { Vec::new() },
        "scope": metadata.scope,
        "id_token_signed_response_alg": metadata.id_token_signed_response_alg,
        "skip_consent": metadata.skip_consent,
    });
    if let Some(name) = &metadata.client_name {
        answer["client_name"] = json!(name);
    }
    if let Some(secret) = &registered.client_secret {
        answer["client_secret"] = json!(secret);
        answer["client_secret_expires_at"] = json!(0);
    }
    Ok(ApiResponse::private_json(201, &answer).with_header("Pragma", "no-cache"))
}

/// The parameters of an authorization or end-session request: the query of a `GET`, the form
/// of a `POST` (OIDC Core §3.1.2.1), each sent at most once.
fn request_parameters(request: &ApiRequest) -> Result<Parameters, ApiError> {
    if request.method != "POST" {
        return Ok(Parameters::from_query(&request.query));
    }
    if request.body.len() > MAX_BODY_BYTES {
        return Err(ApiError::payload_too_large(MAX_BODY_BYTES));
    }
    let form = request
        .header("content-type")
        .and_then(|value| value.split(';').next())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    match (form, std::str::from_utf8(&request.body)) {
        (true, Ok(body)) => Ok(Parameters::from_query(body)),
        (true, Err(_)) => Err(ApiError::invalid_request("the form body is not valid UTF-8")),
        (false, _) => Err(ApiError::unsupported_media_type()),
    }
}

/// `GET` and `POST /oauth/authorize`.
pub async fn authorize<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let parameters = request_parameters(request)?;
    let outcome = authorize::authorize(ctx, &parameters, browser::session_cookie(ctx, request), None).await?;
    Ok(answer(ctx, request, outcome, &parameters).await)
}

/// `GET /oauth/authorize/resume?interaction=…`: back from the login page.
pub async fn resume<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let sealed = request.query_param(interaction::FIELD).unwrap_or_default();
    let Some(interaction) = authorize::open_interaction(ctx, &sealed) else {
        return Ok(page(ctx, browser::expired_interaction()));
    };
    let parameters = interaction.parameters();
    let outcome =
        authorize::authorize(ctx, &parameters, browser::session_cookie(ctx, request), Some(&interaction)).await?;
    Ok(answer(ctx, request, outcome, &parameters).await)
}

/// `POST /oauth/authorize/consent`: the consent page's form (same origin and CSRF checked).
pub async fn consent<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let fields = parse_body(request)?;
    if let Err(reason) = browser::same_site_form(ctx, request, &fields) {
        log::info!("consent post refused: {reason}");
        return Ok(page(ctx, browser::expired_interaction()));
    }
    let sealed = fields.optional(interaction::FIELD)?.unwrap_or_default();
    let Some(interaction) = authorize::open_interaction(ctx, sealed) else {
        return Ok(page(ctx, browser::expired_interaction()));
    };
    let allow = match fields.optional("decision")? {
        Some("allow") => true,
        Some("deny") => false,
        _ => return Err(ApiError::invalid_request("decision must be allow or deny")),
    };
    let parameters = interaction.parameters();
    let outcome = authorize::decide_consent(ctx, &interaction, browser::session_cookie(ctx, request), allow).await?;
    Ok(answer(ctx, request, outcome, &parameters).await)
}

/// An authorization outcome as HTTP: `303` to the client, to the login page, the consent page,
/// or the `400` page for an unknown client or redirect URI.
async fn answer<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    request: &ApiRequest,
    outcome: Authorized,
    parameters: &Parameters,
) -> ApiResponse {
    match outcome {
        Authorized::Code(location) => browser::redirect(&location),
        Authorized::Refused(Refused::Redirect { target, error, description }) => {
            log::info!("authorization refused: {error}: {description}");
            browser::redirect(
                &target.location(&ctx.config.issuer, &[("error", error), ("error_description", &description)]),
            )
        }
        Authorized::Refused(Refused::Page(reason)) => {
            log::info!("authorization refused without a redirect: {reason}");
            page(
                ctx,
                pages::result(
                    400,
                    "This sign-in link is not valid",
                    &format!(
                        "The app that sent you here made a request we cannot answer ({reason}). Go back to the \
                         app and try again; if it keeps happening, tell the app's owner."
                    ),
                    &[],
                ),
            )
        }
        Authorized::Login { interaction, .. } => {
            let query =
                form_urlencoded::Serializer::new(String::new()).append_pair(interaction::FIELD, &interaction).finish();
            browser::redirect(&format!("/login?{query}"))
        }
        Authorized::Consent { interaction, client_name, scopes, account, destination } => {
            let cookie = match browser::csrf_cookie(ctx, request) {
                Ok(cookie) => cookie,
                Err(err) => return ApiError::from(err).into(),
            };
            let mut form = browser::form_context(ctx, &cookie, None);
            form.interaction = Some(interaction);
            let page = pages::consent_form(&form, &client_name, &scopes, &account, &destination);
            let targets: Vec<String> = parameters.get("redirect_uri").map(str::to_owned).into_iter().collect();
            browser::respond_with(
                ctx,
                browser::Rendered { page, csrf_cookie: Some(cookie), retry_after_seconds: None },
                &targets,
            )
        }
    }
}

fn page<D: Database, E: Crypto, H: HttpClient>(ctx: &Context<'_, D, E, H>, page: pages::Page) -> ApiResponse {
    browser::respond_with(ctx, browser::Rendered { page, csrf_cookie: None, retry_after_seconds: None }, &[])
}

/// How the token request's client authenticated (RFC 6749 §2.3): Basic, the form, or only a
/// `client_id`; more than one method is `invalid_request`.
fn presented_client<'a>(fields: &'a Fields, basic: &'a Option<(String, String)>) -> Result<Presented<'a>, ApiError> {
    let form_id = fields.optional("client_id")?;
    let form_secret = fields.optional("client_secret")?;
    match (basic, form_id, form_secret) {
        (Some(_), _, Some(_)) => Err(ApiError::invalid_request("the client authenticated with more than one method")),
        (Some((id, _)), Some(form_id), None) if form_id != id => {
            Err(ApiError::invalid_request("client_id differs from the Basic credentials"))
        }
        (Some((client_id, client_secret)), _, None) => Ok(Presented::Basic { client_id, client_secret }),
        (None, Some(client_id), Some(client_secret)) => Ok(Presented::Post { client_id, client_secret }),
        (None, None, Some(_)) => Err(ApiError::invalid_request("client_secret without client_id")),
        (None, Some(client_id), None) => Ok(Presented::ClientId(client_id)),
        (None, None, None) => Ok(Presented::Nothing),
    }
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
fn basic_credentials(request: &ApiRequest) -> Result<Option<(String, String)>, ApiError> {
    let Some(header) = request.header("authorization") else { return Ok(None) };
    let invalid = || ClientAuthError::InvalidClient { basic: true, reason: "malformed Basic credentials" };
    let Some((scheme, encoded)) = header.split_once(' ') else { return Err(invalid().into()) };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(invalid().into());
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| invalid())?;
    let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(invalid)?;
    let unescape = |part: &str| -> String {
        form_urlencoded::parse(format!("x={part}").as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((unescape(id), unescape(secret))))
}

/// `POST /oauth/token`: authenticates the client, then hands the request to its grant.
pub async fn token<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let fields = parse_body(request)?;
    let basic = basic_credentials(request)?;
    let presented = presented_client(&fields, &basic)?;
    let grant_type = fields.required("grant_type")?;
    if !matches!(grant_type, "authorization_code" | "refresh_token") {
        return Err(ApiError::unsupported_grant_type());
    }
    let caller = client_auth::authenticate(ctx, presented).await?;
    if let Caller::Client(client) = &caller {
        if !client.may_use(grant_type) {
            return Err(ApiError::unauthorized_client(grant_type));
        }
    }
    let tokens = match (grant_type, &caller) {
        ("authorization_code", Caller::Client(client)) => {
            authorization_code::redeem(
                ctx,
                client,
                fields.required("code")?,
                fields.optional("redirect_uri")?,
                fields.optional("code_verifier")?,
            )
            .await?
        }
        ("authorization_code", Caller::FirstParty) => return Err(ApiError::client_required()),
        _ => session::refresh(ctx, &caller, fields.required("refresh_token")?, fields.optional("scope")?).await?,
    };
    Ok(token_response(&tokens))
}

/// `GET` and `POST /userinfo` (OIDC Core §5.3): `sub`, and with the `email` scope the address.
/// The token comes in `Authorization: Bearer`, or in a POST's form body (RFC 6750 §2.2).
pub async fn userinfo<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    // RFC 6750 §2.2: a POST may carry the token in its form body instead of the header.
    let fields = match (request.method.as_str(), request.header("authorization")) {
        ("POST", None) if !request.body.is_empty() => Some(parse_body(request)?),
        _ => None,
    };
    let token = match fields.as_ref().map(|fields| fields.optional("access_token")).transpose()?.flatten() {
        Some(token) if fields.as_ref().is_some_and(|fields| fields.format == BodyFormat::Form) => token,
        _ => bearer_token(request)?,
    };
    let userinfo = session::userinfo(ctx, token).await?;
    let mut answer = json!({ "sub": userinfo.sub });
    if let Some((email, verified)) = userinfo.email {
        answer["email"] = json!(email);
        answer["email_verified"] = json!(verified);
    }
    Ok(ApiResponse::private_json(200, &answer))
}

/// `GET` and `POST /oauth/end-session` (RP-Initiated Logout 1.0). With a valid `id_token_hint`
/// for the user this browser is signed in as, its session ends at once; otherwise the person
/// confirms first. Only the browser's own session (its cookie's) ever ends here. Either way a redirect goes only to a
/// `post_logout_redirect_uri` registered for the client the hint or `client_id` names.
pub async fn end_session<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let parameters = request_parameters(request)?;
    if request.method == "POST" && parameters.get("decision").is_some() {
        return confirm_logout(ctx, request, &parameters).await;
    }
    let hint = match parameters.get("id_token_hint") {
        None => None,
        Some(hint) => match authorize::id_token_hint_claims(ctx, hint).await? {
            Some(claims) => Some(claims),
            None => return Ok(logout_error(ctx, "the id_token_hint is not an ID token we issued")),
        },
    };
    let hinted_client = hint.as_ref().and_then(|claims| match claims.get("aud") {
        Some(serde_json::Value::String(aud)) => Some(aud.clone()),
        Some(serde_json::Value::Array(auds)) => auds.first().and_then(|aud| aud.as_str()).map(str::to_owned),
        _ => None,
    });
    let client_id = match (parameters.get("client_id"), hinted_client.as_deref()) {
        (Some(named), Some(hinted)) if named != hinted => {
            return Ok(logout_error(ctx, "client_id is not the client the id_token_hint was issued to"))
        }
        (named, hinted) => named.or(hinted),
    };
    let destination = match logout_destination(ctx, client_id, &parameters).await? {
        Ok(destination) => destination,
        Err(reason) => return Ok(logout_error(ctx, reason)),
    };
    // A valid hint skips the question only when it names the user this browser is signed in
    // as: a hint proves what an RP holds, not which browser asks, so it never ends another
    // session than the cookie's (anyone can hold an old ID token, an attacker their own).
    // Its `sid` must be this browser session's too: an ID token from an ended session, long
    // kept in some log, does not speak for the session the user has now.
    let hinted = |name: &str| hint.as_ref().and_then(|claims| claims.get(name)).and_then(serde_json::Value::as_str);
    let (hinted_subject, hinted_session) = (hinted("sub"), hinted("sid"));
    let browser_session = session::browser_session(ctx, browser::session_cookie(ctx, request)).await?;
    let confirmed_by_hint = match (&browser_session, hinted_subject) {
        (Some(session), Some(subject)) => session.user_id == subject && hinted_session == Some(session.id.as_str()),
        // Signed out already: nothing to end, and the hint names the client to go back to.
        (None, Some(_)) => true,
        (_, None) => false,
    };
    if confirmed_by_hint {
        if let Some(session) = &browser_session {
            session::log_out(ctx, session).await?;
        }
        return Ok(logged_out(ctx, destination, parameters.get("state"), browser_session.is_some()));
    }
    // No proof the client speaks for this browser's user: the person decides.
    let cookie = browser::csrf_cookie(ctx, request)?;
    let form = browser::form_context(ctx, &cookie, None);
    let mut fields = Vec::new();
    for name in ["client_id", "post_logout_redirect_uri", "state"] {
        let value = if name == "client_id" { client_id } else { parameters.get(name) };
        if let Some(value) = value {
            fields.push((name, value));
        }
    }
    let client_name = match client_id {
        Some(client_id) => crate::store::find_client(ctx.db, client_id)
            .await
            .map_err(crate::flows::Internal::from)?
            .map(|client| client.display_name().to_owned()),
        None => None,
    };
    let page = pages::logout_form(&form, client_name.as_deref(), &fields);
    let targets: Vec<String> = destination.iter().cloned().collect();
    Ok(browser::respond_with(
        ctx,
        browser::Rendered { page, csrf_cookie: Some(cookie), retry_after_seconds: None },
        &targets,
    ))
}

/// The confirmation form's post: same origin and CSRF checked, then the browser's session ends.
async fn confirm_logout<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    request: &ApiRequest,
    parameters: &Parameters,
) -> Result<ApiResponse, ApiError> {
    let fields = parse_body(request)?;
    if let Err(reason) = browser::same_site_form(ctx, request, &fields) {
        log::info!("logout confirmation refused: {reason}");
        return Ok(logout_error(ctx, "this form has expired; go back to the app and sign out again"));
    }
    if parameters.get("decision") != Some("logout") {
        return Err(ApiError::invalid_request("decision must be logout"));
    }
    let destination = match logout_destination(ctx, parameters.get("client_id"), parameters).await? {
        Ok(destination) => destination,
        Err(reason) => return Ok(logout_error(ctx, reason)),
    };
    let browser_session = session::browser_session(ctx, browser::session_cookie(ctx, request)).await?;
    if let Some(session) = &browser_session {
        session::log_out(ctx, session).await?;
    }
    Ok(logged_out(ctx, destination, parameters.get("state"), browser_session.is_some()))
}

/// The registered `post_logout_redirect_uri` to go to, if one was asked for; a reason in words
/// when it cannot be used.
async fn logout_destination<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    client_id: Option<&str>,
    parameters: &Parameters,
) -> Result<Result<Option<String>, &'static str>, ApiError> {
    let Some(uri) = parameters.get("post_logout_redirect_uri") else { return Ok(Ok(None)) };
    let Some(client_id) = client_id else {
        return Ok(Err("post_logout_redirect_uri needs an id_token_hint or a client_id"));
    };
    let client = crate::store::find_client(ctx.db, client_id).await.map_err(crate::flows::Internal::from)?;
    Ok(match client {
        Some(client) if authorize::is_post_logout_redirect_uri(&client, uri) => Ok(Some(uri.to_owned())),
        Some(_) => Err("the post_logout_redirect_uri is not registered for this client"),
        None => Err("the client_id is not a registered client"),
    })
}

/// After a logout: back to the client (with `state`) or a page; the cookie goes with the
/// session it named (`ended`).
fn logged_out<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    destination: Option<String>,
    state: Option<&str>,
    ended: bool,
) -> ApiResponse {
    let response = match destination {
        Some(uri) => {
            let location = match state {
                Some(state) => {
                    let query = form_urlencoded::Serializer::new(String::new()).append_pair("state", state).finish();
                    format!("{uri}{}{query}", if uri.contains('?') { '&' } else { '?' })
                }
                None => uri,
            };
            browser::redirect(&location)
        }
        None => page(
            ctx,
            pages::result(200, "You are signed out", "You have signed out of your account on this device.", &[]),
        ),
    };
    match ended {
        true => response.with_header("Set-Cookie", browser::clear_session_cookie(ctx)),
        false => response,
    }
}

fn logout_error<D: Database, E: Crypto, H: HttpClient>(ctx: &Context<'_, D, E, H>, reason: &str) -> ApiResponse {
    log::info!("logout request refused: {reason}");
    page(
        ctx,
        pages::result(
            400,
            "This sign-out link is not valid",
            &format!("We could not act on it ({reason}). You have not been signed out."),
            &[],
        ),
    )
}
