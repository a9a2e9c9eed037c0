//! Short verification codes: six digits a person can type, sent in the same mail as the link
//! for when the link cannot be opened where the code is needed (another device, a mail client
//! that mangles links). Six digits are guessable, so a code lives 15 minutes and dies after
//! five wrong tries, and every try first draws on budgets per account (which a resend does not
//! reset: `RATE_LIMIT_CODE_PER_ACCOUNT`), per client network and per email domain. Codes are
//! stored only as an HMAC keyed from `KEY_ENCRYPTION_KEY` and bound to the address.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::email::Email;
use crate::ports::{Crypto, EntropyError};

pub const CODE_DIGITS: usize = 6;

/// Wrong tries after which a code is dead (its link keeps working).
pub const MAX_WRONG_TRIES: u32 = 5;

/// How long a code lives: far shorter than its link (24 h), since it is guessable.
pub const CODE_TTL_SECONDS: i64 = 15 * 60;

/// A fresh code, uniformly distributed over 000000–999999.
pub fn generate(crypto: &impl Crypto) -> Result<String, EntropyError> {
    loop {
        let mut bytes = [0u8; 4];
        crypto.fill(&mut bytes)?;
        let value = u32::from_le_bytes(bytes);
        // Reject the top partial range so that every code is equally likely.
        if value < u32::MAX - u32::MAX % 1_000_000 {
            return Ok(format!("{:06}", value % 1_000_000));
        }
    }
}

/// A presented code with the spaces and dashes people type removed, if it is six digits.
pub fn normalise(raw: &str) -> Option<String> {
    let digits: String = raw.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
    (digits.len() == CODE_DIGITS && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// The code as a person reads it: `123 456`.
pub fn display(code: &str) -> String {
    match code.split_at_checked(3) {
        Some((first, second)) => format!("{first} {second}"),
        None => code.to_owned(),
    }
}

/// The stored form of a code: HMAC-SHA256 over the address and the code, hex.
pub fn code_hash(key_encryption_key: &[u8; 32], email: &Email, code: &str) -> String {
    let key = crate::domain::sealing::derive_subkey(key_encryption_key, b"edgeid short codes v1", b"code hash");
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&key) else { return String::new() };
    mac.update(email.as_str().as_bytes());
    mac.update(b"\0");
    mac.update(code.as_bytes());
    base16ct::lower::encode_string(&mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_typed_loosely() {
        assert_eq!(normalise("123456").as_deref(), Some("123456"));
        assert_eq!(normalise(" 123 456 ").as_deref(), Some("123456"));
        assert_eq!(normalise("123-456").as_deref(), Some("123456"));
        for bad in ["12345", "1234567", "12345a", "１２３４５６", ""] {
            assert_eq!(normalise(bad), None, "{bad}");
        }
        assert_eq!(display("012345"), "012 345");
    }

    #[test]
    fn hashes_bind_the_code_to_the_address_and_the_key() {
        let a = Email::parse("a@example.com").unwrap();
        let b = Email::parse("b@example.com").unwrap();
        let hash = code_hash(&[1; 32], &a, "123456");
        assert_eq!(hash, code_hash(&[1; 32], &a, "123456"));
        assert_ne!(hash, code_hash(&[1; 32], &b, "123456"));
        assert_ne!(hash, code_hash(&[2; 32], &a, "123456"));
        assert_ne!(hash, code_hash(&[1; 32], &a, "123457"));
        assert_eq!(hash.len(), 64);
    }
}
