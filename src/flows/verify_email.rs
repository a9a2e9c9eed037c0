//! Confirming an email address with the token from the verification mail.

use crate::domain::opaque_token::TokenHash;
use crate::flows::{Context, Internal};
use crate::ports::{Crypto, Database};
use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum VerifyEmailError {
    #[error("verification token is unknown, expired or already used")]
    InvalidToken,
    #[error(transparent)]
    Internal(#[from] Internal),
}

pub async fn verify_email<D: Database, E: Crypto>(
    ctx: &Context<'_, D, E>,
    presented: &str,
) -> Result<(), VerifyEmailError> {
    let hash = TokenHash::of_presented(presented).map_err(|_| VerifyEmailError::InvalidToken)?;
    let nonce = ctx.new_id()?;
    match store::verify_email(ctx.db, &hash, &nonce, ctx.now).await.map_err(Internal::from)? {
        true => Ok(()),
        false => Err(VerifyEmailError::InvalidToken),
    }
}
