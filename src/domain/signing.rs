//! Signing keys: generated (or, for a bootstrap key, derived from the key-encryption key and a
//! stored salt),
//! identified by their RFC 7638 thumbprint, stored with the private part sealed, published as a
//! JWKS of public parts only, and used to sign JWTs with the algorithm they are typed with.
//! Verification (keys typed by algorithm, never the one a token claims; the header policy) is
//! edgeid-verifier's, the same code downstream services run.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hkdf::Hkdf;
use jwt_compact::alg::{Ed25519, Es256};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmSignature, Claims};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::ports::Crypto;

pub use edgeid_verifier::keys::{token_header, PublishedKeys, SigningAlg, TokenRejected, MIN_RSA_MODULUS_BITS};

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

enum PrivateKey {
    Es256(p256::ecdsa::SigningKey),
    EdDsa(ed25519_compact::SecretKey),
    /// Only the private JWK (`KeyMaterial::private_jwk`), for `Crypto::sign_jws`: no RSA
    /// private-key operation runs here.
    Rs256,
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
        /// The JOSE header, written straight from its members (every token is signed here).
        #[derive(Serialize)]
        struct Header<'a> {
            alg: &'a str,
            kid: &'a str,
            typ: &'a str,
        }
        let header = serde_json::to_vec(&Header { alg: self.alg.jws_name(), kid: &self.kid, typ })
            .map_err(|err| failed(&err))?;
        let claims = serde_json::to_vec(claims).map_err(|err| failed(&err))?;
        // The signing input and then the signature, base64url'd into one buffer.
        let mut input = String::with_capacity((header.len() + claims.len()) * 4 / 3 + 96);
        URL_SAFE_NO_PAD.encode_string(header, &mut input);
        input.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut input);
        let signature = match crypto.sign_jws(self.alg, &self.kid, &self.private_jwk, input.as_bytes()).await {
            Ok(Some(signature)) => signature,
            Ok(None) => match &self.private {
                PrivateKey::Es256(private) => Es256.sign(private, input.as_bytes()).as_bytes().into_owned(),
                PrivateKey::EdDsa(private) => Ed25519.sign(private, input.as_bytes()).as_bytes().into_owned(),
                PrivateKey::Rs256 => return Err(failed(&"RS256 signs only in the platform's crypto")),
            },
            Err(err) => return Err(failed(&err)),
        };
        input.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut input);
        Ok(input)
    }
}

/// The keys in force at one instant: the one of each algorithm edgeid signs with, and every
/// published one (they among them), which verify.
pub struct SigningKeys {
    /// `SIGNING_ALG`'s: access tokens and first-party ID tokens.
    primary: KeyMaterial,
    /// Those of the other algorithms (RS256 beside ES256 or EdDSA), for relying parties'
    /// `id_token_signed_response_alg`.
    others: Vec<KeyMaterial>,
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
        f.debug_struct("SigningKeys")
            .field("primary", &self.primary)
            .field("others", &self.others)
            .field("published", &self.published)
            .finish()
    }
}

impl SigningKeys {
    /// `primary` signs by default and `others` each for its own algorithm (one key per
    /// algorithm, the primary's excluded); `published` (public JWKs, the signing keys' among
    /// them or not) go in the JWKS, with every signing key that is not among them first.
    pub fn new(primary: KeyMaterial, others: Vec<KeyMaterial>, published: &[Map<String, Value>]) -> SigningKeys {
        let others: Vec<KeyMaterial> = others.into_iter().filter(|other| other.alg != primary.alg).collect();
        let is_published =
            |key: &KeyMaterial| published.iter().any(|jwk| jwk.get("kid").and_then(Value::as_str) == Some(key.kid()));
        let jwks: Vec<Map<String, Value>> = std::iter::once(&primary)
            .chain(&others)
            .filter(|key| !is_published(key))
            .map(|key| key.public_jwk().clone())
            .chain(published.iter().cloned())
            .collect();
        let published = PublishedKeys::from_jwks(&jwks);
        // The signing algorithms first, `SIGNING_ALG` leading, then those of keys that only
        // verify: the same key set always gives the same discovery document.
        let mut algorithms: Vec<&'static str> =
            std::iter::once(&primary).chain(&others).map(|key| key.alg.jws_name()).collect();
        for alg in published.algorithms() {
            if !algorithms.contains(&alg.jws_name()) {
                algorithms.push(alg.jws_name());
            }
        }
        let jwks_json = json!({ "keys": jwks }).to_string();
        SigningKeys { primary, others, published, jwks_json, algorithms, documents: std::cell::OnceCell::new() }
    }

    /// The kid of the `SIGNING_ALG` key.
    pub fn active_kid(&self) -> &str {
        self.primary.kid()
    }

    /// The kid of the key that signs for `alg`, if one does.
    pub fn active_kid_of(&self, alg: SigningAlg) -> Option<&str> {
        self.active(alg).map(KeyMaterial::kid)
    }

    fn active(&self, alg: SigningAlg) -> Option<&KeyMaterial> {
        std::iter::once(&self.primary).chain(&self.others).find(|key| key.alg == alg)
    }

    /// The JWKS document (`{"keys": [...]}`), public parts only.
    pub fn jwks_json(&self) -> &str {
        &self.jwks_json
    }

    /// The public documents of this key set, made by `make` the first time they are needed.
    pub fn documents(&self, make: impl FnOnce(&SigningKeys) -> PublicDocuments) -> &PublicDocuments {
        self.documents.get_or_init(|| make(self))
    }

    /// The algorithms of the published keys, each once, for the discovery document: those that
    /// sign (`SIGNING_ALG` first), then those of keys that only verify.
    pub fn algorithms(&self) -> &[&'static str] {
        &self.algorithms
    }

    pub fn published(&self) -> &PublishedKeys {
        &self.published
    }

    /// Signs `claims` with the `SIGNING_ALG` key; `typ` goes into the header with its `kid`.
    pub async fn sign<T: Serialize>(
        &self,
        typ: &str,
        claims: &Claims<T>,
        crypto: &impl Crypto,
    ) -> Result<String, SigningError> {
        self.primary.sign(typ, claims, crypto).await
    }

    /// Signs `claims` with the key that signs for `alg` (a client's
    /// `id_token_signed_response_alg`); an error if edgeid signs with no key of `alg`.
    pub async fn sign_with<T: Serialize>(
        &self,
        alg: SigningAlg,
        typ: &str,
        claims: &Claims<T>,
        crypto: &impl Crypto,
    ) -> Result<String, SigningError> {
        let key = self.active(alg).ok_or_else(|| SigningError(format!("no {} key signs", alg.jws_name())))?;
        key.sign(typ, claims, crypto).await
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
            let keys = SigningKeys::new(key, Vec::new(), &[]);
            let jwks: Value = serde_json::from_str(keys.jwks_json()).unwrap();
            let published = jwks["keys"][0].as_object().unwrap();
            assert!(!published.contains_key("d"));
            assert_eq!(published["use"], "sig");
            assert_eq!(keys.algorithms(), [alg.jws_name()]);
        }
    }

    /// One key per algorithm: `sign` uses the primary, `sign_with` the key of the algorithm
    /// asked for, and an algorithm without a key is an error, not a panic.
    #[test]
    fn each_algorithm_signs_with_its_own_key() {
        let es256 = KeyMaterial::derive_bootstrap(SigningAlg::Es256, &[3; 32], &[4; 32]).unwrap();
        let eddsa = KeyMaterial::derive_bootstrap(SigningAlg::EdDsa, &[3; 32], &[4; 32]).unwrap();
        let (es256_kid, eddsa_kid) = (es256.kid().to_owned(), eddsa.kid().to_owned());
        // A published key that only verifies, listed after the signing ones.
        let retired = KeyMaterial::derive_bootstrap(SigningAlg::EdDsa, &[5; 32], &[6; 32]).unwrap();
        let keys = SigningKeys::new(es256, vec![eddsa], &[retired.public_jwk().clone()]);
        assert_eq!(keys.algorithms(), ["ES256", "EdDSA"]);
        let jwks: Value = serde_json::from_str(keys.jwks_json()).unwrap();
        let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|key| key["kid"].as_str().unwrap()).collect();
        assert_eq!(kids, [es256_kid.as_str(), eddsa_kid.as_str(), retired.kid()]);
        assert_eq!(keys.active_kid(), es256_kid);
        assert_eq!(keys.active_kid_of(SigningAlg::EdDsa), Some(eddsa_kid.as_str()));
        assert_eq!(keys.active_kid_of(SigningAlg::Rs256), None);

        let crypto = crate::ports::TestCrypto(|buffer: &mut [u8]| buffer.fill(7));
        let claims = Claims::new(json!({"sub": "someone"}));
        let kid_and_alg = |token: &str| {
            let header = token_header(token).unwrap();
            (header["kid"].as_str().unwrap().to_owned(), header["alg"].as_str().unwrap().to_owned())
        };
        let signed = pollster::block_on(keys.sign("JWT", &claims, &crypto)).unwrap();
        assert_eq!(kid_and_alg(&signed), (es256_kid.clone(), "ES256".to_owned()));
        let signed = pollster::block_on(keys.sign_with(SigningAlg::EdDsa, "JWT", &claims, &crypto)).unwrap();
        assert_eq!(kid_and_alg(&signed), (eddsa_kid, "EdDSA".to_owned()));
        assert!(keys.published().verify::<Value>(&signed, "JWT").is_ok());
        assert!(pollster::block_on(keys.sign_with(SigningAlg::Rs256, "JWT", &claims, &crypto)).is_err());
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
