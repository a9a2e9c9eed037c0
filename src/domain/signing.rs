//! Signing keys: generated (or, for a bootstrap key, derived from the key-encryption key and a
//! stored salt),
//! identified by their RFC 7638 thumbprint, stored with the private part sealed, published as a
//! JWKS of public parts only, and used to sign and verify JWTs with the algorithm they are typed
//! with, never the one a token claims.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hkdf::Hkdf;
use jwt_compact::alg::{Ed25519, Es256, Rsa};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmExt, AlgorithmSignature, Claims, UntrustedToken};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::ports::Crypto;

/// The JWS algorithms edgeid signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlg {
    Es256,
    EdDsa,
    /// Signed through the `Crypto` port (WebCrypto in the worker), verified here.
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key {kid} is not a usable {alg} key: {reason}")]
    Unusable { kid: String, alg: String, reason: String },
    #[error("the private part of key {0} opens with no configured key-encryption key")]
    Sealed(String),
    #[error("key generation failed: {0}")]
    Generation(String),
}

#[derive(Debug, thiserror::Error)]
#[error("token signing failed: {0}")]
pub struct SigningError(String);

/// RSA keys shorter than this are refused, as RFC 7518 §3.3 requires.
const MIN_RSA_MODULUS_BITS: usize = 2048;

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

enum PrivateKey {
    Es256(p256::ecdsa::SigningKey),
    EdDsa(ed25519_compact::SecretKey),
    /// Only the private JWK (`KeyMaterial::private_jwk`), for `Crypto::sign_jws`: no RSA
    /// private-key operation runs here.
    Rs256,
}

enum PublicKey {
    Es256(p256::ecdsa::VerifyingKey),
    EdDsa(ed25519_compact::PublicKey),
    Rs256(rsa::RsaPublicKey),
}

/// A private signing key with its identity.
pub struct KeyMaterial {
    alg: SigningAlg,
    kid: String,
    private: PrivateKey,
    /// The private key as a JWK (JSON): what is sealed at rest and what the platform's crypto
    /// imports.
    private_jwk: Vec<u8>,
    /// Key parameters plus `kid`, `alg` and `use`, as published.
    public_jwk: Map<String, Value>,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial").field("alg", &self.alg).field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl KeyMaterial {
    /// A fresh random key.
    pub async fn generate(alg: SigningAlg, crypto: &impl Crypto) -> Result<KeyMaterial, KeyError> {
        if alg == SigningAlg::Rs256 {
            let jwk = crypto.generate_rsa_key().await.map_err(|err| KeyError::Generation(err.to_string()))?;
            return KeyMaterial::from_rsa_private_jwk(jwk, None);
        }
        loop {
            let mut seed = [0u8; 32];
            crypto.fill(&mut seed).map_err(|err| KeyError::Generation(err.to_string()))?;
            if let Some(key) = KeyMaterial::from_seed(alg, seed) {
                return Ok(key);
            }
        }
    }

    /// A bootstrap key (the first of an algorithm, see `keyring`), derived with HKDF-SHA256 from
    /// the key-encryption key and a random salt stored in D1. Being a function of both, it needs
    /// no coordination: however many requests read the same salt, they all derive the same key,
    /// and one insert wins. Neither the key-encryption key nor the database alone yields it, and
    /// a new salt yields a new key.
    ///
    /// `None` for RS256: RSA key generation cannot be derived in WebCrypto (see `keyring`).
    pub fn derive_bootstrap(alg: SigningAlg, key_encryption_key: &[u8; 32], salt: &[u8]) -> Option<KeyMaterial> {
        if alg == SigningAlg::Rs256 {
            return None;
        }
        let hkdf = Hkdf::<Sha256>::new(Some(salt), key_encryption_key);
        let mut counter = 0u32;
        loop {
            let mut seed = [0u8; 32];
            let info = format!("edgeid signing key bootstrap v2 {} {counter}", alg.jws_name());
            // 32 bytes is far below HKDF-SHA256's output limit, so expand cannot fail.
            if hkdf.expand(info.as_bytes(), &mut seed).is_ok() {
                if let Some(key) = KeyMaterial::from_seed(alg, seed) {
                    return Some(key);
                }
            }
            counter += 1;
        }
    }

    /// `None` only for a P-256 scalar out of range (probability about 2^-32).
    fn from_seed(alg: SigningAlg, seed: [u8; 32]) -> Option<KeyMaterial> {
        let private = match alg {
            SigningAlg::Es256 => PrivateKey::Es256(p256::ecdsa::SigningKey::from_slice(&seed).ok()?),
            SigningAlg::EdDsa => {
                PrivateKey::EdDsa(ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed)).sk)
            }
            SigningAlg::Rs256 => return None,
        };
        Some(KeyMaterial::new(alg, private))
    }

    /// Reads a private JWK back (as [`KeyMaterial::private_jwk`] wrote it).
    pub fn from_private_jwk(alg: SigningAlg, kid: &str, json: &[u8]) -> Result<KeyMaterial, KeyError> {
        if alg == SigningAlg::Rs256 {
            return KeyMaterial::from_rsa_private_jwk(json.to_vec(), Some(kid));
        }
        let unusable =
            |reason: String| KeyError::Unusable { kid: kid.to_owned(), alg: alg.jws_name().to_owned(), reason };
        let jwk: JsonWebKey<'_> = serde_json::from_slice(json).map_err(|err| unusable(err.to_string()))?;
        let private = match alg {
            SigningAlg::Es256 => {
                PrivateKey::Es256(p256::ecdsa::SigningKey::try_from(&jwk).map_err(|err| unusable(err.to_string()))?)
            }
            SigningAlg::EdDsa => {
                PrivateKey::EdDsa(ed25519_compact::SecretKey::try_from(&jwk).map_err(|err| unusable(err.to_string()))?)
            }
            SigningAlg::Rs256 => return Err(unusable("not an RSA key".to_owned())),
        };
        let key = KeyMaterial::new(alg, private);
        if key.kid != kid {
            return Err(unusable("its thumbprint is not its kid".to_owned()));
        }
        Ok(key)
    }

    /// An RSA private JWK (as WebCrypto exports it). Its public part must be a usable RS256
    /// key of at least 2048 bits; `expected_kid`, when given, must be its thumbprint.
    fn from_rsa_private_jwk(jwk: Vec<u8>, expected_kid: Option<&str>) -> Result<KeyMaterial, KeyError> {
        let unusable = |reason: &str| KeyError::Unusable {
            kid: expected_kid.unwrap_or("(new)").to_owned(),
            alg: "RS256".to_owned(),
            reason: reason.to_owned(),
        };
        let members: Map<String, Value> = serde_json::from_slice(&jwk).map_err(|_| unusable("not a JSON object"))?;
        if members.get("kty").and_then(Value::as_str) != Some("RSA") || !members.contains_key("d") {
            return Err(unusable("not a private RSA JWK"));
        }
        let mut public = Map::new();
        for name in ["e", "kty", "n"] {
            let value = members.get(name).and_then(Value::as_str).ok_or_else(|| unusable("lacks n or e"))?;
            public.insert(name.to_owned(), Value::String(value.to_owned()));
        }
        let parsed: JsonWebKey<'_> =
            serde_json::from_value(Value::Object(public.clone())).map_err(|_| unusable("malformed n or e"))?;
        let public_key = rsa::RsaPublicKey::try_from(&parsed).map_err(|_| unusable("malformed n or e"))?;
        if rsa::traits::PublicKeyParts::n(&public_key).bits() < MIN_RSA_MODULUS_BITS {
            return Err(unusable("modulus shorter than 2048 bits"));
        }
        let key = KeyMaterial::with_public(SigningAlg::Rs256, PrivateKey::Rs256, jwk, public);
        if expected_kid.is_some_and(|kid| kid != key.kid) {
            return Err(unusable("its thumbprint is not its kid"));
        }
        Ok(key)
    }

    fn new(alg: SigningAlg, private: PrivateKey) -> KeyMaterial {
        let (public, private_jwk) = match &private {
            PrivateKey::Es256(key) => {
                (public_members(&JsonWebKey::from(key.verifying_key())), serde_json::to_vec(&JsonWebKey::from(key)))
            }
            PrivateKey::EdDsa(key) => {
                (public_members(&JsonWebKey::from(&key.public_key())), serde_json::to_vec(&JsonWebKey::from(key)))
            }
            PrivateKey::Rs256 => (Map::new(), Ok(Vec::new())),
        };
        KeyMaterial::with_public(alg, private, private_jwk.unwrap_or_default(), public)
    }

    fn with_public(
        alg: SigningAlg,
        private: PrivateKey,
        private_jwk: Vec<u8>,
        public: Map<String, Value>,
    ) -> KeyMaterial {
        let kid = thumbprint(&public);
        let mut public_jwk = public;
        public_jwk.insert("kid".to_owned(), Value::String(kid.clone()));
        public_jwk.insert("alg".to_owned(), Value::String(alg.jws_name().to_owned()));
        public_jwk.insert("use".to_owned(), Value::String("sig".to_owned()));
        KeyMaterial { alg, kid, private, private_jwk, public_jwk }
    }

    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_jwk(&self) -> &Map<String, Value> {
        &self.public_jwk
    }

    /// The private JWK, for sealing. Never log or return it.
    pub fn private_jwk(&self) -> Vec<u8> {
        self.private_jwk.clone()
    }

    /// A compact JWS: the header `{"alg", "kid", "typ"}` and the claims, signed by the
    /// platform (`Crypto::sign_jws`: WebCrypto in the worker) when it can, else in Rust.
    async fn sign<T: Serialize>(
        &self,
        typ: &str,
        claims: &Claims<T>,
        crypto: &impl Crypto,
    ) -> Result<String, SigningError> {
        let failed = |err: &dyn fmt::Display| SigningError(err.to_string());
        let header = json!({ "alg": self.alg.jws_name(), "kid": self.kid, "typ": typ });
        let claims = serde_json::to_vec(claims).map_err(|err| failed(&err))?;
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims));
        let signature = match crypto.sign_jws(self.alg, &self.kid, &self.private_jwk, input.as_bytes()).await {
            Ok(Some(signature)) => signature,
            Ok(None) => match &self.private {
                PrivateKey::Es256(private) => Es256.sign(private, input.as_bytes()).as_bytes().into_owned(),
                PrivateKey::EdDsa(private) => Ed25519.sign(private, input.as_bytes()).as_bytes().into_owned(),
                PrivateKey::Rs256 => return Err(failed(&"RS256 signs only in the platform's crypto")),
            },
            Err(err) => return Err(failed(&err)),
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
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
/// downstream services build one from the JWKS they fetched (see `verifier`).
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

    fn from_jwks(jwks: &[Map<String, Value>]) -> PublishedKeys {
        PublishedKeys { keys: jwks.iter().filter_map(VerifyingKey::from_public_jwk).collect() }
    }

    pub fn contains(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid == kid)
    }

    /// Checks a JWT's header and signature and returns its claims, unvalidated in time. The
    /// algorithm is that of the key the `kid` names, never the header's choice: a token whose
    /// `alg` differs (`none`, `HS256`, …) is refused before any key is used, as is one that tries
    /// to bring its own key (`jku`, `x5u`, `jwk`, `x5c`) or demands extensions (`crit`).
    pub fn verify<T: DeserializeOwned>(&self, token: &str, typ: &str) -> Result<Claims<T>, TokenRejected> {
        let header = token_header(token)?;
        if header.get("typ").and_then(Value::as_str) != Some(typ) {
            return Err(TokenRejected::WrongType(typ.to_owned()));
        }
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

/// The keys in force at one instant: the one that signs, and every published one (it among
/// them), which verify.
pub struct SigningKeys {
    active: KeyMaterial,
    published: PublishedKeys,
    jwks_json: String,
    algorithms: Vec<&'static str>,
    /// The public documents made from this key set, once: an isolate serves them from here
    /// for as long as it keeps the key set.
    documents: std::cell::OnceCell<PublicDocuments>,
}

/// The JWKS and discovery bodies with their ETags, as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicDocuments {
    pub jwks_etag: String,
    pub discovery: String,
    pub discovery_etag: String,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys").field("active", &self.active).field("published", &self.published).finish()
    }
}

impl SigningKeys {
    /// `active` signs; `published` (public JWKs, `active`'s among them or not) go in the JWKS.
    pub fn new(active: KeyMaterial, published: &[Map<String, Value>]) -> SigningKeys {
        let mut jwks: Vec<Map<String, Value>> = published.to_vec();
        if !jwks.iter().any(|jwk| jwk.get("kid").and_then(Value::as_str) == Some(active.kid())) {
            jwks.insert(0, active.public_jwk().clone());
        }
        let published = PublishedKeys::from_jwks(&jwks);
        let mut algorithms: Vec<&'static str> = Vec::new();
        for key in &published.keys {
            if !algorithms.contains(&key.alg.jws_name()) {
                algorithms.push(key.alg.jws_name());
            }
        }
        let jwks_json = json!({ "keys": jwks }).to_string();
        SigningKeys { active, published, jwks_json, algorithms, documents: std::cell::OnceCell::new() }
    }

    pub fn active_kid(&self) -> &str {
        self.active.kid()
    }

    /// The JWKS document (`{"keys": [...]}`), public parts only.
    pub fn jwks_json(&self) -> &str {
        &self.jwks_json
    }

    /// The public documents of this key set, made by `make` the first time they are needed.
    pub fn documents(&self, make: impl FnOnce(&SigningKeys) -> PublicDocuments) -> &PublicDocuments {
        self.documents.get_or_init(|| make(self))
    }

    /// The algorithms of the published keys, for the discovery document.
    pub fn algorithms(&self) -> &[&'static str] {
        &self.algorithms
    }

    pub fn published(&self) -> &PublishedKeys {
        &self.published
    }

    /// Signs `claims` with the active key; `typ` goes into the header with the key's `kid`.
    pub async fn sign<T: Serialize>(
        &self,
        typ: &str,
        claims: &Claims<T>,
        crypto: &impl Crypto,
    ) -> Result<String, SigningError> {
        self.active.sign(typ, claims, crypto).await
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

    /// RFC 7515 Appendix A.3: the ES256 example JWS and its key, through the native (ring)
    /// verification path; a changed byte in the signing input or the signature fails.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn native_es256_verification_passes_the_rfc_7515_example() {
        let jwk: JsonWebKey<'_> = serde_json::from_value(json!({
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

    /// RFC 8037 Appendix A gives an Ed25519 key and its RFC 7638 thumbprint, which pins our
    /// canonical form to the specifications.
    const RFC8037_ED25519: &str = r#"{"kty":"OKP","crv":"Ed25519",
        "d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
        "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
    const RFC8037_KID: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

    #[test]
    fn kid_is_the_rfc_7638_thumbprint() {
        let key = KeyMaterial::from_private_jwk(SigningAlg::EdDsa, RFC8037_KID, RFC8037_ED25519.as_bytes()).unwrap();
        assert_eq!(key.kid(), RFC8037_KID);
        assert_eq!(
            Value::Object(key.public_jwk().clone()),
            json!({
                "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                "kid": RFC8037_KID, "alg": "EdDSA", "use": "sig"
            })
        );
        // A stored key whose kid does not match its material is refused.
        assert!(KeyMaterial::from_private_jwk(SigningAlg::EdDsa, "other", RFC8037_ED25519.as_bytes()).is_err());
        assert!(KeyMaterial::from_private_jwk(SigningAlg::Es256, RFC8037_KID, RFC8037_ED25519.as_bytes()).is_err());
    }

    #[test]
    fn private_jwks_round_trip_and_the_jwks_holds_no_private_member() {
        for alg in [SigningAlg::Es256, SigningAlg::EdDsa] {
            let key = KeyMaterial::derive_bootstrap(alg, &[3; 32], &[4; 32]).unwrap();
            let again = KeyMaterial::from_private_jwk(alg, key.kid(), &key.private_jwk()).unwrap();
            assert_eq!(again.kid(), key.kid());
            let keys = SigningKeys::new(key, &[]);
            let jwks: Value = serde_json::from_str(keys.jwks_json()).unwrap();
            let published = jwks["keys"][0].as_object().unwrap();
            assert!(!published.contains_key("d"));
            assert_eq!(published["use"], "sig");
            assert_eq!(keys.algorithms(), [alg.jws_name()]);
        }
    }

    #[test]
    fn bootstrap_keys_are_a_function_of_the_key_encryption_key_and_the_salt() {
        let derive = |alg, kek: &[u8; 32], salt: &[u8]| KeyMaterial::derive_bootstrap(alg, kek, salt).unwrap();
        let a = derive(SigningAlg::Es256, &[1; 32], b"salt one");
        assert_eq!(a.kid(), derive(SigningAlg::Es256, &[1; 32], b"salt one").kid());
        for other in [
            derive(SigningAlg::Es256, &[2; 32], b"salt one"),
            derive(SigningAlg::Es256, &[1; 32], b"salt two"),
            derive(SigningAlg::EdDsa, &[1; 32], b"salt one"),
        ] {
            assert_ne!(a.kid(), other.kid());
        }
        assert!(KeyMaterial::derive_bootstrap(SigningAlg::Rs256, &[1; 32], b"salt one").is_none());
    }
}
