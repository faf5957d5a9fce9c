-- The lists per target: each service database has its own allowlist,
-- blocklist and excluded list (its own analytics.yml and friends).  The
-- rows of 0.2.0 are this database's: 'local'.  Dropping a target drops its
-- lists with it.
ALTER TABLE dfe_airbyte.allowlist
    ADD COLUMN target text NOT NULL DEFAULT 'local'
        REFERENCES dfe_airbyte.targets (name) ON DELETE CASCADE,
    DROP CONSTRAINT allowlist_pkey,
    ADD PRIMARY KEY (target, table_name, column_name);
ALTER TABLE dfe_airbyte.blocklist
    ADD COLUMN target text NOT NULL DEFAULT 'local'
        REFERENCES dfe_airbyte.targets (name) ON DELETE CASCADE,
    DROP CONSTRAINT blocklist_pkey,
    ADD PRIMARY KEY (target, table_name, column_name);
ALTER TABLE dfe_airbyte.excluded
    ADD COLUMN target text NOT NULL DEFAULT 'local'
        REFERENCES dfe_airbyte.targets (name) ON DELETE CASCADE,
    DROP CONSTRAINT excluded_pkey,
    ADD PRIMARY KEY (target, table_name, column_name);
COMMENT ON COLUMN dfe_airbyte.allowlist.target IS
    'the service database the row is about ("local": this database; see dfe_airbyte.targets)';
COMMENT ON COLUMN dfe_airbyte.blocklist.target IS
    'the service database the row is about ("local": this database; see dfe_airbyte.targets)';
COMMENT ON COLUMN dfe_airbyte.excluded.target IS
    'the service database the row is about ("local": this database; see dfe_airbyte.targets)';

-- load_config replaces the lists of one target (the last argument)
DROP FUNCTION @extschema@.dfe_airbyte_load_config(text, text, text);
CREATE FUNCTION @extschema@.dfe_airbyte_load_config(allowlist text, blocklist text DEFAULT NULL,
                                                    excluded text DEFAULT NULL, target text DEFAULT 'local')
    RETURNS TABLE (list text, tables integer, columns integer, added integer, removed integer)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_load_config'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_load_config(text, text, text, text) IS
    'replace the target''s rows of dfe_airbyte.allowlist from analytics.yml, and unless NULL of dfe_airbyte.blocklist from analytics_hidden_pii.yml and of dfe_airbyte.excluded from analytics_blocklist.yml (YAML or JSON); bad input changes nothing; other targets'' lists are untouched';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_load_config(text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_load_config(text, text, text, text) TO dfe_airbyte_admin;
