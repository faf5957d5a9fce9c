-- part 40: deploys (SPEC §6)

CREATE TABLE dfe_airbyte.deploys (
    id              bigserial PRIMARY KEY,
    state           text NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'coalesced')),
    step            text
                    CHECK (step IN ('waiting_for_migrations', 'refreshing_connection', 'starting_sync',
                                    'waiting_for_sync', 'applying_policy_tags', 'done')),
    requested_at    timestamptz NOT NULL DEFAULT now(),
    requested_by    name NOT NULL DEFAULT current_user,
    started_at      timestamptz,
    finished_at     timestamptz,
    job_id          bigint,
    http_status     integer,
    error           text,
    coalesced_into  bigint,
    log             jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(log) = 'array'),
    -- when the current step began (its timeout counts from here)
    step_started_at timestamptz,
    -- since when the current step has been failing with passing errors
    retrying_since  timestamptz
);
CREATE INDEX deploys_active_idx ON dfe_airbyte.deploys (state, id)
    WHERE state IN ('queued', 'running');
COMMENT ON TABLE dfe_airbyte.deploys IS
    'every dfe_airbyte_deploy(): state, current step, times, Airbyte job, error and a log of {at, step, message}';
COMMENT ON COLUMN dfe_airbyte.deploys.step IS
    'waiting_for_migrations, refreshing_connection, starting_sync, waiting_for_sync, applying_policy_tags; done once succeeded; a failed deploy keeps the step that failed';
COMMENT ON COLUMN dfe_airbyte.deploys.coalesced_into IS
    'for a coalesced deploy: the newer deploy that ran in its place';

REVOKE ALL ON dfe_airbyte.deploys FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.deploys TO pg_monitor, dfe_airbyte_admin;
-- dfe_airbyte_deploy() runs as its caller: it may add a queued row, nothing more
GRANT INSERT (requested_by) ON dfe_airbyte.deploys TO dfe_airbyte_admin;
GRANT USAGE ON SEQUENCE dfe_airbyte.deploys_id_seq TO dfe_airbyte_admin;

CREATE FUNCTION @extschema@.dfe_airbyte_deploy(wait boolean DEFAULT false) RETURNS bigint
    AS 'MODULE_PATHNAME', 'dfe_airbyte_deploy'
    LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_deploy(boolean) IS
    'queues a deploy (wait for migrations, refresh the connection, sync, apply policy tags) that the worker runs after this transaction commits; returns its id. wait => true (outside a transaction block) waits for it with progress NOTICEs';

CREATE FUNCTION @extschema@.dfe_airbyte_migration_lock_key() RETURNS bigint
    AS 'MODULE_PATHNAME', 'dfe_airbyte_migration_lock_key'
    LANGUAGE C STABLE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_migration_lock_key() IS
    'the advisory lock key Rails holds while it migrates this database (2053462845 * CRC32(database name)); deploys wait while it is held';

REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_deploy(boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_deploy(boolean) TO dfe_airbyte_admin;
