-- dfe_airbyte_load_config(): the allowlist and the blocklist from the
-- dfe-analytics files, YAML or JSON; bad input is an error naming the list,
-- the line and the key, and changes nothing.
\set VERBOSITY default
CREATE FUNCTION lists_state() RETURNS text LANGUAGE sql AS $$
    SELECT 'allow: ' || coalesce((SELECT string_agg(table_name || '.' || column_name, ' ' ORDER BY table_name, column_name)
                                    FROM dfe_airbyte.allowlist), '-')
        || ' / block: ' || coalesce((SELECT string_agg(table_name || '.' || column_name, ' ' ORDER BY table_name, column_name)
                                       FROM dfe_airbyte.blocklist), '-')
$$;

-- the gem's files: shared: -> table -> list of columns
SELECT * FROM dfe_airbyte_load_config(
$yaml$# config/analytics.yml
shared:
  users:
    - id
    - email
    - created_at
  schools:
    - id
    - name
    - urn
  audits: []
$yaml$,
$yaml$shared:
  users:
    - email
$yaml$);
SELECT lists_state();

-- a bare mapping is the same thing; unchanged rows keep their loaded_at
UPDATE dfe_airbyte.allowlist SET loaded_at = '2020-01-01 00:00:00+00';
SELECT * FROM dfe_airbyte_load_config(
$yaml$users: [id, email, created_at, updated_at]
schools: [id, name]
$yaml$);
SELECT table_name, column_name, loaded_at = '2020-01-01 00:00:00+00' AS kept_loaded_at
  FROM dfe_airbyte.allowlist ORDER BY table_name, column_name;
-- the blocklist was not passed (NULL): unchanged
SELECT lists_state();

-- the same shape as JSON, bare or under "shared"
SELECT * FROM dfe_airbyte_load_config('{"users": ["id", "email"], "schools": ["id"]}',
                                       '  {"shared": {"users": ["email"], "schools": ["name"]}}');
SELECT lists_state();
-- JSON escapes are decoded
SELECT * FROM dfe_airbyte_load_config('{"users": ["id", "caf\u00e9"]}', NULL);
SELECT lists_state();

-- blocklist '' (or no tables) empties the blocklist
SELECT * FROM dfe_airbyte_load_config('users: [id, email]', '');
SELECT lists_state();
SELECT * FROM dfe_airbyte_load_config(NULL, 'users: [email]');
SELECT * FROM dfe_airbyte_load_config(NULL, E'shared:\n');
SELECT * FROM dfe_airbyte_load_config(NULL, '{}');
SELECT * FROM dfe_airbyte_load_config(NULL, E'# nothing is sensitive\nusers: []\n');
SELECT lists_state();

-- quoted names that YAML would otherwise read as null, boolean or number
SELECT * FROM dfe_airbyte_load_config(
$yaml$shared:
  "no":
    - "yes"
    - '123'
    - "null"
  shared: [id]
$yaml$);
SELECT lists_state();

-- the state every error below must leave untouched
SELECT * FROM dfe_airbyte_load_config(
$yaml$shared:
  users:
    - id
    - email
  schools: [id, name]
$yaml$, 'users: [email]');
SELECT lists_state() AS before \gset

-- invalid YAML
SELECT * FROM dfe_airbyte_load_config(
$yaml$shared:
  users:
    - id
   - email
$yaml$);
SELECT lists_state() = :'before' AS unchanged;
SELECT * FROM dfe_airbyte_load_config(
$yaml$users: [id, email
schools: [id]
$yaml$);
SELECT * FROM dfe_airbyte_load_config(E'users: [id, "em\x01ail"]');
SELECT * FROM dfe_airbyte_load_config(E'users: [id]\nschools: *nowhere\n');
SELECT lists_state() = :'before' AS unchanged;

-- invalid JSON
SELECT * FROM dfe_airbyte_load_config(
$json${
  "users": [
    "id"
    "email"
  ]
}$json$);
SELECT * FROM dfe_airbyte_load_config('{"users": ["id",]}');
SELECT * FROM dfe_airbyte_load_config(E'{"users": ["id"\n');
SELECT * FROM dfe_airbyte_load_config('{"users": ["id"]} trailing');
SELECT lists_state() = :'before' AS unchanged;

-- a table that does not map to a list
SELECT * FROM dfe_airbyte_load_config(
$yaml$shared:
  users:
    id: integer
    email: string
$yaml$);
SELECT * FROM dfe_airbyte_load_config(E'shared:\n  users: id\n');
SELECT * FROM dfe_airbyte_load_config(E'shared:\n  users: &cols [id]\n  schools:\n    <<: *cols\n');
SELECT * FROM dfe_airbyte_load_config('{"users": "id"}');
SELECT * FROM dfe_airbyte_load_config(E'{"shared": {\n  "users": {"id": 1}}}');
SELECT lists_state() = :'before' AS unchanged;

-- a column that is not a string
SELECT * FROM dfe_airbyte_load_config(E'users:\n  - id\n  - [email, name]\n');
SELECT * FROM dfe_airbyte_load_config(E'users:\n  - id\n  - email:\n');
SELECT * FROM dfe_airbyte_load_config(E'users:\n  - id\n  - 123\n');
SELECT * FROM dfe_airbyte_load_config(E'users:\n  - id\n  - yes\n');
SELECT * FROM dfe_airbyte_load_config(E'users:\n  - id\n  -\n  - email\n');
SELECT * FROM dfe_airbyte_load_config(E'users:\n  - id\n  - ~\n');
SELECT * FROM dfe_airbyte_load_config(E'users: &x [id, *x]\n');
SELECT * FROM dfe_airbyte_load_config(E'{"users": [\n  "id",\n  42]}');
SELECT * FROM dfe_airbyte_load_config('{"users": ["id", true]}');
SELECT * FROM dfe_airbyte_load_config('{"users": ["id", null]}');
SELECT * FROM dfe_airbyte_load_config('{"users": ["id", ["email"]]}');
SELECT lists_state() = :'before' AS unchanged;

-- empty names
SELECT * FROM dfe_airbyte_load_config(E'users:\n  - id\n  - ""\n');
SELECT * FROM dfe_airbyte_load_config(E'shared:\n  "": [id]\n');
SELECT * FROM dfe_airbyte_load_config(E'shared:\n  ~: [id]\n');
SELECT * FROM dfe_airbyte_load_config(E'shared:\n  2024: [id]\n');
SELECT * FROM dfe_airbyte_load_config('{"": ["id"]}');
SELECT lists_state() = :'before' AS unchanged;

-- duplicates
SELECT * FROM dfe_airbyte_load_config(
$yaml$shared:
  users:
    - id
  schools:
    - id
  users:
    - email
$yaml$);
SELECT * FROM dfe_airbyte_load_config(E'users: []\nusers: [id]');
SELECT * FROM dfe_airbyte_load_config(
$json${"users": ["id"],
 "schools": ["id"],
 "users": ["email"]}$json$);
SELECT * FROM dfe_airbyte_load_config(E'shared:\n  users: [id]\nshared:\n  schools: [id]\n');
SELECT lists_state() = :'before' AS unchanged;

-- empty documents
SELECT * FROM dfe_airbyte_load_config('');
SELECT * FROM dfe_airbyte_load_config(E'# nothing yet\n');
SELECT * FROM dfe_airbyte_load_config(E'shared:\n');
SELECT * FROM dfe_airbyte_load_config('users: []');
SELECT * FROM dfe_airbyte_load_config('{}');
SELECT * FROM dfe_airbyte_load_config(NULL, NULL);
SELECT lists_state() = :'before' AS unchanged;

-- other shapes
SELECT * FROM dfe_airbyte_load_config(E'- users\n- schools\n');
SELECT * FROM dfe_airbyte_load_config('id');
SELECT * FROM dfe_airbyte_load_config(E'users: [id]\n---\nschools: [id]\n');
SELECT lists_state() = :'before' AS unchanged;

-- a valid allowlist with a bad blocklist changes neither
SELECT * FROM dfe_airbyte_load_config('users: [id, email, name]', E'shared:\n  users: email\n');
SELECT lists_state() = :'before' AS unchanged;

-- a load is part of the calling transaction: a rollback undoes it
BEGIN;
SELECT * FROM dfe_airbyte_load_config('users: [id]', '');
ROLLBACK;
SELECT lists_state() = :'before' AS unchanged;

-- ---------------------------------------------------------------------
-- The services' files load unchanged: the shapes of real files
-- and of the dfe-analytics gem's specs.
-- ---------------------------------------------------------------------
CREATE FUNCTION lists3_state() RETURNS text LANGUAGE sql AS $$
    SELECT lists_state()
        || ' / excluded: ' || coalesce((SELECT string_agg(table_name || '.' || column_name, ' ' ORDER BY table_name, column_name)
                                          FROM dfe_airbyte.excluded), '-')
        || ' / tags: ' || coalesce((SELECT string_agg(table_name || '.' || column_name || '=' || policy_tag, ' ' ORDER BY table_name, column_name)
                                      FROM dfe_airbyte.blocklist WHERE policy_tag IS NOT NULL), '-')
$$;

-- a column listed twice (register-trainee-teachers' analytics.yml has one):
-- kept once, a NOTICE names the line
SELECT * FROM dfe_airbyte_load_config(
$yaml$---
shared:
  :trainees:
    - id
    - trn
    - hesa_id
    - trn
  "schools":
    - :urn
    - 'name'
  audits:
  placements: []
$yaml$);
SELECT lists3_state();
SELECT * FROM dfe_airbyte_load_config(E'{"users": [\n  "id",\n  "email",\n  "id"]}');

-- the three files of a service that keeps three lists (find-a-lost-trn):
-- analytics.yml -> allowlist, analytics_hidden_pii.yml -> blocklist (tagged
-- hidden), analytics_blocklist.yml -> excluded (not replicated)
SELECT * FROM dfe_airbyte_load_config(
$yaml$# config/analytics.yml
shared:
  trn_requests:
    - id
    - email
    - date_of_birth
    - created_at
$yaml$,
$yaml$# config/analytics_hidden_pii.yml
shared:
  trn_requests:
    - email
    - date_of_birth
$yaml$,
$yaml$# config/analytics_blocklist.yml
shared:
  trn_requests:
    - national_insurance_number
    - ip_address
  sessions:
    - data
$yaml$);
SELECT lists3_state();
-- two arguments keep working: the excluded list stays as it is
SELECT * FROM dfe_airbyte_load_config(E'shared:\n  trn_requests: [id, email]\n', E'shared:\n  trn_requests: [email]\n');
SELECT lists3_state();
-- excluded '' empties it
SELECT * FROM dfe_airbyte_load_config(NULL, NULL, '');
SELECT lists3_state();

-- a blocklisted column with its own policy tag
SELECT * FROM dfe_airbyte_load_config(NULL,
$yaml$shared:
  trn_requests:
    - email
    - {name: date_of_birth, policy_tag: projects/p/locations/europe-west2/taxonomies/1/policyTags/2}
    - name: trn
      policy_tag: projects/p/locations/europe-west2/taxonomies/1/policyTags/3
$yaml$);
SELECT lists3_state();
SELECT * FROM dfe_airbyte_load_config(NULL, E'users:\n  - {name: email, policy_tag: hidden}\n');
SELECT * FROM dfe_airbyte_load_config(NULL, E'users:\n  - {column: email}\n');
SELECT * FROM dfe_airbyte_load_config(E'users:\n  - {name: email, policy_tag: projects/p/locations/l/taxonomies/1/policyTags/2}\n');
SELECT * FROM dfe_airbyte_load_config(NULL, '{"users": [{"name": "email", "policy_tag": "projects/p/locations/l/taxonomies/1/policyTags/2"}, "email"]}');
SELECT lists3_state();

-- environment sections beside shared:, merged as Rails' config_for does:
-- without dfe_airbyte.rails_env only shared is read (a NOTICE says so)
SELECT * FROM dfe_airbyte_load_config(
$yaml$defaults: &defaults
  users: [id, email]
  schools: [id, name]
shared:
  <<: *defaults
  schools: [id, name, urn]
production:
  users: [id]
test:
  users: [id, email, test_only]
  fixtures: [id]
$yaml$);
SELECT lists3_state();
-- with it, the environment's table lists replace shared's (deep_merge
-- replaces arrays), its new tables are added, other environments ignored
SET dfe_airbyte.rails_env = 'test';
SELECT * FROM dfe_airbyte_load_config(
$yaml$defaults: &defaults
  users: [id, email]
  schools: [id, name]
shared:
  <<: *defaults
  schools: [id, name, urn]
production:
  users: [id]
test:
  users: [id, email, test_only]
  fixtures: [id]
$yaml$);
SELECT lists3_state();
-- a file with only the environment's section
SELECT * FROM dfe_airbyte_load_config(E'test:\n  users: [id]\ndevelopment:\n  users: [id, dev]\n');
SELECT lists3_state();
RESET dfe_airbyte.rails_env;
-- a merge of something that is not a mapping, and ERB, are errors
SELECT * FROM dfe_airbyte_load_config(E'shared:\n  users: &cols [id]\n  <<: *cols\n');
SELECT * FROM dfe_airbyte_load_config(E'shared:\n  users: [id, <%= ENV["X"] %>]\n');
DELETE FROM dfe_airbyte.excluded;
DROP FUNCTION lists3_state();

-- who may load
CREATE ROLE regress_lists_admin IN ROLE dfe_airbyte_admin;
CREATE ROLE regress_lists_plain;
SET ROLE regress_lists_plain;
SELECT * FROM dfe_airbyte_load_config('users: [id]');
RESET ROLE;
SET ROLE regress_lists_admin;
SELECT * FROM dfe_airbyte_load_config('users: [id, email]', 'users: [email]');
RESET ROLE;
SELECT lists_state();

-- each target has its own lists: loading one leaves the others alone
-- (a target row inserted by hand: loading the lists does not connect)
INSERT INTO dfe_airbyte.targets (name, conninfo) VALUES ('regress_svc', 'host=svc.invalid dbname=svc');
SELECT * FROM dfe_airbyte_load_config('users: [id, name]', 'users: [name]', 'users: [secret]', target => 'regress_svc');
SELECT * FROM dfe_airbyte_load_config('users: [id]', target => 'regress_svc');
SELECT target, table_name, column_name FROM dfe_airbyte.allowlist ORDER BY 1, 2, 3;
SELECT target, table_name, column_name FROM dfe_airbyte.blocklist ORDER BY 1, 2, 3;
SELECT target, table_name, column_name FROM dfe_airbyte.excluded ORDER BY 1, 2, 3;
-- the target's stream configuration comes from its own allowlist
SELECT s->>'name' AS stream, s->'selectedFields' AS fields
  FROM jsonb_array_elements((SELECT dfe_airbyte_stream_config())->'configurations'->'streams') s;
-- an unknown or disabled target is an error that changes nothing
SELECT * FROM dfe_airbyte_load_config('users: [x]', target => 'regress_nope');
UPDATE dfe_airbyte.targets SET enabled = false WHERE name = 'regress_svc';
SELECT * FROM dfe_airbyte_load_config('users: [x]', target => 'regress_svc');
-- dropping the target drops its lists
DELETE FROM dfe_airbyte.targets WHERE name = 'regress_svc';
SELECT target, count(*) FROM dfe_airbyte.allowlist GROUP BY 1;
SELECT count(*) FROM dfe_airbyte.blocklist WHERE target <> 'local';

-- leave the lists empty for the next tests
DELETE FROM dfe_airbyte.allowlist;
DELETE FROM dfe_airbyte.blocklist;
DROP ROLE regress_lists_admin, regress_lists_plain;
DROP FUNCTION lists_state();
