//! The worker's configuration: raw strings from the environment in, a validated `Config` out.
//! Every name here is a row of the configuration table in API.md.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::domain::email::Email;
use crate::domain::password::HashParams;
use crate::domain::rate_limit::{BucketKeyer, BucketKind, Limit};
use crate::domain::redirect::AllowedRedirect;
use crate::domain::signing::SigningAlg;

/// Mail delivery back-ends, chosen by `MAIL_PROVIDER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailProvider {
    /// The Resend HTTP API (`POST {MAIL_API_URL}/emails`).
    Resend,
    /// Postmark (`POST {MAIL_API_URL}/email`).
    Postmark,
    /// SendGrid v3 (`POST {MAIL_API_URL}/v3/mail/send`).
    Sendgrid,
    /// Mailgun (`POST {MAIL_API_URL}/v3/{MAILGUN_DOMAIN}/messages`, form-encoded).
    Mailgun,
    /// Writes each message, link included, to the worker's log: for local development.
    Log,
}

impl MailProvider {
    fn default_api_url(self) -> &'static str {
        match self {
            MailProvider::Resend | MailProvider::Log => "https://api.resend.com",
            MailProvider::Postmark => "https://api.postmarkapp.com",
            MailProvider::Sendgrid => "https://api.sendgrid.com",
            MailProvider::Mailgun => "https://api.mailgun.net",
        }
    }
}

/// `MAIL_FROM`: `Name <address>` or a bare address, checked once here so that nothing odd
/// reaches a mail header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub name: Option<String>,
    pub address: String,
}

impl Sender {
    fn parse(raw: &str) -> Result<Sender, String> {
        let (name, address) = match raw.split_once('<') {
            Some((name, rest)) => {
                let address = rest.strip_suffix('>').ok_or("has a `<` without a closing `>` at the end")?;
                let name = name.trim();
                (if name.is_empty() { None } else { Some(name.to_owned()) }, address)
            }
            None => (None, raw),
        };
        if let Some(name) = &name {
            if name.chars().any(|c| c.is_control() || "\"<>,;:@()[]\\".contains(c)) {
                return Err("has a display name with a special character".to_owned());
            }
        }
        // Sender addresses are ASCII in practice; the recipient rules apply otherwise.
        let address = Email::parse(address).map_err(|err| format!("does not hold a valid address: {err}"))?;
        Ok(Sender { name, address: address.as_str().to_owned() })
    }

    /// The `From` header value.
    pub fn header_value(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} <{}>", self.address),
            None => self.address.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MailConfig {
    pub provider: MailProvider,
    /// Base URL of the provider's API, without a trailing slash.
    pub api_url: String,
    pub api_key: Option<String>,
    pub from: Sender,
    /// Mailgun's sending domain (`MAILGUN_DOMAIN`, by default the domain of `MAIL_FROM`).
    pub mailgun_domain: String,
    /// Delivery attempts before a mail goes to the dead-letter queue.
    pub max_attempts: u32,
    /// Delay before the second attempt; it doubles for each further one, up to an hour.
    pub retry_base_seconds: u32,
}

/// The budgets of `RATE_LIMIT_*`; `None` where a budget is `off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    pub login_per_ip: Option<Limit>,
    pub login_per_account_network: Option<Limit>,
    pub login_per_account: Option<Limit>,
    pub mail_per_ip: Option<Limit>,
    pub mail_per_address: Option<Limit>,
    pub token_per_ip: Option<Limit>,
    pub code_per_account: Option<Limit>,
    pub code_per_ip: Option<Limit>,
    pub code_per_domain: Option<Limit>,
}

impl RateLimits {
    pub fn limit(&self, kind: BucketKind) -> Option<Limit> {
        match kind {
            BucketKind::LoginPerIp => self.login_per_ip,
            BucketKind::LoginPerAccountNetwork => self.login_per_account_network,
            BucketKind::LoginPerAccount => self.login_per_account,
            BucketKind::MailPerIp => self.mail_per_ip,
            BucketKind::MailPerAddress => self.mail_per_address,
            BucketKind::TokenPerIp => self.token_per_ip,
            BucketKind::CodePerAccount => self.code_per_account,
            BucketKind::CodePerIp => self.code_per_ip,
            BucketKind::CodePerDomain => self.code_per_domain,
        }
    }
}

/// Who may register clients at `POST /oauth/register` (`CLIENT_REGISTRATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRegistration {
    /// Only with `Authorization: Bearer CLIENT_REGISTRATION_TOKEN` (the default).
    Token,
    /// Anyone; such clients never skip consent. The token still marks an operator's client.
    Open,
    /// Nobody: `403 access_denied`.
    Off,
}

/// A bearer secret of the configuration (`CLIENT_REGISTRATION_TOKEN`, `OPERATOR_TOKEN`). Its
/// `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrationToken(pub String);

impl std::fmt::Debug for RegistrationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistrationToken(..)")
    }
}

/// What to do with a new password when the breached-password API cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreachCheck {
    /// No check at all.
    Off,
    /// Accept the password and log the miss: an outage of the API never blocks sign-ups.
    FailOpen,
    /// Refuse the password (`server_error`, nothing written) until the API answers.
    FailClosed,
}

#[derive(Debug, Clone)]
pub struct BreachedPasswordConfig {
    pub check: BreachCheck,
    /// Base URL of a Have I Been Pwned compatible range API (`GET {url}/range/{prefix}`).
    pub api_url: String,
    pub timeout_ms: u32,
}

/// How the hosted pages and emails look (`PRODUCT_NAME`, `LOGO_URL`, `ACCENT_COLOR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branding {
    pub product_name: String,
    /// An https (or http for local development) image URL.
    pub logo_url: Option<String>,
    /// `#rrggbb`.
    pub accent_color: String,
}

/// Validated configuration. There is deliberately no `Default`: a worker either has a complete,
/// checked configuration or answers every request with `server_error` and logs why.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `iss` of every token, without a trailing slash.
    pub issuer: String,
    /// The `aud` of access tokens: the API (resource server) they are for.
    pub access_token_audience: String,
    /// The client id of the first-party app that `/v1/login` and the refresh grant serve: the
    /// access token's `client_id` and the ID token's `aud`. Never the access token's audience,
    /// so that an ID token cannot pass an audience check meant for access tokens.
    pub first_party_client_id: String,
    pub access_token_ttl_seconds: i64,
    /// Sliding lifetime: each rotation issues a refresh token good for this long.
    pub refresh_token_ttl_seconds: i64,
    /// Absolute lifetime of a session, however often its refresh token rotates.
    pub session_absolute_ttl_seconds: i64,
    /// How long a rotated refresh token may be presented again and get the same successor
    /// (a client whose response was lost), instead of counting as reuse.
    pub refresh_token_reuse_grace_seconds: i64,
    pub signing_alg: SigningAlg,
    /// Seals the private parts of the signing keys in D1 (secret `KEY_ENCRYPTION_KEY`).
    pub key_encryption_key: KeyEncryptionKey,
    /// The key-encryption key being rotated out (secret `KEY_ENCRYPTION_KEY_PREVIOUS`): keys
    /// sealed under it still open, and the cron re-seals them under `key_encryption_key`.
    pub key_encryption_key_previous: Option<KeyEncryptionKey>,
    /// How long a signing key signs before the next one takes over.
    pub key_rotation_interval_seconds: i64,
    /// How long a new key is published in the JWKS before it signs: longer than any cache of
    /// the JWKS may keep it.
    pub key_publication_lead_seconds: i64,
    pub require_email_verification: bool,
    pub mail: MailConfig,
    /// Origin of the links inside emails, without a trailing slash.
    pub public_url: String,
    pub rate_limits: RateLimits,
    pub breached_passwords: BreachedPasswordConfig,
    /// Argon2id parameters for new hashes; stored hashes with weaker ones are upgraded at login.
    pub password_hash: HashParams,
    pub branding: Branding,
    /// Where the hosted pages may send a browser after success (`REDIRECT_ALLOWLIST`); the
    /// first entry is also the "back to the app" link of their result pages.
    pub redirect_allowlist: Vec<AllowedRedirect>,
    /// `BENCH_ENDPOINTS=true`: the measurement routes of the benchmark command (local only).
    pub bench_endpoints: bool,
    /// `BENCH_D1_DELAY_MS`: milliseconds the D1 adapter waits before every batch, so that the
    /// latency run (`bench/latency.mjs`) turns each sequential round trip into a delay it can
    /// see. Only with `bench_endpoints`; 0 otherwise.
    pub bench_d1_delay_ms: u32,
    /// Names the rate-limit buckets (keyed from `KEY_ENCRYPTION_KEY`).
    pub bucket_keyer: BucketKeyer,
    /// Accounts whose email was never verified are deleted by the cron this long after sign-up
    /// (`UNVERIFIED_ACCOUNT_TTL_DAYS`), so an address somebody else signed up is free again.
    pub unverified_account_ttl_seconds: i64,
    /// `CLIENT_REGISTRATION` and the secret `CLIENT_REGISTRATION_TOKEN` (at least 32
    /// characters; without it, registration with a token is impossible).
    pub client_registration: ClientRegistration,
    pub client_registration_token: Option<RegistrationToken>,
    /// The secret `OPERATOR_TOKEN` (at least 32 characters): the bearer token of the operator's
    /// endpoints (`/operator/shards`); without it they do not exist.
    pub operator_token: Option<RegistrationToken>,
    /// `RATE_LIMIT_PREFILTER`: whether requests that touch D1 first pass the Workers Rate
    /// Limiting binding `RATE_LIMITER` (where the runtime has it).
    pub rate_limit_prefilter: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not set")]
    Missing { name: &'static str },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// One-time tokens' lifetimes are part of the contract (API.md §Accounts), not configuration.
pub const VERIFY_EMAIL_TOKEN_TTL_SECONDS: i64 = 24 * 60 * 60;
pub const RESET_PASSWORD_TOKEN_TTL_SECONDS: i64 = 60 * 60;

/// The 256-bit key-encryption key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyEncryptionKey(pub [u8; 32]);

impl std::fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyEncryptionKey(..)")
    }
}

const PWNED_PASSWORDS_API_URL: &str = "https://api.pwnedpasswords.com";

/// Default budgets, chosen so that people never meet them and scripts always do (an IPv6 /48
/// gets `SLASH_48_FACTOR` times each per-client budget):
/// - logins: a hundred attempts per client per 15 minutes (offices share an address); ten
///   failures per account from one network per 15 minutes, so the owner's own network keeps
///   its budget whatever strangers elsewhere do; a hundred failures per account per hour from
///   everywhere together (NIST SP 800-63B §5.2.2 allows up to 100 consecutive failures);
/// - mail: thirty mail-sending requests per client per hour, five mails to one mailbox per hour;
/// - one-time tokens: sixty submissions per client per 15 minutes;
/// - short codes: a code dies after 5 wrong tries; twenty wrong codes per account per day
///   across resends, thirty per client per hour (480 per /48) and a thousand per email domain
///   per hour — more than one /48's, so no single site can spend a domain's budget — so a /48
///   guessing at many addresses verifies about one in ninety days at most (the link, with its
///   256 bits, is the way for volume).
const DEFAULT_LIMITS: [(&str, &str); 9] = [
    ("RATE_LIMIT_LOGIN_PER_IP", "100/900"),
    ("RATE_LIMIT_LOGIN_PER_ACCOUNT_NETWORK", "10/900"),
    ("RATE_LIMIT_LOGIN_PER_ACCOUNT", "100/3600"),
    ("RATE_LIMIT_MAIL_PER_IP", "30/3600"),
    ("RATE_LIMIT_MAIL_PER_ADDRESS", "5/3600"),
    ("RATE_LIMIT_TOKEN_PER_IP", "60/900"),
    ("RATE_LIMIT_CODE_PER_ACCOUNT", "20/86400"),
    ("RATE_LIMIT_CODE_PER_IP", "30/3600"),
    ("RATE_LIMIT_CODE_PER_DOMAIN", "1000/3600"),
];

impl Config {
    /// How long caches may keep the JWKS: five minutes, or a quarter of the publication lead if
    /// that is shorter, so a new key reaches every cache before it signs.
    pub fn jwks_max_age_seconds(&self) -> i64 {
        (self.key_publication_lead_seconds / 4).min(300)
    }

    /// The algorithms edgeid signs with, each with its own active key: `SIGNING_ALG` (access
    /// tokens and first-party ID tokens) first, then RS256 when it differs, the default
    /// `id_token_signed_response_alg` of OIDC Registration §2 that every relying party may ask
    /// for.
    pub fn signing_algorithms(&self) -> Vec<SigningAlg> {
        let mut algorithms = vec![self.signing_alg];
        if self.signing_alg != SigningAlg::Rs256 {
            algorithms.push(SigningAlg::Rs256);
        }
        algorithms
    }

    /// Reads and checks every variable through `lookup` (the adapter passes `env.var`/`env.secret`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &'static str| lookup(name).map(|value| value.trim().to_owned()).filter(|v| !v.is_empty());

        let issuer = http_base_url("ISSUER", &get("ISSUER").ok_or(ConfigError::Missing { name: "ISSUER" })?)?;
        let public_url = match get("PUBLIC_URL") {
            Some(url) => http_base_url("PUBLIC_URL", &url)?,
            None => issuer.clone(),
        };
        let access_token_audience = get("ACCESS_TOKEN_AUDIENCE").unwrap_or_else(|| "edgeid".to_owned());
        let first_party_client_id = get("FIRST_PARTY_CLIENT_ID").unwrap_or_else(|| "edgeid-first-party".to_owned());
        if first_party_client_id.len() > 255 || !first_party_client_id.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(ConfigError::Invalid {
                name: "FIRST_PARTY_CLIENT_ID",
                reason: "a client id is 1 to 255 visible ASCII characters, without spaces".to_owned(),
            });
        }
        if first_party_client_id == access_token_audience {
            return Err(ConfigError::Invalid {
                name: "FIRST_PARTY_CLIENT_ID",
                reason: "it must differ from ACCESS_TOKEN_AUDIENCE: ID tokens and access tokens get distinct audiences"
                    .to_owned(),
            });
        }
        let access_token_ttl_seconds =
            seconds("ACCESS_TOKEN_TTL_SECONDS", get("ACCESS_TOKEN_TTL_SECONDS"), 900, 60..=86_400)?;
        let refresh_token_ttl_seconds =
            seconds("REFRESH_TOKEN_TTL_SECONDS", get("REFRESH_TOKEN_TTL_SECONDS"), 2_592_000, 300..=31_536_000)?;
        let session_absolute_ttl_seconds =
            seconds("SESSION_ABSOLUTE_TTL_SECONDS", get("SESSION_ABSOLUTE_TTL_SECONDS"), 7_776_000, 300..=63_072_000)?;
        let refresh_token_reuse_grace_seconds =
            seconds("REFRESH_TOKEN_REUSE_GRACE_SECONDS", get("REFRESH_TOKEN_REUSE_GRACE_SECONDS"), 10, 0..=300)?;
        let signing_alg = match get("SIGNING_ALG").as_deref() {
            None | Some("ES256") => SigningAlg::Es256,
            Some("EdDSA") => SigningAlg::EdDsa,
            Some("RS256") => SigningAlg::Rs256,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "SIGNING_ALG",
                    reason: format!("{other:?} is not one of ES256, EdDSA, RS256"),
                })
            }
        };
        let key_encryption_key = parse_key_encryption_key(
            "KEY_ENCRYPTION_KEY",
            &get("KEY_ENCRYPTION_KEY").ok_or(ConfigError::Missing { name: "KEY_ENCRYPTION_KEY" })?,
        )?;
        let key_encryption_key_previous = match get("KEY_ENCRYPTION_KEY_PREVIOUS") {
            None => None,
            Some(raw) => {
                let previous = parse_key_encryption_key("KEY_ENCRYPTION_KEY_PREVIOUS", &raw)?;
                // The same key twice is a rotation that was never made: say so, rather than
                // let the operator remove the old key believing the keys were re-sealed.
                if previous == key_encryption_key {
                    return Err(ConfigError::Invalid {
                        name: "KEY_ENCRYPTION_KEY_PREVIOUS",
                        reason: "is KEY_ENCRYPTION_KEY itself: put the new key in KEY_ENCRYPTION_KEY".to_owned(),
                    });
                }
                Some(previous)
            }
        };
        let key_rotation_interval_seconds = seconds(
            "KEY_ROTATION_INTERVAL_SECONDS",
            get("KEY_ROTATION_INTERVAL_SECONDS"),
            2_592_000,
            86_400..=31_536_000,
        )?;
        // The JWKS max-age and the isolates' key cache are derived from the lead (a quarter of
        // it at most), so any lead keeps new keys visible before they sign; at most half the
        // interval, so each key signs for a while before the next is published.
        let key_publication_lead_seconds = seconds(
            "KEY_PUBLICATION_LEAD_SECONDS",
            get("KEY_PUBLICATION_LEAD_SECONDS"),
            86_400,
            4..=key_rotation_interval_seconds / 2,
        )?;
        let require_email_verification = match get("REQUIRE_EMAIL_VERIFICATION").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "REQUIRE_EMAIL_VERIFICATION",
                    reason: format!("{other:?} is neither true nor false"),
                })
            }
        };
        let provider = match get("MAIL_PROVIDER").as_deref() {
            None | Some("resend") => MailProvider::Resend,
            Some("postmark") => MailProvider::Postmark,
            Some("sendgrid") => MailProvider::Sendgrid,
            Some("mailgun") => MailProvider::Mailgun,
            Some("log") => MailProvider::Log,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "MAIL_PROVIDER",
                    reason: format!("{other:?} is not one of resend, postmark, sendgrid, mailgun, log"),
                })
            }
        };
        let api_url = match get("MAIL_API_URL") {
            Some(url) => http_base_url("MAIL_API_URL", &url)?,
            None => provider.default_api_url().to_owned(),
        };
        // `log` writes every mail, one-time links included, to the worker's log, and opens the
        // dev mailbox: never on a public HTTPS deployment.
        if provider == MailProvider::Log && !(is_loopback(&public_url) && is_loopback(&issuer)) {
            return Err(ConfigError::Invalid {
                name: "MAIL_PROVIDER",
                reason: "log is for local development (ISSUER and PUBLIC_URL on this machine); a deployment needs a real provider".to_owned(),
            });
        }
        let api_key = get("MAIL_API_KEY");
        if provider != MailProvider::Log && api_key.is_none() {
            return Err(ConfigError::Missing { name: "MAIL_API_KEY" });
        }
        let from = Sender::parse(&get("MAIL_FROM").unwrap_or_else(|| "edgeid <no-reply@localhost>".to_owned()))
            .map_err(|reason| ConfigError::Invalid { name: "MAIL_FROM", reason })?;
        let mailgun_domain = match get("MAILGUN_DOMAIN") {
            Some(domain) => {
                Email::parse(&format!("postmaster@{domain}")).map(|_| domain.to_ascii_lowercase()).map_err(|_| {
                    ConfigError::Invalid { name: "MAILGUN_DOMAIN", reason: format!("{domain:?} is not a domain") }
                })?
            }
            None => from.address.rsplit_once('@').map(|(_, domain)| domain.to_owned()).unwrap_or_default(),
        };
        let max_attempts = bounded("MAIL_MAX_ATTEMPTS", get("MAIL_MAX_ATTEMPTS"), 10, 1..=50)?;
        let retry_base_seconds = bounded("MAIL_RETRY_BASE_SECONDS", get("MAIL_RETRY_BASE_SECONDS"), 30, 1..=3600)?;
        // Every retry must fall well inside the provider's idempotency window (24 h at Resend),
        // or a retry after a lost answer could send a mail twice.
        let retry_window = crate::mail::retry_window_seconds(&MailConfig {
            provider,
            api_url: String::new(),
            api_key: None,
            from: from.clone(),
            mailgun_domain: String::new(),
            max_attempts,
            retry_base_seconds,
        });
        if retry_window > crate::mail::IDEMPOTENCY_WINDOW_SECONDS - 3600 {
            return Err(ConfigError::Invalid {
                name: "MAIL_MAX_ATTEMPTS",
                reason: format!(
                    "{max_attempts} attempts {retry_base_seconds} s apart, doubling to an hour, take {} h: more than the 23 h that fit the provider's 24 h idempotency window",
                    retry_window / 3600
                ),
            });
        }

        let limit = |name: &'static str| -> Result<Option<Limit>, ConfigError> {
            let default = DEFAULT_LIMITS.iter().find(|(known, _)| *known == name).map_or("off", |(_, value)| value);
            let raw = get(name).unwrap_or_else(|| default.to_owned());
            Limit::parse(&raw).map_err(|err| ConfigError::Invalid { name, reason: err.to_string() })
        };
        let rate_limits = RateLimits {
            login_per_ip: limit("RATE_LIMIT_LOGIN_PER_IP")?,
            login_per_account_network: limit("RATE_LIMIT_LOGIN_PER_ACCOUNT_NETWORK")?,
            login_per_account: limit("RATE_LIMIT_LOGIN_PER_ACCOUNT")?,
            mail_per_ip: limit("RATE_LIMIT_MAIL_PER_IP")?,
            mail_per_address: limit("RATE_LIMIT_MAIL_PER_ADDRESS")?,
            token_per_ip: limit("RATE_LIMIT_TOKEN_PER_IP")?,
            code_per_account: limit("RATE_LIMIT_CODE_PER_ACCOUNT")?,
            code_per_ip: limit("RATE_LIMIT_CODE_PER_IP")?,
            code_per_domain: limit("RATE_LIMIT_CODE_PER_DOMAIN")?,
        };
        // The ceiling on wrong codes must leave a fresh code (and a resend's) its five tries.
        if let Some(per_account) = rate_limits.code_per_account {
            if per_account.count <= crate::domain::short_code::MAX_WRONG_TRIES {
                return Err(ConfigError::Invalid {
                    name: "RATE_LIMIT_CODE_PER_ACCOUNT",
                    reason: format!(
                        "{per_account} must allow more than one code's {} wrong tries",
                        crate::domain::short_code::MAX_WRONG_TRIES
                    ),
                });
            }
        }
        let check = match get("BREACHED_PASSWORD_CHECK").as_deref() {
            None | Some("fail-open") => BreachCheck::FailOpen,
            Some("fail-closed") => BreachCheck::FailClosed,
            Some("off") => BreachCheck::Off,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "BREACHED_PASSWORD_CHECK",
                    reason: format!("{other:?} is not one of fail-open, fail-closed, off"),
                })
            }
        };
        let breached_passwords = BreachedPasswordConfig {
            check,
            api_url: match get("BREACHED_PASSWORD_API_URL") {
                Some(url) => http_base_url("BREACHED_PASSWORD_API_URL", &url)?,
                None => PWNED_PASSWORDS_API_URL.to_owned(),
            },
            timeout_ms: bounded("BREACHED_PASSWORD_TIMEOUT_MS", get("BREACHED_PASSWORD_TIMEOUT_MS"), 1000, 50..=1000)?,
        };
        let default_hash = HashParams::OWASP_MINIMUM;
        let password_hash = HashParams {
            memory_kib: bounded(
                "ARGON2_MEMORY_KIB",
                get("ARGON2_MEMORY_KIB"),
                default_hash.memory_kib,
                19_456..=HashParams::MAX.memory_kib,
            )?,
            iterations: bounded("ARGON2_ITERATIONS", get("ARGON2_ITERATIONS"), default_hash.iterations, 2..=16)?,
            parallelism: bounded("ARGON2_PARALLELISM", get("ARGON2_PARALLELISM"), default_hash.parallelism, 1..=8)?,
        };

        let product_name = get("PRODUCT_NAME").unwrap_or_else(|| "edgeid".to_owned());
        if product_name.chars().count() > 60 || product_name.chars().any(char::is_control) {
            return Err(ConfigError::Invalid {
                name: "PRODUCT_NAME",
                reason: "is longer than 60 characters or has control characters".to_owned(),
            });
        }
        let logo_url = match get("LOGO_URL") {
            Some(url) => Some(
                AllowedRedirect::parse(&url)
                    .map_err(|err| ConfigError::Invalid { name: "LOGO_URL", reason: err.to_string() })?
                    .as_str()
                    .to_owned(),
            ),
            None => None,
        };
        let accent_color = get("ACCENT_COLOR").unwrap_or_else(|| "#1f4fd1".to_owned());
        let is_hex_color = accent_color.len() == 7
            && accent_color.starts_with('#')
            && accent_color[1..].chars().all(|c| c.is_ascii_hexdigit());
        if !is_hex_color {
            return Err(ConfigError::Invalid {
                name: "ACCENT_COLOR",
                reason: format!("{accent_color:?} is not #rrggbb"),
            });
        }
        // A signed-in browser goes back to these: an HTTPS deployment only allows HTTPS targets
        // (and this machine's), so a person is never sent from HTTPS to plain HTTP.
        let redirect_allowlist = get("REDIRECT_ALLOWLIST")
            .unwrap_or_default()
            .split([',', ' '])
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let invalid = |reason: String| ConfigError::Invalid { name: "REDIRECT_ALLOWLIST", reason };
                let allowed = AllowedRedirect::parse(entry).map_err(|err| invalid(err.to_string()))?;
                if public_url.starts_with("https://") && entry.starts_with("http://") && !is_loopback(entry) {
                    return Err(invalid(format!("{entry:?} is plain HTTP on an HTTPS deployment")));
                }
                Ok(allowed)
            })
            .collect::<Result<Vec<_>, _>>()?;

        let bench_endpoints = match get("BENCH_ENDPOINTS").as_deref() {
            None | Some("false") => false,
            Some("true") if is_loopback(&public_url) && is_loopback(&issuer) => true,
            Some("true") => {
                return Err(ConfigError::Invalid {
                    name: "BENCH_ENDPOINTS",
                    reason: "the benchmark routes are for local runs (ISSUER and PUBLIC_URL on this machine)"
                        .to_owned(),
                })
            }
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "BENCH_ENDPOINTS",
                    reason: format!("{other:?} is neither true nor false"),
                })
            }
        };

        // A benchmark setting, like the routes: a deployment that waited before every batch would
        // only be slower, so anything but a local benchmark run is refused outright.
        let bench_d1_delay_ms = match get("BENCH_D1_DELAY_MS") {
            None => 0,
            Some(_) if !bench_endpoints => {
                return Err(ConfigError::Invalid {
                    name: "BENCH_D1_DELAY_MS",
                    reason: "the delay before each D1 batch is for benchmark runs only (BENCH_ENDPOINTS=true)"
                        .to_owned(),
                })
            }
            raw => bounded("BENCH_D1_DELAY_MS", raw, 0_u32, 0..=1000)?,
        };

        let unverified_account_ttl_seconds =
            bounded("UNVERIFIED_ACCOUNT_TTL_DAYS", get("UNVERIFIED_ACCOUNT_TTL_DAYS"), 7_i64, 1..=365)? * 86_400;
        let rate_limit_prefilter = match get("RATE_LIMIT_PREFILTER").as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "RATE_LIMIT_PREFILTER",
                    reason: format!("{other:?} is neither on nor off"),
                })
            }
        };

        let client_registration = match get("CLIENT_REGISTRATION").as_deref() {
            None | Some("token") => ClientRegistration::Token,
            Some("open") => ClientRegistration::Open,
            Some("off") => ClientRegistration::Off,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "CLIENT_REGISTRATION",
                    reason: format!("{other:?} is not one of token, open, off"),
                })
            }
        };
        let bearer_secret = |name: &'static str| match get(name) {
            Some(token) if token.len() >= 32 && token.chars().all(|c| c.is_ascii_graphic()) => {
                Ok(Some(RegistrationToken(token)))
            }
            Some(_) => {
                Err(ConfigError::Invalid { name, reason: "must be at least 32 printable ASCII characters".to_owned() })
            }
            None => Ok(None),
        };
        let client_registration_token = bearer_secret("CLIENT_REGISTRATION_TOKEN")?;
        let operator_token = bearer_secret("OPERATOR_TOKEN")?;

        Ok(Config {
            client_registration,
            client_registration_token,
            operator_token,
            bucket_keyer: BucketKeyer::derive(&key_encryption_key.0),
            unverified_account_ttl_seconds,
            rate_limit_prefilter,
            issuer,
            access_token_audience,
            first_party_client_id,
            access_token_ttl_seconds,
            refresh_token_ttl_seconds,
            session_absolute_ttl_seconds,
            refresh_token_reuse_grace_seconds,
            signing_alg,
            key_encryption_key,
            key_encryption_key_previous,
            key_rotation_interval_seconds,
            key_publication_lead_seconds,
            require_email_verification,
            mail: MailConfig { provider, api_url, api_key, from, mailgun_domain, max_attempts, retry_base_seconds },
            public_url,
            rate_limits,
            breached_passwords,
            password_hash,
            branding: Branding { product_name, logo_url, accent_color: accent_color.to_ascii_lowercase() },
            redirect_allowlist,
            bench_endpoints,
            bench_d1_delay_ms,
        })
    }
}

/// A key-encryption key: 32 bytes in base64url (padding tolerated).
fn parse_key_encryption_key(name: &'static str, raw: &str) -> Result<KeyEncryptionKey, ConfigError> {
    let bytes =
        URL_SAFE_NO_PAD.decode(raw.trim_end_matches('=')).ok().and_then(|bytes| <[u8; 32]>::try_from(bytes).ok());
    bytes
        .map(KeyEncryptionKey)
        .ok_or_else(|| ConfigError::Invalid { name, reason: "is not 32 bytes in base64url".to_owned() })
}

/// A number of seconds within `bounds`, or `default` when unset.
fn seconds(
    name: &'static str,
    raw: Option<String>,
    default: i64,
    bounds: std::ops::RangeInclusive<i64>,
) -> Result<i64, ConfigError> {
    bounded(name, raw, default, bounds)
}

/// Whether a base URL's host is this machine (local development).
fn is_loopback(url: &str) -> bool {
    let authority = url.split_once("://").map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
    is_loopback_host(authority)
}

/// Whether `host[:port]` names this machine: `localhost` (and `*.localhost`), 127.0.0.0/8, `[::1]`.
pub fn is_loopback_host(authority: &str) -> bool {
    if authority.starts_with("[::1]") {
        return true;
    }
    let host = authority.split(':').next().unwrap_or_default().to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// A whole number within `bounds`, or `default` when unset.
fn bounded<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    name: &'static str,
    raw: Option<String>,
    default: T,
    bounds: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError> {
    let Some(raw) = raw else { return Ok(default) };
    match raw.parse::<T>() {
        Ok(value) if bounds.contains(&value) => Ok(value),
        _ => Err(ConfigError::Invalid {
            name,
            reason: format!("{raw:?} is not a whole number in {}..={}", bounds.start(), bounds.end()),
        }),
    }
}

/// An `http(s)://host[:port][/path]` URL with no query, fragment or user info, trailing slash
/// removed. Issuers may carry a path (a worker mounted under a route).
fn http_base_url(name: &'static str, raw: &str) -> Result<String, ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid { name, reason: format!("{raw:?} {reason}") };
    let rest = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
        .ok_or_else(|| invalid("is not an http(s) URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || raw.contains(['?', '#', ' ']) || raw.chars().any(char::is_control) || host.contains('@') {
        return Err(invalid("is not a plain http(s) URL"));
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KEK: (&str, &str) = ("KEY_ENCRYPTION_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn rs256_is_signed_beside_signing_alg_and_once_when_it_is_signing_alg() {
        let base = [("ISSUER", "http://127.0.0.1:8787"), ("MAIL_PROVIDER", "log"), KEK];
        for (alg, expected) in [
            ("EdDSA", vec![SigningAlg::EdDsa, SigningAlg::Rs256]),
            ("RS256", vec![SigningAlg::Rs256]),
            ("ES256", vec![SigningAlg::Es256, SigningAlg::Rs256]),
        ] {
            let mut vars = base.to_vec();
            vars.push(("SIGNING_ALG", alg));
            assert_eq!(config(&vars).unwrap().signing_algorithms(), expected, "{alg}");
        }
    }

    #[test]
    fn dev_defaults() {
        let config = config(&[("ISSUER", "http://127.0.0.1:8787/"), ("MAIL_PROVIDER", "log"), KEK]).unwrap();
        assert_eq!(config.issuer, "http://127.0.0.1:8787");
        assert_eq!(config.public_url, "http://127.0.0.1:8787");
        assert_eq!(config.access_token_audience, "edgeid");
        assert_eq!(config.first_party_client_id, "edgeid-first-party");
        assert_eq!(config.access_token_ttl_seconds, 900);
        assert_eq!(config.refresh_token_ttl_seconds, 2_592_000);
        assert_eq!(config.session_absolute_ttl_seconds, 7_776_000);
        assert_eq!(config.refresh_token_reuse_grace_seconds, 10);
        assert_eq!(config.signing_alg, SigningAlg::Es256);
        assert_eq!(config.signing_algorithms(), [SigningAlg::Es256, SigningAlg::Rs256]);
        assert!(config.require_email_verification);
        assert_eq!(config.mail.provider, MailProvider::Log);
        assert_eq!(config.mail.api_url, "https://api.resend.com");
        assert_eq!(
            config.mail.from,
            Sender { name: Some("edgeid".to_owned()), address: "no-reply@localhost".to_owned() }
        );
        assert_eq!(config.mail.from.header_value(), "edgeid <no-reply@localhost>");
        assert_eq!(config.mail.mailgun_domain, "localhost");
        assert_eq!((config.mail.max_attempts, config.mail.retry_base_seconds), (10, 30));
        assert_eq!(config.key_encryption_key, KeyEncryptionKey([0; 32]));
        assert_eq!(config.key_rotation_interval_seconds, 2_592_000);
        assert_eq!(config.key_publication_lead_seconds, 86_400);
        assert_eq!(format!("{:?}", config.key_encryption_key), "KeyEncryptionKey(..)");
        assert_eq!(config.key_encryption_key_previous, None);
        let per = |count, period_seconds| Some(Limit { count, period_seconds });
        assert_eq!(
            config.rate_limits,
            RateLimits {
                login_per_ip: per(100, 900),
                login_per_account_network: per(10, 900),
                login_per_account: per(100, 3600),
                mail_per_ip: per(30, 3600),
                mail_per_address: per(5, 3600),
                token_per_ip: per(60, 900),
                code_per_account: per(20, 86400),
                code_per_ip: per(30, 3600),
                code_per_domain: per(1000, 3600),
            }
        );
        assert_eq!(config.breached_passwords.check, BreachCheck::FailOpen);
        assert_eq!(config.breached_passwords.api_url, "https://api.pwnedpasswords.com");
        assert_eq!(config.breached_passwords.timeout_ms, 1000);
        assert_eq!(config.password_hash, HashParams::OWASP_MINIMUM);
        assert_eq!(config.branding.product_name, "edgeid");
        assert_eq!(config.branding.accent_color, "#1f4fd1");
        assert!(config.redirect_allowlist.is_empty());
    }

    #[test]
    fn every_provider_has_its_own_api_by_default() {
        for (provider, url) in [
            ("resend", "https://api.resend.com"),
            ("postmark", "https://api.postmarkapp.com"),
            ("sendgrid", "https://api.sendgrid.com"),
            ("mailgun", "https://api.mailgun.net"),
        ] {
            let config = config(&[
                ("ISSUER", "http://x"),
                ("MAIL_PROVIDER", provider),
                ("MAIL_API_KEY", "k"),
                ("MAIL_FROM", "no-reply@mg.example.com"),
                KEK,
            ])
            .unwrap();
            assert_eq!(config.mail.api_url, url);
            assert_eq!(config.mail.from.header_value(), "no-reply@mg.example.com");
            assert_eq!(config.mail.mailgun_domain, "mg.example.com");
            let without_key = self::config(&[("ISSUER", "http://x"), ("MAIL_PROVIDER", provider), KEK]);
            assert_eq!(without_key.unwrap_err(), ConfigError::Missing { name: "MAIL_API_KEY" });
        }
    }

    #[test]
    fn the_log_provider_is_for_local_development_only() {
        let with = |url: &str, provider: &str| {
            config(&[("ISSUER", url), ("MAIL_PROVIDER", provider), ("MAIL_API_KEY", "k"), KEK]).map(|_| ())
        };
        assert!(with("https://id.example.com", "log").is_err());
        assert!(with("http://id.example.com", "log").is_err(), "plain HTTP is no excuse");
        let bench = |url: &str| config(&[("ISSUER", url), ("MAIL_PROVIDER", "log"), ("BENCH_ENDPOINTS", "true"), KEK]);
        assert!(bench("http://127.0.0.1:8787").is_ok_and(|config| config.bench_endpoints));
        assert!(bench("https://id.example.com").is_err());
        assert!(with("https://id.example.com", "resend").is_ok());
        // Tokens go to allow-listed pages: never over plain HTTP from an HTTPS deployment.
        let allow = |list: &str| {
            config(&[("ISSUER", "https://id.example.com"), ("MAIL_API_KEY", "k"), ("REDIRECT_ALLOWLIST", list), KEK])
                .map(|config| config.redirect_allowlist.len())
        };
        assert_eq!(allow("https://app.example.com/ http://localhost:3000/"), Ok(2));
        assert!(allow("http://app.example.com/").is_err());
        for local in ["http://127.0.0.1:8787", "https://localhost:8787", "https://id.localhost", "http://[::1]:8787"] {
            assert!(with(local, "log").is_ok(), "{local}");
        }
    }

    #[test]
    fn the_d1_delay_is_a_benchmark_setting_only() {
        let local = [("ISSUER", "http://127.0.0.1:8787"), ("MAIL_PROVIDER", "log"), KEK];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = local.to_vec();
            pairs.extend_from_slice(extra);
            config(&pairs)
        };
        assert_eq!(with(&[]).map(|config| config.bench_d1_delay_ms), Ok(0));
        let bench = ("BENCH_ENDPOINTS", "true");
        assert_eq!(with(&[bench, ("BENCH_D1_DELAY_MS", "50")]).map(|config| config.bench_d1_delay_ms), Ok(50));
        assert_eq!(with(&[bench, ("BENCH_D1_DELAY_MS", "0")]).map(|config| config.bench_d1_delay_ms), Ok(0));
        let refused = |result: Result<Config, ConfigError>| match result {
            Err(ConfigError::Invalid { name, reason }) => Some((name, reason)),
            _ => None,
        };
        // Without the benchmark routes, any value is refused, and says why.
        for extra in [
            &[("BENCH_D1_DELAY_MS", "50")][..],
            &[("BENCH_D1_DELAY_MS", "0")],
            &[("BENCH_ENDPOINTS", "false"), ("BENCH_D1_DELAY_MS", "50")],
        ] {
            let (name, reason) = refused(with(extra)).unwrap();
            assert_eq!(name, "BENCH_D1_DELAY_MS", "{extra:?}");
            assert!(reason.contains("BENCH_ENDPOINTS=true"), "{reason}");
        }
        for value in ["-1", "1001", "fifty", "50ms"] {
            let (name, _) = refused(with(&[bench, ("BENCH_D1_DELAY_MS", value)])).unwrap();
            assert_eq!(name, "BENCH_D1_DELAY_MS", "{value}");
        }
        // On a public HTTPS issuer the routes themselves are refused, so the delay never applies.
        let public =
            [("ISSUER", "https://id.example.com"), ("MAIL_API_KEY", "k"), KEK, bench, ("BENCH_D1_DELAY_MS", "50")];
        assert!(config(&public).is_err());
        let public = [("ISSUER", "https://id.example.com"), ("MAIL_API_KEY", "k"), KEK, ("BENCH_D1_DELAY_MS", "50")];
        assert_eq!(refused(config(&public)).map(|(name, _)| name), Some("BENCH_D1_DELAY_MS"));
    }

    #[test]
    fn limits_and_checks_can_be_tuned_or_switched_off() {
        let config = config(&[
            ("ISSUER", "http://127.0.0.1"),
            ("MAIL_PROVIDER", "log"),
            KEK,
            ("RATE_LIMIT_LOGIN_PER_ACCOUNT", "off"),
            ("RATE_LIMIT_MAIL_PER_ADDRESS", "2/60"),
            ("BREACHED_PASSWORD_CHECK", "fail-closed"),
            ("BREACHED_PASSWORD_API_URL", "http://127.0.0.1:9999/"),
            ("ARGON2_MEMORY_KIB", "65536"),
        ])
        .unwrap();
        assert_eq!(config.rate_limits.login_per_account, None);
        assert_eq!(config.rate_limits.limit(BucketKind::MailPerAddress), Some(Limit { count: 2, period_seconds: 60 }));
        assert_eq!(config.breached_passwords.check, BreachCheck::FailClosed);
        assert_eq!(config.breached_passwords.api_url, "http://127.0.0.1:9999");
        assert_eq!(config.password_hash.memory_kib, 65_536);
    }

    #[test]
    fn a_previous_key_encryption_key_is_read_alongside_the_current_one() {
        let previous = ("KEY_ENCRYPTION_KEY_PREVIOUS", "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE");
        let config = config(&[("ISSUER", "http://127.0.0.1:8787"), ("MAIL_PROVIDER", "log"), KEK, previous]).unwrap();
        assert_eq!(config.key_encryption_key, KeyEncryptionKey([0; 32]));
        assert_eq!(config.key_encryption_key_previous, Some(KeyEncryptionKey([1; 32])));
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let cases: &[(&[(&str, &str)], ConfigError)] = &[
            (&[], ConfigError::Missing { name: "ISSUER" }),
            (&[("ISSUER", "http://x"), ("MAIL_PROVIDER", "log")], ConfigError::Missing { name: "KEY_ENCRYPTION_KEY" }),
            (
                &[("ISSUER", "http://x"), ("MAIL_PROVIDER", "resend"), KEK],
                ConfigError::Missing { name: "MAIL_API_KEY" },
            ),
            (&[("ISSUER", "http://x"), KEK], ConfigError::Missing { name: "MAIL_API_KEY" }),
        ];
        for (pairs, expected) in cases {
            assert_eq!(&config(pairs).unwrap_err(), expected);
        }
        for (name, value) in [
            ("ISSUER", "ftp://example.com"),
            ("ISSUER", "https://example.com/?q"),
            ("PUBLIC_URL", "example.com"),
            ("FIRST_PARTY_CLIENT_ID", "edgeid"),
            ("FIRST_PARTY_CLIENT_ID", "two words"),
            ("ACCESS_TOKEN_TTL_SECONDS", "-5"),
            ("ACCESS_TOKEN_TTL_SECONDS", "ten"),
            ("REFRESH_TOKEN_TTL_SECONDS", "1"),
            ("REFRESH_TOKEN_REUSE_GRACE_SECONDS", "3600"),
            ("SESSION_ABSOLUTE_TTL_SECONDS", "0"),
            ("SIGNING_ALG", "HS256"),
            ("SIGNING_ALG", "none"),
            ("SIGNING_ALG", "RS512"),
            ("REQUIRE_EMAIL_VERIFICATION", "yes"),
            ("MAIL_PROVIDER", "smtp"),
            ("MAIL_API_URL", "http://user@127.0.0.1"),
            ("MAIL_FROM", "edgeid <no-reply@localhost"),
            ("MAIL_FROM", "Evil, Inc. <no-reply@example.com>"),
            ("MAIL_FROM", "no-reply@example.com\r\nBcc: x@example.com"),
            ("MAIL_FROM", "not an address"),
            ("MAILGUN_DOMAIN", "mg example.com"),
            ("MAIL_MAX_ATTEMPTS", "0"),
            ("ACCENT_COLOR", "red"),
            ("ARGON2_MEMORY_KIB", "262144"),
            ("BENCH_ENDPOINTS", "yes"),
            ("ACCENT_COLOR", "#12345g"),
            ("LOGO_URL", "javascript:alert(1)"),
            ("REDIRECT_ALLOWLIST", "https://app.example.com/, //evil.example"),
            ("MAIL_RETRY_BASE_SECONDS", "86400"),
            ("MAIL_MAX_ATTEMPTS", "30"),
            ("KEY_ENCRYPTION_KEY", "c2hvcnQ"),
            ("KEY_ENCRYPTION_KEY_PREVIOUS", "c2hvcnQ"),
            ("KEY_ENCRYPTION_KEY_PREVIOUS", KEK.1),
            ("KEY_ROTATION_INTERVAL_SECONDS", "60"),
            ("KEY_PUBLICATION_LEAD_SECONDS", "3"),
            ("KEY_PUBLICATION_LEAD_SECONDS", "2592000"),
            ("RATE_LIMIT_LOGIN_PER_IP", "10"),
            ("RATE_LIMIT_MAIL_PER_ADDRESS", "0/60"),
            ("RATE_LIMIT_CODE_PER_ACCOUNT", "5/3600"),
            ("UNVERIFIED_ACCOUNT_TTL_DAYS", "0"),
            ("RATE_LIMIT_PREFILTER", "maybe"),
            ("CLIENT_REGISTRATION", "closed"),
            ("CLIENT_REGISTRATION_TOKEN", "short"),
            ("BREACHED_PASSWORD_CHECK", "maybe"),
            ("BREACHED_PASSWORD_API_URL", "api.pwnedpasswords.com"),
            ("BREACHED_PASSWORD_TIMEOUT_MS", "5000"),
            ("ARGON2_MEMORY_KIB", "4096"),
            ("ARGON2_ITERATIONS", "1"),
            ("ARGON2_PARALLELISM", "64"),
        ] {
            let mut pairs = vec![("ISSUER", "http://127.0.0.1:8787"), ("MAIL_PROVIDER", "log"), KEK];
            pairs.retain(|(k, _)| *k != name);
            pairs.push((name, value));
            assert!(matches!(config(&pairs), Err(ConfigError::Invalid { name: n, .. }) if n == name), "{name}={value}");
        }
    }
}
