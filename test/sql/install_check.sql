-- The extension installs, lives where users expect, and protects itself.
-- (the version in the control file, so that a release needs no edit here)
SELECT e.extname, e.extversion = a.default_version AS is_default_version
  FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname
 WHERE e.extname = 'dfe_airbyte';
SELECT nspname FROM pg_namespace WHERE nspname = 'dfe_airbyte';
SELECT rolname FROM pg_roles WHERE rolname = 'dfe_airbyte_admin';
-- secrets are hidden from SHOW ALL and from non-superusers
SELECT name FROM pg_settings WHERE name LIKE 'dfe_airbyte.%secret%' OR name LIKE 'dfe_airbyte.google_cred%';
CREATE ROLE regress_plain LOGIN;
SET ROLE regress_plain;
SHOW dfe_airbyte.airbyte_client_secret;
SELECT count(*) FROM dfe_airbyte.events;
RESET ROLE;
-- URL settings cannot be changed by a session
SET dfe_airbyte.airbyte_url = 'http://evil.example';
SET dfe_airbyte.slot_limit_action = 'explode';
-- every documented setting exists; values set in the server's configuration
-- (make installcheck runs against your own server) are not shown
SELECT name, CASE WHEN source = 'default' THEN setting ELSE '(' || source || ')' END AS setting, unit, context
  FROM pg_settings WHERE name LIKE 'dfe_airbyte.%' ORDER BY name;
DROP ROLE regress_plain;
