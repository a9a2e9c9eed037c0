//! Property tests over everything that parses hostile input: email addresses, request bodies,
//! presented tokens and JWTs, rate-limit settings, and the rate-limit arithmetic. Each runs a
//! bounded number of generated cases (proptest), so the test command's time stays fixed.

use edgeid::api::request::parse_body;
use edgeid::api::ApiRequest;
use edgeid::domain::email::Email;
use edgeid::domain::opaque_token::TokenHash;
use edgeid::domain::rate_limit::{admit, Admission, Limit};
use edgeid::domain::signing::PublishedKeys;
use edgeid::domain::tokens::validate_access_token;
use proptest::prelude::*;
use serde_json::json;

use crate::support::App;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn body_request(content_type: &str, body: Vec<u8>) -> ApiRequest {
    ApiRequest {
        method: "POST".to_owned(),
        host: String::new(),
        path: "/v1/login".to_owned(),
        query: String::new(),
        headers: vec![("Content-Type".to_owned(), content_type.to_owned())],
        body,
    }
}

/// Strings that look like addresses, with the characters that break mail headers mixed in.
fn address_like() -> impl Strategy<Value = String> {
    prop::string::string_regex("[ a-zA-Z0-9.+_<>,;:\"'\\r\\n\\t@()\\[\\]\\\\ÄéßİK\u{212A}\u{301}-]{0,80}").unwrap()
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn parsed_emails_are_normal_and_cannot_break_a_mail_header(raw in prop_oneof![address_like(), any::<String>()]) {
        if let Ok(email) = Email::parse(&raw) {
            let text = email.as_str();
            prop_assert!(text.len() <= 254);
            prop_assert!(!text.chars().any(|c| c.is_control() || "<>,;:\"()[]\\ ".contains(c)), "{text:?}");
            prop_assert_eq!(text.matches('@').count(), 1);
            prop_assert_eq!(text.to_lowercase(), text);
            // Parsing is idempotent: a stored address parses to itself.
            let again = Email::parse(text).unwrap();
            prop_assert_eq!(again.as_str(), text);
        }
    }

    #[test]
    fn request_bodies_parse_or_get_a_client_error(
        body in prop_oneof![
            any::<Vec<u8>>(),
            prop::string::string_regex("[{}\\[\\]\",:a-z0-9 \\\\=&%+]{0,200}").unwrap().prop_map(String::into_bytes),
        ],
        content_type in prop_oneof![
            Just("application/json"),
            Just("application/x-www-form-urlencoded"),
            Just("text/plain"),
            Just("application/json; charset=utf-8"),
        ],
    ) {
        match parse_body(&body_request(content_type, body)) {
            Ok(fields) => {
                // Every field reads as a string, absent, or a clean type error: never a panic.
                for name in ["email", "password", "token"] {
                    let _ = fields.optional(name);
                }
            }
            Err(err) => prop_assert!([400, 413, 415].contains(&err.status), "{err:?}"),
        }
    }

    #[test]
    fn duplicate_json_keys_are_refused_at_any_depth(key in "[a-z]{1,8}", depth in 0usize..4) {
        let mut body = format!("{{\"{key}\": 1, \"{key}\": 2}}");
        for _ in 0..depth {
            body = format!("{{\"outer\": {body}}}");
        }
        let err = parse_body(&body_request("application/json", body.into_bytes())).unwrap_err();
        prop_assert_eq!((err.status, err.code), (400, "invalid_request"));
    }

    #[test]
    fn presented_tokens_and_jwts_never_panic(presented in any::<String>(), parts in prop::collection::vec("[A-Za-z0-9_=-]{0,60}", 1..5)) {
        let _ = TokenHash::of_presented(&presented);
        let keys = PublishedKeys::from_jwks_json(r#"{"keys": []}"#).unwrap();
        let now = chrono::DateTime::from_timestamp(1_600_000_000, 0).unwrap();
        for token in [presented, parts.join(".")] {
            prop_assert!(validate_access_token(&keys, "https://id.example", "edgeid", now, &token).is_err());
        }
    }

    #[test]
    fn limit_settings_never_panic(raw in any::<String>()) {
        if let Ok(Some(limit)) = Limit::parse(&raw) {
            prop_assert!(limit.count > 0 && limit.period_seconds > 0);
            prop_assert!(limit.cost_ms() >= 1);
        }
    }

    /// However requests arrive, no window of one period ever admits more than the budget.
    #[test]
    fn no_window_admits_more_than_the_budget(
        count in 1u32..20,
        period_seconds in 1u32..120,
        gaps_ms in prop::collection::vec(0i64..5_000, 1..200),
    ) {
        let limit = Limit { count, period_seconds };
        let mut tat = None;
        let mut now = 1_000_000i64;
        let mut admitted = Vec::new();
        for gap in gaps_ms {
            now += gap;
            if let Admission::Admitted { new_tat_ms } = admit(&limit, tat, now) {
                tat = Some(new_tat_ms);
                admitted.push(now);
            }
        }
        let period_ms = i64::from(period_seconds) * 1000;
        for (index, start) in admitted.iter().enumerate() {
            let in_window = admitted[index..].iter().take_while(|at| **at < start + period_ms).count();
            // GCRA admits `count` at once plus what refills during the window.
            prop_assert!(in_window <= 2 * count as usize, "{in_window} in one window of {limit}");
        }
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// The whole API, fed malformed bodies on every account endpoint: a client error, never a
    /// server error, and nothing written.
    #[test]
    fn malformed_requests_never_reach_a_server_error(
        path in prop::sample::select(vec![
            "/v1/signup", "/v1/login", "/v1/email/verify", "/v1/email/resend",
            "/v1/password/forgot", "/v1/password/reset", "/v1/logout", "/oauth/token", "/oauth/revoke",
        ]),
        field in prop_oneof![Just(json!(null)), Just(json!(7)), Just(json!([])), Just(json!({})), Just(json!(true))],
        junk in any::<Vec<u8>>(),
    ) {
        let app = App::new();
        let typed = json!({"email": field, "password": field, "token": field, "refresh_token": field, "grant_type": "refresh_token"});
        for reply in [
            app.post(path, typed),
            app.request("POST", path, Some("application/json"), &junk),
            app.request("POST", path, Some("application/x-www-form-urlencoded"), &junk),
        ] {
            prop_assert!(reply.status < 500, "{path}: {} {}", reply.status, reply.text());
        }
        prop_assert_eq!(app.users_count("SELECT count(*) FROM users"), 0);
    }
}
