//! Request bodies: size limit, media type, and typed access to fields of JSON or form bodies.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::error::ApiError;
use crate::api::ApiRequest;

/// Bodies above this are refused before any parsing (API.md: 413 over 16 KiB).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Form,
}

/// The top-level fields of a JSON object or a form body.
#[derive(Debug)]
pub struct Fields {
    pub format: BodyFormat,
    values: BTreeMap<String, Value>,
}

pub fn parse_body(request: &ApiRequest) -> Result<Fields, ApiError> {
    if request.body.len() > MAX_BODY_BYTES {
        return Err(ApiError::payload_too_large(MAX_BODY_BYTES));
    }
    let media_type = request
        .header("content-type")
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase());
    match media_type.as_deref() {
        Some("application/json") => parse_json(&request.body),
        Some("application/x-www-form-urlencoded") => parse_form(&request.body),
        _ => Err(ApiError::unsupported_media_type()),
    }
}

fn parse_json(body: &[u8]) -> Result<Fields, ApiError> {
    match serde_json::from_slice::<StrictValue>(body) {
        Ok(StrictValue(Value::Object(object))) => {
            Ok(Fields { format: BodyFormat::Json, values: object.into_iter().collect() })
        }
        Ok(_) => Err(ApiError::invalid_request("the body must be a JSON object")),
        Err(err) if err.to_string().starts_with(DUPLICATE_KEY) => {
            Err(ApiError::invalid_request("the body has the same field twice"))
        }
        Err(_) => Err(ApiError::invalid_request("the body is not valid JSON")),
    }
}

const DUPLICATE_KEY: &str = "duplicate key";

/// A JSON value whose objects, at any depth, never repeat a key. serde_json keeps the last of
/// two equal keys; other parsers keep the first. A body that means one thing to a proxy or WAF
/// and another to us is refused instead (RFC 8259 §4: names SHOULD be unique).
struct StrictValue(Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<StrictValue, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut values = Vec::new();
        while let Some(StrictValue(value)) = seq.next_element()? {
            values.push(value);
        }
        Ok(Value::Array(values))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictValue(value) = map.next_value()?;
            if object.insert(key, value).is_some() {
                return Err(serde::de::Error::custom(DUPLICATE_KEY));
            }
        }
        Ok(Value::Object(object))
    }
}

fn parse_form(body: &[u8]) -> Result<Fields, ApiError> {
    if std::str::from_utf8(body).is_err() {
        return Err(ApiError::invalid_request("the form body is not valid UTF-8"));
    }
    let mut values = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(body) {
        if values.insert(name.to_string(), Value::String(value.into_owned())).is_some() {
            return Err(ApiError::invalid_request(format!("the field `{name}` appears more than once")));
        }
    }
    Ok(Fields { format: BodyFormat::Form, values })
}

impl Fields {
    /// A string field that must be present.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.optional(name)?.ok_or_else(|| ApiError::invalid_request(format!("the field `{name}` is required")))
    }

    /// The `password` of a new password, checked against `password_confirmation` when that is
    /// sent too (the hosted forms ask twice; API clients may).
    pub fn new_password(&self) -> Result<&str, ApiError> {
        let password = self.required("password")?;
        match self.optional("password_confirmation")? {
            Some(confirmation) if confirmation != password => {
                Err(ApiError::invalid_request("the two passwords are not the same"))
            }
            _ => Ok(password),
        }
    }

    /// The whole body as a JSON object, for a JSON body (RFC 7591 registration takes nothing
    /// else): `None` for a form.
    pub fn json_object(&self) -> Option<serde_json::Map<String, Value>> {
        (self.format == BodyFormat::Json).then(|| self.values.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// A string field that may be absent (or JSON `null`).
    pub fn optional(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.values.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(value)) => Ok(Some(value)),
            Some(_) => Err(ApiError::invalid_request(format!("the field `{name}` must be a string"))),
        }
    }
}
