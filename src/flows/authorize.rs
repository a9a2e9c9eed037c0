//! The authorization endpoint's decisions (OpenID Connect Core §3.1.2): after the request's
//! checks (`domain::authorization::validate`), whether the browser's session will do or the
//! person must sign in (`prompt`, `max_age`, `id_token_hint`), whether they must consent, and
//! the code. One round trip reads the client, the session and the consent; a second stores the
//! code.

use chrono::Duration;
use serde_json::{Map, Value};

use crate::domain::authorization::{self, covers, union, AuthorizationRequest, Parameters, Prompt, Refused};
use crate::domain::client::RegisteredClient;
use crate::domain::interaction::{Interaction, InteractionKey};
use crate::domain::opaque_token::TokenHash;
use crate::flows::{issued_bucket, Context, Internal};
use crate::ports::{Crypto, Database, HttpClient};
use crate::store::{self, AuthorizationContext, BrowserSession, NewCode};

/// How long an authorization code lives (API.md v2).
pub const CODE_TTL_SECONDS: i64 = 60;

/// How long after the login page's password check the request it signed in for goes on
/// without asking again; and the slack `max_age` gets while a person reads the consent page.
const SIGNED_IN_FOR_THIS_SECONDS: i64 = 300;

/// What the endpoint answers.
#[derive(Debug)]
pub enum Authorized {
    /// Refused: a page (unknown client or redirect URI) or a redirect with an error.
    Refused(Refused),
    /// `303` back to the client with the code.
    Code(String),
    /// The person must sign in first: the login page, with the request sealed.
    Login { interaction: String, login_hint: Option<String> },
    /// The person must approve the client: the consent page.
    Consent { interaction: String, client_name: String, scopes: Vec<String>, account: String, destination: String },
}

impl From<Refused> for Authorized {
    fn from(refused: Refused) -> Authorized {
        Authorized::Refused(refused)
    }
}

pub fn interaction_key<D, E, H>(ctx: &Context<'_, D, E, H>) -> InteractionKey {
    InteractionKey::derive(&ctx.config.key_encryption_key.0)
}

/// Opens an interaction sealed under the current key-encryption key or the one being rotated
/// out (a page opened before a rotation still works).
pub fn open_interaction<D, E, H>(ctx: &Context<'_, D, E, H>, sealed: &str) -> Option<Interaction> {
    let now = ctx.now.timestamp();
    interaction_key(ctx).open(sealed, now).or_else(|| {
        let previous = ctx.config.key_encryption_key_previous.as_ref()?;
        InteractionKey::derive(&previous.0).open(sealed, now)
    })
}

/// An authorization request, new (`resumed: None`) or coming back from the hosted login page
/// (`resumed`: the interaction the login page carried, now naming the session that signed in).
pub async fn authorize<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    parameters: &Parameters,
    session_cookie: Option<&str>,
    resumed: Option<&Interaction>,
) -> Result<Authorized, Internal> {
    let context = read_context(ctx, parameters, session_cookie).await?;
    let request = match authorization::validate(parameters, context.client.as_ref()) {
        Ok(request) => request,
        Err(refused) => return Ok(refused.into()),
    };
    let Some(client) = context.client.as_ref() else {
        return Ok(Refused::Page("the client_id is not a registered client".to_owned()).into());
    };
    let hinted_subject = match &request.id_token_hint {
        None => None,
        Some(hint) => match id_token_hint_subject(ctx, hint).await? {
            Some(subject) => Some(subject),
            None => {
                return Ok(
                    Refused::redirect(&request.target(), "invalid_request", "the id_token_hint is not valid").into()
                )
            }
        },
    };
    // The login page signed this session in for this very request, moments ago: whatever the
    // request asked of the login (`prompt=login`, `max_age`) is done. A later replay of the
    // same interaction is judged like any request.
    let signed_in_for_this = |session: &BrowserSession| {
        resumed.and_then(|interaction| interaction.signed_in.as_deref()) == Some(session.id.as_str())
            && ctx.now.timestamp() - session.auth_time <= SIGNED_IN_FOR_THIS_SECONDS
    };
    let session = match context.session.as_ref() {
        Some(session) if signed_in_for_this(session) => {
            if hinted_subject.as_deref().is_some_and(|subject| subject != session.user_id) {
                return Ok(Refused::redirect(
                    &request.target(),
                    "login_required",
                    "the account signed in is not the one id_token_hint names",
                )
                .into());
            }
            Some(session)
        }
        Some(session) if !needs_login(ctx, &request, session, hinted_subject.as_deref()) => Some(session),
        _ => None,
    };
    let Some(session) = session else {
        if request.prompts(Prompt::None) {
            return Ok(Refused::redirect(&request.target(), "login_required", "the end-user is not signed in").into());
        }
        let interaction = interaction_key(ctx).seal(&Interaction::new(parameters, ctx.now.timestamp()));
        return Ok(Authorized::Login { interaction, login_hint: request.login_hint.clone() });
    };
    let consented = context.consented_scope.as_deref().is_some_and(|scope| covers(scope, &request.scopes));
    if client.asks_consent() && (request.prompts(Prompt::Consent) || !consented) {
        if request.prompts(Prompt::None) {
            return Ok(
                Refused::redirect(&request.target(), "consent_required", "the end-user has not consented").into()
            );
        }
        let mut interaction = resumed.cloned().unwrap_or_else(|| Interaction::new(parameters, ctx.now.timestamp()));
        // The consent page belongs to this session: its answer counts only for it.
        interaction.signed_in = Some(session.id.clone());
        return Ok(Authorized::Consent {
            interaction: interaction_key(ctx).seal(&interaction),
            client_name: client.display_name().to_owned(),
            scopes: request.scopes.clone(),
            account: session.email.clone(),
            // The name is the client's own choice; where the browser goes is not.
            destination: url::Url::parse(&request.redirect_uri)
                .ok()
                .and_then(|url| url.host_str().map(str::to_owned))
                .unwrap_or_else(|| request.redirect_uri.clone()),
        });
    }
    Ok(Authorized::Code(issue_code(ctx, &request, session, None).await?))
}

/// The consent page's answer (`allow` or `deny`) for the interaction it carried.
pub async fn decide_consent<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    interaction: &Interaction,
    session_cookie: Option<&str>,
    allow: bool,
) -> Result<Authorized, Internal> {
    let parameters = interaction.parameters();
    let context = read_context(ctx, &parameters, session_cookie).await?;
    let request = match authorization::validate(&parameters, context.client.as_ref()) {
        Ok(request) => request,
        Err(refused) => return Ok(refused.into()),
    };
    let session = match context.session.as_ref() {
        Some(session) if interaction.signed_in.as_deref() == Some(session.id.as_str()) => session,
        _ => {
            return Ok(Refused::Page(
                "the sign-in this page was shown for has ended; start again from the app".to_owned(),
            )
            .into())
        }
    };
    if !allow {
        return Ok(Refused::redirect(&request.target(), "access_denied", "the end-user denied the request").into());
    }
    // A consent page answered long after the session's last password check cannot carry a
    // `max_age` it no longer meets: sign in again.
    let age = ctx.now.timestamp() - session.auth_time;
    if request.max_age.is_some_and(|max_age| age > max_age.max(SIGNED_IN_FOR_THIS_SECONDS)) {
        let interaction = interaction_key(ctx).seal(&Interaction::new(&parameters, ctx.now.timestamp()));
        return Ok(Authorized::Login { interaction, login_hint: request.login_hint.clone() });
    }
    let remembered = union(context.consented_scope.as_deref().unwrap_or_default(), &request.scopes);
    Ok(Authorized::Code(issue_code(ctx, &request, session, Some(&remembered)).await?))
}

async fn read_context<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    parameters: &Parameters,
    session_cookie: Option<&str>,
) -> Result<AuthorizationContext, Internal> {
    let Some(client_id) = parameters.get("client_id") else { return Ok(AuthorizationContext::default()) };
    let cookie = session_cookie.and_then(|cookie| TokenHash::routed(cookie).ok());
    let users = cookie.as_ref().map(|(bucket, _)| ctx.users(*bucket));
    let session = users.as_ref().zip(cookie.as_ref().map(|(_, hash)| hash));
    let context = store::authorization_context(ctx.db, session, client_id, ctx.now).await?;
    // The token endpoint will authenticate this client: the fresh copy saves it the read.
    // A read that finds none drops whatever copy the isolate held.
    match &context.client {
        Some(client) => ctx.clients.keep(client, ctx.now),
        None => ctx.clients.forget(client_id),
    }
    Ok(context)
}

/// OIDC Core §3.1.2.1: `prompt=login` and `select_account` ask again (one account per
/// browser: choosing one is signing in), as does a session older than `max_age` or of another
/// user than `id_token_hint` names.
fn needs_login<D, E, H>(
    ctx: &Context<'_, D, E, H>,
    request: &AuthorizationRequest,
    session: &BrowserSession,
    hinted_subject: Option<&str>,
) -> bool {
    request.prompts(Prompt::Login)
        || request.prompts(Prompt::SelectAccount)
        || request.max_age.is_some_and(|max_age| ctx.now.timestamp() - session.auth_time > max_age)
        || hinted_subject.is_some_and(|subject| subject != session.user_id)
}

/// The `sub` of an ID token we issued (signature by a published key, our `iss`, `typ` JWT;
/// expired is fine, OIDC Core §3.1.2.1); `None` if it is not one.
pub async fn id_token_hint_subject<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    hint: &str,
) -> Result<Option<String>, Internal> {
    Ok(id_token_hint_claims(ctx, hint).await?.and_then(|claims| claims.get("sub")?.as_str().map(str::to_owned)))
}

/// The claims of an ID token we issued, checked as [`id_token_hint_subject`] says.
pub async fn id_token_hint_claims<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    hint: &str,
) -> Result<Option<Map<String, Value>>, Internal> {
    let keys = ctx.signing_keys().await?;
    let Ok(claims) = keys.published().verify::<Map<String, Value>>(hint, "JWT") else { return Ok(None) };
    let claims = claims.custom;
    let ours = claims.get("iss").and_then(Value::as_str) == Some(ctx.config.issuer.as_str())
        && claims.get("sub").and_then(Value::as_str).is_some();
    Ok(ours.then_some(claims))
}

/// Stores a code bound to the request and the session, and the consent just given with it.
async fn issue_code<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    request: &AuthorizationRequest,
    session: &BrowserSession,
    consent: Option<&str>,
) -> Result<String, Internal> {
    let bucket = issued_bucket(&session.id)?;
    let code = ctx.new_token(bucket)?;
    let scope = request.scope();
    store::issue_code(
        &ctx.users(bucket),
        &NewCode {
            hash: code.hash(),
            client_id: &request.client_id,
            user_id: &session.user_id,
            browser_session_id: &session.id,
            redirect_uri: &request.redirect_uri,
            scope: &scope,
            nonce: request.nonce.as_deref(),
            code_challenge: request.code_challenge.as_deref(),
            auth_time: session.auth_time,
            expires_at: ctx.now + Duration::seconds(CODE_TTL_SECONDS),
        },
        consent,
        ctx.now,
    )
    .await?;
    Ok(request.target().location(&ctx.config.issuer, &[("code", code.plaintext())]))
}

/// Whether `client` may be sent back to `uri` after a logout: exactly one it registered.
pub fn is_post_logout_redirect_uri(client: &RegisteredClient, uri: &str) -> bool {
    client.metadata.post_logout_redirect_uris.iter().any(|registered| registered == uri)
}
