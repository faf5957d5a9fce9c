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
    timeline            integer,
    -- another server's identifier answering for the target that no DBA has
    -- confirmed (dfe_airbyte_confirm_restore(target)): while it is set the
    -- guard terminates and recreates nothing there and the network worker
    -- runs no task for the target; system_identifier stays the one its
    -- history is from
    unconfirmed_system_identifier bigint
);
COMMENT ON TABLE dfe_airbyte.guard_targets IS
    'the slot guard''s last check of each remote target: reachable or not, since when, and why not';
REVOKE ALL ON dfe_airbyte.guard_targets FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.guard_targets TO pg_monitor, dfe_airbyte_admin;

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

-- dfe_airbyte_confirm_restore(target): a remote target restored from another
-- server's backup, or a new server behind its address, is held as a local
-- restore is (src/restore.c) until a DBA confirms it; SECURITY DEFINER, as
-- the other functions that write the guard's tables: dfe_airbyte_admin has
-- only SELECT on them, and confirmed_by records the caller
DROP FUNCTION @extschema@.dfe_airbyte_confirm_restore();
CREATE FUNCTION @extschema@.dfe_airbyte_confirm_restore(target text DEFAULT 'local') RETURNS text
    AS 'MODULE_PATHNAME', 'dfe_airbyte_confirm_restore'
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_confirm_restore(text) IS 'after a restore of another server''s backup (or a new server behind a remote target''s address): the target now belongs to the server that answers; clears the other server''s slot history and lets the slot guard and the network worker act on it again';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_confirm_restore(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_confirm_restore(text) TO dfe_airbyte_admin;
