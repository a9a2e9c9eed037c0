//! `mail_dead_letters` and `dev_mailbox`: mail given up on, and the local dev mailbox.

use chrono::{DateTime, Utc};

use super::{integer, text};
use crate::ports::{Database, DatabaseError, Statement};

/// A mail the queue consumer gave up on (bodies are not kept: they carry tokens).
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub idempotency_key: &'a str,
    pub kind: &'a str,
    pub recipient: &'a str,
    pub attempts: u32,
    pub reason: &'a str,
}

pub async fn record_dead_letter(
    db: &impl Database,
    letter: &DeadLetter<'_>,
    now: DateTime<Utc>,
) -> Result<(), DatabaseError> {
    db.batch(vec![Statement::new(
        "INSERT INTO mail_dead_letters (idempotency_key, kind, recipient, attempts, reason, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        [
            letter.idempotency_key.into(),
            letter.kind.into(),
            letter.recipient.into(),
            i64::from(letter.attempts).into(),
            letter.reason.into(),
            now.timestamp().into(),
        ],
    )])
    .await
    .map(drop)
}

/// Keeps a mail "sent" with `MAIL_PROVIDER=log` for the dev mailbox; only the newest 50 stay.
pub async fn add_to_dev_mailbox(
    db: &impl Database,
    recipient: &str,
    subject: &str,
    text: &str,
    now: DateTime<Utc>,
) -> Result<(), DatabaseError> {
    db.batch(vec![
        Statement::new(
            "INSERT INTO dev_mailbox (recipient, subject, text, created_at) VALUES (?1, ?2, ?3, ?4)",
            [recipient.into(), subject.into(), text.into(), now.timestamp().into()],
        ),
        Statement::new(
            "DELETE FROM dev_mailbox WHERE id NOT IN (SELECT id FROM dev_mailbox ORDER BY id DESC LIMIT 50)",
            [],
        ),
    ])
    .await
    .map(drop)
}

/// The dev mailbox, newest first.
pub async fn list_dev_mailbox(
    db: &impl Database,
    limit: i64,
) -> Result<Vec<crate::api::pages::MailboxEntry>, DatabaseError> {
    let outcomes = db
        .batch(vec![Statement::new(
            "SELECT recipient, subject, text, created_at FROM dev_mailbox ORDER BY id DESC LIMIT ?1",
            [limit.into()],
        )])
        .await?;
    outcomes
        .first()
        .map(|outcome| outcome.rows.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|row| {
            let sent_at = DateTime::from_timestamp(integer(row, "created_at")?, 0).unwrap_or_default();
            Ok(crate::api::pages::MailboxEntry {
                to: text(row, "recipient")?,
                subject: text(row, "subject")?,
                text: text(row, "text")?,
                sent_at: sent_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            })
        })
        .collect()
}
