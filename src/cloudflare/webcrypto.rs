//! The `Crypto` port in workerd: `crypto.getRandomValues` (through getrandom 0.4, a pool at a
//! time) and WebCrypto signing (ECDSA P-256, Ed25519, RSASSA-PKCS1-v1_5), which runs natively
//! (BoringSSL): about 0.02 ms per ES256 signature against ≈0.7 ms for the same in wasm, and it
//! keeps RSA private-key operations out of the `rsa` crate (RUSTSEC-2023-0071).

use std::cell::RefCell;
use std::collections::HashMap;

use worker::js_sys::{Array, Object, Reflect, Uint8Array, JSON};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::{CryptoKey, SubtleCrypto};

use crate::domain::signing::SigningAlg;
use crate::ports::{Crypto, CryptoError, EntropyError, EntropyPool};

pub struct WebCrypto;

thread_local! {
    /// Imported signing keys by kid, for the life of the isolate: importing a JWK costs more
    /// than signing with it.
    static IMPORTED: RefCell<HashMap<String, CryptoKey>> = RefCell::new(HashMap::new());
}

thread_local! {
    /// `crypto.getRandomValues`, a pool at a time (see `EntropyPool`): a request takes several
    /// ids and tokens, and each call into JavaScript for a few bytes cost more than the bytes.
    static ENTROPY: RefCell<EntropyPool> = const { RefCell::new(EntropyPool::empty()) };
}

fn error(context: &str) -> impl Fn(JsValue) -> CryptoError + '_ {
    move |value| CryptoError(format!("{context}: {}", value.as_string().unwrap_or_else(|| format!("{value:?}"))))
}

fn subtle() -> Result<SubtleCrypto, CryptoError> {
    let crypto = Reflect::get(&worker::js_sys::global(), &JsValue::from_str("crypto")).map_err(error("crypto"))?;
    let subtle = Reflect::get(&crypto, &JsValue::from_str("subtle")).map_err(error("crypto.subtle"))?;
    subtle.dyn_into::<SubtleCrypto>().map_err(error("crypto.subtle"))
}

fn object(members: &[(&str, JsValue)]) -> Result<Object, CryptoError> {
    let object = Object::new();
    for (name, value) in members {
        Reflect::set(&object, &JsValue::from_str(name), value).map_err(error("building parameters"))?;
    }
    Ok(object)
}

fn rsassa() -> Result<Object, CryptoError> {
    object(&[("name", "RSASSA-PKCS1-v1_5".into()), ("hash", "SHA-256".into())])
}

impl Crypto for WebCrypto {
    fn fill(&self, buffer: &mut [u8]) -> Result<(), EntropyError> {
        // getrandom 0.4 has `getRandomValues` write into wasm memory itself; 0.2 goes through a
        // Uint8Array it keeps, which would hold a copy of the whole pool until the next refill.
        let get_random_values = |into: &mut [u8]| getrandom_04::fill(into).map_err(|err| EntropyError(err.to_string()));
        ENTROPY.with(|pool| pool.borrow_mut().fill(buffer, get_random_values))
    }

    async fn generate_rsa_key(&self) -> Result<Vec<u8>, CryptoError> {
        let subtle = subtle()?;
        let algorithm = object(&[
            ("name", "RSASSA-PKCS1-v1_5".into()),
            ("modulusLength", 2048.into()),
            ("publicExponent", Uint8Array::from(&[1u8, 0, 1][..]).into()),
            ("hash", "SHA-256".into()),
        ])?;
        let usages = Array::of2(&"sign".into(), &"verify".into());
        let promise = subtle.generate_key_with_object(&algorithm, true, &usages).map_err(error("generateKey"))?;
        let pair = JsFuture::from(promise).await.map_err(error("generateKey"))?;
        let private = Reflect::get(&pair, &JsValue::from_str("privateKey")).map_err(error("privateKey"))?;
        let private: CryptoKey = private.dyn_into().map_err(error("privateKey"))?;
        let promise = subtle.export_key("jwk", &private).map_err(error("exportKey"))?;
        let jwk = JsFuture::from(promise).await.map_err(error("exportKey"))?;
        let json = JSON::stringify(&jwk).map_err(error("exportKey"))?;
        Ok(String::from(json).into_bytes())
    }

    async fn sign_jws(
        &self,
        alg: SigningAlg,
        kid: &str,
        key: &[u8],
        message: &[u8],
    ) -> Result<Option<Vec<u8>>, CryptoError> {
        let key = match imported_key(alg, kid, key).await {
            Ok(key) => key,
            // ES256 and EdDSA can still be signed in Rust; RS256 cannot (and must not).
            Err(err) if alg != SigningAlg::Rs256 => {
                log::warn!("WebCrypto cannot sign {}: {err}; signing in wasm", alg.jws_name());
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        let signature = super::glue::sign_jws(&key, alg.jws_name(), message).await.map_err(error("sign"))?;
        Ok(Some(Uint8Array::new(&signature).to_vec()))
    }
}

/// The key of `kid`, imported once per isolate: importing costs more than signing.
async fn imported_key(alg: SigningAlg, kid: &str, jwk: &[u8]) -> Result<CryptoKey, CryptoError> {
    if let Some(key) = IMPORTED.with(|imported| imported.borrow().get(kid).cloned()) {
        return Ok(key);
    }
    let subtle = subtle()?;
    let jwk = std::str::from_utf8(jwk).map_err(|err| CryptoError(err.to_string()))?;
    let jwk: Object = JSON::parse(jwk).map_err(error("private JWK"))?.dyn_into().map_err(error("private JWK"))?;
    let usages = Array::of1(&"sign".into());
    let promise =
        subtle.import_key_with_object("jwk", &jwk, &import_params(alg)?, false, &usages).map_err(error("importKey"))?;
    let imported: CryptoKey =
        JsFuture::from(promise).await.map_err(error("importKey"))?.dyn_into().map_err(error("importKey"))?;
    IMPORTED.with(|cache| cache.borrow_mut().insert(kid.to_owned(), imported.clone()));
    Ok(imported)
}

fn import_params(alg: SigningAlg) -> Result<Object, CryptoError> {
    match alg {
        SigningAlg::Rs256 => rsassa(),
        SigningAlg::Es256 => object(&[("name", "ECDSA".into()), ("namedCurve", "P-256".into())]),
        SigningAlg::EdDsa => object(&[("name", "Ed25519".into())]),
    }
}
