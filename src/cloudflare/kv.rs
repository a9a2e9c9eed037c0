//! Workers KV as the core's `KeyValue`: the binding `KV`, which holds the signing-key snapshot
//! and nothing else (ARCHITECTURE.md).

use worker::Env;

use crate::ports::{KeyValue, KeyValueError};

/// How long a KV location keeps a value it fetched (KV's `cacheTtl`, here its default and
/// least value): what `keyring::SNAPSHOT_MAX_AGE_SECONDS` allows for.
const CACHE_TTL_SECONDS: u64 = 60;

/// The KV namespace bound as `name`, looked up at each call: most requests never call it (the
/// keyring asks KV only when its own read has expired), so they pay nothing for the lookup.
#[derive(Clone)]
pub struct Kv {
    env: Env,
    name: &'static str,
}

impl Kv {
    pub fn binding(env: &Env, name: &'static str) -> Kv {
        Kv { env: env.clone(), name }
    }

    fn store(&self) -> Result<worker::kv::KvStore, KeyValueError> {
        self.env.kv(self.name).map_err(|err| KeyValueError(format!("KV binding {}: {err}", self.name)))
    }
}

impl KeyValue for Kv {
    async fn get(&self, key: &str) -> Result<Option<String>, KeyValueError> {
        self.store()?
            .get(key)
            .cache_ttl(CACHE_TTL_SECONDS)
            .text()
            .await
            .map_err(|err| KeyValueError(format!("reading {key}: {err}")))
    }

    async fn put(&self, key: &str, value: &str) -> Result<(), KeyValueError> {
        self.store()?
            .put(key, value)
            .map_err(|err| KeyValueError(format!("writing {key}: {err}")))?
            .execute()
            .await
            .map_err(|err| KeyValueError(format!("writing {key}: {err}")))
    }
}
