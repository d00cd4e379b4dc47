-- Whether each snapshot user is present in Entra, indexed, so that a delta run that reads only
-- the users its changes reach still counts the present ones (for the source-drop guard) without
-- reading every row. Computed from the stored JSON, so every writer keeps it true; serde_json
-- writes `"presence":"present"` exactly so, and no string value can hold its unescaped quotes.
ALTER TABLE source_users ADD COLUMN present INTEGER GENERATED ALWAYS AS (instr(data, '"presence":"present"') > 0) VIRTUAL;
CREATE INDEX source_users_present ON source_users (connection_id, present);
