-- The language a user's mails are written in, from Accept-Language at sign-up ('en', 'de').
ALTER TABLE users ADD COLUMN locale TEXT NOT NULL DEFAULT 'en';

-- With MAIL_PROVIDER=log only: the mails the worker "sent", for GET /dev/mailbox. The
-- consumer keeps the newest 50.
CREATE TABLE dev_mailbox (
    id INTEGER PRIMARY KEY,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
