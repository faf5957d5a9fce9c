-- branch airbyte: exactly one full re-sync per slot recreation (src/resync.c).
-- New columns go at the end of dfe_airbyte.slot_recreations, after the guard's
-- (60_guard.sql; this file sorts after it), as in
-- sql/install/60_slots.sql.
ALTER TABLE dfe_airbyte.slot_recreations
    ADD COLUMN resync_asked_at timestamptz,
    ADD COLUMN resync_answered_at timestamptz,
    ADD COLUMN resync_answer text;
