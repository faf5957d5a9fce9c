-- part 65: the Airbyte connection kept to the allowlist, the deploy plan and
-- the repair (issue 8 items 7-9; src/connection.c, deploy_plan.c, repair.c)

-- What the worker last read of the Airbyte connection: one row.
CREATE TABLE dfe_airbyte.connection_watch (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),
    checked_at       timestamptz,       -- last read, successful or not
    check_error      text,              -- why the last read failed, NULL when it worked
    status           text,              -- active, inactive, deprecated
    status_since     timestamptz,
    schema_behavior  text,              -- nonBreakingSchemaUpdatesBehavior
    streams          integer,           -- selected streams
    selected_fields  integer,           -- selected fields of the streams that list theirs
    matched_fields   jsonb,             -- {stream: [fields]} when it last matched the allowlist
    matched_at       timestamptz,
    drift_removed_at timestamptz,       -- last time unlisted streams/fields were taken out
    progress_job_id  bigint,            -- the running job and its counters, for dfe_airbyte_repair()
    progress_rows    bigint,
    progress_bytes   bigint,
    progress_since   timestamptz        -- since when these counters have not moved
);
INSERT INTO dfe_airbyte.connection_watch DEFAULT VALUES;
COMMENT ON TABLE dfe_airbyte.connection_watch IS
    'the Airbyte connection as the dfe_airbyte worker last read it (status, schema propagation setting, selected fields, job progress)';
REVOKE ALL ON dfe_airbyte.connection_watch FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.connection_watch TO pg_monitor, dfe_airbyte_admin;

CREATE FUNCTION @extschema@.dfe_airbyte_deploy_plan()
    RETURNS TABLE (stream text, field text, change text, detail text)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_deploy_plan'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_deploy_plan() IS
    'what the next refresh would change in the Airbyte connection, read live from it, with the BigQuery consequence of each change and the field count against Airbyte''s limit; changes nothing';

CREATE FUNCTION @extschema@.dfe_airbyte_repair(dry_run boolean DEFAULT true, cancel_stuck boolean DEFAULT false)
    RETURNS TABLE (step text, action text, detail text)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_repair'
    LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_repair(boolean, boolean) IS
    'diagnoses broken replication (slot missing or lost, slot ahead of Airbyte''s saved position, connection disabled, stuck job) and, unless dry_run, repairs it; cancel_stuck => true also cancels and restarts a stuck job';

REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_deploy_plan(), @extschema@.dfe_airbyte_repair(boolean, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_deploy_plan(), @extschema@.dfe_airbyte_repair(boolean, boolean) TO dfe_airbyte_admin;
