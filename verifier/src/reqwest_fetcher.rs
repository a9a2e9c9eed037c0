//! A ready [`JwksFetcher`] over reqwest (feature `reqwest`). reqwest's TLS is the
//! application's choice; feature `rustls-tls` turns on reqwest's rustls for an `https` issuer.

use std::error::Error;
use std::time::Duration;

use reqwest::header::{ACCEPT, CACHE_CONTROL};

use crate::{FetchError, JwksFetcher, JwksResponse};

/// A JWKS larger than this is refused: edgeid's holds a few keys, well under 10 KiB.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Fetches the JWKS with a `reqwest::Client`, giving up after a timeout (5 s by default), and
/// reads at most [`MAX_JWKS_BYTES`].
#[derive(Debug, Clone)]
pub struct ReqwestFetcher {
    client: reqwest::Client,
    timeout: Duration,
}

impl ReqwestFetcher {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A client of its own.
    pub fn new() -> Result<ReqwestFetcher, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(ReqwestFetcher::DEFAULT_TIMEOUT).build()?;
        Ok(ReqwestFetcher::with_client(client))
    }

    /// The service's own client (its proxy, TLS and pool settings); each JWKS request still
    /// gets the timeout.
    pub fn with_client(client: reqwest::Client) -> ReqwestFetcher {
        ReqwestFetcher { client, timeout: ReqwestFetcher::DEFAULT_TIMEOUT }
    }

    pub fn timeout(mut self, timeout: Duration) -> ReqwestFetcher {
        self.timeout = timeout;
        self
    }
}

impl JwksFetcher for ReqwestFetcher {
    async fn fetch(&self, url: &str) -> Result<JwksResponse, FetchError> {
        let failed = |err: reqwest::Error| FetchError(describe(&err));
        let mut response = self
            .client
            .get(url)
            .header(ACCEPT, "application/jwk-set+json, application/json")
            .timeout(self.timeout)
            .send()
            .await
            .map_err(failed)?;
        let status = response.status().as_u16();
        let cache_control =
            response.headers().get(CACHE_CONTROL).and_then(|value| value.to_str().ok()).map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(FetchError(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let body = String::from_utf8(body).map_err(|_| FetchError("the JWKS is not UTF-8".to_owned()))?;
        Ok(JwksResponse { status, cache_control, body })
    }
}

/// An error with its causes: reqwest's own message alone rarely says what went wrong.
fn describe(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;

    /// Serves `answers` in turn on 127.0.0.1, one request each, and returns the base URL.
    fn serve(answers: Vec<tiny_http::Response<std::io::Cursor<Vec<u8>>>>) -> String {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let base = format!("http://{}", server.server_addr().to_ip().unwrap());
        thread::spawn(move || {
            for answer in answers {
                let request = server.recv().unwrap();
                assert_eq!(request.url(), "/.well-known/jwks.json");
                request.respond(answer).unwrap();
            }
        });
        base
    }

    #[test]
    fn hands_over_status_cache_control_and_body_and_refuses_a_huge_jwks() {
        let cache_control = tiny_http::Header::from_bytes("Cache-Control", "public, max-age=60").unwrap();
        let base = serve(vec![
            tiny_http::Response::from_string(r#"{"keys": []}"#).with_header(cache_control),
            tiny_http::Response::from_string("down").with_status_code(503),
            tiny_http::Response::from_data(vec![b' '; MAX_JWKS_BYTES + 1]),
            tiny_http::Response::from_data(vec![b' '; MAX_JWKS_BYTES]),
        ]);
        let url = format!("{base}/.well-known/jwks.json");
        let fetcher = ReqwestFetcher::new().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let fetch = || runtime.block_on(fetcher.fetch(&url));
        assert_eq!(
            fetch(),
            Ok(JwksResponse {
                status: 200,
                cache_control: Some("public, max-age=60".to_owned()),
                body: r#"{"keys": []}"#.to_owned()
            })
        );
        assert_eq!(fetch().map(|response| response.status), Ok(503));
        assert_eq!(fetch(), Err(FetchError(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes"))));
        assert_eq!(fetch().map(|response| response.body.len()), Ok(MAX_JWKS_BYTES));
    }

    #[test]
    fn an_unreachable_issuer_is_a_fetch_error_with_its_cause() {
        // A port just freed: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let fetcher = ReqwestFetcher::new().unwrap().timeout(Duration::from_secs(2));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let err =
            runtime.block_on(fetcher.fetch(&format!("http://127.0.0.1:{port}/.well-known/jwks.json"))).unwrap_err();
        assert!(err.0.contains("error sending request") && err.0.contains(": "), "{err}");
    }
}
