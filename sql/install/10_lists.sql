-- part 10: the three lists: allowlist (analytics.yml), blocklist (analytics_hidden_pii.yml,
-- the columns the gem tags hidden) and excluded (analytics_blocklist.yml, columns not copied)

CREATE TABLE dfe_airbyte.allowlist (
    table_name  text NOT NULL CHECK (table_name <> ''),
    column_name text NOT NULL CHECK (column_name <> ''),
    loaded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, column_name)
);
COMMENT ON TABLE dfe_airbyte.allowlist IS 'one row per replicated column (analytics.yml)';

CREATE TABLE dfe_airbyte.blocklist (
    table_name  text NOT NULL CHECK (table_name <> ''),
    column_name text NOT NULL CHECK (column_name <> ''),
    loaded_at   timestamptz NOT NULL DEFAULT now(),
    -- NULL: dfe_airbyte.hidden_policy_tag; else this column's own policy tag
    policy_tag  text CHECK (policy_tag ~ '^projects/[^/]+/locations/[^/]+/taxonomies/[^/]+/policyTags/[^/]+$'),
    PRIMARY KEY (table_name, column_name)
);
COMMENT ON TABLE dfe_airbyte.blocklist IS 'one row per sensitive column: it gets the hidden policy tag (or its own policy_tag) in BigQuery (analytics_hidden_pii.yml)';

CREATE TABLE dfe_airbyte.excluded (
    table_name  text NOT NULL CHECK (table_name <> ''),
    column_name text NOT NULL CHECK (column_name <> ''),
    loaded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, column_name)
);
COMMENT ON TABLE dfe_airbyte.excluded IS 'one row per column deliberately not replicated (analytics_blocklist.yml): config_problems stops asking about it';

-- the lists are configuration: pg_dump must keep them
SELECT pg_catalog.pg_extension_config_dump('dfe_airbyte.allowlist', '');
SELECT pg_catalog.pg_extension_config_dump('dfe_airbyte.blocklist', '');
SELECT pg_catalog.pg_extension_config_dump('dfe_airbyte.excluded', '');

REVOKE ALL ON dfe_airbyte.allowlist, dfe_airbyte.blocklist FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON dfe_airbyte.allowlist, dfe_airbyte.blocklist TO dfe_airbyte_admin;
GRANT SELECT ON dfe_airbyte.allowlist, dfe_airbyte.blocklist TO pg_monitor;
REVOKE ALL ON dfe_airbyte.excluded FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON dfe_airbyte.excluded TO dfe_airbyte_admin;
GRANT SELECT ON dfe_airbyte.excluded TO pg_monitor;
