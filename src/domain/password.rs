//! Passwords: the NIST SP 800-63B length policy, NFKC normalisation and Argon2id hashing.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use unicode_normalization::UnicodeNormalization;

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 256;

/// Argon2id at the OWASP minimum (m = 19 MiB, t = 2, p = 1): the strongest setting that fits a
/// Worker's CPU budget for one login.
pub const ARGON2_MEMORY_KIB: u32 = 19_456;
pub const ARGON2_ITERATIONS: u32 = 2;
pub const ARGON2_PARALLELISM: u32 = 1;

/// Stored hashes with parameters beyond these are refused instead of verified, so a tampered
/// row cannot make a request burn unbounded memory or time.
const MAX_STORED_MEMORY_KIB: u32 = 262_144;
const MAX_STORED_ITERATIONS: u32 = 16;
const MAX_STORED_PARALLELISM: u32 = 8;

/// A PHC string of a password that nobody has, with the configured parameters. Logins for
/// unknown emails verify against it so that both failure paths cost one Argon2id run.
pub const DUMMY_PASSWORD_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$ZWRnZWlkLWR1bW15LXNhbHQ$7nkUGPqAWMZ6ol2Xq0iZdDwbvOZtwbcbw0Xt6dFMH6M";

/// A password in NFKC form. Built with [`Password::new_for_policy`] where a new password is
/// chosen, or [`Password::presented`] where an existing one is checked.
#[derive(Clone)]
pub struct Password(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    #[error("password must be at least {MIN_PASSWORD_CHARS} characters long")]
    TooShort,
    #[error("password must be at most {MAX_PASSWORD_CHARS} characters long")]
    TooLong,
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordHashError {
    #[error("stored password hash is malformed: {0}")]
    Malformed(argon2::password_hash::Error),
    #[error("stored password hash uses parameters beyond the allowed bounds")]
    ParametersOutOfBounds,
    #[error("password hashing failed: {0}")]
    Hashing(argon2::password_hash::Error),
}

impl Password {
    /// A new password: normalised, then held to the length policy (counted in code points).
    /// There are no composition rules (NIST SP 800-63B §3.1.1.2).
    pub fn new_for_policy(raw: &str) -> Result<Password, PasswordPolicyError> {
        let password = Password::presented(raw);
        let length = password.0.chars().count();
        if length < MIN_PASSWORD_CHARS {
            return Err(PasswordPolicyError::TooShort);
        }
        if length > MAX_PASSWORD_CHARS {
            return Err(PasswordPolicyError::TooLong);
        }
        Ok(password)
    }

    /// A password presented at login: normalised the same way, never refused by policy (a
    /// policy change must not lock out existing users).
    pub fn presented(raw: &str) -> Password {
        Password(raw.nfkc().collect())
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

fn argon2id() -> Argon2<'static> {
    // The constants are within Argon2's limits, so the fallback is unreachable; it keeps the
    // request path free of panics all the same.
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_PARALLELISM, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` with Argon2id and a 128-bit salt into a PHC string.
pub fn hash_password(password: &Password, salt: &[u8; 16]) -> Result<String, PasswordHashError> {
    let salt = SaltString::encode_b64(salt).map_err(PasswordHashError::Hashing)?;
    let hash = argon2id().hash_password(password.as_bytes(), &salt).map_err(PasswordHashError::Hashing)?;
    Ok(hash.to_string())
}

/// Checks `password` against a stored PHC string in constant time (argon2's comparison).
pub fn verify_password(password: &Password, stored: &str) -> Result<bool, PasswordHashError> {
    let parsed = PasswordHash::new(stored).map_err(PasswordHashError::Malformed)?;
    let params = Params::try_from(&parsed).map_err(PasswordHashError::Malformed)?;
    if params.m_cost() > MAX_STORED_MEMORY_KIB
        || params.t_cost() > MAX_STORED_ITERATIONS
        || params.p_cost() > MAX_STORED_PARALLELISM
    {
        return Err(PasswordHashError::ParametersOutOfBounds);
    }
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(other) => Err(PasswordHashError::Malformed(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_policy(raw: &str, expected: Result<(), PasswordPolicyError>) {
        assert_eq!(Password::new_for_policy(raw).map(|_| ()), expected, "{raw:?}");
    }

    #[test]
    fn policy_counts_code_points_after_nfkc() {
        check_policy("1234567", Err(PasswordPolicyError::TooShort));
        check_policy("12345678", Ok(()));
        check_policy("correct horse battery staple", Ok(()));
        check_policy(&"x".repeat(256), Ok(()));
        check_policy(&"x".repeat(257), Err(PasswordPolicyError::TooLong));
        // Seven characters of four bytes each are still seven characters.
        check_policy("😀😀😀😀😀😀😀", Err(PasswordPolicyError::TooShort));
        check_policy(&"é".repeat(256), Ok(()));
        // NFKC expands the ligature "ﬃ" into "ffi": three characters.
        check_policy("ﬃﬃﬃ", Ok(()));
        check_policy("ﬃﬃ", Err(PasswordPolicyError::TooShort));
        // No composition rules: all-lowercase, all-space and all-digit passwords are fine.
        check_policy("        ", Ok(()));
    }

    #[test]
    fn nfkc_forms_verify_against_each_other() {
        let composed = Password::new_for_policy("pässwörd-ﬁne").unwrap();
        let hash = hash_password(&composed, &[1; 16]).unwrap();
        let decomposed = Password::presented("pa\u{308}sswo\u{308}rd-fine");
        assert!(verify_password(&decomposed, &hash).unwrap());
        assert!(!verify_password(&Password::presented("passwörd-fine"), &hash).unwrap());
    }

    #[test]
    fn hashes_are_argon2id_phc_strings_at_the_owasp_minimum() {
        let hash = hash_password(&Password::presented("hunter22hunter22"), &[9; 16]).unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        // A different salt gives a different hash of the same password.
        let other = hash_password(&Password::presented("hunter22hunter22"), &[8; 16]).unwrap();
        assert_ne!(hash, other);
    }

    #[test]
    fn dummy_hash_costs_what_a_real_one_costs() {
        let parsed = PasswordHash::new(DUMMY_PASSWORD_HASH).unwrap();
        let params = Params::try_from(&parsed).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_PARALLELISM)
        );
        assert!(!verify_password(&Password::presented("anything at all"), DUMMY_PASSWORD_HASH).unwrap());
    }

    #[test]
    fn refuses_stored_hashes_beyond_bounds() {
        let greedy =
            "$argon2id$v=19$m=4194304,t=2,p=1$ZWRnZWlkLWR1bW15LXNhbHQ$7nkUGPqAWMZ6ol2Xq0iZdDwbvOZtwbcbw0Xt6dFMH6M";
        assert!(matches!(
            verify_password(&Password::presented("whatever1"), greedy),
            Err(PasswordHashError::ParametersOutOfBounds)
        ));
        assert!(matches!(
            verify_password(&Password::presented("whatever1"), "not a phc string"),
            Err(PasswordHashError::Malformed(_))
        ));
    }
}
