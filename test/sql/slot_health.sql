-- Slot health's SQL surface: the sync rhythm, the disk,
-- slot_limit_advice, the heartbeat and slot bound rows of config_problems,
-- the data flow history and sync_health's stuck columns, grants.
-- (Behaviour: test/t/034_slot_rhythm.pl and test/t/035_flow_checks.pl.)

-- the schedule: by default a third of sync_stale_after (45 min), and
-- inactive after 3 intervals
SELECT * FROM dfe_airbyte_slot_rhythm();
SELECT inactive_after FROM dfe_airbyte_slot_guard_settings();
SELECT name, setting, unit, context FROM pg_settings
WHERE name IN ('dfe_airbyte.sync_interval', 'dfe_airbyte.slot_inactive_intervals',
               'dfe_airbyte.disk_free_override', 'dfe_airbyte.job_stuck_after')
ORDER BY name;
-- the settings are the server's, not a session's
SET dfe_airbyte.sync_interval = '10s';

-- the data directory's disk, measured
SELECT total_bytes > 0 AS has_total, free_bytes > 0 AS has_free, free_bytes <= total_bytes AS free_below_total, source
FROM dfe_airbyte_disk_space();

-- advice (the verdict depends on the server's settings: make installcheck
-- runs against yours; the regression instance sets no limit at all, so
-- there it is 'unbounded')
SELECT 'init' FROM pg_create_logical_replication_slot('airbyte_slot', 'pgoutput');
SELECT disk_source, reserve_bytes >= 5368709120 AS reserve_at_least_5gib,
       headroom_bytes = greatest(0, disk_free_bytes + slot_retained_bytes - reserve_bytes) AS headroom_formula,
       (verdict = 'unbounded') = (server_limit_bytes IS NULL AND NOT coalesce(current_limit_bytes IS NOT NULL
                                  AND limit_action IN ('terminate', 'recreate'), false)) AS unbounded_right,
       verdict IN ('unbounded', 'exceeds_headroom', 'not_measured', 'disk_too_small', 'under_two_days', 'ok') AS known_verdict,
       CASE WHEN verdict = 'unbounded' THEN hint LIKE 'Nothing bounds the WAL the Airbyte slot may retain: set dfe_airbyte.max_slot_wal_size%'
            WHEN verdict = 'ok' THEN hint IS NULL ELSE hint <> '' END AS hint_right
FROM dfe_airbyte.slot_limit_advice;
SELECT attname, format_type(atttypid, atttypmod)
FROM pg_attribute WHERE attrelid = 'dfe_airbyte.slot_limit_advice'::regclass AND attnum > 0
ORDER BY attnum;
SELECT EXISTS (SELECT 1 FROM dfe_airbyte.config_problems
               WHERE object = 'max_slot_wal_keep_size' AND severity = 'warning' AND problem LIKE 'nothing bounds the WAL the Airbyte slot may retain%')
       = (SELECT verdict = 'unbounded' FROM dfe_airbyte.slot_limit_advice) AS unbounded_row_right,
       EXISTS (SELECT 1 FROM dfe_airbyte.config_problems WHERE object = 'disk headroom')
       = (SELECT verdict = 'exceeds_headroom' FROM dfe_airbyte.slot_limit_advice) AS headroom_row_right;

-- the new columns of the health view and the history tables, at the end
-- (0.3.0's target column aside: first in the view, added to the tables)
SELECT attname FROM pg_attribute
WHERE attrelid = 'dfe_airbyte.replication_slot_health'::regclass AND attnum > 19 ORDER BY attnum;
SELECT sync_interval, peak_retained_bytes FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot';
-- what only some majors have (src/slot_details.c): the same answer on each
SELECT inactive_since IS NULL OR inactive_since <= now() AS inactive_since_ok, invalidation_reason
FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot';
SELECT (SELECT count(*) FROM dfe_airbyte_slot_details())
     = (SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'logical' AND database = current_database())
       AS one_row_per_logical_slot,
       has_function_privilege('pg_monitor', 'dfe_airbyte_slot_details()', 'EXECUTE') AS monitor_may,
       has_function_privilege('public', 'dfe_airbyte_slot_details()', 'EXECUTE') AS public_may;
SELECT attname FROM pg_attribute
WHERE attrelid = 'dfe_airbyte.slot_samples'::regclass AND attnum > 0 AND attname <> 'target' AND NOT attisdropped ORDER BY attnum DESC LIMIT 3;
SELECT attname FROM pg_attribute
WHERE attrelid = 'dfe_airbyte.slot_state'::regclass AND attnum > 0 AND attname <> 'target' AND NOT attisdropped ORDER BY attnum DESC LIMIT 1;
SELECT attname FROM pg_attribute
WHERE attrelid = 'dfe_airbyte.sync_jobs'::regclass AND attnum > 7 ORDER BY attnum;
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = 'dfe_airbyte.flow_checks'::regclass AND attnum > 0 ORDER BY attnum;
SELECT attname FROM pg_attribute
WHERE attrelid = 'dfe_airbyte.sync_health'::regclass AND attnum > 13 ORDER BY attnum;
SELECT stuck, stuck_after FROM dfe_airbyte.sync_health;

-- the heartbeat: no publication yet, then a table outside it, then no row
CREATE TABLE public.airbyte_heartbeat (id integer, last_heartbeat timestamptz);
SELECT severity, problem, hint FROM dfe_airbyte.config_problems WHERE object = 'airbyte_heartbeat';
CREATE TABLE public.regress_orders (id bigint PRIMARY KEY);
CREATE PUBLICATION airbyte_publication FOR TABLE public.regress_orders;
SELECT severity, problem, hint FROM dfe_airbyte.config_problems WHERE object = 'airbyte_heartbeat';
ALTER PUBLICATION airbyte_publication ADD TABLE public.airbyte_heartbeat;
INSERT INTO public.airbyte_heartbeat VALUES ('1', now());
SELECT count(*) FROM dfe_airbyte.config_problems WHERE object = 'airbyte_heartbeat';
-- a heartbeat table without the columns the stream and the query use
DROP PUBLICATION airbyte_publication;
DROP TABLE public.airbyte_heartbeat;
CREATE TABLE public.airbyte_heartbeat (beat timestamptz);
SELECT severity, problem FROM dfe_airbyte.config_problems WHERE object = 'airbyte_heartbeat';
DROP TABLE public.airbyte_heartbeat, public.regress_orders;

-- grants: monitoring reads, nobody else
SELECT has_table_privilege('pg_monitor', 'dfe_airbyte.slot_limit_advice', 'SELECT') AS advice,
       has_table_privilege('pg_monitor', 'dfe_airbyte.flow_checks', 'SELECT') AS flow_checks,
       has_function_privilege('pg_monitor', 'dfe_airbyte_disk_space(text)', 'EXECUTE') AS disk,
       has_function_privilege('pg_monitor', 'dfe_airbyte_flow_problems()', 'EXECUTE') AS flow_problems,
       has_function_privilege('public', 'dfe_airbyte_disk_space(text)', 'EXECUTE') AS disk_public,
       has_function_privilege('public', 'dfe_airbyte_flow_problems()', 'EXECUTE') AS problems_public;
CREATE ROLE regress_health_nobody;
SET ROLE regress_health_nobody;
SELECT * FROM dfe_airbyte.slot_limit_advice;
SELECT * FROM dfe_airbyte_disk_space();
SELECT * FROM dfe_airbyte_flow_problems();
RESET ROLE;
SET ROLE pg_monitor;
SELECT count(*) FROM dfe_airbyte.slot_limit_advice;
SELECT count(*) >= 0 AS reads FROM dfe_airbyte.flow_checks;
RESET ROLE;
DROP ROLE regress_health_nobody;

SELECT pg_drop_replication_slot('airbyte_slot');
