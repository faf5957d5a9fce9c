-- upgrade part 70 (connection): sync_health gains connection_status at the
-- end (the Airbyte connection's status as the worker last read it) and a
-- hint for a disabled connection.
CREATE OR REPLACE VIEW dfe_airbyte.sync_health AS
WITH last_job AS (
    SELECT * FROM dfe_airbyte.sync_jobs ORDER BY job_id DESC LIMIT 1
), last_success AS (
    SELECT * FROM dfe_airbyte.sync_jobs WHERE status = 'succeeded' ORDER BY job_id DESC LIMIT 1
), setting AS (
    SELECT coalesce(nullif(current_setting('dfe_airbyte.sync_stale_after', true), ''), '45min')::interval
           AS stale_after
), h AS (
    SELECT l.job_id AS last_job_id,
           l.status AS last_job_status,
           l.started_at AS last_job_started_at,
           l.last_updated_at AS last_job_updated_at,
           s.job_id AS last_success_job_id,
           coalesce(s.last_updated_at, s.started_at) AS last_success_at,
           CASE
               WHEN w.watching_since IS NULL THEN NULL
               WHEN s.job_id IS NOT NULL
                   THEN coalesce(s.last_updated_at, s.started_at) < now() - setting.stale_after
               ELSE w.watching_since < now() - setting.stale_after
           END AS stale,
           setting.stale_after,
           w.watching_since,
           w.checked_at,
           w.check_error,
           cw.status AS connection_status
    FROM dfe_airbyte.sync_watch w
    CROSS JOIN setting
    LEFT JOIN dfe_airbyte.connection_watch cw ON true
    LEFT JOIN last_job l ON true
    LEFT JOIN last_success s ON true
)
SELECT last_job_id, last_job_status, last_job_started_at, last_job_updated_at,
       last_success_job_id, last_success_at, stale, stale_after, watching_since,
       checked_at, check_error,
       CASE
           WHEN connection_status IN ('inactive', 'deprecated') THEN
               'the Airbyte connection is ' || connection_status || ', so Airbyte runs no syncs: fix the cause (dfe_airbyte.events, the job logs in the Airbyte UI), then SELECT * FROM dfe_airbyte_repair(dry_run => false) re-enables it'
           WHEN checked_at IS NULL THEN
               'the worker has not read Airbyte''s jobs yet: check that dfe_airbyte is in shared_preload_libraries and that the Airbyte settings are set (dfe_airbyte.config_problems)'
           WHEN check_error IS NOT NULL THEN
               'the last check of Airbyte failed (see check_error); check that Airbyte is up and the dfe_airbyte Airbyte settings'
           WHEN stale AND last_success_at IS NULL THEN
               'no successful sync seen since ' || watching_since || ': check the connection''s job history in the Airbyte UI and dfe_airbyte.replication_slot_health'
           WHEN stale THEN
               'no successful sync since ' || last_success_at || ': check the connection''s job history in the Airbyte UI and dfe_airbyte.replication_slot_health'
           WHEN last_job_status IN ('failed', 'cancelled') THEN
               'the last sync job ' || last_job_status || ': see its logs in the Airbyte UI; Airbyte tries again at the next scheduled sync'
       END AS hint,
       connection_status
FROM h;
