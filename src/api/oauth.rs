//! The OAuth endpoints of the provider that are not the token endpoint's grants:
//! client registration (RFC 7591) so far.

use serde_json::json;

use crate::api::error::ApiError;
use crate::api::request::parse_body;
use crate::api::{bearer_token, ApiRequest, ApiResponse};
use crate::flows::{clients, Context};
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
