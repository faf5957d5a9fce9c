-- BigQuery policy tags and the Google credential check: signatures,
-- privileges, and clear errors while nothing is configured.
SELECT pg_get_function_result('dfe_airbyte_apply_policy_tags'::regproc);
SELECT unnest(string_to_array(pg_get_function_arguments('dfe_airbyte_google_auth_check'::regproc), ', ')) AS out_columns;
-- callable unqualified with the default search_path
SELECT n.nspname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE p.proname = 'dfe_airbyte_apply_policy_tags';
-- not for PUBLIC; for dfe_airbyte_admin
SELECT f, has_function_privilege('public', f, 'EXECUTE') AS public_may,
       has_function_privilege('dfe_airbyte_admin', f, 'EXECUTE') AS admin_may
  FROM unnest(ARRAY['dfe_airbyte_apply_policy_tags(text)', 'dfe_airbyte_google_auth_check()']) AS f;
CREATE ROLE regress_plain_bq LOGIN;
SET ROLE regress_plain_bq;
SELECT * FROM dfe_airbyte_apply_policy_tags();
RESET ROLE;
DROP ROLE regress_plain_bq;
-- unset settings are named, with the environment variable to use instead
SELECT * FROM dfe_airbyte_apply_policy_tags();
SELECT * FROM dfe_airbyte_google_auth_check();
