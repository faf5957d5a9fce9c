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
