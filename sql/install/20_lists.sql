-- part 20: loading the lists and the Airbyte stream configuration

CREATE FUNCTION @extschema@.dfe_airbyte_load_config(allowlist text, blocklist text DEFAULT NULL, excluded text DEFAULT NULL)
    RETURNS TABLE (list text, tables integer, columns integer, added integer, removed integer)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_load_config'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_load_config(text, text, text) IS
    'replace dfe_airbyte.allowlist from analytics.yml, and unless NULL dfe_airbyte.blocklist from analytics_hidden_pii.yml and dfe_airbyte.excluded from analytics_blocklist.yml (YAML or JSON); bad input changes nothing';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_load_config(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_load_config(text, text, text) TO dfe_airbyte_admin;

CREATE FUNCTION @extschema@.dfe_airbyte_stream_config() RETURNS jsonb
    AS 'MODULE_PATHNAME', 'dfe_airbyte_stream_config'
    LANGUAGE C STABLE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_stream_config() IS
    'the Airbyte stream configuration built from the allowlist (the body of the connection PATCH)';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_stream_config() FROM PUBLIC;
-- pg_monitor may read the lists anyway; config_problems calls this function
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_stream_config() TO dfe_airbyte_admin, pg_monitor;

CREATE FUNCTION @extschema@.dfe_airbyte_stream_config_json() RETURNS json
    AS 'MODULE_PATHNAME', 'dfe_airbyte_stream_config_json'
    LANGUAGE C STABLE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_stream_config_json() IS
    'the Airbyte stream configuration as the exact PATCH body: compact, keys in the dfe-analytics gem''s order (jsonb would sort them)';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_stream_config_json() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_stream_config_json() TO dfe_airbyte_admin, pg_monitor;
