-- Mails the queue consumer gave up on (src/cloudflare/mail_queue.rs): what, to whom, why.
-- The bodies are not kept: they carry one-time tokens. Inspect with
--   wrangler d1 execute DB --remote --command "SELECT * FROM mail_dead_letters ORDER BY id DESC LIMIT 20"
CREATE TABLE mail_dead_letters (
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    recipient TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
