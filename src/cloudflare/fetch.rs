//! `fetch()` as the core's `HttpClient` (mail provider APIs).

use worker::wasm_bindgen::JsValue;
use worker::{Fetch, Headers, Method, Request, RequestInit};

use crate::ports::{HttpClient, HttpError, OutboundRequest, OutboundResponse};

pub struct Fetcher;

impl HttpClient for Fetcher {
    async fn send(&self, request: OutboundRequest) -> Result<OutboundResponse, HttpError> {
        let error = |err: worker::Error| HttpError(err.to_string());
        let headers = Headers::new();
        for (name, value) in &request.headers {
            headers.set(name, value).map_err(error)?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::from(request.method.to_owned()))
            .with_headers(headers)
            .with_body(Some(JsValue::from(js_sys_bytes(&request.body))));
        let outbound = Request::new_with_init(&request.url, &init).map_err(error)?;
        let mut response = Fetch::Request(outbound).send().await.map_err(error)?;
        let status = response.status_code();
        let headers = response.headers().entries().map(|(name, value)| (name.to_ascii_lowercase(), value)).collect();
        let body = response.text().await.unwrap_or_default();
        Ok(OutboundResponse { status, headers, body })
    }
}

fn js_sys_bytes(bytes: &[u8]) -> worker::js_sys::Uint8Array {
    worker::js_sys::Uint8Array::from(bytes)
}
