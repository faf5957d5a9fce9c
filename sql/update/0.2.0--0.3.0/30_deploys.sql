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
