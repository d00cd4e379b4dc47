-- The admin UI's password, set by `entra-sync admin set-password`: one row, the argon2 hash as a
-- PHC string, never the password. Numbered after the migrations other branches add (0005, 0006).
CREATE TABLE admin_password (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    argon2_hash TEXT NOT NULL,
    set_at TEXT NOT NULL
);
