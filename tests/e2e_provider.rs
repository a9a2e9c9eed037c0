//! edgeid as an OpenID Provider, driven black-box the way the OpenID Foundation's conformance
//! suite drives an OP: one `wrangler dev` worker, relying parties registered with RFC 7591, and
//! a small generic user agent (a cookie jar, 303s followed by hand, HTML forms parsed and
//! posted) that signs in, consents and logs out through the hosted pages. Each step is named
//! after the conformance module it replicates (Basic OP, Config OP and RP-Initiated Logout OP
//! plans; a few from the Dynamic OP plan) or, for edgeid's own contract (shared/API.md, v2),
//! after the rule it checks. Relying-party libraries we did not write run beside the steps:
//! openid-client (tests/rp_openid_client.mjs), Authlib (tests/rp_authlib.py) and headless
//! Chromium (tests/rp_browser.mjs).
//!
//! Every step runs even when another fails; the test fails at the end with the list, so one
//! deviation never hides the next. `EDGEID_PROVIDER_STEPS=a,b` runs only the steps named.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{AlgorithmExt, UntrustedToken};
use reqwest::blocking::RequestBuilder;
use reqwest::header::HeaderMap;
use reqwest::Url;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::e2e::{repository, tool_path, MailSink, Worker, CLIENT_REGISTRATION_TOKEN};
use crate::support::token_in_link;

const PASSWORD: &str = "correct horse battery staple";
/// Relying parties' redirect URIs live here; nothing listens: the user agent stops at the first
/// redirect that leaves the issuer, as a browser's address bar would show it.
const RP_ORIGIN: &str = "http://127.0.0.1:4000";
/// The conformance suite's `oidcc-codereuse-30seconds` waits 30 s between the two redemptions.
/// So do we, but in a thread of its own while the other steps run (see `main`).
const CODE_REUSE_WAIT: Duration = Duration::from_secs(30);
/// Threads that take the steps in turn.
const STEP_THREADS: usize = 3;

// ---------------------------------------------------------------------------------------------
// The runner

#[test]
fn openid_provider_certification_modules() {
    let started = Instant::now();
    let sink = MailSink::start();
    // `EDGEID_PROVIDER_VARS="NAME:VALUE NAME:VALUE"` adds worker variables, for diagnosis only
    // (say, to see past a failure that only one configuration has); the suite runs without.
    let extra = std::env::var("EDGEID_PROVIDER_VARS").unwrap_or_default();
    let worker = Worker::start_with(&sink, &extra.split_whitespace().collect::<Vec<_>>());
    let ctx = Ctx::new(&worker, &sink);
    let only: Option<Vec<String>> =
        std::env::var("EDGEID_PROVIDER_STEPS").ok().map(|list| list.split(',').map(str::to_owned).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|only| only.iter().any(|step| step == name));

    let mut results: Vec<StepResult> = Vec::new();
    let queue: Vec<&(&str, Step)> = STEPS.iter().filter(|(name, _)| wanted(name)).collect();
    let next = AtomicUsize::new(0);
    thread::scope(|scope| {
        // The slow ones go first, in threads, while the sequential steps use the time.
        let mut background = Vec::new();
        for (name, step) in BACKGROUND_STEPS {
            if wanted(name) {
                let ctx = &ctx;
                background.push(scope.spawn(move || vec![run_step(ctx, name, *step)]));
            }
        }
        for (name, driver) in DRIVERS {
            if wanted(name) {
                let ctx = &ctx;
                background.push(scope.spawn(move || driver(ctx)));
            }
        }
        // The steps are independent (each has its own clients and browsers), so a few threads
        // take them in turn: most of a step's time is waiting for the worker.
        let pool: Vec<_> = (0..STEP_THREADS)
            .map(|_| {
                let (ctx, queue, next) = (&ctx, &queue, &next);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    while let Some((name, step)) = queue.get(next.fetch_add(1, Ordering::SeqCst)) {
                        done.push(run_step(ctx, name, *step));
                    }
                    done
                })
            })
            .collect();
        for handle in pool {
            results.extend(handle.join().unwrap());
        }
        results.sort_by_key(|result| STEPS.iter().position(|(name, _)| *name == result.name).unwrap_or(usize::MAX));
        for handle in background {
            results.extend(handle.join().unwrap());
        }
    });

    let report = render_report(&results, &ctx.warnings.lock().unwrap(), started.elapsed());
    eprintln!("{report}");
    let artifacts = repository().join("test-artifacts");
    let _ = std::fs::create_dir_all(&artifacts);
    let _ = std::fs::write(artifacts.join("provider-scenarios.txt"), &report);
    let failed: Vec<&StepResult> = results.iter().filter(|result| result.failure.is_some()).collect();
    assert!(failed.is_empty(), "{} of {} provider scenarios failed:\n{report}", failed.len(), results.len());
}

type Step = fn(&Ctx);

struct StepResult {
    name: String,
    seconds: f64,
    failure: Option<String>,
}

thread_local! {
    static CURRENT_STEP: RefCell<String> = const { RefCell::new(String::new()) };
}

fn run_step(ctx: &Ctx, name: &str, step: Step) -> StepResult {
    CURRENT_STEP.with(|current| *current.borrow_mut() = name.to_owned());
    let started = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| step(ctx)));
    let failure = outcome.err().map(|payload| match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload.downcast::<&str>().map(|message| (*message).to_owned()).unwrap_or_default(),
    });
    StepResult { name: name.to_owned(), seconds: started.elapsed().as_secs_f64(), failure }
}

fn render_report(results: &[StepResult], warnings: &[(String, String)], elapsed: Duration) -> String {
    let mut report = format!("edgeid OpenID Provider scenarios ({:.1} s in all)\n", elapsed.as_secs_f64());
    for result in results {
        let status = if result.failure.is_some() { "FAIL" } else { "pass" };
        report.push_str(&format!("  {status}  {:<72} {:>5.1} s\n", result.name, result.seconds));
        if let Some(failure) = &result.failure {
            for line in failure.lines() {
                report.push_str(&format!("          {line}\n"));
            }
        }
    }
    if !warnings.is_empty() {
        report.push_str("warnings (the conformance suite reports these as WARNING, not FAILURE):\n");
        for (step, warning) in warnings {
            report.push_str(&format!("  {step}: {warning}\n"));
        }
    }
    report
}

/// Steps that spend most of their time waiting, run in threads beside the others.
const BACKGROUND_STEPS: &[(&str, Step)] = &[("oidcc-codereuse-30seconds", oidcc_codereuse_30seconds)];

/// The relying-party libraries, each a script that reports its own checks.
type Driver = fn(&Ctx) -> Vec<StepResult>;
const DRIVERS: &[(&str, Driver)] =
    &[("openid-client", openid_client_driver), ("authlib", authlib_driver), ("chromium", browser_driver)];

const STEPS: &[(&str, Step)] = &[
    // Config OP
    ("oidcc-discovery-endpoint-verification", oidcc_discovery_endpoint_verification),
    // Basic OP
    ("oidcc-server", oidcc_server),
    ("oidcc-server-client-secret-post", oidcc_server_client_secret_post),
    ("oidcc-response-type-missing", oidcc_response_type_missing),
    ("oidcc-idtoken-signature", oidcc_idtoken_signature),
    ("oidcc-idtoken-unsigned", oidcc_idtoken_unsigned),
    ("oidcc-userinfo-get", oidcc_userinfo_get),
    ("oidcc-userinfo-post-header", oidcc_userinfo_post_header),
    ("oidcc-userinfo-post-body", oidcc_userinfo_post_body),
    ("oidcc-ensure-request-without-nonce-succeeds-for-code-flow", oidcc_ensure_request_without_nonce_succeeds),
    ("oidcc-scope-profile / -address / -phone / -all", oidcc_scope_unsupported_scopes),
    ("oidcc-scope-email", oidcc_scope_email),
    ("oidcc-alternate-happy-flow", oidcc_alternate_happy_flow),
    ("oidcc-display-page", oidcc_display_page),
    ("oidcc-display-popup", oidcc_display_popup),
    ("oidcc-prompt-login", oidcc_prompt_login),
    ("oidcc-prompt-none-not-logged-in", oidcc_prompt_none_not_logged_in),
    ("oidcc-prompt-none-logged-in", oidcc_prompt_none_logged_in),
    ("oidcc-max-age-1", oidcc_max_age_1),
    ("oidcc-max-age-10000", oidcc_max_age_10000),
    ("oidcc-ensure-request-with-unknown-parameter-succeeds", oidcc_unknown_parameter),
    ("oidcc-id-token-hint", oidcc_id_token_hint),
    ("oidcc-login-hint", oidcc_login_hint),
    ("oidcc-ui-locales", oidcc_ui_locales),
    ("oidcc-claims-locales", oidcc_claims_locales),
    ("oidcc-ensure-request-with-acr-values-succeeds", oidcc_acr_values),
    ("oidcc-codereuse", oidcc_codereuse),
    ("oidcc-ensure-registered-redirect-uri", oidcc_ensure_registered_redirect_uri),
    ("oidcc-ensure-post-request-succeeds", oidcc_ensure_post_request_succeeds),
    ("oidcc-request-uri-unsigned-supported-correctly-or-rejected-as-unsupported", oidcc_request_uri_unsigned),
    ("oidcc-unsigned-request-object-supported-correctly-or-rejected-as-unsupported", oidcc_request_object_unsigned),
    ("oidcc-claims-essential", oidcc_claims_essential),
    ("oidcc-ensure-request-object-with-redirect-uri", oidcc_request_object_with_redirect_uri),
    ("oidcc-refresh-token", oidcc_refresh_token),
    ("oidcc-ensure-request-with-valid-pkce-succeeds", oidcc_valid_pkce),
    // Dynamic OP plan modules that need no dynamic-registration feature beyond RFC 7591
    ("oidcc-ensure-redirect-uri-in-authorization-request", oidcc_ensure_redirect_uri_in_authorization_request),
    ("oidcc-redirect-uri-query-ok", oidcc_redirect_uri_query_ok),
    ("oidcc-redirect-uri-query-mismatch", oidcc_redirect_uri_query_mismatch),
    ("oidcc-redirect-uri-query-added", oidcc_redirect_uri_query_added),
    ("oidcc-redirect-uri-regfrag", oidcc_redirect_uri_regfrag),
    // RP-Initiated Logout OP
    ("oidcc-rp-initiated-logout-discovery-endpoint-verification", oidcc_rp_initiated_logout_discovery),
    ("oidcc-rp-initiated-logout", oidcc_rp_initiated_logout),
    ("oidcc-rp-initiated-logout-bad-post-logout-redirect-uri", oidcc_rp_initiated_logout_bad_post_logout_redirect_uri),
    ("oidcc-rp-initiated-logout-modified-id-token-hint", oidcc_rp_initiated_logout_modified_id_token_hint),
    ("oidcc-rp-initiated-logout-no-id-token-hint", oidcc_rp_initiated_logout_no_id_token_hint),
    ("oidcc-rp-initiated-logout-no-params", oidcc_rp_initiated_logout_no_params),
    ("oidcc-rp-initiated-logout-no-post-logout-redirect-uri", oidcc_rp_initiated_logout_no_post_logout_redirect_uri),
    ("oidcc-rp-initiated-logout-no-state", oidcc_rp_initiated_logout_no_state),
    ("oidcc-rp-initiated-logout-only-state", oidcc_rp_initiated_logout_only_state),
    ("oidcc-rp-initiated-logout-query-added-to-post-logout-redirect-uri", oidcc_rp_initiated_logout_query_added),
    ("oidcc-rp-initiated-logout-bad-id-token-hint", oidcc_rp_initiated_logout_bad_id_token_hint),
    // edgeid's contract (shared/API.md, v2) beyond the conformance modules
    ("edgeid: RP-initiated logout by client_id asks, then redirects", logout_by_client_id),
    ("edgeid: logout revokes the session's refresh tokens", logout_revokes_refresh_tokens),
    ("edgeid: PKCE plain (and a method left out) refused", pkce_plain_refused),
    ("edgeid: PKCE required for public clients", pkce_required_for_public_clients),
    ("edgeid: PKCE downgrade refused", pkce_downgrade_refused),
    ("edgeid: unknown client_id gets an error page", unknown_client_id),
    ("edgeid: unsupported response types", unsupported_response_type),
    ("edgeid: prompt=none with another value is invalid_request", prompt_none_with_another_value),
    ("edgeid: state comes back byte for byte", state_byte_for_byte),
    ("edgeid: no openid scope, no ID token", no_openid_no_id_token),
    ("edgeid: consent page names the client and scopes; remembered", consent_page_and_memory),
    ("edgeid: consent denied is access_denied", consent_denied),
    ("edgeid: prompt=none without consent is consent_required", consent_required),
    ("edgeid: skip_consent clients see no consent page", skip_consent),
    ("edgeid: a consent post without a decision leaves the SSO session usable", consent_post_without_decision),
    ("edgeid: SSO cookie HttpOnly SameSite=Lax; one sid across clients", sso_cookie_and_sid),
    ("edgeid: id_token_hint of another user asks for the password", id_token_hint_of_another_user),
    ("edgeid: ES256 ID tokens for a client that registered them", id_token_es256_client),
    ("edgeid: a code belongs to its client and redirect URI", code_bound_to_client_and_redirect_uri),
    ("edgeid: concurrent redemptions of one code, one winner", code_redeemed_concurrently),
    ("edgeid: client authentication failures are invalid_client", client_authentication_failures),
    ("edgeid: refresh may narrow the scope, never widen it", refresh_scope_narrowing),
];

// ---------------------------------------------------------------------------------------------
// The provider, its clients and its users

struct Ctx<'w> {
    worker: &'w Worker,
    issuer: String,
    discovery: Value,
    alice: User,
    bob: User,
    node_user: User,
    python_user: User,
    browser_user: User,
    warnings: Mutex<Vec<(String, String)>>,
}

#[derive(Clone)]
struct User {
    email: String,
    password: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Auth {
    Basic,
    Post,
    Public,
}

#[derive(Clone, Debug)]
struct Client {
    id: String,
    secret: Option<String>,
    name: String,
    redirect_uri: String,
    post_logout_redirect_uri: String,
    auth: Auth,
    id_token_alg: String,
}

impl<'w> Ctx<'w> {
    fn new(worker: &'w Worker, sink: &MailSink) -> Ctx<'w> {
        let issuer = worker.url("");
        let discovery: Value =
            http().get(worker.url("/.well-known/openid-configuration")).send().unwrap().json().unwrap();
        let mut seen = BTreeMap::new();
        let mut user = |local: &str| sign_up(worker, sink, &format!("{local}@example.com"), &mut seen);
        Ctx {
            alice: user("rp-alice"),
            bob: user("rp-bob"),
            node_user: user("rp-openid-client"),
            python_user: user("rp-authlib"),
            browser_user: user("rp-chromium"),
            worker,
            issuer,
            discovery,
            warnings: Mutex::default(),
        }
    }

    fn warn(&self, message: impl Into<String>) {
        let step = CURRENT_STEP.with(|current| current.borrow().clone());
        self.warnings.lock().unwrap().push((step, message.into()));
    }

    /// An endpoint from discovery: the tests find every path there, as an RP does.
    fn endpoint(&self, name: &str) -> String {
        match self.discovery[name].as_str() {
            Some(url) => url.to_owned(),
            None => panic!("discovery has no {name}: {}", self.discovery),
        }
    }

    fn jwks(&self) -> Value {
        http().get(self.endpoint("jwks_uri")).send().unwrap().json().unwrap()
    }

    /// Registers a client (RFC 7591) named `name`, with `extra` metadata merged in.
    fn register(&self, name: &str, auth: Auth, extra: Value) -> Client {
        let slug: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let unique = random_token(6);
        let redirect_uri = format!("{RP_ORIGIN}/{slug}/{unique}/callback");
        let post_logout_redirect_uri = format!("{RP_ORIGIN}/{slug}/{unique}/post_logout_redirect");
        let method = match auth {
            Auth::Basic => "client_secret_basic",
            Auth::Post => "client_secret_post",
            Auth::Public => "none",
        };
        let mut body = json!({
            "client_name": format!("RP {name}"),
            "redirect_uris": [redirect_uri],
            "post_logout_redirect_uris": [post_logout_redirect_uri],
            "token_endpoint_auth_method": method,
        });
        for (key, value) in extra.as_object().cloned().unwrap_or_default() {
            body[key] = value;
        }
        let (status, registered) = self.register_raw(&body);
        assert_eq!(status, 201, "registration of {body} answered {status} {registered}");
        Client {
            id: registered["client_id"].as_str().unwrap().to_owned(),
            secret: registered["client_secret"].as_str().map(str::to_owned),
            name: body["client_name"].as_str().unwrap().to_owned(),
            redirect_uri: body["redirect_uris"][0].as_str().unwrap().to_owned(),
            post_logout_redirect_uri: body["post_logout_redirect_uris"][0].as_str().unwrap_or_default().to_owned(),
            auth,
            id_token_alg: body["id_token_signed_response_alg"].as_str().unwrap_or("RS256").to_owned(),
        }
    }

    fn register_raw(&self, body: &Value) -> (u16, Value) {
        let response = http()
            .post(self.endpoint("registration_endpoint"))
            .bearer_auth(CLIENT_REGISTRATION_TOKEN)
            .json(body)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    fn browser(&self) -> UserAgent {
        UserAgent::new(&self.issuer)
    }

    /// A POST to the token endpoint with the client's own authentication method.
    fn token(&self, client: &Client, form: &[(&str, &str)]) -> Answer {
        let mut form: Vec<(String, String)> = form.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut request = http().post(self.endpoint("token_endpoint"));
        match client.auth {
            Auth::Basic => {
                request = request.header("Authorization", basic_auth(&client.id, client.secret.as_deref().unwrap()))
            }
            Auth::Post => {
                form.push(("client_id".into(), client.id.clone()));
                form.push(("client_secret".into(), client.secret.clone().unwrap()));
            }
            Auth::Public => form.push(("client_id".into(), client.id.clone())),
        }
        Answer::of(request.form(&form))
    }

    fn userinfo_get(&self, access_token: &str) -> Answer {
        Answer::of(http().get(self.endpoint("userinfo_endpoint")).bearer_auth(access_token))
    }

    /// The whole code flow for `user` in `ua`: authorize (consent allowed), redeem, check the
    /// token response and the ID token as the conformance suite's standard checks do.
    fn code_flow(&self, ua: &UserAgent, client: &Client, request: &AuthRequest, user: &User) -> Tokens {
        let journey = ua.authorize(self, request, Act::allow(user));
        let code = self.expect_code(&journey, request);
        let tokens = self.redeem(client, request, &code);
        Tokens { journey, ..tokens }
    }

    /// The callback of a successful authorization: `code`, `state` byte for byte, `iss`.
    fn expect_code(&self, journey: &Journey, request: &AuthRequest) -> String {
        let callback = journey.callback(&format!("authorization {}", request.summary()));
        assert!(
            callback.get("error").is_none(),
            "authorization {} was refused: {:?} (pages seen: {:?})",
            request.summary(),
            callback.params,
            journey.pages
        );
        let code = callback.get("code").unwrap_or_else(|| panic!("no code in the callback {}", callback.url));
        assert_eq!(callback.get("state"), request.get("state"), "state (OIDCC 3.1.2.5) in {}", callback.url);
        assert_eq!(callback.get("iss"), Some(self.issuer.as_str()), "iss (RFC 9207) in {}", callback.url);
        assert!(callback.url.as_str().starts_with(request.get("redirect_uri").unwrap()), "{}", callback.url);
        code.to_owned()
    }

    /// performGenericAuthorizationEndpointErrorResponseValidation: the error came back to the
    /// redirect URI with the state, the issuer, no code and no other parameter.
    fn expect_error(&self, journey: &Journey, request: &AuthRequest, allowed: &[&str]) -> String {
        let what = format!("authorization {} (expected error {})", request.summary(), allowed.join(" or "));
        let callback = journey.callback(&what);
        let error = callback.get("error").unwrap_or_else(|| panic!("{what}: no error in {}", callback.url));
        assert!(allowed.contains(&error), "{what}: got error={error} ({})", callback.url);
        assert_eq!(callback.get("state"), request.get("state"), "{what}: state in {}", callback.url);
        assert_eq!(callback.get("iss"), Some(self.issuer.as_str()), "{what}: iss in {}", callback.url);
        assert!(callback.get("code").is_none(), "{what}: a code beside the error: {}", callback.url);
        let registered_query: Vec<String> = Url::parse(request.get("redirect_uri").unwrap())
            .unwrap()
            .query_pairs()
            .map(|(name, _)| name.into_owned())
            .collect();
        for (name, _) in &callback.params {
            let expected = ["error", "error_description", "error_uri", "state", "iss"].contains(&name.as_str());
            assert!(
                expected || registered_query.contains(name),
                "{what}: unexpected parameter {name} in {}",
                callback.url
            );
        }
        if let Some(description) = callback.get("error_description") {
            // RFC 6749 §4.1.2.1: %x20-21 / %x23-5B / %x5D-7E.
            let bad = description.chars().find(|c| !matches!(*c as u32, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E));
            assert!(bad.is_none(), "{what}: error_description holds {bad:?}: {description:?}");
        }
        error.to_owned()
    }

    fn redeem(&self, client: &Client, request: &AuthRequest, code: &str) -> Tokens {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", request.get("redirect_uri").unwrap()),
        ];
        if let Some(verifier) = &request.verifier {
            form.push(("code_verifier", verifier));
        }
        let answer = self.token(client, &form);
        assert_eq!(answer.status, 200, "token request for {}: {}", request.summary(), answer.text);
        check_token_response(&answer, "token endpoint (authorization_code)");
        let response = answer.json.clone();
        let (id_token, id_claims) = match response["id_token"].as_str() {
            Some(id_token) => (id_token.to_owned(), self.check_id_token(client, id_token, request.get("nonce"))),
            None => {
                let scope = request.get("scope").unwrap_or_default();
                assert!(!scope.split(' ').any(|s| s == "openid"), "no id_token for scope {scope}: {response}");
                (String::new(), Value::Null)
            }
        };
        Tokens {
            access_token: response["access_token"].as_str().unwrap().to_owned(),
            refresh_token: response["refresh_token"].as_str().map(str::to_owned),
            response,
            id_token,
            id_claims,
            journey: Journey::default(),
        }
    }

    /// ValidateIdToken, ValidateIdTokenNonce, ValidateIdTokenSignature, CheckForSubjectInIdToken,
    /// plus the contract's header (`typ: JWT`, `kid`) and `auth_time`/`sid`.
    fn check_id_token(&self, client: &Client, id_token: &str, nonce: Option<&str>) -> Value {
        let (header, claims) = decode_jwt(id_token);
        let alg = header["alg"].as_str().unwrap_or_default();
        assert_eq!(alg, client.id_token_alg, "ID token alg for a client registered with {}", client.id_token_alg);
        if let Some(typ) = header.get("typ") {
            assert_eq!(typ, "JWT", "ID token typ");
        }
        let kid = header["kid"].as_str().unwrap_or_else(|| panic!("ID token header without kid: {header}"));
        verify_signature(&self.jwks(), id_token, kid, alg);

        let now = unix_now();
        let skew = 300;
        assert_eq!(claims["iss"], self.issuer.as_str(), "ID token iss: {claims}");
        match &claims["aud"] {
            Value::String(aud) => assert_eq!(aud, &client.id, "ID token aud"),
            Value::Array(auds) => {
                assert!(auds.contains(&json!(client.id)), "ID token aud {auds:?} lacks the client");
                if auds.len() > 1 {
                    assert_eq!(claims["azp"], client.id.as_str(), "azp with several audiences");
                }
            }
            other => panic!("ID token aud is {other}"),
        }
        let exp = claims["exp"].as_i64().unwrap_or_else(|| panic!("ID token exp: {claims}"));
        assert!(exp > now - skew && exp < now + 50 * 365 * 86400, "ID token exp {exp} (now {now})");
        let iat = claims["iat"].as_i64().unwrap_or_else(|| panic!("ID token iat: {claims}"));
        assert!((now - skew..=now + skew).contains(&iat), "ID token iat {iat} (now {now})");
        let auth_time =
            claims["auth_time"].as_i64().unwrap_or_else(|| panic!("contract: ID token auth_time: {claims}"));
        assert!(auth_time > now - 365 * 86400 && auth_time <= now + skew, "auth_time {auth_time} (now {now})");
        match nonce {
            Some(nonce) => assert_eq!(claims["nonce"], nonce, "ID token nonce"),
            None => assert!(claims.get("nonce").is_none(), "a nonce in the ID token though none was sent: {claims}"),
        }
        let sub = claims["sub"].as_str().unwrap_or_default();
        assert!(!sub.is_empty() && sub.len() <= 255 && sub.is_ascii(), "ID token sub {sub:?}");
        assert!(claims["sid"].as_str().is_some_and(|sid| !sid.is_empty()), "contract: ID token sid: {claims}");
        if claims.get("acr").is_some() {
            assert_ne!(claims["acr"], "", "acr is an empty string");
        }
        claims
    }

    /// The standard request of a conformance module: `response_type=code`, state and nonce, and
    /// PKCE (S256) where the client is public.
    fn request(&self, client: &Client, scope: &str) -> AuthRequest {
        let mut request = AuthRequest {
            endpoint: self.endpoint("authorization_endpoint"),
            params: vec![
                ("client_id".into(), client.id.clone()),
                ("redirect_uri".into(), client.redirect_uri.clone()),
                ("response_type".into(), "code".into()),
                ("scope".into(), scope.into()),
                ("state".into(), random_token(24)),
                ("nonce".into(), random_token(24)),
            ],
            verifier: None,
        };
        if client.auth == Auth::Public {
            request = request.with_pkce();
        }
        request
    }

    /// Logged in at the OP in a fresh browser, through `client`: (browser, tokens).
    fn logged_in(&self, client: &Client, user: &User, scope: &str) -> (UserAgent, Tokens) {
        let ua = self.browser();
        let tokens = self.code_flow(&ua, client, &self.request(client, scope), user);
        (ua, tokens)
    }
}

fn sign_up(worker: &Worker, sink: &MailSink, email: &str, seen: &mut BTreeMap<String, usize>) -> User {
    let response = http().post(worker.url("/v1/signup")).json(&json!({"email": email, "password": PASSWORD})).send();
    assert_eq!(response.unwrap().status(), 202, "sign-up of {email}");
    let seen = seen.entry(email.to_owned()).or_default();
    let token = token_in_link(sink.wait_for(email, seen).text(), "/verify-email");
    let verified = http().post(worker.url("/v1/email/verify")).json(&json!({"token": token})).send().unwrap();
    assert_eq!(verified.status(), 200, "verification of {email}");
    User { email: email.to_owned(), password: PASSWORD.to_owned() }
}

struct Tokens {
    response: Value,
    access_token: String,
    refresh_token: Option<String>,
    id_token: String,
    id_claims: Value,
    journey: Journey,
}

/// An HTTP answer read whole.
struct Answer {
    status: u16,
    headers: HeaderMap,
    text: String,
    json: Value,
}

impl Answer {
    fn of(request: RequestBuilder) -> Answer {
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, headers, text, json }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// CheckTokenEndpointHttpStatus400, CheckTokenEndpointReturnedJsonContentType and
    /// CheckErrorFromTokenEndpointResponseErrorInvalidGrant (and their kin for other codes).
    fn expect_error(&self, status: u16, error: &str, what: &str) {
        assert_eq!((self.status, self.json["error"].as_str()), (status, Some(error)), "{what}: {}", self.text);
        assert!(self.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{what}: JSON");
    }
}

/// CheckTokenEndpointHttpStatus200, the JSON content type, CheckTokenEndpointCacheHeaders,
/// CheckTokenTypeIsBearer, ValidateExpiresIn, and the access token's RFC 6749 A.12 characters.
fn check_token_response(answer: &Answer, what: &str) {
    assert!(answer.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{what}: content type");
    assert!(answer.header("cache-control").is_some_and(|c| c.contains("no-store")), "{what}: Cache-Control no-store");
    let body = &answer.json;
    assert!(body["token_type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("bearer")), "{what}: token_type {body}");
    assert!(body["expires_in"].as_i64().is_some_and(|e| e > 0), "{what}: expires_in {body}");
    let access = body["access_token"].as_str().unwrap_or_default();
    assert!(!access.is_empty() && access.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{what}: access_token");
    assert!(body["scope"].is_string(), "contract: the token response names the scope granted: {body}");
}

// ---------------------------------------------------------------------------------------------
// The authorization request

#[derive(Clone)]
struct AuthRequest {
    endpoint: String,
    params: Vec<(String, String)>,
    verifier: Option<String>,
}

impl AuthRequest {
    fn set(mut self, name: &str, value: &str) -> AuthRequest {
        match self.params.iter_mut().find(|(n, _)| n == name) {
            Some(param) => param.1 = value.to_owned(),
            None => self.params.push((name.to_owned(), value.to_owned())),
        }
        self
    }

    fn without(mut self, name: &str) -> AuthRequest {
        self.params.retain(|(n, _)| n != name);
        self
    }

    fn with_pkce(self) -> AuthRequest {
        let verifier = random_token(48);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut request = self.set("code_challenge", &challenge).set("code_challenge_method", "S256");
        request.verifier = Some(verifier);
        request
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn url(&self) -> String {
        let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(&self.params).finish();
        format!("{}?{query}", self.endpoint)
    }

    /// The request's parameters but the random ones, for messages.
    fn summary(&self) -> String {
        let shown: Vec<String> = self
            .params
            .iter()
            .filter(|(n, _)| !["state", "nonce", "code_challenge", "client_id"].contains(&n.as_str()))
            .map(|(n, v)| format!("{n}={}", if v.len() > 60 { &v[..60] } else { v }))
            .collect();
        format!("[{}]", shown.join(" "))
    }
}

// ---------------------------------------------------------------------------------------------
// The user agent: a cookie jar, redirects followed by hand, forms filled and posted

struct UserAgent {
    http: reqwest::blocking::Client,
    issuer: Url,
    jar: RefCell<BTreeMap<String, String>>,
    /// Every `Set-Cookie` the OP sent, as sent.
    set_cookies: RefCell<Vec<String>>,
}

struct Reply {
    url: Url,
    status: u16,
    headers: HeaderMap,
    body: String,
    location: Option<Url>,
}

impl Reply {
    fn is_redirect(&self) -> bool {
        matches!(self.status, 301 | 302 | 303 | 307 | 308) && self.location.is_some()
    }

    fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    fn describe(&self) -> String {
        let text = visible_text(&self.body);
        let text: String = text.chars().take(300).collect();
        format!("{} {} ({}): {text}", self.status, self.url, self.content_type())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Consent {
    Allow,
    Deny,
    /// Stop at the consent page.
    Stop,
}

/// What the user does on the OP's pages.
#[derive(Clone, Copy)]
struct Act<'u> {
    user: Option<&'u User>,
    consent: Consent,
    confirm_logout: bool,
}

impl<'u> Act<'u> {
    fn allow(user: &'u User) -> Act<'u> {
        Act { user: Some(user), consent: Consent::Allow, confirm_logout: false }
    }

    /// Nobody at the keyboard: any page stops the journey.
    fn nobody() -> Act<'static> {
        Act { user: None, consent: Consent::Stop, confirm_logout: false }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Login { prefilled_email: String },
    Consent { text: String },
    LogoutConfirmation,
}

#[derive(Default)]
struct Journey {
    pages: Vec<Seen>,
    /// The first redirect that left the issuer.
    callback: Option<Callback>,
    /// The page where the journey stopped, when it did not leave the issuer.
    stopped: Option<Reply>,
}

impl Journey {
    fn logins(&self) -> usize {
        self.pages.iter().filter(|page| matches!(page, Seen::Login { .. })).count()
    }

    fn consents(&self) -> usize {
        self.pages.iter().filter(|page| matches!(page, Seen::Consent { .. })).count()
    }

    fn callback(&self, what: &str) -> &Callback {
        match (&self.callback, &self.stopped) {
            (Some(callback), _) => callback,
            (None, Some(page)) => panic!("{what}: no redirect to the client; stopped at {}", page.describe()),
            (None, None) => panic!("{what}: no redirect to the client"),
        }
    }

    /// The journey stayed at the OP: no redirect to any client.
    fn expect_no_redirect(&self, what: &str) -> &Reply {
        if let Some(callback) = &self.callback {
            panic!("{what}: the OP redirected to {} but must not", callback.url);
        }
        self.stopped.as_ref().unwrap()
    }
}

struct Callback {
    url: Url,
    params: Vec<(String, String)>,
}

impl Callback {
    fn get(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The URL without its query: where it landed.
    fn base(&self) -> String {
        let mut url = self.url.clone();
        url.set_query(None);
        url.to_string()
    }
}

impl UserAgent {
    fn new(issuer: &str) -> UserAgent {
        let http = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        UserAgent {
            http,
            issuer: Url::parse(issuer).unwrap(),
            jar: RefCell::default(),
            set_cookies: RefCell::default(),
        }
    }

    fn at_issuer(&self, url: &Url) -> bool {
        url.origin() == self.issuer.origin()
    }

    fn send(&self, url: &Url, request: RequestBuilder) -> Reply {
        let mut request = request.header("Accept", "text/html,application/xhtml+xml");
        if self.at_issuer(url) && !self.jar.borrow().is_empty() {
            let cookies: Vec<String> = self.jar.borrow().iter().map(|(n, v)| format!("{n}={v}")).collect();
            request = request.header("Cookie", cookies.join("; "));
        }
        let response = request.send().unwrap_or_else(|err| panic!("{url}: {err}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for set_cookie in headers.get_all("set-cookie") {
            let raw = set_cookie.to_str().unwrap().to_owned();
            self.store_cookie(&raw);
            self.set_cookies.borrow_mut().push(raw);
        }
        let location = headers.get("location").map(|l| url.join(l.to_str().unwrap()).unwrap());
        let body = response.text().unwrap_or_default();
        Reply { url: url.clone(), status, headers, body, location }
    }

    fn store_cookie(&self, raw: &str) {
        let mut parts = raw.split(';');
        let Some((name, value)) = parts.next().and_then(|pair| pair.split_once('=')) else { return };
        let expired = parts.any(|attr| {
            let attr = attr.trim().to_ascii_lowercase();
            attr == "max-age=0" || attr.starts_with("max-age=-") || attr.contains("expires=thu, 01 jan 1970")
        });
        let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
        if expired || value.is_empty() {
            self.jar.borrow_mut().remove(&name);
        } else {
            self.jar.borrow_mut().insert(name, value);
        }
    }

    /// A navigation to `url`, as after an RP's redirect or a click on a link.
    fn get(&self, url: &str) -> Reply {
        let url = Url::parse(url).unwrap();
        let site = if self.at_issuer(&url) { "same-origin" } else { "cross-site" };
        self.send(&url, self.http.get(url.clone()).header("Sec-Fetch-Site", site).header("Sec-Fetch-Mode", "navigate"))
    }

    /// Submits `form` as a browser does: its hidden and filled fields, the button pressed.
    fn submit(&self, form: &Form, filled: &[(&str, &str)], button: Option<(&str, &str)>) -> Reply {
        let mut fields: Vec<(String, String)> = form.fields.clone();
        for (name, value) in filled {
            match fields.iter_mut().find(|(n, _)| n == name) {
                Some(field) => field.1 = (*value).to_owned(),
                None => fields.push(((*name).to_owned(), (*value).to_owned())),
            }
        }
        if let Some((name, value)) = button {
            fields.push((name.to_owned(), value.to_owned()));
        }
        let origin = self.issuer.origin().ascii_serialization();
        let request = if form.method == "get" {
            let mut url = form.action.clone();
            url.query_pairs_mut().clear().extend_pairs(&fields);
            self.http.get(url)
        } else {
            self.http.post(form.action.clone()).header("Origin", origin).form(&fields)
        };
        self.send(&form.action, request.header("Sec-Fetch-Site", "same-origin").header("Sec-Fetch-Mode", "navigate"))
    }

    /// Follows the OP's redirects and pages from `reply` until a redirect leaves the issuer or
    /// a page asks for something `act` does not do.
    fn follow(&self, mut reply: Reply, act: Act<'_>) -> Journey {
        let mut journey = Journey::default();
        for _ in 0..20 {
            if reply.is_redirect() {
                let location = reply.location.clone().unwrap();
                if !self.at_issuer(&location) {
                    let params = location.query_pairs().map(|(n, v)| (n.into_owned(), v.into_owned())).collect();
                    journey.callback = Some(Callback { url: location, params });
                    return journey;
                }
                reply = self.get(location.as_str());
                continue;
            }
            if reply.status == 200 && reply.content_type().starts_with("text/html") {
                let forms = forms(&reply);
                if let Some(login) = forms.iter().find(|form| form.has_input("password")) {
                    let prefilled_email = login.value("email").unwrap_or_default().to_owned();
                    journey.pages.push(Seen::Login { prefilled_email });
                    assert!(journey.logins() <= 3, "the login page keeps coming back: {}", reply.describe());
                    if let Some(user) = act.user {
                        reply = self.submit(login, &[("email", &user.email), ("password", &user.password)], None);
                        continue;
                    }
                } else if let Some(consent) = forms.iter().find(|form| form.has_button("decision", "allow")) {
                    journey.pages.push(Seen::Consent { text: visible_text(&reply.body) });
                    let decision = match act.consent {
                        Consent::Allow => Some("allow"),
                        Consent::Deny => Some("deny"),
                        Consent::Stop => None,
                    };
                    if let Some(decision) = decision {
                        assert!(consent.has_button("decision", "deny"), "the consent form has no deny button");
                        reply = self.submit(consent, &[], Some(("decision", decision)));
                        continue;
                    }
                } else if let Some(confirm) = forms.iter().find(|form| form.has_button("decision", "logout")) {
                    journey.pages.push(Seen::LogoutConfirmation);
                    if act.confirm_logout {
                        reply = self.submit(confirm, &[], Some(("decision", "logout")));
                        continue;
                    }
                }
            }
            journey.stopped = Some(reply);
            return journey;
        }
        panic!("more than 20 redirects and pages");
    }

    fn authorize(&self, _ctx: &Ctx, request: &AuthRequest, act: Act<'_>) -> Journey {
        self.follow(self.get(&request.url()), act)
    }

    /// GET end_session_endpoint with `params`, then what `confirm` says on a confirmation page.
    fn end_session(&self, ctx: &Ctx, params: &[(&str, &str)], confirm: bool) -> Journey {
        let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
        let endpoint = ctx.endpoint("end_session_endpoint");
        let url = if query.is_empty() { endpoint } else { format!("{endpoint}?{query}") };
        self.follow(self.get(&url), Act { user: None, consent: Consent::Stop, confirm_logout: confirm })
    }

    /// The second authorization of the logout modules: prompt=none.
    fn prompt_none(&self, ctx: &Ctx, client: &Client) -> (AuthRequest, Journey) {
        let request = ctx.request(client, "openid").set("prompt", "none");
        let journey = self.authorize(ctx, &request, Act::nobody());
        (request, journey)
    }
}

// ---------------------------------------------------------------------------------------------
// HTML: just enough of it to find forms, their fields and their buttons

#[derive(Debug)]
struct Tag {
    name: String,
    attrs: Vec<(String, String)>,
}

impl Tag {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Start and end tags in order (end tags named `/name`); comments, scripts and styles skipped.
fn scan_tags(html: &str) -> Vec<Tag> {
    let mut tags = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        if let Some(comment) = rest.strip_prefix("!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        let name_len = rest
            .find(|c: char| c.is_whitespace() || c == '>' || c == '/' && !rest.starts_with('/'))
            .unwrap_or(rest.len());
        let name = rest[..name_len].to_ascii_lowercase();
        rest = &rest[name_len..];
        let mut attrs = Vec::new();
        loop {
            rest = rest.trim_start();
            if rest.is_empty() {
                break;
            }
            if let Some(after) = rest.strip_prefix('>') {
                rest = after;
                break;
            }
            if let Some(after) = rest.strip_prefix("/>") {
                rest = after;
                break;
            }
            if let Some(after) = rest.strip_prefix('/') {
                rest = after;
                continue;
            }
            let attr_len =
                rest.find(|c: char| c.is_whitespace() || c == '=' || c == '>' || c == '/').unwrap_or(rest.len());
            let attr = rest[..attr_len].to_ascii_lowercase();
            rest = rest[attr_len..].trim_start();
            let mut value = String::new();
            if let Some(after) = rest.strip_prefix('=') {
                rest = after.trim_start();
                if let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
                    let inner = &rest[1..];
                    let end = inner.find(quote).unwrap_or(inner.len());
                    value = decode_entities(&inner[..end]);
                    rest = inner.get(end + 1..).unwrap_or("");
                } else {
                    let end = rest.find(|c: char| c.is_whitespace() || c == '>').unwrap_or(rest.len());
                    value = decode_entities(&rest[..end]);
                    rest = &rest[end..];
                }
            }
            attrs.push((attr, value));
        }
        if name == "script" || name == "style" {
            let close = format!("</{name}");
            rest = rest.to_ascii_lowercase().find(&close).map_or("", |end| &rest[end..]);
        }
        if !name.is_empty() && !name.starts_with('!') {
            tags.push(Tag { name, attrs });
        }
    }
    tags
}

fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';').filter(|semi| *semi <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The text a reader sees: tags, scripts and styles removed, whitespace folded.
fn visible_text(html: &str) -> String {
    let mut text = String::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        text.push_str(&rest[..start]);
        text.push(' ');
        let lower = rest[start..].to_ascii_lowercase();
        let skip_to = if lower.starts_with("<script") {
            lower.find("</script>").map(|end| end + 9)
        } else if lower.starts_with("<style") {
            lower.find("</style>").map(|end| end + 8)
        } else {
            lower.find('>').map(|end| end + 1)
        };
        rest = skip_to.map_or("", |skip| &rest[start + skip..]);
    }
    text.push_str(rest);
    decode_entities(&text).split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Debug)]
struct Form {
    action: Url,
    method: String,
    /// Every named input a browser would send (hidden, text, email, password...).
    fields: Vec<(String, String)>,
    input_names: Vec<String>,
    buttons: Vec<(String, String)>,
}

impl Form {
    fn has_input(&self, name: &str) -> bool {
        self.input_names.iter().any(|n| n == name)
    }

    fn has_button(&self, name: &str, value: &str) -> bool {
        self.buttons.iter().any(|(n, v)| n == name && v == value)
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

fn forms(page: &Reply) -> Vec<Form> {
    let mut forms = Vec::new();
    let mut current: Option<Form> = None;
    for tag in scan_tags(&page.body) {
        match tag.name.as_str() {
            "form" => {
                let action = page.url.join(tag.attr("action").unwrap_or("")).unwrap();
                let method = tag.attr("method").unwrap_or("get").to_ascii_lowercase();
                current = Some(Form { action, method, fields: vec![], input_names: vec![], buttons: vec![] });
            }
            "/form" => forms.extend(current.take()),
            "input" => {
                let Some(form) = current.as_mut() else { continue };
                let Some(name) = tag.attr("name") else { continue };
                let kind = tag.attr("type").unwrap_or("text").to_ascii_lowercase();
                form.input_names.push(name.to_owned());
                let value = tag.attr("value").unwrap_or("").to_owned();
                match kind.as_str() {
                    "submit" | "image" => form.buttons.push((name.to_owned(), value)),
                    "checkbox" | "radio" if tag.attr("checked").is_none() => {}
                    "button" | "reset" | "file" => {}
                    _ => form.fields.push((name.to_owned(), value)),
                }
            }
            "button" => {
                let Some(form) = current.as_mut() else { continue };
                if let Some(name) = tag.attr("name") {
                    form.buttons.push((name.to_owned(), tag.attr("value").unwrap_or("").to_owned()));
                }
            }
            _ => {}
        }
    }
    forms.extend(current);
    forms
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn random_token(bytes: usize) -> String {
    let mut buffer = vec![0; bytes];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut buffer).unwrap();
    URL_SAFE_NO_PAD.encode(buffer)
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// RFC 6749 §2.3.1: each part form-urlencoded before the Basic encoding.
fn basic_auth(id: &str, secret: &str) -> String {
    let encode = |part: &str| form_urlencoded::byte_serialize(part.as_bytes()).collect::<String>();
    format!("Basic {}", STANDARD.encode(format!("{}:{}", encode(id), encode(secret))))
}

fn decode_jwt(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWS compact serialization: {token}");
    let part = |index: usize| -> Value {
        let bytes = URL_SAFE_NO_PAD.decode(parts[index]).unwrap_or_else(|err| panic!("JWT part {index}: {err}"));
        serde_json::from_slice(&bytes).unwrap()
    };
    (part(0), part(1))
}

/// Checks the signature with the JWKS key `kid`, whose `alg` must be the token's.
fn verify_signature(jwks: &Value, token: &str, kid: &str, alg: &str) {
    let keys = jwks["keys"].as_array().unwrap();
    let jwk =
        keys.iter().find(|key| key["kid"] == kid).unwrap_or_else(|| panic!("kid {kid} is not in the JWKS {jwks}"));
    assert_eq!(jwk["alg"].as_str().unwrap_or(alg), alg, "the JWKS key {kid} is for another algorithm");
    let parsed: JsonWebKey<'_> = serde_json::from_value(jwk.clone()).unwrap();
    let untrusted = UntrustedToken::new(token).unwrap();
    let verified = match alg {
        "RS256" => {
            let key = rsa::RsaPublicKey::try_from(&parsed).unwrap();
            jwt_compact::alg::Rsa::rs256().validator::<Value>(&key).validate(&untrusted).map(drop)
        }
        "ES256" => {
            let key = p256::ecdsa::VerifyingKey::try_from(&parsed).unwrap();
            jwt_compact::alg::Es256.validator::<Value>(&key).validate(&untrusted).map(drop)
        }
        other => panic!("no verifier here for {other}"),
    };
    verified.unwrap_or_else(|err| panic!("the {alg} signature does not verify with {kid}: {err}"));
}

fn query_of(url: &str) -> Vec<(String, String)> {
    Url::parse(url).unwrap().query_pairs().map(|(n, v)| (n.into_owned(), v.into_owned())).collect()
}

// ---------------------------------------------------------------------------------------------
// Config OP

/// OIDCCDiscoveryEndpointVerification, condition by condition, plus the contract's list
/// (API.md v2, "Discovery") and RFC 8414's second location.
fn oidcc_discovery_endpoint_verification(ctx: &Ctx) {
    let response = http().get(ctx.worker.url("/.well-known/openid-configuration")).send().unwrap();
    assert_eq!(response.status(), 200, "EnsureDiscoveryEndpointResponseStatusCodeIs200");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "CheckDiscoveryEndpointReturnedJsonContentType: {content_type}"
    );
    let d: Value = response.json().unwrap();
    let list = |name: &str| -> Vec<String> {
        d[name]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is not an array: {d}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    // OIDCCCheckDiscEndpointResponseTypesSupported, and the contract: exactly ["code"].
    assert_eq!(list("response_types_supported"), ["code"], "response_types_supported");
    // CheckDiscEndpointIssuer: the issuer is where the document was fetched from.
    assert_eq!(d["issuer"].as_str().map(|i| i.trim_end_matches('/')), Some(ctx.issuer.trim_end_matches('/')));
    assert!(Url::parse(d["issuer"].as_str().unwrap()).is_ok_and(|u| u.query().is_none() && u.fragment().is_none()));
    // CheckDiscEndpointSubjectTypesSupported.
    assert!(
        list("subject_types_supported").iter().any(|t| t == "public" || t == "pairwise"),
        "subject_types_supported"
    );
    // OIDCCCheckDiscEndpointIdTokenSigningAlgValuesSupported.
    let algs = list("id_token_signing_alg_values_supported");
    assert!(algs.contains(&"RS256".to_owned()), "RS256 in id_token_signing_alg_values_supported: {algs:?}");
    assert!(!algs.contains(&"none".to_owned()), "none advertised for ID tokens");
    // Endpoints: absolute URLs (https is the suite's rule; loopback http is what we can serve here).
    for name in [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "registration_endpoint",
        "jwks_uri",
        "end_session_endpoint",
    ] {
        let url = d[name].as_str().unwrap_or_else(|| panic!("{name} missing from discovery"));
        let parsed = Url::parse(url).unwrap_or_else(|err| panic!("{name} {url}: {err}"));
        assert!(parsed.origin() == Url::parse(&ctx.issuer).unwrap().origin(), "{name} {url} is not the issuer's");
        // "It never advertises an endpoint that edgeid does not serve."
        let status = http().get(url).send().unwrap().status().as_u16();
        assert!(status != 404, "{name} {url} answers 404");
    }
    // CheckJwksUri, FetchServerKeys, ValidateJwksSequence, CheckForKeyIdInServerJWKs,
    // CheckDistinctKeyIdValueInServerJWKs; the contract: a key of every algorithm it signs with.
    let jwks = ctx.jwks();
    let keys = jwks["keys"].as_array().unwrap();
    let mut kids = Vec::new();
    for key in keys {
        let kid = key["kid"].as_str().unwrap_or_else(|| panic!("a JWKS key without kid: {key}")).to_owned();
        assert!(!kids.contains(&kid), "kid {kid} twice in the JWKS");
        kids.push(kid);
        assert_eq!(key["use"], "sig", "{key}");
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(key.get(private).is_none(), "private member {private} in the JWKS: {key}");
        }
    }
    for alg in &algs {
        assert!(keys.iter().any(|key| key["alg"] == alg.as_str()), "{alg} advertised but no JWKS key has it: {jwks}");
    }
    // CheckDiscEndpointRequestParameterSupported / RequestUri / Claims (INFO in the suite; the
    // contract fixes them false).
    for name in ["request_parameter_supported", "request_uri_parameter_supported", "claims_parameter_supported"] {
        assert_eq!(d[name], false, "contract: {name}");
    }
    // OIDCCCheckDiscEndpointClaimsSupported (WARNING).
    match d["claims_supported"].as_array() {
        Some(claims) if claims.contains(&json!("sub")) => {}
        _ => ctx.warn(format!("claims_supported missing or without sub: {}", d["claims_supported"])),
    }
    // OIDCCCheckDiscEndpointGrantTypesSupported, and the contract's ⊇.
    let grants = list("grant_types_supported");
    for grant in ["authorization_code", "refresh_token"] {
        assert!(grants.iter().any(|g| g == grant), "grant_types_supported lacks {grant}: {grants:?}");
    }
    // CheckDiscEndpointScopesSupportedContainsOpenId, CheckDiscEndpointScopesSupportedSyntax.
    let scopes = list("scopes_supported");
    assert!(scopes.contains(&"openid".to_owned()), "scopes_supported lacks openid");
    for scope in &scopes {
        let valid = !scope.is_empty()
            && scope.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        assert!(valid, "scope token syntax: {scope:?}");
    }
    // EnsureServerConfigurationCodeChallengeMethodsSupportedIsAnArray; the contract: ["S256"].
    assert_eq!(list("code_challenge_methods_supported"), ["S256"], "code_challenge_methods_supported");
    let auth_methods = list("token_endpoint_auth_methods_supported");
    for method in ["client_secret_basic", "client_secret_post", "none"] {
        assert!(auth_methods.iter().any(|m| m == method), "token_endpoint_auth_methods_supported lacks {method}");
    }
    assert_eq!(list("response_modes_supported"), ["query"], "response_modes_supported");
    assert_eq!(d["authorization_response_iss_parameter_supported"], true, "RFC 9207 flag");
    let prompts = list("prompt_values_supported");
    for prompt in ["none", "login", "consent"] {
        assert!(prompts.iter().any(|p| p == prompt), "prompt_values_supported lacks {prompt}: {prompts:?}");
    }
    // CheckForUnexpectedParametersInServerMetadata (WARNING): names from OIDC Discovery §3,
    // RFC 8414 §2, RFC 9207, RP-Initiated Logout and OIDC Core §15.
    let known = [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "registration_endpoint",
        "scopes_supported",
        "response_types_supported",
        "response_modes_supported",
        "grant_types_supported",
        "acr_values_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
        "id_token_encryption_alg_values_supported",
        "id_token_encryption_enc_values_supported",
        "userinfo_signing_alg_values_supported",
        "request_object_signing_alg_values_supported",
        "token_endpoint_auth_methods_supported",
        "token_endpoint_auth_signing_alg_values_supported",
        "display_values_supported",
        "claim_types_supported",
        "claims_supported",
        "service_documentation",
        "claims_locales_supported",
        "ui_locales_supported",
        "claims_parameter_supported",
        "request_parameter_supported",
        "request_uri_parameter_supported",
        "require_request_uri_registration",
        "op_policy_uri",
        "op_tos_uri",
        "revocation_endpoint",
        "revocation_endpoint_auth_methods_supported",
        "introspection_endpoint",
        "introspection_endpoint_auth_methods_supported",
        "code_challenge_methods_supported",
        "authorization_response_iss_parameter_supported",
        "end_session_endpoint",
        "prompt_values_supported",
    ];
    for name in d.as_object().unwrap().keys() {
        if !known.contains(&name.as_str()) {
            ctx.warn(format!(
                "discovery names {name}, which no OIDC/OAuth metadata specification the suite knows defines"
            ));
        }
    }
    // RFC 8414: the same document at the OAuth location.
    let oauth: Value =
        http().get(ctx.worker.url("/.well-known/oauth-authorization-server")).send().unwrap().json().unwrap();
    assert_eq!(oauth, d, "contract: /.well-known/oauth-authorization-server serves the same document");
}

// ---------------------------------------------------------------------------------------------
// Basic OP

/// OIDCCServerTest with client_secret_basic (OP-Response-code, OP-ClientAuth-Basic-*): the happy
/// flow, the standard ID token checks, then the UserInfo endpoint (CallProtectedResource).
fn oidcc_server(ctx: &Ctx) {
    let client = ctx.register("oidcc-server", Auth::Basic, json!({}));
    happy_flow(ctx, &client);
}

/// OIDCCServerTestClientSecretPost (OP-ClientAuth-SecretPost-*).
fn oidcc_server_client_secret_post(ctx: &Ctx) {
    let client = ctx.register("oidcc-server-client-secret-post", Auth::Post, json!({}));
    happy_flow(ctx, &client);
}

fn happy_flow(ctx: &Ctx, client: &Client) {
    let (_, tokens) = ctx.logged_in(client, &ctx.alice, "openid");
    assert_eq!(tokens.journey.logins(), 1, "a fresh browser is asked for the password once");
    let userinfo = ctx.userinfo_get(&tokens.access_token);
    assert_eq!(userinfo.status, 200, "UserInfo with the access token: {}", userinfo.text);
    assert_eq!(userinfo.json["sub"], tokens.id_claims["sub"], "UserInfo sub = ID token sub");
    assert!(userinfo.json.get("email").is_none(), "contract: email only with the email scope: {}", userinfo.json);
    // The contract's access token (RFC 9068): the client and the granted scope.
    let (header, access) = decode_jwt(&tokens.access_token);
    assert_eq!(header["typ"], "at+jwt", "access token typ");
    assert_eq!(access["client_id"], client.id.as_str(), "access token client_id: {access}");
    assert_eq!(access["scope"], tokens.response["scope"], "access token scope = the granted scope");
    assert!(tokens.response["scope"].as_str().unwrap().split(' ').any(|s| s == "openid"));
    assert!(tokens.refresh_token.is_none(), "no offline_access, no refresh token: {}", tokens.response);
}

/// OIDCCResponseTypeMissing: an error back to the client (invalid_request or
/// unsupported_response_type), or an error page.
fn oidcc_response_type_missing(ctx: &Ctx) {
    let client = ctx.register("oidcc-response-type-missing", Auth::Basic, json!({}));
    let request = ctx.request(&client, "openid").without("response_type");
    let journey = ctx.browser().authorize(ctx, &request, Act::allow(&ctx.alice));
    match &journey.callback {
        Some(_) => {
            ctx.expect_error(&journey, &request, &["invalid_request", "unsupported_response_type"]);
        }
        None => {
            let page = journey.stopped.as_ref().unwrap();
            assert_eq!(page.status, 400, "an error page for a missing response_type: {}", page.describe());
        }
    }
    assert_eq!(journey.logins(), 0, "asked to log in for a request that cannot succeed");
}

/// OIDCCIdTokenSignature (OP-IDToken-Signature, OP-IDToken-kid): without an algorithm
/// registered, the ID token is RS256, with a kid the JWKS holds.
fn oidcc_idtoken_signature(ctx: &Ctx) {
    let client = ctx.register("oidcc-idtoken-signature", Auth::Basic, json!({}));
    let (_, tokens) = ctx.logged_in(&client, &ctx.alice, "openid");
    let (header, _) = decode_jwt(&tokens.id_token);
    assert_eq!(header["alg"], "RS256", "the default id_token_signed_response_alg");
}

/// OIDCCIdTokenUnsigned (OP-IDToken-none): the suite skips it unless `none` is offered. edgeid
/// does not offer it, so a client asking for it must not be registered.
fn oidcc_idtoken_unsigned(ctx: &Ctx) {
    let body =
        json!({"redirect_uris": [format!("{RP_ORIGIN}/unsigned/callback")], "id_token_signed_response_alg": "none"});
    let (status, answer) = ctx.register_raw(&body);
    assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_client_metadata")), "{answer}");
}

/// OIDCCUserInfoGet (OP-UserInfo-Endpoint).
fn oidcc_userinfo_get(ctx: &Ctx) {
    let client = ctx.register("oidcc-userinfo-get", Auth::Basic, json!({}));
    let (_, tokens) = ctx.logged_in(&client, &ctx.alice, "openid email");
    check_userinfo(ctx.userinfo_get(&tokens.access_token), &tokens, "GET");
}

/// OIDCCUserInfoPostHeader (OP-UserInfo-Header).
fn oidcc_userinfo_post_header(ctx: &Ctx) {
    let client = ctx.register("oidcc-userinfo-post-header", Auth::Basic, json!({}));
    let (_, tokens) = ctx.logged_in(&client, &ctx.alice, "openid email");
    let answer = Answer::of(http().post(ctx.endpoint("userinfo_endpoint")).bearer_auth(&tokens.access_token));
    check_userinfo(answer, &tokens, "POST with the bearer header");
}

/// OIDCCUserInfoPostBody (OP-UserInfo-Body): optional; a refusal is the suite's WARNING.
fn oidcc_userinfo_post_body(ctx: &Ctx) {
    let client = ctx.register("oidcc-userinfo-post-body", Auth::Basic, json!({}));
    let (_, tokens) = ctx.logged_in(&client, &ctx.alice, "openid email");
    let answer = Answer::of(
        http().post(ctx.endpoint("userinfo_endpoint")).form(&[("access_token", tokens.access_token.as_str())]),
    );
    if (200..300).contains(&answer.status) {
        check_userinfo(answer, &tokens, "POST with the token in the body");
    } else {
        ctx.warn(format!(
            "UserInfo refuses the access token in a POST body ({}): allowed, not required",
            answer.status
        ));
    }
}

fn check_userinfo(answer: Answer, tokens: &Tokens, how: &str) {
    assert_eq!(answer.status, 200, "UserInfo {how}: {}", answer.text);
    assert!(answer.header("content-type").is_some_and(|t| t.starts_with("application/json")), "EnsureContentTypeJson");
    assert_eq!(answer.json["sub"], tokens.id_claims["sub"], "VerifyUserInfoAndIdTokenInTokenEndpointSameSub");
    assert!(answer.json["email"].is_string() && answer.json["email_verified"].is_boolean(), "{}", answer.json);
}

/// OIDCCEnsureRequestWithoutNonceSucceedsForCodeFlow (OP-nonce-NoReq-code).
fn oidcc_ensure_request_without_nonce_succeeds(ctx: &Ctx) {
    let client = ctx.register("without-nonce", Auth::Basic, json!({}));
    let request = ctx.request(&client, "openid").without("nonce");
    let tokens = ctx.code_flow(&ctx.browser(), &client, &request, &ctx.alice);
    assert!(tokens.id_claims.get("nonce").is_none());
}

/// OIDCCScopeProfile, -Address, -Phone, -All: skipped by the suite when scopes_supported does
/// not list the scope. edgeid does not; the contract says unknown scopes are ignored, so a
/// request naming them all succeeds with what edgeid serves.
fn oidcc_scope_unsupported_scopes(ctx: &Ctx) {
    let scopes = ctx.discovery["scopes_supported"].as_array().cloned().unwrap_or_default();
    for scope in ["profile", "address", "phone"] {
        assert!(!scopes.contains(&json!(scope)), "{scope} is advertised: these steps assume the suite skips it");
    }
    let client = ctx.register("oidcc-scope-all", Auth::Basic, json!({}));
    let request = ctx.request(&client, "openid profile email address phone");
    let tokens = ctx.code_flow(&ctx.browser(), &client, &request, &ctx.alice);
    let granted = tokens.response["scope"].as_str().unwrap();
    for scope in ["profile", "address", "phone"] {
        if granted.split(' ').any(|s| s == scope) {
            ctx.warn(format!("the unsupported scope {scope} is in the granted scope {granted:?}"));
        }
    }
    let userinfo = ctx.userinfo_get(&tokens.access_token);
    assert_eq!(userinfo.status, 200);
    assert_eq!(userinfo.json["email"], ctx.alice.email.as_str());
}

/// OIDCCScopeEmail (OP-scope-email): the email in UserInfo; not in the ID token (WARNING: OIDC
/// Core §5.4 returns scope claims from UserInfo when an access token is issued); no name.
fn oidcc_scope_email(ctx: &Ctx) {
    let client = ctx.register("oidcc-scope-email", Auth::Basic, json!({}));
    let (_, tokens) = ctx.logged_in(&client, &ctx.alice, "openid email");
    if tokens.id_claims.get("email").is_some() {
        ctx.warn("EnsureIdTokenDoesNotContainEmailForScopeEmail: the ID token carries email though an access token was issued");
    }
    assert!(tokens.id_claims.get("name").is_none(), "EnsureIdTokenDoesNotContainName");
    let userinfo = ctx.userinfo_get(&tokens.access_token);
    assert_eq!(userinfo.status, 200);
    assert_eq!(userinfo.json["email"], ctx.alice.email.as_str(), "VerifyScopesReturnedInUserInfoClaims");
    assert_eq!(userinfo.json["email_verified"], true);
    assert!(userinfo.json.get("name").is_none(), "EnsureUserInfoDoesNotContainName");
}

/// OIDCCAlternateHappyFlow: scope order reversed, parameters in another order.
fn oidcc_alternate_happy_flow(ctx: &Ctx) {
    let client = ctx.register("oidcc-alternate-happy-flow", Auth::Basic, json!({}));
    let mut request = ctx.request(&client, "email openid");
    request.params.reverse();
    let tokens = ctx.code_flow(&ctx.browser(), &client, &request, &ctx.alice);
    assert_eq!(ctx.userinfo_get(&tokens.access_token).json["email"], ctx.alice.email.as_str());
}

/// OIDCCDisplayPage: display=page must not cause an error; a normal login page.
fn oidcc_display_page(ctx: &Ctx) {
    display(ctx, "page");
}

/// OIDCCDisplayPopup.
fn oidcc_display_popup(ctx: &Ctx) {
    display(ctx, "popup");
}

fn display(ctx: &Ctx, value: &str) {
    let client = ctx.register(&format!("oidcc-display-{value}"), Auth::Basic, json!({}));
    let request = ctx.request(&client, "openid").set("display", value);
    let tokens = ctx.code_flow(&ctx.browser(), &client, &request, &ctx.alice);
    assert_eq!(tokens.journey.logins(), 1, "a login page for display={value}");
}

/// OIDCCPromptLogin (OP-prompt-login): a second authorization with prompt=login (one second
/// later) asks for the password again; its auth_time is later.
fn oidcc_prompt_login(ctx: &Ctx) {
    let client = ctx.register("oidcc-prompt-login", Auth::Basic, json!({}));
    let (ua, first) = ctx.logged_in(&client, &ctx.alice, "openid");
    thread::sleep(Duration::from_secs(1)); // WaitForOneSecond
    let request = ctx.request(&client, "openid").set("prompt", "login");
    let second = ctx.code_flow(&ua, &client, &request, &ctx.alice);
    assert_eq!(second.journey.logins(), 1, "prompt=login must show the login page again (ExpectSecondLoginPage)");
    check_auth_time_later(&first, &second);
}

fn check_auth_time_later(first: &Tokens, second: &Tokens) {
    let (a, b) = (first.id_claims["auth_time"].as_i64().unwrap(), second.id_claims["auth_time"].as_i64().unwrap());
    assert!(b > a, "CheckSecondIdTokenAuthTimeIsLaterIfPresent: first {a}, second {b}");
    assert_eq!(first.id_claims["sub"], second.id_claims["sub"]);
}

fn check_same_authentication(first: &Tokens, second: &Tokens) {
    assert_eq!(
        second.journey.logins() + second.journey.consents(),
        0,
        "the second authorization showed {:?}",
        second.journey.pages
    );
    assert_eq!(first.id_claims["auth_time"], second.id_claims["auth_time"], "CheckIdTokenAuthTimeClaimsSameIfPresent");
    assert_eq!(first.id_claims["sub"], second.id_claims["sub"], "CheckIdTokenSubConsistentForSecondAuthorization");
}

/// OIDCCPromptNoneNotLoggedIn (OP-prompt-none-NotLoggedIn): a 128-character state comes back
/// uncorrupted with an error that needs a user interface (the contract: login_required).
fn oidcc_prompt_none_not_logged_in(ctx: &Ctx) {
    let client = ctx.register("oidcc-prompt-none-not-logged-in", Auth::Basic, json!({}));
    let request = ctx.request(&client, "openid").set("prompt", "none").set("state", &random_token(96));
    let journey = ctx.browser().authorize(ctx, &request, Act::nobody());
    let error = ctx.expect_error(
        &journey,
        &request,
        &["login_required", "interaction_required", "account_selection_required", "consent_required"],
    );
    assert_eq!(error, "login_required", "contract: prompt=none without a session is login_required");
}

/// OIDCCPromptNoneLoggedIn (OP-prompt-none-LoggedIn).
fn oidcc_prompt_none_logged_in(ctx: &Ctx) {
    let client = ctx.register("oidcc-prompt-none-logged-in", Auth::Basic, json!({}));
    let (ua, first) = ctx.logged_in(&client, &ctx.alice, "openid");
    let request = ctx.request(&client, "openid").set("prompt", "none");
    let second = ctx.code_flow(&ua, &client, &request, &ctx.alice);
    check_same_authentication(&first, &second);
}

/// OIDCCMaxAge1 (OP-Req-max_age=1): two seconds after the first login, max_age=1 asks for the
/// password again; auth_time is present, later and recent.
fn oidcc_max_age_1(ctx: &Ctx) {
    let client = ctx.register("oidcc-max-age-1", Auth::Basic, json!({}));
    let (ua, first) = ctx.logged_in(&client, &ctx.alice, "openid");
    thread::sleep(Duration::from_secs(2)); // WaitFor2Seconds
    let request = ctx.request(&client, "openid").set("max_age", "1");
    let second = ctx.code_flow(&ua, &client, &request, &ctx.alice);
    assert_eq!(second.journey.logins(), 1, "max_age=1 must show the login page again");
    check_auth_time_later(&first, &second);
    let auth_time = second.id_claims["auth_time"].as_i64().unwrap();
    assert!(auth_time >= unix_now() - 300 - 1, "CheckIdTokenAuthTimeIsRecentIfPresent: {auth_time}");
}

/// OIDCCMaxAge10000 (OP-Req-max_age=10000).
fn oidcc_max_age_10000(ctx: &Ctx) {
    let client = ctx.register("oidcc-max-age-10000", Auth::Basic, json!({}));
    let ua = ctx.browser();
    let first = ctx.code_flow(&ua, &client, &ctx.request(&client, "openid").set("max_age", "15000"), &ctx.alice);
    let second = ctx.code_flow(&ua, &client, &ctx.request(&client, "openid").set("max_age", "10000"), &ctx.alice);
    check_same_authentication(&first, &second);
}

/// OIDCCEnsureRequestWithUnknownParameterSucceeds (OP-Req-NotUnderstood): extra=foobar.
fn oidcc_unknown_parameter(ctx: &Ctx) {
    let client = ctx.register("oidcc-unknown-parameter", Auth::Basic, json!({}));
    ctx.code_flow(&ctx.browser(), &client, &ctx.request(&client, "openid").set("extra", "foobar"), &ctx.alice);
}

/// OIDCCIdTokenHint (OP-Req-id_token_hint): prompt=none with the first ID token as the hint.
fn oidcc_id_token_hint(ctx: &Ctx) {
    let client = ctx.register("oidcc-id-token-hint", Auth::Basic, json!({}));
    let (ua, first) = ctx.logged_in(&client, &ctx.alice, "openid");
    let request = ctx.request(&client, "openid").set("prompt", "none").set("id_token_hint", &first.id_token);
    let second = ctx.code_flow(&ua, &client, &request, &ctx.alice);
    check_same_authentication(&first, &second);
}

/// OIDCCLoginHint (OP-Req-login_hint): no error; the contract: it prefills the email. The
/// suite's default hint is buffy@<issuer host>; after it, the flow goes on with a real user.
fn oidcc_login_hint(ctx: &Ctx) {
    let client = ctx.register("oidcc-login-hint", Auth::Basic, json!({}));
    for hint in ["buffy@127.0.0.1".to_owned(), ctx.alice.email.clone()] {
        let request = ctx.request(&client, "openid").set("login_hint", &hint);
        let tokens = ctx.code_flow(&ctx.browser(), &client, &request, &ctx.alice);
        assert_eq!(
            tokens.journey.pages.first(),
            Some(&Seen::Login { prefilled_email: hint.clone() }),
            "contract: login_hint prefills the email"
        );
    }
}

/// OIDCCUiLocales: ui_locales=se must not cause an error.
fn oidcc_ui_locales(ctx: &Ctx) {
    let client = ctx.register("oidcc-ui-locales", Auth::Basic, json!({}));
    ctx.code_flow(&ctx.browser(), &client, &ctx.request(&client, "openid").set("ui_locales", "se"), &ctx.alice);
}

/// OIDCCClaimsLocales: claims_locales=se must not cause an error.
fn oidcc_claims_locales(ctx: &Ctx) {
    let client = ctx.register("oidcc-claims-locales", Auth::Basic, json!({}));
    ctx.code_flow(&ctx.browser(), &client, &ctx.request(&client, "openid").set("claims_locales", "se"), &ctx.alice);
}

/// OIDCCEnsureRequestWithAcrValuesSucceeds: none advertised, so the suite sends "1 2".
fn oidcc_acr_values(ctx: &Ctx) {
    let client = ctx.register("oidcc-acr-values", Auth::Basic, json!({}));
    let tokens =
        ctx.code_flow(&ctx.browser(), &client, &ctx.request(&client, "openid").set("acr_values", "1 2"), &ctx.alice);
    if !matches!(tokens.id_claims["acr"].as_str(), Some("1" | "2")) {
        ctx.warn("no requested acr in the ID token (a SHOULD: the suite ends with a warning)");
    }
}

/// OIDCCAuthCodeReuse (OP-OAuth-2nd): a second redemption at once is invalid_grant.
fn oidcc_codereuse(ctx: &Ctx) {
    let client = ctx.register("oidcc-codereuse", Auth::Basic, json!({}));
    let request = ctx.request(&client, "openid");
    let journey = ctx.browser().authorize(ctx, &request, Act::allow(&ctx.alice));
    let code = ctx.expect_code(&journey, &request);
    ctx.redeem(&client, &request, &code);
    let again = ctx.token(
        &client,
        &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", &client.redirect_uri)],
    );
    again.expect_error(400, "invalid_grant", "a code redeemed twice");
}

/// OIDCCAuthCodeReuseAfter30Seconds (OP-OAuth-2nd-30s, OP-OAuth-2nd-Revokes): the second
/// redemption, 30 s after the first, is invalid_grant, and the tokens of the first are revoked:
/// the access token at UserInfo (the suite's WARNING; the contract's rule) and the refresh token.
/// The wait is real, in a thread of its own; the code lives 60 s, so the second redemption
/// meets a used code, not an expired one.
fn oidcc_codereuse_30seconds(ctx: &Ctx) {
    let client = ctx.register("oidcc-codereuse-30seconds", Auth::Basic, json!({}));
    let request = ctx.request(&client, "openid offline_access").set("prompt", "consent");
    let journey = ctx.browser().authorize(ctx, &request, Act::allow(&ctx.alice));
    let code = ctx.expect_code(&journey, &request);
    let redeemed_at = Instant::now();
    let tokens = ctx.redeem(&client, &request, &code);
    let refresh = tokens.refresh_token.clone().unwrap_or_else(|| panic!("no refresh token: {}", tokens.response));
    assert_eq!(ctx.userinfo_get(&tokens.access_token).status, 200);
    thread::sleep(CODE_REUSE_WAIT.saturating_sub(redeemed_at.elapsed()));
    let again = ctx.token(
        &client,
        &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", &client.redirect_uri)],
    );
    again.expect_error(400, "invalid_grant", "a code redeemed again after 30 s");
    let userinfo = ctx.userinfo_get(&tokens.access_token);
    assert!(
        (400..500).contains(&userinfo.status),
        "the first redemption's access token still works at UserInfo after the code's reuse: {} {}",
        userinfo.status,
        userinfo.text
    );
    let refreshed = ctx.token(&client, &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]);
    refreshed.expect_error(400, "invalid_grant", "the first redemption's refresh token after the code's reuse");
}

/// OIDCCEnsureRegisteredRedirectUri (OP-redirect_uri-NotReg): an error page, no redirect to
/// the unregistered URI nor to the registered one.
fn oidcc_ensure_registered_redirect_uri(ctx: &Ctx) {
    let client = ctx.register("oidcc-ensure-registered-redirect-uri", Auth::Basic, json!({}));
    let bad = format!("{}{}", client.redirect_uri, random_token(6));
    let request = ctx.request(&client, "openid").set("redirect_uri", &bad);
    expect_error_page(ctx, &request, "an unregistered redirect_uri");
}

fn expect_error_page(ctx: &Ctx, request: &AuthRequest, what: &str) {
    let journey = ctx.browser().authorize(ctx, request, Act::allow(&ctx.alice));
    let page = journey.expect_no_redirect(what);
    assert_eq!(page.status, 400, "{what}: contract: a 400 HTML error page: {}", page.describe());
    assert!(page.content_type().starts_with("text/html"), "{what}: an HTML page: {}", page.describe());
    assert!(page.headers.get("location").is_none(), "{what}: a Location header");
    assert_eq!(journey.logins(), 0, "{what}: asked for a password first");
}

/// OIDCCEnsurePostRequestSucceeds: the authorization request as a form POST from the RP's page.
fn oidcc_ensure_post_request_succeeds(ctx: &Ctx) {
    let client = ctx.register("oidcc-ensure-post-request-succeeds", Auth::Basic, json!({}));
    let request = ctx.request(&client, "openid");
    let ua = ctx.browser();
    let url = Url::parse(&request.endpoint).unwrap();
    let post = ua
        .http
        .post(url.clone())
        .header("Origin", RP_ORIGIN)
        .header("Sec-Fetch-Site", "cross-site")
        .header("Sec-Fetch-Mode", "navigate")
        .form(&request.params);
    let journey = ua.follow(ua.send(&url, post), Act::allow(&ctx.alice));
    let code = ctx.expect_code(&journey, &request);
    ctx.redeem(&client, &request, &code);
}

/// OIDCCRequestUriUnsignedSupportedCorrectlyOrRejectedAsUnsupported (OP-request_uri-Unsigned).
fn oidcc_request_uri_unsigned(ctx: &Ctx) {
    let client = ctx.register("oidcc-request-uri-unsigned", Auth::Basic, json!({}));
    let request =
        ctx.request(&client, "openid").set("request_uri", &format!("{RP_ORIGIN}/requests/{}", random_token(8)));
    let journey = ctx.browser().authorize(ctx, &request, Act::allow(&ctx.alice));
    assert_eq!(ctx.expect_error(&journey, &request, &["request_uri_not_supported"]), "request_uri_not_supported");
}

fn unsigned_request_object(claims: &Value) -> String {
    format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode(claims.to_string()))
}

/// OIDCCUnsignedRequestObjectSupportedCorrectlyOrRejectedAsUnsupported (OP-request-Unsigned).
fn oidcc_request_object_unsigned(ctx: &Ctx) {
    let client = ctx.register("oidcc-unsigned-request-object", Auth::Basic, json!({}));
    let request = ctx.request(&client, "openid");
    let object = json!({"client_id": client.id, "response_type": "code", "scope": "openid", "redirect_uri": client.redirect_uri,
        "state": request.get("state"), "nonce": request.get("nonce")});
    let request = request.set("request", &unsigned_request_object(&object));
    let journey = ctx.browser().authorize(ctx, &request, Act::allow(&ctx.alice));
    assert_eq!(ctx.expect_error(&journey, &request, &["request_not_supported"]), "request_not_supported");
}

/// OIDCCEnsureRequestObjectWithRedirectUri: a request object naming another redirect URI than
/// the query; edgeid refuses request objects, so the error goes to the query's registered URI
/// and never to the object's.
fn oidcc_request_object_with_redirect_uri(ctx: &Ctx) {
    let client = ctx.register("oidcc-request-object-redirect-uri", Auth::Basic, json!({}));
    let request = ctx.request(&client, "openid");
    let other = format!("{RP_ORIGIN}/not-registered/callback");
    let object = json!({"client_id": client.id, "response_type": "code", "scope": "openid", "redirect_uri": other,
        "state": request.get("state"), "nonce": request.get("nonce")});
    let request = request.set("request", &unsigned_request_object(&object));
    let journey = ctx.browser().authorize(ctx, &request, Act::allow(&ctx.alice));
    ctx.expect_error(&journey, &request, &["request_not_supported"]);
    assert!(!journey.callback.as_ref().unwrap().url.as_str().starts_with(&other));
}

/// OIDCCClaimsEssential: the claims parameter (unsupported here) must not make the request fail.
fn oidcc_claims_essential(ctx: &Ctx) {
    let client = ctx.register("oidcc-claims-essential", Auth::Basic, json!({}));
    let claims = json!({"userinfo": {"name": {"essential": true}}}).to_string();
    let tokens =
        ctx.code_flow(&ctx.browser(), &client, &ctx.request(&client, "openid").set("claims", &claims), &ctx.alice);
    if ctx.userinfo_get(&tokens.access_token).json.get("name").is_none() {
        ctx.warn("no name in UserInfo for an essential claim (the suite warns; edgeid has no name claim)");
    }
}

/// OIDCCRefreshToken: offline_access with prompt=consent (OIDC Core §11); the refresh grant one
/// second later gives new tokens whose ID token keeps iss, sub, aud, auth_time and has a later
/// iat (OIDC Core §12.2); the new access token works; a second client's refresh token is
/// invalid_grant for the first client.
fn oidcc_refresh_token(ctx: &Ctx) {
    let first_client = ctx.register("oidcc-refresh-token", Auth::Basic, json!({}));
    let second_client = ctx.register("oidcc-refresh-token-client2", Auth::Basic, json!({}));
    let scope = "openid offline_access";
    let ua = ctx.browser();
    let first =
        ctx.code_flow(&ua, &first_client, &ctx.request(&first_client, scope).set("prompt", "consent"), &ctx.alice);
    let refresh = first.refresh_token.clone().unwrap_or_else(|| panic!("no refresh token: {}", first.response));
    assert!(refresh.bytes().all(|b| (0x20..=0x7e).contains(&b)), "EnsureRefreshTokenContainsAllowedCharactersOnly");
    assert!(ctx.discovery["grant_types_supported"].as_array().unwrap().contains(&json!("refresh_token")));
    thread::sleep(Duration::from_secs(1)); // WaitForOneSecond, so that the iat differ
    let answer =
        ctx.token(&first_client, &[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("scope", scope)]);
    assert_eq!(answer.status, 200, "refresh grant: {}", answer.text);
    check_token_response(&answer, "token endpoint (refresh_token)");
    assert_ne!(answer.json["access_token"], first.access_token.as_str(), "EnsureAccessTokenValuesAreDifferent");
    let rotated =
        answer.json["refresh_token"].as_str().unwrap_or_else(|| panic!("contract: rotation: {}", answer.json));
    assert!(
        URL_SAFE_NO_PAD.decode(rotated).map_or(rotated.len() >= 22, |bytes| bytes.len() >= 16),
        "EnsureMinimumRefreshTokenEntropy"
    );
    let id_token =
        answer.json["id_token"].as_str().unwrap_or_else(|| panic!("contract: a new ID token: {}", answer.json));
    let second = ctx.check_id_token(&first_client, id_token, None);
    // CompareIdTokenClaims.
    for claim in ["iss", "sub", "aud", "auth_time"] {
        assert_eq!(first.id_claims[claim], second[claim], "OIDC Core 12.2: {claim} of the refreshed ID token");
    }
    assert!(second["iat"].as_i64() > first.id_claims["iat"].as_i64(), "OIDC Core 12.2: a new iat");
    assert_eq!(first.id_claims.get("azp"), second.get("azp"), "azp");
    assert_eq!(ctx.userinfo_get(answer.json["access_token"].as_str().unwrap()).status, 200, "the new access token");

    let other =
        ctx.code_flow(&ua, &second_client, &ctx.request(&second_client, scope).set("prompt", "consent"), &ctx.alice);
    let other_refresh = other.refresh_token.unwrap_or_else(|| panic!("no refresh token for client 2"));
    let stolen = ctx
        .token(&first_client, &[("grant_type", "refresh_token"), ("refresh_token", &other_refresh), ("scope", scope)]);
    stolen.expect_error(400, "invalid_grant", "client 2's refresh token used by client 1");
}

/// OIDCCEnsureRequestWithValidPkceSucceeds, for a confidential client (optional there).
fn oidcc_valid_pkce(ctx: &Ctx) {
    let client = ctx.register("oidcc-valid-pkce", Auth::Basic, json!({}));
    ctx.code_flow(&ctx.browser(), &client, &ctx.request(&client, "openid").with_pkce(), &ctx.alice);
}

/// OIDCCEnsureRedirectUriInAuthorizationRequest (OP-redirect_uri-Missing): two URIs registered,
/// none in the request: an error page, no redirect.
fn oidcc_ensure_redirect_uri_in_authorization_request(ctx: &Ctx) {
    let first = format!("{RP_ORIGIN}/missing/{}/a", random_token(6));
    let second = format!("{RP_ORIGIN}/missing/{}/b", random_token(6));
    let client = ctx.register("oidcc-redirect-uri-missing", Auth::Basic, json!({"redirect_uris": [first, second]}));
    let request = ctx.request(&client, "openid").without("redirect_uri");
    expect_error_page(ctx, &request, "no redirect_uri with two registered");
}

/// OIDCCRedirectUriQueryOK: a registered URI with a query gets it back beside the code.
fn oidcc_redirect_uri_query_ok(ctx: &Ctx) {
    let uri = format!("{RP_ORIGIN}/query/{}/callback?dummy1=lorem&dummy2=ipsum", random_token(6));
    let client = ctx.register("oidcc-redirect-uri-query-ok", Auth::Basic, json!({"redirect_uris": [uri]}));
    let request = ctx.request(&client, "openid");
    let journey = ctx.browser().authorize(ctx, &request, Act::allow(&ctx.alice));
    let code = ctx.expect_code(&journey, &request);
    let callback = journey.callback.as_ref().unwrap();
    assert_eq!(
        (callback.get("dummy1"), callback.get("dummy2")),
        (Some("lorem"), Some("ipsum")),
        "CheckMatchingCallbackParameters"
    );
    ctx.redeem(&client, &request, &code);
}

/// OIDCCRedirectUriQueryMismatch: registered with one query, asked with another: error page.
fn oidcc_redirect_uri_query_mismatch(ctx: &Ctx) {
    let uri = format!("{RP_ORIGIN}/query/{}/callback?foo=bar", random_token(6));
    let client = ctx.register("oidcc-redirect-uri-query-mismatch", Auth::Basic, json!({"redirect_uris": [uri]}));
    let request = ctx.request(&client, "openid").set("redirect_uri", &uri.replace("foo=bar", "foo=zot"));
    expect_error_page(ctx, &request, "a redirect_uri whose query differs from the registered one");
}

/// OIDCCRedirectUriQueryAdded: a query added to the registered URI: error page.
fn oidcc_redirect_uri_query_added(ctx: &Ctx) {
    let client = ctx.register("oidcc-redirect-uri-query-added", Auth::Basic, json!({}));
    let request = ctx.request(&client, "openid").set("redirect_uri", &format!("{}?foo=bar", client.redirect_uri));
    expect_error_page(ctx, &request, "a query added to the registered redirect_uri");
}

/// OIDCCRedirectUriRegFrag: registering a redirect URI with a fragment is refused.
fn oidcc_redirect_uri_regfrag(ctx: &Ctx) {
    let (status, answer) = ctx.register_raw(&json!({"redirect_uris": [format!("{RP_ORIGIN}/frag/callback#foo")]}));
    assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_redirect_uri")), "{answer}");
}

// ---------------------------------------------------------------------------------------------
// RP-Initiated Logout OP

/// OIDCCRpInitiatedLogoutDiscoveryEndpointVerification: CheckDiscEndSessionEndpoint.
fn oidcc_rp_initiated_logout_discovery(ctx: &Ctx) {
    let url = ctx.endpoint("end_session_endpoint");
    assert!(Url::parse(&url).is_ok(), "end_session_endpoint {url}");
}

fn logout_client(ctx: &Ctx, name: &str) -> Client {
    ctx.register(name, Auth::Basic, json!({}))
}

/// After a logout, prompt=none must fail with an error that needs a user interface; the
/// contract names it: login_required.
fn expect_logged_out(ctx: &Ctx, ua: &UserAgent, client: &Client) {
    let (request, journey) = ua.prompt_none(ctx, client);
    let error = ctx.expect_error(
        &journey,
        &request,
        &["login_required", "interaction_required", "account_selection_required", "consent_required"],
    );
    assert_eq!(error, "login_required", "contract: prompt=none after logout is login_required");
}

/// Still logged in: prompt=none gets a code.
fn expect_still_logged_in(ctx: &Ctx, ua: &UserAgent, client: &Client, why: &str) {
    let (request, journey) = ua.prompt_none(ctx, client);
    let callback = journey.callback(why);
    assert!(callback.get("code").is_some(), "{why}: the session ended without a confirmation: {}", callback.url);
    ctx.expect_code(&journey, &request);
}

/// A page that is not a redirect: an error page or a confirmation.
fn expect_page_no_redirect(journey: &Journey, what: &str) {
    let page = journey.expect_no_redirect(what);
    assert!(page.status == 200 || page.status == 400, "{what}: {}", page.describe());
    assert!(page.content_type().starts_with("text/html"), "{what}: {}", page.describe());
}

/// OIDCCRpInitiatedLogout (OP-RpInitLogout): to the registered post_logout_redirect_uri with the
/// 128-character state and nothing else; then prompt=none fails.
fn oidcc_rp_initiated_logout(ctx: &Ctx) {
    let client = logout_client(ctx, "oidcc-rp-initiated-logout");
    let (ua, tokens) = ctx.logged_in(&client, &ctx.alice, "openid");
    let state = random_token(96);
    let journey = ua.end_session(
        ctx,
        &[
            ("id_token_hint", &tokens.id_token),
            ("post_logout_redirect_uri", &client.post_logout_redirect_uri),
            ("state", &state),
        ],
        false,
    );
    let callback = journey.callback("end_session with a valid id_token_hint and a registered post_logout_redirect_uri");
    assert_eq!(callback.base(), client.post_logout_redirect_uri, "the post_logout_redirect_uri");
    assert_eq!(callback.get("state"), Some(state.as_str()), "CheckPostLogoutState");
    if callback.params.iter().any(|(name, _)| name != "state") {
        ctx.warn(format!("CheckForUnexpectedParametersInPostLogoutRedirect: {}", callback.url));
    }
    assert!(journey.pages.is_empty(), "contract: a valid hint redirects without asking: {:?}", journey.pages);
    expect_logged_out(ctx, &ua, &client);
}

/// OIDCCRpInitiatedLogoutBadLogoutRedirectUri: an unregistered post_logout_redirect_uri with a
/// valid hint: no redirect (neither to it nor to the registered one), an error or confirmation.
fn oidcc_rp_initiated_logout_bad_post_logout_redirect_uri(ctx: &Ctx) {
    let client = logout_client(ctx, "oidcc-rp-initiated-logout-bad-uri");
    let (ua, tokens) = ctx.logged_in(&client, &ctx.alice, "openid");
    let bad = format!("{RP_ORIGIN}/bad_post_logout_redirect_uri");
    let journey = ua.end_session(
        ctx,
        &[("id_token_hint", &tokens.id_token), ("post_logout_redirect_uri", &bad), ("state", "s")],
        true,
    );
    expect_page_no_redirect(&journey, "an unregistered post_logout_redirect_uri");
}

/// OIDCCRpInitiatedLogoutModifiedIdTokenHint: the hint turned into alg none: no redirect; the
/// contract: a confirmation, and only confirming logs out (still no redirect).
fn oidcc_rp_initiated_logout_modified_id_token_hint(ctx: &Ctx) {
    let client = logout_client(ctx, "oidcc-rp-initiated-logout-modified-hint");
    let (ua, tokens) = ctx.logged_in(&client, &ctx.alice, "openid");
    let payload = tokens.id_token.split('.').nth(1).unwrap();
    let modified = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(br#"{"alg": "none"}"#));
    invalid_hint_logout(ctx, &ua, &client, &modified, "an alg:none id_token_hint");
}

/// OIDCCRpInitiatedLogoutBadIdTokenHint: a hint signed by someone else (the suite signs with
/// the client secret, HS256).
fn oidcc_rp_initiated_logout_bad_id_token_hint(ctx: &Ctx) {
    use hmac::Mac;
    let client = logout_client(ctx, "oidcc-rp-initiated-logout-bad-hint");
    let (ua, tokens) = ctx.logged_in(&client, &ctx.alice, "openid");
    let now = unix_now();
    let claims = json!({"iss": ctx.issuer, "sub": tokens.id_claims["sub"], "aud": client.id, "iat": now, "exp": now + 300,
        "sid": tokens.id_claims["sid"]});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(client.secret.as_ref().unwrap().as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    let fake = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
    invalid_hint_logout(ctx, &ua, &client, &fake, "an id_token_hint not signed by the OP");
}

fn invalid_hint_logout(ctx: &Ctx, ua: &UserAgent, client: &Client, hint: &str, what: &str) {
    let params =
        [("id_token_hint", hint), ("post_logout_redirect_uri", &client.post_logout_redirect_uri), ("state", "s")];
    let journey = ua.end_session(ctx, &params, false);
    expect_page_no_redirect(&journey, what);
    if journey.pages.contains(&Seen::LogoutConfirmation) {
        expect_still_logged_in(ctx, ua, client, &format!("{what}, confirmation not given"));
        let confirmed = ua.end_session(ctx, &params, true);
        expect_page_no_redirect(&confirmed, &format!("{what}, confirmed"));
        expect_logged_out(ctx, ua, client);
    } else {
        let page = journey.stopped.as_ref().unwrap();
        assert_eq!(page.status, 400, "{what}: neither a confirmation nor an error page: {}", page.describe());
    }
}

/// OIDCCRpInitiatedLogoutNoIdTokenHint: a post_logout_redirect_uri but no hint (and no
/// client_id): no redirect; "an error screen or a confirmation". node-oidc-provider answers an
/// error here (the URI needs a hint or a client_id to be checked against), so either passes, as
/// long as an error leaves the session alone and a confirmation logs out only when pressed.
fn oidcc_rp_initiated_logout_no_id_token_hint(ctx: &Ctx) {
    let client = logout_client(ctx, "oidcc-rp-initiated-logout-no-hint");
    let (ua, _) = ctx.logged_in(&client, &ctx.alice, "openid");
    let params = [("post_logout_redirect_uri", client.post_logout_redirect_uri.as_str()), ("state", "s")];
    let journey = ua.end_session(ctx, &params, false);
    expect_page_no_redirect(&journey, "end_session with a post_logout_redirect_uri and no id_token_hint");
    if journey.pages.contains(&Seen::LogoutConfirmation) {
        confirmed_logout(ctx, &ua, &client, &params);
    } else {
        let page = journey.stopped.as_ref().unwrap();
        assert_eq!(page.status, 400, "neither a confirmation nor an error page: {}", page.describe());
        expect_still_logged_in(ctx, &ua, &client, "an end_session error page");
    }
}

/// OIDCCRpInitiatedLogoutNoParams: no parameters: the user is logged out (after a confirmation,
/// the contract's rule without a hint); no redirect.
fn oidcc_rp_initiated_logout_no_params(ctx: &Ctx) {
    let client = logout_client(ctx, "oidcc-rp-initiated-logout-no-params");
    let (ua, _) = ctx.logged_in(&client, &ctx.alice, "openid");
    confirmed_logout(ctx, &ua, &client, &[]);
}

/// OIDCCRpInitiatedLogoutOnlyState: only a state: logged out, no redirect.
fn oidcc_rp_initiated_logout_only_state(ctx: &Ctx) {
    let client = logout_client(ctx, "oidcc-rp-initiated-logout-only-state");
    let (ua, _) = ctx.logged_in(&client, &ctx.alice, "openid");
    confirmed_logout(ctx, &ua, &client, &[("state", &random_token(16))]);
}

fn confirmed_logout(ctx: &Ctx, ua: &UserAgent, client: &Client, params: &[(&str, &str)]) {
    let asked = ua.end_session(ctx, params, false);
    expect_page_no_redirect(&asked, "end_session without an id_token_hint");
    assert!(
        asked.pages.contains(&Seen::LogoutConfirmation),
        "contract: without a valid hint it asks to confirm: {}",
        asked.stopped.as_ref().unwrap().describe()
    );
    expect_still_logged_in(ctx, ua, client, "a logout page shown but not confirmed");
    let confirmed = ua.end_session(ctx, params, true);
    let page = confirmed.expect_no_redirect("end_session confirmed without an id_token_hint");
    assert_eq!(page.status, 200, "the 'you are logged out' page (ExpectSuccessfulLogoutPage): {}", page.describe());
    expect_logged_out(ctx, ua, client);
}

/// OIDCCRpInitiatedLogoutNoPostLogoutRedirectUri: a hint and a state, no URI: logged out, a page.
fn oidcc_rp_initiated_logout_no_post_logout_redirect_uri(ctx: &Ctx) {
    let client = logout_client(ctx, "oidcc-rp-initiated-logout-no-uri");
    let (ua, tokens) = ctx.logged_in(&client, &ctx.alice, "openid");
    let journey = ua.end_session(ctx, &[("id_token_hint", &tokens.id_token), ("state", "s")], true);
    let page = journey.expect_no_redirect("end_session without a post_logout_redirect_uri");
    assert_eq!(page.status, 200, "ExpectSuccessfulLogoutPage: {}", page.describe());
    expect_logged_out(ctx, &ua, &client);
}

/// OIDCCRpInitiatedLogoutNoState: to the post_logout_redirect_uri with no state at all.
fn oidcc_rp_initiated_logout_no_state(ctx: &Ctx) {
    let client = logout_client(ctx, "oidcc-rp-initiated-logout-no-state");
    let (ua, tokens) = ctx.logged_in(&client, &ctx.alice, "openid");
    let journey = ua.end_session(
        ctx,
        &[("id_token_hint", &tokens.id_token), ("post_logout_redirect_uri", &client.post_logout_redirect_uri)],
        false,
    );
    let callback = journey.callback("end_session without state");
    assert_eq!(callback.base(), client.post_logout_redirect_uri);
    assert!(callback.get("state").is_none(), "CheckNoPostLogoutState: {}", callback.url);
    if !callback.params.is_empty() {
        ctx.warn(format!("CheckForUnexpectedParametersInPostLogoutRedirect: {}", callback.url));
    }
    expect_logged_out(ctx, &ua, &client);
}

/// OIDCCRpInitiatedLogoutQueryAddedToLogoutRedirectUri: `?foo=bar` added: no redirect.
fn oidcc_rp_initiated_logout_query_added(ctx: &Ctx) {
    let client = logout_client(ctx, "oidcc-rp-initiated-logout-query-added");
    let (ua, tokens) = ctx.logged_in(&client, &ctx.alice, "openid");
    let uri = format!("{}?foo=bar", client.post_logout_redirect_uri);
    let journey = ua.end_session(
        ctx,
        &[("id_token_hint", &tokens.id_token), ("post_logout_redirect_uri", &uri), ("state", "s")],
        true,
    );
    expect_page_no_redirect(&journey, "a query added to the post_logout_redirect_uri");
}

/// The contract: `client_id` instead of a hint names the client whose URI may be used; without a
/// hint the user confirms first.
fn logout_by_client_id(ctx: &Ctx) {
    let client = logout_client(ctx, "logout-by-client-id");
    let (ua, _) = ctx.logged_in(&client, &ctx.alice, "openid");
    let params = [
        ("client_id", client.id.as_str()),
        ("post_logout_redirect_uri", &client.post_logout_redirect_uri),
        ("state", "xyz"),
    ];
    let journey = ua.end_session(ctx, &params, true);
    assert!(journey.pages.contains(&Seen::LogoutConfirmation), "contract: without a hint it asks to confirm");
    let callback = journey.callback("end_session with client_id, confirmed");
    assert_eq!((callback.base(), callback.get("state")), (client.post_logout_redirect_uri.clone(), Some("xyz")));
    expect_logged_out(ctx, &ua, &client);
}

/// The contract: logging out revokes the session's refresh tokens.
fn logout_revokes_refresh_tokens(ctx: &Ctx) {
    let client = logout_client(ctx, "logout-revokes-refresh");
    let ua = ctx.browser();
    let tokens = ctx.code_flow(
        &ua,
        &client,
        &ctx.request(&client, "openid offline_access").set("prompt", "consent"),
        &ctx.alice,
    );
    let refresh = tokens.refresh_token.clone().unwrap();
    let journey = ua.end_session(
        ctx,
        &[("id_token_hint", &tokens.id_token), ("post_logout_redirect_uri", &client.post_logout_redirect_uri)],
        true,
    );
    journey.callback("logout with a valid hint");
    let answer = ctx.token(&client, &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]);
    answer.expect_error(400, "invalid_grant", "a refresh token of a session that logged out");
}

// ---------------------------------------------------------------------------------------------
// PKCE

fn pkce_plain_refused(ctx: &Ctx) {
    let client = ctx.register("pkce-plain", Auth::Public, json!({}));
    let verifier = random_token(48);
    let plain = ctx.request(&client, "openid").set("code_challenge", &verifier).set("code_challenge_method", "plain");
    let journey = ctx.browser().authorize(ctx, &plain, Act::allow(&ctx.alice));
    ctx.expect_error(&journey, &plain, &["invalid_request"]);
    // RFC 7636 §4.3: a challenge without a method is plain.
    let unnamed = plain.clone().without("code_challenge_method");
    let journey = ctx.browser().authorize(ctx, &unnamed, Act::allow(&ctx.alice));
    ctx.expect_error(&journey, &unnamed, &["invalid_request"]);
}

fn pkce_required_for_public_clients(ctx: &Ctx) {
    let client = ctx.register("pkce-required", Auth::Public, json!({}));
    let request = ctx.request(&client, "openid").without("code_challenge").without("code_challenge_method");
    let journey = ctx.browser().authorize(ctx, &request, Act::allow(&ctx.alice));
    ctx.expect_error(&journey, &request, &["invalid_request"]);
}

/// A challenge sent and no verifier, a verifier with no challenge, a wrong verifier: each
/// invalid_grant (RFC 7636 §4.6; the contract: "when a challenge was sent, and only then").
fn pkce_downgrade_refused(ctx: &Ctx) {
    let public = ctx.register("pkce-downgrade-public", Auth::Public, json!({}));
    let confidential = ctx.register("pkce-downgrade-confidential", Auth::Basic, json!({}));
    let ua = ctx.browser();
    let code_for = |request: &AuthRequest| {
        let journey = ua.authorize(ctx, request, Act::allow(&ctx.alice));
        ctx.expect_code(&journey, request)
    };
    let request = ctx.request(&public, "openid");
    let code = code_for(&request);
    let answer = ctx.token(
        &public,
        &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", &public.redirect_uri)],
    );
    answer.expect_error(400, "invalid_grant", "a challenge sent, no code_verifier");

    let request = ctx.request(&public, "openid");
    let code = code_for(&request);
    let wrong = random_token(48);
    let answer = ctx.token(
        &public,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &public.redirect_uri),
            ("code_verifier", &wrong),
        ],
    );
    answer.expect_error(400, "invalid_grant", "a wrong code_verifier");

    let request = ctx.request(&confidential, "openid");
    let code = code_for(&request);
    let answer = ctx.token(
        &confidential,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &confidential.redirect_uri),
            ("code_verifier", &wrong),
        ],
    );
    answer.expect_error(400, "invalid_grant", "a code_verifier though no challenge was sent");
}

// ---------------------------------------------------------------------------------------------
// The authorization endpoint's other rules

fn unknown_client_id(ctx: &Ctx) {
    let client = ctx.register("unknown-client", Auth::Basic, json!({}));
    let request = ctx.request(&client, "openid").set("client_id", "no-such-client");
    expect_error_page(ctx, &request, "an unknown client_id");
}

fn unsupported_response_type(ctx: &Ctx) {
    let client = ctx.register("unsupported-response-type", Auth::Basic, json!({}));
    for response_type in ["token", "id_token", "code id_token", "code token"] {
        let request = ctx.request(&client, "openid").set("response_type", response_type);
        let journey = ctx.browser().authorize(ctx, &request, Act::allow(&ctx.alice));
        ctx.expect_error(&journey, &request, &["unsupported_response_type"]);
    }
}

fn prompt_none_with_another_value(ctx: &Ctx) {
    let client = ctx.register("prompt-none-combined", Auth::Basic, json!({}));
    let request = ctx.request(&client, "openid").set("prompt", "none login");
    let journey = ctx.browser().authorize(ctx, &request, Act::nobody());
    ctx.expect_error(&journey, &request, &["invalid_request"]);
}

fn state_byte_for_byte(ctx: &Ctx) {
    let client = ctx.register("state-bytes", Auth::Basic, json!({}));
    let request = ctx.request(&client, "openid").set("state", "a b+c/d?e=f&g%20h~é\"<x>");
    ctx.code_flow(&ctx.browser(), &client, &request, &ctx.alice);
}

fn no_openid_no_id_token(ctx: &Ctx) {
    let client = ctx.register("no-openid", Auth::Basic, json!({}));
    let tokens = ctx.code_flow(&ctx.browser(), &client, &ctx.request(&client, "email"), &ctx.alice);
    assert!(tokens.response.get("id_token").is_none(), "an ID token without openid: {}", tokens.response);
}

// ---------------------------------------------------------------------------------------------
// Consent and SSO

fn consent_page_and_memory(ctx: &Ctx) {
    let client = ctx.register("consent-memory", Auth::Basic, json!({}));
    let ua = ctx.browser();
    let first = ctx.code_flow(&ua, &client, &ctx.request(&client, "openid email"), &ctx.alice);
    let text = first.journey.pages.iter().find_map(|page| match page {
        Seen::Consent { text } => Some(text.clone()),
        _ => None,
    });
    let text =
        text.unwrap_or_else(|| panic!("no consent page for a client without skip_consent: {:?}", first.journey.pages));
    assert!(text.contains(&client.name), "the consent page names the client {:?}: {text}", client.name);
    assert!(text.to_lowercase().contains("email"), "the consent page names the email scope: {text}");
    let second = ctx.code_flow(&ua, &client, &ctx.request(&client, "openid email"), &ctx.alice);
    assert_eq!(second.journey.pages, vec![], "contract: approval is remembered for those scopes");
    let asked = ctx.code_flow(&ua, &client, &ctx.request(&client, "openid email").set("prompt", "consent"), &ctx.alice);
    assert_eq!(asked.journey.consents(), 1, "contract: prompt=consent always asks");
    assert_eq!(asked.journey.logins(), 0, "prompt=consent is not prompt=login");
}

fn consent_denied(ctx: &Ctx) {
    let client = ctx.register("consent-denied", Auth::Basic, json!({}));
    let request = ctx.request(&client, "openid");
    let journey = ctx.browser().authorize(ctx, &request, Act { consent: Consent::Deny, ..Act::allow(&ctx.alice) });
    assert_eq!(ctx.expect_error(&journey, &request, &["access_denied"]), "access_denied");
}

fn consent_required(ctx: &Ctx) {
    let known = ctx.register("consent-required-known", Auth::Basic, json!({}));
    let fresh = ctx.register("consent-required-new", Auth::Basic, json!({}));
    let (ua, _) = ctx.logged_in(&known, &ctx.alice, "openid");
    let request = ctx.request(&fresh, "openid").set("prompt", "none");
    let journey = ua.authorize(ctx, &request, Act::nobody());
    assert_eq!(ctx.expect_error(&journey, &request, &["consent_required"]), "consent_required");
}

fn skip_consent(ctx: &Ctx) {
    let client = ctx.register("skip-consent", Auth::Basic, json!({"skip_consent": true}));
    let (ua, tokens) = ctx.logged_in(&client, &ctx.alice, "openid email");
    assert_eq!(tokens.journey.consents(), 0, "a skip_consent client got a consent page");
    assert_eq!(tokens.journey.logins(), 1);
    // Inside the SSO session the code comes at once, with no page; PKCE still binds it.
    let again = ctx.code_flow(&ua, &client, &ctx.request(&client, "openid").with_pkce(), &ctx.alice);
    assert_eq!(again.journey.pages, vec![], "SSO + skip_consent showed a page");
}

/// What Chromium sends when the page's script has disabled the pressed button: the consent form
/// without `decision`. It may be refused, but the browser's SSO session must go on working.
fn consent_post_without_decision(ctx: &Ctx) {
    let consenting = ctx.register("consent-no-decision", Auth::Basic, json!({}));
    let first_party = ctx.register("consent-no-decision-first-party", Auth::Basic, json!({"skip_consent": true}));
    let ua = ctx.browser();
    let request = ctx.request(&consenting, "openid");
    let journey = ua.authorize(ctx, &request, Act { consent: Consent::Stop, ..Act::allow(&ctx.alice) });
    let page = journey.stopped.as_ref().unwrap();
    let consent = forms(page).into_iter().find(|form| form.has_button("decision", "allow")).expect("a consent form");
    let refused = ua.submit(&consent, &[], None);
    assert!(refused.status == 400 || refused.is_redirect(), "{}", refused.describe());
    let tokens = ctx.code_flow(&ua, &first_party, &ctx.request(&first_party, "openid").with_pkce(), &ctx.alice);
    assert_eq!(tokens.journey.pages, vec![], "SSO after a refused consent post showed {:?}", tokens.journey.pages);
}

fn sso_cookie_and_sid(ctx: &Ctx) {
    let first = ctx.register("sso-first", Auth::Basic, json!({}));
    let second = ctx.register("sso-second", Auth::Post, json!({}));
    let (ua, one) = ctx.logged_in(&first, &ctx.alice, "openid");
    // Which cookie is the session is the OP's business; the contract: it is HttpOnly and Lax.
    let cookies = ua.set_cookies.borrow().clone();
    let session = cookies.iter().filter(|cookie| !cookie.contains("csrf")).find(|cookie| {
        let lower = cookie.to_ascii_lowercase();
        lower.contains("httponly") && lower.contains("samesite=lax") && !lower.contains("max-age=0")
    });
    assert!(session.is_some(), "contract: an HttpOnly SameSite=Lax SSO cookie; the OP set {cookies:?}");
    let two = ctx.code_flow(&ua, &second, &ctx.request(&second, "openid"), &ctx.alice);
    assert_eq!(two.journey.logins(), 0, "another client in the same browser needs no password");
    assert_eq!(one.id_claims["sid"], two.id_claims["sid"], "contract: the SSO session is the sid of its tokens");
    assert_eq!(one.id_claims["auth_time"], two.id_claims["auth_time"]);
}

fn id_token_hint_of_another_user(ctx: &Ctx) {
    let client = ctx.register("hint-another-user", Auth::Basic, json!({}));
    let (_, bobs) = ctx.logged_in(&client, &ctx.bob, "openid");
    let (ua, _) = ctx.logged_in(&client, &ctx.alice, "openid");
    let silent = ctx.request(&client, "openid").set("prompt", "none").set("id_token_hint", &bobs.id_token);
    let journey = ua.authorize(ctx, &silent, Act::nobody());
    ctx.expect_error(&journey, &silent, &["login_required", "interaction_required"]);
    let request = ctx.request(&client, "openid").set("id_token_hint", &bobs.id_token);
    let tokens = ctx.code_flow(&ua, &client, &request, &ctx.bob);
    assert_eq!(tokens.journey.logins(), 1, "contract: a hint for another user asks for the password again");
    assert_eq!(tokens.id_claims["sub"], bobs.id_claims["sub"]);
}

fn id_token_es256_client(ctx: &Ctx) {
    let client = ctx.register("es256-client", Auth::Basic, json!({"id_token_signed_response_alg": "ES256"}));
    let (_, tokens) = ctx.logged_in(&client, &ctx.alice, "openid");
    assert_eq!(decode_jwt(&tokens.id_token).0["alg"], "ES256");
}

// ---------------------------------------------------------------------------------------------
// The token endpoint's other rules

fn code_bound_to_client_and_redirect_uri(ctx: &Ctx) {
    let second_uri = format!("{RP_ORIGIN}/bound/{}/second", random_token(6));
    let owner = ctx.register("code-owner", Auth::Basic, json!({}));
    let other = ctx.register("code-thief", Auth::Basic, json!({}));
    let two_uris = ctx.register(
        "code-two-uris",
        Auth::Basic,
        json!({"redirect_uris": [format!("{RP_ORIGIN}/bound/{}/first", random_token(6)), second_uri]}),
    );
    let ua = ctx.browser();
    let request = ctx.request(&owner, "openid");
    let journey = ua.authorize(ctx, &request, Act::allow(&ctx.alice));
    let code = ctx.expect_code(&journey, &request);
    let stolen = ctx
        .token(&other, &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", &owner.redirect_uri)]);
    stolen.expect_error(400, "invalid_grant", "another client's code");

    let request = ctx.request(&two_uris, "openid");
    let journey = ua.authorize(ctx, &request, Act::allow(&ctx.alice));
    let code = ctx.expect_code(&journey, &request);
    let moved =
        ctx.token(&two_uris, &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", &second_uri)]);
    moved.expect_error(400, "invalid_grant", "a code redeemed with another registered redirect_uri");
}

fn code_redeemed_concurrently(ctx: &Ctx) {
    let client = ctx.register("code-race", Auth::Basic, json!({}));
    let request = ctx.request(&client, "openid");
    let journey = ctx.browser().authorize(ctx, &request, Act::allow(&ctx.alice));
    let code = ctx.expect_code(&journey, &request);
    let barrier = Arc::new(Barrier::new(8));
    let statuses: Vec<u16> = thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                let (client, code) = (&client, &code);
                scope.spawn(move || {
                    barrier.wait();
                    let form = [
                        ("grant_type", "authorization_code"),
                        ("code", code.as_str()),
                        ("redirect_uri", &client.redirect_uri),
                    ];
                    ctx.token(client, &form).status
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "exactly one redemption wins: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 7, "{statuses:?}");
}

fn client_authentication_failures(ctx: &Ctx) {
    let client = ctx.register("client-auth-failures", Auth::Basic, json!({}));
    let token_endpoint = ctx.endpoint("token_endpoint");
    let form = [("grant_type", "authorization_code"), ("code", "x"), ("redirect_uri", client.redirect_uri.as_str())];
    let wrong_basic =
        Answer::of(http().post(&token_endpoint).header("Authorization", basic_auth(&client.id, "wrong")).form(&form));
    wrong_basic.expect_error(401, "invalid_client", "a wrong secret in Basic");
    assert!(wrong_basic.header("www-authenticate").is_some_and(|h| h.starts_with("Basic")), "WWW-Authenticate: Basic");
    let mut post_form = form.to_vec();
    post_form.extend([("client_id", client.id.as_str()), ("client_secret", "wrong")]);
    Answer::of(http().post(&token_endpoint).form(&post_form)).expect_error(
        401,
        "invalid_client",
        "a wrong secret in the body",
    );
    let mut unknown = form.to_vec();
    unknown.extend([("client_id", "no-such-client"), ("client_secret", "whatever")]);
    Answer::of(http().post(&token_endpoint).form(&unknown)).expect_error(401, "invalid_client", "an unknown client");
    let mut no_secret = form.to_vec();
    no_secret.push(("client_id", client.id.as_str()));
    Answer::of(http().post(&token_endpoint).form(&no_secret)).expect_error(
        401,
        "invalid_client",
        "a confidential client without its secret",
    );
}

fn refresh_scope_narrowing(ctx: &Ctx) {
    let client = ctx.register("refresh-narrowing", Auth::Basic, json!({}));
    let request = ctx.request(&client, "openid email offline_access").set("prompt", "consent");
    let tokens = ctx.code_flow(&ctx.browser(), &client, &request, &ctx.alice);
    let refresh = tokens.refresh_token.unwrap();
    let wider = ctx.token(
        &client,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("scope", "openid email offline_access profile"),
        ],
    );
    if wider.status == 200 {
        ctx.warn("a refresh asking for a scope never granted (profile) succeeded; RFC 6749 §6 says invalid_scope");
    } else {
        wider.expect_error(400, "invalid_scope", "a refresh asking for more than was granted");
    }
    let narrow = ctx.token(
        &client,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("scope", "openid offline_access")],
    );
    assert_eq!(narrow.status, 200, "a narrowing refresh: {}", narrow.text);
    let scope = narrow.json["scope"].as_str().unwrap();
    assert!(!scope.split(' ').any(|s| s == "email"), "narrowed scope still has email: {scope}");
    let userinfo = ctx.userinfo_get(narrow.json["access_token"].as_str().unwrap());
    assert!(userinfo.json.get("email").is_none(), "email in UserInfo after narrowing: {}", userinfo.json);
}

// ---------------------------------------------------------------------------------------------
// The relying-party libraries

/// Runs a driver script that prints `[{"name", "ok", "error"?, "seconds"?}]` on stdout.
fn run_driver(prefix: &str, mut command: Command) -> Vec<StepResult> {
    let started = Instant::now();
    let output = command.current_dir(repository()).env("PATH", tool_path()).output();
    let output = match output {
        Ok(output) => output,
        Err(err) => return vec![StepResult { name: prefix.to_owned(), seconds: 0.0, failure: Some(format!("{err}")) }],
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let parsed: Option<Vec<Value>> = stdout.lines().rev().find_map(|line| serde_json::from_str(line).ok());
    let Some(checks) = parsed else {
        return vec![StepResult {
            name: prefix.to_owned(),
            seconds: started.elapsed().as_secs_f64(),
            failure: Some(format!("exited {} without a report\nstdout: {stdout}\nstderr: {stderr}", output.status)),
        }];
    };
    let mut results: Vec<StepResult> = checks
        .iter()
        .map(|check| StepResult {
            name: format!("{prefix}: {}", check["name"].as_str().unwrap_or("?")),
            seconds: check["seconds"].as_f64().unwrap_or(0.0),
            failure: (check["ok"] != true).then(|| check["error"].as_str().unwrap_or("failed").to_owned()),
        })
        .collect();
    if !output.status.success() && results.iter().all(|result| result.failure.is_none()) {
        results.push(StepResult {
            name: prefix.to_owned(),
            seconds: started.elapsed().as_secs_f64(),
            failure: Some(format!("exited {}: {stderr}", output.status)),
        });
    }
    results
}

fn client_json(client: &Client) -> Value {
    json!({
        "client_id": client.id,
        "client_secret": client.secret,
        "client_name": client.name,
        "redirect_uri": client.redirect_uri,
        "post_logout_redirect_uri": client.post_logout_redirect_uri,
    })
}

fn driver_failure(name: &str, started: Instant, failure: String) -> Vec<StepResult> {
    vec![StepResult { name: name.to_owned(), seconds: started.elapsed().as_secs_f64(), failure: Some(failure) }]
}

fn register_for_driver(ctx: &Ctx, prefix: &str, clients: &[(&str, Auth, Value)]) -> Result<Value, String> {
    let registered = catch_unwind(AssertUnwindSafe(|| {
        let mut all = serde_json::Map::new();
        for (name, auth, extra) in clients {
            all.insert(
                (*name).to_owned(),
                client_json(&ctx.register(&format!("{prefix}-{name}"), *auth, extra.clone())),
            );
        }
        Value::Object(all)
    }));
    registered
        .map_err(|payload| payload.downcast::<String>().map(|s| *s).unwrap_or_else(|_| "registration failed".into()))
}

/// openid-client (v6): discovery, PKCE code flows for a public and two confidential clients,
/// its own ID token validation, UserInfo, refresh, end-session.
fn openid_client_driver(ctx: &Ctx) -> Vec<StepResult> {
    let started = Instant::now();
    let clients = register_for_driver(
        ctx,
        "openid-client",
        &[("public", Auth::Public, json!({})), ("basic", Auth::Basic, json!({})), ("post", Auth::Post, json!({}))],
    );
    let clients = match clients {
        Ok(clients) => clients,
        Err(failure) => return driver_failure("openid-client", started, failure),
    };
    let config = json!({"issuer": ctx.issuer, "email": ctx.node_user.email, "password": ctx.node_user.password, "clients": clients});
    let mut command = Command::new("node");
    command.arg("tests/rp_openid_client.mjs").arg(config.to_string());
    run_driver("openid-client", command)
}

/// Authlib's OAuth2Session with PKCE, ID token checked with joserfc (Authlib's JOSE library).
fn authlib_driver(ctx: &Ctx) -> Vec<StepResult> {
    let started = Instant::now();
    let clients =
        register_for_driver(ctx, "authlib", &[("basic", Auth::Basic, json!({})), ("public", Auth::Public, json!({}))]);
    let clients = match clients {
        Ok(clients) => clients,
        Err(failure) => return driver_failure("authlib", started, failure),
    };
    let config = json!({"issuer": ctx.issuer, "email": ctx.python_user.email, "password": ctx.python_user.password, "clients": clients});
    // The virtual environment scripts/toolchain.sh made (EDGEID_PYTHON_VENV when it made it elsewhere).
    let venv = std::env::var_os("EDGEID_PYTHON_VENV").map_or_else(|| repository().join(".tools/python"), Into::into);
    let python = venv.join("bin/python");
    let mut command = Command::new(python);
    command.arg("tests/rp_authlib.py").arg(config.to_string());
    run_driver("authlib", command)
}

/// Headless Chromium through the hosted login and consent pages.
fn browser_driver(ctx: &Ctx) -> Vec<StepResult> {
    let started = Instant::now();
    // The script serves the relying parties' callback on this port (a real loopback server, so
    // the browser follows every redirect to it as it would to a real RP).
    let rp_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let redirect = |name: &str| json!([format!("http://127.0.0.1:{rp_port}/{name}/callback")]);
    let clients = register_for_driver(
        ctx,
        "chromium",
        &[
            (
                "consenting",
                Auth::Basic,
                json!({"client_name": "Chromium Photo Gallery", "redirect_uris": redirect("consenting")}),
            ),
            (
                "first_party",
                Auth::Basic,
                json!({"client_name": "Chromium First Party", "skip_consent": true, "redirect_uris": redirect("first-party")}),
            ),
            ("denied", Auth::Basic, json!({"client_name": "Chromium Denied App", "redirect_uris": redirect("denied")})),
        ],
    );
    let clients = match clients {
        Ok(clients) => clients,
        Err(failure) => return driver_failure("chromium", started, failure),
    };
    let artifacts = repository().join("test-artifacts/browser");
    let _ = std::fs::create_dir_all(&artifacts);
    let config = json!({"issuer": ctx.issuer, "email": ctx.browser_user.email, "password": ctx.browser_user.password,
        "clients": clients, "artifacts": artifacts, "rp_port": rp_port});
    let mut command = Command::new("node");
    command.arg("tests/rp_browser.mjs").arg(config.to_string());
    let results = run_driver("chromium", command);
    let mut results = results;
    for screenshot in ["10-provider-login", "20-consent", "30-callback"] {
        if !artifacts.join(format!("{screenshot}.png")).exists() {
            results.push(StepResult {
                name: format!("chromium: screenshot {screenshot}"),
                seconds: 0.0,
                failure: Some("missing".into()),
            });
        }
    }
    results
}

#[test]
fn the_user_agents_html_reading() {
    let html = r#"<!doctype html><html><head><style>a<b{}</style><script nonce="x">if (a < b) {}</script></head>
        <body><!-- <form action="/nope"> --><p>Allow &quot;Photo&nbsp;App&quot; to read your email?</p>
        <form method="post" action="/consent?x=1&amp;y=2"><input type="hidden" name="csrf" value="t&amp;k">
        <input type=hidden name=interaction value=abc><input name="email" type="email" value="a@b.c">
        <input type="checkbox" name="remember"><button name="decision" value="allow">Allow</button>
        <button type="submit" name='decision' value='deny'>Deny</button></form></body></html>"#;
    let page = Reply {
        url: Url::parse("http://127.0.0.1:8787/authorize").unwrap(),
        status: 200,
        headers: HeaderMap::new(),
        body: html.to_owned(),
        location: None,
    };
    let forms = forms(&page);
    assert_eq!(forms.len(), 1, "{forms:?}");
    let form = &forms[0];
    assert_eq!(form.action.as_str(), "http://127.0.0.1:8787/consent?x=1&y=2");
    assert_eq!(form.method, "post");
    assert_eq!(
        form.fields,
        vec![("csrf".into(), "t&k".into()), ("interaction".into(), "abc".into()), ("email".into(), "a@b.c".into())]
    );
    assert!(form.has_button("decision", "allow") && form.has_button("decision", "deny"));
    assert!(!form.has_input("password") && form.has_input("remember"));
    assert!(visible_text(html).contains("Allow \"Photo App\" to read your email?"), "{}", visible_text(html));
    assert_eq!(
        query_of("http://x/cb?code=a%20b&state=s"),
        vec![("code".into(), "a b".into()), ("state".into(), "s".into())]
    );
}
