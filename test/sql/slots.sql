-- The slot guard's SQL surface: settings, the health view, grants.
-- (The worker's behaviour is tested by test/t/030_slots.pl.)

SELECT slot_name, limit_bytes, warning_fraction, limit_action, inactive_after,
       server_limit_bytes IS NOT DISTINCT FROM
           CASE WHEN current_setting('max_slot_wal_keep_size') <> '-1'
                THEN pg_size_bytes(current_setting('max_slot_wal_keep_size')) END AS server_limit_right
  FROM dfe_airbyte_slot_guard_settings();

-- no logical slot yet: no row (the Airbyte slot was never seen here)
SELECT count(*) FROM dfe_airbyte.replication_slot_health;

SELECT 'init' FROM pg_create_logical_replication_slot('airbyte_slot', 'pgoutput');
SELECT 'init' FROM pg_create_logical_replication_slot('regress_other_slot', 'test_decoding');

-- sampling works (the worker does the same every check_interval)
SELECT slots >= 2 AS sampled, elapsed_ms >= 0 AS timed, buffers_hit + buffers_read > 0 AS touched_buffers
FROM dfe_airbyte_check_slots_now();
SELECT count(DISTINCT slot_name) FROM dfe_airbyte.slot_samples
WHERE slot_name IN ('airbyte_slot', 'regress_other_slot');

-- fresh, unconsumed slots: ok; no limit set (max_slot_wal_size = -1)
SELECT slot_name, plugin, active, active_pid, wal_status, retained_bytes >= 0 AS retains,
       flush_lag_bytes >= 0 AS lags, limit_bytes, fraction_used, growth_bytes_per_hour,
       time_to_limit, last_active_at, status, hint
FROM dfe_airbyte.replication_slot_health ORDER BY slot_name;

-- the view's columns, in order
SELECT attname, format_type(atttypid, atttypmod)
FROM pg_attribute WHERE attrelid = 'dfe_airbyte.replication_slot_health'::regclass AND attnum > 0
ORDER BY attnum;

-- monitoring roles read it; nobody else; the sampling function is admin only
SELECT has_table_privilege('pg_monitor', 'dfe_airbyte.replication_slot_health', 'SELECT') AS pg_monitor,
       has_table_privilege('dfe_airbyte_admin', 'dfe_airbyte.replication_slot_health', 'SELECT') AS admin,
       has_table_privilege('pg_monitor', 'dfe_airbyte.slot_samples', 'SELECT') AS samples,
       has_table_privilege('pg_monitor', 'dfe_airbyte.slot_recreations', 'SELECT') AS recreations;
CREATE ROLE regress_slots_nobody;
SET ROLE regress_slots_nobody;
SELECT * FROM dfe_airbyte.replication_slot_health;
SELECT * FROM dfe_airbyte_check_slots_now();
RESET ROLE;
SET ROLE pg_monitor;
SELECT count(*) FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot';
RESET ROLE;
DROP ROLE regress_slots_nobody;

SELECT pg_drop_replication_slot('airbyte_slot');
SELECT pg_drop_replication_slot('regress_other_slot');
