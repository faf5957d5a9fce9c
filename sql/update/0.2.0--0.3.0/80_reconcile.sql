-- Reconciliation: does BigQuery's final table hold what the source table
-- holds (src/reconcile.c; README.md, "Reconciliation").  Per target (the
-- service database, dfe_airbyte.targets): dropping a target drops its
-- results with it.

-- Every run, bounded by dfe_airbyte.history_retention and
-- dfe_airbyte.history_max_rows.
CREATE TABLE dfe_airbyte.reconcile_runs (
    id               bigserial PRIMARY KEY,
    target           text NOT NULL DEFAULT 'local' REFERENCES dfe_airbyte.targets (name) ON DELETE CASCADE,
    table_name       text NOT NULL,
    mode             text NOT NULL CHECK (mode IN ('count', 'checksum')),
    status           text NOT NULL CHECK (status IN ('match', 'mismatch_candidate', 'mismatch',
                                                     'over_budget', 'skipped', 'error')),
    sync_job_id      bigint,             -- the last successful sync: its start is the cut-off
    cutoff_at        timestamptz,
    source_rows      bigint,
    bigquery_rows    bigint,
    matched          boolean,            -- NULL: not compared (over budget, skipped, error)
    mismatches       bigint,             -- keys that differ, or buckets when not narrowed to keys
    bytes_billed     bigint NOT NULL DEFAULT 0,
    bigquery_queries integer NOT NULL DEFAULT 0,
    keys             text[] NOT NULL DEFAULT '{}',   -- "missing 17", "extra 18", "changed 19": keys, never values
    key_ranges       text[] NOT NULL DEFAULT '{}',   -- "[100, 200)" or "md5(key) prefix 0a3"
    detail           text NOT NULL DEFAULT '',
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX reconcile_runs_started_idx ON dfe_airbyte.reconcile_runs (started_at);
CREATE INDEX reconcile_runs_table_idx ON dfe_airbyte.reconcile_runs (target, table_name, id);
COMMENT ON TABLE dfe_airbyte.reconcile_runs IS
    'every reconciliation of a table against its BigQuery final table (dfe_airbyte_reconcile() and the worker)';

-- The latest result per table (and target).
CREATE TABLE dfe_airbyte.reconciliation (
    target           text NOT NULL DEFAULT 'local' REFERENCES dfe_airbyte.targets (name) ON DELETE CASCADE,
    table_name       text NOT NULL,
    run_id           bigint NOT NULL,
    mode             text NOT NULL,
    status           text NOT NULL,
    sync_job_id      bigint,
    cutoff_at        timestamptz,
    source_rows      bigint,
    bigquery_rows    bigint,
    matched          boolean,
    mismatches       bigint,
    bytes_billed     bigint NOT NULL DEFAULT 0,
    bigquery_queries integer NOT NULL DEFAULT 0,
    keys             text[] NOT NULL DEFAULT '{}',
    key_ranges       text[] NOT NULL DEFAULT '{}',
    detail           text NOT NULL DEFAULT '',
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz NOT NULL,
    PRIMARY KEY (target, table_name)
);
COMMENT ON TABLE dfe_airbyte.reconciliation IS
    'the latest reconciliation of each table: matched, counts, the keys and key ranges that differ';

REVOKE ALL ON dfe_airbyte.reconcile_runs, dfe_airbyte.reconciliation FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.reconcile_runs, dfe_airbyte.reconciliation TO dfe_airbyte_admin, pg_monitor;

CREATE FUNCTION @extschema@.dfe_airbyte_reconcile(table_name text DEFAULT NULL,
                                                  mode text DEFAULT 'count',
                                                  dry_run boolean DEFAULT false,
                                                  target text DEFAULT 'local')
    RETURNS TABLE (table_name text, mode text, source_rows bigint, bigquery_rows bigint,
                   matched boolean, mismatches bigint, bytes_billed bigint, detail text)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_reconcile'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_reconcile(text, text, boolean, text) IS
    'compares allowlisted tables with their BigQuery final tables (count: rows and keys; checksum: every compared value); dry_run only estimates the bytes billed';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_reconcile(text, text, boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_reconcile(text, text, boolean, text) TO dfe_airbyte_admin;
