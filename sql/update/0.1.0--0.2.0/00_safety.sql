
-- search_path safety (SPEC §9), as at the start of the install script: the
-- upgrade resolves nothing through public.  SET LOCAL: ALTER EXTENSION
-- UPDATE runs each script like a function with a SET clause
-- (execute_extension_script: NewGUCNestLevel() ... AtEOXact_GUC()), which
-- undoes a SET LOCAL when the script ends; a plain SET would outlive it.
SET LOCAL search_path = pg_catalog, pg_temp;
