-- A change the sync applied in a run keeps its detail (the action with its values) once, in the
-- run's history: run_id and run_seq name its run_actions row, and detail is left empty. Changes
-- recorded before this migration, and any applied outside a run, keep their detail here (run_id
-- NULL). No foreign key: the history's retention keeps a run while the feed still refers to it.
ALTER TABLE directory_changes ADD COLUMN run_id INTEGER;
ALTER TABLE directory_changes ADD COLUMN run_seq INTEGER;
CREATE INDEX directory_changes_by_run ON directory_changes (run_id) WHERE run_id IS NOT NULL;
