//! Signing keys: parsed from the `SIGNING_KEYS` secret (a private JWK or JWK Set), identified by
//! their RFC 7638 thumbprint, published as a JWKS of public parts only.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_compact::alg::{Ed25519, Es256};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{AlgorithmExt, Claims, Header, UntrustedToken};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// The JWS algorithms edgeid signs with. The verifier side never reads `alg` from a token: it
/// takes the algorithm from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlg {
    Es256,
    EdDsa,
}

impl SigningAlg {
    pub fn jws_name(self) -> &'static str {
        match self {
            SigningAlg::Es256 => "ES256",
            SigningAlg::EdDsa => "EdDSA",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("SIGNING_KEYS is not a JWK or a JWK Set: {0}")]
    NotJson(String),
    #[error("key {index} of SIGNING_KEYS is not a supported private key (P-256 EC or Ed25519 OKP): {reason}")]
    Unsupported { index: usize, reason: String },
    #[error("SIGNING_KEYS holds no private key for {0}")]
    NoKeyForAlgorithm(&'static str),
}

#[derive(Debug, thiserror::Error)]
#[error("token signing failed: {0}")]
pub struct SigningError(String);

/// Why a presented JWT was refused. Only logged: clients see one `invalid_token`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejected {
    #[error("not a compact JWS")]
    Malformed,
    #[error("header names a key source or critical extension (jku, x5u, jwk, x5c, crit)")]
    ForbiddenHeader,
    #[error("typ is not {0}")]
    WrongType(&'static str),
    #[error("alg is not the configured algorithm")]
    WrongAlgorithm,
    #[error("kid names no published key")]
    UnknownKey,
    #[error("signature or claims invalid: {0}")]
    Invalid(String),
}

enum PrivateKey {
    Es256(p256::ecdsa::SigningKey),
    EdDsa(ed25519_compact::SecretKey),
}

struct Key {
    kid: String,
    private: PrivateKey,
    /// The public JWK as published: key parameters plus `kid`, `alg` and `use`.
    public_jwk: Map<String, Value>,
}

/// The keys of one configured algorithm: the first signs, all are published so that tokens
/// signed by a key being rotated out keep verifying.
pub struct SigningKeys {
    alg: SigningAlg,
    keys: Vec<Key>,
    jwks_json: String,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|key| key.kid.as_str()).collect();
        f.debug_struct("SigningKeys").field("alg", &self.alg).field("kids", &kids).finish_non_exhaustive()
    }
}

impl SigningKeys {
    /// Parses the secret and keeps the keys of `alg`, in the order given.
    pub fn from_secret(secret: &str, alg: SigningAlg) -> Result<SigningKeys, KeyError> {
        let value: Value = serde_json::from_str(secret).map_err(|err| KeyError::NotJson(err.to_string()))?;
        let jwks = match value.get("keys") {
            Some(Value::Array(keys)) => keys.clone(),
            Some(_) => return Err(KeyError::NotJson("\"keys\" is not an array".to_owned())),
            None => vec![value],
        };
        let mut keys = Vec::new();
        for (index, jwk) in jwks.iter().enumerate() {
            let unsupported = |reason: String| KeyError::Unsupported { index, reason };
            let parsed: JsonWebKey<'_> =
                serde_json::from_value(jwk.clone()).map_err(|err| unsupported(err.to_string()))?;
            let private = match &parsed {
                JsonWebKey::EllipticCurve { .. } => PrivateKey::Es256(
                    p256::ecdsa::SigningKey::try_from(&parsed).map_err(|err| unsupported(err.to_string()))?,
                ),
                JsonWebKey::KeyPair { .. } => PrivateKey::EdDsa(
                    ed25519_compact::SecretKey::try_from(&parsed).map_err(|err| unsupported(err.to_string()))?,
                ),
                _ => return Err(unsupported("only EC P-256 and OKP Ed25519 keys are supported".to_owned())),
            };
            let key_alg = match private {
                PrivateKey::Es256(_) => SigningAlg::Es256,
                PrivateKey::EdDsa(_) => SigningAlg::EdDsa,
            };
            if key_alg != alg {
                continue;
            }
            keys.push(Key::new(private, alg));
        }
        if keys.is_empty() {
            return Err(KeyError::NoKeyForAlgorithm(alg.jws_name()));
        }
        let published: Vec<&Map<String, Value>> = keys.iter().map(|key| &key.public_jwk).collect();
        let jwks_json = json!({ "keys": published }).to_string();
        Ok(SigningKeys { alg, keys, jwks_json })
    }

    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The `kid` of the key that signs new tokens.
    pub fn active_kid(&self) -> &str {
        self.active().kid.as_str()
    }

    fn active(&self) -> &Key {
        // `from_secret` refuses an empty key list, so there is always a first key.
        &self.keys[0]
    }

    /// The JWKS document (`{"keys": [...]}`), public parts only.
    pub fn jwks_json(&self) -> &str {
        &self.jwks_json
    }

    /// Checks a JWT's header and signature against the published keys and returns its claims,
    /// unvalidated in time. The algorithm is the configured one, never the header's: a token whose
    /// `alg` differs (`none`, `HS256`, …) is refused before any key is touched, as is one that
    /// tries to bring its own key (`jku`, `x5u`, `jwk`, `x5c`) or demands extensions (`crit`).
    pub fn verify<T: DeserializeOwned>(&self, token: &str, typ: &'static str) -> Result<Claims<T>, TokenRejected> {
        let header_segment = token.split('.').next().ok_or(TokenRejected::Malformed)?;
        let header: Map<String, Value> = URL_SAFE_NO_PAD
            .decode(header_segment)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(TokenRejected::Malformed)?;
        if ["jku", "x5u", "jwk", "x5c", "crit"].iter().any(|name| header.contains_key(*name)) {
            return Err(TokenRejected::ForbiddenHeader);
        }
        if header.get("typ").and_then(Value::as_str) != Some(typ) {
            return Err(TokenRejected::WrongType(typ));
        }
        if header.get("alg").and_then(Value::as_str) != Some(self.alg.jws_name()) {
            return Err(TokenRejected::WrongAlgorithm);
        }
        let kid = header.get("kid").and_then(Value::as_str).ok_or(TokenRejected::UnknownKey)?;
        let key = self.keys.iter().find(|key| key.kid == kid).ok_or(TokenRejected::UnknownKey)?;
        let untrusted = UntrustedToken::new(token).map_err(|_| TokenRejected::Malformed)?;
        let invalid = |err: jwt_compact::ValidationError| TokenRejected::Invalid(err.to_string());
        let token = match &key.private {
            PrivateKey::Es256(private) => {
                Es256.validator::<T>(private.verifying_key()).validate(&untrusted).map_err(invalid)?
            }
            PrivateKey::EdDsa(private) => {
                Ed25519.validator::<T>(&private.public_key()).validate(&untrusted).map_err(invalid)?
            }
        };
        Ok(token.into_parts().1)
    }

    /// Signs `claims` with the active key; `typ` goes into the header with the key's `kid`.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &Claims<T>) -> Result<String, SigningError> {
        let key = self.active();
        let header = Header::empty().with_key_id(key.kid.clone()).with_token_type(typ);
        let signed = match &key.private {
            PrivateKey::Es256(private) => Es256.token(&header, claims, private),
            PrivateKey::EdDsa(private) => Ed25519.token(&header, claims, private),
        };
        signed.map_err(|err| SigningError(err.to_string()))
    }
}

impl Key {
    fn new(private: PrivateKey, alg: SigningAlg) -> Key {
        let public = match &private {
            PrivateKey::Es256(key) => public_members(&JsonWebKey::from(key.verifying_key())),
            PrivateKey::EdDsa(key) => public_members(&JsonWebKey::from(&key.public_key())),
        };
        let kid = thumbprint(&public);
        let mut public_jwk = public;
        public_jwk.insert("kid".to_owned(), Value::String(kid.clone()));
        public_jwk.insert("alg".to_owned(), Value::String(alg.jws_name().to_owned()));
        public_jwk.insert("use".to_owned(), Value::String("sig".to_owned()));
        Key { kid, private, public_jwk }
    }
}

/// The required public members of a JWK (RFC 7638 §3.2), from jwt-compact's serialisation.
fn public_members(jwk: &JsonWebKey<'_>) -> Map<String, Value> {
    match serde_json::to_value(jwk) {
        Ok(Value::Object(members)) => members.into_iter().filter(|(name, _)| name != "d").collect(),
        _ => Map::new(),
    }
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace.
/// serde_json's `Map` is a `BTreeMap`, so it serialises in exactly that order.
fn thumbprint(required_members: &Map<String, Value>) -> String {
    let canonical = Value::Object(required_members.clone()).to_string();
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example key of RFC 7638 §3.1 is RSA; RFC 8037 Appendix A.3 gives an Ed25519 key and
    /// its thumbprint, which pins our canonical form to the specification.
    const RFC8037_ED25519: &str = r#"{"kty":"OKP","crv":"Ed25519",
        "d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
        "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;

    #[test]
    fn kid_is_the_rfc_7638_thumbprint() {
        let keys = SigningKeys::from_secret(RFC8037_ED25519, SigningAlg::EdDsa).unwrap();
        assert_eq!(keys.active_kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn jwks_publishes_public_parts_only() {
        let keys = SigningKeys::from_secret(RFC8037_ED25519, SigningAlg::EdDsa).unwrap();
        let jwks: Value = serde_json::from_str(keys.jwks_json()).unwrap();
        assert_eq!(
            jwks,
            json!({"keys": [{
                "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                "kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k", "alg": "EdDSA", "use": "sig"
            }]})
        );
    }

    #[test]
    fn refuses_unusable_secrets() {
        let public_only = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        let hmac = r#"{"kty":"oct","k":"c2VjcmV0"}"#;
        let cases = [
            ("not json", SigningAlg::Es256),
            (r#"{"keys": 5}"#, SigningAlg::Es256),
            (public_only, SigningAlg::EdDsa),
            (hmac, SigningAlg::Es256),
            (RFC8037_ED25519, SigningAlg::Es256),
        ];
        for (secret, alg) in cases {
            assert!(SigningKeys::from_secret(secret, alg).is_err(), "{secret}");
        }
    }
}
