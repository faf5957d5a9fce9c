-- The stream configuration of one target: its allowlist against its own
-- catalog (src/stream_config.c reads it through the seam, src/target.c).
-- config_problems calls dfe_airbyte_stream_config(): dropped here,
-- recreated per target in 12_config_problems.sql.
DROP VIEW dfe_airbyte.config_problems;
DROP FUNCTION @extschema@.dfe_airbyte_stream_config();
DROP FUNCTION @extschema@.dfe_airbyte_stream_config_json();

CREATE FUNCTION @extschema@.dfe_airbyte_stream_config(target text DEFAULT 'local') RETURNS jsonb
    AS 'MODULE_PATHNAME', 'dfe_airbyte_stream_config'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_stream_config(text) IS
    'the Airbyte stream configuration of the target built from its allowlist and its catalog (the body of the connection PATCH)';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_stream_config(text) FROM PUBLIC;
-- pg_monitor may read the lists anyway; config_problems calls this function
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_stream_config(text) TO dfe_airbyte_admin, pg_monitor;

CREATE FUNCTION @extschema@.dfe_airbyte_stream_config_json(target text DEFAULT 'local') RETURNS json
    AS 'MODULE_PATHNAME', 'dfe_airbyte_stream_config_json'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_stream_config_json(text) IS
    'the Airbyte stream configuration of the target as the exact PATCH body: compact, keys in the dfe-analytics gem''s order (jsonb would sort them)';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_stream_config_json(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_stream_config_json(text) TO dfe_airbyte_admin, pg_monitor;
