-- The slot fields that differ between PostgreSQL majors, in
-- dfe_airbyte.replication_slot_health: inactive_since (17+) and
-- invalidation_reason (wal_removed on every major; rows_removed and
-- wal_level_insufficient for slots on a standby, 16+; idle_timeout, 18+, also
-- as its own status).  The SQL is the same on every major, so that it
-- installs on 15 and stays right after pg_upgrade: the module, built for each
-- major, reads the fields (src/slot_details.c).  The view that shows them,
-- written once for 0.3.0, is in 61_guard_health.sql.

CREATE FUNCTION @extschema@.dfe_airbyte_slot_details(
    OUT slot_name text,
    OUT inactive_since timestamptz,
    OUT invalidation_reason text,
    OUT failover boolean,
    OUT synced boolean)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'dfe_airbyte_slot_details'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_slot_details() IS 'per logical slot of this database, what only some PostgreSQL majors have: inactive_since (17+), invalidation_reason (wal_removed; rows_removed, wal_level_insufficient 16+; idle_timeout 18+), failover and synced (17+; false before)';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_slot_details() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_slot_details() TO pg_monitor, dfe_airbyte_admin;
