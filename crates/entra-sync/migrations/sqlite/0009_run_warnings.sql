-- What a run warned about without failing (a Microsoft data read Graph refused, say), as a JSON
-- array of sentences; NULL for a run without warnings and for runs recorded before this column.
ALTER TABLE runs ADD COLUMN warnings TEXT;
