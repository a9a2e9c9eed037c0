//! Where the hosted pages may send a browser after success: only to URLs on the
//! `REDIRECT_ALLOWLIST`, compared as parsed URLs (scheme, host, port, path), never as strings.
//! Anything else — protocol-relative `//evil`, `https:evil`, user-info tricks, encoded or
//! backslashed forms, other ports, sibling paths — is refused, so edgeid is no open redirect.

use url::Url;

/// One allowed target: an absolute http(s) URL. A path ending in `/` allows everything under
/// it; any other path allows itself only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedRedirect(Url);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an absolute http(s) URL without user info, query or fragment")]
pub struct AllowlistEntryError(pub String);

impl AllowedRedirect {
    pub fn parse(raw: &str) -> Result<AllowedRedirect, AllowlistEntryError> {
        let error = || AllowlistEntryError(raw.to_owned());
        let url = parse_strict(raw).ok_or_else(error)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(error());
        }
        Ok(AllowedRedirect(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    fn allows(&self, candidate: &Url) -> bool {
        let allowed = &self.0;
        if candidate.scheme() != allowed.scheme()
            || candidate.host() != allowed.host()
            || candidate.port_or_known_default() != allowed.port_or_known_default()
        {
            return false;
        }
        let path = allowed.path();
        if path.ends_with('/') {
            candidate.path().starts_with(path)
        } else {
            candidate.path() == path
        }
    }
}

/// A `redirect_to` checked against the allowlist: the URL as the parser understood it.
pub fn check(allowlist: &[AllowedRedirect], raw: &str) -> Option<Url> {
    let url = parse_strict(raw)?;
    allowlist.iter().any(|allowed| allowed.allows(&url)).then_some(url)
}

/// An absolute http(s) URL, written plainly: no whitespace, control characters or backslashes
/// anywhere (browsers "fix" those in ways parsers disagree on), no user info, a host.
fn parse_strict(raw: &str) -> Option<Url> {
    if raw.is_empty() || raw.len() > 2048 || raw.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\') {
        return None;
    }
    // Only a scheme followed by `//` names a host; `https:evil` would parse as a host-less
    // special URL that the parser completes.
    let lower = raw.to_ascii_lowercase();
    if !lower.starts_with("https://") && !lower.starts_with("http://") {
        return None;
    }
    // Percent-encoding in the authority (`app%2eexample.com`) is decoded differently by
    // different parsers: never needed, always refused.
    let authority = raw.split_once("://").map_or("", |(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""));
    if authority.contains('%') {
        return None;
    }
    let url = Url::parse(raw).ok()?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.username().is_empty()
        && url.password().is_none()
        && url.host_str().is_some_and(|host| !host.is_empty());
    plain.then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowlist() -> Vec<AllowedRedirect> {
        ["https://app.example.com/", "https://app.example.com:8443/welcome", "http://localhost:3000/auth/"]
            .iter()
            .map(|raw| AllowedRedirect::parse(raw).unwrap())
            .collect()
    }

    #[test]
    fn allowed_targets_pass() {
        for ok in [
            "https://app.example.com/",
            "https://app.example.com/dashboard?tab=1",
            "https://APP.example.com/x",
            "https://app.example.com:443/x",
            "https://app.example.com:8443/welcome",
            "http://localhost:3000/auth/callback",
        ] {
            assert!(check(&allowlist(), ok).is_some(), "{ok}");
        }
    }

    #[test]
    fn open_redirect_tricks_are_refused() {
        for evil in [
            "//evil.example",
            "///evil.example",
            "https:evil.example",
            "https:/evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example",
            "https://app.example.com.evil.example/",
            "https://app.example.com@evil.example/",
            "https://user:pass@app.example.com/",
            "https://evil.example#@app.example.com/",
            "https://evil.example?@app.example.com/",
            "https://evil.example\\@app.example.com/",
            "https://app.example.com%2eevil.example/",
            "https://app%2eexample.com/",
            "https%3A%2F%2Fevil.example",
            "http://app.example.com/",
            "https://app.example.com:8443/welcome/../admin",
            "https://app.example.com:8443/welcomeX",
            "https://app.example.com:444/",
            "http://localhost:3000/authx",
            "javascript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            " https://app.example.com/",
            "https://app.example.com/\n",
            "https://app.example.com/\t",
            "",
        ] {
            assert!(check(&allowlist(), evil).is_none(), "{evil:?}");
        }
    }

    #[test]
    fn allowlist_entries_must_be_plain_absolute_urls() {
        for bad in [
            "app.example.com",
            "//app.example.com",
            "https://u@app.example.com/",
            "https://app.example.com/?x",
            "ftp://x/",
        ] {
            assert!(AllowedRedirect::parse(bad).is_err(), "{bad}");
        }
    }
}
