//! Authenticated encryption of small secrets at rest (private keys, refresh-token successors):
//! XChaCha20-Poly1305 with a random 192-bit nonce, base64url of nonce ‖ ciphertext.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

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
}
