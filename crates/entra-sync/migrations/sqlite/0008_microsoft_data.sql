-- Microsoft data: licence names, last sign-in and MFA registration, read from Graph in full runs
-- only (the sign-in and report reads are throttled hard and a no-change delta run must stay at
-- three requests).

-- The tenant's licences (`subscribedSkus`), to name the SKU ids users carry.
CREATE TABLE microsoft_skus (
    connection_id INTEGER NOT NULL REFERENCES connections(id),
    sku_id TEXT NOT NULL,
    sku_part_number TEXT NOT NULL,
    PRIMARY KEY (connection_id, sku_id)
) WITHOUT ROWID;

-- Per Entra user. NULL is unknown (the tenant does not share it, or it was not read yet: the
-- connection's microsoft_warnings say which); last_sign_in is also NULL for a user who never
-- signed in.
CREATE TABLE microsoft_users (
    connection_id INTEGER NOT NULL REFERENCES connections(id),
    entra_id TEXT NOT NULL,
    last_sign_in TEXT,
    mfa_registered INTEGER,
    PRIMARY KEY (connection_id, entra_id)
) WITHOUT ROWID;

-- When the Microsoft data was last read, and what the tenant refused then (JSON array of lines).
ALTER TABLE connections ADD COLUMN microsoft_read_at TEXT;
ALTER TABLE connections ADD COLUMN microsoft_warnings TEXT;
