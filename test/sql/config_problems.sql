-- dfe_airbyte.config_problems: what is wrong with the configuration now.
-- The regression instance has no Airbyte or BigQuery settings, no
-- publication and no slot, so those rows are expected.  The worker's own
-- row depends on whether it has started yet: left out.  So are the rows that
-- depend on how the server is configured (make installcheck runs against
-- your own server): they are checked on their own below.
CREATE VIEW problems AS
    SELECT severity, object, problem, hint FROM dfe_airbyte.config_problems
     WHERE object NOT IN ('background worker', 'dfe_airbyte.database', 'max_slot_wal_keep_size', 'disk headroom');

-- empty lists: only settings, publication, heartbeat table and slot
SELECT severity, object, problem FROM problems;
-- the server-dependent rows are there exactly when the server's settings call for them
SELECT EXISTS (SELECT 1 FROM dfe_airbyte.config_problems WHERE object = 'dfe_airbyte.database')
         = (current_setting('dfe_airbyte.database') <> current_database()) AS database_row_right,
       EXISTS (SELECT 1 FROM dfe_airbyte.config_problems WHERE object = 'max_slot_wal_keep_size')
         = (current_setting('max_slot_wal_keep_size') = '-1') AS keep_size_row_right;
-- every row has a hint
SELECT count(*) AS rows_without_hint FROM dfe_airbyte.config_problems WHERE hint IS NULL OR hint = '';

-- the rows about the lists and the catalog
CREATE TABLE users (id bigint PRIMARY KEY, email text, name text, password_digest text, created_at timestamptz);
CREATE TABLE schools (urn text, name text, region text);                       -- no primary key
CREATE TABLE memberships (user_id bigint, school_id bigint, role text, PRIMARY KEY (user_id, school_id));
CREATE TABLE airbyte_heartbeat (id serial PRIMARY KEY, last_heartbeat timestamptz);
SELECT list, tables, columns FROM dfe_airbyte_load_config(
$yaml$shared:
  users:
    - id
    - email
    - name
    - nickname
    - _ab_cdc_lsn
  schools:
    - name
    - urn
  memberships:
    - school_id
    - role
  ghosts:
    - id
  airbyte_heartbeat:
    - id
$yaml$,
$yaml$shared:
  users:
    - email
    - password_digest
  ghosts:
    - secret
$yaml$);
SELECT severity, object, problem, hint FROM problems
 WHERE object NOT LIKE 'dfe_airbyte.%' AND object NOT IN ('max_slot_wal_keep_size', 'airbyte_slot');

-- the publication: missing tables, column lists, operations, replica identity
CREATE TABLE audits (message text);                                          -- no key at all
CREATE PUBLICATION airbyte_publication FOR TABLE users (id, email, created_at), schools, audits
    WITH (publish = 'insert, update');
SELECT severity, object, problem, hint FROM problems
 WHERE object IN ('airbyte_publication', 'audits', 'schools', 'memberships', 'users.name', 'users.email');
-- a replica identity makes UPDATE and DELETE work again; FOR ALL TABLES covers every table
ALTER TABLE schools REPLICA IDENTITY FULL;
ALTER TABLE audits REPLICA IDENTITY FULL;
DROP PUBLICATION airbyte_publication;
CREATE PUBLICATION airbyte_publication FOR ALL TABLES;
SELECT severity, object, problem FROM problems WHERE problem LIKE '%publication%' AND object NOT LIKE 'dfe_airbyte.%';

-- the slot: another plugin is an error, a missing slot a warning
SELECT severity, object, problem FROM problems WHERE object = 'airbyte_slot';
SELECT 1 FROM pg_create_logical_replication_slot('airbyte_slot', 'test_decoding');
SELECT severity, object, problem FROM problems WHERE object = 'airbyte_slot';
SELECT 1 FROM pg_drop_replication_slot('airbyte_slot');

-- after fixing the lists only the deliberate choices remain
SELECT list, tables, columns FROM dfe_airbyte_load_config(
$yaml$shared:
  users: [id, email, name, created_at]
  schools: [urn, name, region]
  memberships: [user_id, school_id, role]
$yaml$,
$yaml$shared:
  users: [email, password_digest]
$yaml$);
SELECT severity, object, problem FROM problems
 WHERE object NOT LIKE 'dfe_airbyte.%' AND object NOT IN ('max_slot_wal_keep_size', 'airbyte_slot');

-- the third list: excluded columns are no longer asked about; a column both
-- allowlisted and excluded is an error
SELECT list, tables, columns FROM dfe_airbyte_load_config(
$yaml$shared:
  users: [id, email, name]
  schools: [urn, name, region]
  memberships: [user_id, school_id, role]
$yaml$,
$yaml$shared:
  users: [email]
$yaml$,
$yaml$shared:
  users: [password_digest, created_at]
  schools: [region]
$yaml$);
SELECT severity, object, problem, hint FROM problems
 WHERE object NOT LIKE 'dfe_airbyte.%' AND object NOT IN ('max_slot_wal_keep_size', 'airbyte_slot');
DELETE FROM dfe_airbyte.excluded;

-- the settings part on its own, the same for everyone allowed; never a secret
SELECT severity, object FROM dfe_airbyte_setting_problems()
 WHERE object NOT IN ('background worker', 'dfe_airbyte.database', 'max_slot_wal_keep_size', 'disk headroom') ORDER BY 2, 1;

-- a target's own settings (dfe_airbyte.targets.settings): an UPDATE is not
-- checked, so the settings part checks them as dfe_airbyte_add_target()
-- does, and runs the per-service checks with them over the global ones
UPDATE dfe_airbyte.targets
   SET settings = '{"slot_limit_action": "bogus", "disk_size": "lots", "no_such_setting": "1", "slot_name": "", "publication": null}'
 WHERE name = 'local';
SELECT target_name, severity, object, problem FROM dfe_airbyte_setting_problems()
 WHERE target_name IS NOT NULL ORDER BY object;
-- the lists of a target whose settings cannot be applied are not checked: one row says so
SELECT target, severity, object, problem FROM dfe_airbyte.config_problems
 WHERE object IN ('dfe_airbyte.slot_limit_action', 'dfe_airbyte.disk_size', 'dfe_airbyte.bigquery_dataset', 'target local')
 ORDER BY object;
-- a value of the right form that the server still refuses (out of range)
UPDATE dfe_airbyte.targets SET settings = '{"max_slot_recreations_per_day": "200"}' WHERE name = 'local';
SELECT target_name, severity, object, problem FROM dfe_airbyte_setting_problems()
 WHERE target_name IS NOT NULL ORDER BY object;
-- usable overrides apply in the target's scope: no row for them
UPDATE dfe_airbyte.targets
   SET settings = '{"hidden_policy_tag": "projects/p/locations/eu/taxonomies/1/policyTags/2", "bigquery_dataset": "svc", "max_slot_wal_size": "1GB"}'
 WHERE name = 'local';
SELECT target_name, object FROM dfe_airbyte_setting_problems()
 WHERE target_name IS NOT NULL AND object NOT IN ('max_slot_wal_keep_size') ORDER BY object;
-- and do not leak out of it
SELECT current_setting('dfe_airbyte.bigquery_dataset') AS global_dataset;
-- another target has its own rows; NULL gives the installation's alone
INSERT INTO dfe_airbyte.targets (name, conninfo, settings)
VALUES ('regress_other', 'host=/nonexistent dbname=other', '{"connection_id": "abc", "hidden_policy_tag": "not/a/tag"}');
SELECT target_name, object, problem FROM dfe_airbyte_setting_problems('regress_other')
 WHERE target_name IS NOT NULL ORDER BY object;
SELECT count(*) AS target_rows FROM dfe_airbyte_setting_problems(NULL) WHERE target_name IS NOT NULL;
SELECT count(*) AS same_installation_rows FROM (
    SELECT severity, object, problem FROM dfe_airbyte_setting_problems(NULL)
    EXCEPT
    SELECT severity, object, problem FROM dfe_airbyte_setting_problems('regress_other') WHERE target_name IS NULL) d;
-- a disabled target: only its settings are checked
UPDATE dfe_airbyte.targets SET enabled = false, settings = '{"slot_limit_action": "bogus"}' WHERE name = 'regress_other';
SELECT target_name, object FROM dfe_airbyte_setting_problems('regress_other')
 WHERE target_name IS NOT NULL ORDER BY object;
SELECT * FROM dfe_airbyte_setting_problems('no_such_target');
DELETE FROM dfe_airbyte.targets WHERE name = 'regress_other';
UPDATE dfe_airbyte.targets SET settings = '{}' WHERE name = 'local';

-- who may look
CREATE ROLE regress_cp_plain;
CREATE ROLE regress_cp_monitor IN ROLE pg_monitor;
CREATE ROLE regress_cp_admin IN ROLE dfe_airbyte_admin;
SELECT count(*) AS superuser_rows FROM problems \gset
SET ROLE regress_cp_plain;
SELECT count(*) FROM dfe_airbyte.config_problems;
SELECT count(*) FROM dfe_airbyte_setting_problems();
SET ROLE regress_cp_monitor;
SELECT count(*) = :superuser_rows AS monitor_sees_all
  FROM dfe_airbyte.config_problems
 WHERE object NOT IN ('background worker', 'dfe_airbyte.database', 'max_slot_wal_keep_size', 'disk headroom');
SET ROLE regress_cp_admin;
SELECT count(*) = :superuser_rows AS admin_sees_all
  FROM dfe_airbyte.config_problems
 WHERE object NOT IN ('background worker', 'dfe_airbyte.database', 'max_slot_wal_keep_size', 'disk headroom');
RESET ROLE;

DROP PUBLICATION airbyte_publication;
DELETE FROM dfe_airbyte.allowlist;
DELETE FROM dfe_airbyte.blocklist;
DROP VIEW problems;
DROP TABLE users, schools, memberships, airbyte_heartbeat, audits;
DROP ROLE regress_cp_plain, regress_cp_monitor, regress_cp_admin;
