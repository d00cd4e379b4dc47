-- Bearer tokens of the JSON API. Only a token's SHA-256 is kept: `entra-sync token create` shows
-- the token once, and a copy of the database grants no access.
CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
