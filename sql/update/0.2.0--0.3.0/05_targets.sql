-- Targets: the service databases this installation serves (README, "Targets").
-- "local" is the database the extension is installed in, a built-in row so
-- that per-service tables can name it as their target; the others are
-- reached over libpq (src/target.c, src/target_conn.c).

CREATE TABLE dfe_airbyte.targets (
    name            text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    -- libpq connection string without a password; NULL only for "local"
    conninfo        text CHECK ((name = 'local') = (conninfo IS NULL)),
    enabled         boolean NOT NULL DEFAULT true,
    settings        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      name NOT NULL DEFAULT session_user,
    -- what the last check (dfe_airbyte_add_target) found
    server_version  text,
    checked_at      timestamptz
);
INSERT INTO dfe_airbyte.targets (name, conninfo, created_by) VALUES ('local', NULL, 'dfe_airbyte');
-- pg_dump keeps the registered targets, not the built-in row
SELECT pg_catalog.pg_extension_config_dump('dfe_airbyte.targets', 'WHERE name <> ''local''');
COMMENT ON TABLE dfe_airbyte.targets IS
    'the service databases dfe_airbyte serves: "local" (this database) and those reached over libpq; add and drop them with dfe_airbyte_add_target() and dfe_airbyte_drop_target()';
COMMENT ON COLUMN dfe_airbyte.targets.conninfo IS
    'libpq connection string without a password (passwords come from the file named by dfe_airbyte.passfile)';
COMMENT ON COLUMN dfe_airbyte.targets.settings IS
    'per-service settings of this target, keyed by the setting''s name without "dfe_airbyte.", valued as in postgresql.conf';
GRANT SELECT ON dfe_airbyte.targets TO dfe_airbyte_admin, pg_monitor;
GRANT UPDATE (enabled, settings) ON dfe_airbyte.targets TO dfe_airbyte_admin;

-- SECURITY DEFINER: only these two add and remove rows, after checking the
-- connection string and, on the live server, the role's privileges.
CREATE FUNCTION @extschema@.dfe_airbyte_add_target(name text, conninfo text, settings jsonb DEFAULT '{}')
    RETURNS void
    AS 'MODULE_PATHNAME', 'dfe_airbyte_add_target'
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_add_target(text, text, jsonb) IS
    'registers a service database reached over libpq: rejects a connection string with a password, checks the settings, connects once and names every privilege its role lacks';

CREATE FUNCTION @extschema@.dfe_airbyte_drop_target(name text)
    RETURNS void
    AS 'MODULE_PATHNAME', 'dfe_airbyte_drop_target'
    LANGUAGE C VOLATILE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_drop_target(text) IS
    'removes a registered target';

REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_add_target(text, text, jsonb),
    @extschema@.dfe_airbyte_drop_target(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_add_target(text, text, jsonb),
    @extschema@.dfe_airbyte_drop_target(text) TO dfe_airbyte_admin;
