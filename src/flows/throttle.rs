//! Rate limits in the flows: which budgets a request draws on, all or nothing.

use crate::domain::email::Email;
use crate::domain::rate_limit::{
    client_networks, retry_after_seconds, widest_network, Bucket, BucketKind, Limit, NetworkWidth, SLASH_48_FACTOR,
};
use crate::flows::{Context, Internal};
use crate::ports::{Crypto, Database, HttpClient, Statement, StatementOutcome};
use crate::store::{self, BucketDraw};

/// A refusal: the request is over one of its budgets. Nothing else happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited for {retry_after_seconds} s")]
pub struct Throttled {
    pub retry_after_seconds: i64,
}

/// What a request is counted by.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// The client (`CF-Connecting-IPv6`, else `CF-Connecting-IP`): its IPv4 address, or its
    /// IPv6 /64 and, with `SLASH_48_FACTOR` times the budget, its /48.
    Client,
    /// An email address, registered or not.
    Email(&'a Email),
    /// The mailbox of an address: `local+tag@domain` counts as `local@domain`.
    Mailbox(&'a Email),
    /// The domain of an address.
    Domain(&'a Email),
    /// An account (by email, registered or not) as seen from the client's widest network.
    AccountOnNetwork(&'a Email),
    /// An account (by email), except from a network it signed in from recently (see
    /// `store::KnownNetwork`): there the budget is not drawn on.
    AccountUnlessKnownNetwork(&'a Email),
}

/// Units taken by [`take`], which the caller may give back ([`give_back`]).
#[derive(Debug, Default)]
pub struct Taken(Vec<(BucketKind, BucketDraw)>);

impl Taken {
    /// The units taken from buckets of `kinds` only.
    pub fn of_kinds(&self, kinds: &[BucketKind]) -> Taken {
        Taken(self.0.iter().filter(|(candidate, _)| kinds.contains(candidate)).cloned().collect())
    }

    /// The draws to put back, for a batch that returns them itself (`store::after_sign_in`).
    pub fn draws(&self) -> Vec<BucketDraw> {
        self.0.iter().map(|(_, draw)| draw.clone()).collect()
    }
}

/// Takes one unit from each configured budget of `budgets`. If any budget is exhausted, the
/// units the others gave are put back and the request is refused: a refused request costs no
/// budget but the one that refused it. Budgets switched `off` are skipped.
pub async fn take<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    budgets: &[(BucketKind, Subject<'_>)],
) -> Result<Result<Taken, Throttled>, Internal> {
    Ok(take_with(ctx, budgets, None::<(&D, _)>).await?.0)
}

/// [`take`], with `also` run on its database at the same time (whatever the budgets say), for
/// a flow that needs a read anyway (login reads the account in its shard while `DB` counts):
/// one round trip, and its outcomes come back second.
pub async fn take_with<D: Database, E: Crypto, H: HttpClient, A: Database>(
    ctx: &Context<'_, D, E, H>,
    budgets: &[(BucketKind, Subject<'_>)],
    also: Option<(&A, Vec<Statement>)>,
) -> Result<(Result<Taken, Throttled>, Vec<StatementOutcome>), Internal> {
    let mut draws: Vec<(BucketKind, Limit, BucketDraw)> = Vec::with_capacity(budgets.len() + 1);
    let keyer = &ctx.config.bucket_keyer;
    for (kind, subject) in budgets {
        let Some(limit) = ctx.config.rate_limits.limit(*kind) else { continue };
        let mut unless_known = None;
        let buckets: Vec<(Bucket, Limit)> = match subject {
            Subject::Client => client_networks(ctx.client_ip)
                .iter()
                .map(|network| {
                    let limit = match network.width {
                        NetworkWidth::Client => limit,
                        NetworkWidth::Site => Limit { count: limit.count.saturating_mul(SLASH_48_FACTOR), ..limit },
                    };
                    (Bucket::for_network(*kind, network, keyer), limit)
                })
                .collect(),
            Subject::Email(email) => vec![(Bucket::new(*kind, email.as_str(), keyer), limit)],
            Subject::Mailbox(email) => vec![(Bucket::new(*kind, &email.mailbox(), keyer), limit)],
            Subject::Domain(email) => vec![(Bucket::new(*kind, email.domain(), keyer), limit)],
            Subject::AccountOnNetwork(email) => {
                let network = widest_network(ctx.client_ip);
                vec![(Bucket::for_account_on_network(*kind, email.as_str(), &network, keyer), limit)]
            }
            Subject::AccountUnlessKnownNetwork(email) => {
                unless_known = Some(known_network_key(ctx, email));
                vec![(Bucket::new(*kind, email.as_str(), keyer), limit)]
            }
        };
        for (bucket, limit) in buckets {
            draws.push((
                *kind,
                limit,
                BucketDraw {
                    bucket: bucket.key,
                    cost_ms: limit.cost_ms(),
                    tolerance_ms: limit.tolerance_ms(),
                    unless_known: unless_known.clone(),
                },
            ));
        }
    }
    let now_ms = ctx.now.timestamp_millis();
    let plain: Vec<BucketDraw> = draws.iter().map(|(_, _, draw)| draw.clone()).collect();
    let counted = async {
        match plain.is_empty() {
            true => Ok(Vec::new()),
            false => store::take_from_buckets(ctx.db, &plain, now_ms).await,
        }
    };
    let read = async {
        match also {
            Some((database, statements)) => database.batch(statements).await,
            None => Ok(Vec::new()),
        }
    };
    let (states, also_outcomes) = futures_util::future::join(counted, read).await;
    let (states, also_outcomes) = (states?, also_outcomes?);
    let refusal = draws
        .iter()
        .zip(&states)
        .filter(|(_, state)| !state.taken && !state.exempt)
        .map(|((_, limit, _), state)| retry_after_seconds(limit, state.tat_ms, now_ms))
        .max();
    let taken: Vec<(BucketKind, BucketDraw)> = draws
        .into_iter()
        .zip(&states)
        .filter(|(_, state)| state.taken)
        .map(|((kind, _, draw), _)| (kind, draw))
        .collect();
    match refusal {
        None => Ok((Ok(Taken(taken)), also_outcomes)),
        Some(retry_after_seconds) => {
            give_back(ctx, Taken(taken)).await?;
            log::info!("rate limited for {retry_after_seconds} s");
            Ok((Err(Throttled { retry_after_seconds }), also_outcomes))
        }
    }
}

/// The `known_networks` key of an account (by email) seen from the client's widest network:
/// the name of its per-network login budget, so a reset clears both by one prefix.
pub fn known_network_key<D, E, H>(ctx: &Context<'_, D, E, H>, email: &Email) -> String {
    let network = widest_network(ctx.client_ip);
    Bucket::for_account_on_network(
        BucketKind::LoginPerAccountNetwork,
        email.as_str(),
        &network,
        &ctx.config.bucket_keyer,
    )
    .key
}

/// Puts units back: the request they were taken for turned out not to count (a login whose
/// password was right does not count against the account's budget of failures).
pub async fn give_back<D: Database, E: Crypto, H: HttpClient>(
    ctx: &Context<'_, D, E, H>,
    taken: Taken,
) -> Result<(), Internal> {
    if taken.0.is_empty() {
        return Ok(());
    }
    let draws: Vec<BucketDraw> = taken.0.into_iter().map(|(_, draw)| draw).collect();
    Ok(store::return_to_buckets(ctx.db, &draws).await?)
}
