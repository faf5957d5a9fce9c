/*
 * target.c — the one place that runs a query on a target (see target.h and
 * docs/design.md, "Targets"): SPI for the local database, libpq through
 * target_conn.c for a remote one.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "nodes/params.h"
#include "nodes/pg_list.h"
#include "parser/parse_param.h"
#include "storage/ipc.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "settings.h"
#include "target.h"
#include "target_conn.h"

struct DfeTarget
{
	char	   *name;
	TargetConn *tc;				/* NULL: local */
	uint64		kept_id;		/* 0, or the kept connection tc belongs to */
};


static DfeTarget *
make_target(const char *name)
{
	DfeTarget  *t = palloc0(sizeof(DfeTarget));

	t->name = pstrdup(name);
	return t;
}

/*
 * ---- the connections a worker keeps across its tasks ----
 *
 * A worker that opts in (the network worker, net_worker.c) keeps one
 * connection per remote target for the life of the process, instead of a
 * new session (TCP, SCRAM, a backend forked on the target) for every task:
 * its deploy watch alone looks at every target every
 * migration_poll_interval (docs/benchmarks.md, "Idle cost per target").
 * An ordinary backend does not: it may sit in a pool for hours, holding a
 * session on every target it once reported on.
 *
 * A kept connection is dropped when its target's conninfo, the passfile or
 * the target_timeout it was opened with (session options, target_conn.c)
 * changed, when the target was disabled or dropped (dfe_target_keep_only,
 * at each round over the enabled targets), when unused for KEEP_IDLE_MS, and
 * at exit.  One that failed is reopened by its next query (target_conn.c).
 */
#define KEEP_IDLE_MS (5 * 60 * 1000)

typedef struct KeptConn
{
	uint64		id;
	char	   *name;
	char	   *conninfo;
	char	   *passfile;
	int			timeout_ms;
	TargetConn *tc;
	TimestampTz last_used;
	MemoryContext cxt;			/* all of the above; deleting it closes tc */
} KeptConn;

static bool keep_connections = false;
static List *kept = NIL;		/* of KeptConn *, in TopMemoryContext */
static uint64 kept_next_id = 1;

static void
forget_kept(KeptConn *k)
{
	kept = list_delete_ptr(kept, k);
	MemoryContextDelete(k->cxt);
}

static void
close_kept_at_exit(int code, Datum arg)
{
	while (kept != NIL)
		forget_kept((KeptConn *) linitial(kept));
}

void
dfe_target_keep_connections(bool on)
{
	static bool exit_registered = false;

	keep_connections = on;
	if (on && !exit_registered)
	{
		before_shmem_exit(close_kept_at_exit, (Datum) 0);
		exit_registered = true;
	}
	if (!on)
		close_kept_at_exit(0, (Datum) 0);
}

static KeptConn *
find_kept(const char *name)
{
	ListCell   *lc;

	foreach(lc, kept)
		if (strcmp(((KeptConn *) lfirst(lc))->name, name) == 0)
			return lfirst(lc);
	return NULL;
}

static void
forget_idle(TimestampTz now)
{
	ListCell   *lc;

	foreach(lc, kept)
	{
		KeptConn   *k = lfirst(lc);

		if (TimestampDifferenceExceeds(k->last_used, now, KEEP_IDLE_MS))
		{
			kept = foreach_delete_current(kept, lc);
			MemoryContextDelete(k->cxt);
		}
	}
}

void
dfe_target_keep_only(List *names)
{
	ListCell   *lc;

	foreach(lc, kept)
	{
		KeptConn   *k = lfirst(lc);
		ListCell   *n;
		bool		listed = false;

		foreach(n, names)
			listed = listed || strcmp((const char *) lfirst(n), k->name) == 0;
		if (!listed)
		{
			kept = foreach_delete_current(kept, lc);
			MemoryContextDelete(k->cxt);
		}
	}
	forget_idle(GetCurrentTimestamp());
}

static bool
opened_with(KeptConn *k, const char *conninfo)
{
	return strcmp(k->conninfo, conninfo) == 0 &&
		strcmp(k->passfile, dfe_passfile ? dfe_passfile : "") == 0 &&
		k->timeout_ms == dfe_target_timeout_ms;
}

static KeptConn *
keep_new(const char *name, const char *conninfo)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "dfe_airbyte kept target connection",
											  ALLOCSET_SMALL_SIZES);
	KeptConn   *k = MemoryContextAllocZero(cxt, sizeof(KeptConn));
	MemoryContext old;

	k->cxt = cxt;
	k->id = kept_next_id++;
	k->name = MemoryContextStrdup(cxt, name);
	k->conninfo = MemoryContextStrdup(cxt, conninfo);
	k->passfile = MemoryContextStrdup(cxt, dfe_passfile ? dfe_passfile : "");
	k->timeout_ms = dfe_target_timeout_ms;
	PG_TRY();
	{
		k->tc = dfe_tc_create(cxt, name, conninfo);
	}
	PG_CATCH();
	{
		MemoryContextDelete(cxt);	/* a conninfo it refuses: nothing kept */
		PG_RE_THROW();
	}
	PG_END_TRY();
	old = MemoryContextSwitchTo(TopMemoryContext);
	kept = lappend(kept, k);
	MemoryContextSwitchTo(old);
	return k;
}

static DfeTarget *
open_kept(const char *name, const char *conninfo)
{
	TimestampTz now = GetCurrentTimestamp();
	KeptConn   *k;
	DfeTarget  *t;

	forget_idle(now);
	k = find_kept(name);
	if (k != NULL && !opened_with(k, conninfo))
	{
		forget_kept(k);
		k = NULL;
	}
	if (k != NULL)
		dfe_tc_settle(k->tc);
	else
		k = keep_new(name, conninfo);
	k->last_used = now;
	t = make_target(name);
	t->tc = k->tc;
	t->kept_id = k->id;
	return t;
}

/*
 * The connection to send t's query on.  A kept one is looked up again: the
 * target's row may have changed, and its connection been dropped, since t
 * was opened (t would otherwise point at freed memory).
 */
static TargetConn *
target_tc(DfeTarget *t)
{
	ListCell   *lc;

	if (t->kept_id == 0)
		return t->tc;
	foreach(lc, kept)
	{
		KeptConn   *k = lfirst(lc);

		if (k->id == t->kept_id)
		{
			k->last_used = GetCurrentTimestamp();
			return k->tc;
		}
	}
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_DOES_NOT_EXIST),
			 errmsg("the connection to target \"%s\" was closed while in use", t->name),
			 errdetail("The worker dropped it: the target's connection string was changed, the target "
					   "was disabled or dropped, or the connection was unused for %d minutes.",
					   KEEP_IDLE_MS / 60000),
			 errhint("Nothing to do: the task's next run connects again.")));
	return NULL;				/* keep the compiler quiet */
}

DfeTarget *
dfe_target_open_conninfo(const char *name, const char *conninfo)
{
	DfeTarget  *t = make_target(name);

	t->tc = dfe_tc_create(CurrentMemoryContext, name, conninfo);
	return t;
}

DfeTarget *
dfe_target_open(const char *name)
{
	DfeTarget  *local;
	DfeRows    *r;
	const char *args[1];

	if (name == NULL || strcmp(name, DFE_LOCAL_TARGET) == 0)
		return make_target(DFE_LOCAL_TARGET);
	local = make_target(DFE_LOCAL_TARGET);
	args[0] = name;
	r = dfe_target_query(local, "look up the target",
						 "SELECT conninfo, enabled FROM dfe_airbyte.targets "
						 "WHERE name OPERATOR(pg_catalog.=) $1", 1, args);
	if (r->nrows == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("target \"%s\" does not exist", name),
				 errhint("SELECT name FROM dfe_airbyte.targets lists the targets; "
						 "dfe_airbyte_add_target() registers one.")));
	if (strcmp(dfe_rows_value(r, 0, 1), "t") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("target \"%s\" is disabled", name),
				 errhint("UPDATE dfe_airbyte.targets SET enabled = true WHERE name = '%s' "
						 "to use it again.", name)));
	if (keep_connections)
		return open_kept(name, dfe_rows_value(r, 0, 0));
	return dfe_target_open_conninfo(name, dfe_rows_value(r, 0, 0));
}

/* ---- local: SPI, with parameter types inferred as PQexecParams would ---- */

typedef struct VarParams
{
	Oid		   *types;
	int			ntypes;
} VarParams;

static void
varparams_setup(struct ParseState *pstate, void *arg)
{
	VarParams  *vp = (VarParams *) arg;

	setup_parse_variable_parameters(pstate, &vp->types, &vp->ntypes);
}

static ParamListInfo
text_params(VarParams *vp, int nparams, const char *const *params)
{
	ParamListInfo p = makeParamList(nparams);
	int			i;

	for (i = 0; i < nparams; i++)
	{
		Oid			type = (i < vp->ntypes && OidIsValid(vp->types[i])) ? vp->types[i] : TEXTOID;
		Oid			input;
		Oid			ioparam;

		getTypeInputInfo(type, &input, &ioparam);
		p->params[i].ptype = type;
		p->params[i].pflags = PARAM_FLAG_CONST;
		p->params[i].isnull = (params[i] == NULL);
		p->params[i].value = params[i]
			? OidInputFunctionCall(input, (char *) params[i], ioparam, -1) : (Datum) 0;
	}
	return p;
}

static DfeRows *
copy_spi_rows(MemoryContext cxt)
{
	DfeRows    *r = MemoryContextAllocZero(cxt, sizeof(DfeRows));
	TupleDesc	desc;
	uint64		i;
	int			j;

	if (!SPI_tuptable)
		return r;
	desc = SPI_tuptable->tupdesc;
	r->nrows = (int) SPI_processed;
	r->ncols = desc->natts;
	r->colnames = MemoryContextAllocZero(cxt, sizeof(char *) * Max(r->ncols, 1));
	r->values = MemoryContextAllocZero(cxt, sizeof(char *) * Max(r->nrows * r->ncols, 1));
	for (j = 0; j < r->ncols; j++)
		r->colnames[j] = MemoryContextStrdup(cxt, NameStr(TupleDescAttr(desc, j)->attname));
	for (i = 0; i < SPI_processed; i++)
		for (j = 0; j < r->ncols; j++)
		{
			char	   *v = SPI_getvalue(SPI_tuptable->vals[i], desc, j + 1);

			r->values[i * r->ncols + j] = v ? MemoryContextStrdup(cxt, v) : NULL;
		}
	return r;
}

/*
 * In the caller's transaction, so a local query sees what the caller
 * wrote.  statement_timeout cannot be armed from inside a statement, but
 * the waits a catalogue query can get stuck in are lock waits: lock_timeout
 * bounds them with the same deadline a remote query has.
 */
static DfeRows *
local_query(const char *what, const char *sql, int nparams, const char *const *params)
{
	MemoryContext caller = CurrentMemoryContext;
	VarParams	vp;
	SPIPrepareOptions opts = {0};
	SPIPlanPtr	plan;
	DfeRows    *r;
	int			nest;
	int			ret;
	char		timeout[32];

	if (SPI_connect() != SPI_OK_CONNECT)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not connect to SPI to %s", what),
						errhint("This is a bug in dfe_airbyte; please report it.")));
	nest = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog,pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	snprintf(timeout, sizeof(timeout), "%d", dfe_target_timeout_ms);
	(void) set_config_option("lock_timeout", timeout, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	vp.ntypes = nparams;
	vp.types = palloc0(sizeof(Oid) * Max(nparams, 1));
	opts.parserSetup = varparams_setup;
	opts.parserSetupArg = &vp;
	opts.parseMode = RAW_PARSE_DEFAULT;
	plan = SPI_prepare_extended(sql, &opts);
	if (!plan)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not prepare the query to %s", what),
						errdetail("SPI_prepare_extended returned %d.", SPI_result),
						errhint("This is a bug in dfe_airbyte; please report it.")));
	if (vp.ntypes > nparams)
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_PARAMETER),
						errmsg("the query to %s uses $%d but has %d parameters", what, vp.ntypes, nparams),
						errhint("This is a bug in dfe_airbyte; please report it.")));
	ret = SPI_execute_plan_with_paramlist(plan, text_params(&vp, nparams, params), false, 0);
	if (ret < 0)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not %s: SPI error %d", what, ret),
						errhint("This is a bug in dfe_airbyte; please report it.")));
	r = copy_spi_rows(caller);
	AtEOXact_GUC(true, nest);
	SPI_finish();
	return r;
}

/* ---- remote: one connection through the multiplexed layer ---- */

static DfeRows *
copy_pg_rows(PGresult *res)
{
	DfeRows    *r = palloc0(sizeof(DfeRows));
	int			i;
	int			j;

	r->nrows = PQntuples(res);
	r->ncols = PQnfields(res);
	r->colnames = palloc0(sizeof(char *) * Max(r->ncols, 1));
	r->values = palloc0(sizeof(char *) * Max(r->nrows * r->ncols, 1));
	for (j = 0; j < r->ncols; j++)
		r->colnames[j] = pstrdup(PQfname(res, j));
	for (i = 0; i < r->nrows; i++)
		for (j = 0; j < r->ncols; j++)
			r->values[i * r->ncols + j] = PQgetisnull(res, i, j) ? NULL : pstrdup(PQgetvalue(res, i, j));
	return r;
}

static void
report_remote_failure(DfeTarget *t, TargetConn *tc, const char *what)
{
	int			code = dfe_tc_errcode(tc);
	PGresult   *res = dfe_tc_result(tc);
	const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
	const char *hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL;
	bool		conn_trouble = ERRCODE_TO_CATEGORY(code) == ERRCODE_CONNECTION_EXCEPTION ||
		code == ERRCODE_CONFIG_FILE_ERROR;

	ereport(ERROR,
			(errcode(code ? code : ERRCODE_CONNECTION_FAILURE),
			 errmsg("could not %s on target \"%s\": %s", what, t->name, dfe_tc_error(tc)),
			 detail ? errdetail("%s", detail) : 0,
			 conn_trouble
			 ? errhint("Check that the target's server is up and reachable from this server, that its "
					   "pg_hba.conf admits the role, and that dfe_airbyte.passfile (mode 0600) holds "
					   "the role's password; dfe_airbyte.target_timeout is %d ms.", dfe_target_timeout_ms)
			 : code == ERRCODE_INSUFFICIENT_PRIVILEGE
			 ? errhint("Grant the target's role what the README's \"Targets\" section lists: pg_monitor, "
					   "pg_read_all_data, REPLICATION, and pg_signal_backend or membership in Airbyte's role.")
			 : hint ? errhint("%s", hint)
			 : errhint("The statement ran on the target's server; its log has the details.")));
}

static DfeRows *
remote_query(DfeTarget *t, const char *what, const char *sql,
			 int nparams, const char *const *params, int timeout_ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);

	TargetConn *tc = target_tc(t);

	dfe_tc_submit(tc, sql, nparams, params, deadline);
	dfe_tc_run(&tc, 1);
	if (dfe_tc_state(tc) != TC_DONE)
		report_remote_failure(t, tc, what);
	return copy_pg_rows(dfe_tc_result(tc));
}

DfeRows *
dfe_target_query(DfeTarget *t, const char *what, const char *sql,
				 int nparams, const char *const *params)
{
	if (!t->tc)
		return local_query(what, sql, nparams, params);
	return remote_query(t, what, sql, nparams, params, dfe_target_timeout_ms);
}

/*
 * The connection's statement_timeout is dfe_airbyte.target_timeout (a
 * startup option, target_conn.c); it is raised for the one long query and
 * set back after it.  After a failure of the long query the connection is
 * closed, so that none (a kept one above all) goes on with the longer value;
 * the next query connects afresh with the startup options.
 */
DfeRows *
dfe_target_query_long(DfeTarget *t, const char *what, const char *sql,
					  int nparams, const char *const *params, int timeout_ms)
{
	static const char *const set_sql = "SELECT pg_catalog.set_config('statement_timeout', $1, false)";
	const char *arg[1];
	DfeRows    *r;
	TargetConn *volatile tc;

	if (!t->tc)
		return local_query(what, sql, nparams, params);
	arg[0] = psprintf("%d", timeout_ms);
	(void) remote_query(t, "raise the statement timeout", set_sql, 1, arg, dfe_target_timeout_ms);
	tc = target_tc(t);
	PG_TRY();
	{
		r = remote_query(t, what, sql, nparams, params, timeout_ms);
	}
	PG_CATCH();
	{
		/* a connection kept for later tasks must not keep the longer timeout */
		dfe_tc_close(tc);
		PG_RE_THROW();
	}
	PG_END_TRY();
	arg[0] = psprintf("%d", dfe_target_timeout_ms);
	(void) remote_query(t, "restore the statement timeout", set_sql, 1, arg, dfe_target_timeout_ms);
	return r;
}

const char *
dfe_rows_value(DfeRows *r, int row, int col)
{
	Assert(row < r->nrows && col < r->ncols);
	return r->values[row * r->ncols + col];
}

const char *
dfe_target_name(DfeTarget *t)
{
	return t->name;
}

bool
dfe_target_is_local(DfeTarget *t)
{
	return t->tc == NULL;
}

TargetConn *
dfe_target_conn(DfeTarget *t)
{
	return t->tc ? target_tc(t) : NULL;
}

/* A kept connection stays open for the next task (dropped as said above). */
void
dfe_target_close(DfeTarget *t)
{
	if (t->tc && t->kept_id == 0)
		dfe_tc_close(t->tc);
}
