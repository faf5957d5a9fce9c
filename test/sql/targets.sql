-- Targets: registering service databases reached over libpq, the errors that
-- need no server.  (Adding real servers of PostgreSQL 15-18: test/t/073_add_target.pl.)

-- the database the extension lives in is the built-in target "local"
SELECT name, conninfo, enabled, settings, created_by FROM dfe_airbyte.targets;

-- no secret in a connection string, in any spelling; the secret is not echoed
SELECT dfe_airbyte_add_target('svc', 'host=127.0.0.1 dbname=service password=sekrit');
SELECT dfe_airbyte_add_target('svc', 'postgresql://dfe:sekrit@127.0.0.1/service');
SELECT dfe_airbyte_add_target('svc', 'host=127.0.0.1 passfile=/tmp/pgpass');
SELECT dfe_airbyte_add_target('svc', 'host=127.0.0.1 sslpassword=sekrit');
SELECT dfe_airbyte_add_target('svc', 'service=svc');
SELECT dfe_airbyte_add_target('svc', 'host=a.example.com,b.example.com dbname=service');
SELECT dfe_airbyte_add_target('svc', 'host=127.0.0.1 nonsense');

-- names and settings
SELECT dfe_airbyte_add_target('Svc!', 'host=127.0.0.1');
SELECT dfe_airbyte_add_target('local', 'host=127.0.0.1');
SELECT dfe_airbyte_add_target(NULL, 'host=127.0.0.1');
SELECT dfe_airbyte_add_target('svc', 'host=127.0.0.1', '[1]');
SELECT dfe_airbyte_add_target('svc', 'host=127.0.0.1', '{"airbyte_client_secret": "x"}');
SELECT dfe_airbyte_add_target('svc', 'host=127.0.0.1', '{"max_slot_wal_size": "8 parsecs"}');
SELECT dfe_airbyte_add_target('svc', 'host=127.0.0.1', '{"slot_limit_action": "explode"}');
SELECT dfe_airbyte_add_target('svc', 'host=127.0.0.1', '{"disk_size": "-1"}');
SELECT dfe_airbyte_add_target('svc', 'host=127.0.0.1', '{"slot_warning_fraction": 1.5}');
SELECT dfe_airbyte_add_target('svc', 'host=127.0.0.1', '{"slot_name": {"a": 1}}');
SELECT dfe_airbyte_add_target('svc', 'host=127.0.0.1', '{"connection_id": ""}');

-- valid, but nothing listens there: the connection error, nothing registered
SELECT dfe_airbyte_add_target('svc', 'host=127.0.0.1 port=1 dbname=service user=dfe_airbyte_remote',
                              '{"max_slot_wal_size": "8GB", "slot_limit_action": "recreate", "disk_size": "256GB"}');
SELECT count(*) FROM dfe_airbyte.targets;

SELECT dfe_airbyte_drop_target('local');
SELECT dfe_airbyte_drop_target('nope');

-- who may do what
SELECT p.proname, p.prosecdef,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_may,
       has_function_privilege('dfe_airbyte_admin', p.oid, 'EXECUTE') AS admin_may
  FROM pg_proc p WHERE p.proname IN ('dfe_airbyte_add_target', 'dfe_airbyte_drop_target') ORDER BY 1;
SELECT has_table_privilege('dfe_airbyte_admin', 'dfe_airbyte.targets', 'SELECT') AS admin_reads,
       has_table_privilege('dfe_airbyte_admin', 'dfe_airbyte.targets', 'INSERT') AS admin_inserts,
       has_column_privilege('dfe_airbyte_admin', 'dfe_airbyte.targets', 'enabled', 'UPDATE') AS admin_switches,
       has_column_privilege('dfe_airbyte_admin', 'dfe_airbyte.targets', 'conninfo', 'UPDATE') AS admin_edits_conninfo,
       has_table_privilege('pg_monitor', 'dfe_airbyte.targets', 'SELECT') AS monitor_reads;

-- the settings: the passfile is superuser-only
SELECT name, setting, unit, context FROM pg_settings
 WHERE name IN ('dfe_airbyte.passfile', 'dfe_airbyte.target_timeout') ORDER BY 1;
CREATE ROLE regress_targets_user;
SET ROLE regress_targets_user;
SHOW dfe_airbyte.passfile;
RESET ROLE;
DROP ROLE regress_targets_user;
