-- Deploys per target (README, "Targets"): every deploy names the service
-- database it is for, and the migration version that triggered it when the
-- network worker saw a remote target's schema_migrations gain one.  One
-- deploy runs at a time per target; queued ones coalesce per target.
ALTER TABLE dfe_airbyte.deploys
    ADD COLUMN target text NOT NULL DEFAULT 'local'
        REFERENCES dfe_airbyte.targets (name) ON DELETE CASCADE,
    ADD COLUMN migration_version text;
DROP INDEX dfe_airbyte.deploys_active_idx;
CREATE INDEX deploys_active_idx ON dfe_airbyte.deploys (target, state, id)
    WHERE state IN ('queued', 'running');
COMMENT ON COLUMN dfe_airbyte.deploys.target IS
    'the service database the deploy is for ("local": this database; see dfe_airbyte.targets)';
COMMENT ON COLUMN dfe_airbyte.deploys.migration_version IS
    'the schema_migrations version whose appearance on the target made the network worker queue this deploy; NULL for dfe_airbyte_deploy()';
-- dfe_airbyte_deploy() runs as its caller: it may add a queued row, nothing more
GRANT INSERT (target) ON dfe_airbyte.deploys TO dfe_airbyte_admin;

-- What the network worker last saw of each remote target's schema_migrations
-- (src/deploy_migration.c): a deploy is queued when this changes and no
-- migration holds ActiveRecord's advisory lock.
CREATE TABLE dfe_airbyte.migration_watch (
    target          text PRIMARY KEY REFERENCES dfe_airbyte.targets (name) ON DELETE CASCADE,
    version         text,               -- the highest version seen, NULL: none
    migrations      bigint NOT NULL,    -- how many rows schema_migrations had
    seen_at         timestamptz NOT NULL DEFAULT now(),  -- when it changed last
    checked_at      timestamptz NOT NULL DEFAULT now()   -- last successful look
);
COMMENT ON TABLE dfe_airbyte.migration_watch IS
    'what the network worker last saw of each remote target''s schema_migrations; a new version, once no migration holds the lock, queues a deploy';
REVOKE ALL ON dfe_airbyte.migration_watch FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.migration_watch TO pg_monitor, dfe_airbyte_admin;

DROP FUNCTION @extschema@.dfe_airbyte_deploy(boolean);
CREATE FUNCTION @extschema@.dfe_airbyte_deploy(wait boolean DEFAULT false, target text DEFAULT 'local')
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'dfe_airbyte_deploy'
    LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_deploy(boolean, text) IS
    'queues a deploy of the target (wait for migrations, refresh its connection, sync, apply policy tags) that the worker runs after this transaction commits; returns its id. wait => true (outside a transaction block) waits for it with progress NOTICEs';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_deploy(boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_deploy(boolean, text) TO dfe_airbyte_admin;

-- The Airbyte connection watch: one row per target, each about the target's
-- own connection (its connection_id setting); the row of "local" is the one
-- 0.2.0 had.  A target's row is added the first time its connection is read.
ALTER TABLE dfe_airbyte.connection_watch
    ADD COLUMN target text NOT NULL DEFAULT 'local'
        REFERENCES dfe_airbyte.targets (name) ON DELETE CASCADE;
ALTER TABLE dfe_airbyte.connection_watch DROP CONSTRAINT connection_watch_pkey;
ALTER TABLE dfe_airbyte.connection_watch ADD PRIMARY KEY (target);
COMMENT ON COLUMN dfe_airbyte.connection_watch.id IS
    'always true: the key of 0.2.0''s single row, kept so that an upgrade keeps every row as it was; the key is target';
COMMENT ON TABLE dfe_airbyte.connection_watch IS
    'the Airbyte connection of each target as the dfe_airbyte worker last read it (status, schema propagation setting, selected fields, job progress)';
COMMENT ON COLUMN dfe_airbyte.connection_watch.target IS
    'the service database whose Airbyte connection this is ("local": this database; see dfe_airbyte.targets)';

-- The functions acting on one service's Airbyte connection take its target.
DROP FUNCTION @extschema@.dfe_airbyte_connection_refresh();
CREATE FUNCTION @extschema@.dfe_airbyte_connection_refresh(target text DEFAULT 'local') RETURNS jsonb
    AS 'MODULE_PATHNAME', 'dfe_airbyte_connection_refresh'
    LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_connection_refresh(text) IS
    'rediscovers the source schema, then PATCHes the target''s Airbyte connection with dfe_airbyte_stream_config(); returns Airbyte''s answer';

DROP FUNCTION @extschema@.dfe_airbyte_start_sync();
CREATE FUNCTION @extschema@.dfe_airbyte_start_sync(target text DEFAULT 'local') RETURNS bigint
    AS 'MODULE_PATHNAME', 'dfe_airbyte_start_sync'
    LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_start_sync(text) IS
    'starts an Airbyte sync of the target''s connection unless one runs; returns the job id (the running one''s where one runs)';

DROP FUNCTION @extschema@.dfe_airbyte_deploy_plan();
CREATE FUNCTION @extschema@.dfe_airbyte_deploy_plan(target text DEFAULT 'local')
    RETURNS TABLE (stream text, field text, change text, detail text)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_deploy_plan'
    LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_deploy_plan(text) IS
    'what the next refresh would change in the target''s Airbyte connection, read live from it, with the BigQuery consequence of each change and the field count against Airbyte''s limit; changes nothing';

DROP FUNCTION @extschema@.dfe_airbyte_repair(boolean, boolean);
CREATE FUNCTION @extschema@.dfe_airbyte_repair(dry_run boolean DEFAULT true, cancel_stuck boolean DEFAULT false,
                                               target text DEFAULT 'local')
    RETURNS TABLE (step text, action text, detail text)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_repair'
    LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_repair(boolean, boolean, text) IS
    'diagnoses broken replication of the target (slot missing or lost, slot ahead of Airbyte''s saved position, connection disabled, stuck job) and, unless dry_run, repairs it; cancel_stuck => true also cancels and restarts a stuck job';

REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_connection_refresh(text), @extschema@.dfe_airbyte_start_sync(text),
    @extschema@.dfe_airbyte_deploy_plan(text), @extschema@.dfe_airbyte_repair(boolean, boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_connection_refresh(text), @extschema@.dfe_airbyte_start_sync(text),
    @extschema@.dfe_airbyte_deploy_plan(text), @extschema@.dfe_airbyte_repair(boolean, boolean, text) TO dfe_airbyte_admin;
