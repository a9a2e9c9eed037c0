//! The account flows: plain async functions over a [`Context`] of configuration, ports and the
//! current time. They return typed results and errors; `api/` turns those into HTTP.

use std::cell::RefCell;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::domain::opaque_token::{random_id, OpaqueToken};
use crate::domain::password::PasswordHashError;
use std::rc::Rc;

use crate::domain::email::Email;
use crate::domain::shard::UserBucket;
use crate::domain::signing::{SigningError, SigningKeys};
use crate::keyring::{Keyring, KeyringError};
use crate::mail::{Locale, OutgoingMail};
use crate::ports::{Crypto, Database, DatabaseError, EntropyError, HttpClient};
use crate::store::{ClientCache, Routed, UserShards};

pub mod authorization_code;
pub mod authorize;
pub mod client_auth;
pub mod clients;
pub mod login;
pub mod new_password;
pub mod password_reset;
pub mod resharding;
pub mod session;
pub mod signup;
pub mod throttle;
pub mod user_move;
pub mod user_walk;
pub mod verify_email;

/// Everything a flow may touch. One context serves one request, at one instant `now`.
pub struct Context<'a, D, E, H> {
    pub config: &'a Config,
    pub keyring: &'a Keyring,
    /// Registered clients as this isolate last read them (client authentication).
    pub clients: &'a ClientCache,
    /// `DB`: what is global (keys, clients, budgets, the bucket map).
    pub db: &'a D,
    /// The user shards: everything that belongs to an account, by its bucket
    /// ([`Context::users`]).
    pub shards: &'a UserShards<D>,
    pub crypto: &'a E,
    /// Outbound HTTP the request itself waits for (the breached-password check).
    pub http: &'a H,
    pub now: DateTime<Utc>,
    /// The client's address as the edge saw it (`CF-Connecting-IPv6`, else
    /// `CF-Connecting-IP`), for rate limits.
    pub client_ip: Option<&'a str>,
    /// The client's `Accept-Language`: the language of a new account's mails.
    pub accept_language: Option<&'a str>,
    /// Mail the request wants sent. The adapter delivers it after the response is on its way,
    /// so that no response's timing depends on whether a mail was sent.
    pub outbox: &'a Outbox,
}

impl<D: Database, E: Crypto, H: HttpClient> Context<'_, D, E, H> {
    /// A token for an account of `bucket` (its prefix routes it back there).
    fn new_token(&self, bucket: UserBucket) -> Result<OpaqueToken, Internal> {
        Ok(OpaqueToken::generate(self.crypto, bucket)?)
    }

    /// An identifier that names nothing routed (a JWT id, a nonce).
    fn new_id(&self) -> Result<String, Internal> {
        Ok(random_id(self.crypto)?)
    }

    /// The identifier of something that belongs to an account of `bucket` (a session, a
    /// grant, a browser session): its prefix routes it back there.
    fn new_id_in(&self, bucket: UserBucket) -> Result<String, Internal> {
        Ok(format!("{}{}", bucket.prefix(), random_id(self.crypto)?))
    }

    /// The database of the accounts of `bucket`.
    pub fn users(&self, bucket: UserBucket) -> Routed<'_, D> {
        self.shards.for_bucket(self.db, bucket, self.now.timestamp())
    }

    /// The database of the account `email` has, or would have.
    pub fn users_of(&self, email: &Email) -> Routed<'_, D> {
        self.users(UserBucket::of_email(email))
    }

    /// The signing keys in force now (bootstrapping the first one if there is none).
    pub async fn signing_keys(&self) -> Result<Rc<SigningKeys>, Internal> {
        Ok(self.keyring.signing_keys(self.db, self.config, self.crypto, self.now).await?)
    }

    /// The signing keys in force now, and until when (Unix seconds, exclusive) this isolate
    /// keeps returning the same ones (`Keyring::unchanged_until`), taken together: nothing runs
    /// between the two.
    pub async fn signing_keys_and_until(&self) -> Result<(Rc<SigningKeys>, Option<i64>), Internal> {
        let keys = self.signing_keys().await?;
        Ok((keys, self.keyring.unchanged_until(self.config, self.now.timestamp())))
    }
}

/// The bucket of an identifier the store handed back (a session's, a browser session's): each
/// was issued with one, so one without is a store in trouble.
pub(crate) fn issued_bucket(id: &str) -> Result<UserBucket, Internal> {
    UserBucket::of_issued(id).ok_or_else(|| Internal::Database(DatabaseError(format!("{id:?} names no user bucket"))))
}

/// What a request leaves for after its response: mail to send, and account work whose cost or
/// writes would otherwise show in the response whether an address has an account.
#[derive(Debug, Default)]
pub struct Outbox {
    mails: RefCell<Vec<OutgoingMail>>,
    deferred: RefCell<Vec<Deferred>>,
}

impl Outbox {
    pub fn push(&self, mail: OutgoingMail) {
        self.mails.borrow_mut().push(mail);
    }

    pub fn take(&self) -> Vec<OutgoingMail> {
        self.mails.take()
    }

    pub fn defer(&self, work: Deferred) {
        self.deferred.borrow_mut().push(work);
    }

    pub fn take_deferred(&self) -> Vec<Deferred> {
        self.deferred.take()
    }
}

/// Account work done after the response (the adapter runs it in `waitUntil`, the tests right
/// after `handle`), through [`run_deferred`]. Each holds only what the request had already
/// checked. Running one again is safe (the adapter does when its bucket was between shards).
#[derive(Debug, Clone)]
pub enum Deferred {
    /// `signup::finish_signup`: the password is already hashed.
    Signup { email: Email, password_hash: String, locale: Locale },
    /// `signup::finish_resend`.
    ResendVerification { email: Email },
    /// `password_reset::finish_forgot`.
    ForgotPassword { email: Email },
    /// `store::after_sign_in`: a login's session started, so its account's budget units go
    /// back and its network is remembered (`DB`'s, after the response: the login's own round
    /// trips are its shard's).
    AfterSignIn { returned: Vec<crate::store::BucketDraw>, known_network: crate::store::KnownNetwork },
}

/// Runs one piece of deferred work; the mail it makes goes to `ctx.outbox`. A failure is only
/// logged by the caller: the response is long gone.
pub async fn run_deferred<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    work: Deferred,
) -> Result<(), Internal> {
    match work {
        Deferred::Signup { email, password_hash, locale } => {
            signup::finish_signup(ctx, &email, &password_hash, locale).await
        }
        Deferred::ResendVerification { email } => signup::finish_resend(ctx, &email).await,
        Deferred::ForgotPassword { email } => password_reset::finish_forgot(ctx, &email).await,
        Deferred::AfterSignIn { returned, known_network } => {
            Ok(crate::store::after_sign_in(ctx.db, &returned, &known_network).await?)
        }
    }
}

/// A failure that is nobody's fault but ours: the API answers `server_error` and logs it.
#[derive(Debug, thiserror::Error)]
pub enum Internal {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Entropy(#[from] EntropyError),
    #[error(transparent)]
    PasswordHash(#[from] PasswordHashError),
    #[error(transparent)]
    Signing(#[from] SigningError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The breached-password API did not answer and the check fails closed.
    #[error("breached-password check unavailable: {0}")]
    BreachCheck(String),
}

/// What one run of [`normalise_stored_addresses`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Normalised {
    pub rewritten: u64,
    /// Another account already had the normal form: both kept, for an operator to merge.
    pub collisions: u64,
    /// The stored address is no longer valid (a domain label that mixes scripts), or its
    /// normal form belongs in another bucket (the account would have to move shards).
    pub refused: u64,
}

/// Brings addresses stored before domains were mapped to A-labels (IDNA UTS #46) into the form
/// logins look them up by, so their owners can still sign in and one mailbox stays one account.
/// Run by the cron, shard by shard; what it cannot rewrite is logged by account id (never by
/// address).
pub async fn normalise_stored_addresses<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
) -> Result<Normalised, Internal> {
    const PAGE: i64 = 200;
    let mut report = Normalised::default();
    for shard in ctx.shards.all() {
        let mut after = String::new();
        // Ten pages a run at most; addresses kept as they are do not hold up the ones after them.
        for _ in 0..10 {
            let page = crate::store::addresses_to_normalise(shard, &after, PAGE).await?;
            let last_page = (page.len() as i64) < PAGE;
            for (user_id, stored, bucket) in page {
                normalise_one(ctx, &user_id, &stored, bucket, &mut report).await?;
                after = user_id;
            }
            if last_page {
                break;
            }
        }
    }
    Ok(report)
}

async fn normalise_one<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    user_id: &str,
    stored: &str,
    bucket: i64,
    report: &mut Normalised,
) -> Result<(), Internal> {
    match Email::parse(stored) {
        Ok(normal) if normal.as_str() == stored => {}
        // With one shard every bucket is in it, and the rewrite files the account anew.
        Ok(normal) if ctx.shards.count() > 1 && i64::from(UserBucket::of_email(&normal).index()) != bucket => {
            log::warn!("account {user_id}: its address's normal form belongs in another user bucket; kept as is");
            report.refused += 1;
        }
        Ok(normal) => {
            let users = ctx.users(UserBucket::of_email(&normal));
            match crate::store::normalise_address(&users, user_id, stored, &normal, ctx.now).await? {
                true => report.rewritten += 1,
                false => {
                    log::warn!("account {user_id}: its address's normal form belongs to another account; kept as is");
                    report.collisions += 1;
                }
            }
        }
        Err(err) => {
            log::warn!("account {user_id}: its stored address is no longer valid ({err}); kept as is");
            report.refused += 1;
        }
    }
    Ok(())
}
