-- part 50: BigQuery policy tags (SPEC §5) and the Google credential check (§8)

CREATE FUNCTION @extschema@.dfe_airbyte_apply_policy_tags()
    RETURNS TABLE (table_name text, column_name text, action text)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_apply_policy_tags'
    LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_apply_policy_tags() IS
    'converges BigQuery policy tags with the blocklist (and, unless dfe_airbyte.hide_unlisted_columns is off, hides final-table columns that are not allowlisted); one row per (table, column) with action tagged, already_tagged, untagged, missing_column or missing_table';
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

-- When each column was last seen carrying the tag the extension manages
-- (issue 10): the start of an exposure window when Airbyte's destination
-- drops a tag, and the record of which tags the extension itself set.
CREATE TABLE dfe_airbyte.policy_tag_state (
    table_name       text NOT NULL,
    column_name      text NOT NULL,
    policy_tag       text NOT NULL,
    first_tagged_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_tagged timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, column_name)
);
COMMENT ON TABLE dfe_airbyte.policy_tag_state IS
    'per BigQuery column: the policy tag the extension manages on it and when it was last seen there (exposure windows; only these tags are ever removed)';
REVOKE ALL ON dfe_airbyte.policy_tag_state FROM PUBLIC;
-- dfe_airbyte_apply_policy_tags() runs as its caller and records what it saw
GRANT SELECT, INSERT, UPDATE, DELETE ON dfe_airbyte.policy_tag_state TO dfe_airbyte_admin;
GRANT SELECT ON dfe_airbyte.policy_tag_state TO pg_monitor;
