/*
 * dfe_airbyte.c — module load: settings, the log hook, the cJSON allocator,
 * shared memory and the two background workers (guard_worker.c,
 * net_worker.c).  Everything else lives in the file of its concern.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "compat.h"
#include "guard_worker.h"
#include "net_worker.h"
#include "settings.h"
#include "shared.h"

PG_MODULE_MAGIC;

/* PostgreSQL 16 declares it so in fmgr.h; 15 does not */
extern PGDLLEXPORT void _PG_init(void);

void
_PG_init(void)
{
	dfe_define_settings();
	dfe_json_init();
	dfe_install_log_hook();
	dfe_shmem_init();

	/*
	 * libcurl is initialised on first use (http.c), in the processes that
	 * call out: the guard worker never does.
	 */
	if (!process_shared_preload_libraries_in_progress)
		return;
	dfe_register_guard_worker();
	dfe_register_net_worker();
}
