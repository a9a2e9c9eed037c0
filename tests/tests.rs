//! edgeid's one integration-test crate: native flow tests over the real SQL on SQLite, and
//! end-to-end tests against the built worker under `wrangler dev`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod abuse;
mod clients;
mod e2e;
mod e2e_abuse;
mod e2e_browser;
mod e2e_keys;
mod e2e_mail;
mod e2e_provider;
mod e2e_shards;
mod flows;
mod keys;
mod mail;
mod pages;
mod properties;
mod provider;
mod races;
mod review_shards;
mod sessions;
mod shards;
mod support;
mod verifier;
