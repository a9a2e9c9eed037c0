//! Email addresses as edgeid compares them: trimmed, NFC, lower-cased, the domain mapped to
//! A-labels by IDNA (UTS #46), no domain label that mixes scripts, bounded and well formed.

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
    /// A domain label mixing scripts (Latin with Cyrillic, say) is how look-alike domains are
    /// made: refused rather than guessed at.
    #[error("a label of the email's domain mixes scripts")]
    MixedScript,
}

impl Email {
    /// Normalises `raw` (trim, Unicode NFC, lower-case, the domain to A-labels) and checks it
    /// against the WHATWG "valid e-mail address" grammar, widened to Unicode letters in the
    /// local part for internationalised addresses. Every spelling of one internationalised
    /// domain (`Bücher.example`, `bu\u{308}cher.example`, `xn--bcher-kva.example`) gives the same
    /// address, so one mailbox is one account. Characters that could break out of a mail header
    /// (CR, LF, `<`, `>`, `,`, `;`, quotes) are never accepted.
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
        if !is_valid_local_part(local) {
            return Err(EmailError::Syntax);
        }
        let domain = ascii_domain(domain)?;
        let address = format!("{local}@{domain}");
        if address.len() > MAX_EMAIL_BYTES {
            return Err(EmailError::TooLong);
        }
        Ok(Email(address))
    }

    /// The mailbox the address delivers to, for counting mail to it: `local+tag@domain` is
    /// `local@domain` (sub-addressing, RFC 5233, as the big providers do it).
    pub fn mailbox(&self) -> String {
        match self.0.split_once('@') {
            Some((local, domain)) => {
                let base = local.split_once('+').map_or(local, |(base, _)| base);
                format!("{}@{domain}", if base.is_empty() { local } else { base })
            }
            None => self.0.clone(),
        }
    }

    /// The address as pages and logs show it without giving it away: the local part's first
    /// character, then `•••` (`j•••@example.com`).
    pub fn masked(&self) -> String {
        match self.0.split_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                format!("{first}\u{2022}\u{2022}\u{2022}@{domain}")
            }
            None => "\u{2022}\u{2022}\u{2022}".to_owned(),
        }
    }

    /// The domain, in A-labels.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
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

/// The domain in A-labels (IDNA UTS #46, non-transitional, STD3 rules: letters, digits and
/// hyphens only), each label of at most one script.
fn ascii_domain(domain: &str) -> Result<String, EmailError> {
    if domain.is_empty() || domain.ends_with('.') {
        return Err(EmailError::Syntax);
    }
    let ascii = idna::domain_to_ascii_strict(domain).map_err(|_| EmailError::Syntax)?;
    let is_ldh = !ascii.is_empty()
        && ascii.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_DOMAIN_LABEL_BYTES
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !is_ldh {
        return Err(EmailError::Syntax);
    }
    let (unicode, decoded) = idna::domain_to_unicode(&ascii);
    if decoded.is_err() {
        return Err(EmailError::Syntax);
    }
    if unicode.split('.').any(mixes_scripts) {
        return Err(EmailError::MixedScript);
    }
    Ok(ascii)
}

/// Whether a label holds letters of more than one script, the combinations one language writes
/// together excepted (UTS #39 §5.2 "highly restrictive": Latin with Han and the Japanese kana,
/// with Han and Bopomofo, or with Han and Hangul). Digits and hyphens belong to every script.
fn mixes_scripts(label: &str) -> bool {
    use unicode_script::{Script, UnicodeScript};
    let mut scripts: Vec<Script> = Vec::new();
    for c in label.chars() {
        let script = c.script();
        if matches!(script, Script::Common | Script::Inherited | Script::Unknown) || scripts.contains(&script) {
            continue;
        }
        scripts.push(script);
    }
    let within = |allowed: &[Script]| scripts.iter().all(|script| allowed.contains(script));
    scripts.len() > 1
        && !within(&[Script::Latin, Script::Han, Script::Hiragana, Script::Katakana])
        && !within(&[Script::Latin, Script::Han, Script::Bopomofo])
        && !within(&[Script::Latin, Script::Han, Script::Hangul])
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
        check("ÉMILE@exämple.de", Ok("émile@xn--exmple-cua.de"));
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
    fn one_internationalised_domain_is_one_address_in_a_labels() {
        let expected = "anna@xn--bcher-kva.example";
        check("anna@Bücher.example", Ok(expected));
        check("anna@bu\u{308}cher.example", Ok(expected));
        check("anna@XN--BCHER-KVA.example", Ok(expected));
        // UTS #46 maps full-width letters and the ideographic full stop, as browsers do.
        check("anna@ｂüｃｈｅｒ\u{3002}example", Ok(expected));
        check("anna@faß.de", Ok("anna@xn--fa-hia.de"));
        check("anna@例え.テスト", Ok("anna@xn--r8jz45g.xn--zckzah"));
        // Invalid Punycode, and characters STD3 forbids, are refused.
        check("anna@xn--zz.example", Err(EmailError::Syntax));
        check("anna@ex_ample.com", Err(EmailError::Syntax));
        check("anna@exa%mple.com", Err(EmailError::Syntax));
    }

    #[test]
    fn refuses_labels_that_mix_scripts() {
        // "аpple" with a Cyrillic а; "paypal" with a Cyrillic р.
        check("anna@\u{430}pple.com", Err(EmailError::MixedScript));
        check("anna@\u{440}aypal.com", Err(EmailError::MixedScript));
        check("anna@xn--pple-43d.com", Err(EmailError::MixedScript));
        // One script per label is fine, as are scripts one language writes together.
        check("anna@пример.рф", Ok("anna@xn--e1afmkfd.xn--p1ai"));
        check("anna@apple.рф", Ok("anna@apple.xn--p1ai"));
        assert!(Email::parse("anna@東京tokyo.jp").is_ok());
        assert!(Email::parse("anna@한국어korea.kr").is_ok());
    }

    #[test]
    fn mailboxes_fold_sub_addresses() {
        let email = Email::parse("Alice+Newsletter@Example.com").unwrap();
        assert_eq!(email.as_str(), "alice+newsletter@example.com");
        assert_eq!(email.mailbox(), "alice@example.com");
        assert_eq!(email.domain(), "example.com");
        assert_eq!(Email::parse("alice@example.com").unwrap().mailbox(), "alice@example.com");
        assert_eq!(Email::parse("+tag@example.com").unwrap().mailbox(), "+tag@example.com");
        assert_eq!(email.masked(), "a\u{2022}\u{2022}\u{2022}@example.com");
        assert!(!email.masked().contains("alice"));
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
