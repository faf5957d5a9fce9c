-- part 99: checks at CREATE EXTENSION time.
-- (CREATE EXTENSION raises client_min_messages to WARNING while the script
-- runs, so only the WARNING reaches the user; the NOTICE is for the log of
-- scripts run with log_min_messages = notice.)

DO $$
BEGIN
    IF pg_catalog.strpos(pg_catalog.current_setting('shared_preload_libraries'), 'dfe_airbyte') = 0 THEN
        RAISE WARNING 'the dfe_airbyte background workers are not running (guard and network): dfe_airbyte is not in shared_preload_libraries'
            USING DETAIL = 'Without the network worker deploys are queued but not run; without the guard worker the replication slot is not watched.',
                  HINT = 'Add dfe_airbyte to shared_preload_libraries, set dfe_airbyte.database to this database and restart the server.';
    ELSIF EXISTS (SELECT 1 FROM dfe_airbyte.workers WHERE pid IS NULL) THEN
        RAISE NOTICE 'the dfe_airbyte background workers are not running yet (%)',
                     (SELECT pg_catalog.string_agg(worker, ' and ' ORDER BY worker) FROM dfe_airbyte.workers WHERE pid IS NULL)
            USING DETAIL = 'Without the network worker deploys are queued but not run; without the guard worker the replication slot is not watched.',
                  HINT = 'Check that dfe_airbyte.database names this database; SELECT * FROM dfe_airbyte.workers shows them once they run.';
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
