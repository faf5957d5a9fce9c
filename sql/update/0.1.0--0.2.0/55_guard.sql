-- part 55: the two background workers and the slot guard's server identity
-- (issue 9: the slot guard acts within seconds whatever Airbyte does).

-- Both workers, from shared memory: the guard (samples and acts on the slot,
-- never calls out) and the network worker (deploys, re-syncs, sync health).
CREATE FUNCTION @extschema@.dfe_airbyte_workers(
    OUT worker text, OUT pid integer, OUT started_at timestamptz, OUT database name)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'dfe_airbyte_workers'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_workers() IS 'the dfe_airbyte background workers (guard, network): pid and start time, NULL when not running, and the database they serve';

CREATE VIEW dfe_airbyte.workers AS
    SELECT w.worker, w.pid, w.started_at, w.database
    FROM @extschema@.dfe_airbyte_workers() w;
COMMENT ON VIEW dfe_airbyte.workers IS 'the dfe_airbyte background workers: guard (slot guard, no network calls) and network (deploys, re-syncs, sync health); pid NULL when not running';
REVOKE ALL ON dfe_airbyte.workers FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.workers TO pg_monitor, dfe_airbyte_admin;

-- The server this database belongs to, as the slot guard first saw it
-- (pg_control_system().system_identifier).  Another identifier at run time
-- means a restore of another server's backup: the guard then reports
-- 'restored' and does nothing until dfe_airbyte_confirm_restore().
CREATE TABLE dfe_airbyte.server_identity (
    one                         boolean PRIMARY KEY DEFAULT true CHECK (one),
    system_identifier           bigint NOT NULL,
    recorded_at                 timestamptz NOT NULL DEFAULT now(),
    previous_system_identifier  bigint,
    confirmed_at                timestamptz,
    confirmed_by                name
);
COMMENT ON TABLE dfe_airbyte.server_identity IS 'the system identifier of the server the dfe_airbyte slot guard history belongs to (a restore elsewhere is detected by a different one)';
REVOKE ALL ON dfe_airbyte.server_identity FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.server_identity TO pg_monitor, dfe_airbyte_admin;

CREATE FUNCTION @extschema@.dfe_airbyte_system_identifier() RETURNS bigint
    AS 'MODULE_PATHNAME', 'dfe_airbyte_system_identifier'
    LANGUAGE C STABLE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_system_identifier() IS 'this server''s system identifier, as pg_control_system() shows it';

CREATE FUNCTION @extschema@.dfe_airbyte_confirm_restore() RETURNS text
    AS 'MODULE_PATHNAME', 'dfe_airbyte_confirm_restore'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_confirm_restore() IS 'after a restore of another server''s backup: this database now belongs to this server; clears the other server''s slot history and lets the slot guard act again';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_confirm_restore() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_confirm_restore() TO dfe_airbyte_admin;
