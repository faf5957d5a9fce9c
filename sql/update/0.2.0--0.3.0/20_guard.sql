-- The slot guard over every target (README, "Targets"): the guard samples
-- every enabled target's slots each dfe_airbyte.check_interval over
-- connections it keeps (src/slot_remote.c), so its history tables name the
-- target a row is about ('local' for this database, as in 0.2.0).

ALTER TABLE dfe_airbyte.slot_samples
    ADD COLUMN target text NOT NULL DEFAULT 'local'
        REFERENCES dfe_airbyte.targets (name) ON DELETE CASCADE;
CREATE INDEX slot_samples_target_sampled_at_idx ON dfe_airbyte.slot_samples (target, sampled_at);
COMMENT ON COLUMN dfe_airbyte.slot_samples.target IS
    'the service database the slot belongs to ("local": this database; see dfe_airbyte.targets)';

ALTER TABLE dfe_airbyte.slot_state
    ADD COLUMN target text NOT NULL DEFAULT 'local'
        REFERENCES dfe_airbyte.targets (name) ON DELETE CASCADE,
    DROP CONSTRAINT slot_state_pkey,
    ADD CONSTRAINT slot_state_pkey PRIMARY KEY (target, slot_name);
COMMENT ON COLUMN dfe_airbyte.slot_state.target IS
    'the service database the slot belongs to ("local": this database; see dfe_airbyte.targets)';

ALTER TABLE dfe_airbyte.slot_recreations
    ADD COLUMN target text NOT NULL DEFAULT 'local'
        REFERENCES dfe_airbyte.targets (name) ON DELETE CASCADE;
CREATE INDEX slot_recreations_target_slot_idx ON dfe_airbyte.slot_recreations (target, slot_name);
COMMENT ON COLUMN dfe_airbyte.slot_recreations.target IS
    'the service database whose slot was recreated ("local": this database; see dfe_airbyte.targets)';

-- Whether the guard reached each remote target at its last check: a target
-- that hangs, refuses or whose host name does not resolve is 'unreachable'
-- (an event when it becomes so and when it is back) and costs the others
-- nothing.  "local" has no row: the guard runs inside it.
CREATE TABLE dfe_airbyte.guard_targets (
    target              text PRIMARY KEY REFERENCES dfe_airbyte.targets (name) ON DELETE CASCADE,
    reachable           boolean NOT NULL,
    checked_at          timestamptz NOT NULL,
    last_reached_at     timestamptz,
    unreachable_since   timestamptz,
    last_error          text,       -- libpq's message, never a secret (src/target_conn.c)
    last_errcode        text,
    elapsed_ms          double precision,
    server_version      integer,
    -- which server answered: pg_control_system() and pg_control_checkpoint()
    -- (another identifier: a restore or a new server; a higher timeline: a failover)
    system_identifier   bigint,
    timeline            integer
);
COMMENT ON TABLE dfe_airbyte.guard_targets IS
    'the slot guard''s last check of each remote target: reachable or not, since when, and why not';
REVOKE ALL ON dfe_airbyte.guard_targets FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.guard_targets TO pg_monitor, dfe_airbyte_admin;

-- replication_slot_health: a target column first, "local" as in 0.2.0 (read
-- live), then each remote target's slots from the guard's latest samples
-- (a view cannot query another server), 'unreachable' with when it was last
-- reached.  The local part reads only the local rows of the history tables.
DROP VIEW dfe_airbyte.replication_slot_health;
CREATE VIEW dfe_airbyte.replication_slot_health AS
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
    WHERE st.target = 'local' AND st.slot_name = cfg.slot_name AND st.first_seen_at IS NOT NULL AND NOT pos.in_recovery
      AND NOT EXISTS (SELECT 1 FROM rs r WHERE r.slot_name = st.slot_name)
), rhythm AS MATERIALIZED (
    -- Airbyte confirms WAL only at the start of the NEXT sync, so retained
    -- WAL is a sawtooth over the schedule: growth is judged on the
    -- sawtooth's envelope over whole sync intervals, never on the rise
    -- between two syncs.  Quarter intervals are the unit of time.
    SELECT r.sync_interval, now() - 6 * r.sync_interval AS fit_from,
           date_part('epoch', r.sync_interval) / 4 AS quarter_s
    FROM @extschema@.dfe_airbyte_slot_rhythm() r
), quarters AS (
    -- the highest retained WAL of each quarter interval of the last 7.5
    -- intervals, of this incarnation of each slot: one pass over a range
    -- scan of slot_samples_sampled_at_idx
    SELECT x.slot_name,
           floor(date_part('epoch', x.sampled_at) / rh.quarter_s)::bigint AS q,
           max(x.retained_bytes) AS peak,
           max(x.sampled_at) AS last_at,
           min(coalesce(st.first_seen_at, '-infinity')) AS first_seen_at
    FROM dfe_airbyte.slot_samples x
    CROSS JOIN rhythm rh
    LEFT JOIN dfe_airbyte.slot_state st ON st.target = x.target AND st.slot_name = x.slot_name
    WHERE x.target = 'local' AND x.sampled_at >= rh.fit_from - 1.5 * rh.sync_interval
      AND x.sampled_at >= coalesce(st.first_seen_at, '-infinity')
      AND x.retained_bytes IS NOT NULL
    GROUP BY 1, 2
), envelope AS (
    -- each quarter's envelope: the highest retained WAL of the 1.5 to 1.75
    -- intervals up to it (7 quarters), so that it always spans one peak,
    -- also when a sync starts late
    SELECT slot_name, q, last_at, first_seen_at,
           max(peak) OVER (PARTITION BY slot_name ORDER BY q RANGE BETWEEN 6 PRECEDING AND CURRENT ROW) AS peak
    FROM quarters
), growth AS (
    -- least-squares slope of the envelope over the last 6 intervals, from
    -- 3 intervals after this incarnation was first seen on (a new slot's
    -- sawtooth takes two syncs to reach its height); needs 3 quarters over
    -- 2 intervals at least
    SELECT e.slot_name,
           CASE WHEN count(*) >= 3 AND max(e.last_at) - min(e.last_at) >= 2 * rh.sync_interval THEN
               regr_slope(e.peak, e.q * rh.quarter_s) * 3600
           END AS per_hour,
           (array_agg(e.peak ORDER BY e.q DESC))[1] AS last_peak
    FROM envelope e CROSS JOIN rhythm rh
    WHERE e.last_at >= rh.fit_from
      AND e.last_at >= e.first_seen_at + 3 * rh.sync_interval
    GROUP BY e.slot_name, rh.sync_interval
), pending AS (
    SELECT slot_name, date_trunc('second', min(recreated_at)) AS since, max(resync_attempts) AS attempts,
           (array_agg(resync_last_error ORDER BY id DESC))[1] AS last_error
    FROM dfe_airbyte.slot_recreations
    WHERE target = 'local' AND resync_state = 'pending' AND recreated_at IS NOT NULL
    GROUP BY slot_name
), j AS (
    SELECT l.*,
           l.slot_name = cfg.slot_name AS guarded,
           CASE WHEN l.slot_name = cfg.slot_name THEN cfg.limit_bytes END AS limit_bytes,
           cfg.server_limit_bytes, cfg.warning_fraction, cfg.limit_action, cfg.inactive_after,
           round(g.per_hour)::bigint AS growth_bytes_per_hour,
           g.last_peak AS peak_retained_bytes,
           (SELECT rh.sync_interval FROM rhythm rh) AS sync_interval,
           CASE WHEN l.active THEN now() ELSE st.last_active_at END AS last_active_at,
           st.first_seen_at,
           p.since AS resync_pending_since, p.attempts AS resync_attempts, p.last_error AS resync_error
    FROM live l
    CROSS JOIN cfg
    LEFT JOIN growth g ON g.slot_name = l.slot_name
    LEFT JOIN dfe_airbyte.slot_state st ON st.target = 'local' AND st.slot_name = l.slot_name
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
), loc AS (
SELECT 'local'::text AS target,
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
       END AS hint,
       sync_interval,
       peak_retained_bytes
FROM k
), last_sample AS (
    -- a remote target's slots as the guard last sampled them (a view cannot
    -- query another server): the latest check that reached it
    SELECT g.target, g.reachable, g.last_reached_at, g.last_error, x.*
    FROM dfe_airbyte.guard_targets g
    JOIN dfe_airbyte.targets t ON t.name = g.target AND t.enabled
    LEFT JOIN LATERAL (
        SELECT s.slot_name, s.active, s.active_pid, s.wal_status, s.safe_wal_size,
               s.retained_bytes, s.flush_lag_bytes
        FROM dfe_airbyte.slot_samples s
        -- the samples of the check that last reached it (one transaction)
        WHERE s.target = g.target AND s.sampled_at = g.last_reached_at) x ON true
), remote AS (
    SELECT ls.*, st.condition, st.last_active_at,
           CASE
               WHEN NOT ls.reachable THEN 'unreachable'
               WHEN st.condition IN ('lost', 'missing') OR ls.wal_status = 'lost' THEN 'lost'
               WHEN st.condition = 'over_limit' OR ls.wal_status = 'unreserved' THEN 'critical'
               ELSE 'ok'
           END AS status
    FROM last_sample ls
    LEFT JOIN dfe_airbyte.slot_state st ON st.target = ls.target AND st.slot_name = ls.slot_name
    -- a target without slots has no row, unless it is unreachable
    WHERE ls.slot_name IS NOT NULL OR NOT ls.reachable
    UNION ALL
    -- the target's Airbyte slot, seen before, that its last check did not find
    SELECT g.target, g.reachable, g.last_reached_at, g.last_error, st.slot_name, false, NULL, NULL, NULL,
           NULL, NULL, st.condition, st.last_active_at,
           CASE WHEN g.reachable THEN 'lost' ELSE 'unreachable' END
    FROM dfe_airbyte.slot_state st
    JOIN dfe_airbyte.guard_targets g ON g.target = st.target
    JOIN dfe_airbyte.targets t ON t.name = g.target AND t.enabled
    WHERE st.condition = 'missing' AND st.first_seen_at IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM last_sample ls WHERE ls.target = st.target AND ls.slot_name = st.slot_name)
)
SELECT * FROM loc
UNION ALL
SELECT target, slot_name, NULL::text, active, active_pid, wal_status, safe_wal_size,
       retained_bytes, pg_size_pretty(retained_bytes), flush_lag_bytes, pg_size_pretty(flush_lag_bytes),
       NULL::bigint, NULL::bigint, NULL::numeric, NULL::bigint, NULL::interval,
       CASE WHEN active THEN last_reached_at ELSE last_active_at END,
       status,
       CASE status
           WHEN 'unreachable' THEN
               format('The slot guard cannot reach target %s (%s); it was last reached %s. Its slots are not watched until it answers: check the server, the network and dfe_airbyte.targets.conninfo.',
                      target, coalesce(last_error, 'no answer'), coalesce(last_reached_at::text, 'never'))
           WHEN 'lost' THEN
               format('The Airbyte slot %s of target %s is lost or no longer exists, so Airbyte cannot continue CDC: recreate it and run a full re-sync of the Airbyte connection.', slot_name, target)
           WHEN 'critical' THEN
               format('The Airbyte slot %s of target %s retains %s of WAL, more than the target''s max_slot_wal_size: check that Airbyte syncs run and succeed (dfe_airbyte.sync_health).', slot_name, target, pg_size_pretty(retained_bytes))
       END,
       NULL::interval, NULL::bigint
FROM remote
ORDER BY target, slot_name;

COMMENT ON VIEW dfe_airbyte.replication_slot_health IS 'one row per logical replication slot of each target ("local": this database, live; the others as the slot guard last sampled them): retained WAL, limit, growth, time to limit and a status (ok, warning, critical, inactive, lost, restored, unreachable) with a hint';
REVOKE ALL ON dfe_airbyte.replication_slot_health FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.replication_slot_health TO pg_monitor, dfe_airbyte_admin;

-- slot_limit_advice: the local WAL rate from the local samples only.
CREATE OR REPLACE VIEW dfe_airbyte.slot_limit_advice AS
WITH cfg AS MATERIALIZED (
    SELECT * FROM @extschema@.dfe_airbyte_slot_guard_settings()
), disk AS MATERIALIZED (
    SELECT * FROM @extschema@.dfe_airbyte_disk_space()
), pos AS MATERIALIZED (
    SELECT pg_is_in_recovery() AS in_recovery,
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END AS lsn
), first_sample AS (
    -- the guard's samples of pg_current_wal_lsn(), up to 7 days back: two
    -- index lookups, not a scan
    SELECT sampled_at, current_lsn FROM dfe_airbyte.slot_samples
    WHERE target = 'local' AND sampled_at >= now() - interval '7 days' AND current_lsn IS NOT NULL
    ORDER BY sampled_at LIMIT 1
), last_sample AS (
    SELECT sampled_at, current_lsn FROM dfe_airbyte.slot_samples
    WHERE target = 'local' AND sampled_at >= now() - interval '7 days' AND current_lsn IS NOT NULL
    ORDER BY sampled_at DESC LIMIT 1
), measured AS (
    -- from the samples once they span an hour, else from pg_stat_wal since
    -- its last reset (an hour at least), else unknown
    SELECT CASE WHEN l.sampled_at - f.sampled_at >= interval '1 hour' THEN
                    ((l.current_lsn - f.current_lsn) / date_part('epoch', l.sampled_at - f.sampled_at) * 86400)::bigint
                WHEN w.stats_reset < now() - interval '1 hour' THEN
                    (w.wal_bytes / date_part('epoch', now() - w.stats_reset) * 86400)::bigint
           END AS wal_bytes_per_day,
           CASE WHEN l.sampled_at - f.sampled_at >= interval '1 hour' THEN 'slot_samples'
                WHEN w.stats_reset < now() - interval '1 hour' THEN 'pg_stat_wal'
           END AS wal_measured_from,
           CASE WHEN l.sampled_at - f.sampled_at >= interval '1 hour' THEN date_trunc('second', l.sampled_at - f.sampled_at)
                WHEN w.stats_reset < now() - interval '1 hour' THEN date_trunc('second', now() - w.stats_reset)
           END AS wal_measured_over
    FROM pg_stat_wal w
    LEFT JOIN first_sample f ON true
    LEFT JOIN last_sample l ON true
), slot AS (
    SELECT (SELECT (pos.lsn - r.restart_lsn)::bigint
            FROM pg_get_replication_slots() r, cfg
            WHERE r.slot_name = cfg.slot_name AND r.restart_lsn IS NOT NULL) AS retained_bytes
    FROM pos
), a AS (
    SELECT m.*, d.total_bytes AS disk_total_bytes, d.free_bytes AS disk_free_bytes, d.source AS disk_source,
           coalesce(s.retained_bytes, 0) AS slot_retained_bytes,
           -- Azure Database for PostgreSQL turns read-only below 5 GiB free
           -- or above 95 % used: keep that much free whatever the platform
           greatest(5::bigint * 1024 * 1024 * 1024, coalesce(d.total_bytes / 20, 0)) AS reserve_bytes,
           cfg.limit_bytes AS current_limit_bytes, cfg.limit_action, cfg.server_limit_bytes
    FROM measured m CROSS JOIN disk d CROSS JOIN slot s CROSS JOIN cfg
), b AS (
    SELECT a.*,
           -- the space WAL retained by the slot may take: what is free now
           -- plus what the slot already holds, less the reserve
           greatest(0, a.disk_free_bytes + a.slot_retained_bytes - a.reserve_bytes) AS headroom_bytes
    FROM a
), c AS (
    SELECT b.*,
           CASE WHEN wal_bytes_per_day IS NOT NULL THEN
               -- two days of WAL (at least 1 GB), but never more than half the headroom; whole MB
               (least(greatest(2 * wal_bytes_per_day, 1024::bigint * 1024 * 1024), headroom_bytes / 2)
                / (1024 * 1024)) * 1024 * 1024
           END AS recommended_limit_bytes,
           NOT ((current_limit_bytes IS NOT NULL AND limit_action IN ('terminate', 'recreate'))
                OR server_limit_bytes IS NOT NULL) AS unbounded,
           least(CASE WHEN limit_action IN ('terminate', 'recreate') THEN current_limit_bytes END,
                 server_limit_bytes) AS effective_bound_bytes
    FROM b
), v AS (
    SELECT c.*,
           CASE
               WHEN unbounded THEN 'unbounded'
               WHEN effective_bound_bytes > headroom_bytes THEN 'exceeds_headroom'
               WHEN wal_bytes_per_day IS NULL THEN 'not_measured'
               WHEN recommended_limit_bytes < 2 * wal_bytes_per_day THEN 'disk_too_small'
               WHEN effective_bound_bytes < 2 * wal_bytes_per_day THEN 'under_two_days'
               ELSE 'ok'
           END AS verdict
    FROM c
)
SELECT wal_bytes_per_day,
       pg_size_pretty(wal_bytes_per_day) AS wal_per_day_pretty,
       wal_measured_from,
       wal_measured_over,
       disk_total_bytes,
       disk_free_bytes,
       pg_size_pretty(disk_free_bytes) AS disk_free_pretty,
       disk_source,
       slot_retained_bytes,
       reserve_bytes,
       headroom_bytes,
       pg_size_pretty(headroom_bytes) AS headroom_pretty,
       recommended_limit_bytes,
       pg_size_pretty(recommended_limit_bytes) AS recommended_limit_pretty,
       CASE WHEN wal_bytes_per_day > 0 THEN round(recommended_limit_bytes::numeric / wal_bytes_per_day, 1) END
           AS recommended_limit_days,
       current_limit_bytes,
       CASE WHEN wal_bytes_per_day > 0 THEN round(current_limit_bytes::numeric / wal_bytes_per_day, 1) END
           AS current_limit_days,
       limit_action,
       server_limit_bytes,
       verdict,
       CASE verdict
           WHEN 'unbounded' THEN
               'Nothing bounds the WAL the Airbyte slot may retain: set dfe_airbyte.max_slot_wal_size' ||
               coalesce(' = ''' || (recommended_limit_bytes / (1024 * 1024)) || 'MB''', '') ||
               ' with dfe_airbyte.slot_limit_action = recreate (or terminate), and max_slot_wal_keep_size above it as the server''s backstop.'
           WHEN 'exceeds_headroom' THEN
               format('The slot may retain %s before anything acts, but the disk has room for only %s (free space plus what the slot holds, less a reserve of %s): the disk fills first. Lower dfe_airbyte.max_slot_wal_size%s, or grow the disk.',
                      pg_size_pretty(effective_bound_bytes), pg_size_pretty(headroom_bytes), pg_size_pretty(reserve_bytes),
                      coalesce(' to ' || (recommended_limit_bytes / (1024 * 1024)) || 'MB', ''))
           WHEN 'not_measured' THEN
               'Not enough history to measure the WAL written per day yet (an hour of slot samples, or pg_stat_wal an hour after its reset).'
           WHEN 'disk_too_small' THEN
               format('Two days of WAL (%s) do not fit in half the headroom (%s): an Airbyte outage of a weekend fills the disk. Grow the disk; until then dfe_airbyte.max_slot_wal_size = ''%sMB'' with slot_limit_action = recreate.',
                      pg_size_pretty(2 * wal_bytes_per_day), pg_size_pretty(headroom_bytes / 2),
                      recommended_limit_bytes / (1024 * 1024))
           WHEN 'under_two_days' THEN
               format('The limit holds %s days of WAL: an Airbyte outage of a weekend passes it. Consider dfe_airbyte.max_slot_wal_size = ''%sMB''.',
                      round(effective_bound_bytes::numeric / wal_bytes_per_day, 1), recommended_limit_bytes / (1024 * 1024))
       END AS hint
FROM v;

COMMENT ON VIEW dfe_airbyte.slot_limit_advice IS 'the WAL written per day, the disk''s free space and headroom, the slot limit they call for (two days of WAL, at most half the headroom) and how the current settings compare';
REVOKE ALL ON dfe_airbyte.slot_limit_advice FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.slot_limit_advice TO pg_monitor, dfe_airbyte_admin;

-- dfe_airbyte_check_slots_now(target): one check's sampling of any target
DROP FUNCTION @extschema@.dfe_airbyte_check_slots_now();
CREATE FUNCTION @extschema@.dfe_airbyte_check_slots_now(
    target text DEFAULT 'local',
    OUT slots integer,
    OUT elapsed_ms double precision,
    OUT buffers_hit bigint,
    OUT buffers_read bigint)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_check_slots_now'
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_check_slots_now(text) IS 'samples the logical slots of the target now ("local": this database), as one worker check does (without the limit action); returns its cost';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_check_slots_now(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_check_slots_now(text) TO dfe_airbyte_admin;
