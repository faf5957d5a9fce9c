-- bigquery branch, part 20: dfe_airbyte_load_config gets its third list (issue 10).
-- The 2-argument function is dropped: a call with two arguments resolves to
-- the new one through the DEFAULT and behaves as before.

DROP FUNCTION @extschema@.dfe_airbyte_load_config(text, text);

CREATE FUNCTION @extschema@.dfe_airbyte_load_config(allowlist text, blocklist text DEFAULT NULL, excluded text DEFAULT NULL)
    RETURNS TABLE (list text, tables integer, columns integer, added integer, removed integer)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_load_config'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_load_config(text, text, text) IS
    'replace dfe_airbyte.allowlist from analytics.yml, and unless NULL dfe_airbyte.blocklist from analytics_hidden_pii.yml and dfe_airbyte.excluded from analytics_blocklist.yml (YAML or JSON); bad input changes nothing';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_load_config(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_load_config(text, text, text) TO dfe_airbyte_admin;
