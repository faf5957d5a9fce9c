-- part 30: the Airbyte API from SQL (SPEC §4)

CREATE FUNCTION @extschema@.dfe_airbyte_connection_refresh() RETURNS jsonb
    AS 'MODULE_PATHNAME', 'dfe_airbyte_connection_refresh'
    LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_connection_refresh() IS
    'rediscovers the source schema, then PATCHes the Airbyte connection with dfe_airbyte_stream_config(); returns Airbyte''s answer';

CREATE FUNCTION @extschema@.dfe_airbyte_start_sync() RETURNS bigint
    AS 'MODULE_PATHNAME', 'dfe_airbyte_start_sync'
    LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_start_sync() IS
    'starts an Airbyte sync unless one runs; returns the job id (the running one''s where one runs)';

CREATE FUNCTION @extschema@.dfe_airbyte_job_status(job_id bigint) RETURNS text
    AS 'MODULE_PATHNAME', 'dfe_airbyte_job_status'
    LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_job_status(bigint) IS
    'the Airbyte job''s status: pending, queued, running, incomplete, succeeded, failed or cancelled';

CREATE FUNCTION @extschema@.dfe_airbyte_wait_for_job(job_id bigint, timeout interval DEFAULT '1 hour') RETURNS text
    AS 'MODULE_PATHNAME', 'dfe_airbyte_wait_for_job'
    LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_wait_for_job(bigint, interval) IS
    'waits for an Airbyte job with a NOTICE every dfe_airbyte.job_poll_interval; errors when it fails, is cancelled or the timeout passes';

REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_connection_refresh(), @extschema@.dfe_airbyte_start_sync(),
    @extschema@.dfe_airbyte_job_status(bigint), @extschema@.dfe_airbyte_wait_for_job(bigint, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_connection_refresh(), @extschema@.dfe_airbyte_start_sync(),
    @extschema@.dfe_airbyte_job_status(bigint), @extschema@.dfe_airbyte_wait_for_job(bigint, interval) TO dfe_airbyte_admin;
