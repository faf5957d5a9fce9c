-- dfe_airbyte_reconcile(): its signature, its grants, the tables it writes,
-- and the errors that come before any BigQuery call (this instance has no
-- BigQuery configured).
SELECT pg_catalog.pg_get_function_arguments('dfe_airbyte_reconcile'::regproc);
SELECT pg_catalog.pg_get_function_result('dfe_airbyte_reconcile'::regproc);
SELECT proconfig FROM pg_catalog.pg_proc WHERE proname = 'dfe_airbyte_reconcile';
SELECT r.rolname, pg_catalog.has_function_privilege(r.oid, 'dfe_airbyte_reconcile(text,text,boolean,text)', 'EXECUTE')
  FROM pg_catalog.pg_roles r WHERE r.rolname IN ('dfe_airbyte_admin', 'pg_monitor') ORDER BY 1;
SELECT c.relname, r.rolname, pg_catalog.has_table_privilege(r.oid, c.oid, 'SELECT') AS can_select,
       pg_catalog.has_table_privilege(r.oid, c.oid, 'INSERT') AS can_insert
  FROM pg_catalog.pg_class c CROSS JOIN pg_catalog.pg_roles r
 WHERE c.relnamespace = 'dfe_airbyte'::regnamespace AND c.relname IN ('reconciliation', 'reconcile_runs')
   AND r.rolname IN ('dfe_airbyte_admin', 'pg_monitor') ORDER BY 1, 2;
-- a role without the grant
CREATE ROLE regress_reconcile_plain;
SET ROLE regress_reconcile_plain;
SELECT * FROM dfe_airbyte_reconcile();
RESET ROLE;
DROP ROLE regress_reconcile_plain;
-- errors, each with a hint
\set VERBOSITY default
SELECT * FROM dfe_airbyte_reconcile('users', 'sum');
SELECT * FROM dfe_airbyte_reconcile('users', target => 'claims');
SELECT * FROM dfe_airbyte_reconcile('users');
-- the tables start empty; every status is checked
SELECT count(*) FROM dfe_airbyte.reconciliation;
\set VERBOSITY terse
INSERT INTO dfe_airbyte.reconcile_runs (table_name, mode, status) VALUES ('t', 'count', 'unknown');
INSERT INTO dfe_airbyte.reconcile_runs (table_name, mode, status) VALUES ('t', 'sum', 'match');
INSERT INTO dfe_airbyte.reconcile_runs (target, table_name, mode, status) VALUES ('nowhere', 't', 'count', 'match');
SELECT target, table_name, mode, status, keys, key_ranges FROM dfe_airbyte.reconcile_runs;
