-- Events name the target they are about: every per-service table has a
-- "target" column ("local" for this database), filled with 'local' on
-- upgrade.  Dropping a target drops its history with it, as dropping the
-- database would have.
ALTER TABLE dfe_airbyte.events
    ADD COLUMN target text NOT NULL DEFAULT 'local'
        REFERENCES dfe_airbyte.targets (name) ON DELETE CASCADE;
CREATE INDEX events_target_at_idx ON dfe_airbyte.events (target, at);
COMMENT ON COLUMN dfe_airbyte.events.target IS
    'the service database the event is about ("local": this database; see dfe_airbyte.targets)';
