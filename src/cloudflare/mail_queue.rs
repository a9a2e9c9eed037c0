//! Mail through Cloudflare Queues. A request only enqueues (after its response, in
//! `waitUntil`); the consumer below makes the provider call. A transient failure (network,
//! timeout, 5xx, 429) re-enqueues the mail with one more attempt and an exponential delay,
//! always with the same `Idempotency-Key`, so a provider that did accept an earlier attempt
//! does not send it twice. After `MAIL_MAX_ATTEMPTS`, or at once on a permanent refusal, the
//! mail goes to the dead-letter queue, whose consumer records it in D1 and logs it.

use worker::{Env, MessageBatch, MessageBuilder, MessageExt, QueueRetryOptionsBuilder, RawMessage};

use crate::config::{Config, MailProvider};
use crate::mail::{self, NextStep, OutgoingMail, QueuedMail};
use crate::store::{self, DeadLetter};

use super::{d1, fetch, now};

/// Bindings (wrangler.toml `[[queues.producers]]`).
const MAIL_QUEUE: &str = "MAIL_QUEUE";
const MAIL_DEAD_LETTERS: &str = "MAIL_DEAD_LETTERS";
/// The dead-letter queue's name (wrangler.toml `[[queues.consumers]]`): its batches are
/// recorded, not delivered.
const DEAD_LETTER_QUEUE_NAME: &str = "edgeid-mail-dead";

/// Hands a request's mail to the queue. Should the queue be missing (a deployment without the
/// binding) or refuse, the mail is delivered at once instead, without retries, and that is
/// logged: a mail is never dropped silently.
pub async fn enqueue(env: &Env, config: &Config, mails: Vec<OutgoingMail>) {
    let queue = env.queue(MAIL_QUEUE);
    for mail in mails {
        let queued = QueuedMail::new(&mail, now().timestamp());
        let sent = match &queue {
            Ok(queue) => queue.send(json(&queued)).await.map_err(|err| err.to_string()),
            Err(err) => Err(err.to_string()),
        };
        match sent {
            Ok(()) => {
                log::info!("mail {} to {} queued ({})", mail.kind.as_str(), mail.to.masked(), mail.idempotency_key)
            }
            Err(err) => {
                log::error!("mail queue unavailable ({err}); delivering {} at once", mail.idempotency_key);
                if let Err(err) = deliver_once(env, config, &mail).await {
                    log::error!("mail {} to {} was not delivered: {err}", mail.kind.as_str(), mail.to.masked());
                }
            }
        }
    }
}

/// The queue consumer, for both queues. Every message is acknowledged or explicitly retried
/// on its own; the handler never fails (that would retry the whole batch).
pub async fn consume(batch: MessageBatch<String>, env: Env, config: &Config) {
    let dead_letters = batch.queue() == DEAD_LETTER_QUEUE_NAME;
    for message in batch.raw_iter() {
        let Some(queued) = message.body().as_string().and_then(|body| serde_json::from_str::<QueuedMail>(&body).ok())
        else {
            log::error!("mail queue: message {} is not a queued mail; dropped", message.id());
            message.ack();
            continue;
        };
        // A message that failed before is never delivered again, whichever queue it came from
        // (a renamed dead-letter queue must not loop back into delivery).
        if dead_letters || queued.failure.is_some() {
            record_dead_letter(&env, &message, &queued).await;
        } else if let Some(reason) = queued.too_late(now().timestamp()) {
            // Dropped, not delivered: recorded like any mail given up on.
            log::warn!("mail {}: not delivered: {reason}", queued.idempotency_key);
            let dropped = QueuedMail { failure: Some(reason), ..queued };
            record_dead_letter(&env, &message, &dropped).await;
        } else {
            deliver(&env, config, &message, queued).await;
        }
    }
}

async fn deliver(env: &Env, config: &Config, message: &RawMessage, queued: QueuedMail) {
    let outcome = match queued.to_mail() {
        Ok(mail) => deliver_once(env, config, &mail).await,
        Err(err) => Err(mail::MailError::Rejected { status: 0, body: format!("unusable recipient: {err}") }),
    };
    let attempt = queued.attempt + 1;
    let key = queued.idempotency_key.clone();
    match mail::next_step(&config.mail, &queued, outcome) {
        NextStep::Delivered => {
            log::info!("mail {key} to {} delivered (attempt {attempt})", masked(&queued.to));
            message.ack();
        }
        NextStep::RetryAfter { attempt, delay_seconds } => {
            log::warn!("mail {key}: attempt {} failed; retrying in {delay_seconds} s", attempt);
            let next = QueuedMail { attempt, ..queued };
            let requeued = match env.queue(MAIL_QUEUE) {
                Ok(queue) => queue.send(MessageBuilder::new(json(&next)).delay_seconds(delay_seconds).build()).await,
                Err(err) => Err(err),
            };
            match requeued {
                Ok(()) => message.ack(),
                // The queue's own retry keeps the message (without our attempt count).
                Err(err) => {
                    log::error!("mail {key}: could not re-enqueue ({err}); the queue retries it");
                    message
                        .retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(delay_seconds).build());
                }
            }
        }
        NextStep::DeadLetter { reason } => {
            log::error!("mail {key} to {}: giving up: {reason}", masked(&queued.to));
            let dead = QueuedMail { attempt, failure: Some(reason), ..queued };
            let sent = match env.queue(MAIL_DEAD_LETTERS) {
                Ok(queue) => queue.send(json(&dead)).await,
                Err(err) => Err(err),
            };
            match sent {
                Ok(()) => message.ack(),
                Err(err) => {
                    // Record it here rather than lose it.
                    log::error!("mail {key}: dead-letter queue unavailable ({err})");
                    record_dead_letter(env, message, &dead).await;
                }
            }
        }
    }
}

/// One attempt. With `MAIL_PROVIDER=log` the mail also goes to the dev mailbox.
async fn deliver_once(env: &Env, config: &Config, mail: &OutgoingMail) -> Result<(), mail::MailError> {
    mail::deliver(&config.mail, &fetch::Fetcher, mail).await?;
    if config.mail.provider == MailProvider::Log {
        let stored = match d1::D1::binding(env, "DB") {
            Ok(db) => store::add_to_dev_mailbox(&db, mail.to.as_str(), &mail.subject, &mail.text, now())
                .await
                .map_err(|err| err.to_string()),
            Err(err) => Err(err),
        };
        if let Err(err) = stored {
            log::warn!("dev mailbox: {err}");
        }
    }
    Ok(())
}

async fn record_dead_letter(env: &Env, message: &RawMessage, queued: &QueuedMail) {
    let reason = queued.failure.as_deref().unwrap_or("the consumer failed repeatedly");
    log::error!(
        "dead letter: mail {} ({}) to {} after {} attempts: {reason}",
        queued.idempotency_key,
        queued.kind.as_str(),
        masked(&queued.to),
        queued.attempt
    );
    let letter = DeadLetter {
        idempotency_key: &queued.idempotency_key,
        kind: queued.kind.as_str(),
        recipient: &queued.to,
        attempts: queued.attempt,
        reason,
    };
    let recorded = match d1::D1::binding(env, "DB") {
        Ok(db) => store::record_dead_letter(&db, &letter, now()).await.map_err(|err| err.to_string()),
        Err(err) => Err(err),
    };
    match recorded {
        Ok(()) => message.ack(),
        Err(err) => {
            log::error!("dead letter {} not recorded ({err}); retrying", queued.idempotency_key);
            message.retry();
        }
    }
}

/// Messages travel as JSON text: each one is parsed on its own, so one bad message cannot
/// fail a batch.
fn json(queued: &QueuedMail) -> String {
    serde_json::to_string(queued).unwrap_or_default()
}

/// A recipient as the log shows it (`j•••@example.com`): logs never carry an address.
fn masked(address: &str) -> String {
    crate::domain::email::Email::parse(address)
        .map_or_else(|_| "an unusable address".to_owned(), |email| email.masked())
}
