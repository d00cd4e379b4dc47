-- The embedded directory, the connections' sync state and the run history.

CREATE TABLE organizations (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

-- Directory users. entra_id is the link to Entra: the sync acts only on rows that carry one.
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    organization_id INTEGER NOT NULL REFERENCES organizations(id),
    entra_id TEXT,
    email_lower TEXT,
    attributes TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    soft_deleted_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (organization_id, entra_id)
);
CREATE INDEX users_by_email ON users (organization_id, email_lower);

CREATE TABLE groups (
    id INTEGER PRIMARY KEY,
    organization_id INTEGER NOT NULL REFERENCES organizations(id),
    entra_id TEXT,
    name TEXT NOT NULL,
    description TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (organization_id, entra_id)
);

-- managed_by_sync marks memberships the sync made; it removes no others.
CREATE TABLE memberships (
    group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    managed_by_sync INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
CREATE INDEX memberships_by_user ON memberships (user_id);

CREATE TABLE connections (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    organization_id INTEGER NOT NULL REFERENCES organizations(id),
    users_delta_link TEXT,
    groups_delta_link TEXT,
    -- When the stored delta links were issued; Graph expires them after 7 days.
    delta_links_at TEXT,
    last_full_at TEXT,
    -- Set when a run left actions that failed, so the next run replans even without changes.
    needs_replan INTEGER NOT NULL DEFAULT 0
);

-- The source snapshot: each Entra object as folded from delta pages, as JSON. Rowid tables:
-- their rows are wide, which WITHOUT ROWID tables store badly.
CREATE TABLE source_users (
    connection_id INTEGER NOT NULL REFERENCES connections(id),
    entra_id TEXT NOT NULL,
    data TEXT NOT NULL,
    UNIQUE (connection_id, entra_id)
);

CREATE TABLE source_groups (
    connection_id INTEGER NOT NULL REFERENCES connections(id),
    entra_id TEXT NOT NULL,
    data TEXT NOT NULL,
    UNIQUE (connection_id, entra_id)
);

CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    connection_id INTEGER NOT NULL REFERENCES connections(id),
    trigger TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    counts TEXT,
    graph_requests INTEGER NOT NULL DEFAULT 0,
    duration_ms INTEGER,
    error TEXT
);
CREATE INDEX runs_by_connection ON runs (connection_id, id);

-- Per-user and per-group actions of a run: the planned action as JSON (with before and after
-- values) and its outcome (NULL when applied, else the error).
CREATE TABLE run_actions (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    entra_id TEXT,
    directory_id INTEGER,
    detail TEXT NOT NULL,
    outcome TEXT,
    UNIQUE (run_id, seq)
);
CREATE INDEX run_actions_by_entra_id ON run_actions (entra_id);

-- Conflicts a run put aside, with their reasons.
CREATE TABLE run_conflicts (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    seq INTEGER NOT NULL,
    entra_id TEXT,
    directory_id INTEGER,
    reason TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
