//! Authenticated encryption of small secrets at rest (private keys, refresh-token successors):
//! XChaCha20-Poly1305 with a random 192-bit nonce, base64url of nonce ‖ ciphertext. And the
//! authentication of what edgeid keeps outside D1 in the clear (the signing-key snapshot in KV):
//! HMAC-SHA256 under a key derived from the key-encryption key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ports::{Crypto, EntropyError};

const NONCE_BYTES: usize = 24;

/// Seals `plaintext` under `key`, bound to `associated_data` (which must match on opening).
pub fn seal(
    key: &[u8; 32],
    associated_data: &[u8],
    plaintext: &[u8],
    crypto: &impl Crypto,
) -> Result<String, EntropyError> {
    let mut nonce = [0u8; NONCE_BYTES];
    crypto.fill(&mut nonce)?;
    let ciphertext = XChaCha20Poly1305::new(&Key::from(*key))
        .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: associated_data })
        .map_err(|_| EntropyError("sealing failed".to_owned()))?;
    let mut sealed = nonce.to_vec();
    sealed.extend(ciphertext);
    Ok(URL_SAFE_NO_PAD.encode(sealed))
}

/// Opens what [`seal`] sealed; `None` for a wrong key, wrong associated data or tampering.
pub fn open(key: &[u8; 32], associated_data: &[u8], sealed: &str) -> Option<Vec<u8>> {
    let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
    if bytes.len() < NONCE_BYTES {
        return None;
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
    let nonce = XNonce::from(<[u8; NONCE_BYTES]>::try_from(nonce).ok()?);
    XChaCha20Poly1305::new(&Key::from(*key)).decrypt(&nonce, Payload { msg: ciphertext, aad: associated_data }).ok()
}

/// A 32-byte key for one use, derived from the key-encryption key with HKDF-SHA256: `salt`
/// names the use and its version, `info` what the key does. Every key edgeid derives from the
/// KEK comes from here, each with its own salt, so no two uses share a key.
pub fn derive_subkey(key_encryption_key: &[u8; 32], salt: &[u8], info: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's output limit: expand cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(salt), key_encryption_key).expand(info, &mut key);
    key
}

/// The key that authenticates a value edgeid stores outside D1 (the signing-key snapshot in KV):
/// HKDF-SHA256 of the key-encryption key, for this use only. Whoever can write KV but holds no
/// key-encryption key can then neither forge a value nor edit one (its `read_at`, its keys),
/// only replay one as it was written, or delete it.
#[derive(Clone)]
pub struct ValueKey([u8; 32]);

impl std::fmt::Debug for ValueKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ValueKey(..)")
    }
}

impl ValueKey {
    pub fn derive(key_encryption_key: &[u8; 32]) -> ValueKey {
        let key = derive_subkey(key_encryption_key, b"edgeid stored values v1", b"value tags");
        ValueKey(key)
    }

    /// HMAC takes keys of any length, so this is always `Some`.
    fn mac(&self, name: &str, value: &[u8]) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).ok()?;
        // The name first, ended by a NUL (no name holds one): a tag holds for one name only.
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        Some(mac)
    }

    /// The tag of `value` stored under `name` (base64url).
    pub fn tag(&self, name: &str, value: &[u8]) -> String {
        self.mac(name, value).map(|mac| URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())).unwrap_or_default()
    }

    /// Whether `tag` is the tag of `value` under `name`, compared in constant time.
    pub fn verify(&self, name: &str, value: &[u8], tag: &str) -> bool {
        match (URL_SAFE_NO_PAD.decode(tag), self.mac(name, value)) {
            (Ok(tag), Some(mac)) => mac.verify_slice(&tag).is_ok(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_only_with_the_same_key_and_associated_data() {
        let counter = std::cell::Cell::new(0u8);
        let crypto = crate::ports::TestCrypto(|buffer: &mut [u8]| {
            counter.set(counter.get() + 1);
            buffer.fill(counter.get());
        });
        let sealed = seal(&[1; 32], b"kid-1", b"private key", &crypto).unwrap();
        assert_eq!(open(&[1; 32], b"kid-1", &sealed).as_deref(), Some(&b"private key"[..]));
        assert_eq!(open(&[2; 32], b"kid-1", &sealed), None);
        assert_eq!(open(&[1; 32], b"kid-2", &sealed), None);
        assert_eq!(open(&[1; 32], b"kid-1", &sealed[..sealed.len() - 2]), None);
        assert_eq!(open(&[1; 32], b"kid-1", "!"), None);
        // A fresh nonce every time: the same plaintext seals differently.
        assert_ne!(seal(&[1; 32], b"kid-1", b"private key", &crypto).unwrap(), sealed);
    }

    #[test]
    fn a_value_tag_holds_for_its_key_name_and_value_only() {
        let key = ValueKey::derive(&[1; 32]);
        let tag = key.tag("signing-keys", b"{}");
        assert!(key.verify("signing-keys", b"{}", &tag));
        assert!(!ValueKey::derive(&[2; 32]).verify("signing-keys", b"{}", &tag));
        assert!(!key.verify("signing-keys", b"{ }", &tag));
        assert!(!key.verify("signing-key", b"s{}", &tag), "the name and the value are kept apart");
        assert!(!key.verify("signing-keys", b"{}", &tag[..tag.len() - 1]));
        assert!(!key.verify("signing-keys", b"{}", ""));
        assert!(!key.verify("signing-keys", b"{}", "!"));
        // Derived: not the key-encryption key itself.
        assert_ne!(key.0, [1; 32]);
    }
}
