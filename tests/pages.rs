//! The hosted pages natively, as a browser would use them: GET a page (cookie + form token),
//! POST its form; CSRF and same-origin checks, the redirect allowlist, errors in words, the
//! dev mailbox, the well-known URLs and the page security headers.

use edgeid::api::ApiRequest;
use serde_json::json;

use crate::support::{test_config, token_in_link, App, Reply};

const PASSWORD: &str = "correct horse battery";
const HOST: &str = "id.example.test";

/// A browser: keeps its cookie jar (the CSRF cookie and the SSO session's) and sends what
/// browsers send with a same-origin form post.
pub(crate) struct Browser<'a> {
    app: &'a App,
    cookie: std::cell::RefCell<Option<String>>,
    jar: std::cell::RefCell<std::collections::BTreeMap<String, String>>,
}

impl<'a> Browser<'a> {
    pub(crate) fn new(app: &'a App) -> Browser<'a> {
        Browser { app, cookie: Default::default(), jar: Default::default() }
    }

    /// The value of a cookie the browser holds.
    pub(crate) fn cookie(&self, name: &str) -> Option<String> {
        self.jar.borrow().get(name).cloned()
    }

    fn headers(&self) -> Vec<(String, String)> {
        let mut headers = vec![
            ("Host".to_owned(), HOST.to_owned()),
            ("Accept".to_owned(), "text/html,application/xhtml+xml".to_owned()),
        ];
        if let Some(cookie) = self.cookie.borrow().as_ref() {
            headers.push(("Cookie".to_owned(), cookie.clone()));
        }
        headers
    }

    fn keep_cookie(&self, reply: &Reply) {
        let mut jar = self.jar.borrow_mut();
        for (name, value) in &reply.response.headers {
            if !name.eq_ignore_ascii_case("set-cookie") {
                continue;
            }
            let pair = value.split(';').next().unwrap();
            let (cookie, content) = pair.split_once('=').unwrap();
            if value.contains("Max-Age=0") {
                jar.remove(cookie);
            } else {
                jar.insert(cookie.to_owned(), content.to_owned());
            }
        }
        let header: Vec<String> = jar.iter().map(|(name, value)| format!("{name}={value}")).collect();
        self.cookie.replace((!header.is_empty()).then(|| header.join("; ")));
    }

    pub(crate) fn get(&self, path_and_query: &str) -> Reply {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let reply = self.app.send(ApiRequest {
            method: "GET".into(),
            host: String::new(),
            path: path.into(),
            query: query.into(),
            headers: self.headers(),
            body: Vec::new(),
        });
        self.keep_cookie(&reply);
        reply
    }

    /// Posts the page's form with `fields` added to its hidden ones, as a same-origin browser.
    pub(crate) fn submit(&self, page: &Reply, fields: &[(&str, &str)]) -> Reply {
        self.submit_with(page, fields, &[("Origin", &format!("https://{HOST}")), ("Sec-Fetch-Site", "same-origin")])
    }

    pub(crate) fn submit_with(&self, page: &Reply, fields: &[(&str, &str)], extra_headers: &[(&str, &str)]) -> Reply {
        let html = page.text();
        let action = attribute(&html, "action").expect("the page has a form");
        let mut body = form_urlencoded::Serializer::new(String::new());
        for (name, value) in hidden_fields(&html) {
            body.append_pair(&name, &value);
        }
        for (name, value) in fields {
            body.append_pair(name, value);
        }
        let mut headers = self.headers();
        headers.push(("Content-Type".to_owned(), "application/x-www-form-urlencoded".to_owned()));
        headers.extend(extra_headers.iter().map(|(name, value)| (name.to_string(), value.to_string())));
        let reply = self.app.send(ApiRequest {
            method: "POST".into(),
            host: String::new(),
            path: action,
            query: String::new(),
            headers,
            body: body.finish().into_bytes(),
        });
        self.keep_cookie(&reply);
        reply
    }
}

fn attribute(html: &str, name: &str) -> Option<String> {
    let marker = format!("{name}=\"");
    let start = html.find(&marker)? + marker.len();
    Some(html[start..].split('"').next()?.replace("&amp;", "&"))
}

fn hidden_fields(html: &str) -> Vec<(String, String)> {
    html.split("<input type=\"hidden\" ")
        .skip(1)
        .map(|rest| (attribute(rest, "name").unwrap(), attribute(rest, "value").unwrap().replace("&quot;", "\"")))
        .collect()
}

fn log_app(overrides: &[(&str, &str)]) -> App {
    let mut vars =
        vec![("MAIL_PROVIDER", "log"), ("PUBLIC_URL", "http://127.0.0.1:8787"), ("ISSUER", "http://127.0.0.1:8787")];
    vars.extend_from_slice(overrides);
    App::with_config(test_config(&vars))
}

#[test]
fn the_whole_journey_through_the_hosted_forms() {
    let app = App::new();
    let browser = Browser::new(&app);

    let signup = browser.get("/signup");
    assert_eq!(signup.status, 200);
    assert!(signup.text().contains("Create your account"));
    let sent = browser.submit(
        &signup,
        &[("email", "Walker@Example.com"), ("password", PASSWORD), ("password_confirmation", PASSWORD)],
    );
    assert_eq!(sent.status, 202, "{}", sent.text());
    assert!(sent.text().contains("Check your email"));
    let token = token_in_link(&app.single_mail_to("walker@example.com").text, "/verify-email");

    let verify = browser.get(&format!("/verify-email?token={token}"));
    let confirmed = browser.submit(&verify, &[]);
    assert_eq!(confirmed.status, 200, "{}", confirmed.text());
    assert!(confirmed.text().contains("Email confirmed"));
    let again = browser.submit(&verify, &[]);
    assert_eq!(again.status, 400);
    assert!(again.text().contains("expired or was already used"));

    let login = browser.get("/login");
    let wrong = browser.submit(&login, &[("email", "walker@example.com"), ("password", "not my password")]);
    assert_eq!(wrong.status, 401);
    assert!(wrong.text().contains("is not right"), "{}", wrong.text());
    assert!(wrong.text().contains("value=\"walker@example.com\""), "the email is kept");
    let signed_in = browser.submit(&wrong, &[("email", "walker@example.com"), ("password", PASSWORD)]);
    assert_eq!(signed_in.status, 200, "{}", signed_in.text());
    assert!(signed_in.text().contains("You are signed in"));

    let forgot = browser.get("/forgot-password");
    assert_eq!(browser.submit(&forgot, &[("email", "walker@example.com")]).status, 202);
    let token = token_in_link(&app.single_mail_to("walker@example.com").text, "/reset-password");
    let reset = browser.get(&format!("/reset-password?token={token}"));
    let mismatch =
        browser.submit(&reset, &[("password", "first passphrase"), ("password_confirmation", "second passphrase")]);
    assert_eq!(mismatch.status, 400);
    assert!(mismatch.text().contains("The two passwords are not the same."), "{}", mismatch.text());
    let changed =
        browser.submit(&mismatch, &[("password", "first passphrase"), ("password_confirmation", "first passphrase")]);
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert!(changed.text().contains("Password changed"));
    assert_eq!(
        app.post("/v1/login", json!({"email": "walker@example.com", "password": "first passphrase"})).status,
        200
    );
}

#[test]
fn form_posts_need_the_token_of_their_cookie_and_the_same_origin() {
    let app = App::new();
    app.verified_account("csrf@example.com", PASSWORD);
    let browser = Browser::new(&app);
    let login = browser.get("/login");
    let fields = [("email", "csrf@example.com"), ("password", PASSWORD)];
    let expired = |reply: &Reply| reply.status == 400 && reply.text().contains("This form has expired");

    // Another site's page posting the form, however it dresses up.
    assert!(expired(&browser.submit_with(&login, &fields, &[("Origin", "https://evil.example")])));
    assert!(expired(&browser.submit_with(&login, &fields, &[("Origin", "null"), ("Sec-Fetch-Site", "cross-site")])));
    assert!(expired(&browser.submit_with(&login, &fields, &[("Sec-Fetch-Site", "cross-site")])));
    assert!(expired(&browser.submit_with(&login, &fields, &[("Sec-Fetch-Site", "same-site")])));
    // A token without its cookie, or for another cookie.
    let stranger = Browser::new(&app);
    assert!(expired(&stranger.submit(&login, &fields)));
    stranger.get("/login");
    assert!(expired(&stranger.submit(&login, &fields)));
    // No token at all.
    let bare = Browser::new(&app);
    bare.get("/login");
    let form = "email=csrf%40example.com&password=correct+horse+battery";
    let mut headers = bare.headers();
    headers.push(("Content-Type".into(), "application/x-www-form-urlencoded".into()));
    let reply = app.send(ApiRequest {
        method: "POST".into(),
        host: String::new(),
        path: "/v1/login".into(),
        headers,
        body: form.into(),
        ..Default::default()
    });
    assert!(expired(&reply));
    // The real thing; with our no-referrer policy, browsers send `Origin: null`.
    assert_eq!(
        browser.submit_with(&login, &fields, &[("Origin", "null"), ("Sec-Fetch-Site", "same-origin")]).status,
        200
    );
    assert_eq!(browser.submit(&login, &fields).status, 200);
    // API clients (JSON, or forms that do not ask for HTML) are not browsers: no CSRF token.
    assert_eq!(app.post("/v1/login", json!({"email": "csrf@example.com", "password": PASSWORD})).status, 200);
}

#[test]
fn redirects_go_only_to_the_allowlist() {
    let app = App::with_config(test_config(&[(
        "REDIRECT_ALLOWLIST",
        "https://app.example.test/welcome https://app.example.test/auth/",
    )]));
    app.verified_account("redirect@example.com", PASSWORD);
    let browser = Browser::new(&app);
    for evil in [
        "//evil.example",
        "https:evil.example",
        "https://evil.example/welcome",
        "https%3A%2F%2Fevil.example",
        "https://app.example.test@evil.example/welcome",
        "https://app.example.test.evil.example/welcome",
        "/%5Cevil.example",
        "https://app.example.test/welcome/../../evil",
        "https://app%2eexample.test/welcome",
        "javascript:alert(document.domain)",
    ] {
        let query = form_urlencoded::Serializer::new(String::new()).append_pair("redirect_to", evil).finish();
        let page = browser.get(&format!("/login?{query}"));
        assert_eq!(page.status, 400, "{evil}");
        assert!(page.text().contains("goes somewhere we don"), "{evil}");
        assert!(!page.text().contains("evil.example\""), "{evil}");
    }
    // A tampered hidden field is checked again on the post.
    let login = browser.get("/login?redirect_to=https%3A%2F%2Fapp.example.test%2Fwelcome");
    let tampered = login.text().replace("https://app.example.test/welcome", "https://evil.example/");
    let tampered_page = Reply {
        status: 200,
        json: serde_json::Value::Null,
        response: edgeid::api::ApiResponse { body: tampered.into_bytes(), ..login.response.clone() },
    };
    let refused = browser.submit(&tampered_page, &[("email", "redirect@example.com"), ("password", PASSWORD)]);
    assert_eq!(refused.status, 400);

    // The allowed destination is where the browser goes back to, signed in (an SSO session),
    // and never with tokens: apps get those through /oauth/authorize.
    let signed_in = browser.submit(&login, &[("email", "redirect@example.com"), ("password", PASSWORD)]);
    assert_eq!(signed_in.status, 303, "{}", signed_in.text());
    let location = signed_in.response.header("location").unwrap();
    assert_eq!(location, "https://app.example.test/welcome");
    assert!(browser.cookie("__Host-edgeid-session").is_some(), "over HTTPS the SSO cookie is __Host-");
    // The CSP lets the form redirect there, and nowhere else.
    let csp = login.response.header("content-security-policy").unwrap();
    assert!(csp.contains("form-action 'self' https://app.example.test;"), "{csp}");
}

#[test]
fn pages_carry_a_strict_policy_with_a_fresh_nonce() {
    let app = App::with_config(test_config(&[
        ("PRODUCT_NAME", "Acme <Cloud>"),
        ("LOGO_URL", "https://cdn.acme.test/logo.svg"),
        ("ACCENT_COLOR", "#AA3300"),
    ]));
    let browser = Browser::new(&app);
    let first = browser.get("/signup");
    let second = browser.get("/signup");
    let csp = first.response.header("content-security-policy").unwrap().to_owned();
    let nonce = csp.split("'nonce-").nth(1).unwrap().split('\'').next().unwrap().to_owned();
    assert!(first.text().contains(&format!("<script nonce=\"{nonce}\">")));
    assert!(!second.response.header("content-security-policy").unwrap().contains(&nonce), "a nonce per response");
    for directive in
        ["default-src 'none'", "frame-ancestors 'none'", "base-uri 'none'", "img-src https://cdn.acme.test;"]
    {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    let html = first.text();
    assert!(html.contains("Acme &lt;Cloud&gt;") && !html.contains("Acme <Cloud>"));
    assert!(html.contains("#aa3300"));
    assert_eq!(first.response.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(first.response.header("x-frame-options"), Some("DENY"));
    let cookie = first.response.header("set-cookie").unwrap();
    // Lax, not Strict: a person who follows the link in a mail into an open tab (a cross-site
    // navigation) still has their cookie, and a form opened in another tab keeps working.
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
}

#[test]
fn the_csrf_cookie_is_reused_so_open_forms_in_other_tabs_keep_working() {
    let app = App::new();
    let browser = Browser::new(&app);
    let first_tab = browser.get("/forgot-password");
    let cookie = browser.cookie.clone();
    let second_tab = browser.get("/signup");
    assert_eq!(browser.cookie, cookie, "the second page sets the same cookie again");
    assert_eq!(browser.submit(&first_tab, &[("email", "tabs@example.com")]).status, 202);
    assert_eq!(
        browser
            .submit(
                &second_tab,
                &[("email", "tabs2@example.com"), ("password", PASSWORD), ("password_confirmation", PASSWORD)]
            )
            .status,
        202
    );
}

#[test]
fn the_reset_page_names_the_account_it_resets() {
    let app = App::new();
    app.verified_account("jane.doe@example.com", PASSWORD);
    app.post("/v1/password/forgot", json!({"email": "jane.doe@example.com"}));
    let token = token_in_link(&app.single_mail_to("jane.doe@example.com").text, "/reset-password");
    let browser = Browser::new(&app);
    let page = browser.get(&format!("/reset-password?token={token}"));
    assert_eq!(page.status, 200);
    assert!(page.text().contains("j\u{2022}\u{2022}\u{2022}@example.com"), "{}", page.text());
    assert!(!page.text().contains("jane.doe"), "masked");
    // A GET consumed nothing: the form still works, and then the link is dead on sight.
    let changed =
        browser.submit(&page, &[("password", "a new passphrase"), ("password_confirmation", "a new passphrase")]);
    assert_eq!(changed.status, 200, "{}", changed.text());
    let dead = browser.get(&format!("/reset-password?token={token}"));
    assert_eq!(dead.status, 400);
    assert!(dead.text().contains("This link does not work") && !dead.text().contains("@example.com"));
}

#[test]
fn the_dev_mailbox_exists_only_with_the_log_provider() {
    let app = App::new();
    assert_eq!(app.get("/dev/mailbox").status, 404, "MAIL_PROVIDER=resend");
    let dev = log_app(&[]);
    pollster::block_on(edgeid::store::add_to_dev_mailbox(
        &dev.db,
        "dev@example.com",
        "Confirm your email",
        "Open https://app.example.test/verify-email?token=abc&x=<y>",
        dev.now.get(),
    ))
    .unwrap();
    let mailbox = dev.get("/dev/mailbox");
    assert_eq!(mailbox.status, 200);
    let html = mailbox.text();
    assert!(html.contains("<a href=\"https://app.example.test/verify-email?token=abc&amp;x=&lt;y&gt;\">"), "{html}");
    assert!(html.contains("dev@example.com"));
    // A worker deployed with the dev defaults answers nothing to the world: not the mailbox,
    // not a sign-up whose link would land in a public log.
    for path in ["/dev/mailbox", "/healthz"] {
        let public = dev.send(ApiRequest {
            method: "GET".into(),
            host: "edgeid.example.workers.dev".into(),
            path: path.into(),
            ..Default::default()
        });
        public.assert_error(500, "server_error");
        assert!(!public.text().contains("dev@example.com"));
        // A loopback Host is not enough: the peer must be this machine too.
        let forged_host = dev.send(ApiRequest {
            method: "GET".into(),
            host: "127.0.0.1:8787".into(),
            path: path.into(),
            headers: vec![("CF-Connecting-IP".into(), "203.0.113.40".into())],
            ..Default::default()
        });
        forged_host.assert_error(500, "server_error");
        let forged_v6 = dev.send(ApiRequest {
            method: "GET".into(),
            host: "127.0.0.1:8787".into(),
            path: path.into(),
            headers: vec![
                ("CF-Connecting-IP".into(), "203.0.113.40".into()),
                ("CF-Connecting-IPv6".into(), "::1".into()),
            ],
            ..Default::default()
        });
        forged_v6.assert_error(500, "server_error");
        let from_here = dev.send(ApiRequest {
            method: "GET".into(),
            host: "127.0.0.1:8787".into(),
            path: path.into(),
            headers: vec![("CF-Connecting-IP".into(), "127.0.0.1".into())],
            ..Default::default()
        });
        assert_eq!(from_here.status, 200);
    }
}

#[test]
fn password_managers_find_the_change_password_url() {
    let app = App::new();
    let reply = app.get("/.well-known/change-password");
    assert_eq!(reply.status, 302);
    assert_eq!(reply.response.header("location"), Some("/forgot-password"));
    assert_eq!(app.get("/forgot-password").status, 200);
}

#[test]
fn the_code_from_the_mail_works_on_the_verify_page() {
    let app = App::new();
    app.post("/v1/signup", json!({"email": "typist@example.com", "password": PASSWORD}));
    let text = app.single_mail_to("typist@example.com").text;
    let line = text.lines().find(|line| line.contains("confirmation page")).unwrap();
    let code: String = line.chars().filter(char::is_ascii_digit).collect();
    let browser = Browser::new(&app);
    let page = browser.get("/verify-email");
    assert!(page.text().contains("Enter your code"));
    let wrong = browser.submit(
        &page,
        &[("email", "typist@example.com"), ("code", if code == "999999" { "111 111" } else { "999 999" })],
    );
    assert_eq!(wrong.status, 400);
    assert!(wrong.text().contains("That code is not right"), "{}", wrong.text());
    let confirmed = browser.submit(&wrong, &[("email", "typist@example.com"), ("code", &code)]);
    assert_eq!(confirmed.status, 200, "{}", confirmed.text());
    assert!(confirmed.text().contains("Email confirmed"));
}
