//! The interaction state of an authorization request while the browser is on a hosted page
//! (login, consent): the request's parameters, when it started, and — once the person has
//! signed in for it — which browser session did. It travels with the browser (a query or form
//! field), HMAC-SHA256 signed under a key derived from `KEY_ENCRYPTION_KEY`, so it costs no
//! D1 row and cannot be altered (dropping `prompt=login`, say). It grants nothing by itself:
//! whatever it says is checked again, against the live client and the browser's own session.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::authorization::Parameters;

/// How long a person may take on the hosted pages of one authorization request.
pub const INTERACTION_TTL_SECONDS: i64 = 30 * 60;

/// The form or query field that carries it.
pub const FIELD: &str = "interaction";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interaction {
    /// The authorization request's parameters, as sent.
    #[serde(rename = "p")]
    pub parameters: Vec<(String, String)>,
    /// When the authorization request arrived (Unix seconds).
    #[serde(rename = "t")]
    pub started_at: i64,
    /// The browser session that signed in for this request, after the login page: the request
    /// then needs no other login, however it asked (`prompt=login`, `max_age`).
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub signed_in: Option<String>,
}

impl Interaction {
    pub fn new(parameters: &Parameters, now: i64) -> Interaction {
        Interaction { parameters: parameters.0.clone(), started_at: now, signed_in: None }
    }

    pub fn parameters(&self) -> Parameters {
        Parameters(self.parameters.clone())
    }
}

/// The signing key, derived once from a key-encryption key.
#[derive(Clone)]
pub struct InteractionKey([u8; 32]);

impl std::fmt::Debug for InteractionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InteractionKey(..)")
    }
}

impl InteractionKey {
    pub fn derive(key_encryption_key: &[u8; 32]) -> InteractionKey {
        let key = crate::domain::sealing::derive_subkey(
            key_encryption_key,
            b"edgeid interaction v1",
            b"authorization interactions",
        );
        InteractionKey(key)
    }

    fn mac(&self, payload: &str) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).ok()?;
        mac.update(payload.as_bytes());
        Some(mac)
    }

    /// `payload.tag`, both base64url.
    pub fn seal(&self, interaction: &Interaction) -> String {
        let json = serde_json::to_vec(interaction).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(json);
        let tag = self.mac(&payload).map(|mac| URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())).unwrap_or_default();
        format!("{payload}.{tag}")
    }

    /// The interaction, if the tag is ours (compared in constant time) and it has not expired.
    pub fn open(&self, sealed: &str, now: i64) -> Option<Interaction> {
        let (payload, tag) = sealed.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(payload)?.verify_slice(&tag).ok()?;
        let interaction: Interaction = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        let age = now - interaction.started_at;
        (0..=INTERACTION_TTL_SECONDS).contains(&age).then_some(interaction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interaction_opens_only_unaltered_under_its_key_and_in_time() {
        let key = InteractionKey::derive(&[7; 32]);
        let interaction = Interaction {
            parameters: vec![("prompt".to_owned(), "login".to_owned())],
            started_at: 1000,
            signed_in: Some("s".to_owned()),
        };
        let sealed = key.seal(&interaction);
        assert_eq!(key.open(&sealed, 1000 + INTERACTION_TTL_SECONDS), Some(interaction.clone()));
        assert_eq!(key.open(&sealed, 1001 + INTERACTION_TTL_SECONDS), None);
        assert_eq!(InteractionKey::derive(&[8; 32]).open(&sealed, 1000), None);
        let unsigned = Interaction { signed_in: None, ..interaction };
        let (_, tag) = sealed.split_once('.').unwrap();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(serde_json::to_vec(&unsigned).unwrap()));
        assert_eq!(key.open(&forged, 1000), None);
        assert_eq!(key.open("garbage", 1000), None);
    }
}
