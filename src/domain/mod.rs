//! Pure, synchronous domain logic: what an email, a password, a token and a key are.

pub mod authorization;
pub mod client;
pub mod csrf;
pub mod documents;
pub mod email;
pub mod interaction;
pub mod opaque_token;
pub mod password;
pub mod rate_limit;
pub mod redirect;
pub mod sealing;
pub mod shard;
pub mod short_code;
pub mod signing;
pub mod tokens;
