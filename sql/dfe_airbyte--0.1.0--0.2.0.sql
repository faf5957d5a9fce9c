-- dfe_airbyte upgrade script 0.1.0 -> 0.2.0, assembled from
-- sql/update/0.1.0--0.2.0/*.sql in name order (one file per feature, the
-- same split as sql/install/).  Every change to sql/install/ needs its
-- counterpart here: test/t/090_upgrade.pl checks that an upgraded install
-- equals a fresh one and keeps its data.

\echo Use "ALTER EXTENSION dfe_airbyte UPDATE TO '0.2.0'" to load this file. \quit

-- guard (issue 9): dfe_airbyte_worker_pid() is the network worker's pid
COMMENT ON FUNCTION @extschema@.dfe_airbyte_worker_pid() IS 'pid of the dfe_airbyte network worker (deploys), NULL when it is not running; both workers are in dfe_airbyte.workers';

-- search_path safety (SPEC §9), as at the start of the install script: the
-- upgrade resolves nothing through public.  SET LOCAL: ALTER EXTENSION
-- UPDATE runs each script like a function with a SET clause
-- (execute_extension_script: NewGUCNestLevel() ... AtEOXact_GUC()), which
-- undoes a SET LOCAL when the script ends; a plain SET would outlive it.
SET LOCAL search_path = pg_catalog, pg_temp;
-- bigquery branch, part 10: the third list and per-column policy tags (issue 10)

ALTER TABLE dfe_airbyte.blocklist
    ADD COLUMN policy_tag text CHECK (policy_tag ~ '^projects/[^/]+/locations/[^/]+/taxonomies/[^/]+/policyTags/[^/]+$');
COMMENT ON TABLE dfe_airbyte.blocklist IS 'one row per sensitive column: it gets the hidden policy tag (or its own policy_tag) in BigQuery (analytics_hidden_pii.yml)';
COMMENT ON TABLE dfe_airbyte.allowlist IS 'one row per replicated column (analytics.yml)';

CREATE TABLE dfe_airbyte.excluded (
    table_name  text NOT NULL CHECK (table_name <> ''),
    column_name text NOT NULL CHECK (column_name <> ''),
    loaded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, column_name)
);
COMMENT ON TABLE dfe_airbyte.excluded IS 'one row per column deliberately not replicated (analytics_blocklist.yml): config_problems stops asking about it';
SELECT pg_catalog.pg_extension_config_dump('dfe_airbyte.excluded', '');
REVOKE ALL ON dfe_airbyte.excluded FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON dfe_airbyte.excluded TO dfe_airbyte_admin;
GRANT SELECT ON dfe_airbyte.excluded TO pg_monitor;
-- bigquery branch, part 20: dfe_airbyte_load_config gets its third list (issue 10).
-- The 2-argument function is dropped: a call with two arguments resolves to
-- the new one through the DEFAULT and behaves as before.

DROP FUNCTION @extschema@.dfe_airbyte_load_config(text, text);

CREATE FUNCTION @extschema@.dfe_airbyte_load_config(allowlist text, blocklist text DEFAULT NULL, excluded text DEFAULT NULL)
    RETURNS TABLE (list text, tables integer, columns integer, added integer, removed integer)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_load_config'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_load_config(text, text, text) IS
    'replace dfe_airbyte.allowlist from analytics.yml, and unless NULL dfe_airbyte.blocklist from analytics_hidden_pii.yml and dfe_airbyte.excluded from analytics_blocklist.yml (YAML or JSON); bad input changes nothing';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_load_config(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_load_config(text, text, text) TO dfe_airbyte_admin;
-- bigquery branch, part 25: config_problems knows the excluded list (issue 10):
-- it stops asking about excluded columns and reports a column both
-- allowlisted and excluded as an error.  Same columns: CREATE OR REPLACE.
-- (Other branches change this view too: whoever merges keeps ONE complete
-- definition, the install piece's, here or in the last upgrade piece.)

-- (dfe_airbyte.config_problems is redefined in 90_views.sql)-- slothealth (issue 9, items 4-7): mirrors the slot health changes of sql/install/25_config_problems.sql
-- (generated from the install piece; keep the two in step).

-- The heartbeat's row and publication and the slot's bounds against the
-- disk (slot_limit_advice): checks that need the heartbeat table itself
-- (the caller, e.g. pg_monitor, may not read it: SECURITY DEFINER, which
-- shows only whether the row exists) or objects installed after this view.
CREATE FUNCTION @extschema@.dfe_airbyte_flow_problems()
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

    SELECT * INTO adv FROM dfe_airbyte.slot_limit_advice;
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
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_flow_problems() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_flow_problems() TO dfe_airbyte_admin, pg_monitor;

-- config_problems gains the rows of dfe_airbyte_flow_problems() (same columns)
-- (dfe_airbyte.config_problems is redefined in 90_views.sql)-- bigquery branch, part 50: last-seen-tagged times (issue 10)

CREATE TABLE dfe_airbyte.policy_tag_state (
    table_name       text NOT NULL,
    column_name      text NOT NULL,
    policy_tag       text NOT NULL,
    first_tagged_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_tagged timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, column_name)
);
COMMENT ON TABLE dfe_airbyte.policy_tag_state IS
    'per BigQuery column: the policy tag the extension manages on it and when it was last seen there (exposure windows; only these tags are ever removed)';
REVOKE ALL ON dfe_airbyte.policy_tag_state FROM PUBLIC;
-- dfe_airbyte_apply_policy_tags() runs as its caller and records what it saw
GRANT SELECT, INSERT, UPDATE, DELETE ON dfe_airbyte.policy_tag_state TO dfe_airbyte_admin;
GRANT SELECT ON dfe_airbyte.policy_tag_state TO pg_monitor;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_apply_policy_tags() IS
    'converges BigQuery policy tags with the blocklist (and, unless dfe_airbyte.hide_unlisted_columns is off, hides final-table columns that are not allowlisted); one row per (table, column) with action tagged, already_tagged, untagged, missing_column or missing_table';
-- part 55: the two background workers and the slot guard's server identity
-- (issue 9: the slot guard acts within seconds whatever Airbyte does).

-- Both workers, from shared memory: the guard (samples and acts on the slot,
-- never calls out) and the network worker (deploys, re-syncs, sync health).
CREATE FUNCTION @extschema@.dfe_airbyte_workers(
    OUT worker text, OUT pid integer, OUT started_at timestamptz, OUT database name)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'dfe_airbyte_workers'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_workers() IS 'the dfe_airbyte background workers (guard, network): pid and start time, NULL when not running, and the database they serve';

CREATE VIEW dfe_airbyte.workers AS
    SELECT w.worker, w.pid, w.started_at, w.database
    FROM @extschema@.dfe_airbyte_workers() w;
COMMENT ON VIEW dfe_airbyte.workers IS 'the dfe_airbyte background workers: guard (slot guard, no network calls) and network (deploys, re-syncs, sync health); pid NULL when not running';
REVOKE ALL ON dfe_airbyte.workers FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.workers TO pg_monitor, dfe_airbyte_admin;

-- The server this database belongs to, as the slot guard first saw it
-- (pg_control_system().system_identifier).  Another identifier at run time
-- means a restore of another server's backup: the guard then reports
-- 'restored' and does nothing until dfe_airbyte_confirm_restore().
CREATE TABLE dfe_airbyte.server_identity (
    one                         boolean PRIMARY KEY DEFAULT true CHECK (one),
    system_identifier           bigint NOT NULL,
    recorded_at                 timestamptz NOT NULL DEFAULT now(),
    previous_system_identifier  bigint,
    confirmed_at                timestamptz,
    confirmed_by                name
);
COMMENT ON TABLE dfe_airbyte.server_identity IS 'the system identifier of the server the dfe_airbyte slot guard history belongs to (a restore elsewhere is detected by a different one)';
REVOKE ALL ON dfe_airbyte.server_identity FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.server_identity TO pg_monitor, dfe_airbyte_admin;

CREATE FUNCTION @extschema@.dfe_airbyte_system_identifier() RETURNS bigint
    AS 'MODULE_PATHNAME', 'dfe_airbyte_system_identifier'
    LANGUAGE C STABLE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_system_identifier() IS 'this server''s system identifier, as pg_control_system() shows it';

CREATE FUNCTION @extschema@.dfe_airbyte_confirm_restore() RETURNS text
    AS 'MODULE_PATHNAME', 'dfe_airbyte_confirm_restore'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_confirm_restore() IS 'after a restore of another server''s backup: this database now belongs to this server; clears the other server''s slot history and lets the slot guard act again';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_confirm_restore() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_confirm_restore() TO dfe_airbyte_admin;
-- upgrade part 60 (connection): dfe_airbyte_repair() hands over a full
-- re-sync for "the slot is ahead of Airbyte's saved position" through
-- dfe_airbyte.slot_recreations with reason airbyte_state_behind.
ALTER TABLE dfe_airbyte.slot_recreations DROP CONSTRAINT slot_recreations_reason_check;
ALTER TABLE dfe_airbyte.slot_recreations ADD CONSTRAINT slot_recreations_reason_check
    CHECK (reason IN ('over_limit', 'lost', 'missing', 'airbyte_state_behind'));

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
-- (dfe_airbyte.replication_slot_health is redefined in 90_views.sql)
-- slothealth (issue 9, items 4-7): mirrors the slot health changes of sql/install/60_slots.sql
-- (generated from the install piece; keep the two in step).

-- new columns go at the end, as in the install piece
ALTER TABLE dfe_airbyte.slot_samples ADD COLUMN current_lsn pg_lsn;
ALTER TABLE dfe_airbyte.slot_state ADD COLUMN confirmed_flush_lsn pg_lsn;

-- The sync schedule the slot view judges growth and inactivity over
-- (dfe_airbyte.sync_interval, else dfe_airbyte.sync_stale_after / 3).
CREATE FUNCTION @extschema@.dfe_airbyte_slot_rhythm(
    OUT sync_interval interval,
    OUT interval_source text,
    OUT inactive_intervals integer)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_slot_rhythm'
    LANGUAGE C STABLE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_slot_rhythm() IS 'the Airbyte sync interval the slot guard judges growth and inactivity over, where it comes from, and how many intervals without a consumer make a slot inactive';

-- Total and free space of the data directory's file system (statvfs), or
-- dfe_airbyte.disk_free_override.
CREATE FUNCTION @extschema@.dfe_airbyte_disk_space(
    OUT total_bytes bigint,
    OUT free_bytes bigint,
    OUT source text)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_disk_space'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_disk_space() IS 'total and free bytes of the data directory''s file system (statvfs), or the free space set by dfe_airbyte.disk_free_override (total NULL)';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_disk_space() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_disk_space() TO pg_monitor, dfe_airbyte_admin;

-- replication_slot_health: new columns at the end (sync_interval, peak_retained_bytes)
-- (dfe_airbyte.replication_slot_health is redefined in 90_views.sql)
CREATE VIEW dfe_airbyte.slot_limit_advice AS
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
    WHERE sampled_at >= now() - interval '7 days' AND current_lsn IS NOT NULL
    ORDER BY sampled_at LIMIT 1
), last_sample AS (
    SELECT sampled_at, current_lsn FROM dfe_airbyte.slot_samples
    WHERE sampled_at >= now() - interval '7 days' AND current_lsn IS NOT NULL
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
-- branch airbyte: exactly one full re-sync per slot recreation (src/resync.c).
-- New columns go at the end of dfe_airbyte.slot_recreations, after the guard's
-- (60_guard.sql; this file sorts after it), as in
-- sql/install/60_slots.sql.
ALTER TABLE dfe_airbyte.slot_recreations
    ADD COLUMN resync_asked_at timestamptz,
    ADD COLUMN resync_answered_at timestamptz,
    ADD COLUMN resync_answer text;
-- upgrade part 65 (same as the install piece: new objects only): the Airbyte connection kept to the allowlist, the deploy plan and
-- the repair (issue 8 items 7-9; src/connection.c, deploy_plan.c, repair.c)

-- What the worker last read of the Airbyte connection: one row.
CREATE TABLE dfe_airbyte.connection_watch (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),
    checked_at       timestamptz,       -- last read, successful or not
    check_error      text,              -- why the last read failed, NULL when it worked
    status           text,              -- active, inactive, deprecated
    status_since     timestamptz,
    schema_behavior  text,              -- nonBreakingSchemaUpdatesBehavior
    streams          integer,           -- selected streams
    selected_fields  integer,           -- selected fields of the streams that list theirs
    matched_fields   jsonb,             -- {stream: [fields]} when it last matched the allowlist
    matched_at       timestamptz,
    drift_removed_at timestamptz,       -- last time unlisted streams/fields were taken out
    progress_job_id  bigint,            -- the running job and its counters, for dfe_airbyte_repair()
    progress_rows    bigint,
    progress_bytes   bigint,
    progress_since   timestamptz        -- since when these counters have not moved
);
INSERT INTO dfe_airbyte.connection_watch DEFAULT VALUES;
COMMENT ON TABLE dfe_airbyte.connection_watch IS
    'the Airbyte connection as the dfe_airbyte worker last read it (status, schema propagation setting, selected fields, job progress)';
REVOKE ALL ON dfe_airbyte.connection_watch FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.connection_watch TO pg_monitor, dfe_airbyte_admin;

CREATE FUNCTION @extschema@.dfe_airbyte_deploy_plan()
    RETURNS TABLE (stream text, field text, change text, detail text)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_deploy_plan'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_deploy_plan() IS
    'what the next refresh would change in the Airbyte connection, read live from it, with the BigQuery consequence of each change and the field count against Airbyte''s limit; changes nothing';

CREATE FUNCTION @extschema@.dfe_airbyte_repair(dry_run boolean DEFAULT true, cancel_stuck boolean DEFAULT false)
    RETURNS TABLE (step text, action text, detail text)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_repair'
    LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_repair(boolean, boolean) IS
    'diagnoses broken replication (slot missing or lost, slot ahead of Airbyte''s saved position, connection disabled, stuck job) and, unless dry_run, repairs it; cancel_stuck => true also cancels and restarts a stuck job';

REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_deploy_plan(), @extschema@.dfe_airbyte_repair(boolean, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_deploy_plan(), @extschema@.dfe_airbyte_repair(boolean, boolean) TO dfe_airbyte_admin;
-- upgrade part 70 (connection): sync_health gains connection_status at the
-- end (the Airbyte connection's status as the worker last read it) and a
-- hint for a disabled connection.
-- (dfe_airbyte.sync_health is redefined in 90_views.sql)-- slothealth (issue 9, items 4-7): mirrors the slot health changes of sql/install/70_sync_health.sql
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
-- (dfe_airbyte.sync_health is redefined in 90_views.sql)-- 0.2.0 redefines these views; each is copied here from its install piece
-- (after every table and function they read exists).  Their column lists
-- only grow at the end, so CREATE OR REPLACE keeps their grants.

CREATE OR REPLACE VIEW dfe_airbyte.config_problems AS
WITH conf AS (
    SELECT coalesce(nullif(current_setting('dfe_airbyte.source_schema', true), ''), 'public') AS source_schema,
           coalesce(nullif(current_setting('dfe_airbyte.publication', true), ''), 'airbyte_publication') AS publication,
           coalesce(nullif(current_setting('dfe_airbyte.slot_name', true), ''), 'airbyte_slot') AS slot_name
),
-- allowlisted tables (but the heartbeat), resolved in the source schema
allowed AS (
    SELECT t.table_name, c.oid AS relid
      FROM (SELECT DISTINCT table_name FROM dfe_airbyte.allowlist) AS t
     CROSS JOIN conf
      LEFT JOIN (pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace)
             ON n.nspname = conf.source_schema AND c.relname = t.table_name AND c.relkind IN ('r', 'p')
     WHERE t.table_name <> 'airbyte_heartbeat'
),
-- the columns those tables have
cols AS (
    SELECT a.table_name, att.attname::text AS column_name
      FROM allowed a
      JOIN pg_catalog.pg_attribute att
        ON att.attrelid = a.relid AND att.attnum > 0 AND NOT att.attisdropped
),
-- their primary key columns
pk AS (
    SELECT a.table_name, att.attname::text AS column_name
      FROM allowed a
      JOIN pg_catalog.pg_index i ON i.indrelid = a.relid AND i.indisprimary
     CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_catalog.pg_attribute att ON att.attrelid = a.relid AND att.attnum = k.attnum
     WHERE k.ord <= i.indnkeyatts
),
-- the primary key each stream really uses ("a, b"), from the stream configuration
stream_keys AS (
    SELECT s->>'name' AS table_name,
           (SELECT string_agg(e.k->>0, ', ' ORDER BY e.o)
              FROM jsonb_array_elements(s->'primaryKey') WITH ORDINALITY AS e(k, o)) AS stream_pk
      FROM jsonb_array_elements(@extschema@.dfe_airbyte_stream_config()->'configurations'->'streams') AS s
),
pub AS (
    SELECT p.* FROM pg_catalog.pg_publication p, conf WHERE p.pubname = conf.publication
),
pubtables AS (
    SELECT pt.schemaname::text AS schemaname, pt.tablename::text AS tablename, pt.attnames::text[] AS attnames
      FROM pg_catalog.pg_publication_tables pt, conf
     WHERE pt.pubname = conf.publication
),
problems (severity, object, problem, hint) AS (
    SELECT 'error', 'dfe_airbyte.source_schema',
           format('schema "%s" (dfe_airbyte.source_schema) does not exist: no allowlisted table can be found',
                  conf.source_schema),
           'ALTER SYSTEM SET dfe_airbyte.source_schema = ''<the schema of the service''''s tables>''; SELECT pg_reload_conf();'
      FROM conf
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = conf.source_schema)
    UNION ALL
    SELECT 'error', a.table_name,
           format('allowlisted table "%s" does not exist in schema "%s"', a.table_name, conf.source_schema),
           'Remove it from analytics.yml and reload with dfe_airbyte_load_config(), or run the migration that creates it: Airbyte cannot discover a stream for a missing table.'
      FROM allowed a, conf
     WHERE a.relid IS NULL
    UNION ALL
    SELECT 'error', l.table_name || '.' || l.column_name,
           format('allowlisted column "%s" of table "%s" does not exist', l.column_name, l.table_name),
           'Remove it from analytics.yml and reload with dfe_airbyte_load_config(), or run the migration that adds it.'
      FROM dfe_airbyte.allowlist l
      JOIN allowed a ON a.table_name = l.table_name AND a.relid IS NOT NULL
     WHERE l.column_name NOT IN ('_ab_cdc_lsn', '_ab_cdc_deleted_at', '_ab_cdc_updated_at')
       AND NOT EXISTS (SELECT 1 FROM cols c WHERE c.table_name = l.table_name AND c.column_name = l.column_name)
    UNION ALL
    SELECT 'info', l.table_name || '.' || l.column_name,
           format('"%s" is an Airbyte metadata field: every stream selects it anyway', l.column_name),
           'Remove it from analytics.yml; listing it changes nothing.'
      FROM dfe_airbyte.allowlist l
     WHERE l.column_name IN ('_ab_cdc_lsn', '_ab_cdc_deleted_at', '_ab_cdc_updated_at')
    UNION ALL
    SELECT 'info', 'airbyte_heartbeat',
           'airbyte_heartbeat is in the allowlist: its entry is ignored, the heartbeat stream (id, last_heartbeat) is always included',
           'Remove it from analytics.yml.'
     WHERE EXISTS (SELECT 1 FROM dfe_airbyte.allowlist WHERE table_name = 'airbyte_heartbeat')
    UNION ALL
    -- SPEC §3: Airbyte's Postgres source offers a table without a primary
    -- key only in full refresh (no CDC, no _ab_cdc_* fields); the stream is
    -- full_refresh_overwrite (src/stream_config.c)
    SELECT 'warning', a.table_name,
           format('table "%s" has no primary key: Airbyte copies it whole at each sync (full_refresh_overwrite) instead of streaming its changes; BigQuery keeps no history of its rows and does not see deletes as such (the copy is replaced), until it gets a primary key',
                  a.table_name),
           format('Add a primary key (ALTER TABLE %I.%I ADD PRIMARY KEY (...)), then deploy: the stream becomes incremental with CDC. While the table is in the publication without one, its UPDATEs and DELETEs also need a replica identity.',
                  conf.source_schema, a.table_name)
      FROM allowed a, conf
     WHERE a.relid IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pk WHERE pk.table_name = a.table_name)
    UNION ALL
    SELECT 'warning', p.table_name || '.' || p.column_name,
           format('primary key column "%s" of table "%s" is not allowlisted: the stream uses %s as its primary key instead',
                  p.column_name, p.table_name, coalesce(k.stream_pk, 'nothing')),
           'Allowlist every primary key column in analytics.yml so that the rows in BigQuery can be told apart, then reload with dfe_airbyte_load_config().'
      FROM pk p
      LEFT JOIN stream_keys k ON k.table_name = p.table_name
     WHERE NOT EXISTS (SELECT 1 FROM dfe_airbyte.allowlist l
                        WHERE l.table_name = p.table_name AND l.column_name = p.column_name)
    UNION ALL
    SELECT 'warning', c.table_name || '.' || c.column_name,
           format('column "%s" of allowlisted table "%s" is in no list (allowlist, blocklist, excluded): it is not replicated',
                  c.column_name, c.table_name),
           'A migration added it? Add it to analytics.yml to replicate it (and to analytics_hidden_pii.yml too if it is sensitive: the blocklist), or to analytics_blocklist.yml (the excluded list, third argument of dfe_airbyte_load_config) to keep it out on purpose; then reload with dfe_airbyte_load_config().'
      FROM cols c
     WHERE NOT EXISTS (SELECT 1 FROM dfe_airbyte.allowlist l
                        WHERE l.table_name = c.table_name AND l.column_name = c.column_name)
       AND NOT EXISTS (SELECT 1 FROM dfe_airbyte.blocklist b
                        WHERE b.table_name = c.table_name AND b.column_name = c.column_name)
       AND NOT EXISTS (SELECT 1 FROM dfe_airbyte.excluded x
                        WHERE x.table_name = c.table_name AND x.column_name = c.column_name)
    UNION ALL
    SELECT 'error', x.table_name || '.' || x.column_name,
           format('column "%s" of table "%s" is both allowlisted and excluded: it is replicated although it was decided not to be',
                  x.column_name, x.table_name),
           'Remove it from analytics.yml (to keep it out) or from analytics_blocklist.yml (to replicate it; add it to analytics_hidden_pii.yml too if it is sensitive), then reload with dfe_airbyte_load_config().'
      FROM dfe_airbyte.excluded x
     WHERE EXISTS (SELECT 1 FROM dfe_airbyte.allowlist l
                    WHERE l.table_name = x.table_name AND l.column_name = x.column_name)
    UNION ALL
    SELECT 'warning', b.table_name || '.' || b.column_name,
           format('blocklisted (hidden) column "%s" of table "%s" is not allowlisted: it is never replicated, so it is never hidden either',
                  b.column_name, b.table_name),
           'Harmless, but a sign of a mistake: to replicate it with the hidden policy tag, add it to analytics.yml too; to keep it out on purpose, move it from analytics_hidden_pii.yml to analytics_blocklist.yml (the excluded list).'
      FROM dfe_airbyte.blocklist b
     WHERE NOT EXISTS (SELECT 1 FROM dfe_airbyte.allowlist l
                        WHERE l.table_name = b.table_name AND l.column_name = b.column_name)
    UNION ALL
    SELECT 'error', conf.publication,
           format('publication "%s" (dfe_airbyte.publication) does not exist: Airbyte''s CDC receives no changes',
                  conf.publication),
           format('CREATE PUBLICATION %I FOR TABLE <the allowlisted tables>, airbyte_heartbeat; or set dfe_airbyte.publication to the publication the Airbyte source uses.',
                  conf.publication)
      FROM conf
     WHERE NOT EXISTS (SELECT 1 FROM pub)
    UNION ALL
    SELECT 'warning', p.pubname::text,
           format('publication "%s" does not publish %s: Airbyte misses those changes', p.pubname,
                  concat_ws(', ', CASE WHEN NOT p.pubinsert THEN 'inserts' END,
                                  CASE WHEN NOT p.pubupdate THEN 'updates' END,
                                  CASE WHEN NOT p.pubdelete THEN 'deletes' END)),
           format('ALTER PUBLICATION %I SET (publish = ''insert, update, delete'');', p.pubname)
      FROM pub p
     WHERE NOT (p.pubinsert AND p.pubupdate AND p.pubdelete)
    UNION ALL
    SELECT 'error', a.table_name,
           format('allowlisted table "%s" is not in publication "%s": Airbyte receives no changes of it',
                  a.table_name, conf.publication),
           format('ALTER PUBLICATION %I ADD TABLE %I.%I;', conf.publication, conf.source_schema, a.table_name)
      FROM allowed a, conf
     WHERE a.relid IS NOT NULL
       AND EXISTS (SELECT 1 FROM pub)
       AND NOT EXISTS (SELECT 1 FROM pubtables pt
                        WHERE pt.schemaname = conf.source_schema AND pt.tablename = a.table_name)
    UNION ALL
    SELECT 'error', l.table_name || '.' || l.column_name,
           format('allowlisted column "%s" of table "%s" is left out by the column list of publication "%s"',
                  l.column_name, l.table_name, conf.publication),
           format('ALTER PUBLICATION %I SET TABLE %I.%I; (without a column list), or add the column to the list.',
                  conf.publication, conf.source_schema, l.table_name)
      FROM dfe_airbyte.allowlist l
      JOIN cols c ON c.table_name = l.table_name AND c.column_name = l.column_name
     CROSS JOIN conf
      JOIN pubtables pt ON pt.schemaname = conf.source_schema AND pt.tablename = l.table_name
     WHERE NOT (l.column_name = ANY (pt.attnames))
    UNION ALL
    SELECT 'error',
           CASE WHEN pt.schemaname = conf.source_schema THEN pt.tablename
                ELSE pt.schemaname || '.' || pt.tablename END,
           format('table "%s"."%s" is in publication "%s" without a replica identity: every UPDATE or DELETE on it fails',
                  pt.schemaname, pt.tablename, conf.publication),
           format('Add a primary key to it, or ALTER TABLE %I.%I REPLICA IDENTITY FULL;', pt.schemaname, pt.tablename)
      FROM pubtables pt
     CROSS JOIN conf
      JOIN pub p ON p.pubupdate OR p.pubdelete
      JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
      JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
     WHERE c.relreplident = 'n'
        OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                                                  WHERE i.indrelid = c.oid AND i.indisprimary))
        OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                                                  WHERE i.indrelid = c.oid AND i.indisreplident))
    UNION ALL
    SELECT 'warning', 'airbyte_heartbeat',
           format('table airbyte_heartbeat does not exist in schema "%s", but the stream configuration always includes the heartbeat stream',
                  conf.source_schema),
           'Create it as the Airbyte source''s heartbeat query expects (with columns id and last_heartbeat) and add it to the publication.'
      FROM conf
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname = conf.source_schema AND c.relname = 'airbyte_heartbeat')
    UNION ALL
    SELECT 'warning', conf.slot_name,
           format('replication slot "%s" (dfe_airbyte.slot_name) does not exist', conf.slot_name),
           format('Create it for the Airbyte source: SELECT pg_create_logical_replication_slot(%L, ''pgoutput''); or set dfe_airbyte.slot_name to the slot the source uses.',
                  conf.slot_name)
      FROM conf
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = conf.slot_name)
    UNION ALL
    SELECT 'error', conf.slot_name,
           CASE WHEN s.database IS DISTINCT FROM current_database()
                THEN format('replication slot "%s" belongs to database "%s", not to this one', s.slot_name,
                            coalesce(s.database::text, '(none: physical slot)'))
                ELSE format('replication slot "%s" uses plugin "%s"; Airbyte''s Postgres source needs pgoutput',
                            s.slot_name, s.plugin) END,
           'Set dfe_airbyte.slot_name to the slot the Airbyte source uses, or recreate the slot in this database with pg_create_logical_replication_slot(name, ''pgoutput'').'
      FROM pg_catalog.pg_replication_slots s, conf
     WHERE s.slot_name = conf.slot_name
       AND (s.database IS DISTINCT FROM current_database() OR s.plugin IS DISTINCT FROM 'pgoutput')
    UNION ALL
    -- the Airbyte server's version as the worker last reported it (event
    -- airbyte_version, from GET /api/v1/instance_configuration; src/resync.c)
    -- and what that version lacks
    -- (README, "Supported Airbyte versions"; shared/background/api_conformance.md)
    SELECT CASE WHEN v.num < '{0,60,1}' THEN 'error'
                WHEN v.num < '{1,2,0}' THEN 'warning' ELSE 'info' END,
           'Airbyte',
           format('Airbyte server version %s%s', v.version,
                  CASE WHEN v.num < '{0,60,1}'
                       THEN ': it ignores selectedFields, so dfe_airbyte refuses to update the connection (every column would be replicated)'
                       WHEN v.num < '{0,63,7}'
                       THEN ': no public token endpoint (the config-API token is used); full re-sync answers {"value": ...} without a job; the public job list hides refresh jobs (the config API''s is used)'
                       WHEN v.num < '{1,2,0}'
                       THEN ': full re-sync answers {"value": ...} without a job; the public job list hides refresh jobs (the config API''s is used)'
                       WHEN v.num < '{1,8,0}'
                       THEN ': the public job list hides refresh jobs (the config API''s is used)'
                       ELSE ': everything dfe_airbyte uses is available' END),
           CASE WHEN v.num < '{0,60,1}' THEN 'Upgrade Airbyte to 0.60.1 or later (1.8 or later recommended).'
                WHEN v.num < '{1,2,0}' THEN 'Works; upgrading Airbyte to 1.2 or later (1.8 or later recommended) makes full re-syncs easier to follow.'
                ELSE 'Nothing to do.' END
      FROM (SELECT e.data->>'version' AS version,
                   pg_catalog.string_to_array(pg_catalog.substring(e.data->>'version', '^[vV]?([0-9]+\.[0-9]+\.[0-9]+)'), '.')::int[] AS num
              FROM dfe_airbyte.events e
             WHERE e.kind = 'airbyte_version'
             ORDER BY e.id DESC LIMIT 1) AS v
     WHERE v.num IS NOT NULL
    UNION ALL
    SELECT sp.severity, sp.object, sp.problem, sp.hint
      FROM @extschema@.dfe_airbyte_setting_problems() AS sp
    UNION ALL
    SELECT fp.severity, fp.object, fp.problem, fp.hint
      FROM @extschema@.dfe_airbyte_flow_problems() AS fp
)
SELECT severity, object, problem, hint
  FROM problems
 ORDER BY CASE severity WHEN 'error' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END,
          object COLLATE "C", problem COLLATE "C";
COMMENT ON VIEW dfe_airbyte.config_problems IS
    'what is wrong with the dfe_airbyte configuration now (lists against the catalog, publication, slot, settings), each with a hint';

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
    LEFT JOIN dfe_airbyte.slot_state st ON st.slot_name = x.slot_name
    WHERE x.sampled_at >= rh.fit_from - 1.5 * rh.sync_interval
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
    WHERE resync_state = 'pending' AND recreated_at IS NOT NULL
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
ORDER BY slot_name;
COMMENT ON VIEW dfe_airbyte.replication_slot_health IS 'one row per logical replication slot of this database: retained WAL, limit, growth, time to limit and a status (ok, warning, critical, inactive, lost, restored) with a hint';

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

-- search_path safety (SPEC §9), last piece of the upgrade.
--
-- 0.1.0 created its functions without a SET clause.  Every function of the
-- extension now pins search_path = pg_catalog, pg_temp, as a fresh install
-- creates them.  The 0.1.0 functions:
--   dfe_airbyte_worker_pid(), dfe_airbyte_load_config(text, text),
--   dfe_airbyte_stream_config(), dfe_airbyte_stream_config_json(),
--   dfe_airbyte_setting_problems(), dfe_airbyte_connection_refresh(),
--   dfe_airbyte_start_sync(), dfe_airbyte_job_status(bigint),
--   dfe_airbyte_wait_for_job(bigint, interval), dfe_airbyte_deploy(boolean),
--   dfe_airbyte_migration_lock_key(), dfe_airbyte_apply_policy_tags(),
--   dfe_airbyte_google_auth_check(), dfe_airbyte_slot_guard_settings(),
--   dfe_airbyte_check_slots_now().
-- They are altered by a loop over the extension's members rather than by
-- name, so that a function another piece of this upgrade dropped or
-- re-created with a new signature is covered as well.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::pg_catalog.regprocedure
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_proc p ON p.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
           AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
           AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'dfe_airbyte')
           AND d.deptype = 'e'
           AND (p.proconfig IS NULL OR NOT ('search_path=pg_catalog, pg_temp' = ANY (p.proconfig)))
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END
$$;

-- dfe_airbyte_check_slots_now() works for dfe_airbyte_admin, to whom it is
-- granted: it writes slot_samples and slot_state, which that role may only
-- read (see sql/install/60_slots.sql).
ALTER FUNCTION @extschema@.dfe_airbyte_check_slots_now() SECURITY DEFINER;

-- Views bind their functions and operators when they are created.  0.1.0
-- created them with public on the search_path: one that bound to a
-- function or operator planted in public before CREATE EXTENSION would
-- call it for every reader (the worker is a superuser).  Refuse to carry
-- such a view over.
DO $$
DECLARE
    bad text;
BEGIN
    SELECT pg_catalog.string_agg(DISTINCT pg_catalog.format('%s uses %s', v.oid::pg_catalog.regclass,
               CASE WHEN d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                    THEN d.refobjid::pg_catalog.regprocedure::pg_catalog.text
                    ELSE d.refobjid::pg_catalog.regoperator::pg_catalog.text END), '; ')
      INTO bad
      FROM pg_catalog.pg_depend e
      JOIN pg_catalog.pg_class v ON v.oid = e.objid AND v.relkind = 'v'
      JOIN pg_catalog.pg_rewrite r ON r.ev_class = v.oid
      JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
                                 AND d.objid = r.oid
     WHERE e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
       AND e.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
       AND e.refobjid = (SELECT x.oid FROM pg_catalog.pg_extension x WHERE x.extname = 'dfe_airbyte')
       AND e.deptype = 'e'
       AND ((d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
             AND (SELECT p.pronamespace FROM pg_catalog.pg_proc p WHERE p.oid = d.refobjid)
                 <> 'pg_catalog'::pg_catalog.regnamespace)
         OR (d.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass
             AND (SELECT o.oprnamespace FROM pg_catalog.pg_operator o WHERE o.oid = d.refobjid)
                 <> 'pg_catalog'::pg_catalog.regnamespace))
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend m
                        WHERE m.classid = d.refclassid AND m.objid = d.refobjid
                          AND m.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                          AND m.refobjid = e.refobjid AND m.deptype = 'e');
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'dfe_airbyte views call functions or operators that are neither built in nor the extension''s: %', bad
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'They were most likely planted in a schema on the search_path before CREATE EXTENSION dfe_airbyte ran (CVE-2018-1058).',
                  HINT = 'Find out who created them, drop them, then re-create the extension in a maintenance window: save the lists (pg_dump -t dfe_airbyte.allowlist -t dfe_airbyte.blocklist), DROP EXTENSION dfe_airbyte, CREATE EXTENSION dfe_airbyte, reload the lists.';
    END IF;
END
$$;

-- search_path safety (SPEC §9): every function of the extension lives in
-- @extschema@ and pins its search_path.  A CREATE FUNCTION that forgot
-- either stops the install here, naming it, instead of shipping a function
-- that a planted public.format(text, name) could hijack.  The upgrade
-- script ends with the same check (sql/update/0.1.0--0.2.0/99_safety.sql).
DO $$
DECLARE
    bad text;
BEGIN
    SELECT pg_catalog.string_agg(p.oid::pg_catalog.regprocedure::pg_catalog.text, ', ')
      INTO bad
      FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_proc p ON p.oid = d.objid
     WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
       AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
       AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'dfe_airbyte')
       AND d.deptype = 'e'
       AND (p.pronamespace <> '@extschema@'::pg_catalog.regnamespace
            OR p.proconfig IS NULL
            OR NOT ('search_path=pg_catalog, pg_temp' = ANY (p.proconfig)));
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'dfe_airbyte functions without a pinned search_path: %', bad
            USING ERRCODE = 'invalid_function_definition',
                  HINT = 'Create each function as @extschema@.dfe_airbyte_x(...) with SET search_path = pg_catalog, pg_temp.';
    END IF;
END
$$;
