//! `fetch()` as the core's `HttpClient` (mail provider APIs, the breached-password API), with
//! `AbortSignal.timeout` for requests that carry a timeout.

use worker::wasm_bindgen::JsValue;
use worker::{AbortSignal, Fetch, Headers, Method, Request, RequestInit};

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
            .with_body(if request.body.is_empty() { None } else { Some(JsValue::from(js_sys_bytes(&request.body))) });
        let outbound = Request::new_with_init(&request.url, &init).map_err(error)?;
        let mut response = match request.timeout_ms {
            // The signal also aborts reading the body below.
            Some(timeout_ms) => {
                let signal = AbortSignal::from(worker::web_sys::AbortSignal::timeout_with_u32(timeout_ms));
                Fetch::Request(outbound).send_with_signal(&signal).await.map_err(error)?
            }
            None => Fetch::Request(outbound).send().await.map_err(error)?,
        };
        let status = response.status_code();
        let headers = response.headers().entries().map(|(name, value)| (name.to_ascii_lowercase(), value)).collect();
        let body = response.text().await.map_err(error)?;
        Ok(OutboundResponse { status, headers, body })
    }
}

fn js_sys_bytes(bytes: &[u8]) -> worker::js_sys::Uint8Array {
    worker::js_sys::Uint8Array::from(bytes)
}
