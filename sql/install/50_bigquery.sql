-- part 50: BigQuery policy tags (SPEC §5) and the Google credential check (§8)

CREATE FUNCTION @extschema@.dfe_airbyte_apply_policy_tags()
    RETURNS TABLE (table_name text, column_name text, action text)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_apply_policy_tags'
    LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_apply_policy_tags() IS
    'puts the hidden policy tag on every blocklisted column of the allowlisted BigQuery tables and removes it where a column is no longer blocklisted; one row per (table, column) with action tagged, already_tagged, untagged, missing_column or missing_table';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_apply_policy_tags() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_apply_policy_tags() TO dfe_airbyte_admin;

CREATE FUNCTION @extschema@.dfe_airbyte_google_auth_check(
    OUT credential_source text,
    OUT service_account text,
    OUT expires_at timestamptz,
    OUT renew_after timestamptz,
    OUT from_cache boolean)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_google_auth_check'
    LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_google_auth_check() IS
    'gets a Google access token through the configured credential chain (or reuses this session''s) and says how, never showing the token';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_google_auth_check() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_google_auth_check() TO dfe_airbyte_admin;
