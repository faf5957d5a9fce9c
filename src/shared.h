/*
 * shared.h — the little state the backends and the worker share.
 *
 * Only plain values live in shared memory (pids, counters, timestamps); the
 * worker's tokens and HTTP handles stay in its own process memory.
 * dfe_shared is NULL when the library was not preloaded: the SQL functions
 * still work, there is just no worker to wake.
 */
#ifndef DFE_AIRBYTE_SHARED_H
#define DFE_AIRBYTE_SHARED_H

#include "datatype/timestamp.h"
#include "storage/latch.h"
#include "storage/spin.h"

typedef struct DfeShared
{
	slock_t		mutex;
	pid_t		worker_pid;		/* 0 when no worker runs */
	Latch	   *worker_latch;	/* the worker's MyLatch, valid while worker_pid */
	TimestampTz worker_started_at;

	/*
	 * dfe_airbyte_deploy(wait => true) cannot insert the deploy row itself:
	 * its own transaction only commits after it returns.  It bumps
	 * deploy_request_seq instead; the worker creates one deploy row for all
	 * requests up to that number and publishes it as deploy_request_done /
	 * deploy_request_id.
	 */
	uint64		deploy_request_seq;
	uint64		deploy_request_done;
	int64		deploy_request_id;
	Oid			deploy_requested_by;
} DfeShared;

extern DfeShared *dfe_shared;

/* true when the worker process is alive (as far as shared memory knows) */
extern bool dfe_worker_running(void);

/* set the worker's latch now */
extern void dfe_wake_worker(void);

/* set the worker's latch when the current top-level transaction commits */
extern void dfe_wake_worker_at_commit(void);

/* set up the cJSON allocator so cJSON memory lives in memory contexts */
extern void dfe_json_init(void);

/*
 * The hint of an error that SQL objects older than the library can cause
 * (a table or column the library expects is missing).  ALTER EXTENSION
 * dfe_airbyte UPDATE brings them up to date (sql/dfe_airbyte--X--Y.sql
 * from every released version); dfe_airbyte.config_problems says when the
 * versions differ.
 */
#define DFE_UPDATE_HINT \
	"If dfe_airbyte.config_problems says the installed SQL objects are older than the library (" \
	DFE_AIRBYTE_VERSION "), run ALTER EXTENSION dfe_airbyte UPDATE; otherwise this is a bug: report it."

/*
 * An error that only a bug or a damaged installation can cause (SPI refusing
 * a query the extension wrote itself): still an errcode and a hint.
 */
#define dfe_internal_error(...) \
	ereport(ERROR, \
			(errcode(ERRCODE_INTERNAL_ERROR), \
			 errmsg_internal(__VA_ARGS__), \
			 errhint("%s", DFE_UPDATE_HINT)))

#endif
