/*
 * spi_xact.c — short transactions with SPI for the worker tasks (see
 * spi_xact.h).
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/resowner.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "dfe_assert.h"
#include "shared.h"
#include "spi_xact.h"

static MemoryContext result_cxt = NULL;

void
dfe_xact_begin(const char *activity)
{
	result_cxt = CurrentMemoryContext;
	/* a bgworker must do this itself, or now() is the worker's start time */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("%s could not connect to SPI", activity),
				 errhint("This is a bug in dfe_airbyte; the worker retries.")));
	pgstat_report_activity(STATE_RUNNING, activity);
}

void
dfe_xact_end(void)
{
	/* ends what dfe_xact_begin started: its transaction and its snapshot */
	dfe_Assert(IsTransactionState());
	dfe_Assert(ActiveSnapshotSet());
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	if (result_cxt)
		MemoryContextSwitchTo(result_cxt);
}

MemoryContext
dfe_xact_result_context(void)
{
	return result_cxt ? result_cxt : CurrentMemoryContext;
}

void
dfe_set_result_context(MemoryContext cxt)
{
	result_cxt = cxt;
}

void
dfe_spi_failed(const char *what, int ret)
{
	ereport(ERROR,
			(errcode(ERRCODE_INTERNAL_ERROR),
			 errmsg("dfe_airbyte could not %s: %s", what, SPI_result_code_string(ret)),
			 errhint("%s", DFE_UPDATE_HINT)));
}

int
dfe_spi_exec(const char *what, const char *sql, int nargs, Oid *types, Datum *values,
			 const char *nulls, bool read_only, int expect)
{
	MemoryContext cxt = CurrentMemoryContext;
	int			ret = SPI_execute_with_args(sql, nargs, types, values, nulls, read_only, 0);

	/* SPI leaves us in its procedure context (spi.c, _SPI_end_call) */
	MemoryContextSwitchTo(cxt);
	if (ret != expect)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("dfe_airbyte could not %s: %s", what, SPI_result_code_string(ret)),
				 errdetail_internal("Statement: %s", sql),
				 errhint("%s", DFE_UPDATE_HINT)));
	return ret;
}

int
dfe_sql(const char *what, const char *sql, int nargs, const char **args, int expect)
{
	Oid		   *types = palloc(sizeof(Oid) * Max(nargs, 1));
	Datum	   *values = palloc(sizeof(Datum) * Max(nargs, 1));
	char	   *nulls = palloc(Max(nargs, 1));
	int			i;

	dfe_Assert(nargs >= 0);
	for (i = 0; i < nargs; i++)
	{
		types[i] = TEXTOID;
		values[i] = args[i] ? CStringGetTextDatum(args[i]) : (Datum) 0;
		nulls[i] = args[i] ? ' ' : 'n';
	}
	return dfe_spi_exec(what, sql, nargs, types, values, nulls, false, expect);
}

/*
 * The accessors below read a cell of the last SPI result; SPI_getvalue()
 * checks the column but nothing checks the row, so a row past the end
 * reads whatever lies after the tuple array.
 */
static pg_attribute_unused() bool
valid_cell(int row, int col)
{
	return SPI_tuptable != NULL && row >= 0 &&
		(uint64) row < SPI_tuptable->numvals &&
		col >= 1 && col <= SPI_tuptable->tupdesc->natts;
}

char *
dfe_col_text(int row, int col)
{
	char	   *v;

	dfe_Assert(valid_cell(row, col));
	v = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);

	return v ? MemoryContextStrdup(dfe_xact_result_context(), v) : NULL;
}

bool
dfe_col_isnull(int row, int col)
{
	bool		isnull;

	dfe_Assert(valid_cell(row, col));
	(void) SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);
	return isnull;
}

Datum
dfe_col_datum(int row, int col, bool *isnull)
{
	dfe_Assert(valid_cell(row, col));
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

char *
dfe_int64_str(int64 v)
{
	return psprintf(INT64_FORMAT, v);
}

bool
dfe_catch(void (*fn) (void *), void *arg, int flags, MemoryContext cxt, ErrorData **error)
{
	ResourceOwner owner = CurrentResourceOwner;
	bool		subxact = (flags & DFE_CATCH_SUBXACT) != 0;
	bool		copy = error != NULL || (flags & DFE_CATCH_NOT_CANCEL) != 0;
	volatile bool ok = false;
	ErrorData  *volatile edata = NULL;

	if (error)
		*error = NULL;
	if (subxact)
	{
		dfe_Assert(IsTransactionState());
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(cxt);
	}
	PG_TRY();
	{
		fn(arg);
		if (subxact)
		{
			ReleaseCurrentSubTransaction();
			CurrentResourceOwner = owner;
		}
		ok = true;
	}
	PG_CATCH();
	{
		/* no cancel may interrupt the cleanup (it would longjmp out of it) */
		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		if (flags & DFE_CATCH_LOG)
			EmitErrorReport();
		if (copy)
			edata = CopyErrorData();
		if (subxact)
		{
			/* as PL/pgSQL's exception block (pl_exec.c, exec_stmt_block) */
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			CurrentResourceOwner = owner;
		}
		else
		{
			/* as a background worker's error recovery (autovacuum.c) */
			AbortOutOfAnyTransaction();
			FlushErrorState();
		}
		RESUME_INTERRUPTS();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);

	if (edata && (flags & DFE_CATCH_NOT_CANCEL) &&
		(edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
		 edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN))
		ReThrowError(edata);
	if (error)
		*error = edata;
	else if (edata)
		FreeErrorData(edata);
	return ok;
}

char *
dfe_error_text(const ErrorData *edata)
{
	if (edata->detail)
		return psprintf("%s: %s", edata->message, edata->detail);
	return pstrdup(edata->message ? edata->message : "unknown error");
}
