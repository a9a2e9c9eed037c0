//! End to end against `wrangler dev`: rate-limit budgets under concurrency (exact), per
//! account and per client; the breached-password check through a local fake; the body limit;
//! one winner among 64 uses of one verification token; and failure paths of login that cost
//! the same.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::e2e::{all_at_once, client, post, MailSink, Worker, BREACHED_PASSWORD};
use crate::support::token_in_link;

const PASSWORD: &str = "correct horse battery";

/// A login from `ip`, as the edge would say it: IPv6 clients in `CF-Connecting-IPv6` (beside a
/// pseudo IPv4 address in `CF-Connecting-IP`, as Cloudflare's "Pseudo IPv4" sends them).
fn login_from(worker: &Worker, ip: &str, email: &str, password: &str) -> reqwest::blocking::Response {
    from(client().post(worker.url("/v1/login")), ip)
        .json(&json!({"email": email, "password": password}))
        .send()
        .unwrap()
}

fn from(request: reqwest::blocking::RequestBuilder, ip: &str) -> reqwest::blocking::RequestBuilder {
    match ip.contains(':') {
        true => request.header("CF-Connecting-IPv6", ip).header("CF-Connecting-IP", "240.0.0.1"),
        false => request.header("CF-Connecting-IP", ip),
    }
}

fn verified_account(worker: &Worker, sink: &MailSink, email: &str) {
    let mut seen = 0;
    assert_eq!(post(worker, "/v1/signup", json!({"email": email, "password": PASSWORD})).0, 202);
    let token = token_in_link(sink.wait_for(email, &mut seen).text(), "/verify-email");
    assert_eq!(post(worker, "/v1/email/verify", json!({"token": token})).0, 200);
}

#[test]
fn end_to_end_abuse_resistance() {
    let sink = MailSink::start();
    let worker = Worker::start_with(
        &sink,
        &[
            "RATE_LIMIT_LOGIN_PER_ACCOUNT_NETWORK:3/3600",
            "RATE_LIMIT_LOGIN_PER_ACCOUNT:6/3600",
            "RATE_LIMIT_LOGIN_PER_IP:30/3600",
            "RATE_LIMIT_CODE_PER_IP:2/3600",
            "RATE_LIMIT_PREFILTER:on",
            "RATE_LIMIT_MAIL_PER_ADDRESS:5/3600",
            "RATE_LIMIT_TOKEN_PER_IP:off",
            "BREACHED_PASSWORD_CHECK:fail-closed",
        ],
    );
    type Case = fn(&Worker, &MailSink);
    let cases: &[(&str, Case)] = &[
        ("brute force on one account, concurrently", brute_force),
        ("code farming from one /48", code_farming),
        ("the flood pre-filter", flood_prefilter),
        ("mail budget per address", mail_budget),
        ("breached passwords", breached_passwords),
        ("body limit", body_limit),
        ("64 uses of one token", one_token_many_uses),
        ("login failures cost the same", uniform_login_cost),
    ];
    for (name, case) in cases {
        eprintln!("e2e abuse: {name}");
        case(&worker, &sink);
    }
}

fn brute_force(worker: &Worker, sink: &MailSink) {
    verified_account(worker, sink, "victim@example.com");
    verified_account(worker, sink, "bystander@example.com");
    // 20 guesses at once from the /64s of one IPv6 /48: exactly the account's budget on that
    // network (3) is evaluated, the rest refused.
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|n| {
                scope.spawn(move || {
                    let ip = format!("2001:db8:66:{n:x}::1");
                    login_from(worker, &ip, "victim@example.com", &format!("guess {n}")).status()
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap().as_u16()).collect()
    });
    assert_eq!(statuses.iter().filter(|status| **status == 401).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|status| **status == 429).count(), 17, "{statuses:?}");

    // The stranger did not lock the owner out: from the owner's network, the password works.
    assert_eq!(login_from(worker, "198.51.100.1", "victim@example.com", PASSWORD).status(), 200);
    // A second network spends its own 3, and then the account's ceiling (6) is reached: the
    // right password is refused, with Retry-After, from every network but the one the owner
    // signed in from (exempt from the ceiling).
    let attacker = "203.0.113.66";
    for n in 0..3 {
        assert_eq!(login_from(worker, attacker, "victim@example.com", &format!("more {n}")).status(), 401);
    }
    assert_eq!(login_from(worker, "198.51.100.1", "victim@example.com", PASSWORD).status(), 200);
    for ip in [attacker, "198.51.100.3"] {
        let response = login_from(worker, ip, "victim@example.com", PASSWORD);
        assert_eq!(response.status(), 429);
        let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=3600).contains(&retry_after), "{retry_after}");
        let body: Value = response.json().unwrap();
        assert_eq!(body["error"], "rate_limited");
    }

    // The bystander's account is fine from the attacker's address until that address has spent
    // its 30: 3 failures so far (refused attempts do not count), so 27 more.
    for n in 0..27 {
        assert_eq!(login_from(worker, attacker, "bystander@example.com", PASSWORD).status(), 200, "login {n}");
    }
    assert_eq!(login_from(worker, attacker, "bystander@example.com", PASSWORD).status(), 429);
    assert_eq!(login_from(worker, "198.51.100.2", "bystander@example.com", PASSWORD).status(), 200);
}

/// Guessing at short codes of many addresses from the /64s of one IPv6 /48, all at once: the
/// /48 admits sixteen /64 budgets (16 × 2) and refuses the rest, exactly.
fn code_farming(worker: &Worker, _sink: &MailSink) {
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..48)
            .map(|n| {
                scope.spawn(move || {
                    let request = client().post(worker.url("/v1/email/verify"));
                    from(request, &format!("2001:db8:77:{:x}::{}", n / 2, n % 2 + 1))
                        .json(&json!({"email": format!("farmed{n}@example.com"), "code": "123456"}))
                        .send()
                        .unwrap()
                        .status()
                        .as_u16()
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    assert_eq!(statuses.iter().filter(|status| **status == 400).count(), 32, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|status| **status == 429).count(), 16, "{statuses:?}");
}

/// The Workers Rate Limiting binding in front of D1 (`[[ratelimits]]` in wrangler.toml, 1000 a
/// minute per client): one client's flood is refused before the worker reads D1; another client
/// is not affected.
fn flood_prefilter(worker: &Worker, _sink: &MailSink) {
    // (status, Retry-After, error) of each request of a flood from `ip`, eight at a time.
    type Answer = (u16, Option<String>, Value);
    let flood = |ip: &'static str, count: usize| -> Vec<Answer> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(move || {
                        let client = client();
                        (0..count / 8)
                            .map(|_| {
                                let response = from(client.post(worker.url("/oauth/revoke")), ip)
                                    .form(&[("token", "not-a-token")])
                                    .send()
                                    .unwrap();
                                let status = response.status().as_u16();
                                let retry_after =
                                    response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                                (status, retry_after, response.json().unwrap_or(Value::Null))
                            })
                            .collect::<Vec<Answer>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|handle| handle.join().unwrap()).collect()
        })
    };
    // 1000 a minute in fixed windows: 1200 requests meet the limit, or cross into the next
    // window and meet it there within 2400.
    let mut answers = flood("192.0.2.200", 1200);
    if !answers.iter().any(|(status, ..)| *status == 429) {
        answers.extend(flood("192.0.2.200", 1200));
    }
    let admitted = answers.iter().filter(|(status, ..)| *status == 200).count();
    let refusal = answers.iter().find(|(status, ..)| *status == 429);
    let Some((_, retry_after, body)) = refusal else { panic!("no refusal in {} requests", answers.len()) };
    assert_eq!(retry_after.as_deref(), Some("60"));
    assert_eq!(body["error"], "rate_limited");
    assert!(answers.iter().all(|(status, ..)| matches!(status, 200 | 429)));
    assert!(admitted >= 1000, "only {admitted} admitted");
    let others: Vec<u16> = flood("192.0.2.201", 8).into_iter().map(|(status, ..)| status).collect();
    assert_eq!(others, [200; 8], "another client is not affected");
}

fn mail_budget(worker: &Worker, sink: &MailSink) {
    let before = sink.accepted().len();
    let mut statuses = vec![post(worker, "/v1/signup", json!({"email": "inbox@example.com", "password": PASSWORD})).0];
    for _ in 0..5 {
        statuses.push(post(worker, "/v1/email/resend", json!({"email": "inbox@example.com"})).0);
    }
    assert_eq!(statuses, [202, 202, 202, 202, 202, 429]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while sink.accepted().len() < before + 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.accepted().len() - before, 5, "five mails, no more");
}

fn breached_passwords(worker: &Worker, sink: &MailSink) {
    let (status, body) =
        post(worker, "/v1/signup", json!({"email": "reuser@example.com", "password": BREACHED_PASSWORD}));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "weak_password");
    assert!(body["error_description"].as_str().unwrap().contains("breach"), "{body}");
    let ranges = sink.range_requests.lock().unwrap().clone();
    let (prefix, headers) = ranges.last().unwrap();
    assert_eq!(prefix.len(), 5, "only five hex digits of the SHA-1 leave the worker: {prefix}");
    assert!(headers.iter().any(|(name, value)| name.eq_ignore_ascii_case("add-padding") && value == "true"));
    assert_eq!(post(worker, "/v1/signup", json!({"email": "reuser@example.com", "password": PASSWORD})).0, 202);
}

fn body_limit(worker: &Worker, _sink: &MailSink) {
    let megabyte = vec![b'a'; 1 << 20];
    let started = Instant::now();
    let response = client()
        .post(worker.url("/v1/signup"))
        .header("content-type", "application/json")
        .body(megabyte.clone())
        .send()
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    // Without Content-Length (chunked), the body is measured as it arrives. (Just over the
    // limit, so that the client has sent it all before the early answer closes the connection.)
    let response = client()
        .post(worker.url("/v1/login"))
        .header("content-type", "application/json")
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(megabyte).take(20 * 1024)))
        .send()
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().unwrap();
    assert_eq!(body["error"], "payload_too_large");
    // A chunked body under the limit arriving a few bytes at a time is read whole.
    let login = json!({"email": "nobody@example.com", "password": "a wrong password"}).to_string();
    let response = client()
        .post(worker.url("/v1/login"))
        .header("content-type", "application/json")
        .body(reqwest::blocking::Body::new(Trickle(std::io::Cursor::new(login.into_bytes()))))
        .send()
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().unwrap();
    assert_eq!(body["error"], "invalid_credentials");
    // Chunked bodies of exactly the limit and one byte more (JSON padded with spaces).
    for (size, status) in [(16 * 1024, 401), (16 * 1024 + 1, 413)] {
        let mut body = json!({"email": "nobody@example.com", "password": "a wrong password"}).to_string().into_bytes();
        body.resize(size, b' ');
        let response = client()
            .post(worker.url("/v1/login"))
            .header("content-type", "application/json")
            .body(reqwest::blocking::Body::new(std::io::Cursor::new(body)))
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "a chunked body of {size} bytes");
    }
}

/// A body that arrives five bytes at a time, a moment apart, so one chunk each.
struct Trickle<R>(R);

impl<R: Read> Read for Trickle<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(Duration::from_millis(2));
        let end = buffer.len().min(5);
        self.0.read(&mut buffer[..end])
    }
}

fn one_token_many_uses(worker: &Worker, sink: &MailSink) {
    let email = "sixtyfour@example.com";
    let mut seen = 0;
    post(worker, "/v1/signup", json!({"email": email, "password": PASSWORD}));
    let token = token_in_link(sink.wait_for(email, &mut seen).text(), "/verify-email");
    let statuses = all_at_once(worker, "/v1/email/verify", (0..64).map(|_| json!({"token": token})).collect());
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 63, "{statuses:?}");
}

/// An unknown email and a wrong password each cost one Argon2id run, so their latencies are
/// alike; a throttled account's refusal costs none (a flood of refusals is no CPU amplifier) and
/// is plainly faster. Medians of interleaved samples, with a wide margin.
fn uniform_login_cost(worker: &Worker, sink: &MailSink) {
    let accounts: Vec<String> = (0..4).map(|n| format!("timing{n}@example.com")).collect();
    for account in &accounts {
        verified_account(worker, sink, account);
    }
    // Throttle the first account from elsewhere (its ceiling of six).
    for n in 0..6 {
        login_from(worker, &format!("198.51.100.{}", 50 + n / 3), &accounts[0], "wrong password");
    }
    let mut samples: [Vec<Duration>; 3] = Default::default();
    for round in 0..12 {
        let attempts = [
            (format!("nobody{round}@example.com"), 401),
            // Four failures each for three accounts, each from its own network: under budget.
            (accounts[1 + round % 3].clone(), 401),
            (accounts[0].clone(), 429),
        ];
        for (kind, (email, expected)) in attempts.iter().enumerate() {
            // Each attempt from its own address, so no address budget interferes.
            let ip = format!("192.0.2.{}", round * 3 + kind + 1);
            let started = Instant::now();
            let status = login_from(worker, &ip, email, "wrong password").status().as_u16();
            samples[kind].push(started.elapsed());
            assert_eq!(status, *expected, "{email}");
        }
    }
    let medians: Vec<Duration> = samples
        .iter_mut()
        .map(|samples| {
            samples.sort();
            samples[samples.len() / 2]
        })
        .collect();
    eprintln!(
        "login medians: unknown email {:?}, wrong password {:?}, throttled {:?}",
        medians[0], medians[1], medians[2]
    );
    let ratio = medians[1].as_secs_f64() / medians[0].as_secs_f64();
    assert!((0.5..=2.0).contains(&ratio), "{medians:?}");
    assert!(medians[2] < medians[0], "a refusal hashes nothing: {medians:?}");
}
