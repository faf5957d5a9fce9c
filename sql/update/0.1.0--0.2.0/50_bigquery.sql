-- bigquery branch, part 50: last-seen-tagged times (issue 10)

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
COMMENT ON FUNCTION @extschema@.dfe_airbyte_apply_policy_tags() IS
    'converges BigQuery policy tags with the blocklist (and, unless dfe_airbyte.hide_unlisted_columns is off, hides final-table columns that are not allowlisted); one row per (table, column) with action tagged, already_tagged, untagged, missing_column or missing_table';
