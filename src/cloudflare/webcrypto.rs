//! The `Crypto` port in workerd: `crypto.getRandomValues` (through getrandom) and WebCrypto's
//! RSASSA-PKCS1-v1_5, which runs natively (BoringSSL) instead of as wasm, and keeps RSA
//! private-key operations out of the `rsa` crate (RUSTSEC-2023-0071).

use std::cell::RefCell;
use std::collections::HashMap;

use worker::js_sys::{Array, Object, Reflect, Uint8Array, JSON};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::{CryptoKey, SubtleCrypto};

use crate::ports::{Crypto, EntropyError, RsaError};

pub struct WebCrypto;

thread_local! {
    /// Imported signing keys by kid, for the life of the isolate: importing a JWK costs more
    /// than signing with it.
    static IMPORTED: RefCell<HashMap<String, CryptoKey>> = RefCell::new(HashMap::new());
}

fn error(context: &str) -> impl Fn(JsValue) -> RsaError + '_ {
    move |value| RsaError(format!("{context}: {}", value.as_string().unwrap_or_else(|| format!("{value:?}"))))
}

fn subtle() -> Result<SubtleCrypto, RsaError> {
    let crypto = Reflect::get(&worker::js_sys::global(), &JsValue::from_str("crypto")).map_err(error("crypto"))?;
    let subtle = Reflect::get(&crypto, &JsValue::from_str("subtle")).map_err(error("crypto.subtle"))?;
    subtle.dyn_into::<SubtleCrypto>().map_err(error("crypto.subtle"))
}

fn object(members: &[(&str, JsValue)]) -> Result<Object, RsaError> {
    let object = Object::new();
    for (name, value) in members {
        Reflect::set(&object, &JsValue::from_str(name), value).map_err(error("building parameters"))?;
    }
    Ok(object)
}

fn rsassa() -> Result<Object, RsaError> {
    object(&[("name", "RSASSA-PKCS1-v1_5".into()), ("hash", "SHA-256".into())])
}

impl Crypto for WebCrypto {
    fn fill(&self, buffer: &mut [u8]) -> Result<(), EntropyError> {
        getrandom::getrandom(buffer).map_err(|err| EntropyError(err.to_string()))
    }

    async fn generate_rsa_key(&self) -> Result<Vec<u8>, RsaError> {
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

    async fn sign_rs256(&self, kid: &str, key: &[u8], message: &[u8]) -> Result<Vec<u8>, RsaError> {
        let subtle = subtle()?;
        let cached = IMPORTED.with(|imported| imported.borrow().get(kid).cloned());
        let key = match cached {
            Some(key) => key,
            None => {
                let jwk = std::str::from_utf8(key).map_err(|err| RsaError(err.to_string()))?;
                let jwk: Object =
                    JSON::parse(jwk).map_err(error("private JWK"))?.dyn_into().map_err(error("private JWK"))?;
                let usages = Array::of1(&"sign".into());
                let promise = subtle
                    .import_key_with_object("jwk", &jwk, &rsassa()?, false, &usages)
                    .map_err(error("importKey"))?;
                let imported: CryptoKey = JsFuture::from(promise)
                    .await
                    .map_err(error("importKey"))?
                    .dyn_into()
                    .map_err(error("importKey"))?;
                IMPORTED.with(|cache| cache.borrow_mut().insert(kid.to_owned(), imported.clone()));
                imported
            }
        };
        let promise = subtle.sign_with_object_and_u8_array(&rsassa()?, &key, message).map_err(error("sign"))?;
        let signature = JsFuture::from(promise).await.map_err(error("sign"))?;
        Ok(Uint8Array::new(&signature).to_vec())
    }
}
