/*
 * target_scope_probe.c — C entry points for the test of target_scope.c
 * (test/t/075_target_scope.pl).  The extension's SQL does not install
 * them: the test declares them itself, as a superuser:
 *
 *   CREATE FUNCTION public.scope_settings(target text, gucs text[])
 *     RETURNS text[] AS 'dfe_airbyte', 'dfe_airbyte_scope_settings' LANGUAGE C;
 *   CREATE FUNCTION public.scope_worker(gucs text[]) RETURNS int
 *     AS 'dfe_airbyte', 'dfe_airbyte_scope_worker' LANGUAGE C;
 *   CREATE FUNCTION public.scope_current() RETURNS text
 *     AS 'dfe_airbyte', 'dfe_airbyte_scope_current' LANGUAGE C;
 *
 * scope_settings() enters the target's scope in a function, as the SQL
 * entry points do, and returns the current target, the GUCs' values and
 * current_database() read through the scope's target; "!" as the last GUC
 * raises an ERROR inside the scope.  scope_worker() starts a background
 * worker that runs a task per enabled target with dfe_for_each_target(),
 * as the workers do: each task writes an event (kind scope_probe) in one
 * transaction and reads the target's current_database() in a second one,
 * then the worker writes an event (kind scope_probe_after) outside any
 * scope; it returns when the worker has exited.  scope_current() is
 * dfe_target_current(), what the next event would name.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "compat.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"

#include "events.h"
#include "spi_xact.h"
#include "target.h"
#include "target_scope.h"

PG_FUNCTION_INFO_V1(dfe_airbyte_scope_settings);
PG_FUNCTION_INFO_V1(dfe_airbyte_scope_worker);
PG_FUNCTION_INFO_V1(dfe_airbyte_scope_current);
PGDLLEXPORT void dfe_scope_probe_main(Datum arg);

#define PROBE_MAX_GUCS 8

static int
text_elems(ArrayType *a, char **out, int max)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	deconstruct_array(a, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n > max)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						errmsg("at most %d settings", max), errhint("Ask for fewer.")));
	for (int i = 0; i < n; i++)
		out[i] = TextDatumGetCString(elems[i]);
	return n;
}

/* "current=T slot_name=V ... db=D": what a task sees in its scope */
static char *
scope_view(char **gucs, int n)
{
	StringInfoData s;
	DfeRows    *r;

	initStringInfo(&s);
	appendStringInfo(&s, "current=%s", dfe_target_current());
	for (int i = 0; i < n; i++)
		appendStringInfo(&s, " %s=%s", gucs[i], GetConfigOption(gucs[i], true, false));
	r = dfe_target_query(dfe_target_current_target(), "read the database name",
						 "SELECT pg_catalog.current_database()", 0, NULL);
	appendStringInfo(&s, " db=%s", dfe_rows_value(r, 0, 0));
	return s.data;
}

Datum
dfe_airbyte_scope_settings(PG_FUNCTION_ARGS)
{
	char	   *target = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *gucs[PROBE_MAX_GUCS];
	int			n = text_elems(PG_GETARG_ARRAYTYPE_P(1), gucs, PROBE_MAX_GUCS);
	bool		fail = n > 0 && strcmp(gucs[n - 1], "!") == 0;
	DfeTargetScope *scope = dfe_target_scope_enter(target);
	char	   *seen = scope_view(gucs, fail ? n - 1 : n);

	if (fail)
		ereport(ERROR, (errcode(ERRCODE_RAISE_EXCEPTION),
						errmsg("failing inside the scope of \"%s\" as asked", target),
						errhint("Nothing to do: the test asked for it.")));
	dfe_target_scope_leave(scope);
	PG_RETURN_TEXT_P(cstring_to_text(seen));
}

/* the GUC names the worker reports, from its launcher (bgw_extra) */
static char probe_gucs[BGW_EXTRALEN];

static int
split_gucs(char **out)
{
	int			n = 0;
	char	   *p = pstrdup(probe_gucs);
	char	   *tok;

	for (tok = strtok(p, ","); tok && n < PROBE_MAX_GUCS; tok = strtok(NULL, ","))
		out[n++] = tok;
	return n;
}

static void
in_transaction_event(const char *kind, const char *detail)
{
	dfe_xact_begin("dfe_airbyte scope probe");
	dfe_event("info", kind, "scope probe", detail, NULL);
	dfe_xact_end();
}

/* one target's task: two transactions in its scope, as network tasks do */
static void
probe_task(const char *target, void *arg)
{
	char	   *gucs[PROBE_MAX_GUCS];
	int			n = split_gucs(gucs);
	StringInfoData s;
	DfeRows    *r;

	initStringInfo(&s);
	appendStringInfo(&s, "current=%s", dfe_target_current());
	for (int i = 0; i < n; i++)
		appendStringInfo(&s, " %s=%s", gucs[i], GetConfigOption(gucs[i], true, false));
	in_transaction_event("scope_probe", s.data);

	/* the second transaction reaches the target: an unreachable one fails here */
	dfe_xact_begin("dfe_airbyte scope probe");
	r = dfe_target_query(dfe_target_current_target(), "read the database name",
						 "SELECT pg_catalog.current_database()", 0, NULL);
	dfe_event("info", "scope_probe_db", "scope probe", dfe_rows_value(r, 0, 0), NULL);
	dfe_xact_end();
}

void
dfe_scope_probe_main(Datum arg)
{
	char	   *gucs[PROBE_MAX_GUCS];
	int			n;
	StringInfoData s;

	memcpy(probe_gucs, MyBgworkerEntry->bgw_extra, BGW_EXTRALEN);
	probe_gucs[BGW_EXTRALEN - 1] = '\0';
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(arg), InvalidOid, 0);
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	dfe_for_each_target(probe_task, NULL);

	/* outside any scope again: the global values, the local target */
	n = split_gucs(gucs);
	initStringInfo(&s);
	appendStringInfo(&s, "current=%s", dfe_target_current());
	for (int i = 0; i < n; i++)
		appendStringInfo(&s, " %s=%s", gucs[i], GetConfigOption(gucs[i], true, false));
	in_transaction_event("scope_probe_after", s.data);
	proc_exit(0);
}

Datum
dfe_airbyte_scope_worker(PG_FUNCTION_ARGS)
{
	char	   *gucs[PROBE_MAX_GUCS];
	int			n = text_elems(PG_GETARG_ARRAYTYPE_P(0), gucs, PROBE_MAX_GUCS);
	BackgroundWorker worker = {0};
	BackgroundWorkerHandle *handle;
	StringInfoData list;

	initStringInfo(&list);
	for (int i = 0; i < n; i++)
		appendStringInfo(&list, "%s%s", i ? "," : "", gucs[i]);
	if (list.len >= BGW_EXTRALEN)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						errmsg("the setting names are too long"), errhint("Ask for fewer.")));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "dfe_airbyte");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "dfe_scope_probe_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "dfe_airbyte scope probe");
	snprintf(worker.bgw_type, BGW_MAXLEN, "dfe_airbyte scope probe");
	memcpy(worker.bgw_extra, list.data, list.len + 1);
	worker.bgw_main_arg = ObjectIdGetDatum(MyDatabaseId);
	worker.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_RESOURCES),
						errmsg("could not start the scope probe worker"),
						errhint("Raise max_worker_processes.")));
	if (WaitForBackgroundWorkerShutdown(handle) != BGWH_STOPPED)
		ereport(ERROR, (errcode(ERRCODE_ADMIN_SHUTDOWN),
						errmsg("the postmaster died while the scope probe ran"),
						errhint("See the server log.")));
	PG_RETURN_INT32(0);
}

Datum
dfe_airbyte_scope_current(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(dfe_target_current()));
}
