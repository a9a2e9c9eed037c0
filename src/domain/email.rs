//! Email addresses as edgeid compares them: trimmed, NFC, lower-cased, bounded and well formed.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// The longest address SMTP can carry (RFC 5321 §4.5.3.1.3 path limit minus the brackets).
pub const MAX_EMAIL_BYTES: usize = 254;
const MAX_LOCAL_PART_BYTES: usize = 64;
const MAX_DOMAIN_LABEL_BYTES: usize = 63;

/// A normalised, syntactically valid email address. The only way to get one is [`Email::parse`],
/// so every address that reaches the store or the mailer has been checked once, here.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("email is empty")]
    Empty,
    #[error("email is longer than {MAX_EMAIL_BYTES} bytes")]
    TooLong,
    #[error("email contains a control character")]
    ControlCharacter,
    #[error("email is not a valid address")]
    Syntax,
}

impl Email {
    /// Normalises `raw` (trim, Unicode NFC, lower-case) and checks it against the WHATWG
    /// "valid e-mail address" grammar, widened to Unicode letters for internationalised
    /// addresses. Characters that could break out of a mail header (CR, LF, `<`, `>`, `,`, `;`,
    /// quotes) are never accepted.
    pub fn parse(raw: &str) -> Result<Email, EmailError> {
        if raw.chars().any(char::is_control) {
            return Err(EmailError::ControlCharacter);
        }
        let normalised: String = raw.trim().nfc().collect::<String>().to_lowercase();
        if normalised.is_empty() {
            return Err(EmailError::Empty);
        }
        if normalised.len() > MAX_EMAIL_BYTES {
            return Err(EmailError::TooLong);
        }
        let Some((local, domain)) = normalised.split_once('@') else {
            return Err(EmailError::Syntax);
        };
        if !is_valid_local_part(local) || !is_valid_domain(domain) {
            return Err(EmailError::Syntax);
        }
        Ok(Email(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_valid_local_part(local: &str) -> bool {
    const SPECIALS: &str = ".!#$%&'*+/=?^_`{|}~-";
    !local.is_empty()
        && local.len() <= MAX_LOCAL_PART_BYTES
        && local.chars().all(|c| c.is_alphanumeric() || SPECIALS.contains(c))
}

fn is_valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_DOMAIN_LABEL_BYTES
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(raw: &str, expected: Result<&str, EmailError>) {
        let actual = Email::parse(raw);
        assert_eq!(actual.as_ref().map(Email::as_str), expected.as_ref().map(|s| *s), "{raw:?}");
    }

    #[test]
    fn normalises() {
        check("  Alice@Example.COM ", Ok("alice@example.com"));
        // "é" as e + combining acute (NFD) becomes the single NFC code point.
        check("jose\u{301}@example.com", Ok("jos\u{e9}@example.com"));
        check("ÉMILE@exämple.de", Ok("émile@exämple.de"));
        check("first.last+tag@sub.example.co.uk", Ok("first.last+tag@sub.example.co.uk"));
        check("dev@localhost", Ok("dev@localhost"));
    }

    #[test]
    fn refuses_bad_syntax() {
        for raw in [
            "plainaddress",
            "@example.com",
            "alice@",
            "alice@@example.com",
            "a@b@example.com",
            "alice@example..com",
            "alice@.example.com",
            "alice@example.com.",
            "alice@-example.com",
            "alice@exa_mple.com",
            "ali ce@example.com",
            "\"alice\"@example.com",
            "alice<x>@example.com",
            "alice,bob@example.com",
            "alice;bob@example.com",
            "alice@[127.0.0.1]",
        ] {
            check(raw, Err(EmailError::Syntax));
        }
        check("   ", Err(EmailError::Empty));
        check("", Err(EmailError::Empty));
    }

    #[test]
    fn refuses_control_characters_anywhere() {
        for raw in
            ["alice@example.com\r\nBcc: x@y.z", "alice\u{0}@example.com", "alice@example.com\n", "\talice@example.com"]
        {
            check(raw, Err(EmailError::ControlCharacter));
        }
    }

    #[test]
    fn bounds_length_in_bytes() {
        let local = "a".repeat(64);
        let domain_254 = format!("{}.{}.{}.{}", "b".repeat(63), "c".repeat(63), "d".repeat(63), "e".repeat(60 - 3));
        let at_limit = format!("{local}@{}", &domain_254[..254 - 65]);
        assert_eq!(at_limit.len(), 254);
        check(&at_limit, Ok(&at_limit));
        check(&format!("{at_limit}x"), Err(EmailError::TooLong));
        check(&format!("{}@example.com", "a".repeat(65)), Err(EmailError::Syntax));
        // Multi-byte characters count as bytes, not characters.
        check(&format!("{}@example.com", "é".repeat(122)), Err(EmailError::TooLong));
    }
}
