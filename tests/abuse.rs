//! Abuse resistance, natively: rate-limit budgets (exact, per client and per account, no
//! oracle), the breached-password check with its fail-open/fail-closed switch, and Argon2id
//! parameters upgraded at login.

use serde_json::{json, Value};

use crate::support::{test_config, token_in_link, App, Reply};

const PASSWORD: &str = "correct horse battery";

fn app_with(overrides: &[(&str, &str)]) -> App {
    App::with_config(test_config(overrides))
}

fn login_from(app: &App, ip: &str, email: &str, password: &str) -> Reply {
    app.post_from(ip, "/v1/login", json!({"email": email, "password": password}))
}

#[track_caller]
fn assert_rate_limited(reply: &Reply) -> i64 {
    reply.assert_error(429, "rate_limited");
    let retry_after: i64 = reply.response.header("Retry-After").expect("Retry-After").parse().unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    retry_after
}

#[test]
fn brute_force_on_one_account_is_refused_even_with_the_right_password() {
    let app = app_with(&[("RATE_LIMIT_LOGIN_PER_ACCOUNT", "3/900"), ("RATE_LIMIT_LOGIN_PER_IP", "6/900")]);
    app.verified_account("victim@example.com", PASSWORD);
    app.verified_account("other@example.com", PASSWORD);
    for _ in 0..3 {
        login_from(&app, "203.0.113.1", "victim@example.com", "wrong password")
            .assert_error(401, "invalid_credentials");
    }
    // The budget is spent: the right password is refused the same way, from anywhere.
    let retry_after = assert_rate_limited(&login_from(&app, "203.0.113.1", "victim@example.com", PASSWORD));
    assert_eq!(retry_after, 300, "one failure's worth of the 900 s window");
    assert_rate_limited(&login_from(&app, "198.51.100.9", "victim@example.com", PASSWORD));

    // Another account from the same address is unaffected until the address's budget (6) is
    // spent: 3 failures so far, and the refused attempts above did not count against it.
    for _ in 0..3 {
        assert_eq!(login_from(&app, "203.0.113.1", "other@example.com", PASSWORD).status, 200);
    }
    assert_rate_limited(&login_from(&app, "203.0.113.1", "other@example.com", PASSWORD));
    // ... while other addresses carry on.
    assert_eq!(login_from(&app, "198.51.100.10", "other@example.com", PASSWORD).status, 200);

    // The account's budget refills: one failure's worth every 300 s.
    app.advance(300);
    assert_eq!(login_from(&app, "198.51.100.9", "victim@example.com", PASSWORD).status, 200);
}

#[test]
fn successful_logins_do_not_spend_the_account_budget() {
    let app = app_with(&[("RATE_LIMIT_LOGIN_PER_ACCOUNT", "2/900")]);
    app.verified_account("regular@example.com", PASSWORD);
    for _ in 0..10 {
        assert_eq!(login_from(&app, "203.0.113.2", "regular@example.com", PASSWORD).status, 200);
    }
    login_from(&app, "203.0.113.2", "regular@example.com", "typo password").assert_error(401, "invalid_credentials");
    assert_eq!(login_from(&app, "203.0.113.2", "regular@example.com", PASSWORD).status, 200);
}

#[test]
fn throttling_says_nothing_about_whether_an_account_exists() {
    let app = app_with(&[("RATE_LIMIT_LOGIN_PER_ACCOUNT", "2/900"), ("RATE_LIMIT_MAIL_PER_ADDRESS", "2/3600")]);
    app.verified_account("known@example.com", PASSWORD);
    app.take_mails();
    // Creating the account drew on its address's budget: let it refill.
    app.advance(3600);
    let mut transcripts: Vec<Vec<(u16, Value, Option<String>)>> = Vec::new();
    for email in ["known@example.com", "unknown@example.com"] {
        let mut transcript = Vec::new();
        for _ in 0..3 {
            let reply = login_from(&app, "203.0.113.3", email, "wrong password");
            transcript.push((
                reply.status,
                reply.json.clone(),
                reply.response.header("Retry-After").map(str::to_owned),
            ));
        }
        for path in ["/v1/password/forgot", "/v1/email/resend", "/v1/password/forgot"] {
            let reply = app.post_from("203.0.113.3", path, json!({"email": email}));
            transcript.push((
                reply.status,
                reply.json.clone(),
                reply.response.header("Retry-After").map(str::to_owned),
            ));
        }
        transcripts.push(transcript);
    }
    assert_eq!(transcripts[0], transcripts[1]);
    let statuses: Vec<u16> = transcripts[0].iter().map(|(status, _, _)| *status).collect();
    assert_eq!(statuses, [401, 401, 429, 202, 202, 429]);
}

#[test]
fn nobody_can_mail_bomb_an_address() {
    let app = app_with(&[("RATE_LIMIT_MAIL_PER_ADDRESS", "3/3600"), ("RATE_LIMIT_MAIL_PER_IP", "100/3600")]);
    app.verified_account("target@example.com", PASSWORD);
    app.take_mails();
    app.advance(3600);
    // From many addresses, through every endpoint that mails: three mails an hour, no more.
    let mut statuses = Vec::new();
    for (index, path) in
        ["/v1/password/forgot", "/v1/signup", "/v1/email/resend", "/v1/password/forgot"].iter().enumerate()
    {
        let ip = format!("192.0.2.{index}");
        statuses.push(app.post_from(&ip, path, json!({"email": "target@example.com", "password": PASSWORD})).status);
    }
    assert_eq!(statuses, [202, 202, 202, 429]);
    // Resend mails only unverified accounts: two mails went out (reset, already registered).
    assert_eq!(app.take_mails().len(), 2);
    app.advance(1200);
    assert_eq!(app.post_from("192.0.2.9", "/v1/password/forgot", json!({"email": "target@example.com"})).status, 202);
    assert_eq!(app.take_mails().len(), 1);
}

#[test]
fn one_address_cannot_sign_up_without_end() {
    let app = app_with(&[("RATE_LIMIT_MAIL_PER_IP", "3/3600")]);
    let statuses: Vec<u16> = (0..5)
        .map(|n| {
            let body = json!({"email": format!("bot{n}@example.com"), "password": PASSWORD});
            app.post_from("203.0.113.4", "/v1/signup", body).status
        })
        .collect();
    assert_eq!(statuses, [202, 202, 202, 429, 429]);
    assert_eq!(app.users_count("SELECT count(*) FROM users"), 3, "a refused sign-up writes nothing");
    // IPv6 clients are counted by /64: rotating the interface identifier does not help.
    let v6: Vec<u16> = (0..4)
        .map(|n| {
            let body = json!({"email": format!("v6bot{n}@example.com"), "password": PASSWORD});
            app.post_from(&format!("2001:db8:7:7::{n:x}"), "/v1/signup", body).status
        })
        .collect();
    assert_eq!(v6, [202, 202, 202, 429]);
}

#[test]
fn token_submissions_are_budgeted_per_client() {
    let app = app_with(&[("RATE_LIMIT_TOKEN_PER_IP", "2/600")]);
    let forged = format!("000{}", "A".repeat(43));
    for _ in 0..2 {
        app.post_from("203.0.113.5", "/v1/email/verify", json!({"token": forged})).assert_error(400, "invalid_token");
    }
    assert_rate_limited(&app.post_from(
        "203.0.113.5",
        "/v1/password/reset",
        json!({"token": forged, "password": PASSWORD}),
    ));
    app.post_from("203.0.113.6", "/v1/email/verify", json!({"token": forged})).assert_error(400, "invalid_token");
}

#[test]
fn idle_buckets_are_cleaned_up() {
    let app = app_with(&[("RATE_LIMIT_LOGIN_PER_IP", "5/60")]);
    login_from(&app, "203.0.113.7", "nobody@example.com", "wrong password").assert_error(401, "invalid_credentials");
    assert_eq!(app.db.count("SELECT count(*) FROM rate_limits"), 1);
    let now_ms = app.now.get().timestamp_millis();
    assert_eq!(pollster::block_on(edgeid::store::remove_full_buckets(&app.db, now_ms)).unwrap(), 0);
    app.advance(13);
    let now_ms = app.now.get().timestamp_millis();
    assert_eq!(pollster::block_on(edgeid::store::remove_full_buckets(&app.db, now_ms)).unwrap(), 1);
}

#[test]
fn breached_passwords_are_refused_with_k_anonymity() {
    let app = App::new();
    app.http.breached.borrow_mut().push("password123456");
    let reply = app.post("/v1/signup", json!({"email": "new@example.com", "password": "password123456"}));
    reply.assert_error(400, "weak_password");
    assert!(reply.json["error_description"].as_str().unwrap().contains("data breach"), "{}", reply.json);
    assert_eq!(app.users_count("SELECT count(*) FROM users"), 0);
    let requests = app.http.requests.borrow().clone();
    assert_eq!(requests.len(), 1);
    // SHA-1("password123456") starts with 98A16; only that leaves the worker.
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].url, "https://pwned.example.test/range/98A16");
    assert!(requests[0].headers.contains(&("Add-Padding".to_owned(), "true".to_owned())));
    assert!(requests[0].body.is_empty());
    assert!(requests[0].timeout_ms.is_some_and(|timeout| timeout <= 1000));

    assert_eq!(app.post("/v1/signup", json!({"email": "new@example.com", "password": PASSWORD})).status, 202);
    app.single_mail_to("new@example.com");
    // A reset checks the new password too.
    app.verified_account("reset@example.com", PASSWORD);
    app.take_mails();
    app.post("/v1/password/forgot", json!({"email": "reset@example.com"}));
    let token = token_in_link(&app.single_mail_to("reset@example.com").text, "/reset-password");
    app.post("/v1/password/reset", json!({"token": token, "password": "password123456"}))
        .assert_error(400, "weak_password");
    assert_eq!(app.post("/v1/password/reset", json!({"token": token, "password": "a new passphrase"})).status, 200);
}

#[test]
fn an_unreachable_breach_api_fails_open_or_closed_as_configured() {
    let open = App::new();
    open.http.down.set(true);
    assert_eq!(open.post("/v1/signup", json!({"email": "a@example.com", "password": PASSWORD})).status, 202);
    assert_eq!(open.users_count("SELECT count(*) FROM users"), 1);

    let closed = app_with(&[("BREACHED_PASSWORD_CHECK", "fail-closed")]);
    closed.http.down.set(true);
    closed
        .post("/v1/signup", json!({"email": "a@example.com", "password": PASSWORD}))
        .assert_error(500, "server_error");
    assert_eq!(closed.users_count("SELECT count(*) FROM users"), 0, "nothing half-written");
    assert!(closed.take_mails().is_empty());

    let off = app_with(&[("BREACHED_PASSWORD_CHECK", "off")]);
    off.http.down.set(true);
    assert_eq!(off.post("/v1/signup", json!({"email": "a@example.com", "password": PASSWORD})).status, 202);
    assert!(off.http.requests.borrow().is_empty());
}

#[test]
fn weaker_hashes_are_upgraded_at_login() {
    let app = App::new();
    app.verified_account("upgrade@example.com", PASSWORD);
    let before = app.users_text("SELECT password_hash FROM users");
    assert!(before.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{before}");

    let stronger = App { config: test_config(&[("ARGON2_MEMORY_KIB", "32768"), ("ARGON2_ITERATIONS", "3")]), ..app };
    stronger.post("/v1/login", json!({"email": "upgrade@example.com", "password": "wrong password"}));
    assert_eq!(stronger.users_text("SELECT password_hash FROM users"), before, "a failed login changes nothing");
    assert_eq!(stronger.post("/v1/login", json!({"email": "upgrade@example.com", "password": PASSWORD})).status, 200);
    let after = stronger.users_text("SELECT password_hash FROM users");
    assert!(after.starts_with("$argon2id$v=19$m=32768,t=3,p=1$"), "{after}");
    assert_eq!(stronger.post("/v1/login", json!({"email": "upgrade@example.com", "password": PASSWORD})).status, 200);

    // Lowering the parameters re-hashes downwards too: every account converges on the cost an
    // unknown email's dummy verification has, so timing cannot tell a lagging account apart.
    let lowered = App { config: test_config(&[]), ..stronger };
    assert_eq!(lowered.post("/v1/login", json!({"email": "upgrade@example.com", "password": PASSWORD})).status, 200);
    let lowered_hash = lowered.users_text("SELECT password_hash FROM users");
    assert!(lowered_hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{lowered_hash}");
    assert_eq!(lowered.post("/v1/login", json!({"email": "upgrade@example.com", "password": PASSWORD})).status, 200);
}

/// The lockout policy: failures count per (account, client network) under a larger ceiling
/// for the account, so a stranger elsewhere spends his own budget, not the owner's.
#[test]
fn a_stranger_elsewhere_cannot_lock_the_owner_out() {
    let app = app_with(&[("RATE_LIMIT_LOGIN_PER_ACCOUNT_NETWORK", "3/900"), ("RATE_LIMIT_LOGIN_PER_ACCOUNT", "8/900")]);
    app.verified_account("owner@example.com", PASSWORD);
    for _ in 0..3 {
        login_from(&app, "203.0.113.66", "owner@example.com", "guess").assert_error(401, "invalid_credentials");
    }
    // The stranger's network is spent, for every password...
    assert_rate_limited(&login_from(&app, "203.0.113.66", "owner@example.com", PASSWORD));
    // ... and so is every /64 of his IPv6 /48 (the per-account budget counts the /48).
    for subnet in 0..3 {
        login_from(&app, &format!("2001:db8:66:{subnet}::1"), "owner@example.com", "guess")
            .assert_error(401, "invalid_credentials");
    }
    assert_rate_limited(&login_from(&app, "2001:db8:66:99::1", "owner@example.com", "guess"));
    // The owner, on their own network, still signs in.
    assert_eq!(login_from(&app, "198.51.100.10", "owner@example.com", PASSWORD).status, 200);
    // Strangers on many networks meet the account's ceiling: 3 + 3 spent, 2 more, then nobody
    // new gets through — not even the owner on a network they never signed in from...
    login_from(&app, "192.0.2.1", "owner@example.com", "guess").assert_error(401, "invalid_credentials");
    login_from(&app, "192.0.2.2", "owner@example.com", "guess").assert_error(401, "invalid_credentials");
    assert_rate_limited(&login_from(&app, "192.0.2.3", "owner@example.com", "guess"));
    assert_rate_limited(&login_from(&app, "198.51.100.99", "owner@example.com", PASSWORD));
    // ... but the network they signed in from is exempt from the ceiling, however long the
    // strangers keep it spent (its own per-network budget still counts its failures).
    for _ in 0..5 {
        assert_eq!(login_from(&app, "198.51.100.10", "owner@example.com", PASSWORD).status, 200);
        login_from(&app, "192.0.2.4", "owner@example.com", "guess");
    }
    login_from(&app, "198.51.100.10", "owner@example.com", "typo").assert_error(401, "invalid_credentials");
    // Ninety days without a sign-in there, the exemption lapses.
    app.advance(91 * 86_400);
    for n in 0..8u8 {
        login_from(&app, &format!("192.0.2.{}", 10 + n / 2), "owner@example.com", "guess");
    }
    assert_rate_limited(&login_from(&app, "198.51.100.10", "owner@example.com", PASSWORD));
}

/// A reset proves the mailbox, and clears the account's failure budgets: the owner is back in
/// at once, with the new password, from anywhere.
#[test]
fn a_reset_clears_the_account_failure_budget() {
    let app =
        app_with(&[("RATE_LIMIT_LOGIN_PER_ACCOUNT_NETWORK", "2/3600"), ("RATE_LIMIT_LOGIN_PER_ACCOUNT", "3/3600")]);
    app.verified_account("locked@example.com", PASSWORD);
    app.verified_account("bystander@example.com", PASSWORD);
    for ip in ["192.0.2.1", "192.0.2.1", "192.0.2.2"] {
        login_from(&app, ip, "locked@example.com", "guess").assert_error(401, "invalid_credentials");
        login_from(&app, ip, "bystander@example.com", "guess").assert_error(401, "invalid_credentials");
    }
    assert_rate_limited(&login_from(&app, "198.51.100.1", "locked@example.com", PASSWORD));
    app.post("/v1/password/forgot", json!({"email": "locked@example.com"}));
    let token = token_in_link(&app.single_mail_to("locked@example.com").text, "/reset-password");
    assert_eq!(
        app.post("/v1/password/reset", json!({"token": token, "password": "a brand new passphrase"})).status,
        200
    );
    assert_eq!(login_from(&app, "192.0.2.1", "locked@example.com", "a brand new passphrase").status, 200);
    assert_eq!(app.db.count("SELECT count(*) FROM known_networks"), 1, "the network just signed in from");
    // Only that account's budgets: the bystander's stay spent.
    assert_rate_limited(&login_from(&app, "198.51.100.1", "bystander@example.com", PASSWORD));
}

/// A refused login answers before any password is hashed: a flood of throttled attempts is
/// not a CPU amplifier. Argon2id with a large cost makes the difference plain in time.
#[test]
fn a_refused_login_spends_no_password_hash() {
    let app = app_with(&[
        ("RATE_LIMIT_LOGIN_PER_ACCOUNT", "2/900"),
        ("ARGON2_MEMORY_KIB", "65536"),
        ("ARGON2_ITERATIONS", "6"),
    ]);
    let timed = |password: &str| {
        let started = std::time::Instant::now();
        let status = login_from(&app, "203.0.113.30", "nobody@example.com", password).status;
        (status, started.elapsed())
    };
    let (first, hashed) = timed("guess one");
    assert_eq!(first, 401);
    assert_eq!(timed("guess two").0, 401);
    let (status, refused) = timed("guess three");
    assert_eq!(status, 429);
    assert!(refused * 5 < hashed, "a refusal took {refused:?}, a hashed failure {hashed:?}");
}

#[test]
fn hostile_input_is_refused_and_never_reflected() {
    let app = App::new();
    // Duplicate keys mean different things to different parsers: refused, at any depth.
    for body in [
        r#"{"email": "a@example.com", "email": "b@example.com", "password": "correct horse battery"}"#,
        r#"{"email": "a@example.com", "password": "correct horse battery", "x": {"y": 1, "y": 2}}"#,
    ] {
        let reply = app.request("POST", "/v1/signup", Some("application/json"), body.as_bytes());
        reply.assert_error(400, "invalid_request");
    }
    assert_eq!(app.users_count("SELECT count(*) FROM users"), 0);
    // Addresses that could inject a header or a second recipient never reach the mailer.
    for email in
        ["a@example.com\r\nBcc: b@example.com", "a@example.com, b@example.com", "A <a@example.com>", "a@exa mple.com"]
    {
        app.post("/v1/signup", json!({"email": email, "password": PASSWORD})).assert_error(400, "invalid_request");
        app.post("/v1/password/forgot", json!({"email": email})).assert_error(400, "invalid_request");
    }
    assert!(app.take_mails().is_empty());

    // Account endpoints carry no CORS headers, whatever Origin says; every response carries
    // the security headers.
    let mut request = edgeid::api::ApiRequest {
        method: "POST".to_owned(),
        host: String::new(),
        path: "/v1/login".to_owned(),
        query: String::new(),
        headers: vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("Origin".to_owned(), "https://evil.example".to_owned()),
        ],
        body: json!({"email": "a@example.com", "password": "whatever1"}).to_string().into_bytes(),
    };
    let paths = ["/v1/login", "/v1/signup", "/oauth/token", "/userinfo", "/verify-email", "/nowhere", "/healthz"];
    for path in paths {
        request.path = path.to_owned();
        let reply = app.send(request.clone());
        let headers = &reply.response;
        assert!(headers.header("access-control-allow-origin").is_none(), "{path}");
        assert!(headers.header("access-control-allow-credentials").is_none(), "{path}");
        assert_eq!(headers.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(headers.header("referrer-policy"), Some("no-referrer"), "{path}");
        assert!(headers.header("strict-transport-security").is_some(), "{path}");
    }
    // The public documents allow any origin, and never echo one.
    let jwks = app.get("/.well-known/jwks.json");
    assert_eq!(jwks.response.header("access-control-allow-origin"), Some("*"));
    let page = app.get("/reset-password?token=x");
    assert!(page.response.header("content-security-policy").is_some_and(|csp| csp.contains("default-src 'none'")));
}

/// The six digits after "enter this code …:" in a verification mail.
pub(crate) fn code_in(text: &str) -> String {
    let line = text.lines().find(|line| line.contains("code on the confirmation page")).expect("a code line");
    line.chars().filter(char::is_ascii_digit).collect()
}

#[test]
fn short_codes_verify_once_within_a_budget_that_a_resend_does_not_reset() {
    let app = app_with(&[("RATE_LIMIT_CODE_PER_ACCOUNT", "8/3600")]);
    app.post("/v1/signup", json!({"email": "coder@example.com", "password": PASSWORD}));
    let mail = app.single_mail_to("coder@example.com");
    let code = code_in(&mail.text);
    assert_eq!(code.len(), 6);
    assert!(mail.html.contains(&format!("{} {}", &code[..3], &code[3..])), "the HTML shows the code too");
    let wrong = if code == "000000" { "111111" } else { "000000" };

    // Malformed codes and addresses are client errors that cost nothing.
    for (email, code) in [("coder@example.com", "12345"), ("coder@example.com", "abcdef"), ("not an email", "123456")] {
        app.post("/v1/email/verify", json!({"email": email, "code": code})).assert_error(400, "invalid_request");
    }
    // Another account's code does not work, and counts against that account.
    app.post("/v1/signup", json!({"email": "other@example.com", "password": PASSWORD}));
    app.take_mails();
    app.post("/v1/email/verify", json!({"email": "other@example.com", "code": code}))
        .assert_error(400, "invalid_token");

    // Five wrong tries kill the code: the sixth try, with the right code, is refused.
    for _ in 0..5 {
        app.post("/v1/email/verify", json!({"email": "coder@example.com", "code": wrong}))
            .assert_error(400, "invalid_token");
    }
    app.post("/v1/email/verify", json!({"email": "coder@example.com", "code": code}))
        .assert_error(400, "invalid_token");
    // The link of the same mail still works for 24 h; a resend brings a new code that works at
    // once, but no new guesses: two units of the account's eight are left.
    assert_eq!(app.post("/v1/email/resend", json!({"email": "coder@example.com"})).status, 202);
    let fresh = code_in(&app.single_mail_to("coder@example.com").text);
    app.post("/v1/email/verify", json!({"email": "coder@example.com", "code": wrong}))
        .assert_error(400, "invalid_token");
    app.post("/v1/email/verify", json!({"email": "coder@example.com", "code": wrong}))
        .assert_error(400, "invalid_token");
    let throttled = app.post("/v1/email/verify", json!({"email": "coder@example.com", "code": fresh}));
    assert_rate_limited(&throttled);

    // Later, the right code (spaced as the mail shows it) works once, within its 15 minutes.
    app.advance(450);
    let spaced = format!("{} {}", &fresh[..3], &fresh[3..]);
    assert_eq!(app.post("/v1/email/verify", json!({"email": "coder@example.com", "code": spaced})).status, 200);
    assert_eq!(
        app.users_count(
            "SELECT count(*) FROM users WHERE email = 'coder@example.com' AND email_verified_at IS NOT NULL"
        ),
        1
    );
    app.post("/v1/email/verify", json!({"email": "coder@example.com", "code": fresh}))
        .assert_error(400, "invalid_token");
    // The first mail's code died with the resend: only the newest code is ever live, so
    // resends do not multiply the codes to guess at.
    app.advance(1200);
    app.post("/v1/email/verify", json!({"email": "coder@example.com", "code": code}))
        .assert_error(400, "invalid_token");
}

#[test]
fn a_code_lives_fifteen_minutes_and_its_link_a_day() {
    let app = App::new();
    app.post("/v1/signup", json!({"email": "slow@example.com", "password": PASSWORD}));
    let mail = app.single_mail_to("slow@example.com");
    let code = code_in(&mail.text);
    app.advance(15 * 60);
    app.post("/v1/email/verify", json!({"email": "slow@example.com", "code": code})).assert_error(400, "invalid_token");
    app.advance(23 * 3600);
    let link = token_in_link(&mail.text, "/verify-email");
    assert_eq!(app.post("/v1/email/verify", json!({"email": "slow@example.com", "token": link})).status, 200);

    // Just inside its fifteen minutes, a code works.
    app.post("/v1/signup", json!({"email": "quick@example.com", "password": PASSWORD}));
    let code = code_in(&app.single_mail_to("quick@example.com").text);
    app.advance(15 * 60 - 1);
    assert_eq!(app.post("/v1/email/verify", json!({"email": "quick@example.com", "code": code})).status, 200);
}

/// Farming: somebody who signed up many addresses he does not own guesses at their codes from
/// one IPv6 /48. Each /64 has its budget, the /48 sixteen times that, the email domain its
/// own from everywhere: the arithmetic below is what bounds how many addresses a day he could
/// verify (README, "Security").
#[test]
fn wrong_codes_draw_on_budgets_per_slash_64_per_slash_48_and_per_domain() {
    let app = app_with(&[
        ("RATE_LIMIT_CODE_PER_IP", "2/3600"),
        ("RATE_LIMIT_CODE_PER_DOMAIN", "40/3600"),
        ("RATE_LIMIT_CODE_PER_ACCOUNT", "10/3600"),
    ]);
    let guess = |ip: &str, email: &str| {
        let reply = app.post_from(ip, "/v1/email/verify", json!({"email": email, "code": "000000"}));
        reply.status
    };
    // One /64: two guesses, then refused, for any address.
    assert_eq!(guess("2001:db8:7:1::1", "a1@farm.example"), 400);
    assert_eq!(guess("2001:db8:7:1::2", "a2@farm.example"), 400);
    assert_eq!(guess("2001:db8:7:1:ffff::9", "a3@farm.example"), 429);
    // Rotating through the /64s of the /48 buys 16 × 2 = 32 guesses in all, not more.
    let mut admitted = 2;
    for subnet in 2..40 {
        if guess(&format!("2001:db8:7:{subnet:x}::1"), &format!("a{subnet}@farm.example")) == 400 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 32, "a /48 gets sixteen /64 budgets");
    // Another /48 has budgets of its own, but the domain's (40 an hour) is shared by all.
    let mut from_elsewhere = 0;
    for site in 0..20u32 {
        for host in 1..=2 {
            if guess(&format!("2001:db8:{:x}::{host}", 0x100 + site), "b@farm.example") == 400 {
                from_elsewhere += 1;
            }
        }
    }
    assert_eq!(from_elsewhere, 8, "32 + 8 = the domain's 40");
    assert_eq!(guess("2001:db8:999::1", "b@other.example"), 400, "other domains are not affected");
    // An IPv4 client is one address.
    assert_eq!(guess("198.51.100.1", "c@other.example"), 400);
    assert_eq!(guess("198.51.100.1", "c@other.example"), 400);
    assert_eq!(guess("198.51.100.1", "c@other.example"), 429);
    assert_eq!(guess("198.51.100.2", "c@other.example"), 400);
    // The IPv6 header wins over the IPv4 one that "Pseudo IPv4" puts beside it.
    let pseudo = |ipv4: &str| {
        app.send(edgeid::api::ApiRequest {
            method: "POST".into(),
            path: "/v1/email/verify".into(),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("CF-Connecting-IP".into(), ipv4.into()),
                ("CF-Connecting-IPv6".into(), "2001:db8:7:1::77".into()),
            ],
            body: json!({"email": "d@other.example", "code": "000000"}).to_string().into_bytes(),
            ..Default::default()
        })
        .status
    };
    assert_eq!(pseudo("240.0.0.1"), 429, "counted as the spent /64, whatever the pseudo IPv4");
    // Beside a real IPv4 address, a `CF-Connecting-IPv6` is the client's own invention: ignored,
    // so rotating it buys nothing.
    let spoofed = |v6: &str| {
        app.send(edgeid::api::ApiRequest {
            method: "POST".into(),
            path: "/v1/email/verify".into(),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("CF-Connecting-IP".into(), "198.51.100.77".into()),
                ("CF-Connecting-IPv6".into(), v6.into()),
            ],
            body: json!({"email": "e@other.example", "code": "000000"}).to_string().into_bytes(),
            ..Default::default()
        })
        .status
    };
    assert_eq!(spoofed("2001:db8:a::1"), 400);
    assert_eq!(spoofed("2001:db8:b::1"), 400);
    assert_eq!(spoofed("2001:db8:c::1"), 429);
}

/// A login is one round trip to read the account with its budgets, then one to start the
/// session and give the account's unit back (plus the signing keys, which the worker caches);
/// a failure is the first round trip only.
#[test]
fn logins_make_few_round_trips_and_a_right_password_is_never_throttled() {
    let app = app_with(&[("RATE_LIMIT_LOGIN_PER_IP", "100/900"), ("RATE_LIMIT_LOGIN_PER_ACCOUNT", "3/900")]);
    app.verified_account("trips@example.com", PASSWORD);
    // The first signature bootstraps the signing key; count from the second.
    assert_eq!(login_from(&app, "203.0.113.20", "trips@example.com", PASSWORD).status, 200);
    // (status, round trips before the response, after it)
    let batches = |password: &str| {
        let before = app.round_trips();
        let status = login_from(&app, "203.0.113.20", "trips@example.com", password).status;
        let at_response = app.round_trips_at_response.get();
        (status, at_response - before, app.round_trips() - at_response)
    };
    assert_eq!(batches("wrong password"), (401, 1, 0));
    assert_eq!(
        batches(PASSWORD),
        (200, 3, 1),
        "budgets with the account, session, keys; the unit back after the response"
    );

    // Right passwords of an unverified account give their unit back too.
    app.post("/v1/signup", json!({"email": "pending@example.com", "password": PASSWORD}));
    for _ in 0..6 {
        login_from(&app, "203.0.113.21", "pending@example.com", PASSWORD).assert_error(403, "email_not_verified");
    }
}

#[test]
fn refused_passwords_do_not_spend_the_mail_budget() {
    let app = app_with(&[("RATE_LIMIT_MAIL_PER_ADDRESS", "2/3600")]);
    app.http.breached.borrow_mut().push("password123456");
    for _ in 0..4 {
        app.post("/v1/signup", json!({"email": "careful@example.com", "password": "password123456"}))
            .assert_error(400, "weak_password");
    }
    assert_eq!(app.post("/v1/signup", json!({"email": "careful@example.com", "password": PASSWORD})).status, 202);
}

/// No failed login leaves a session or a refresh token behind, whatever failed.
#[test]
fn a_failed_login_leaves_no_session_behind() {
    let app = app_with(&[("RATE_LIMIT_LOGIN_PER_ACCOUNT", "2/900")]);
    app.verified_account("someone@example.com", PASSWORD);
    app.post("/v1/signup", json!({"email": "unverified@example.com", "password": PASSWORD}));
    let rows = || app.users_count("SELECT (SELECT count(*) FROM sessions) + (SELECT count(*) FROM refresh_tokens)");

    login_from(&app, "203.0.113.30", "nobody@example.com", PASSWORD).assert_error(401, "invalid_credentials");
    login_from(&app, "203.0.113.30", "unverified@example.com", PASSWORD).assert_error(403, "email_not_verified");
    login_from(&app, "203.0.113.30", "someone@example.com", "wrong password").assert_error(401, "invalid_credentials");
    login_from(&app, "203.0.113.30", "someone@example.com", "wrong password").assert_error(401, "invalid_credentials");
    // The account's budget is spent: even the right password is refused, and leaves nothing.
    login_from(&app, "203.0.113.30", "someone@example.com", PASSWORD).assert_error(429, "rate_limited");
    assert_eq!(rows(), 0);

    // A right password's session is whole: one session, one refresh token, and it refreshes.
    app.advance(900);
    let reply = login_from(&app, "203.0.113.30", "someone@example.com", PASSWORD);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(rows(), 2);
    let refreshed = app.request(
        "POST",
        "/oauth/token",
        Some("application/x-www-form-urlencoded"),
        format!("grant_type=refresh_token&refresh_token={}", reply.json["refresh_token"].as_str().unwrap()).as_bytes(),
    );
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
}

/// A code mailed before a key-encryption-key rotation still works while the old key is
/// `KEY_ENCRYPTION_KEY_PREVIOUS`; without it, it is just a wrong code (the link still works).
#[test]
fn a_code_survives_a_key_encryption_key_rotation() {
    let app = App::new();
    app.post("/v1/signup", json!({"email": "rotated@example.com", "password": PASSWORD}));
    let mail = app.single_mail_to("rotated@example.com");
    let code = code_in(&mail.text);
    let new_kek = "bmV3LWtleS1lbmNyeXB0aW9uLWtleS1mb3ItdGVzdHM";
    let without_previous = App { config: test_config(&[("KEY_ENCRYPTION_KEY", new_kek)]), ..app };
    without_previous
        .post("/v1/email/verify", json!({"email": "rotated@example.com", "code": code}))
        .assert_error(400, "invalid_token");
    let rotating = App {
        config: test_config(&[
            ("KEY_ENCRYPTION_KEY", new_kek),
            ("KEY_ENCRYPTION_KEY_PREVIOUS", crate::support::TEST_KEY_ENCRYPTION_KEY),
        ]),
        ..without_previous
    };
    assert_eq!(rotating.post("/v1/email/verify", json!({"email": "rotated@example.com", "code": code})).status, 200);
}
