/*
 * deploy_int.h — what the deploy files share (not an API of the extension).
 *
 *   deploy.c            the worker's state machine, one deploy at a time per target
 *   deploy_record.c     the deploys table: short transactions, the log, restart recovery
 *   deploy_migration.c  ActiveRecord's migration lock and the watch of schema_migrations
 *   deploy_sql.c        dfe_airbyte_deploy(wait, target)
 */
#ifndef DFE_AIRBYTE_DEPLOY_INT_H
#define DFE_AIRBYTE_DEPLOY_INT_H

#include "postgres.h"

#include "utils/timestamp.h"

#include "target.h"

/* the memory context of the running task (the worker's task context) */
extern MemoryContext dfe_deploy_cxt;

typedef struct DeployRow
{
	int64		id;
	char	   *step;
	int64		job_id;			/* 0: none yet */
	TimestampTz step_started_at;
	TimestampTz retrying_since; /* 0: not retrying */
} DeployRow;

/* deploy_record.c: a transaction with SPI connected; allocations stay in dfe_deploy_cxt */
extern void dfe_deploy_xact_begin(void);
extern void dfe_deploy_xact_commit(void);
extern void dfe_deploy_spi_exec(const char *sql, int nargs, Oid *types, Datum *values,
							const char *nulls, int expected);
extern int64 dfe_deploy_spi_int64(int row, int col, bool *isnull);
extern char *dfe_deploy_spi_text(int row, int col, MemoryContext cxt);
extern TimestampTz dfe_deploy_spi_timestamptz(int row, int col);

/* deploy_record.c: the deploy's log, state and events (inside dfe_deploy_xact_begin/commit) */
extern void dfe_deploy_server_log(int64 id, const char *step, const char *message);
extern void dfe_deploy_record_log(int64 id, const char *step, const char *message);
extern void dfe_deploy_record_step(int64 id, const char *step, const char *message, int64 job_id);
extern void dfe_deploy_record_failure(int64 id, const char *step, long http_status, const char *error);
extern void dfe_deploy_record_success(int64 id, const char *step, const char *message);

#define DEPLOY_LOG_ENTRY "jsonb_build_array(jsonb_build_object('at', clock_timestamp(), 'step', $2::text, 'message', $3::text))"

/*
 * deploy_migration.c: the pid of a session holding ActiveRecord's migration
 * lock in target t's database, 0 when none; *key is the lock's key.  Reads
 * the target's pg_locks through the seam (in a transaction for "local").
 */
extern int	dfe_deploy_migration_lock_holder(DfeTarget *t, int64 *key);

#endif
