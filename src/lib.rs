//! edgeid: an identity provider for Cloudflare Workers.
//!
//! Reading order: `config` (what the operator sets), `ports` (what the core needs from the
//! world), `domain` (pure rules: emails, passwords, tokens, keys), `store` (every SQL
//! statement), `keyring` (signing keys over time), `mail` (messages and providers), `flows` (the account lifecycle), `api` (HTTP),
//! and `cloudflare`, the only module that touches the Workers runtime. Downstream services verify
//! tokens with the `edgeid-verifier` crate (`verifier/`), whose validation `/userinfo` shares.

pub mod api;
pub mod config;
pub mod domain;
pub mod flows;
pub mod keyring;
pub mod mail;
pub mod ports;
pub mod store;

#[cfg(target_arch = "wasm32")]
mod cloudflare;
