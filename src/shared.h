/*
 * shared.h — the little state the backends and the two workers share
 * (shmem.c).
 *
 * Only plain values live in shared memory (pids, latches, counters,
 * timestamps, the database the workers serve); tokens and HTTP handles stay
 * in the network worker's own process memory.  dfe_shared is NULL when the
 * library was not preloaded: the SQL functions still work, there is just no
 * worker to wake.
 */
#ifndef DFE_AIRBYTE_SHARED_H
#define DFE_AIRBYTE_SHARED_H

#include "datatype/timestamp.h"
#include "storage/latch.h"
#include "storage/spin.h"

/*
 * The two background workers.  The guard samples the slots and acts on
 * them and never calls out (http.c refuses to run in it); the network
 * worker runs everything that talks to Airbyte or Google.
 */
typedef enum DfeWorkerKind
{
	DFE_GUARD_WORKER,
	DFE_NET_WORKER
} DfeWorkerKind;

#define DFE_NUM_WORKERS 2

typedef struct DfeWorkerSlot
{
	pid_t		pid;			/* 0 when the worker does not run */
	Latch	   *latch;			/* its MyLatch, valid while pid != 0 */
	TimestampTz started_at;
} DfeWorkerSlot;

typedef struct DfeShared
{
	slock_t		mutex;
	DfeWorkerSlot workers[DFE_NUM_WORKERS];

	/* the database both workers connected to (InvalidOid until one did) */
	Oid			database_oid;

	/*
	 * dfe_airbyte_deploy(wait => true) cannot insert the deploy row itself:
	 * its own transaction only commits after it returns.  It bumps
	 * deploy_request_seq instead; the network worker creates one deploy row
	 * for all requests up to that number and publishes it as
	 * deploy_request_done / deploy_request_id.  A request names its target:
	 * a caller only makes one when none is pending (done == seq), so the
	 * target of a pending request is never overwritten.
	 */
	uint64		deploy_request_seq;
	uint64		deploy_request_done;
	int64		deploy_request_id;
	Oid			deploy_requested_by;
	char		deploy_request_target[NAMEDATALEN];
} DfeShared;

extern DfeShared *dfe_shared;

/* true in the guard worker: http.c refuses every request there */
extern bool dfe_process_is_guard;

/* shmem.c: install the shared memory hooks and the commit-time wake-up */
extern void dfe_shmem_init(void);

/* shmem.c: a worker publishes itself (pid, latch, database) / withdraws at exit */
extern void dfe_worker_attach(DfeWorkerKind kind);

/* a worker's pid, 0 when it does not run (as far as shared memory knows) */
extern pid_t dfe_worker_pid_of(DfeWorkerKind kind);

/* true when the network worker (deploys, re-syncs, sync health) is alive */
extern bool dfe_worker_running(void);

/* the database the workers serve, InvalidOid when none has started yet */
extern Oid	dfe_served_database(void);

/* set a worker's latch now */
extern void dfe_wake(DfeWorkerKind kind);

/* set the network worker's latch now (deploy requests) */
extern void dfe_wake_worker(void);

/* set a worker's latch when the current top-level transaction commits */
extern void dfe_wake_at_commit(DfeWorkerKind kind);

/* set the network worker's latch when the current top-level transaction commits */
extern void dfe_wake_worker_at_commit(void);

/*
 * shmem.c: sleep ms inside a task (a back-off, a pause between polls),
 * checking for interrupts at least every 200 ms.  The process latch is the
 * one dfe_airbyte_deploy()'s commit sets: a wake-up that arrives during the
 * sleep does not end it, but it is never lost either: the latch is set
 * again on return, so the worker's loop still sees it.
 */
extern void dfe_sleep_ms(long ms);

/* cjson_alloc.c: set up the cJSON allocator so cJSON memory lives in memory contexts */
extern void dfe_json_init(void);

/* log_hook.c: hide secret settings' values from the server log */
extern void dfe_install_log_hook(void);

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
