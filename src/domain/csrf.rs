//! CSRF protection for the hosted forms: a signed double-submit token. A page sets a random
//! cookie (HttpOnly, SameSite=Lax) and puts HMAC-SHA256(key, cookie) in the form; a form
//! post must bring both, matching. A foreign site can neither read the cookie nor forge the
//! HMAC without the key, which is derived from `KEY_ENCRYPTION_KEY`. The API layer adds the
//! same-origin check (`Origin`, `Sec-Fetch-Site`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ports::{Crypto, EntropyError};

/// The form field that carries the token.
pub const FIELD: &str = "csrf_token";

/// The HMAC key, derived once from the key-encryption key.
#[derive(Clone)]
pub struct CsrfKey([u8; 32]);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(..)")
    }
}

impl CsrfKey {
    pub fn derive(key_encryption_key: &[u8; 32]) -> CsrfKey {
        let key = crate::domain::sealing::derive_subkey(key_encryption_key, b"edgeid csrf v1", b"form tokens");
        CsrfKey(key)
    }

    /// HMAC takes keys of any length, so this is always `Some`.
    fn mac(&self, cookie: &str) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).ok()?;
        mac.update(cookie.as_bytes());
        Some(mac)
    }

    /// The token for the form of a page whose browser holds `cookie`.
    pub fn form_token(&self, cookie: &str) -> String {
        self.mac(cookie).map(|mac| URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())).unwrap_or_default()
    }

    /// Whether `presented` is the token of `cookie`, compared in constant time.
    pub fn verify(&self, cookie: &str, presented: &str) -> bool {
        match (URL_SAFE_NO_PAD.decode(presented), self.mac(cookie)) {
            (Ok(tag), Some(mac)) if !cookie.is_empty() => mac.verify_slice(&tag).is_ok(),
            _ => false,
        }
    }
}

/// A fresh cookie value: 128 random bits.
pub fn new_cookie_value(crypto: &impl Crypto) -> Result<String, EntropyError> {
    let mut bytes = [0u8; 16];
    crypto.fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The cookie's name: with `__Host-` over HTTPS, so no subdomain can plant one.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-edgeid-csrf"
    } else {
        "edgeid-csrf"
    }
}

/// The `Set-Cookie` value for `value`.
pub fn set_cookie(value: &str, secure: bool) -> String {
    let name = cookie_name(secure);
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=7200{secure}")
}

/// The cookie's value from a `Cookie` header, if it is well formed.
pub fn cookie_value(cookie_header: Option<&str>, secure: bool) -> Option<&str> {
    let name = cookie_name(secure);
    cookie_header?
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(candidate, _)| *candidate == name)
        .map(|(_, value)| value)
        .filter(|value| value.len() == 22 && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_to_the_cookie_and_the_key() {
        let key = CsrfKey::derive(&[7; 32]);
        let token = key.form_token("cookie-one");
        assert!(key.verify("cookie-one", &token));
        assert!(!key.verify("cookie-two", &token));
        assert!(!CsrfKey::derive(&[8; 32]).verify("cookie-one", &token));
        assert!(!key.verify("cookie-one", &token[..token.len() - 1]));
        assert!(!key.verify("cookie-one", "not base64!"));
        assert!(!key.verify("", &key.form_token("")));
    }

    #[test]
    fn cookies_are_read_strictly() {
        let value = "AAAAAAAAAAAAAAAAAAAAAA";
        let header = format!("theme=dark; edgeid-csrf={value}; other=1");
        assert_eq!(cookie_value(Some(&header), false), Some(value));
        assert_eq!(cookie_value(Some(&header), true), None, "over HTTPS only the __Host- cookie counts");
        assert_eq!(cookie_value(Some("edgeid-csrf=short"), false), None);
        assert_eq!(cookie_value(None, false), None);
        assert!(set_cookie(value, true).starts_with("__Host-edgeid-csrf="));
        assert!(set_cookie(value, true).contains("; Secure"));
        assert!(set_cookie(value, false).contains("HttpOnly; SameSite=Lax"));
    }
}
