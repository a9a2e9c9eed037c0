//! Published keys and the JWS checks: keys typed by algorithm (a token never chooses it), the
//! header policy (no key sources, no critical extensions), `typ`, and the signature.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
#[cfg(target_arch = "wasm32")]
use jwt_compact::alg::Es256;
use jwt_compact::alg::{Ed25519, Rsa};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{AlgorithmExt, Claims, UntrustedToken};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The JWS algorithms edgeid signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlg {
    Es256,
    EdDsa,
    Rs256,
}

impl SigningAlg {
    pub fn jws_name(self) -> &'static str {
        match self {
            SigningAlg::Es256 => "ES256",
            SigningAlg::EdDsa => "EdDSA",
            SigningAlg::Rs256 => "RS256",
        }
    }

    pub fn from_jws_name(name: &str) -> Option<SigningAlg> {
        match name {
            "ES256" => Some(SigningAlg::Es256),
            "EdDSA" => Some(SigningAlg::EdDsa),
            "RS256" => Some(SigningAlg::Rs256),
            _ => None,
        }
    }
}

/// RSA keys shorter than this are refused, as RFC 7518 §3.3 requires.
pub const MIN_RSA_MODULUS_BITS: usize = 2048;

/// Why a presented JWT was refused. Only logged: clients see one `invalid_token`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejected {
    #[error("not a compact JWS")]
    Malformed,
    #[error("header names a key source or critical extension (jku, x5u, jwk, x5c, crit)")]
    ForbiddenHeader,
    #[error("typ is not {0}")]
    WrongType(String),
    #[error("alg is not the algorithm of the key named by kid")]
    WrongAlgorithm,
    #[error("kid names no published key")]
    UnknownKey,
    #[error("signature or claims invalid: {0}")]
    Invalid(String),
}

enum PublicKey {
    Es256(p256::ecdsa::VerifyingKey),
    EdDsa(ed25519_compact::PublicKey),
    Rs256(rsa::RsaPublicKey),
}

/// A published public key, parsed for verification.
struct VerifyingKey {
    kid: String,
    alg: SigningAlg,
    key: PublicKey,
}

impl VerifyingKey {
    fn from_public_jwk(jwk: &Map<String, Value>) -> Option<VerifyingKey> {
        let kid = jwk.get("kid")?.as_str()?.to_owned();
        let alg = SigningAlg::from_jws_name(jwk.get("alg")?.as_str()?)?;
        let parsed: JsonWebKey<'_> = serde_json::from_value(Value::Object(jwk.clone())).ok()?;
        let key = match alg {
            SigningAlg::Es256 => PublicKey::Es256(p256::ecdsa::VerifyingKey::try_from(&parsed).ok()?),
            SigningAlg::EdDsa => PublicKey::EdDsa(ed25519_compact::PublicKey::try_from(&parsed).ok()?),
            SigningAlg::Rs256 => {
                let key = rsa::RsaPublicKey::try_from(&parsed).ok()?;
                if rsa::traits::PublicKeyParts::n(&key).bits() < MIN_RSA_MODULUS_BITS {
                    return None;
                }
                PublicKey::Rs256(key)
            }
        };
        Some(VerifyingKey { kid, alg, key })
    }
}

/// A set of public keys (a JWKS), parsed for verification. The issuer verifies with its own;
/// downstream services with the JWKS they fetched (see [`crate::Verifier`]).
pub struct PublishedKeys {
    keys: Vec<VerifyingKey>,
}

impl fmt::Debug for PublishedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|key| key.kid.as_str())).finish()
    }
}

/// ES256 with ring's P-256 (natively, where verification is the hot path of a downstream
/// service): the signature over the signing input, then the claims. `ECDSA_P256_SHA256_FIXED`
/// takes the JWS form (`r‖s`) and accepts both S halves, as jwt-compact does.
#[cfg(not(target_arch = "wasm32"))]
fn verify_es256_natively<T: DeserializeOwned>(
    public: &p256::ecdsa::VerifyingKey,
    token: &str,
    untrusted: &UntrustedToken<'_>,
) -> Result<Claims<T>, TokenRejected> {
    let (signing_input, _) = token.rsplit_once('.').ok_or(TokenRejected::Malformed)?;
    let point = public.to_encoded_point(false);
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point.as_bytes());
    key.verify(signing_input.as_bytes(), untrusted.signature_bytes())
        .map_err(|_| TokenRejected::Invalid("signature has failed verification".to_owned()))?;
    untrusted.deserialize_claims_unchecked::<T>().map_err(|err| TokenRejected::Invalid(err.to_string()))
}

impl PublishedKeys {
    /// The keys of a JWK Set document. Keys of other types or algorithms, or without `kid` and
    /// `alg`, are skipped: they can never verify one of our tokens.
    pub fn from_jwks_json(jwks: &str) -> Option<PublishedKeys> {
        let document: Value = serde_json::from_str(jwks).ok()?;
        let keys = document.get("keys")?.as_array()?;
        Some(PublishedKeys {
            keys: keys.iter().filter_map(Value::as_object).filter_map(VerifyingKey::from_public_jwk).collect(),
        })
    }

    /// The keys among `jwks` (public JWKs) that can verify, skipped as in
    /// [`PublishedKeys::from_jwks_json`].
    pub fn from_jwks(jwks: &[Map<String, Value>]) -> PublishedKeys {
        PublishedKeys { keys: jwks.iter().filter_map(VerifyingKey::from_public_jwk).collect() }
    }

    /// Only the keys of `algorithms`: a verifier that pins its algorithms never verifies with
    /// another, whatever the JWKS holds.
    pub fn restricted_to(mut self, algorithms: &[SigningAlg]) -> PublishedKeys {
        self.keys.retain(|key| algorithms.contains(&key.alg));
        self
    }

    pub fn contains(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid == kid)
    }

    /// The algorithms of the keys, each once, in the order of the keys.
    pub fn algorithms(&self) -> Vec<SigningAlg> {
        let mut algorithms = Vec::new();
        for key in &self.keys {
            if !algorithms.contains(&key.alg) {
                algorithms.push(key.alg);
            }
        }
        algorithms
    }

    /// Checks a JWT's header and signature and returns its claims, unvalidated in time. The
    /// algorithm is that of the key the `kid` names, never the header's choice: a token whose
    /// `alg` differs (`none`, `HS256`, …) is refused before any key is used, as is one that tries
    /// to bring its own key (`jku`, `x5u`, `jwk`, `x5c`) or demands extensions (`crit`).
    pub fn verify<T: DeserializeOwned>(&self, token: &str, typ: &str) -> Result<Claims<T>, TokenRejected> {
        let header = typed_header(token, typ)?;
        let kid = header.get("kid").and_then(Value::as_str).ok_or(TokenRejected::UnknownKey)?;
        let key = self.keys.iter().find(|key| key.kid == kid).ok_or(TokenRejected::UnknownKey)?;
        if header.get("alg").and_then(Value::as_str) != Some(key.alg.jws_name()) {
            return Err(TokenRejected::WrongAlgorithm);
        }
        let untrusted = UntrustedToken::new(token).map_err(|_| TokenRejected::Malformed)?;
        let invalid = |err: jwt_compact::ValidationError| TokenRejected::Invalid(err.to_string());
        let token = match &key.key {
            #[cfg(not(target_arch = "wasm32"))]
            PublicKey::Es256(public) => return verify_es256_natively(public, token, &untrusted),
            #[cfg(target_arch = "wasm32")]
            PublicKey::Es256(public) => Es256.validator::<T>(public).validate(&untrusted).map_err(invalid)?,
            PublicKey::EdDsa(public) => Ed25519.validator::<T>(public).validate(&untrusted).map_err(invalid)?,
            PublicKey::Rs256(public) => Rsa::rs256().validator::<T>(public).validate(&untrusted).map_err(invalid)?,
        };
        Ok(token.into_parts().1)
    }
}

/// A token's protected header, refused outright if it names a key source or critical
/// extensions.
pub fn token_header(token: &str) -> Result<Map<String, Value>, TokenRejected> {
    let header_segment = token.split('.').next().ok_or(TokenRejected::Malformed)?;
    let header: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(header_segment)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(TokenRejected::Malformed)?;
    if ["jku", "x5u", "jwk", "x5c", "crit"].iter().any(|name| header.contains_key(*name)) {
        return Err(TokenRejected::ForbiddenHeader);
    }
    Ok(header)
}

/// [`token_header`], refused unless its `typ` is `typ`: the checks that need no key, which the
/// verifier makes before it looks for one.
pub(crate) fn typed_header(token: &str, typ: &str) -> Result<Map<String, Value>, TokenRejected> {
    let header = token_header(token)?;
    if header.get("typ").and_then(Value::as_str) != Some(typ) {
        return Err(TokenRejected::WrongType(typ.to_owned()));
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7515 Appendix A.3: the ES256 example JWS and its key, through the native (ring)
    /// verification path; a changed byte in the signing input or the signature fails.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn native_es256_verification_passes_the_rfc_7515_example() {
        let jwk: JsonWebKey<'_> = serde_json::from_value(serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        }))
        .unwrap();
        let public = p256::ecdsa::VerifyingKey::try_from(&jwk).unwrap();
        let token = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
        let check = |token: &str| {
            let untrusted = UntrustedToken::new(token).unwrap();
            verify_es256_natively::<Map<String, Value>>(&public, token, &untrusted)
        };
        let claims = check(token).unwrap();
        assert_eq!(claims.custom["iss"], "joe");
        assert_eq!(claims.custom["http://example.com/is_root"], true);
        // The payload's last character, and then the signature's, changed.
        let (input, signature) = token.rsplit_once('.').unwrap();
        let tampered_input = format!("{}A.{signature}", &input[..input.len() - 1]);
        assert!(matches!(check(&tampered_input), Err(TokenRejected::Invalid(_))));
        let tampered_signature = format!("{input}.{}A", &signature[..signature.len() - 1]);
        assert!(matches!(check(&tampered_signature), Err(TokenRejected::Invalid(_))));
    }
}
