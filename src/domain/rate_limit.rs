//! Rate limits as budgets: "at most COUNT per SECONDS", enforced with the generic cell rate
//! algorithm (GCRA). A bucket is one number, its theoretical arrival time (TAT): a fresh bucket
//! admits COUNT requests at once, then one every SECONDS/COUNT. The store applies [`admit`]'s
//! arithmetic in one conditional upsert, so concurrent requests are counted exactly.

use std::fmt;

use sha2::{Digest, Sha256};

/// A budget of `count` requests per `period_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub count: u32,
    pub period_seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not COUNT/SECONDS (e.g. 10/900) or off")]
pub struct LimitSyntaxError(pub String);

impl Limit {
    /// `COUNT/SECONDS` (both positive, e.g. `10/900`), or `off` for no limit.
    pub fn parse(raw: &str) -> Result<Option<Limit>, LimitSyntaxError> {
        let error = || LimitSyntaxError(raw.to_owned());
        if raw.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let (count, period) = raw.split_once('/').ok_or_else(error)?;
        let count: u32 = count.trim().parse().map_err(|_| error())?;
        let period_seconds: u32 = period.trim().parse().map_err(|_| error())?;
        // A million per second is no limit at all; anything longer than a year is a typo.
        if count == 0 || count > 1_000_000 || period_seconds == 0 || period_seconds > 31_536_000 {
            return Err(error());
        }
        Ok(Some(Limit { count, period_seconds }))
    }

    /// Milliseconds one request adds to the bucket (GCRA's emission interval T), rounded up
    /// so that rounding never admits more than `count` per period.
    pub fn cost_ms(&self) -> i64 {
        let count = i64::from(self.count);
        ((i64::from(self.period_seconds) * 1000 + count - 1) / count).max(1)
    }

    /// How far ahead of now the TAT may run (GCRA's tolerance τ): the whole period, so a fresh
    /// bucket admits `count` requests back to back.
    pub fn tolerance_ms(&self) -> i64 {
        i64::from(self.period_seconds) * 1000
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.period_seconds)
    }
}

/// What one request does to a bucket whose TAT is `tat_ms` (`None`: never used, or cleaned up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Admitted; the bucket's TAT becomes this.
    Admitted { new_tat_ms: i64 },
    /// Refused; the bucket is unchanged, and a request is admitted again after this many seconds.
    Refused { retry_after_seconds: i64 },
}

/// GCRA: the request is admitted if, after adding its cost, the TAT is at most the tolerance
/// ahead of now. This is the arithmetic of `store::take_from_buckets`, kept here for tests.
pub fn admit(limit: &Limit, tat_ms: Option<i64>, now_ms: i64) -> Admission {
    let new_tat_ms = tat_ms.unwrap_or(now_ms).max(now_ms) + limit.cost_ms();
    if new_tat_ms - limit.tolerance_ms() <= now_ms {
        Admission::Admitted { new_tat_ms }
    } else {
        Admission::Refused { retry_after_seconds: retry_after_seconds(limit, tat_ms.unwrap_or(now_ms), now_ms) }
    }
}

/// Whole seconds until a bucket at `tat_ms` admits one more request (at least 1).
pub fn retry_after_seconds(limit: &Limit, tat_ms: i64, now_ms: i64) -> i64 {
    let wait_ms = tat_ms + limit.cost_ms() - limit.tolerance_ms() - now_ms;
    ((wait_ms + 999) / 1000).max(1)
}

/// What a budget counts. Each kind is configured separately (`RATE_LIMIT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketKind {
    /// Login attempts from one client address.
    LoginPerIp,
    /// Failed login attempts on one account (by email, whether or not it exists).
    LoginPerAccount,
    /// Requests that may send mail (sign-up, resend, forgot) from one client address.
    MailPerIp,
    /// Requests that may send mail to one address, whoever makes them.
    MailPerAddress,
    /// Submissions of one-time tokens (verify email, reset password) from one client address.
    TokenPerIp,
    /// Wrong short codes for one account (by email): a resend does not reset it.
    CodePerAccount,
}

impl BucketKind {
    fn tag(self) -> &'static str {
        match self {
            BucketKind::LoginPerIp => "login-ip",
            BucketKind::LoginPerAccount => "login-account",
            BucketKind::MailPerIp => "mail-ip",
            BucketKind::MailPerAddress => "mail-address",
            BucketKind::TokenPerIp => "token-ip",
            BucketKind::CodePerAccount => "code-account",
        }
    }
}

/// A bucket's key in the store: the kind and a SHA-256 of what it counts, so neither addresses
/// nor emails are stored in the clear here.
#[derive(Clone, PartialEq, Eq)]
pub struct Bucket {
    pub kind: BucketKind,
    pub key: String,
}

impl Bucket {
    pub fn new(kind: BucketKind, subject: &str) -> Bucket {
        let digest = Sha256::new().chain_update(kind.tag()).chain_update([0]).chain_update(subject).finalize();
        let hex: String = digest[..16].iter().map(|byte| format!("{byte:02x}")).collect();
        Bucket { kind, key: format!("{}:{hex}", kind.tag()) }
    }

    /// The bucket of a client address. IPv6 clients are counted by /64, the smallest block an
    /// end site is usually given: one host can hold every address of its /64.
    pub fn for_client(kind: BucketKind, client_ip: Option<&str>) -> Bucket {
        Bucket::new(kind, &client_network(client_ip))
    }
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// An IPv4 address as it is, an IPv6 address as its /64, anything else (a missing or garbled
/// `CF-Connecting-IP`, which Cloudflare always sets) as one shared "unknown" client.
pub fn client_network(client_ip: Option<&str>) -> String {
    match client_ip.map(str::trim).and_then(|ip| ip.parse::<std::net::IpAddr>().ok()) {
        Some(std::net::IpAddr::V4(v4)) => v4.to_string(),
        Some(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let segments = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", segments[0], segments[1], segments[2], segments[3])
            }
        },
        None => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_parse(raw: &str, expected: Option<Option<(u32, u32)>>) {
        let parsed = Limit::parse(raw).ok().map(|limit| limit.map(|limit| (limit.count, limit.period_seconds)));
        assert_eq!(parsed, expected, "{raw:?}");
    }

    #[test]
    fn limits_parse_as_count_per_seconds_or_off() {
        check_parse("10/900", Some(Some((10, 900))));
        check_parse(" 5 / 60 ", Some(Some((5, 60))));
        check_parse("off", Some(None));
        check_parse("OFF", Some(None));
        for bad in ["", "10", "10/", "/900", "0/900", "10/0", "-1/900", "10/900/1", "ten/900", "10/31536001"] {
            check_parse(bad, None);
        }
    }

    /// Runs `requests` at the given instants (ms) and returns which were admitted.
    fn run(limit: &Limit, instants_ms: &[i64]) -> Vec<bool> {
        let mut tat = None;
        instants_ms
            .iter()
            .map(|&now| match admit(limit, tat, now) {
                Admission::Admitted { new_tat_ms } => {
                    tat = Some(new_tat_ms);
                    true
                }
                Admission::Refused { .. } => false,
            })
            .collect()
    }

    #[test]
    fn a_fresh_bucket_admits_the_whole_budget_at_once_then_refuses() {
        let limit = Limit { count: 5, period_seconds: 60 };
        assert_eq!(run(&limit, &[0; 7]), [true, true, true, true, true, false, false]);
    }

    #[test]
    fn the_budget_refills_one_request_per_interval() {
        let limit = Limit { count: 5, period_seconds: 60 };
        // Five at once, then one every 12 s.
        let mut instants = vec![0; 5];
        instants.extend([11_999, 12_000, 12_001, 24_000, 60_000, 60_000]);
        assert_eq!(run(&limit, &instants), [true, true, true, true, true, false, true, false, true, true, true]);
    }

    #[test]
    fn a_quiet_period_restores_the_whole_budget_and_no_more() {
        let limit = Limit { count: 3, period_seconds: 30 };
        let mut instants = vec![0; 3];
        instants.extend([3_600_000; 4]);
        assert_eq!(run(&limit, &instants), [true, true, true, true, true, true, false]);
    }

    #[test]
    fn retry_after_says_when_the_next_request_is_admitted() {
        let limit = Limit { count: 2, period_seconds: 60 };
        let tat = 60_000; // two requests at 0
        assert_eq!(admit(&limit, Some(tat), 0), Admission::Refused { retry_after_seconds: 30 });
        assert_eq!(admit(&limit, Some(tat), 29_500), Admission::Refused { retry_after_seconds: 1 });
        assert!(matches!(admit(&limit, Some(tat), 30_000), Admission::Admitted { .. }));
    }

    #[test]
    fn clients_are_counted_by_address_or_ipv6_slash_64() {
        assert_eq!(client_network(Some("203.0.113.7")), "203.0.113.7");
        assert_eq!(client_network(Some("2001:db8:1:2:3:4:5:6")), "2001:db8:1:2::/64");
        assert_eq!(client_network(Some("2001:db8:1:2:ffff::1")), "2001:db8:1:2::/64");
        assert_eq!(client_network(Some("::ffff:203.0.113.7")), "203.0.113.7");
        assert_eq!(client_network(Some("not an address")), "unknown");
        assert_eq!(client_network(None), "unknown");
        let a = Bucket::for_client(BucketKind::LoginPerIp, Some("2001:db8:1:2::1"));
        let b = Bucket::for_client(BucketKind::LoginPerIp, Some("2001:db8:1:2::2"));
        let c = Bucket::for_client(BucketKind::MailPerIp, Some("2001:db8:1:2::2"));
        assert_eq!(a, b);
        assert_ne!(b, c, "each kind counts separately");
        assert!(!a.key.contains("2001"), "addresses are not stored in the clear");
    }
}
