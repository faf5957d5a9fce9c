-- part 99: checks at CREATE EXTENSION time.

DO $$
BEGIN
    IF @extschema@.dfe_airbyte_worker_pid() IS NULL THEN
        RAISE NOTICE 'the dfe_airbyte background worker is not running'
            USING DETAIL = 'Deploys are queued but not run, and the replication slot is not watched.',
                  HINT = 'Add dfe_airbyte to shared_preload_libraries, set dfe_airbyte.database to this database and restart the server.';
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
                  HINT = 'Create each function as @extschema@.dfe_airbyte_x(...) with SET search_path = pg_catalog, pg_temp (RULES.md, SPEC §9).';
    END IF;
END
$$;
