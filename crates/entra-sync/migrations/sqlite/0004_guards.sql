-- Plans a safety guard stopped, kept until `entra-sync approve` applies exactly them.
CREATE TABLE stored_plans (
    run_id INTEGER PRIMARY KEY REFERENCES runs(id),
    connection_id INTEGER NOT NULL REFERENCES connections(id),
    plan TEXT NOT NULL,
    -- The tripped guards, each with which guard and by how much.
    guards TEXT NOT NULL,
    -- awaiting or applied.
    state TEXT NOT NULL,
    decided_at TEXT
);

-- Users present in Entra after the last run that was applied: the read-health guard compares
-- each new read with it.
ALTER TABLE connections ADD COLUMN last_good_users INTEGER;

-- The policy the last applied run planned with, as JSON: a run whose policy differs plans even
-- when nothing changed in Entra, so an edited scope or option takes effect at once.
ALTER TABLE connections ADD COLUMN applied_policy TEXT;

-- Counting soft-deleted users decides whether a no-change run may skip planning; the index keeps
-- that count off the wide user rows.
CREATE INDEX users_by_status ON users (organization_id, status);
