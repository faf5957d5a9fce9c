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
    unconfirmed_system_identifier bigint,
    -- the server's max_slot_wal_keep_size (NULL: none, as on Azure) and
    -- what its databases and WAL use of its disk, measured at most once a
    -- minute (dfe_airbyte_disk_space(target) sets it against disk_size)
    server_limit_bytes  bigint,
    disk_used_bytes     bigint,
    disk_used_at        timestamptz
);
COMMENT ON TABLE dfe_airbyte.guard_targets IS
    'the slot guard''s last check of each remote target: reachable or not, since when, and why not';
REVOKE ALL ON dfe_airbyte.guard_targets FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.guard_targets TO pg_monitor, dfe_airbyte_admin;

-- The slot guard's settings, the sync rhythm and the disk per target: each
-- function takes the target last ("local", this database, when omitted, as
-- in 0.2.0) and reads the target's settings (dfe_airbyte.targets.settings
-- over the global ones), for a remote target what the guard last sampled
-- there (src/slot_health.c).  The views built on them are dropped first and
-- made again per target: slot_limit_advice below, replication_slot_health
-- in 61_guard_health.sql.
DROP VIEW dfe_airbyte.replication_slot_health;
DROP VIEW dfe_airbyte.slot_limit_advice;

DROP FUNCTION @extschema@.dfe_airbyte_slot_guard_settings();
CREATE FUNCTION @extschema@.dfe_airbyte_slot_guard_settings(
    target text DEFAULT 'local',
    OUT slot_name text,
    OUT limit_bytes bigint,
    OUT warning_fraction double precision,
    OUT limit_action text,
    OUT inactive_after interval,
    OUT server_limit_bytes bigint)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_slot_guard_settings'
    LANGUAGE C STABLE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_slot_guard_settings(text) IS 'the slot guard''s settings for the target ("local": this database): Airbyte slot, max_slot_wal_size in bytes (NULL: no limit), warning fraction, limit action, inactivity threshold, the server''s max_slot_wal_keep_size in bytes (NULL: none; a remote target''s as the guard last sampled it)';

DROP FUNCTION @extschema@.dfe_airbyte_slot_rhythm();
CREATE FUNCTION @extschema@.dfe_airbyte_slot_rhythm(
    target text DEFAULT 'local',
    OUT sync_interval interval,
    OUT interval_source text,
    OUT inactive_intervals integer)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_slot_rhythm'
    LANGUAGE C STABLE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_slot_rhythm(text) IS 'the Airbyte sync interval the slot guard judges the target''s growth and inactivity over, where it comes from, and how many intervals without a consumer make a slot inactive';

DROP FUNCTION @extschema@.dfe_airbyte_disk_space();
CREATE FUNCTION @extschema@.dfe_airbyte_disk_space(
    target text DEFAULT 'local',
    OUT total_bytes bigint,
    OUT free_bytes bigint,
    OUT source text,
    OUT reserve_bytes bigint)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_disk_space'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_disk_space(text) IS 'the target''s disk: for "local" total and free bytes of the data directory''s file system (statvfs) or the free space set by dfe_airbyte.disk_free_override (total NULL); for a remote target its disk_size less what the slot guard last measured its databases and WAL use (free NULL until measured; both NULL without disk_size); and the reserve Azure''s read-only rule needs free (5 GiB or 5 %)';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_disk_space(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_disk_space(text) TO pg_monitor, dfe_airbyte_admin;

-- slot_limit_advice per target: a row for each enabled target.  "local" as
-- in 0.2.0 (its live slot, statvfs or dfe_airbyte.disk_free_override, the
-- WAL rate from its samples or pg_stat_wal); a remote target from what the
-- slot guard samples there (a view cannot query another server): the WAL
-- rate from its samples of pg_current_wal_lsn(), the slot's retained WAL
-- from its latest sample, its disk from dfe_airbyte_disk_space(target)
-- (disk_size less the measured use), its limits from its settings.
CREATE VIEW dfe_airbyte.slot_limit_advice AS
WITH tg AS MATERIALIZED (
    SELECT t.name AS target FROM dfe_airbyte.targets t WHERE t.enabled
), cfg AS MATERIALIZED (
    SELECT tg.target, c.* FROM tg CROSS JOIN LATERAL @extschema@.dfe_airbyte_slot_guard_settings(tg.target) c
), disk AS MATERIALIZED (
    SELECT tg.target, d.* FROM tg CROSS JOIN LATERAL @extschema@.dfe_airbyte_disk_space(tg.target) d
), pos AS MATERIALIZED (
    SELECT pg_is_in_recovery() AS in_recovery,
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END AS lsn
), span AS (
    -- each target's first and last samples of its server's WAL position, up
    -- to 7 days back: two index lookups per target, not a scan
    SELECT tg.target, f.sampled_at AS first_at, f.current_lsn AS first_lsn,
           l.sampled_at AS last_at, l.current_lsn AS last_lsn
    FROM tg
    LEFT JOIN LATERAL (
        SELECT x.sampled_at, x.current_lsn FROM dfe_airbyte.slot_samples x
        WHERE x.target = tg.target AND x.sampled_at >= now() - interval '7 days' AND x.current_lsn IS NOT NULL
        ORDER BY x.sampled_at LIMIT 1) f ON true
    LEFT JOIN LATERAL (
        SELECT x.sampled_at, x.current_lsn FROM dfe_airbyte.slot_samples x
        WHERE x.target = tg.target AND x.sampled_at >= now() - interval '7 days' AND x.current_lsn IS NOT NULL
        ORDER BY x.sampled_at DESC LIMIT 1) l ON true
), measured AS (
    -- from the samples once they span an hour, else (this database only)
    -- from pg_stat_wal since its last reset (an hour at least), else unknown
    SELECT s.target,
           CASE WHEN s.last_at - s.first_at >= interval '1 hour' THEN
                    ((s.last_lsn - s.first_lsn) / date_part('epoch', s.last_at - s.first_at) * 86400)::bigint
                WHEN s.target = 'local' AND w.stats_reset < now() - interval '1 hour' THEN
                    (w.wal_bytes / date_part('epoch', now() - w.stats_reset) * 86400)::bigint
           END AS wal_bytes_per_day,
           CASE WHEN s.last_at - s.first_at >= interval '1 hour' THEN 'slot_samples'
                WHEN s.target = 'local' AND w.stats_reset < now() - interval '1 hour' THEN 'pg_stat_wal'
           END AS wal_measured_from,
           CASE WHEN s.last_at - s.first_at >= interval '1 hour' THEN date_trunc('second', s.last_at - s.first_at)
                WHEN s.target = 'local' AND w.stats_reset < now() - interval '1 hour' THEN date_trunc('second', now() - w.stats_reset)
           END AS wal_measured_over
    FROM span s CROSS JOIN pg_stat_wal w
), slot AS (
    -- the Airbyte slot's retained WAL: live here, from the latest sample of
    -- a remote target
    SELECT cfg.target,
           CASE WHEN cfg.target = 'local' THEN
               (SELECT (pos.lsn - r.restart_lsn)::bigint
                FROM pg_get_replication_slots() r, pos
                WHERE r.slot_name = cfg.slot_name AND r.restart_lsn IS NOT NULL)
           ELSE
               (SELECT x.retained_bytes FROM dfe_airbyte.slot_samples x
                WHERE x.target = cfg.target AND x.slot_name = cfg.slot_name
                  AND x.sampled_at >= now() - interval '7 days'
                ORDER BY x.sampled_at DESC LIMIT 1)
           END AS retained_bytes
    FROM cfg
), a AS (
    SELECT m.*, d.total_bytes AS disk_total_bytes, d.free_bytes AS disk_free_bytes, d.source AS disk_source,
           coalesce(s.retained_bytes, 0) AS slot_retained_bytes,
           -- Azure Database for PostgreSQL turns read-only below 5 GiB free
           -- or above 95 % used: keep that much free whatever the platform
           -- (dfe_airbyte_disk_space() says how much)
           d.reserve_bytes,
           c.limit_bytes AS current_limit_bytes, c.limit_action, c.server_limit_bytes
    FROM measured m
    JOIN disk d ON d.target = m.target
    JOIN slot s ON s.target = m.target
    JOIN cfg c ON c.target = m.target
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
               WHEN headroom_bytes IS NULL THEN 'not_measured'
               WHEN effective_bound_bytes > headroom_bytes THEN 'exceeds_headroom'
               WHEN wal_bytes_per_day IS NULL THEN 'not_measured'
               WHEN recommended_limit_bytes < 2 * wal_bytes_per_day THEN 'disk_too_small'
               WHEN effective_bound_bytes < 2 * wal_bytes_per_day THEN 'under_two_days'
               ELSE 'ok'
           END AS verdict
    FROM c
)
SELECT target,
       wal_bytes_per_day,
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
               'Nothing bounds the WAL the Airbyte slot may retain: set ' ||
               CASE WHEN target = 'local' THEN
                   'dfe_airbyte.max_slot_wal_size' ||
                   coalesce(' = ''' || (recommended_limit_bytes / (1024 * 1024)) || 'MB''', '') ||
                   ' with dfe_airbyte.slot_limit_action = recreate (or terminate), and max_slot_wal_keep_size above it as the server''s backstop.'
               ELSE
                   format('the target''s max_slot_wal_size%s with slot_limit_action recreate (or terminate): UPDATE dfe_airbyte.targets SET settings = settings || ''{"max_slot_wal_size": "...", "slot_limit_action": "recreate"}'' WHERE name = %L;',
                          coalesce(' (' || (recommended_limit_bytes / (1024 * 1024)) || 'MB)', ''), target)
               END
           WHEN 'exceeds_headroom' THEN
               format('The slot may retain %s before anything acts, but the disk has room for only %s (free space plus what the slot holds, less a reserve of %s): the disk fills first. Lower %s%s, or grow the disk.',
                      pg_size_pretty(effective_bound_bytes), pg_size_pretty(headroom_bytes), pg_size_pretty(reserve_bytes),
                      CASE WHEN target = 'local' THEN 'dfe_airbyte.max_slot_wal_size' ELSE 'the target''s max_slot_wal_size' END,
                      coalesce(' to ' || (recommended_limit_bytes / (1024 * 1024)) || 'MB', ''))
           WHEN 'not_measured' THEN
               CASE WHEN disk_total_bytes IS NULL AND disk_free_bytes IS NULL THEN
                   format('Target %s has no disk_size, so its free space is unknown: UPDATE dfe_airbyte.targets SET settings = settings || ''{"disk_size": "<its storage size, e.g. 128GB>"}'' WHERE name = %L;', target, target)
               WHEN disk_free_bytes IS NULL THEN
                   format('The slot guard has not measured the disk use of target %s yet (it does once a minute while it reaches the server; see dfe_airbyte.guard_targets).', target)
               WHEN target = 'local' THEN
                   'Not enough history to measure the WAL written per day yet (an hour of slot samples, or pg_stat_wal an hour after its reset).'
               ELSE
                   'Not enough history to measure the WAL written per day yet (an hour of the slot guard''s samples of the target).'
               END
           WHEN 'disk_too_small' THEN
               format('Two days of WAL (%s) do not fit in half the headroom (%s): an Airbyte outage of a weekend fills the disk. Grow the disk; until then %s = ''%sMB'' with slot_limit_action = recreate.',
                      pg_size_pretty(2 * wal_bytes_per_day), pg_size_pretty(headroom_bytes / 2),
                      CASE WHEN target = 'local' THEN 'dfe_airbyte.max_slot_wal_size' ELSE 'the target''s max_slot_wal_size' END,
                      recommended_limit_bytes / (1024 * 1024))
           WHEN 'under_two_days' THEN
               format('The limit holds %s days of WAL: an Airbyte outage of a weekend passes it. Consider %s = ''%sMB''.',
                      round(effective_bound_bytes::numeric / wal_bytes_per_day, 1),
                      CASE WHEN target = 'local' THEN 'dfe_airbyte.max_slot_wal_size' ELSE 'the target''s max_slot_wal_size' END,
                      recommended_limit_bytes / (1024 * 1024))
       END AS hint
FROM v
ORDER BY target <> 'local', target;

COMMENT ON VIEW dfe_airbyte.slot_limit_advice IS 'per enabled target ("local": this database): the WAL written per day, the disk''s free space and headroom, the slot limit they call for (two days of WAL, at most half the headroom) and how the current settings compare';
REVOKE ALL ON dfe_airbyte.slot_limit_advice FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.slot_limit_advice TO pg_monitor, dfe_airbyte_admin;

-- dfe_airbyte_flow_problems(): this database's row of slot_limit_advice
-- (a remote target's disk is checked by dfe_airbyte_config_problems(target),
-- src/config_targets.c, from the same dfe_airbyte_disk_space()).
CREATE OR REPLACE FUNCTION @extschema@.dfe_airbyte_flow_problems()
    RETURNS TABLE (severity text, object text, problem text, hint text)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    v_src text := coalesce(nullif(current_setting('dfe_airbyte.source_schema', true), ''), 'public');
    v_pub text := coalesce(nullif(current_setting('dfe_airbyte.publication', true), ''), 'airbyte_publication');
    hb oid;
    has_row boolean;
    adv record;
BEGIN
    SELECT c.oid INTO hb FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = v_src AND c.relname = 'airbyte_heartbeat' AND c.relkind IN ('r', 'p');
    IF hb IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_publication p WHERE p.pubname = v_pub)
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables pt
                            WHERE pt.pubname = v_pub AND pt.schemaname = v_src AND pt.tablename = 'airbyte_heartbeat') THEN
            RETURN QUERY SELECT 'error'::text, 'airbyte_heartbeat'::text,
                format('table airbyte_heartbeat is not in publication "%s": the heartbeat writes no change Airbyte reads, so on a quiet database the slot never advances and retains WAL', v_pub),
                format('ALTER PUBLICATION %I ADD TABLE %I.airbyte_heartbeat;', v_pub, v_src);
        END IF;
        IF (SELECT count(*) FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = hb AND a.attname IN ('id', 'last_heartbeat') AND NOT a.attisdropped) < 2 THEN
            RETURN QUERY SELECT 'error'::text, 'airbyte_heartbeat'::text,
                'table airbyte_heartbeat lacks the column id or last_heartbeat that the heartbeat stream and the source''s heartbeat query use'::text,
                format('CREATE TABLE %I.airbyte_heartbeat (id integer, last_heartbeat timestamptz) as DfE''s Terraform does, with REPLICA IDENTITY FULL and one row with id = 1.', v_src);
        ELSE
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.airbyte_heartbeat WHERE id = 1)', v_src) INTO has_row;
            IF NOT has_row THEN
                RETURN QUERY SELECT 'error'::text, 'airbyte_heartbeat'::text,
                    'table airbyte_heartbeat has no row with id = 1: the source''s heartbeat query (UPDATE airbyte_heartbeat SET last_heartbeat = now() WHERE id = 1) changes nothing, so a quiet database retains WAL'::text,
                    format('INSERT INTO %I.airbyte_heartbeat (id, last_heartbeat) VALUES (1, now());', v_src);
            END IF;
        END IF;
    END IF;

    SELECT * INTO adv FROM dfe_airbyte.slot_limit_advice WHERE target = 'local';
    IF adv.verdict = 'unbounded' THEN
        -- only ever with max_slot_wal_keep_size = -1: that setting is the object
        RETURN QUERY SELECT 'warning'::text, 'max_slot_wal_keep_size'::text,
            'nothing bounds the WAL the Airbyte slot may retain: no dfe_airbyte.max_slot_wal_size with slot_limit_action terminate or recreate, and no max_slot_wal_keep_size; a stalled Airbyte fills the disk'::text,
            adv.hint;
    ELSIF adv.verdict = 'exceeds_headroom' THEN
        RETURN QUERY SELECT 'warning'::text, 'disk headroom'::text,
            format('the slot may retain %s before anything acts, more than the disk''s headroom (%s): the disk fills before the limit is reached',
                   pg_catalog.pg_size_pretty(least(CASE WHEN adv.limit_action IN ('terminate', 'recreate') THEN adv.current_limit_bytes END,
                                                   adv.server_limit_bytes)),
                   adv.headroom_pretty),
            adv.hint || ' See SELECT * FROM dfe_airbyte.slot_limit_advice;';
    END IF;
END
$fn$;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_flow_problems() IS
    'the heartbeat (publication, row) and slot bound (disk headroom) part of dfe_airbyte.config_problems';
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
