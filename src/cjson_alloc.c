/*
 * cjson_alloc.c — cJSON allocates through palloc (set up by _PG_init).
 */
#include "postgres.h"

#include <cjson/cJSON.h>

#include "shared.h"

/*
 * cJSON allocates through palloc, so a cJSON tree belongs to the memory
 * context that was current when it was built: an ERROR anywhere frees it
 * with that context, no PG_TRY needed.  palloc never returns NULL (it
 * raises ERROR instead), which cJSON handles as an ordinary failure path.
 */
static void *
cjson_palloc(size_t size)
{
	return palloc(size);
}

static void
cjson_pfree(void *ptr)
{
	if (ptr)
		pfree(ptr);
}

void
dfe_json_init(void)
{
	cJSON_Hooks hooks = {cjson_palloc, cjson_pfree};

	cJSON_InitHooks(&hooks);
}

