
-- search_path safety (SPEC §9), last piece of the upgrade.
--
-- 0.1.0 created its functions without a SET clause.  Every function of the
-- extension now pins search_path = pg_catalog, pg_temp, as a fresh install
-- creates them.  The 0.1.0 functions:
--   dfe_airbyte_worker_pid(), dfe_airbyte_load_config(text, text),
--   dfe_airbyte_stream_config(), dfe_airbyte_stream_config_json(),
--   dfe_airbyte_setting_problems(), dfe_airbyte_connection_refresh(),
--   dfe_airbyte_start_sync(), dfe_airbyte_job_status(bigint),
--   dfe_airbyte_wait_for_job(bigint, interval), dfe_airbyte_deploy(boolean),
--   dfe_airbyte_migration_lock_key(), dfe_airbyte_apply_policy_tags(),
--   dfe_airbyte_google_auth_check(), dfe_airbyte_slot_guard_settings(),
--   dfe_airbyte_check_slots_now().
-- They are altered by a loop over the extension's members rather than by
-- name, so that a function another piece of this upgrade dropped or
-- re-created with a new signature is covered as well.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::pg_catalog.regprocedure
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_proc p ON p.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
           AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
           AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'dfe_airbyte')
           AND d.deptype = 'e'
           AND (p.proconfig IS NULL OR NOT ('search_path=pg_catalog, pg_temp' = ANY (p.proconfig)))
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END
$$;

-- dfe_airbyte_check_slots_now() works for dfe_airbyte_admin, to whom it is
-- granted: it writes slot_samples and slot_state, which that role may only
-- read (see sql/install/60_slots.sql).
ALTER FUNCTION @extschema@.dfe_airbyte_check_slots_now() SECURITY DEFINER;

-- Views bind their functions and operators when they are created.  0.1.0
-- created them with public on the search_path: one that bound to a
-- function or operator planted in public before CREATE EXTENSION would
-- call it for every reader (the worker is a superuser).  Refuse to carry
-- such a view over.
DO $$
DECLARE
    bad text;
BEGIN
    SELECT pg_catalog.string_agg(DISTINCT pg_catalog.format('%s uses %s', v.oid::pg_catalog.regclass,
               CASE WHEN d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                    THEN d.refobjid::pg_catalog.regprocedure::pg_catalog.text
                    ELSE d.refobjid::pg_catalog.regoperator::pg_catalog.text END), '; ')
      INTO bad
      FROM pg_catalog.pg_depend e
      JOIN pg_catalog.pg_class v ON v.oid = e.objid AND v.relkind = 'v'
      JOIN pg_catalog.pg_rewrite r ON r.ev_class = v.oid
      JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
                                 AND d.objid = r.oid
     WHERE e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
       AND e.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
       AND e.refobjid = (SELECT x.oid FROM pg_catalog.pg_extension x WHERE x.extname = 'dfe_airbyte')
       AND e.deptype = 'e'
       AND ((d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
             AND (SELECT p.pronamespace FROM pg_catalog.pg_proc p WHERE p.oid = d.refobjid)
                 <> 'pg_catalog'::pg_catalog.regnamespace)
         OR (d.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass
             AND (SELECT o.oprnamespace FROM pg_catalog.pg_operator o WHERE o.oid = d.refobjid)
                 <> 'pg_catalog'::pg_catalog.regnamespace))
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend m
                        WHERE m.classid = d.refclassid AND m.objid = d.refobjid
                          AND m.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                          AND m.refobjid = e.refobjid AND m.deptype = 'e');
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'dfe_airbyte views call functions or operators that are neither built in nor the extension''s: %', bad
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'They were most likely planted in a schema on the search_path before CREATE EXTENSION dfe_airbyte ran (CVE-2018-1058).',
                  HINT = 'Find out who created them, drop them, then re-create the extension in a maintenance window: save the lists (pg_dump -t dfe_airbyte.allowlist -t dfe_airbyte.blocklist), DROP EXTENSION dfe_airbyte, CREATE EXTENSION dfe_airbyte, reload the lists.';
    END IF;
END
$$;

-- search_path safety (SPEC §9): every function of the extension lives in
-- @extschema@ and pins its search_path.  A CREATE FUNCTION that forgot
-- either stops the install here, naming it, instead of shipping a function
-- that a planted public.format(text, name) could hijack.  The upgrade
-- script ends with the same check (sql/update/0.1.0--0.2.0/99_safety.sql).
DO $$
DECLARE
    bad text;
BEGIN
    SELECT pg_catalog.string_agg(p.oid::pg_catalog.regprocedure::pg_catalog.text, ', ')
      INTO bad
      FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_proc p ON p.oid = d.objid
     WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
       AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
       AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'dfe_airbyte')
       AND d.deptype = 'e'
       AND (p.pronamespace <> '@extschema@'::pg_catalog.regnamespace
            OR p.proconfig IS NULL
            OR NOT ('search_path=pg_catalog, pg_temp' = ANY (p.proconfig)));
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'dfe_airbyte functions without a pinned search_path: %', bad
            USING ERRCODE = 'invalid_function_definition',
                  HINT = 'Create each function as @extschema@.dfe_airbyte_x(...) with SET search_path = pg_catalog, pg_temp.';
    END IF;
END
$$;
