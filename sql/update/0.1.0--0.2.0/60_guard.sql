
-- guard (issue 9): failover gap, re-sync job state, the restored status.
-- New columns at the end of their tables, as in sql/install/60_slots.sql.
ALTER TABLE dfe_airbyte.slot_samples
    ADD COLUMN restart_lsn pg_lsn,
    ADD COLUMN confirmed_flush_lsn pg_lsn;
ALTER TABLE dfe_airbyte.slot_recreations
    ADD COLUMN resync_job_status text,
    ADD COLUMN resync_job_checked_at timestamptz,
    ADD COLUMN resync_finished_at timestamptz,
    ADD COLUMN gap_from_lsn pg_lsn,
    ADD COLUMN gap_restart_lsn pg_lsn,
    ADD COLUMN gap_from_time timestamptz;

-- same columns, one more CTE and status: CREATE OR REPLACE keeps grants
CREATE OR REPLACE VIEW dfe_airbyte.replication_slot_health AS
WITH cfg AS MATERIALIZED (
    SELECT * FROM @extschema@.dfe_airbyte_slot_guard_settings()
), ident AS MATERIALIZED (
    -- a restore of another server's backup that no DBA has confirmed yet
    SELECT coalesce((SELECT i.system_identifier <> @extschema@.dfe_airbyte_system_identifier()
                     FROM dfe_airbyte.server_identity i), false) AS restored
), pos AS MATERIALIZED (
    -- on a standby there are no logical slots (PostgreSQL 15), but the view
    -- must not fail there: pg_current_wal_lsn() would
    SELECT pg_is_in_recovery() AS in_recovery,
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                ELSE pg_current_wal_lsn() END AS lsn
), rs AS MATERIALIZED (
    -- the function under pg_replication_slots, without that view's join to
    -- pg_database for every slot
    SELECT * FROM pg_get_replication_slots()
), live AS (
    SELECT r.slot_name::text AS slot_name, r.plugin::text AS plugin, r.active, r.active_pid,
           r.wal_status, r.safe_wal_size,
           (pos.lsn - r.restart_lsn)::bigint AS retained_bytes,
           (pos.lsn - r.confirmed_flush_lsn)::bigint AS flush_lag_bytes,
           false AS missing
    FROM rs r CROSS JOIN pos
    WHERE r.slot_type = 'logical'
      AND r.datoid = (SELECT oid FROM pg_database WHERE datname = current_database())
    UNION ALL
    -- the Airbyte slot, seen here before, that no longer exists
    SELECT st.slot_name, NULL, false, NULL, NULL, NULL, NULL, NULL, true
    FROM dfe_airbyte.slot_state st CROSS JOIN cfg CROSS JOIN pos
    WHERE st.slot_name = cfg.slot_name AND st.first_seen_at IS NOT NULL AND NOT pos.in_recovery
      AND NOT EXISTS (SELECT 1 FROM rs r WHERE r.slot_name = st.slot_name)
), growth AS (
    -- least-squares slope of the retained bytes over the last hour of this
    -- incarnation's samples; a range scan of slot_samples_sampled_at_idx
    SELECT x.slot_name,
           regr_slope(x.retained_bytes, date_part('epoch', x.sampled_at)) * 3600 AS per_hour
    FROM dfe_airbyte.slot_samples x
    LEFT JOIN dfe_airbyte.slot_state st ON st.slot_name = x.slot_name
    WHERE x.sampled_at >= now() - interval '1 hour'
      AND (st.first_seen_at IS NULL OR x.sampled_at >= st.first_seen_at)
    GROUP BY x.slot_name
    HAVING count(x.retained_bytes) >= 3
       AND max(x.sampled_at) - min(x.sampled_at) >= interval '5 minutes'
), pending AS (
    SELECT slot_name, date_trunc('second', min(recreated_at)) AS since, max(resync_attempts) AS attempts,
           (array_agg(resync_last_error ORDER BY id DESC))[1] AS last_error
    FROM dfe_airbyte.slot_recreations
    WHERE resync_state = 'pending' AND recreated_at IS NOT NULL
    GROUP BY slot_name
), j AS (
    SELECT l.*,
           l.slot_name = cfg.slot_name AS guarded,
           CASE WHEN l.slot_name = cfg.slot_name THEN cfg.limit_bytes END AS limit_bytes,
           cfg.server_limit_bytes, cfg.warning_fraction, cfg.limit_action, cfg.inactive_after,
           round(g.per_hour)::bigint AS growth_bytes_per_hour,
           CASE WHEN l.active THEN now() ELSE st.last_active_at END AS last_active_at,
           st.first_seen_at,
           p.since AS resync_pending_since, p.attempts AS resync_attempts, p.last_error AS resync_error
    FROM live l
    CROSS JOIN cfg
    LEFT JOIN growth g ON g.slot_name = l.slot_name
    LEFT JOIN dfe_airbyte.slot_state st ON st.slot_name = l.slot_name
    LEFT JOIN pending p ON p.slot_name = l.slot_name
), k AS (
    SELECT j.*,
           CASE
               WHEN guarded AND (SELECT restored FROM ident) THEN 'restored'
               WHEN missing OR wal_status = 'lost' THEN 'lost'
               WHEN limit_bytes IS NOT NULL AND retained_bytes > limit_bytes THEN 'critical'
               WHEN wal_status = 'unreserved' THEN 'critical'
               WHEN limit_bytes IS NOT NULL AND retained_bytes > limit_bytes * warning_fraction THEN 'warning'
               WHEN server_limit_bytes IS NOT NULL AND safe_wal_size IS NOT NULL
                    AND safe_wal_size < server_limit_bytes * (1 - warning_fraction) THEN 'warning'
               WHEN NOT active AND coalesce(last_active_at, first_seen_at) < now() - inactive_after THEN 'inactive'
               ELSE 'ok'
           END AS status
    FROM j
)
SELECT slot_name,
       plugin,
       active,
       active_pid,
       wal_status,
       safe_wal_size,
       retained_bytes,
       pg_size_pretty(retained_bytes) AS retained_pretty,
       flush_lag_bytes,
       pg_size_pretty(flush_lag_bytes) AS flush_lag_pretty,
       limit_bytes,
       server_limit_bytes,
       CASE WHEN limit_bytes > 0 THEN round(retained_bytes::numeric / limit_bytes, 3) END AS fraction_used,
       growth_bytes_per_hour,
       CASE WHEN growth_bytes_per_hour > 0 AND (limit_bytes IS NOT NULL OR safe_wal_size IS NOT NULL) THEN
           date_trunc('second', make_interval(secs => greatest(0, least(
               CASE WHEN limit_bytes IS NOT NULL
                    THEN (limit_bytes - retained_bytes)::float8 / growth_bytes_per_hour * 3600 END,
               CASE WHEN safe_wal_size IS NOT NULL
                    THEN safe_wal_size::float8 / growth_bytes_per_hour * 3600 END))))
       END AS time_to_limit,
       last_active_at,
       status,
       CASE status
           WHEN 'restored' THEN
               'This database was restored from a backup of another server (its system identifier differs from the one in the slot guard''s history): the guard recreates nothing and asks Airbyte for nothing. Check that the dfe_airbyte settings are this environment''s, then run SELECT dfe_airbyte_confirm_restore().'
           WHEN 'lost' THEN
               CASE WHEN missing THEN
                   format('The Airbyte slot %s no longer exists (dropped, or this server was promoted from a standby: PostgreSQL 15 does not copy slots to standbys), so Airbyte cannot continue CDC. ', slot_name)
               ELSE
                   format('Slot %s was invalidated by max_slot_wal_keep_size: the WAL it needed is gone and its consumer cannot continue. ', slot_name)
               END ||
               CASE WHEN guarded AND limit_action = 'recreate' THEN
                   'dfe_airbyte.slot_limit_action = recreate: the worker recreates it and requests a full re-sync from Airbyte (see dfe_airbyte.slot_recreations).'
               WHEN guarded THEN
                   'Set dfe_airbyte.slot_limit_action = recreate to let the worker recreate it and request a full re-sync, or recreate it yourself (SELECT pg_create_logical_replication_slot(''' || slot_name || ''', ''pgoutput'')) and run a full re-sync (Refresh, merge) of the Airbyte connection.'
               ELSE
                   'Drop it (SELECT pg_drop_replication_slot(''' || slot_name || ''')) and set its consumer up again.'
               END
           WHEN 'critical' THEN
               CASE WHEN limit_bytes IS NOT NULL AND retained_bytes > limit_bytes THEN
                   format('The Airbyte slot retains %s of WAL, more than dfe_airbyte.max_slot_wal_size (%s). ',
                          pg_size_pretty(retained_bytes), pg_size_pretty(limit_bytes)) ||
                   CASE limit_action
                       WHEN 'recreate' THEN 'The worker recreates the slot (Airbyte loses its CDC position) and requests a full re-sync.'
                       WHEN 'terminate' THEN 'The worker ended its walsender; check that Airbyte syncs succeed (dfe_airbyte.sync_health) so the slot is consumed, or set dfe_airbyte.slot_limit_action = recreate to release the WAL at the price of a full re-sync.'
                       ELSE 'Check that Airbyte syncs run and succeed (dfe_airbyte.sync_health); if it cannot catch up, set dfe_airbyte.slot_limit_action = recreate (full re-sync) or raise dfe_airbyte.max_slot_wal_size if the disk allows.'
                   END
               ELSE
                   format('Slot %s needs WAL beyond max_slot_wal_keep_size: it will be invalidated at the next checkpoint unless its consumer catches up now.', slot_name)
               END
           WHEN 'warning' THEN
               CASE WHEN limit_bytes IS NOT NULL AND retained_bytes > limit_bytes * warning_fraction THEN
                   format('The Airbyte slot retains %s%% of dfe_airbyte.max_slot_wal_size (%s). Check that Airbyte syncs run and succeed (dfe_airbyte.sync_health); at 100%% the worker acts per dfe_airbyte.slot_limit_action (%s).',
                          round(100.0 * retained_bytes / limit_bytes), pg_size_pretty(limit_bytes), limit_action)
               ELSE
                   format('Slot %s can retain only %s more WAL before max_slot_wal_keep_size invalidates it; check that its consumer is running.',
                          slot_name, pg_size_pretty(safe_wal_size))
               END
           WHEN 'inactive' THEN
               format('No consumer has used slot %s for more than %s. ', slot_name, inactive_after) ||
               CASE WHEN guarded THEN 'Check that the Airbyte connection is enabled and its syncs run (dfe_airbyte.sync_health).'
                    ELSE 'If it is no longer needed, drop it (SELECT pg_drop_replication_slot(''' || slot_name || ''')): it retains WAL for as long as it exists.'
               END
           ELSE
               CASE WHEN resync_pending_since IS NOT NULL THEN
                   format('The slot was recreated at %s and Airbyte has not yet accepted the full re-sync it needs (%s attempts%s); the worker retries every dfe_airbyte.check_interval.',
                          resync_pending_since, resync_attempts,
                          CASE WHEN resync_error IS NOT NULL THEN ', last error: ' || resync_error ELSE '' END)
               END
       END AS hint
FROM k
ORDER BY slot_name;

COMMENT ON VIEW dfe_airbyte.replication_slot_health IS 'one row per logical replication slot of this database: retained WAL, limit, growth, time to limit and a status (ok, warning, critical, inactive, lost, restored) with a hint';
REVOKE ALL ON dfe_airbyte.replication_slot_health FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.replication_slot_health TO pg_monitor, dfe_airbyte_admin;
