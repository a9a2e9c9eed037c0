//! Rate limits as budgets: "at most COUNT per SECONDS", enforced with the generic cell rate
//! algorithm (GCRA). A bucket is one number, its theoretical arrival time (TAT): a fresh bucket
//! admits COUNT requests at once, then one every SECONDS/COUNT. The store applies [`admit`]'s
//! arithmetic in one conditional upsert, so concurrent requests are counted exactly.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

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
    /// Login attempts from one client (its address, or its IPv6 /64; and its /48).
    LoginPerIp,
    /// Failed logins on one account from one client network (the account's email, registered
    /// or not, with the client's IPv4 address or IPv6 /48): a stranger's failures from
    /// elsewhere never spend the owner's.
    LoginPerAccountNetwork,
    /// Failed logins on one account from anywhere: the larger ceiling above the per-network
    /// budgets, so that an attacker with many networks still meets a bound.
    LoginPerAccount,
    /// Requests that may send mail (sign-up, resend, forgot) from one client.
    MailPerIp,
    /// Requests that may send mail to one mailbox (`local+tag@domain` counts as `local@domain`).
    MailPerAddress,
    /// Submissions of one-time tokens (verify email, reset password) from one client.
    TokenPerIp,
    /// Wrong short codes for one account (by email): a resend does not reset it.
    CodePerAccount,
    /// Wrong short codes from one client (its address, or its IPv6 /64; and its /48).
    CodePerIp,
    /// Wrong short codes for the addresses of one email domain, from anywhere.
    CodePerDomain,
}

impl BucketKind {
    fn tag(self) -> &'static str {
        match self {
            BucketKind::LoginPerIp => "login-ip",
            BucketKind::LoginPerAccountNetwork => "login-account-network",
            BucketKind::LoginPerAccount => "login-account",
            BucketKind::MailPerIp => "mail-ip",
            BucketKind::MailPerAddress => "mail-address",
            BucketKind::TokenPerIp => "token-ip",
            BucketKind::CodePerAccount => "code-account",
            BucketKind::CodePerIp => "code-ip",
            BucketKind::CodePerDomain => "code-domain",
        }
    }
}

/// How many times the budget of one IPv6 /64 an IPv6 /48 gets: a /48 is one site (a home, an
/// office, a campus) holding 65 536 /64s, so one attacker with a /48 cannot multiply a per-client
/// budget by rotating through its /64s, while the people of one site share a larger one.
pub const SLASH_48_FACTOR: u32 = 16;

/// The key that bucket names are made with (HMAC-SHA256, derived from `KEY_ENCRYPTION_KEY`):
/// a table of buckets says nothing about which addresses or emails were counted, and nobody
/// without the key can compute an address's bucket.
#[derive(Clone)]
pub struct BucketKeyer([u8; 32]);

impl fmt::Debug for BucketKeyer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BucketKeyer(..)")
    }
}

impl BucketKeyer {
    pub fn derive(key_encryption_key: &[u8; 32]) -> BucketKeyer {
        let key = crate::domain::sealing::derive_subkey(key_encryption_key, b"edgeid rate limits v1", b"bucket names");
        BucketKeyer(key)
    }

    /// The first 128 bits of HMAC-SHA256 over the kind's tag and `subject`, hex.
    fn name(&self, tag: &str, subject: &str) -> String {
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.0) else { return String::new() };
        mac.update(tag.as_bytes());
        mac.update(&[0]);
        mac.update(subject.as_bytes());
        base16ct::lower::encode_string(&mac.finalize().into_bytes()[..16])
    }
}

/// A bucket's key in the store: the kind and a keyed hash of what it counts, so neither
/// addresses nor emails are stored in the clear here.
#[derive(Clone, PartialEq, Eq)]
pub struct Bucket {
    pub kind: BucketKind,
    pub key: String,
}

impl Bucket {
    pub fn new(kind: BucketKind, subject: &str, keyer: &BucketKeyer) -> Bucket {
        Bucket { kind, key: format!("{}:{}", kind.tag(), keyer.name(kind.tag(), subject)) }
    }

    /// The bucket of a client network of [`client_networks`], under its own tag per width so
    /// that a /64 and a /48 never share a row.
    pub fn for_network(kind: BucketKind, network: &Network, keyer: &BucketKeyer) -> Bucket {
        let tag = match network.width {
            NetworkWidth::Client => kind.tag().to_owned(),
            NetworkWidth::Site => format!("{}/48", kind.tag()),
        };
        Bucket { kind, key: format!("{tag}:{}", keyer.name(&tag, &network.name)) }
    }

    /// The bucket of an account (by email) seen from one network: `KIND:ACCOUNT:NETWORK`, so
    /// that every bucket of one account shares the prefix [`Bucket::account_prefix`] (a reset
    /// clears them all).
    pub fn for_account_on_network(kind: BucketKind, email: &str, network: &Network, keyer: &BucketKeyer) -> Bucket {
        let network_hash = keyer.name(kind.tag(), &format!("network\0{}", network.name));
        Bucket { kind, key: format!("{}{network_hash}", Bucket::account_prefix(kind, email, keyer)) }
    }

    /// What the keys of [`Bucket::for_account_on_network`] for `email` begin with.
    pub fn account_prefix(kind: BucketKind, email: &str, keyer: &BucketKeyer) -> String {
        format!("{}:{}:", kind.tag(), keyer.name(kind.tag(), email))
    }
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// How wide a client network is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkWidth {
    /// What one client holds: an IPv4 address, or an IPv6 /64 (the smallest block an end site
    /// is usually given: one host can hold every address of its /64).
    Client,
    /// An IPv6 /48: one site.
    Site,
}

/// A client network as budgets count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub width: NetworkWidth,
    pub name: String,
}

/// The networks a client address belongs to, narrowest first: an IPv4 address alone (also an
/// IPv4-mapped IPv6 one); an IPv6 address as its /64 and its /48; anything else (a missing or
/// garbled address, which Cloudflare never sends) as one shared "unknown" client.
pub fn client_networks(client_ip: Option<&str>) -> Vec<Network> {
    let client = |name: String| Network { width: NetworkWidth::Client, name };
    match client_ip.map(str::trim).and_then(|ip| ip.parse::<std::net::IpAddr>().ok()) {
        Some(std::net::IpAddr::V4(v4)) => vec![client(v4.to_string())],
        Some(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => vec![client(v4.to_string())],
            None => {
                let s = v6.segments();
                vec![
                    client(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])),
                    Network { width: NetworkWidth::Site, name: format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2]) },
                ]
            }
        },
        None => vec![client("unknown".to_owned())],
    }
}

/// The widest network of a client: the one an account's per-network login budget counts.
pub fn widest_network(client_ip: Option<&str>) -> Network {
    let mut networks = client_networks(client_ip);
    networks.pop().unwrap_or(Network { width: NetworkWidth::Client, name: "unknown".to_owned() })
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

    fn names(client_ip: &str) -> Vec<String> {
        client_networks(Some(client_ip)).into_iter().map(|network| network.name).collect()
    }

    #[test]
    fn clients_are_counted_by_address_or_by_ipv6_slash_64_and_slash_48() {
        assert_eq!(names("203.0.113.7"), ["203.0.113.7"]);
        assert_eq!(names("2001:db8:1:2:3:4:5:6"), ["2001:db8:1:2::/64", "2001:db8:1::/48"]);
        assert_eq!(names("2001:db8:1:2:ffff::1"), ["2001:db8:1:2::/64", "2001:db8:1::/48"]);
        assert_eq!(names("::ffff:203.0.113.7"), ["203.0.113.7"]);
        assert_eq!(names("not an address"), ["unknown"]);
        assert_eq!(client_networks(None), [Network { width: NetworkWidth::Client, name: "unknown".into() }]);
        assert_eq!(widest_network(Some("2001:db8:1:2::9")).name, "2001:db8:1::/48");
        assert_eq!(widest_network(Some("203.0.113.7")).name, "203.0.113.7");
        let keyer = BucketKeyer::derive(&[1; 32]);
        let bucket = |kind, ip: &str| -> Vec<Bucket> {
            client_networks(Some(ip)).iter().map(|network| Bucket::for_network(kind, network, &keyer)).collect()
        };
        let a = bucket(BucketKind::LoginPerIp, "2001:db8:1:2::1");
        let b = bucket(BucketKind::LoginPerIp, "2001:db8:1:2::2");
        let c = bucket(BucketKind::MailPerIp, "2001:db8:1:2::2");
        let neighbour = bucket(BucketKind::LoginPerIp, "2001:db8:1:3::1");
        assert_eq!(a, b);
        assert_ne!(b, c, "each kind counts separately");
        assert_ne!(a[0], neighbour[0], "another /64 of the same /48 is another client");
        assert_eq!(a[1], neighbour[1], "but the same site");
        assert_ne!(a[0], a[1], "a /64 and its /48 never share a row");
        assert!(a.iter().all(|bucket| !bucket.key.contains("2001")), "addresses are not stored in the clear");
    }

    #[test]
    fn bucket_names_are_keyed() {
        let one = BucketKeyer::derive(&[1; 32]);
        let two = BucketKeyer::derive(&[2; 32]);
        let email = "alice@example.com";
        assert_eq!(
            Bucket::new(BucketKind::LoginPerAccount, email, &one),
            Bucket::new(BucketKind::LoginPerAccount, email, &one)
        );
        assert_ne!(
            Bucket::new(BucketKind::LoginPerAccount, email, &one),
            Bucket::new(BucketKind::LoginPerAccount, email, &two)
        );
        // Not the unkeyed SHA-256 anybody could compute from an address.
        use sha2::Digest;
        let unkeyed: String =
            Sha256::new().chain_update("login-account").chain_update([0]).chain_update(email).finalize()[..16]
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
        assert!(!Bucket::new(BucketKind::LoginPerAccount, email, &one).key.contains(&unkeyed));
        // Every per-network bucket of an account shares its prefix, and only its.
        let network = widest_network(Some("198.51.100.4"));
        let pair = Bucket::for_account_on_network(BucketKind::LoginPerAccountNetwork, email, &network, &one);
        assert!(pair.key.starts_with(&Bucket::account_prefix(BucketKind::LoginPerAccountNetwork, email, &one)));
        assert!(!pair.key.starts_with(&Bucket::account_prefix(
            BucketKind::LoginPerAccountNetwork,
            "bob@example.com",
            &one
        )));
    }
}
