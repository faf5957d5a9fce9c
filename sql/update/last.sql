
-- Appended by make to every upgrade step, and so also the last statement of
-- every fresh install (docs/development.md, "Releasing").
--
-- search_path safety (CVE-2018-1058): every function of the extension lives
-- in @extschema@ and pins its search_path.  A CREATE FUNCTION that forgot
-- either stops the install or the upgrade here, naming it, instead of
-- shipping a function that a planted public.format(text, name) could hijack.
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
