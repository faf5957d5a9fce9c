-- The connection watch, dfe_airbyte_deploy_plan() and dfe_airbyte_repair():
-- signatures, privileges, and what happens without Airbyte settings.
SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
       pg_get_function_result(p.oid) AS result,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_exec,
       has_function_privilege('dfe_airbyte_admin', p.oid, 'EXECUTE') AS admin_exec,
       p.proconfig
FROM pg_proc p
WHERE p.proname IN ('dfe_airbyte_deploy_plan', 'dfe_airbyte_repair')
ORDER BY 1;

SELECT c.relname,
       has_table_privilege('pg_monitor', c.oid, 'SELECT') AS monitor,
       has_table_privilege('dfe_airbyte_admin', c.oid, 'SELECT') AS admin,
       has_table_privilege('dfe_airbyte_admin', c.oid, 'UPDATE') AS admin_update,
       has_table_privilege('public', c.oid, 'SELECT') AS public
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'dfe_airbyte' AND c.relname = 'connection_watch';
SELECT count(*) AS one_row FROM dfe_airbyte.connection_watch;
-- sync_health shows the connection's status, as its last column
SELECT column_name FROM information_schema.columns
WHERE table_schema = 'dfe_airbyte' AND table_name = 'sync_health'
ORDER BY ordinal_position DESC LIMIT 1;

SELECT name, setting, unit FROM pg_settings
WHERE name IN ('dfe_airbyte.remove_connection_drift', 'dfe_airbyte.job_stuck_after',
               'dfe_airbyte.airbyte_max_fields')
ORDER BY name;

-- without settings: a clear error (psql exits non-zero: usable from CI)
SELECT * FROM dfe_airbyte_deploy_plan();

-- a dry run without Airbyte: the slot step only, nothing written
SELECT count(*) AS events_before FROM dfe_airbyte.events WHERE kind LIKE 'repair%' \gset
SELECT * FROM dfe_airbyte_repair();
SELECT count(*) = :events_before AS no_event, (SELECT count(*) FROM dfe_airbyte.slot_recreations) AS recreations,
       (SELECT count(*) FROM pg_replication_slots) AS slots
FROM dfe_airbyte.events WHERE kind LIKE 'repair%';

-- a real repair needs a transaction that has not written (slot creation)
BEGIN;
CREATE TEMP TABLE t (i int);
INSERT INTO t VALUES (1);
SELECT * FROM dfe_airbyte_repair(dry_run => false);
ROLLBACK;

-- NULL arguments: no repair at all (STRICT)
SELECT count(*) FROM dfe_airbyte_repair(NULL);

-- others may not call them
CREATE ROLE regress_conn_plain LOGIN;
SET ROLE regress_conn_plain;
SELECT * FROM dfe_airbyte_deploy_plan();
SELECT * FROM dfe_airbyte_repair();
RESET ROLE;
DROP ROLE regress_conn_plain;
