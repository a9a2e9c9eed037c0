//! The traits the core needs from the outside world: a SQL database, a key-value store,
//! randomness and an HTTP client. The Cloudflare adapter implements them with D1, Workers KV,
//! `crypto.getRandomValues` and `fetch`; the tests with SQLite, a map, a seeded generator and a
//! recorder.

use std::collections::BTreeMap;

use crate::domain::signing::SigningAlg;

/// A value bound to or read from a SQL statement. D1 and SQLite share these three types.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Integer(i64),
    Text(String),
}

impl From<i64> for SqlValue {
    fn from(value: i64) -> Self {
        SqlValue::Integer(value)
    }
}

impl From<&str> for SqlValue {
    fn from(value: &str) -> Self {
        SqlValue::Text(value.to_owned())
    }
}

impl From<String> for SqlValue {
    fn from(value: String) -> Self {
        SqlValue::Text(value)
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(value: Option<T>) -> Self {
        value.map_or(SqlValue::Null, Into::into)
    }
}

/// One parameterised statement; parameters are `?1`, `?2`, … in `sql`.
#[derive(Debug, Clone)]
pub struct Statement {
    pub sql: &'static str,
    pub params: Vec<SqlValue>,
}

impl Statement {
    pub fn new(sql: &'static str, params: impl IntoIterator<Item = SqlValue>) -> Statement {
        Statement { sql, params: params.into_iter().collect() }
    }
}

/// A result row by column name.
pub type Row = BTreeMap<String, SqlValue>;

/// What one statement of a batch produced.
#[derive(Debug, Clone, Default)]
pub struct StatementOutcome {
    pub rows: Vec<Row>,
    /// Rows inserted, updated or deleted.
    pub changes: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("database error: {0}")]
pub struct DatabaseError(pub String);

/// How [`DatabaseError::moving`] starts: what the API answers `503` (try again) rather than
/// `500`.
const MOVING: &str = "user bucket moving: ";

impl DatabaseError {
    /// A user bucket is being moved between shards (`store::routing`): its requests wait for
    /// the move, a second or so.
    pub fn moving(bucket: crate::domain::shard::UserBucket) -> DatabaseError {
        DatabaseError(format!("{MOVING}{bucket} is between shards"))
    }

    /// Buckets were being moved while a walk over every shard read them (`flows::user_walk`).
    pub fn moving_buckets() -> DatabaseError {
        DatabaseError(format!("{MOVING}buckets moved while every shard was read"))
    }

    pub fn is_moving(&self) -> bool {
        self.0.starts_with(MOVING)
    }
}

/// A SQL database with D1's semantics: a batch runs as one transaction, all or nothing.
// Workers are single-threaded and their futures are not `Send`: no `Send` bounds here.
#[allow(async_fn_in_trait)]
pub trait Database {
    async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<StatementOutcome>, DatabaseError>;
}

#[derive(Debug, thiserror::Error)]
#[error("key-value store error: {0}")]
pub struct KeyValueError(pub String);

/// A key-value store with Workers KV's semantics: eventually consistent (a write is seen at once
/// where it was made and within a minute or so elsewhere, and a read may be that old), so it
/// only ever holds what may be stale: the signing-key snapshot (`keyring`), never anything that
/// must be consistent (ARCHITECTURE.md).
// Single-threaded, like `Database`: no `Send` bounds.
#[allow(async_fn_in_trait)]
pub trait KeyValue {
    /// The value under `key`; `None` if there is none.
    async fn get(&self, key: &str) -> Result<Option<String>, KeyValueError>;

    /// Replaces the value under `key`.
    async fn put(&self, key: &str, value: &str) -> Result<(), KeyValueError>;
}

#[derive(Debug, thiserror::Error)]
#[error("the random number generator failed: {0}")]
pub struct EntropyError(pub String);

#[derive(Debug, thiserror::Error)]
#[error("crypto operation failed: {0}")]
pub struct CryptoError(pub String);

/// Random bytes from a source (`crypto.getRandomValues` in the worker) taken a pool at a time,
/// for a platform where each call to the source costs more than the few bytes an id needs.
/// Every byte is handed out once and wiped from the pool as it goes; a request for more than
/// half a pool goes to the source directly. The source must write into the buffer it is given
/// and keep no copy (in the worker, getrandom 0.4 has `getRandomValues` write into wasm memory).
pub struct EntropyPool {
    bytes: [u8; EntropyPool::BYTES],
    /// Bytes of `bytes` handed out (and wiped) since the last refill: `BYTES` when empty.
    used: usize,
}

impl EntropyPool {
    const BYTES: usize = 256;

    pub const fn empty() -> EntropyPool {
        EntropyPool { bytes: [0; EntropyPool::BYTES], used: EntropyPool::BYTES }
    }

    /// Fills `buffer`, refilling the pool from `source` when it holds too few bytes.
    pub fn fill(
        &mut self,
        buffer: &mut [u8],
        source: impl FnOnce(&mut [u8]) -> Result<(), EntropyError>,
    ) -> Result<(), EntropyError> {
        if buffer.len() > EntropyPool::BYTES / 2 {
            return source(buffer);
        }
        if EntropyPool::BYTES - self.used < buffer.len() {
            source(&mut self.bytes)?;
            self.used = 0;
        }
        let taken = &mut self.bytes[self.used..self.used + buffer.len()];
        buffer.copy_from_slice(taken);
        taken.fill(0);
        self.used += buffer.len();
        Ok(())
    }
}

/// Cryptographically secure randomness, and signing in the platform's own crypto: in the
/// worker, WebCrypto, which runs natively in workerd (BoringSSL) — far faster than the same
/// algorithms compiled to wasm, and the only place RSA private-key operations may run (the
/// `rsa` crate has an unfixed timing advisory for them, RUSTSEC-2023-0071).
#[allow(async_fn_in_trait)]
pub trait Crypto {
    fn fill(&self, buffer: &mut [u8]) -> Result<(), EntropyError>;

    /// A new RSA-2048 key pair (public exponent 65537), as the JSON of its private JWK.
    async fn generate_rsa_key(&self) -> Result<Vec<u8>, CryptoError>;

    /// The JWS signature (RFC 7518 form: raw `r‖s` for ES256) of `message` with the private
    /// JWK `key`, made by the platform; `Ok(None)` when the platform does not sign `alg`, and
    /// the core signs in Rust instead (never for RS256). `kid` identifies the key, for
    /// implementations that cache imported keys.
    async fn sign_jws(
        &self,
        alg: SigningAlg,
        kid: &str,
        key: &[u8],
        message: &[u8],
    ) -> Result<Option<Vec<u8>>, CryptoError>;
}

/// An outgoing HTTP request, built by the core and carried out by the adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Give up (an `HttpError`) when the whole exchange takes longer than this.
    pub timeout_ms: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboundResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl OutboundResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(candidate, _)| candidate.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("http request failed: {0}")]
pub struct HttpError(pub String);

#[allow(async_fn_in_trait)]
pub trait HttpClient {
    async fn send(&self, request: OutboundRequest) -> Result<OutboundResponse, HttpError>;
}

/// For the core's unit tests: randomness from a closure, no platform signing (the core signs
/// ES256 and EdDSA itself; RSA is refused).
#[cfg(test)]
pub(crate) struct TestCrypto<F: Fn(&mut [u8])>(pub F);

#[cfg(test)]
impl<F: Fn(&mut [u8])> Crypto for TestCrypto<F> {
    fn fill(&self, buffer: &mut [u8]) -> Result<(), EntropyError> {
        (self.0)(buffer);
        Ok(())
    }

    async fn generate_rsa_key(&self) -> Result<Vec<u8>, CryptoError> {
        Err(CryptoError("no RSA in unit tests".to_owned()))
    }

    async fn sign_jws(&self, _: SigningAlg, _: &str, _: &[u8], _: &[u8]) -> Result<Option<Vec<u8>>, CryptoError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that writes 1, 2, 3, … (wrapping) across its calls.
    fn counting(next: &mut u8) -> impl FnMut(&mut [u8]) -> Result<(), EntropyError> + '_ {
        move |into: &mut [u8]| {
            for byte in into.iter_mut() {
                *next = next.wrapping_add(1);
                *byte = *next;
            }
            Ok(())
        }
    }

    #[test]
    fn the_entropy_pool_hands_each_byte_out_once_and_wipes_it() {
        let mut pool = EntropyPool::empty();
        let mut next = 0;
        let mut source = counting(&mut next);
        let mut seen = Vec::new();
        let mut refills = 0;
        // 16 ids of 32 bytes: two refills of the 256-byte pool, and every byte distinct in order.
        for _ in 0..16 {
            let mut id = [0u8; 32];
            pool.fill(&mut id, |into| {
                refills += 1;
                source(into)
            })
            .unwrap();
            seen.extend_from_slice(&id);
        }
        assert_eq!(refills, 2);
        assert_eq!(seen, (1..=512).map(|n| n as u8).collect::<Vec<_>>());
        // What was handed out is no longer in the pool.
        assert!(pool.bytes.iter().all(|&byte| byte == 0));
    }

    #[test]
    fn the_entropy_pool_refills_rather_than_split_a_request_and_passes_large_ones_through() {
        let mut pool = EntropyPool::empty();
        let mut next = 0u8;
        let mut source = |into: &mut [u8]| {
            into.fill({
                next += 1;
                next
            });
            Ok(())
        };
        let mut first = [0u8; 100];
        pool.fill(&mut first, &mut source).unwrap();
        let mut second = [0u8; 100];
        pool.fill(&mut second, &mut source).unwrap();
        // 56 bytes left: a third request of 100 takes a fresh pool, not the rest of the old one.
        let mut third = [0u8; 100];
        pool.fill(&mut third, &mut source).unwrap();
        assert_eq!((first[0], second[99], third[0]), (1, 1, 2));
        // More than half a pool comes from the source itself.
        let mut large = [0u8; 129];
        pool.fill(&mut large, &mut source).unwrap();
        assert!(large.iter().all(|&byte| byte == 3));
        // A failing source fails the request and hands out nothing it did not write.
        let mut pool = EntropyPool::empty();
        let mut id = [0u8; 16];
        let err = pool.fill(&mut id, |_| Err(EntropyError("no entropy".to_owned()))).unwrap_err();
        assert_eq!(err.0, "no entropy");
        assert_eq!(id, [0; 16]);
    }
}
