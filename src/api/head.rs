//! The request line and headers as the Worker adapter hands them over in one string
//! (`src/cloudflare/glue.js`, `requestHead`): the method, the absolute URL, then the value of
//! each header of `REQUEST_HEADERS` in that order, `\0` where one is absent, all separated by
//! `\n` (HTTP allows neither in a header value).

use crate::api::REQUEST_HEADERS;

#[derive(Debug, PartialEq, Eq)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// The URL's authority without user information: `host` or `host:port`.
    pub host: &'a str,
    pub path: &'a str,
    /// Without the `?`; empty when there is none.
    pub query: &'a str,
    /// The headers of `REQUEST_HEADERS` that are present.
    pub headers: Vec<(&'static str, &'a str)>,
}

/// `None` when `head` is not in that form: a header count that does not match, or a URL
/// without a scheme and authority.
pub fn parse_head(head: &str) -> Option<RequestHead<'_>> {
    let mut lines = head.split('\n');
    let method = lines.next().filter(|method| !method.is_empty())?;
    let (host, path, query) = split_url(lines.next()?)?;
    let mut headers = Vec::new();
    for name in REQUEST_HEADERS {
        match lines.next()? {
            "\0" => {}
            value => headers.push((*name, value)),
        }
    }
    if lines.next().is_some() {
        return None;
    }
    Some(RequestHead { method, host, path, query, headers })
}

/// Host, path and query of an absolute URL as the runtime serializes a request's URL (already
/// normalized: lower-case host, default port omitted, path percent-encoded).
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (_scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(authority_end);
    let host = authority.rsplit('@').next().unwrap_or(authority);
    if host.is_empty() {
        return None;
    }
    let rest = rest.split('#').next().unwrap_or_default();
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    Some((host, if path.is_empty() { "/" } else { path }, query))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, url: &str, values: &[(&str, &str)]) -> String {
        let mut head = format!("{method}\n{url}");
        for name in REQUEST_HEADERS {
            let value = values.iter().find(|(candidate, _)| candidate == name).map_or("\0", |(_, value)| value);
            head.push('\n');
            head.push_str(value);
        }
        head
    }

    #[test]
    fn reads_the_request_line_and_the_present_headers() {
        let text = head(
            "POST",
            "https://id.example.com/oauth/token?x=1&y=%20#frag",
            &[("content-type", "application/x-www-form-urlencoded"), ("cookie", "")],
        );
        let parsed = parse_head(&text).unwrap();
        assert_eq!(parsed.method, "POST");
        assert_eq!(parsed.host, "id.example.com");
        assert_eq!(parsed.path, "/oauth/token");
        assert_eq!(parsed.query, "x=1&y=%20");
        // An empty header is present; an absent one is not.
        assert_eq!(parsed.headers, vec![("content-type", "application/x-www-form-urlencoded"), ("cookie", "")]);
    }

    #[test]
    fn splits_urls_as_the_runtime_serializes_them() {
        for (url, host, path, query) in [
            ("http://127.0.0.1:8787/", "127.0.0.1:8787", "/", ""),
            ("http://[::1]:8787/healthz", "[::1]:8787", "/healthz", ""),
            ("https://id.example.com", "id.example.com", "/", ""),
            ("https://id.example.com?a=b", "id.example.com", "/", "a=b"),
            ("https://user:secret@id.example.com/x", "id.example.com", "/x", ""),
            ("https://id.example.com/a#b?c", "id.example.com", "/a", ""),
        ] {
            let text = head("GET", url, &[]);
            let parsed = parse_head(&text).unwrap();
            assert_eq!((parsed.host, parsed.path, parsed.query), (host, path, query), "{url}");
        }
    }

    #[test]
    fn refuses_what_is_not_in_the_form() {
        let good = head("GET", "https://id.example.com/", &[]);
        assert!(parse_head(&good).is_some());
        // A header too many or too few (a line break in a value).
        assert!(parse_head(&format!("{good}\nextra")).is_none());
        assert!(parse_head(good.rsplit_once('\n').unwrap().0).is_none());
        assert!(parse_head(&head("GET", "/relative", &[])).is_none());
        assert!(parse_head(&head("GET", "https:///path", &[])).is_none());
        assert!(parse_head(&head("", "https://id.example.com/", &[])).is_none());
        assert!(parse_head("").is_none());
    }
}
