
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
