-- part 10: the allowlist and the blocklist (analytics.yml, analytics_blocklist.yml)

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
    PRIMARY KEY (table_name, column_name)
);
COMMENT ON TABLE dfe_airbyte.blocklist IS 'one row per sensitive column: it gets the hidden policy tag in BigQuery (analytics_blocklist.yml)';

-- the lists are configuration: pg_dump must keep them
SELECT pg_catalog.pg_extension_config_dump('dfe_airbyte.allowlist', '');
SELECT pg_catalog.pg_extension_config_dump('dfe_airbyte.blocklist', '');

REVOKE ALL ON dfe_airbyte.allowlist, dfe_airbyte.blocklist FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON dfe_airbyte.allowlist, dfe_airbyte.blocklist TO dfe_airbyte_admin;
GRANT SELECT ON dfe_airbyte.allowlist, dfe_airbyte.blocklist TO pg_monitor;
