//! The native side of the benchmark command (scripts/bench.sh): the same code as the worker,
//! compiled for the host. Prints JSON:
//! - `argon2_ms_per_hash`: Argon2id at the OWASP minimum, as the worker hashes;
//! - `verify_us_per_token`: edgeid-verifier checking an access token against a cached JWKS,
//!   as a downstream Rust service does.
//!
//! `cargo run --release --example bench_native -- ISSUER AUDIENCE ACCESS_TOKEN JWKS_FILE`, or
//! `… -- argon2 N` for `argon2_ms_per_hash` alone over N hashes (the benchmark interleaves
//! these runs with the worker's, on the same core).

use std::time::Instant;

use edgeid::domain::password::{hash_password, HashParams, Password};
use edgeid_verifier::{FetchError, JwksFetcher, JwksResponse, Verifier, VerifierConfig};

/// Serves the JWKS the benchmark fetched from the worker, as the issuer would.
struct CachedJwks(String);

impl JwksFetcher for CachedJwks {
    async fn fetch(&self, _url: &str) -> Result<JwksResponse, FetchError> {
        Ok(JwksResponse { status: 200, cache_control: Some("public, max-age=300".to_owned()), body: self.0.clone() })
    }
}

/// Milliseconds per Argon2id hash at the OWASP minimum, over `hashes` hashes.
fn argon2_ms(hashes: u32) -> Result<f64, String> {
    let password = Password::presented("a benchmark passphrase");
    let started = Instant::now();
    for index in 0..hashes {
        hash_password(&password, &[index as u8; 16], &HashParams::OWASP_MINIMUM).map_err(|err| err.to_string())?;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0 / f64::from(hashes))
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [mode, hashes] = args.as_slice() {
        if mode == "argon2" {
            let hashes = hashes.parse::<u32>().map_err(|err| err.to_string())?.max(1);
            println!("{{\"argon2_ms_per_hash\": {:.3}}}", argon2_ms(hashes)?);
            return Ok(());
        }
    }
    let [issuer, audience, token, jwks_file] = args.as_slice() else {
        return Err("usage: bench_native ISSUER AUDIENCE ACCESS_TOKEN JWKS_FILE | bench_native argon2 N".to_owned());
    };
    let argon2_ms = argon2_ms(20)?;

    let jwks = std::fs::read_to_string(jwks_file).map_err(|err| err.to_string())?;
    let verifier = Verifier::new(VerifierConfig::for_issuer(issuer, audience), CachedJwks(jwks));
    // The first call fetches the JWKS; the rest are the cached case being measured.
    pollster::block_on(verifier.verify_access_token(token)).map_err(|err| err.to_string())?;
    let verifications = 20_000;
    let started = Instant::now();
    for _ in 0..verifications {
        pollster::block_on(verifier.verify_access_token(token)).map_err(|err| err.to_string())?;
    }
    let verify_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(verifications);
    println!("{{\"argon2_ms_per_hash\": {argon2_ms:.3}, \"verify_us_per_token\": {verify_us:.3}}}");
    Ok(())
}
