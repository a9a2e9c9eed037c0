//! Choosing a new password (sign-up, reset): the length policy, then the breached-password
//! check against the Pwned Passwords range API (NIST SP 800-63B §3.1.1.2 asks for both).

use crate::config::BreachCheck;
use crate::domain::password::{BreachQuery, Password, PasswordPolicyError};
use crate::flows::{Context, Internal};
use crate::ports::{Crypto, Database, HttpClient, HttpError, OutboundRequest};

#[derive(Debug, thiserror::Error)]
pub enum NewPasswordError {
    #[error(transparent)]
    Weak(#[from] PasswordPolicyError),
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// The password, normalised, if policy accepts it and it is not known from a breach.
pub async fn accept_new_password<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    raw: &str,
) -> Result<Password, NewPasswordError> {
    let password = Password::new_for_policy(raw)?;
    let settings = &ctx.config.breached_passwords;
    if settings.check == BreachCheck::Off {
        return Ok(password);
    }
    let query = BreachQuery::new(&password);
    match range(ctx, &query).await {
        Ok(range) if query.is_listed_in(&range) => Err(PasswordPolicyError::Breached.into()),
        Ok(_) => Ok(password),
        Err(err) => match settings.check {
            BreachCheck::FailClosed => Err(Internal::BreachCheck(err.to_string()).into()),
            BreachCheck::FailOpen | BreachCheck::Off => {
                log::warn!("breached-password check skipped (fail-open): {err}");
                Ok(password)
            }
        },
    }
}

/// `GET {api}/range/{prefix}` with `Add-Padding: true`, so the size of the answer says nothing
/// about the prefix either.
async fn range<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    query: &BreachQuery,
) -> Result<String, HttpError> {
    let settings = &ctx.config.breached_passwords;
    let response = ctx
        .http
        .send(OutboundRequest {
            method: "GET",
            url: format!("{}/range/{}", settings.api_url, query.prefix),
            headers: vec![
                ("Add-Padding".to_owned(), "true".to_owned()),
                ("User-Agent".to_owned(), "edgeid".to_owned()),
            ],
            body: Vec::new(),
            timeout_ms: Some(settings.timeout_ms),
        })
        .await?;
    match response.status {
        200 => Ok(response.body),
        status => Err(HttpError(format!("the range API answered {status}"))),
    }
}
