-- dfe_airbyte install script, part 00: schema, roles, shared objects.
-- The install script is assembled from sql/install/*.sql in name order.

\echo Use "CREATE EXTENSION dfe_airbyte" to load this file. \quit

-- search_path safety (SPEC §9): nothing in this script may resolve to an
-- object that a database owner planted in public (CVE-2018-1058).  Every
-- object of ours is qualified (dfe_airbyte.x, @extschema@.dfe_airbyte_x),
-- so the script needs nothing but pg_catalog.  SET LOCAL, not SET:
-- CREATE EXTENSION runs the script like a function with a SET clause
-- (execute_extension_script: NewGUCNestLevel() ... AtEOXact_GUC()), which
-- undoes a SET LOCAL at the end of the script, while a plain SET would
-- outlive it and leave the caller's session with this search_path.
SET LOCAL search_path = pg_catalog, pg_temp;

CREATE SCHEMA dfe_airbyte;
COMMENT ON SCHEMA dfe_airbyte IS 'dfe_airbyte: allowlist, blocklist, deploys, health views and history';

-- The role that may call out to Airbyte/BigQuery, change the lists and run
-- deploys.  Roles are cluster-wide: DROP EXTENSION leaves it in place.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dfe_airbyte_admin') THEN
        CREATE ROLE dfe_airbyte_admin NOLOGIN;
    END IF;
END
$$;
COMMENT ON ROLE dfe_airbyte_admin IS 'may run dfe_airbyte deploys, load its lists and call Airbyte/BigQuery';

REVOKE ALL ON SCHEMA dfe_airbyte FROM PUBLIC;
GRANT USAGE ON SCHEMA dfe_airbyte TO dfe_airbyte_admin, pg_monitor;

-- What the worker noticed and did, with its reason.  Every feature writes here.
CREATE TABLE dfe_airbyte.events (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    severity    text NOT NULL DEFAULT 'info'
                CHECK (severity IN ('info', 'warning', 'critical')),
    kind        text NOT NULL,
    object      text,
    detail      text NOT NULL,
    data        jsonb
);
CREATE INDEX events_at_idx ON dfe_airbyte.events (at);
COMMENT ON TABLE dfe_airbyte.events IS 'what the dfe_airbyte worker noticed and did (limit crossed, slot recreated, sync stale, tags re-applied)';
GRANT SELECT ON dfe_airbyte.events TO dfe_airbyte_admin, pg_monitor;

CREATE FUNCTION @extschema@.dfe_airbyte_worker_pid() RETURNS integer
    AS 'MODULE_PATHNAME', 'dfe_airbyte_worker_pid'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_worker_pid() IS 'pid of the dfe_airbyte network worker (deploys), NULL when it is not running; both workers are in dfe_airbyte.workers';
