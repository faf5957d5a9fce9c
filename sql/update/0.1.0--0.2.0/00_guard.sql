
-- guard (issue 9): dfe_airbyte_worker_pid() is the network worker's pid
COMMENT ON FUNCTION @extschema@.dfe_airbyte_worker_pid() IS 'pid of the dfe_airbyte network worker (deploys), NULL when it is not running; both workers are in dfe_airbyte.workers';
