-- part 70: sync health (the last Airbyte sync jobs, staleness)

-- Every sync job the worker has seen, newest status; bounded by
-- dfe_airbyte.history_retention and dfe_airbyte.history_max_rows (the newest
-- successful job is always kept: staleness is measured from it).
CREATE TABLE dfe_airbyte.sync_jobs (
    job_id          bigint PRIMARY KEY,
    status          text NOT NULL,
    job_type        text,
    started_at      timestamptz,
    last_updated_at timestamptz,
    first_seen      timestamptz NOT NULL DEFAULT now(),
    last_seen       timestamptz NOT NULL DEFAULT now(),
    rows_synced     bigint,             -- rowsSynced as the job reported it
    bytes_synced    bigint,             -- bytesSynced
    progress_seen   text,               -- rows/bytes/lastUpdatedAt at the last poll
    progress_at     timestamptz         -- when the worker last saw that change
);
CREATE INDEX sync_jobs_last_seen_idx ON dfe_airbyte.sync_jobs (last_seen);
COMMENT ON TABLE dfe_airbyte.sync_jobs IS
    'Airbyte sync jobs of the connection as the dfe_airbyte worker saw them (every dfe_airbyte.sync_poll_interval)';

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

-- The worker's own bookkeeping: one row.
CREATE TABLE dfe_airbyte.sync_watch (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    watching_since  timestamptz,        -- first check with Airbyte configured
    checked_at      timestamptz,        -- last check, successful or not
    check_error     text,               -- why the last check failed, NULL when it worked
    stale           boolean NOT NULL DEFAULT false  -- staleness as last reported in an event
);
INSERT INTO dfe_airbyte.sync_watch DEFAULT VALUES;
COMMENT ON TABLE dfe_airbyte.sync_watch IS 'dfe_airbyte worker state behind dfe_airbyte.sync_health';

CREATE VIEW dfe_airbyte.sync_health AS
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
           setting.stuck_after,
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
    'the last Airbyte sync job seen, the last success and whether syncs are stale (older than dfe_airbyte.sync_stale_after)';

REVOKE ALL ON dfe_airbyte.sync_jobs, dfe_airbyte.sync_watch, dfe_airbyte.sync_health FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.sync_jobs, dfe_airbyte.sync_watch, dfe_airbyte.sync_health
    TO pg_monitor, dfe_airbyte_admin;
REVOKE ALL ON dfe_airbyte.flow_checks FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.flow_checks TO pg_monitor, dfe_airbyte_admin;
