-- Sync health, data flow checks and BigQuery policy tags per target
-- (README, "Targets"): every row names the service database it is about;
-- the rows of 0.2.0 are the local database's.  Dropping a target drops its
-- history with it, as dropping the database would have.

ALTER TABLE dfe_airbyte.sync_jobs
    ADD COLUMN target text NOT NULL DEFAULT 'local'
        REFERENCES dfe_airbyte.targets (name) ON DELETE CASCADE,
    DROP CONSTRAINT sync_jobs_pkey,
    ADD PRIMARY KEY (target, job_id);
DROP INDEX dfe_airbyte.sync_jobs_last_seen_idx;
CREATE INDEX sync_jobs_target_last_seen_idx ON dfe_airbyte.sync_jobs (target, last_seen);
COMMENT ON COLUMN dfe_airbyte.sync_jobs.target IS
    'the service database whose Airbyte connection ran the job (see dfe_airbyte.targets)';

ALTER TABLE dfe_airbyte.flow_checks
    ADD COLUMN target text NOT NULL DEFAULT 'local'
        REFERENCES dfe_airbyte.targets (name) ON DELETE CASCADE,
    DROP CONSTRAINT flow_checks_pkey,
    ADD PRIMARY KEY (target, job_id);
COMMENT ON COLUMN dfe_airbyte.flow_checks.target IS
    'the service database whose slot, tables and heartbeat were checked (see dfe_airbyte.targets)';

ALTER TABLE dfe_airbyte.policy_tag_state
    ADD COLUMN target text NOT NULL DEFAULT 'local'
        REFERENCES dfe_airbyte.targets (name) ON DELETE CASCADE,
    DROP CONSTRAINT policy_tag_state_pkey,
    ADD PRIMARY KEY (target, table_name, column_name);
COMMENT ON COLUMN dfe_airbyte.policy_tag_state.target IS
    'the service database whose BigQuery dataset holds the table (see dfe_airbyte.targets)';

-- The worker's bookkeeping: one row per target, written at its first check.
DROP VIEW dfe_airbyte.sync_health;
ALTER TABLE dfe_airbyte.sync_watch
    ADD COLUMN target text NOT NULL DEFAULT 'local'
        REFERENCES dfe_airbyte.targets (name) ON DELETE CASCADE,
    DROP CONSTRAINT sync_watch_pkey,
    DROP COLUMN id,
    ADD PRIMARY KEY (target);
COMMENT ON TABLE dfe_airbyte.sync_watch IS
    'dfe_airbyte worker state behind dfe_airbyte.sync_health, one row per target';

-- One row per enabled target, even before the worker has looked at it.  A
-- target's own sync_stale_after (dfe_airbyte.targets.settings, minutes when
-- it has no unit, as in postgresql.conf) wins over the global one.
CREATE VIEW dfe_airbyte.sync_health AS
WITH setting AS (
    SELECT t.name AS target,
           coalesce(CASE WHEN t.settings ->> 'sync_stale_after' ~ '^\d+$'
                         THEN (t.settings ->> 'sync_stale_after') || 'min'
                         ELSE nullif(t.settings ->> 'sync_stale_after', '') END,
                    nullif(current_setting('dfe_airbyte.sync_stale_after', true), ''), '45min')::interval
           AS stale_after,
           coalesce(nullif(current_setting('dfe_airbyte.job_stuck_after', true), ''), '1h')::interval
           AS stuck_after
    FROM dfe_airbyte.targets t
    WHERE t.enabled
), h AS (
    SELECT setting.target,
           l.job_id AS last_job_id,
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
           setting.stuck_after,
           cw.status AS connection_status
    FROM setting
    LEFT JOIN dfe_airbyte.sync_watch w ON w.target = setting.target
    LEFT JOIN dfe_airbyte.connection_watch cw ON cw.target = setting.target
    LEFT JOIN LATERAL (
        SELECT * FROM dfe_airbyte.sync_jobs j WHERE j.target = setting.target ORDER BY j.job_id DESC LIMIT 1
    ) l ON true
    LEFT JOIN LATERAL (
        SELECT * FROM dfe_airbyte.sync_jobs j
        WHERE j.target = setting.target AND j.status = 'succeeded' ORDER BY j.job_id DESC LIMIT 1
    ) s ON true
)
SELECT target, last_job_id, last_job_status, last_job_started_at, last_job_updated_at,
       last_success_job_id, last_success_at, stale, stale_after, watching_since,
       checked_at, check_error,
       CASE
           WHEN connection_status IN ('inactive', 'deprecated') THEN
               'the Airbyte connection is ' || connection_status || ', so Airbyte runs no syncs: fix the cause (dfe_airbyte.events, the job logs in the Airbyte UI), then SELECT * FROM dfe_airbyte_repair(dry_run => false) re-enables it'
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
       last_job_rows_synced, last_job_bytes_synced, last_job_progress_at, stuck, stuck_after,
       connection_status
FROM h;
COMMENT ON VIEW dfe_airbyte.sync_health IS
    'per enabled target: the last Airbyte sync job seen, the last success and whether syncs are stale (older than dfe_airbyte.sync_stale_after)';
REVOKE ALL ON dfe_airbyte.sync_health FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.sync_health TO pg_monitor, dfe_airbyte_admin;

DROP FUNCTION @extschema@.dfe_airbyte_apply_policy_tags();
CREATE FUNCTION @extschema@.dfe_airbyte_apply_policy_tags(target text DEFAULT 'local')
    RETURNS TABLE (table_name text, column_name text, action text)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_apply_policy_tags'
    LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_apply_policy_tags(text) IS
    'converges the target''s BigQuery policy tags with its blocklist (and, unless dfe_airbyte.hide_unlisted_columns is off, hides final-table columns that are not allowlisted); one row per (table, column) with action tagged, already_tagged, untagged, missing_column or missing_table';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_apply_policy_tags(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_apply_policy_tags(text) TO dfe_airbyte_admin;
