/*
 * target_probe.c — C entry points for the tests and benchmarks of the
 * target seam.  The extension's SQL does not install them (they run any
 * SQL on any server): a test or benchmark declares them itself, as a
 * superuser, e.g.
 *
 *   CREATE FUNCTION pg_temp.target_rows(target text, conninfo text, sql text, params text[])
 *     RETURNS SETOF text[] AS 'dfe_airbyte', 'dfe_airbyte_target_rows' LANGUAGE C;
 *   CREATE FUNCTION pg_temp.target_probe(names text[], conninfos text[], sql text,
 *                                        rounds int DEFAULT 1, pause_ms int DEFAULT 0)
 *     RETURNS TABLE(name text, state text, elapsed_ms float8, server_version int,
 *                   first_value text, errcode text, error text, round int)
 *     AS 'dfe_airbyte', 'dfe_airbyte_target_probe' LANGUAGE C;
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "compat.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/wait_event.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "settings.h"
#include "target.h"
#include "target_conn.h"

PG_FUNCTION_INFO_V1(dfe_airbyte_target_rows);
PG_FUNCTION_INFO_V1(dfe_airbyte_target_probe);

static void
text_array(ArrayType *a, char ***out, int *n)
{
	Datum	   *elems;
	bool	   *nulls;
	int			i;

	deconstruct_array(a, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, n);
	*out = palloc0(sizeof(char *) * Max(*n, 1));
	for (i = 0; i < *n; i++)
		(*out)[i] = nulls[i] ? NULL : TextDatumGetCString(elems[i]);
}

/* Each row of sql's answer on one target (through dfe_target_query) as text[]. */
Datum
dfe_airbyte_target_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	  **params = NULL;
	int			nparams = 0;
	DfeTarget  *t;
	DfeRows    *r;
	int			i;

	if (!PG_ARGISNULL(3))
		text_array(PG_GETARG_ARRAYTYPE_P(3), &params, &nparams);
	t = PG_ARGISNULL(1) ? dfe_target_open(name)
		: dfe_target_open_conninfo(name, text_to_cstring(PG_GETARG_TEXT_PP(1)));
	r = dfe_target_query(t, "run the test query", text_to_cstring(PG_GETARG_TEXT_PP(2)),
						 nparams, (const char *const *) params);
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	for (i = 0; i < r->nrows; i++)
	{
		Datum	   *vals = palloc(sizeof(Datum) * Max(r->ncols, 1));
		bool	   *nulls = palloc(sizeof(bool) * Max(r->ncols, 1));
		int			dims[1] = {r->ncols};
		int			lbs[1] = {1};
		Datum		row;
		bool		isnull = false;
		int			j;

		for (j = 0; j < r->ncols; j++)
		{
			const char *v = dfe_rows_value(r, i, j);

			nulls[j] = (v == NULL);
			vals[j] = v ? CStringGetTextDatum(v) : (Datum) 0;
		}
		row = PointerGetDatum(construct_md_array(vals, nulls, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &row, &isnull);
	}
	dfe_target_close(t);
	return (Datum) 0;
}

static const char *
state_name(TargetConn *tc)
{
	switch (dfe_tc_state(tc))
	{
		case TC_DONE:
			return "done";
		case TC_FAILED:
			return dfe_tc_timed_out(tc) ? "timeout" : "failed";
		default:
			return "in flight";
	}
}

static void
put_probe_row(ReturnSetInfo *rsinfo, TargetConn *tc, const char *name, int round)
{
	PGresult   *res = dfe_tc_result(tc);
	Datum		v[8];
	bool		nl[8] = {0};

	v[0] = CStringGetTextDatum(name);
	v[1] = CStringGetTextDatum(state_name(tc));
	v[2] = Float8GetDatum(dfe_tc_elapsed_ms(tc));
	v[3] = Int32GetDatum(dfe_tc_server_version(tc));
	nl[4] = !(dfe_tc_state(tc) == TC_DONE && res && PQntuples(res) > 0 && PQnfields(res) > 0 &&
			  !PQgetisnull(res, 0, 0));
	v[4] = nl[4] ? (Datum) 0 : CStringGetTextDatum(PQgetvalue(res, 0, 0));
	nl[5] = dfe_tc_errcode(tc) == 0;
	v[5] = nl[5] ? (Datum) 0 : CStringGetTextDatum(unpack_sql_state(dfe_tc_errcode(tc)));
	nl[6] = dfe_tc_error(tc) == NULL;
	v[6] = nl[6] ? (Datum) 0 : CStringGetTextDatum(dfe_tc_error(tc));
	v[7] = Int32GetDatum(round);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, nl);
}

/* between rounds (the connections stay open): a test can restart a server meanwhile */
static void
pause_between_rounds(int ms)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);

	for (;;)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);

		CHECK_FOR_INTERRUPTS();
		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(left, 1000), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * sql on every target at once through one dfe_tc_run() per round: what the
 * guard's sampling round does.  Connections are kept across rounds (a
 * failed one is reopened), so round 1 includes connecting and later rounds
 * show the steady state.  One row per target and round.
 */
Datum
dfe_airbyte_target_probe(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	  **names;
	char	  **conninfos;
	char	   *sql = text_to_cstring(PG_GETARG_TEXT_PP(2));
	int			rounds = PG_NARGS() > 3 && !PG_ARGISNULL(3) ? PG_GETARG_INT32(3) : 1;
	int			pause_ms = PG_NARGS() > 4 && !PG_ARGISNULL(4) ? PG_GETARG_INT32(4) : 0;
	int			n;
	int			nc;
	TargetConn **conns;
	int			i;
	int			round;

	text_array(PG_GETARG_ARRAYTYPE_P(0), &names, &n);
	text_array(PG_GETARG_ARRAYTYPE_P(1), &conninfos, &nc);
	if (n != nc)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("names and conninfos differ in length"),
						errhint("Give one connection string per name.")));
	conns = palloc(sizeof(TargetConn *) * Max(n, 1));
	for (i = 0; i < n; i++)
		conns[i] = dfe_tc_create(CurrentMemoryContext, names[i], conninfos[i]);
	InitMaterializedSRF(fcinfo, 0);
	for (round = 1; round <= rounds; round++)
	{
		TimestampTz deadline;

		if (round > 1)
			pause_between_rounds(pause_ms);
		deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), dfe_target_timeout_ms);

		for (i = 0; i < n; i++)
			dfe_tc_submit(conns[i], sql, 0, NULL, deadline);
		dfe_tc_run(conns, n);
		for (i = 0; i < n; i++)
			put_probe_row(rsinfo, conns[i], names[i], round);
	}
	for (i = 0; i < n; i++)
		dfe_tc_close(conns[i]);
	return (Datum) 0;
}
