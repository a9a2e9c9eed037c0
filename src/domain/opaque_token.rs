//! Opaque bearer secrets (verification, reset and refresh tokens, authorization codes, browser
//! session cookies): the account's bucket (three hex digits, `domain::shard`) and 256 random
//! bits, shown once, stored only as their SHA-256.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::domain::sealing;
use crate::domain::shard::{UserBucket, BUCKET_PREFIX_CHARS};
use crate::ports::{Crypto, EntropyError};

const TOKEN_BYTES: usize = 32;
/// Base64url without padding of 32 bytes.
const RANDOM_CHARS: usize = 43;
/// The bucket prefix and the random part.
const TOKEN_CHARS: usize = BUCKET_PREFIX_CHARS + RANDOM_CHARS;

/// A freshly generated token. The plaintext exists only on its way to the mail or the token
/// response; the store sees [`OpaqueToken::hash`].
pub struct OpaqueToken {
    plaintext: String,
    hash: TokenHash,
}

/// The SHA-256 of a token, hex-encoded: what the store keys rows by. A fast hash is right here:
/// the token has 256 bits of entropy, so there is nothing to brute-force.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token is not of the issued form")]
pub struct MalformedToken;

impl OpaqueToken {
    /// A token of an account in `bucket`.
    pub fn generate(crypto: &impl Crypto, bucket: UserBucket) -> Result<OpaqueToken, EntropyError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        crypto.fill(&mut bytes)?;
        let plaintext = format!("{}{}", bucket.prefix(), URL_SAFE_NO_PAD.encode(bytes));
        let hash = TokenHash::of_plaintext(&plaintext);
        Ok(OpaqueToken { plaintext, hash })
    }

    /// A secret that names no account (a client's secret): 256 random bits, no bucket. Its
    /// holder presents it to client authentication, which hashes it as it comes.
    pub fn secret(crypto: &impl Crypto) -> Result<OpaqueToken, EntropyError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        crypto.fill(&mut bytes)?;
        let plaintext = URL_SAFE_NO_PAD.encode(bytes);
        let hash = TokenHash::of_plaintext(&plaintext);
        Ok(OpaqueToken { plaintext, hash })
    }

    pub fn plaintext(&self) -> &str {
        &self.plaintext
    }

    pub fn hash(&self) -> &TokenHash {
        &self.hash
    }
}

impl fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpaqueToken").field("hash", &self.hash).finish_non_exhaustive()
    }
}

impl TokenHash {
    /// Hashes a token a client presented, after checking it has the issued form, so that
    /// garbage never reaches the store.
    pub fn of_presented(presented: &str) -> Result<TokenHash, MalformedToken> {
        Ok(TokenHash::routed(presented)?.1)
    }

    /// [`TokenHash::of_presented`], and the bucket whose shard holds the token.
    pub fn routed(presented: &str) -> Result<(UserBucket, TokenHash), MalformedToken> {
        let bucket = UserBucket::of_issued(presented).ok_or(MalformedToken)?;
        let well_formed = presented.len() == TOKEN_CHARS
            && URL_SAFE_NO_PAD.decode(&presented[BUCKET_PREFIX_CHARS..]).is_ok_and(|bytes| bytes.len() == TOKEN_BYTES);
        if !well_formed {
            return Err(MalformedToken);
        }
        Ok((bucket, TokenHash::of_plaintext(presented)))
    }

    fn of_plaintext(plaintext: &str) -> TokenHash {
        let digest = Sha256::digest(plaintext.as_bytes());
        TokenHash(base16ct::lower::encode_string(&digest))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &self.0[..8])
    }
}

/// Seals `successor` so that only the holder of `previous` (a token's plaintext) can open it:
/// the sealing key is SHA-256 of a domain tag and `previous`.
pub fn seal_successor(previous: &str, successor: &OpaqueToken, crypto: &impl Crypto) -> Result<String, EntropyError> {
    sealing::seal(&successor_key(previous), b"", successor.plaintext.as_bytes(), crypto)
}

/// Opens what [`seal_successor`] sealed; `None` if `previous` is not the token it was sealed for.
pub fn open_successor(previous: &str, sealed: &str) -> Option<String> {
    String::from_utf8(sealing::open(&successor_key(previous), b"", sealed)?).ok()
}

fn successor_key(previous: &str) -> [u8; 32] {
    Sha256::new().chain_update(b"edgeid refresh successor v1\0").chain_update(previous.as_bytes()).finalize().into()
}

/// A random identifier (users, sessions, JWT ids): 128 bits, base64url.
pub fn random_id(crypto: &impl Crypto) -> Result<String, EntropyError> {
    let mut bytes = [0u8; 16];
    crypto.fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(byte: u8) -> crate::ports::TestCrypto<impl Fn(&mut [u8])> {
        crate::ports::TestCrypto(move |buffer: &mut [u8]| buffer.fill(byte))
    }

    fn bucket() -> UserBucket {
        UserBucket::new(0x2a7).unwrap()
    }

    #[test]
    fn plaintext_carries_256_bits_and_round_trips_to_its_hash() {
        let token = OpaqueToken::generate(&fixed(0xab), bucket()).unwrap();
        assert_eq!(token.plaintext().len(), TOKEN_CHARS);
        assert!(token.plaintext().starts_with("2a7"));
        assert_eq!(URL_SAFE_NO_PAD.decode(&token.plaintext()[3..]).unwrap(), vec![0xab; 32]);
        assert_eq!(&TokenHash::of_presented(token.plaintext()).unwrap(), token.hash());
        assert_eq!(TokenHash::routed(token.plaintext()).unwrap().0, bucket());
        assert_eq!(token.hash().as_str().len(), 64);
        assert_ne!(token.hash().as_str(), token.plaintext());
    }

    #[test]
    fn only_the_previous_token_opens_its_successor() {
        let previous = OpaqueToken::generate(&fixed(1), bucket()).unwrap();
        let other = OpaqueToken::generate(&fixed(2), bucket()).unwrap();
        let successor = OpaqueToken::generate(&fixed(3), bucket()).unwrap();
        let sealed = seal_successor(previous.plaintext(), &successor, &fixed(4)).unwrap();
        assert_eq!(open_successor(previous.plaintext(), &sealed).as_deref(), Some(successor.plaintext()));
        assert_eq!(open_successor(other.plaintext(), &sealed), None);
        assert!(!sealed.contains(successor.plaintext()));
        let mut tampered = sealed.into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(open_successor(previous.plaintext(), std::str::from_utf8(&tampered).unwrap()), None);
    }

    #[test]
    fn refuses_malformed_presentations() {
        let good = OpaqueToken::generate(&fixed(1), bucket()).unwrap().plaintext().to_owned();
        for bad in [
            String::new(),
            good[..45].to_owned(),
            format!("{good}A"),
            format!("{}=", &good[..45]),
            // Issued before shards: no bucket.
            good[3..].to_owned(),
            format!("x{}", &good[1..]),
            format!("400{}", &good[3..]),
            good.replace(|c: char| c.is_ascii_alphabetic(), "+"),
            "a".repeat(46).replace('a', "\u{e9}"),
        ] {
            assert_eq!(TokenHash::of_presented(&bad), Err(MalformedToken), "{bad:?}");
        }
    }
}
