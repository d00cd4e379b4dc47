-- Connections made through the API, and the object a one-user or one-group run was about.

-- definition is the connection as the API took it (the config file's keys, as JSON) without the
-- client secret; the secret is in client_secret_sealed, sealed with the service's key
-- (`secrets.rs`), never in clear.
CREATE TABLE api_connections (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    client_secret_sealed TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- The Entra id of the user or group a one-user or one-group run synced; NULL for whole runs.
ALTER TABLE runs ADD COLUMN subject TEXT;
