/*
 * target_scope.c — a task acting for one target (see target_scope.h).
 *
 * A target's own settings are applied as session-level values of the
 * dfe_airbyte.* GUCs, the way SET would apply them, and reset (to the
 * configuration file's values, as RESET does) when the scope is left.  So
 * the code that reads a setting is the same for every target, and the
 * global setting stays the default of every target that does not override
 * it.
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "spi_xact.h"
#include "target.h"
#include "target_scope.h"

struct DfeTargetScope
{
	char	   *name;
	List	   *applied;		/* GUC names set for this target */
	DfeTarget  *target;			/* opened on first use */
	SubTransactionId subxid;	/* the (sub)transaction that entered it, */
	uint64		xact_gen;		/* ... in this top-level transaction */
	MemoryContext cxt;
};

/* the open scope (scopes do not nest), in TopMemoryContext */
static DfeTargetScope *open_scope = NULL;

/*
 * A scope entered in a transaction (a SQL function's) that aborted: the
 * current target is "local" again at once, and its settings are reset at
 * the next enter or reset — not during the abort, where AtEOXact_GUC would
 * undo the reset itself.  Values set in the aborted transaction are rolled
 * back by the abort anyway.
 */
static DfeTargetScope *stale_scope = NULL;
static bool callback_registered = false;

/* counts top-level transaction ends: subtransaction ids restart in each */
static uint64 xact_generation = 0;

static void leave_scope(DfeTargetScope *scope);

static void
scope_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		xact_generation++;
	/*
	 * A worker task's scope, entered outside any transaction, spans its
	 * short transactions and outlives the abort of one (dfe_http_try() catches
	 * an error and aborts it): the task goes on for the same target, and
	 * dfe_for_each_target() resets the scope when the task itself fails.
	 */
	if ((event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT) && open_scope != NULL &&
		open_scope->subxid != InvalidSubTransactionId)
	{
		stale_scope = open_scope;
		open_scope = NULL;
	}
}

/*
 * The same for a subtransaction rolled back (ROLLBACK TO SAVEPOINT, a
 * PL/pgSQL exception block) that entered the scope: the transaction goes
 * on, and what it does next must not be the target's.  A scope entered
 * before the subtransaction stays open: its caller catches the error and
 * carries on in it (config_problems does, per remote target).
 */
static void
scope_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && open_scope != NULL && open_scope->subxid == mySubid &&
		open_scope->xact_gen == xact_generation)
	{
		stale_scope = open_scope;
		open_scope = NULL;
	}
}

static void
reset_stale_scope(void)
{
	if (stale_scope != NULL)
	{
		DfeTargetScope *scope = stale_scope;

		stale_scope = NULL;
		leave_scope(scope);
	}
}

/* settings of a target that are not GUCs */
static const char *const target_only_settings[] = {"disk_size"};

static bool
is_target_only(const char *key)
{
	for (int i = 0; i < lengthof(target_only_settings); i++)
		if (strcmp(key, target_only_settings[i]) == 0)
			return true;
	return false;
}

/*
 * Runs a read of dfe_airbyte.targets on the local database, in the open
 * transaction or a short one of its own.
 */
static DfeRows *
read_targets(const char *what, const char *sql, int nparams, const char *const *params)
{
	bool		own = !IsTransactionState();
	DfeRows    *r;
	MemoryContext cxt = CurrentMemoryContext;

	if (own)
	{
		dfe_xact_begin("dfe_airbyte targets read");
		/* the rows must outlive the transaction */
		MemoryContextSwitchTo(cxt);
	}
	r = dfe_target_query(dfe_target_open(DFE_LOCAL_TARGET), what, sql, nparams, params);
	if (own)
		dfe_xact_end();
	return r;
}

static void
apply_setting(DfeTargetScope *scope, const char *key, const char *value)
{
	char	   *guc = psprintf("dfe_airbyte.%s", key);

	/*
	 * PGC_SIGHUP context: the per-service settings are SIGHUP or SUSET
	 * settings, which a session may not SET; the worker applies them as the
	 * configuration file would, but at session level so that leaving the
	 * scope can RESET them.  Values were checked by dfe_airbyte_add_target()
	 * (and an UPDATE of the row is checked again here: ERROR names it).
	 */
	(void) set_config_option(guc, value, PGC_SIGHUP, PGC_S_SESSION,
							 GUC_ACTION_SET, true, ERROR, false);
	scope->applied = lappend(scope->applied, guc);
}

DfeTargetScope *
dfe_target_scope_enter(const char *target)
{
	MemoryContext cxt;
	DfeTargetScope *scope;
	DfeRows    *r;
	const char *args[1] = {target};

	dfe_target_scope_reset();
	if (!callback_registered)
	{
		RegisterXactCallback(scope_xact_callback, NULL);
		RegisterSubXactCallback(scope_subxact_callback, NULL);
		callback_registered = true;
	}

	cxt = AllocSetContextCreate(TopMemoryContext, "dfe_airbyte target scope",
								ALLOCSET_SMALL_SIZES);
	scope = MemoryContextAllocZero(cxt, sizeof(DfeTargetScope));
	scope->cxt = cxt;
	scope->name = MemoryContextStrdup(cxt, target);
	scope->subxid = IsTransactionState() ? GetCurrentSubTransactionId() : InvalidSubTransactionId;
	scope->xact_gen = xact_generation;
	open_scope = scope;

	r = read_targets("read the target's settings",
					 "SELECT t.enabled, s.key, s.value "
					 "FROM dfe_airbyte.targets t "
					 "LEFT JOIN LATERAL pg_catalog.jsonb_each_text(t.settings) s ON true "
					 "WHERE t.name OPERATOR(pg_catalog.=) $1 ORDER BY s.key",
					 1, args);
	if (r->nrows == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("dfe_airbyte target \"%s\" does not exist", target),
				 errhint("SELECT name FROM dfe_airbyte.targets lists the targets; add one with dfe_airbyte_add_target().")));
	if (strcmp(dfe_rows_value(r, 0, 0), "t") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("dfe_airbyte target \"%s\" is disabled", target),
				 errhint("UPDATE dfe_airbyte.targets SET enabled = true WHERE name = '%s' to serve it again.",
						 target)));

	for (int i = 0; i < r->nrows; i++)
	{
		const char *key = dfe_rows_value(r, i, 1);
		MemoryContext old;

		if (key == NULL || is_target_only(key))
			continue;
		old = MemoryContextSwitchTo(cxt);
		apply_setting(scope, key, dfe_rows_value(r, i, 2));
		MemoryContextSwitchTo(old);
	}
	return scope;
}

DfeTargetScope *
dfe_target_scope_enter_arg(FunctionCallInfo fcinfo, int argno)
{
	const char *target = DFE_LOCAL_TARGET;

	if (PG_NARGS() > argno && !PG_ARGISNULL(argno))
		target = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (strcmp(target, dfe_target_current()) == 0)
		return NULL;
	if (open_scope != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot report on target \"%s\" while acting for target \"%s\"",
						target, open_scope->name),
				 errhint("Query it outside the other target's task, e.g. SELECT * FROM dfe_airbyte.slot_limit_advice WHERE target = '%s'.",
						 target)));
	if (strcmp(target, DFE_LOCAL_TARGET) == 0)
		return NULL;
	return dfe_target_scope_enter(target);
}

typedef struct TryEnter
{
	const char *target;
	DfeTargetScope *scope;
} TryEnter;

static void
try_enter(void *arg)
{
	TryEnter   *t = arg;

	t->scope = dfe_target_scope_enter(t->target);
}

DfeTargetScope *
dfe_target_scope_try_enter(const char *target, ErrorData **error)
{
	TryEnter	t = {target, NULL};
	MemoryContext cxt = CurrentMemoryContext;

	/*
	 * The scope's subtransaction is released when enter returns: the scope
	 * stays open (scope_subxact_callback closes it only on an abort).
	 */
	if (dfe_catch(try_enter, &t, DFE_CATCH_SUBXACT | DFE_CATCH_NOT_CANCEL, cxt, error))
		return t.scope;
	/* the two errors of enter that are about the target itself */
	if ((*error)->sqlerrcode == ERRCODE_UNDEFINED_OBJECT ||
		(*error)->sqlerrcode == ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE)
		ReThrowError(*error);
	return NULL;
}

void
dfe_target_scope_leave(DfeTargetScope *scope)
{
	if (scope != open_scope)
		return;					/* its transaction aborted: reset already due */
	open_scope = NULL;
	leave_scope(scope);
}

static void
leave_scope(DfeTargetScope *scope)
{
	ListCell   *lc;

	foreach(lc, scope->applied)
		(void) set_config_option((const char *) lfirst(lc), NULL, PGC_SIGHUP, PGC_S_SESSION,
								 GUC_ACTION_SET, true, WARNING, false);
	if (scope->target != NULL && !dfe_target_is_local(scope->target))
		dfe_target_close(scope->target);
	MemoryContextDelete(scope->cxt);
}

void
dfe_target_scope_reset(void)
{
	reset_stale_scope();
	if (open_scope != NULL)
		dfe_target_scope_leave(open_scope);
}

DfeTargetScope *
dfe_target_scope_current(void)
{
	return open_scope;
}

void
dfe_target_scope_resume(DfeTargetScope *scope)
{
	if (scope != NULL && scope == stale_scope && open_scope == NULL)
	{
		stale_scope = NULL;
		open_scope = scope;
	}
}

const char *
dfe_target_current(void)
{
	return open_scope ? open_scope->name : DFE_LOCAL_TARGET;
}

DfeTarget *
dfe_target_scope_target(DfeTargetScope *scope)
{
	if (scope->target == NULL)
	{
		/* opening reads dfe_airbyte.targets: a short transaction when none is open */
		bool		own = !IsTransactionState();
		MemoryContext old = CurrentMemoryContext;

		if (own)
			dfe_xact_begin("dfe_airbyte target open");
		MemoryContextSwitchTo(scope->cxt);
		scope->target = dfe_target_open(scope->name);
		if (own)
			dfe_xact_end();
		MemoryContextSwitchTo(old);
	}
	return scope->target;
}

DfeTarget *
dfe_target_current_target(void)
{
	if (open_scope != NULL)
		return dfe_target_scope_target(open_scope);
	return dfe_target_open(DFE_LOCAL_TARGET);
}

/*
 * Names (palloc'd char *) of the enabled targets, "local" first when it is
 * enabled, then the others by name.  In a transaction.
 *
 * A remote target that another server answers for, unconfirmed (the guard
 * records it in dfe_airbyte.guard_targets; restore.h), is left out: no task
 * deploys to it, re-syncs or reconciles it, or asks Airbyte anything for it
 * until dfe_airbyte_confirm_restore(target).  The one place that holds it;
 * "local" is held as in 0.2.0 (net_worker.c).
 */
static List *
dfe_target_list_enabled(void)
{
	DfeRows    *r;
	List	   *names = NIL;

	r = read_targets("list the enabled targets",
					 "SELECT t.name FROM dfe_airbyte.targets t WHERE t.enabled\n"
					 "  AND NOT EXISTS (SELECT FROM dfe_airbyte.guard_targets g\n"
					 "                  WHERE g.target OPERATOR(pg_catalog.=) t.name\n"
					 "                    AND g.unconfirmed_system_identifier IS NOT NULL)\n"
					 "ORDER BY t.name OPERATOR(pg_catalog.<>) 'local', t.name",
					 0, NULL);
	for (int i = 0; i < r->nrows; i++)
		names = lappend(names, pstrdup(dfe_rows_value(r, i, 0)));
	/* a worker's kept connection to a target disabled or dropped since goes */
	dfe_target_keep_only(names);
	return names;
}

int64
dfe_target_disk_size_mb(const char *target)
{
	const char *args[1] = {target};
	DfeRows    *r;
	const char *value;
	int			mb;
	const char *hint = NULL;

	r = read_targets("read the target's disk size",
					 "SELECT settings OPERATOR(pg_catalog.->>) 'disk_size' FROM dfe_airbyte.targets "
					 "WHERE name OPERATOR(pg_catalog.=) $1", 1, args);
	value = r->nrows > 0 ? dfe_rows_value(r, 0, 0) : NULL;
	if (value == NULL)
		return -1;
	if (!parse_int(value, &mb, GUC_UNIT_MB, &hint) || mb <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("setting \"disk_size\" of target \"%s\" is invalid", target),
				 errdetail("The value is \"%s\".", value),
				 errhint("Give the server's storage size as in postgresql.conf, e.g. {\"disk_size\": \"256GB\"}.")));
	return mb;
}

typedef struct TargetRun
{
	const char *target;
	DfeTargetTaskFn fn;
	void	   *arg;
} TargetRun;

static void
run_in_scope(void *arg)
{
	TargetRun  *run = arg;
	DfeTargetScope *scope = dfe_target_scope_enter(run->target);

	run->fn(run->target, run->arg);
	dfe_target_scope_leave(scope);
}

void *
dfe_target_state(List **list, const char *target, Size size)
{
	ListCell   *lc;
	char	   *state;
	MemoryContext old;

	Assert(size > NAMEDATALEN);
	foreach(lc, *list)
	{
		state = lfirst(lc);
		if (strcmp(state, target) == 0)
			return state;
	}
	old = MemoryContextSwitchTo(TopMemoryContext);
	state = palloc0(size);
	strlcpy(state, target, NAMEDATALEN);
	*list = lappend(*list, state);
	MemoryContextSwitchTo(old);
	return state;
}

/* one target's run of a task; an ERROR becomes a WARNING naming the target */
static void
run_for_target(const char *target, DfeTargetTaskFn fn, void *arg)
{
	TargetRun	run = {target, fn, arg};
	ErrorData  *edata;

	if (!dfe_catch(run_in_scope, &run, 0, CurrentMemoryContext, &edata))
	{
		dfe_target_scope_reset();
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("dfe_airbyte target \"%s\": %s", target, edata->message),
				 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
				 edata->hint ? errhint("%s", edata->hint) : 0));
		FreeErrorData(edata);
	}
}

void
dfe_for_each_target(DfeTargetTaskFn fn, void *arg)
{
	List	   *targets = dfe_target_list_enabled();
	ListCell   *lc;

	foreach(lc, targets)
		run_for_target((const char *) lfirst(lc), fn, arg);
	list_free_deep(targets);
}
