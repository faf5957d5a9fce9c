-- replication_slot_health per target (README, "Targets"): a target column
-- first, "local" as before (read live), then each remote target's slots as
-- the slot guard last sampled them (a view cannot query another server),
-- 'unreachable' with when it was last reached.  Both go through the same
-- final CTEs: one status rule and one hint per status for every target,
-- judged with that target's own settings (dfe_airbyte_slot_guard_settings),
-- the hints naming the target in the commands they give.  It also shows
-- what only some majors have (inactive_since, invalidation_reason, the
-- idle_timeout status): for "local" through dfe_airbyte_slot_details() of
-- 60_slot_majors.sql, for a remote target from the guard's samples.
-- Growth and time to limit come from each target's own samples, fitted
-- over its own sync interval.  (0.2.0's view was dropped in 20_guard.sql,
-- with the functions it used.)

-- What a remote slot's server says only from some majors on, sampled by the
-- slot guard (src/slot_remote.c) so the view can judge it as it judges a
-- local slot: pg_replication_slots.inactive_since (PostgreSQL 17) and
-- invalidation_reason (17; 'idle_timeout' from 18).  NULL for "local",
-- whose view reads them live.
ALTER TABLE dfe_airbyte.slot_samples
    ADD COLUMN inactive_since timestamptz,
    ADD COLUMN invalidation_reason text;
COMMENT ON COLUMN dfe_airbyte.slot_samples.inactive_since IS
    'a remote target''s pg_replication_slots.inactive_since (PostgreSQL 17 and later; NULL before, while active, and for "local")';
COMMENT ON COLUMN dfe_airbyte.slot_samples.invalidation_reason IS
    'a remote target''s pg_replication_slots.invalidation_reason (PostgreSQL 17 and later; NULL before, while valid, and for "local")';

CREATE VIEW dfe_airbyte.replication_slot_health AS
WITH cfg AS MATERIALIZED (
    SELECT * FROM @extschema@.dfe_airbyte_slot_guard_settings()
), ident AS MATERIALIZED (
    -- a restore of another server's backup that no DBA has confirmed yet
    SELECT coalesce((SELECT i.system_identifier <> @extschema@.dfe_airbyte_system_identifier()
                     FROM dfe_airbyte.server_identity i), false) AS restored
), pos AS MATERIALIZED (
    -- on a standby (logical slots exist there from PostgreSQL 16 on) WAL is
    -- measured from the replay position: pg_current_wal_lsn() would fail
    SELECT pg_is_in_recovery() AS in_recovery,
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                ELSE pg_current_wal_lsn() END AS lsn
), rs AS MATERIALIZED (
    -- the function under pg_replication_slots, without that view's join to
    -- pg_database for every slot
    SELECT * FROM pg_get_replication_slots()
), details AS MATERIALIZED (
    -- what only some majors have (inactive_since, invalidation_reason),
    -- from the module built for this one: the same SQL on every major and
    -- after pg_upgrade (src/slot_details.c)
    SELECT * FROM @extschema@.dfe_airbyte_slot_details()
), live AS (
    SELECT r.slot_name::text AS slot_name, r.plugin::text AS plugin, r.active, r.active_pid,
           r.wal_status, r.safe_wal_size,
           (pos.lsn - r.restart_lsn)::bigint AS retained_bytes,
           (pos.lsn - r.confirmed_flush_lsn)::bigint AS flush_lag_bytes,
           false AS missing,
           d.inactive_since, d.invalidation_reason
    FROM rs r CROSS JOIN pos
    LEFT JOIN details d ON d.slot_name = r.slot_name::text
    WHERE r.slot_type = 'logical'
      AND r.datoid = (SELECT oid FROM pg_database WHERE datname = current_database())
    UNION ALL
    -- the Airbyte slot, seen here before, that no longer exists
    SELECT st.slot_name, NULL, false, NULL, NULL, NULL, NULL, NULL, true, NULL, NULL
    FROM dfe_airbyte.slot_state st CROSS JOIN cfg CROSS JOIN pos
    WHERE st.target = 'local' AND st.slot_name = cfg.slot_name AND st.first_seen_at IS NOT NULL AND NOT pos.in_recovery
      AND NOT EXISTS (SELECT 1 FROM rs r WHERE r.slot_name = st.slot_name)
), rhythm AS MATERIALIZED (
    -- Airbyte confirms WAL only at the start of the NEXT sync, so retained
    -- WAL is a sawtooth over the schedule: growth is judged on the
    -- sawtooth's envelope over whole sync intervals, never on the rise
    -- between two syncs.  Quarter intervals are the unit of time.  Each
    -- target's own sync interval ("local" always, as in 0.2.0)
    SELECT t.name AS target, r.sync_interval, now() - 6 * r.sync_interval AS fit_from,
           date_part('epoch', r.sync_interval) / 4 AS quarter_s
    FROM dfe_airbyte.targets t
    CROSS JOIN LATERAL @extschema@.dfe_airbyte_slot_rhythm(t.name) r
    WHERE t.enabled OR t.name = 'local'
), quarters AS (
    -- the highest retained WAL of each quarter interval of the last 7.5
    -- intervals, of this incarnation of each slot of each target: one range
    -- scan of slot_samples_target_sampled_at_idx per target
    SELECT x.target, x.slot_name,
           floor(date_part('epoch', x.sampled_at) / rh.quarter_s)::bigint AS q,
           max(x.retained_bytes) AS peak,
           max(x.sampled_at) AS last_at,
           min(coalesce(st.first_seen_at, '-infinity')) AS first_seen_at
    FROM rhythm rh
    JOIN dfe_airbyte.slot_samples x ON x.target = rh.target
    LEFT JOIN dfe_airbyte.slot_state st ON st.target = x.target AND st.slot_name = x.slot_name
    WHERE x.sampled_at >= rh.fit_from - 1.5 * rh.sync_interval
      AND x.sampled_at >= coalesce(st.first_seen_at, '-infinity')
      AND x.retained_bytes IS NOT NULL
    GROUP BY 1, 2, 3
), envelope AS (
    -- each quarter's envelope: the highest retained WAL of the 1.5 to 1.75
    -- intervals up to it (7 quarters), so that it always spans one peak,
    -- also when a sync starts late
    SELECT target, slot_name, q, last_at, first_seen_at,
           max(peak) OVER (PARTITION BY target, slot_name ORDER BY q RANGE BETWEEN 6 PRECEDING AND CURRENT ROW) AS peak
    FROM quarters
), growth AS (
    -- least-squares slope of the envelope over the last 6 intervals, from
    -- 3 intervals after this incarnation was first seen on (a new slot's
    -- sawtooth takes two syncs to reach its height); needs 3 quarters over
    -- 2 intervals at least
    SELECT e.target, e.slot_name,
           CASE WHEN count(*) >= 3 AND max(e.last_at) - min(e.last_at) >= 2 * rh.sync_interval THEN
               regr_slope(e.peak, e.q * rh.quarter_s) * 3600
           END AS per_hour,
           (array_agg(e.peak ORDER BY e.q DESC))[1] AS last_peak
    FROM envelope e JOIN rhythm rh ON rh.target = e.target
    WHERE e.last_at >= rh.fit_from
      AND e.last_at >= e.first_seen_at + 3 * rh.sync_interval
    GROUP BY e.target, e.slot_name, rh.sync_interval
), pending AS (
    -- a recreated slot whose full re-sync Airbyte has not accepted yet
    SELECT target, slot_name, date_trunc('second', min(recreated_at)) AS since, max(resync_attempts) AS attempts,
           (array_agg(resync_last_error ORDER BY id DESC))[1] AS last_error
    FROM dfe_airbyte.slot_recreations
    WHERE resync_state = 'pending' AND recreated_at IS NOT NULL
    GROUP BY target, slot_name
), tcfg AS MATERIALIZED (
    -- each target's slot guard settings: its own limit, warning fraction,
    -- limit action and inactivity threshold over the global ones
    SELECT 'local'::text AS target, cfg.* FROM cfg
    UNION ALL
    -- (only of the remote targets the guard has checked: those have rows)
    SELECT t.name, c.*
    FROM dfe_airbyte.targets t
    JOIN dfe_airbyte.guard_targets g ON g.target = t.name
    CROSS JOIN LATERAL @extschema@.dfe_airbyte_slot_guard_settings(t.name) c
    WHERE t.enabled AND t.name <> 'local'
), loc AS (
    -- this database's slots, read live
    SELECT 'local'::text AS target, l.slot_name, l.plugin, l.active, l.active_pid, l.wal_status, l.safe_wal_size,
           l.retained_bytes, l.flush_lag_bytes, l.missing, l.inactive_since, l.invalidation_reason,
           true AS reachable, NULL::timestamptz AS last_reached_at, NULL::text AS last_error,
           l.slot_name = cfg.slot_name AND ident.restored AS restored,
           -- the live row says all the guard's condition would
           NULL::text AS condition,
           CASE WHEN l.active THEN now() ELSE st.last_active_at END AS last_active_at,
           st.first_seen_at
    FROM live l CROSS JOIN cfg CROSS JOIN ident
    LEFT JOIN dfe_airbyte.slot_state st ON st.target = 'local' AND st.slot_name = l.slot_name
), last_sample AS (
    -- a remote target's slots as the guard last sampled them (a view cannot
    -- query another server): the latest check that reached it
    SELECT g.target, g.reachable, g.last_reached_at, g.last_error,
           -- another server answers, unconfirmed: the guard holds (src/restore.h)
           g.unconfirmed_system_identifier IS NOT NULL AS restored, x.*
    FROM dfe_airbyte.guard_targets g
    JOIN dfe_airbyte.targets t ON t.name = g.target AND t.enabled
    LEFT JOIN LATERAL (
        SELECT s.slot_name, s.active, s.active_pid, s.wal_status, s.safe_wal_size,
               s.retained_bytes, s.flush_lag_bytes, s.inactive_since, s.invalidation_reason
        FROM dfe_airbyte.slot_samples s
        -- the samples of the check that last reached it (one transaction)
        WHERE s.target = g.target AND s.sampled_at = g.last_reached_at) x ON true
), remote AS (
    SELECT ls.target, ls.slot_name, NULL::text, ls.active, ls.active_pid, ls.wal_status, ls.safe_wal_size,
           ls.retained_bytes, ls.flush_lag_bytes, false, ls.inactive_since, ls.invalidation_reason,
           ls.reachable, ls.last_reached_at, ls.last_error, ls.restored, st.condition,
           CASE WHEN ls.active THEN ls.last_reached_at ELSE st.last_active_at END,
           st.first_seen_at
    FROM last_sample ls
    LEFT JOIN dfe_airbyte.slot_state st ON st.target = ls.target AND st.slot_name = ls.slot_name
    -- a target without slots has no row, unless it is unreachable
    WHERE ls.slot_name IS NOT NULL OR NOT ls.reachable
    UNION ALL
    -- the target's Airbyte slot, seen before, that its last check did not find
    SELECT g.target, st.slot_name, NULL, false, NULL, NULL, NULL, NULL, NULL, true, NULL, NULL,
           g.reachable, g.last_reached_at, g.last_error, g.unconfirmed_system_identifier IS NOT NULL,
           st.condition, st.last_active_at, st.first_seen_at
    FROM dfe_airbyte.slot_state st
    JOIN dfe_airbyte.guard_targets g ON g.target = st.target
    JOIN dfe_airbyte.targets t ON t.name = g.target AND t.enabled
    WHERE st.condition = 'missing' AND st.first_seen_at IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM last_sample ls WHERE ls.target = st.target AND ls.slot_name = st.slot_name)
), j AS (
    -- every target's slots, local and remote, with that target's limits,
    -- growth and sync interval: from here on both are judged alike
    SELECT r.*,
           r.slot_name = c.slot_name AS guarded,
           CASE WHEN r.slot_name = c.slot_name THEN c.limit_bytes END AS limit_bytes,
           c.server_limit_bytes, c.warning_fraction, c.limit_action, c.inactive_after,
           round(g.per_hour)::bigint AS growth_bytes_per_hour,
           g.last_peak AS peak_retained_bytes,
           rh.sync_interval,
           p.since AS resync_pending_since, p.attempts AS resync_attempts, p.last_error AS resync_error,
           -- how a hint names the target's settings, and its slot
           CASE WHEN r.target = 'local' THEN 'dfe_airbyte.' ELSE format('target %s''s ', r.target) END AS setting,
           CASE WHEN r.target = 'local' THEN '' ELSE format(' of target %s', r.target) END AS of_target
    FROM (SELECT * FROM loc UNION ALL SELECT * FROM remote) r
    LEFT JOIN tcfg c ON c.target = r.target
    LEFT JOIN growth g ON g.target = r.target AND g.slot_name = r.slot_name
    LEFT JOIN rhythm rh ON rh.target = r.target
    LEFT JOIN pending p ON p.target = r.target AND p.slot_name = r.slot_name
), k AS (
    SELECT j.*,
           CASE
               WHEN NOT reachable THEN 'unreachable'
               WHEN restored THEN 'restored'
               -- PostgreSQL 18's idle_replication_slot_timeout: no WAL
               -- ran out, the setting did it (and changing it avoids it)
               WHEN invalidation_reason = 'idle_timeout' THEN 'idle_timeout'
               WHEN missing OR wal_status = 'lost' OR condition IN ('lost', 'missing') THEN 'lost'
               WHEN limit_bytes IS NOT NULL AND retained_bytes > limit_bytes THEN 'critical'
               WHEN wal_status = 'unreserved' OR condition = 'over_limit' THEN 'critical'
               WHEN limit_bytes IS NOT NULL AND retained_bytes > limit_bytes * warning_fraction THEN 'warning'
               WHEN server_limit_bytes IS NOT NULL AND safe_wal_size IS NOT NULL
                    AND safe_wal_size < server_limit_bytes * (1 - warning_fraction) THEN 'warning'
               WHEN NOT active AND coalesce(last_active_at, first_seen_at) < now() - inactive_after THEN 'inactive'
               ELSE 'ok'
           END AS status
    FROM j
)
SELECT target,
       slot_name,
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
               -- from the sawtooth's last peak when it is higher: the
               -- limit is reached at a peak, just before a sync
               CASE WHEN limit_bytes IS NOT NULL
                    THEN (limit_bytes - greatest(retained_bytes, peak_retained_bytes))::float8
                         / growth_bytes_per_hour * 3600 END,
               CASE WHEN safe_wal_size IS NOT NULL
                    THEN safe_wal_size::float8 / growth_bytes_per_hour * 3600 END))))
       END AS time_to_limit,
       last_active_at,
       status,
       CASE status
           WHEN 'unreachable' THEN
               format('The slot guard cannot reach target %s (%s); it was last reached %s. Its slots are not watched until it answers: check the server, the network and dfe_airbyte.targets.conninfo.',
                      target, coalesce(last_error, 'no answer'), coalesce(last_reached_at::text, 'never'))
           WHEN 'restored' THEN
               CASE WHEN target = 'local' THEN
                   'This database was restored from a backup of another server (its system identifier differs from the one in the slot guard''s history): the guard recreates nothing and asks Airbyte for nothing. Check that the dfe_airbyte settings are this environment''s, then run SELECT dfe_airbyte_confirm_restore().'
               ELSE
                   format('Another server than the one the slot guard''s history is from answers for target %s (a restore of another server''s backup, or a new server behind its address): the guard terminates and recreates nothing there and the network worker runs no deploy or re-sync for it. Check that the target''s settings and its Airbyte connection are right for this server, then run SELECT dfe_airbyte_confirm_restore(%L).',
                          target, target)
               END
           WHEN 'lost' THEN
               CASE WHEN missing OR (invalidation_reason IS NULL AND wal_status IS DISTINCT FROM 'lost') THEN
                   format('The Airbyte slot %s%s no longer exists (dropped, or this server was promoted from a standby that had no copy of it: a standby keeps one only of a failover slot, from PostgreSQL 17 on with sync_replication_slots = on), so Airbyte cannot continue CDC. ', slot_name, of_target)
               WHEN invalidation_reason = 'rows_removed' THEN
                   format('Slot %s%s was invalidated on this standby: the primary removed rows its decoding needed (a conflict with recovery; hot_standby_feedback = on with a physical slot on the primary prevents it). ', slot_name, of_target)
               WHEN invalidation_reason = 'wal_level_insufficient' THEN
                   format('Slot %s%s was invalidated on this standby because wal_level on the primary is no longer logical. ', slot_name, of_target)
               ELSE
                   format('Slot %s%s was invalidated by max_slot_wal_keep_size: the WAL it needed is gone and its consumer cannot continue. ', slot_name, of_target)
               END ||
               CASE WHEN guarded AND limit_action = 'recreate' THEN
                   setting || 'slot_limit_action = recreate: the worker recreates it and requests a full re-sync from Airbyte (see dfe_airbyte.slot_recreations).'
               WHEN guarded AND target = 'local' THEN
                   'Set dfe_airbyte.slot_limit_action = recreate to let the worker recreate it and request a full re-sync, or recreate it yourself (SELECT pg_create_logical_replication_slot(''' || slot_name || ''', ''pgoutput'')) and run a full re-sync (Refresh, merge) of the Airbyte connection.'
               WHEN guarded THEN
                   format('Set %sslot_limit_action = recreate to let the worker recreate it and request a full re-sync, or see what a repair would do: SELECT * FROM dfe_airbyte_repair(dry_run => true, target => %L).', setting, target)
               ELSE
                   'Drop it (SELECT pg_drop_replication_slot(''' || slot_name || ''')' || replace(of_target, ' of ', ' on ') || ') and set its consumer up again.'
               END
           WHEN 'idle_timeout' THEN
               format('Slot %s%s was invalidated by idle_replication_slot_timeout (%s): no consumer used it for that long, and its consumer cannot continue. ',
                      slot_name, of_target,
                      CASE WHEN target = 'local' THEN current_setting('idle_replication_slot_timeout') ELSE 'the target server''s' END) ||
               CASE WHEN guarded THEN
                   format('Set idle_replication_slot_timeout%s to 0 or above the longest pause between Airbyte syncs; ', replace(of_target, ' of ', ' on ')) ||
                   CASE WHEN limit_action = 'recreate' THEN
                       setting || 'slot_limit_action = recreate: the worker recreates the slot and requests a full re-sync from Airbyte (see dfe_airbyte.slot_recreations).'
                   ELSE
                       'then run SELECT * FROM dfe_airbyte_repair(dry_run => false' ||
                       CASE WHEN target = 'local' THEN '' ELSE format(', target => %L', target) END ||
                       ') to recreate the slot and request the full re-sync it needs.'
                   END
               ELSE
                   'Drop it (SELECT pg_drop_replication_slot(''' || slot_name || ''')' || replace(of_target, ' of ', ' on ') || ') and set its consumer up again.'
               END
           WHEN 'critical' THEN
               CASE WHEN limit_bytes IS NOT NULL AND retained_bytes > limit_bytes THEN
                   format('The Airbyte slot%s retains %s of WAL, more than %smax_slot_wal_size (%s). ',
                          of_target, pg_size_pretty(retained_bytes), setting, pg_size_pretty(limit_bytes)) ||
                   CASE limit_action
                       WHEN 'recreate' THEN 'The worker recreates the slot (Airbyte loses its CDC position) and requests a full re-sync.'
                       WHEN 'terminate' THEN format('The worker ended its walsender; check that Airbyte syncs succeed (dfe_airbyte.sync_health) so the slot is consumed, or set %sslot_limit_action = recreate to release the WAL at the price of a full re-sync.', setting)
                       ELSE format('Check that Airbyte syncs run and succeed (dfe_airbyte.sync_health); if it cannot catch up, set %sslot_limit_action = recreate (full re-sync) or raise %smax_slot_wal_size if the disk allows.', setting, setting)
                   END
               WHEN condition = 'over_limit' AND wal_status IS DISTINCT FROM 'unreserved' THEN
                   format('The Airbyte slot%s was over %smax_slot_wal_size at the slot guard''s last check: check that Airbyte syncs run and succeed (dfe_airbyte.sync_health).', of_target, setting)
               ELSE
                   format('Slot %s%s needs WAL beyond max_slot_wal_keep_size: it will be invalidated at the next checkpoint unless its consumer catches up now.', slot_name, of_target)
               END
           WHEN 'warning' THEN
               CASE WHEN limit_bytes IS NOT NULL AND retained_bytes > limit_bytes * warning_fraction THEN
                   format('The Airbyte slot%s retains %s%% of %smax_slot_wal_size (%s). Check that Airbyte syncs run and succeed (dfe_airbyte.sync_health); at 100%% the worker acts per %sslot_limit_action (%s).',
                          of_target, round(100.0 * retained_bytes / limit_bytes), setting, pg_size_pretty(limit_bytes), setting, limit_action)
               ELSE
                   format('Slot %s%s can retain only %s more WAL before max_slot_wal_keep_size invalidates it; check that its consumer is running.',
                          slot_name, of_target, pg_size_pretty(safe_wal_size))
               END
           WHEN 'inactive' THEN
               format('No consumer has used slot %s%s for more than %s. ', slot_name, of_target, inactive_after) ||
               CASE WHEN guarded THEN 'Check that the Airbyte connection is enabled and its syncs run (dfe_airbyte.sync_health).'
                    ELSE 'If it is no longer needed, drop it (SELECT pg_drop_replication_slot(''' || slot_name || ''')' || replace(of_target, ' of ', ' on ') || '): it retains WAL for as long as it exists.'
               END
           ELSE
               CASE WHEN resync_pending_since IS NOT NULL THEN
                   format('The slot was recreated at %s and Airbyte has not yet accepted the full re-sync it needs (%s attempts%s); the worker retries every dfe_airbyte.check_interval.',
                          resync_pending_since, resync_attempts,
                          CASE WHEN resync_error IS NOT NULL THEN ', last error: ' || resync_error ELSE '' END)
               END
       END AS hint,
       sync_interval,
       peak_retained_bytes,
       inactive_since,
       invalidation_reason
FROM k
ORDER BY target, slot_name;

COMMENT ON VIEW dfe_airbyte.replication_slot_health IS 'one row per logical replication slot of each target ("local": this database, live; the others as the slot guard last sampled them, unreachable ones included): retained WAL, limit, growth, time to limit and a status (ok, warning, critical, inactive, lost, idle_timeout, restored) with a hint; inactive_since and invalidation_reason from the server where its major has them';
REVOKE ALL ON dfe_airbyte.replication_slot_health FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.replication_slot_health TO pg_monitor, dfe_airbyte_admin;
