-- part 99: checks at CREATE EXTENSION time.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM dfe_airbyte.workers WHERE pid IS NULL) THEN
        RAISE NOTICE 'the dfe_airbyte background workers are not running (%)',
                     (SELECT string_agg(worker, ' and ' ORDER BY worker) FROM dfe_airbyte.workers WHERE pid IS NULL)
            USING DETAIL = 'Without the network worker deploys are queued but not run; without the guard worker the replication slot is not watched.',
                  HINT = 'Add dfe_airbyte to shared_preload_libraries, set dfe_airbyte.database to this database and restart the server.';
    END IF;
END
$$;
