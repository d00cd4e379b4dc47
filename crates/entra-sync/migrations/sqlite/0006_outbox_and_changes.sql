-- Welcome emails: the transactional outbox. A row is written in the same transaction as the user
-- it welcomes, rendered, so a crash loses neither; one row per (organization, Entra user) ever.
-- status: queued (due at next_attempt_at), sending (claimed until next_attempt_at: a sender that
-- died leaves it to be claimed again then), sent, failed (refused for good, or out of attempts).
CREATE TABLE email_outbox (
    id INTEGER PRIMARY KEY,
    connection TEXT NOT NULL,
    organization_id INTEGER NOT NULL REFERENCES organizations(id),
    entra_id TEXT NOT NULL,
    run_id INTEGER,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error TEXT,
    created_at TEXT NOT NULL,
    sent_at TEXT,
    UNIQUE (organization_id, entra_id)
);
CREATE INDEX email_outbox_due ON email_outbox (status, next_attempt_at);

-- The change feed: every applied directory change, written in the apply's transaction. seq is
-- the cursor; AUTOINCREMENT never reuses a value, so cursors only grow.
CREATE TABLE directory_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    organization_id INTEGER NOT NULL REFERENCES organizations(id),
    object TEXT NOT NULL,
    change TEXT NOT NULL,
    entra_id TEXT,
    directory_id INTEGER,
    detail TEXT NOT NULL,
    at TEXT NOT NULL
);
