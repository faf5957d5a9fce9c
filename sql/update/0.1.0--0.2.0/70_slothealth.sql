-- slothealth (issue 9, items 4-7): mirrors the slot health changes of sql/install/70_sync_health.sql
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
-- (dfe_airbyte.sync_health is redefined in 90_views.sql)