-- slothealth (issue 9, items 4-7): mirrors the slot health changes of sql/install/70_sync_health.sql
-- (generated from the install piece; keep the two in step).

-- new columns go at the end, as in the install piece
ALTER TABLE dfe_airbyte.sync_jobs
    ADD COLUMN rows_synced bigint,
    ADD COLUMN bytes_synced bigint,
    ADD COLUMN progress_seen text,
    ADD COLUMN progress_at timestamptz;

-- After each successful sync the worker writes down where the Airbyte slot's
-- confirmed_flush_lsn, the allowlisted tables' change counters and the
-- heartbeat were, and compares with the previous successful sync (events
-- slot_not_advancing, sync_no_rows, heartbeat_not_running).  Bounded by
-- dfe_airbyte.history_retention.
CREATE TABLE dfe_airbyte.flow_checks (
    job_id              bigint PRIMARY KEY,
    checked_at          timestamptz NOT NULL DEFAULT now(),
    confirmed_flush_lsn pg_lsn,         -- the Airbyte slot's, NULL when there is no slot
    table_changes       bigint,         -- sum of n_tup_ins + n_tup_upd + n_tup_del of the allowlisted tables
    rows_synced         bigint,         -- the job's rowsSynced
    last_heartbeat      text,           -- max(last_heartbeat) of airbyte_heartbeat, NULL when none
    findings            text[] NOT NULL DEFAULT '{}'  -- the events this check raised
);
COMMENT ON TABLE dfe_airbyte.flow_checks IS
    'what the dfe_airbyte worker checked after each successful Airbyte sync: did the slot advance, did rows flow, did the heartbeat move';

REVOKE ALL ON dfe_airbyte.flow_checks FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.flow_checks TO pg_monitor, dfe_airbyte_admin;

-- sync_health: new columns at the end (last_job_rows_synced ... stuck_after)
CREATE OR REPLACE VIEW dfe_airbyte.sync_health AS
WITH last_job AS (
    SELECT * FROM dfe_airbyte.sync_jobs ORDER BY job_id DESC LIMIT 1
), last_success AS (
    SELECT * FROM dfe_airbyte.sync_jobs WHERE status = 'succeeded' ORDER BY job_id DESC LIMIT 1
), setting AS (
    SELECT coalesce(nullif(current_setting('dfe_airbyte.sync_stale_after', true), ''), '45min')::interval
           AS stale_after,
           coalesce(nullif(current_setting('dfe_airbyte.job_stuck_after', true), ''), '1h')::interval
           AS stuck_after
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
           l.rows_synced AS last_job_rows_synced,
           l.bytes_synced AS last_job_bytes_synced,
           l.progress_at AS last_job_progress_at,
           -- running, and neither rows, bytes nor Airbyte's update time moved
           coalesce(l.status = 'running' AND l.progress_at < now() - setting.stuck_after, false) AS stuck,
           setting.stuck_after
    FROM dfe_airbyte.sync_watch w
    CROSS JOIN setting
    LEFT JOIN last_job l ON true
    LEFT JOIN last_success s ON true
)
SELECT last_job_id, last_job_status, last_job_started_at, last_job_updated_at,
       last_success_job_id, last_success_at, stale, stale_after, watching_since,
       checked_at, check_error,
       CASE
           WHEN checked_at IS NULL THEN
               'the worker has not read Airbyte''s jobs yet: check that dfe_airbyte is in shared_preload_libraries and that the Airbyte settings are set (dfe_airbyte.config_problems)'
           WHEN check_error IS NOT NULL THEN
               'the last check of Airbyte failed (see check_error); check that Airbyte is up and the dfe_airbyte Airbyte settings'
           WHEN stuck THEN
               'sync job ' || last_job_id || ' has been running without progress (rows, bytes, update time) since ' || last_job_progress_at ||
               ': look at its logs in the Airbyte UI; cancel it there (or with dfe_airbyte_repair) if it hangs, and the next scheduled sync starts afresh'
           WHEN stale AND last_success_at IS NULL THEN
               'no successful sync seen since ' || watching_since || ': check the connection''s job history in the Airbyte UI and dfe_airbyte.replication_slot_health'
           WHEN stale THEN
               'no successful sync since ' || last_success_at || ': check the connection''s job history in the Airbyte UI and dfe_airbyte.replication_slot_health'
           WHEN last_job_status IN ('failed', 'cancelled') THEN
               'the last sync job ' || last_job_status || ': see its logs in the Airbyte UI; Airbyte tries again at the next scheduled sync'
       END AS hint,
       last_job_rows_synced, last_job_bytes_synced, last_job_progress_at, stuck, stuck_after
FROM h;
