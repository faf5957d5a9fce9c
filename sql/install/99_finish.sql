-- part 99: checks at CREATE EXTENSION time.

DO $$
BEGIN
    IF dfe_airbyte_worker_pid() IS NULL THEN
        RAISE NOTICE 'the dfe_airbyte background worker is not running'
            USING DETAIL = 'Deploys are queued but not run, and the replication slot is not watched.',
                  HINT = 'Add dfe_airbyte to shared_preload_libraries, set dfe_airbyte.database to this database and restart the server.';
    END IF;
END
$$;
