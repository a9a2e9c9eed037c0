//! Confirming an email address with the token from the verification mail.

use crate::domain::opaque_token::TokenHash;
use crate::domain::rate_limit::BucketKind;
use crate::flows::throttle::{self, Subject, Throttled};
use crate::flows::{Context, Internal};
use crate::ports::{Crypto, Database, HttpClient};
use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum VerifyEmailError {
    #[error("verification token is unknown, expired or already used")]
    InvalidToken,
    #[error(transparent)]
    RateLimited(#[from] Throttled),
    #[error(transparent)]
    Internal(#[from] Internal),
}

pub async fn verify_email<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    presented: &str,
) -> Result<(), VerifyEmailError> {
    throttle::take(ctx, &[(BucketKind::TokenPerIp, Subject::Client)]).await??;
    let hash = TokenHash::of_presented(presented).map_err(|_| VerifyEmailError::InvalidToken)?;
    let nonce = ctx.new_id()?;
    match store::verify_email(ctx.db, &hash, &nonce, ctx.now).await.map_err(Internal::from)? {
        true => Ok(()),
        false => Err(VerifyEmailError::InvalidToken),
    }
}
