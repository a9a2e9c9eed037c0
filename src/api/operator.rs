//! The operator's endpoints, for the commands of the README's "Operating it": growing the
//! number of user shards (`POST /operator/shards`, a bounded amount of work per call, which
//! `scripts/reshard.mjs` repeats until done) and the check after it (`GET /operator/shards`).
//! Both take `Authorization: Bearer OPERATOR_TOKEN`; without that secret configured they do not
//! exist (404), and a wrong or missing token is `401 invalid_token`.

use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::error::ApiError;
use crate::api::request::parse_body;
use crate::api::{bearer_token, ApiRequest, ApiResponse};
use crate::flows::{resharding, Context};
use crate::ports::{Crypto, Database, HttpClient};

/// Buckets a call moves by default, and at most: a call stays well inside a Worker's limits.
const DEFAULT_MOVES: usize = 16;
const MAX_MOVES: usize = 64;

/// `GET` (the check) and `POST` (a step of the reshard) `/operator/shards`.
pub async fn shards<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    authenticate(ctx, request)?;
    let body = match request.method.as_str() {
        "POST" => {
            let fields = parse_body(request)?;
            // A JSON number, or a form field's digits.
            let requested = match fields.json_object().and_then(|body| body.get("max_moves").cloned()) {
                Some(serde_json::Value::Number(number)) => Some(number.as_u64()),
                Some(_) => Some(None),
                None => fields.optional("max_moves").ok().flatten().map(|raw| raw.parse::<u64>().ok()),
            };
            let max_moves = match requested {
                None => DEFAULT_MOVES,
                Some(Some(moves)) if (1..=MAX_MOVES as u64).contains(&moves) => moves as usize,
                Some(_) => {
                    return Err(ApiError::invalid_request(format!("max_moves must be a number from 1 to {MAX_MOVES}")))
                }
            };
            // This call's lease on the moves it works on: a random name, so two operators'
            // commands never work on one move at once.
            let lease = crate::domain::opaque_token::random_id(ctx.crypto).map_err(crate::flows::Internal::from)?;
            let progress = resharding::reshard(ctx, &lease, max_moves).await?;
            json!(progress)
        }
        _ => json!(resharding::check(ctx).await?),
    };
    Ok(ApiResponse::new(200, "application/json", body.to_string().into_bytes())
        .with_header("Cache-Control", "no-store"))
}

fn authenticate<D, E, H>(ctx: &Context<'_, D, E, H>, request: &ApiRequest) -> Result<(), ApiError> {
    let Some(expected) = &ctx.config.operator_token else { return Err(ApiError::not_found()) };
    let presented = bearer_token(request)?;
    let matches: bool = Sha256::digest(presented.as_bytes()).ct_eq(&Sha256::digest(expected.0.as_bytes())).into();
    match matches {
        true => Ok(()),
        false => Err(ApiError::invalid_bearer_token(&"not the operator token")),
    }
}
