/*
 * dfe_airbyte.c — module load: settings, shared memory, worker registration,
 * the cJSON allocator and the commit-time wake-up of the worker.
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/elog.h"
#include "utils/memutils.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "settings.h"
#include "shared.h"
#include "worker.h"

PG_MODULE_MAGIC;

DfeShared  *dfe_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static emit_log_hook_type prev_emit_log_hook = NULL;
static bool wake_at_commit = false;

void		_PG_init(void);

static void
dfe_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(DfeShared)));
}

static void
dfe_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	dfe_shared = ShmemInitStruct("dfe_airbyte", sizeof(DfeShared), &found);
	if (!found)
	{
		memset(dfe_shared, 0, sizeof(DfeShared));
		SpinLockInit(&dfe_shared->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

static void
dfe_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_at_commit)
				dfe_wake_worker();
			wake_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

/*
 * PostgreSQL logs every setting a reload changes, value included:
 * 'parameter "dfe_airbyte.airbyte_client_secret" changed to "..."' at LOG
 * in the postmaster, and it has no flag to hide a value.  This hook, which
 * the postmaster runs because we are preloaded, rewrites those lines for our
 * secret settings before they reach the log; the secret-holding settings are
 * listed here.
 */
static const char *const secret_settings[] = {
	"dfe_airbyte.airbyte_client_secret",
	"dfe_airbyte.google_credentials",
};

static bool
mentions_secret_setting(const char *text)
{
	int			i;

	for (i = 0; text && i < lengthof(secret_settings); i++)
	{
		if (strstr(text, secret_settings[i]) != NULL)
			return true;
	}
	return false;
}

/* inline credential JSON is a secret; a credential file path is not */
static const char *
if_inline_json(const char *credentials)
{
	if (credentials && credentials[strspn(credentials, " \t\r\n")] == '{')
		return credentials;
	return NULL;
}

/*
 * text with every occurrence of a secret replaced by [redacted] (allocated
 * in ErrorContext), or NULL when it holds none.
 */
static char *
without_secrets(const char *text, const char *const *secrets, int nsecrets)
{
	StringInfoData out;
	bool		found = false;
	int			i;

	if (text == NULL)
		return NULL;
	for (i = 0; i < nsecrets && !found; i++)
		found = secrets[i] && strstr(text, secrets[i]) != NULL;
	if (!found)
		return NULL;

	/*
	 * One pass per secret over the previous pass's result, copying around
	 * each hit: the scan never revisits its own "[redacted]" marks, so a
	 * secret that is a substring of the mark cannot loop.
	 */
	out.data = pstrdup(text);
	for (i = 0; i < nsecrets; i++)
	{
		StringInfoData next;
		const char *p = out.data;
		const char *hit;

		if (secrets[i] == NULL || strstr(p, secrets[i]) == NULL)
			continue;
		initStringInfo(&next);
		while ((hit = strstr(p, secrets[i])) != NULL)
		{
			appendBinaryStringInfo(&next, p, hit - p);
			appendStringInfoString(&next, "[redacted]");
			p = hit + strlen(secrets[i]);
		}
		appendStringInfoString(&next, p);
		pfree(out.data);
		out = next;
	}
	return out.data;
}

/*
 * The secrets' values, from the settings and from the environment variables
 * they fall back to (a Terraform-provisioned pod sets AIRBYTE_CLIENT_SECRET
 * and GOOGLE_CLOUD_CREDENTIALS, not the GUCs), are hidden from every part
 * of a log line: message, detail, hint, context and internal query.  The
 * message of a line that held one is replaced outright (its wording may
 * reveal the secret's shape); the other parts keep their text around a
 * [redacted] mark.
 */
static void
hide_secret_values(ErrorData *edata)
{
	const char *candidates[] = {
		dfe_airbyte_client_secret,
		getenv("AIRBYTE_CLIENT_SECRET"),
		if_inline_json(dfe_google_credentials),
		if_inline_json(getenv("GOOGLE_CLOUD_CREDENTIALS")),
	};
	const char *secrets[lengthof(candidates)];
	char	  **fields[] = {&edata->detail, &edata->detail_log, &edata->hint,
	&edata->context, &edata->internalquery};
	int			nsecrets = 0;
	int			i;
	MemoryContext old;

	/* very short values would hide ordinary words */
	for (i = 0; i < lengthof(candidates); i++)
		if (candidates[i] && strlen(candidates[i]) >= 6)
			secrets[nsecrets++] = candidates[i];
	if (nsecrets == 0)
		return;

	old = MemoryContextSwitchTo(ErrorContext);
	/* the STATEMENT line would repeat a statement that holds one */
	if (without_secrets(debug_query_string, secrets, nsecrets) != NULL)
		edata->hide_stmt = true;
	if (without_secrets(edata->message, secrets, nsecrets) != NULL)
		edata->message = pstrdup("a message that contained a dfe_airbyte secret was hidden");
	for (i = 0; i < lengthof(fields); i++)
	{
		char	   *clean = without_secrets(*fields[i], secrets, nsecrets);

		if (clean)
			*fields[i] = clean;
	}
	MemoryContextSwitchTo(old);
}

static void
dfe_emit_log_hook(ErrorData *edata)
{
	/*
	 * log_statement / log_min_duration_statement would log
	 * "ALTER SYSTEM SET dfe_airbyte.airbyte_client_secret = '...'" verbatim,
	 * and an error's STATEMENT line likewise.
	 */
	if (edata->message && mentions_secret_setting(edata->message) &&
		(strncmp(edata->message, "statement: ", 11) == 0 ||
		 strncmp(edata->message, "duration: ", 10) == 0 ||
		 strncmp(edata->message, "execute ", 8) == 0))
	{
		MemoryContext old = MemoryContextSwitchTo(ErrorContext);

		edata->message = pstrdup("statement: (hidden: it sets a dfe_airbyte secret)");
		MemoryContextSwitchTo(old);
	}
	if (mentions_secret_setting(debug_query_string))
		edata->hide_stmt = true;

	if (edata->message && strncmp(edata->message, "parameter \"dfe_airbyte.", 23) == 0)
	{
		int			i;

		for (i = 0; i < lengthof(secret_settings); i++)
		{
			size_t		len = strlen(secret_settings[i]);

			if (strncmp(edata->message + 11, secret_settings[i], len) == 0 &&
				edata->message[11 + len] == '"')
			{
				MemoryContext old = MemoryContextSwitchTo(ErrorContext);

				edata->message = psprintf("parameter \"%s\" changed (value hidden)",
										  secret_settings[i]);
				MemoryContextSwitchTo(old);
				break;
			}
		}
	}
	/* whatever the wording (translations), never let a secret's value through */
	hide_secret_values(edata);
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

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

void
_PG_init(void)
{
	dfe_define_settings();
	dfe_json_init();

	/* once per process; libcurl's global init is not thread safe, we are */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialise libcurl"),
				 errhint("Check that libcurl and its TLS library are installed correctly.")));

	RegisterXactCallback(dfe_xact_callback, NULL);

	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = dfe_emit_log_hook;

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = dfe_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = dfe_shmem_startup;

	dfe_register_worker();
}

bool
dfe_worker_running(void)
{
	bool		running;

	if (dfe_shared == NULL)
		return false;
	SpinLockAcquire(&dfe_shared->mutex);
	running = dfe_shared->worker_pid != 0;
	SpinLockRelease(&dfe_shared->mutex);
	return running;
}

void
dfe_wake_worker(void)
{
	Latch	   *latch = NULL;

	if (dfe_shared == NULL)
		return;
	SpinLockAcquire(&dfe_shared->mutex);
	if (dfe_shared->worker_pid != 0)
		latch = dfe_shared->worker_latch;
	SpinLockRelease(&dfe_shared->mutex);
	if (latch)
		SetLatch(latch);
}

void
dfe_wake_worker_at_commit(void)
{
	wake_at_commit = true;
}

PG_FUNCTION_INFO_V1(dfe_airbyte_worker_pid);

/* dfe_airbyte_worker_pid() → the worker's pid, NULL when none runs */
Datum
dfe_airbyte_worker_pid(PG_FUNCTION_ARGS)
{
	pid_t		pid = 0;

	if (dfe_shared != NULL)
	{
		SpinLockAcquire(&dfe_shared->mutex);
		pid = dfe_shared->worker_pid;
		SpinLockRelease(&dfe_shared->mutex);
	}
	if (pid == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT32(pid);
}
