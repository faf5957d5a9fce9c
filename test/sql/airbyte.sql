-- The Airbyte and deploy SQL surface: signatures, privileges, what happens
-- without Airbyte settings, queueing a deploy, the Rails lock key.
SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
       pg_get_function_result(p.oid) AS result,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_exec,
       has_function_privilege('dfe_airbyte_admin', p.oid, 'EXECUTE') AS admin_exec
FROM pg_proc p
WHERE p.proname IN ('dfe_airbyte_connection_refresh', 'dfe_airbyte_start_sync', 'dfe_airbyte_job_status',
                    'dfe_airbyte_wait_for_job', 'dfe_airbyte_deploy', 'dfe_airbyte_migration_lock_key')
ORDER BY 1;

-- readable by monitoring, not by everyone
SELECT c.relname,
       has_table_privilege('pg_monitor', c.oid, 'SELECT') AS monitor,
       has_table_privilege('dfe_airbyte_admin', c.oid, 'SELECT') AS admin,
       has_table_privilege('public', c.oid, 'SELECT') AS public
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'dfe_airbyte' AND c.relname IN ('deploys', 'sync_jobs', 'sync_health', 'sync_watch')
ORDER BY 1;
SELECT column_name FROM information_schema.columns
WHERE table_schema = 'dfe_airbyte' AND table_name = 'deploys' ORDER BY ordinal_position;
SELECT column_name FROM information_schema.columns
WHERE table_schema = 'dfe_airbyte' AND table_name = 'sync_health' ORDER BY ordinal_position;

-- ActiveRecord's key: 2053462845 * Zlib.crc32('contrib_regression')
SELECT dfe_airbyte_migration_lock_key() = 1744538773407486630 AS rails_key;

-- without settings: clear errors naming the setting
SELECT dfe_airbyte_start_sync();
SELECT dfe_airbyte_job_status(1);
SELECT dfe_airbyte_wait_for_job(1, '-1 hour');

-- a deploy is a queued row of the calling transaction; rollback leaves nothing
BEGIN;
SET LOCAL client_min_messages = error;  -- the worker may still be starting: no WARNING
SELECT dfe_airbyte_deploy() > 0 AS queued;
SELECT state, step, target, requested_by = current_user AS by_me, log FROM dfe_airbyte.deploys;
ROLLBACK;
SELECT count(*) FROM dfe_airbyte.deploys;

-- a deploy is for a registered, enabled target
SELECT dfe_airbyte_deploy(false, 'nosuch');
UPDATE dfe_airbyte.targets SET enabled = false WHERE name = 'local';
SELECT dfe_airbyte_deploy(target => 'local');
UPDATE dfe_airbyte.targets SET enabled = true WHERE name = 'local';

-- wait => true cannot run in a transaction block
BEGIN;
SELECT dfe_airbyte_deploy(wait => true);
ROLLBACK;

-- sync_health is one row before anything was seen
SELECT last_job_id, last_success_job_id, stale_after FROM dfe_airbyte.sync_health;

-- the query the README ("Deploys") gives to find who holds the migration lock
SELECT pg_advisory_lock(dfe_airbyte_migration_lock_key()) IS NOT NULL AS locked;
SELECT pid = pg_backend_pid() AS it_is_me FROM pg_stat_activity
WHERE pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
              AND (classid::bigint << 32 | objid::bigint) = dfe_airbyte_migration_lock_key());
SELECT pg_advisory_unlock(dfe_airbyte_migration_lock_key());
