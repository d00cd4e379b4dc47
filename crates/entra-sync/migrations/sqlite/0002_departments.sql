-- Departments as directory objects, and each user's department.

-- name_lower keeps one department per name whatever its case. created_by_sync marks the
-- departments the sync made: it removes no others, and those only once no user belongs to them.
CREATE TABLE departments (
    id INTEGER PRIMARY KEY,
    organization_id INTEGER NOT NULL REFERENCES organizations(id),
    name TEXT NOT NULL,
    name_lower TEXT NOT NULL,
    created_by_sync INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (organization_id, name_lower)
);

ALTER TABLE users ADD COLUMN department_id INTEGER REFERENCES departments(id) ON DELETE SET NULL;
CREATE INDEX users_by_department ON users (department_id);
