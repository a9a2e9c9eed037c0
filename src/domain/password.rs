//! Passwords: the NIST SP 800-63B length policy, NFKC normalisation, Argon2id hashing, and the
//! k-anonymity lookup of the breached-password range API.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sha1::{Digest, Sha1};
use unicode_normalization::UnicodeNormalization;

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 256;

/// Argon2id parameters (`ARGON2_*` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl HashParams {
    /// The OWASP minimum (m = 19 MiB, t = 2, p = 1): the strongest setting that fits a Worker's
    /// CPU budget for one login, and the default.
    pub const OWASP_MINIMUM: HashParams = HashParams { memory_kib: 19_456, iterations: 2, parallelism: 1 };

    /// Stored hashes with parameters beyond these are refused instead of verified, so a
    /// tampered row cannot make a request burn unbounded memory or time. The configuration
    /// cannot ask for more either: 64 MiB leaves room in a Worker's 128 MB.
    pub const MAX: HashParams = HashParams { memory_kib: 65_536, iterations: 16, parallelism: 8 };

    fn argon2id(&self) -> Result<Argon2<'static>, PasswordHashError> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|err| PasswordHashError::Hashing(err.into()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    fn of_stored(parsed: &PasswordHash<'_>) -> Result<HashParams, PasswordHashError> {
        let params = Params::try_from(parsed).map_err(PasswordHashError::Malformed)?;
        Ok(HashParams { memory_kib: params.m_cost(), iterations: params.t_cost(), parallelism: params.p_cost() })
    }
}

/// A PHC string of a password that nobody has, costing what a real hash with `params` costs.
/// Logins for unknown emails (and throttled ones) verify against it, so every failure path
/// costs one Argon2id run. The digest is not the hash of any known password.
pub fn dummy_password_hash(params: &HashParams) -> String {
    format!(
        "$argon2id$v=19$m={},t={},p={}$ZWRnZWlkLWR1bW15LXNhbHQ$7nkUGPqAWMZ6ol2Xq0iZdDwbvOZtwbcbw0Xt6dFMH6M",
        params.memory_kib, params.iterations, params.parallelism
    )
}

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
    #[error("this password has appeared in a data breach, so attackers try it first; choose another one")]
    Breached,
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

/// Hashes `password` with Argon2id and a 128-bit salt into a PHC string.
pub fn hash_password(password: &Password, salt: &[u8; 16], params: &HashParams) -> Result<String, PasswordHashError> {
    let salt = SaltString::encode_b64(salt).map_err(PasswordHashError::Hashing)?;
    let hash = params.argon2id()?.hash_password(password.as_bytes(), &salt).map_err(PasswordHashError::Hashing)?;
    Ok(hash.to_string())
}

/// Checks `password` against a stored PHC string in constant time (argon2's comparison).
/// Only Argon2id is accepted, and only within [`HashParams::MAX`].
pub fn verify_password(password: &Password, stored: &str) -> Result<bool, PasswordHashError> {
    let parsed = PasswordHash::new(stored).map_err(PasswordHashError::Malformed)?;
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Err(PasswordHashError::Malformed(argon2::password_hash::Error::Algorithm));
    }
    let params = HashParams::of_stored(&parsed)?;
    if params.memory_kib > HashParams::MAX.memory_kib
        || params.iterations > HashParams::MAX.iterations
        || params.parallelism > HashParams::MAX.parallelism
    {
        return Err(PasswordHashError::ParametersOutOfBounds);
    }
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(other) => Err(PasswordHashError::Malformed(other)),
    }
}

/// Whether a stored hash (which just verified) was made with other parameters than
/// `configured`, stronger or weaker, and should be replaced by a fresh hash of the same password
/// at this login: every account converges on the configured cost, which is also what the dummy
/// verification of an unknown email costs, so timing does not tell them apart.
pub fn needs_rehash(stored: &str, configured: &HashParams) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else { return false };
    match HashParams::of_stored(&parsed) {
        Ok(params) => params != *configured,
        Err(_) => false,
    }
}

/// The k-anonymity query of the Pwned Passwords range API: only the first five hex digits of
/// the password's SHA-1 leave the worker; the rest is compared locally with the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreachQuery {
    pub prefix: String,
    suffix: String,
}

impl BreachQuery {
    pub fn new(password: &Password) -> BreachQuery {
        let digest = Sha1::digest(password.as_bytes());
        let hex: String = digest.iter().map(|byte| format!("{byte:02X}")).collect();
        let (prefix, suffix) = hex.split_at(5);
        BreachQuery { prefix: prefix.to_owned(), suffix: suffix.to_owned() }
    }

    /// Whether the range answer (`SUFFIX:COUNT` lines) lists the password. Padding lines
    /// (count 0, from `Add-Padding: true`) do not count; malformed lines are skipped.
    pub fn is_listed_in(&self, range: &str) -> bool {
        range.lines().any(|line| match line.trim().split_once(':') {
            Some((suffix, count)) => {
                suffix.eq_ignore_ascii_case(&self.suffix) && count.trim().parse::<u64>().is_ok_and(|count| count > 0)
            }
            None => false,
        })
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
        let hash = hash_password(&composed, &[1; 16], &HashParams::OWASP_MINIMUM).unwrap();
        let decomposed = Password::presented("pa\u{308}sswo\u{308}rd-fine");
        assert!(verify_password(&decomposed, &hash).unwrap());
        assert!(!verify_password(&Password::presented("passwörd-fine"), &hash).unwrap());
    }

    #[test]
    fn hashes_are_argon2id_phc_strings_at_the_owasp_minimum() {
        let owasp = HashParams::OWASP_MINIMUM;
        let hash = hash_password(&Password::presented("hunter22hunter22"), &[9; 16], &owasp).unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        // A different salt gives a different hash of the same password.
        let other = hash_password(&Password::presented("hunter22hunter22"), &[8; 16], &owasp).unwrap();
        assert_ne!(hash, other);
    }

    #[test]
    fn dummy_hashes_cost_what_a_real_one_costs() {
        for params in [HashParams::OWASP_MINIMUM, HashParams { memory_kib: 32_768, iterations: 3, parallelism: 2 }] {
            let dummy = dummy_password_hash(&params);
            let parsed = PasswordHash::new(&dummy).unwrap();
            assert_eq!(parsed.algorithm.as_str(), "argon2id");
            assert_eq!(HashParams::of_stored(&parsed).unwrap(), params);
            assert!(!verify_password(&Password::presented("anything at all"), &dummy).unwrap());
            assert!(!needs_rehash(&dummy, &params));
        }
    }

    #[test]
    fn hashes_made_with_other_parameters_need_a_rehash() {
        let owasp = HashParams::OWASP_MINIMUM;
        let hash = hash_password(&Password::presented("hunter22hunter22"), &[9; 16], &owasp).unwrap();
        assert!(!needs_rehash(&hash, &owasp));
        assert!(needs_rehash(&hash, &HashParams { memory_kib: 65_536, ..owasp }));
        assert!(needs_rehash(&hash, &HashParams { iterations: 3, ..owasp }));
        assert!(needs_rehash(&hash, &HashParams { parallelism: 2, ..owasp }));
        // Stronger than configured too: a lowered configuration is what unknown emails cost, so
        // an account that kept a costlier hash would stand out by its timing.
        let strong = hash_password(
            &Password::presented("hunter22hunter22"),
            &[9; 16],
            &HashParams { memory_kib: 32_768, ..owasp },
        )
        .unwrap();
        assert!(needs_rehash(&strong, &owasp));
        assert!(!needs_rehash("not a phc string", &owasp));
    }

    #[test]
    fn breach_queries_send_five_hex_digits_and_match_locally() {
        // SHA-1("password") = 5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8
        let query = BreachQuery::new(&Password::presented("password"));
        assert_eq!(query.prefix, "5BAA6");
        let range = "0018A45C4D1DEF81644B54AB7F969B88D65:0\r\n1E4C9B93F3F0682250B6CF8331B7EE68FD8:9659365\r\n";
        assert!(query.is_listed_in(range));
        assert!(query.is_listed_in("1e4c9b93f3f0682250b6cf8331b7ee68fd8:3"));
        // Padding entries have a count of 0; garbage is ignored.
        assert!(!query.is_listed_in("1E4C9B93F3F0682250B6CF8331B7EE68FD8:0"));
        assert!(!query.is_listed_in("not a range answer\n:\n1E4C9B93F3F0682250B6CF8331B7EE68FD8"));
        assert!(!BreachQuery::new(&Password::presented("correct horse battery staple")).is_listed_in(range));
    }

    #[test]
    fn refuses_stored_hashes_beyond_bounds() {
        for greedy in [
            HashParams { memory_kib: 4_194_304, ..HashParams::OWASP_MINIMUM },
            HashParams { iterations: 1_000, ..HashParams::OWASP_MINIMUM },
            HashParams { parallelism: 64, ..HashParams::OWASP_MINIMUM },
        ] {
            assert!(matches!(
                verify_password(&Password::presented("whatever1"), &dummy_password_hash(&greedy)),
                Err(PasswordHashError::ParametersOutOfBounds)
            ));
        }
        // Another algorithm (argon2i, or a cheap one) is not accepted in place of Argon2id.
        let argon2i = dummy_password_hash(&HashParams::OWASP_MINIMUM).replace("argon2id", "argon2i");
        assert!(matches!(
            verify_password(&Password::presented("whatever1"), &argon2i),
            Err(PasswordHashError::Malformed(_))
        ));
        assert!(matches!(
            verify_password(&Password::presented("whatever1"), "not a phc string"),
            Err(PasswordHashError::Malformed(_))
        ));
    }
}
