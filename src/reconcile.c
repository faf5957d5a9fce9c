/*
 * reconcile.c — does BigQuery hold what the source holds?
 *
 * For one allowlisted table: the source side and BigQuery's final table
 * each give, per bucket of keys, count(*) and a sum of row hashes
 * (reconcile_sql.c).  `count` hashes the key only (row count and key set:
 * dfe-analytics' entity table check, without its collision and cut-off
 * problems); `checksum` hashes every compared column too.  Equal buckets:
 * the table matches, in one BigQuery query.  Differing buckets are
 * narrowed, one grouped query per level on each side (integer keys by key
 * range, so that PostgreSQL reads its primary key index; other keys by a
 * longer key-hash prefix), until they hold few rows; then both sides list
 * key and row hash for those buckets and the keys that differ are named —
 * keys, never column values.  This is data-diff's checksum bisection
 * (datafold/data-diff hashdiff_tables.py), with one GROUP BY query per level
 * instead of one query per segment: on BigQuery every query reads the whole
 * columns of an unclustered append table, so the number of queries is what
 * costs.
 *
 * Cost: every BigQuery query is dry-run first (free) and refused when its
 * estimate exceeds dfe_airbyte.reconcile_max_bytes_billed or what is left
 * of dfe_airbyte.reconcile_daily_bytes in the last 24 hours; it then runs
 * with maximumBytesBilled, and a bytesBilledLimitExceeded answer is final.
 *
 * Cut-off: a successful Airbyte CDC sync reads up to the WAL position taken
 * when it started (airbytehq/airbyte PostgresCdcTargetPosition), so rows
 * committed before the start of the last successful sync are in BigQuery.
 * Rows whose updated_at is later are left out on both sides (their keys are
 * sent to BigQuery); what still differs (a delete, an update that bypassed
 * updated_at) is a candidate, and is reported as a mismatch only when it is
 * still there after a later successful sync (reconcile_mismatch event).
 *
 * Left out, and said in the result: blocklisted columns (they carry the
 * hidden policy tag, which the service account may not read), columns of
 * types the two sides do not write alike (arrays, floats, bytea, time, …).
 * Tables without a primary key are compared by count only.  A key BigQuery
 * holds alone whose latest version is of an older _airbyte_generation_id
 * than the table's newest is "old_generation", not "extra": the residue of
 * an Airbyte refresh, which Airbyte's docs tell readers to filter out.
 *
 * Per target: the source side's queries run on the service database through
 * the seam (src/target.h; libpq for a remote one, whose role has only
 * pg_read_all_data), the BigQuery side with the target's settings, which the
 * caller's scope applies (src/target_scope.h).  The SQL function, the
 * worker's task and the recorded results are in reconcile_run.c.
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "mb/pg_wchar.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "bq_query.h"
#include "events.h"
#include "reconcile.h"
#include "settings.h"
#include "spi_xact.h"
#include "target.h"
#include "target_scope.h"
#include "worker.h"

#define NBUCKETS 4096			/* first level: buckets per table */
#define SUB_BUCKETS 64			/* deeper levels: buckets per differing bucket */
#define KEY_LIMIT 5000			/* list keys once differing buckets hold at most this many rows (a 10M-row table: 2442 per bucket) */
#define MAX_LEVELS 6
#define MAX_HOT_KEYS 10000		/* more rows changed since the last sync: busy */
#define MAX_REPORTED 100		/* keys and ranges kept per run */
#define MAX_GEN_RANGES 10		/* old-generation key ranges said in the detail */
/*
 * A remote target's source-side query may take this long: the checksums of
 * 10 M rows take 162 s on one core (docs/benchmarks.md, "Reconciliation"),
 * so an hour covers tables of a few hundred million rows.
 */
#define SOURCE_TIMEOUT_MS (60 * 60 * 1000)

typedef struct RcBucket
{
	int64		bucket;
	int64		n;
	char	   *s;				/* sum as text: compared as text, never parsed */
	int64		toast;
} RcBucket;

/*
 * SPI query; its rows are copied into run->cxt (rc_val reads them).  In the
 * worker each query is its own short transaction, so that none is open
 * while BigQuery is asked.
 */
int
dfe_rc_sql(RcRun *run, const char *what, const char *sql, int nargs, const char **args)
{
	bool		own = run->own_xact && !run->in_xact;
	int			ncols;

	if (own)
		dfe_xact_begin(what);
	dfe_set_result_context(run->cxt);
	dfe_sql(what, sql, nargs, args, SPI_OK_SELECT);
	MemoryContextSwitchTo(run->cxt);
	run->nrows = (int) SPI_processed;
	ncols = SPI_tuptable->tupdesc->natts;
	run->rows = palloc0(sizeof(char **) * Max(run->nrows, 1));
	for (int i = 0; i < run->nrows; i++)
	{
		run->rows[i] = palloc0(sizeof(char *) * ncols);
		for (int j = 0; j < ncols; j++)
			run->rows[i][j] = dfe_col_text(i, j + 1);
	}
	if (own)
	{
		dfe_xact_end();
		MemoryContextSwitchTo(run->cxt);
	}
	return run->nrows;
}

/* row i, column j (1-based, as SPI) of the last rc_sql or rc_src; NULL for NULL */
char *
dfe_rc_val(RcRun *run, int i, int j)
{
	return run->rows[i][j - 1];
}

/*
 * A query on the service database (the target): through the seam
 * (src/target.c), SPI for "local" and libpq for a remote one, the same SQL
 * text.  Rows are kept as rc_sql keeps them.  In the worker the local case
 * needs a transaction of its own, a short one as for rc_sql.
 */
static int
rc_src(RcRun *run, const char *what, const char *sql, int nargs, const char **args)
{
	bool		own = run->own_xact && !run->in_xact && dfe_target_is_local(run->src);
	DfeRows    *r;

	if (own)
		dfe_xact_begin(what);
	MemoryContextSwitchTo(run->cxt);
	r = dfe_target_query_long(run->src, what, sql, nargs, (const char *const *) args, SOURCE_TIMEOUT_MS);
	if (own)
	{
		dfe_xact_end();
		MemoryContextSwitchTo(run->cxt);
	}
	run->nrows = r->nrows;
	run->rows = palloc0(sizeof(char **) * Max(run->nrows, 1));
	for (int i = 0; i < run->nrows; i++)
	{
		run->rows[i] = palloc0(sizeof(char *) * Max(r->ncols, 1));
		for (int j = 0; j < r->ncols; j++)
		{
			const char *v = dfe_rows_value(r, i, j);

			run->rows[i][j] = v ? pstrdup(v) : NULL;
		}
	}
	return run->nrows;
}

void
dfe_rc_note(RcRun *run, const char *fmt,...)
{
	va_list		ap;
	char		buf[1024];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	appendStringInfo(&run->detail, "%s%s", run->detail.len ? "; " : "", buf);
}

static RcKind
column_kind(const char *typname, int typmod, char typtype, bool *ok)
{
	*ok = true;
	if (strcmp(typname, "int2") == 0 || strcmp(typname, "int4") == 0 || strcmp(typname, "int8") == 0)
		return RK_INT;
	/* numeric(p,0) is an Airbyte integer (legacy source: decimal digits 0 -> BIGINT) */
	if (strcmp(typname, "numeric") == 0)
		return (typmod >= 4 && ((typmod - 4) & 0xffff) == 0) ? RK_INT : RK_NUMERIC;
	if (strcmp(typname, "bool") == 0)
		return RK_BOOL;
	if (strcmp(typname, "date") == 0)
		return RK_DATE;
	if (strcmp(typname, "timestamp") == 0)
		return RK_TIMESTAMP;
	if (strcmp(typname, "timestamptz") == 0)
		return RK_TIMESTAMPTZ;
	if (typtype == 'e' || strcmp(typname, "text") == 0 || strcmp(typname, "varchar") == 0 ||
		strcmp(typname, "bpchar") == 0 || strcmp(typname, "uuid") == 0 ||
		strcmp(typname, "json") == 0 || strcmp(typname, "jsonb") == 0 || strcmp(typname, "citext") == 0)
		return RK_TEXT;
	*ok = false;
	return RK_TEXT;
}

/*
 * The table's columns, read on the service database: catalogue only, every
 * name qualified (the remote role has pg_read_all_data, nothing more).
 */
static const char *const columns_sql =
"SELECT a.attname::pg_catalog.text, t.typname::pg_catalog.text, a.atttypmod, t.typtype::pg_catalog.text,\n"
"       CASE WHEN a.attnum OPERATOR(pg_catalog.=) ANY (i.indkey)  -- int2vector subscripts start at 0\n"
"            THEN pg_catalog.array_position(i.indkey::pg_catalog.int2[], a.attnum)\n"
"                 OPERATOR(pg_catalog.-) pg_catalog.array_lower(i.indkey::pg_catalog.int2[], 1) OPERATOR(pg_catalog.+) 1\n"
"            ELSE 0 END\n"
"  FROM pg_catalog.pg_attribute a\n"
"  JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid\n"
"  LEFT JOIN pg_catalog.pg_index i ON i.indrelid OPERATOR(pg_catalog.=) a.attrelid AND i.indisprimary\n"
" WHERE a.attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(pg_catalog.quote_ident($1) OPERATOR(pg_catalog.||) '.'\n"
"                                                           OPERATOR(pg_catalog.||) pg_catalog.quote_ident($2))\n"
"   AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped\n"
" ORDER BY 5, a.attnum";

/* the target's allowlisted columns of the table, and whether blocklisted: in this database */
static const char *const lists_sql =
"SELECT l.column_name, EXISTS (SELECT 1 FROM dfe_airbyte.blocklist b WHERE b.target = l.target\n"
"                              AND b.table_name = l.table_name AND b.column_name = l.column_name)::text\n"
"  FROM dfe_airbyte.allowlist l WHERE l.target = $1 AND l.table_name = $2";

typedef struct RcLists
{
	List	   *allowed;		/* char *: column names */
	List	   *hidden;
} RcLists;

static bool
name_in(List *names, const char *name)
{
	ListCell   *lc;

	foreach(lc, names)
		if (strcmp((char *) lfirst(lc), name) == 0)
			return true;
	return false;
}

static void
load_lists(RcRun *run, const char *name, RcLists *lists)
{
	const char *args[2] = {run->target, name};
	int			n = dfe_rc_sql(run, "read the table's allowlisted columns", lists_sql, 2, args);

	lists->allowed = lists->hidden = NIL;
	for (int i = 0; i < n; i++)
	{
		lists->allowed = lappend(lists->allowed, dfe_rc_val(run, i, 1));
		if (strcmp(dfe_rc_val(run, i, 2), "true") == 0)
			lists->hidden = lappend(lists->hidden, dfe_rc_val(run, i, 1));
	}
}

/* one column row of columns_sql into t */
static void
add_column(RcRun *run, RcTable *t, int row, RcLists *lists, bool *key_unusable)
{
	char	   *name = dfe_rc_val(run, row, 1);
	char	   *typname = dfe_rc_val(run, row, 2);
	int			typmod = atoi(dfe_rc_val(run, row, 3));
	char	   *typtype = dfe_rc_val(run, row, 4);
	bool		allowed = name_in(lists->allowed, name);
	bool		hidden = name_in(lists->hidden, name);
	bool		key = atoi(dfe_rc_val(run, row, 5)) > 0;
	bool		ok;
	RcColumn   *c = palloc0(sizeof(RcColumn));

	c->name = name;
	c->kind = column_kind(typname, typmod, typtype[0], &ok);
	if (strcmp(name, "updated_at") == 0 && (c->kind == RK_TIMESTAMP || c->kind == RK_TIMESTAMPTZ))
	{
		t->updated_at = name;
		t->updated_at_tz = c->kind == RK_TIMESTAMPTZ;
	}
	if (key && (!allowed || hidden || !ok))
		*key_unusable = true;
	if (!allowed)
		return;
	if (hidden)
		t->skipped = lappend(t->skipped, psprintf("%s (hidden policy tag)", name));
	else if (!ok)
		t->skipped = lappend(t->skipped, psprintf("%s (type %s not compared)", name, typname));
	else if (key)
		t->keys = lappend(t->keys, c);
	else
		t->cols = lappend(t->cols, c);
}

static RcTable *
load_table(RcRun *run, const char *name)
{
	RcTable    *t = palloc0(sizeof(RcTable));
	const char *args[2] = {dfe_setting_source_schema(), name};
	bool		key_unusable = false;
	RcLists		lists;
	int			n;

	load_lists(run, name, &lists);
	t->name = pstrdup(name);
	t->pg_rel = psprintf("%s.%s", quote_identifier(dfe_setting_source_schema()), quote_identifier(name));
	t->bq_rel = psprintf("`%s.%s.%s`", dfe_setting_bigquery_project(), dfe_setting_bigquery_dataset(), name);
	n = rc_src(run, "read the table's columns", columns_sql, 2, args);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table \"%s.%s\" does not exist on target \"%s\"", args[0], name, run->target),
				 errhint("Name an allowlisted table of dfe_airbyte.source_schema.")));
	for (int i = 0; i < n; i++)
		add_column(run, t, i, &lists, &key_unusable);
	if (key_unusable)
	{
		dfe_rc_note(run, "primary key not replicated or not comparable: compared by count only");
		t->cols = list_concat(t->keys, t->cols);
		t->keys = NIL;
	}
	t->int_key = list_length(t->keys) == 1 && ((RcColumn *) linitial(t->keys))->kind == RK_INT;
	return t;
}

/*
 * The target's syncs.  Reconciliation's own tables and functions arrive
 * with the same SQL version as sync_jobs' target column, and the worker
 * waits for that version (src/scheduler.c), so the column is always there.
 */
#define SYNC_OF_TARGET "j.target OPERATOR(pg_catalog.=) $1"

/* the target's last successful sync: its job id and start (the cut-off) */
static void
load_cutoff(RcRun *run)
{
	const char *args[1] = {run->target};

	if (dfe_rc_sql(run, "read the last successful sync",
			   "SELECT job_id::text, started_at::text FROM dfe_airbyte.sync_jobs j"
			   " WHERE status = 'succeeded' AND started_at IS NOT NULL AND " SYNC_OF_TARGET
			   " ORDER BY job_id DESC LIMIT 1", 1, args) == 0)
	{
		dfe_rc_note(run, "no successful sync recorded: no cut-off, every row compared");
		return;
	}
	run->sync_job_id = strtoll(dfe_rc_val(run, 0, 1), NULL, 10);
	run->cutoff = dfe_rc_val(run, 0, 2);
}

/*
 * The source-side condition on updated_at against the cut-off: hot rows
 * (changed since the last successful sync started) or settled ones.
 * Rails writes UTC into timestamp without time zone.
 */
static char *
hot_filter(RcTable *t, RcRun *run, bool hot)
{
	const char *u;
	char	   *at;

	if (run->cutoff == NULL || t->updated_at == NULL)
		return "";
	u = quote_identifier(t->updated_at);
	/* a minute's margin: Airbyte's clock and the application's may differ */
	at = t->updated_at_tz ? psprintf("(%s::timestamptz - interval '1 minute')", quote_literal_cstr(run->cutoff))
		: psprintf("((%s::timestamptz - interval '1 minute') AT TIME ZONE 'UTC')", quote_literal_cstr(run->cutoff));
	if (hot)
		return psprintf(" AND %s >= %s", u, at);
	return psprintf(" AND (%s IS NULL OR %s < %s)", u, u, at);
}

/* keys of the rows changed since the cut-off; false when there are too many */
static bool
load_hot_keys(RcTable *t, RcRun *run, List **hot)
{
	char	   *cond = hot_filter(t, run, true);
	int			n;

	*hot = NIL;
	if (cond[0] == '\0' || t->keys == NIL)
		return true;
	n = rc_src(run, "read the rows changed since the last sync",
			   psprintf("SELECT %s FROM %s WHERE TRUE%s LIMIT %d", dfe_rc_pg_key_text(t), t->pg_rel, cond,
						MAX_HOT_KEYS + 1), 0, NULL);
	run->hot_rows = n;
	if (n > MAX_HOT_KEYS)
		return false;
	for (int i = 0; i < n; i++)
		*hot = lappend(*hot, dfe_rc_val(run, i, 1));
	if (n > 0)
		dfe_rc_note(run, "%d row(s) changed since the last successful sync left out", n);
	return true;
}

/* bucket rows (bucket, n, s[, toast]) of the source side */
static List *
pg_buckets(RcTable *t, RcRun *run, RcLevel *lv)
{
	List	   *out = NIL;
	int			n = rc_src(run, "compute the source checksums",
						   dfe_rc_pg_bucket_query(t, run->checksum, lv, hot_filter(t, run, false)), 0, NULL);

	for (int i = 0; i < n; i++)
	{
		RcBucket   *b = palloc0(sizeof(RcBucket));

		b->bucket = strtoll(dfe_rc_val(run, i, 1), NULL, 10);
		b->n = strtoll(dfe_rc_val(run, i, 2), NULL, 10);
		b->s = dfe_rc_val(run, i, 3);
		out = lappend(out, b);
	}
	return out;
}

static BqResult *bq_run_or(RcRun *run, const char *sql, const char *without, bool *fell_back);

/* 24-hour budget left, in bytes */
static int64
budget_left(RcRun *run)
{
	int64		used = 0;

	if (dfe_rc_sql(run, "read the bytes billed today",
			   "SELECT coalesce(sum(bytes_billed), 0)::text FROM dfe_airbyte.reconcile_runs"
			   " WHERE started_at > now() - interval '24 hours'", 0, NULL) > 0)
		used = strtoll(dfe_rc_val(run, 0, 1), NULL, 10);
	return (int64) dfe_reconcile_daily_mb * 1024 * 1024 - used;
}

/*
 * Dry run, then the query with maximumBytesBilled.  NULL when the query was
 * not run (over the cap or the budget, or the caller asked for a dry run):
 * run->status says which.
 */
static BqResult *
bq_run(RcRun *run, const char *sql)
{
	return bq_run_or(run, sql, NULL, NULL);
}

/*
 * bq_run, but when the dry run of sql fails because the final table has no
 * _airbyte_generation_id (written before Airbyte 1.0's refreshes), run
 * without instead and say so in *fell_back.  No probe of its own: the dry
 * run is made anyway, and costs nothing.
 */
static BqResult *
bq_run_or(RcRun *run, const char *sql, const char *without, bool *fell_back)
{
	int64		cap = (int64) dfe_reconcile_max_bytes_billed_kb * 1024;
	BqResult   *dry = dfe_bq_query_dry_run(sql);
	BqResult   *res;
	int64		left;

	if (without != NULL && !dry->ok && dry->reason && strcmp(dry->reason, "invalidQuery") == 0 &&
		dry->message && strstr(dry->message, "_airbyte_generation_id") != NULL)
	{
		*fell_back = true;
		sql = without;
		dry = dfe_bq_query_dry_run(sql);
	}
	dfe_bq_check(dry, "the BigQuery dry run of a reconciliation query");
	run->bytes_estimated += dfe_bq_billed_upper_bound(dry->bytes_processed, 1);
	if (run->dry_run)
	{
		run->status = "estimated";
		return NULL;
	}
	left = budget_left(run) - run->bytes_billed;
	if (dry->bytes_processed > cap || dfe_bq_billed_upper_bound(dry->bytes_processed, 1) > left)
	{
		run->status = "over_budget";
		dfe_rc_note(run, "a query would process " INT64_FORMAT " bytes: over dfe_airbyte.reconcile_max_bytes_billed ("
			 INT64_FORMAT ") or the daily budget left (" INT64_FORMAT ")", dry->bytes_processed, cap, Max(left, 0));
		return NULL;
	}
	res = dfe_bq_query_run(sql, cap);
	run->queries++;
	if (!res->ok && res->reason && strcmp(res->reason, "bytesBilledLimitExceeded") == 0)
	{
		run->status = "over_budget";
		dfe_rc_note(run, "BigQuery refused a query over maximumBytesBilled: %s", res->message);
		return NULL;
	}
	dfe_bq_check(res, "a reconciliation query");
	run->bytes_billed += res->bytes_billed;
	return res;
}

static List *
bq_buckets(BqResult *res, RcRun *run)
{
	List	   *out = NIL;

	for (int i = 0; i < res->nrows; i++)
	{
		RcBucket   *b = palloc0(sizeof(RcBucket));
		char	  **r = res->rows[i];

		b->bucket = r[0] ? strtoll(r[0], NULL, 10) : -2;
		b->n = r[1] ? strtoll(r[1], NULL, 10) : 0;
		b->s = r[2] ? r[2] : "0";
		b->toast = res->nfields > 3 && r[3] ? strtoll(r[3], NULL, 10) : 0;
		run->toast_rows += b->toast;
		out = lappend(out, b);
	}
	return out;
}

static int
bucket_cmp(const ListCell *a, const ListCell *b)
{
	int64		x = ((RcBucket *) lfirst(a))->bucket;
	int64		y = ((RcBucket *) lfirst(b))->bucket;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * The buckets whose (count, sum) differ; *rows is how many rows they hold
 * on the larger side.  Totals go into run.
 */
static List *
differing(RcRun *run, List *pg, List *bq, int64 *rows)
{
	List	   *diff = NIL;
	ListCell   *a;
	ListCell   *b;

	list_sort(pg, bucket_cmp);
	list_sort(bq, bucket_cmp);
	a = list_head(pg);
	b = list_head(bq);
	*rows = 0;
	while (a != NULL || b != NULL)
	{
		RcBucket   *x = a ? lfirst(a) : NULL;
		RcBucket   *y = b ? lfirst(b) : NULL;
		int64		key = x && (!y || x->bucket <= y->bucket) ? x->bucket : y->bucket;
		bool		in_x = x && x->bucket == key;
		bool		in_y = y && y->bucket == key;

		if (!(in_x && in_y && x->n == y->n && strcmp(x->s, y->s) == 0))
		{
			diff = lappend(diff, in_x ? x : y);
			*rows += Max(in_x ? x->n : 0, in_y ? y->n : 0);
		}
		if (in_x)
			a = lnext(pg, a);
		if (in_y)
			b = lnext(bq, b);
	}
	return diff;
}

/* "3:abc" -> "abc"; several parts -> "(a, b)"; "N" -> "NULL" */
static char *
show_key(const char *text)
{
	StringInfoData b;
	int			parts = 0;
	const char *p = text;

	initStringInfo(&b);
	while (*p)
	{
		appendStringInfoString(&b, parts++ ? ", " : "");
		if (*p == 'N')
		{
			appendStringInfoString(&b, "NULL");
			p++;
			continue;
		}
		{
			long		len = strtol(p, (char **) &p, 10);
			const char *start = p + 1;
			const char *end = start;

			/* the length counts characters; walk them in the server encoding */
			for (long i = 0; i < len && *end; i++)
				end += pg_mblen(end);
			appendBinaryStringInfo(&b, start, end - start);
			p = end;
		}
	}
	return parts > 1 ? psprintf("(%s)", b.data) : b.data;
}

static void
range_filters(RcTable *t, RcLevel *lv, List *diff, RcLevel *next, RcRun *run)
{
	StringInfoData pg;
	StringInfoData bq;
	ListCell   *lc;
	const char *k = quote_identifier(((RcColumn *) linitial(t->keys))->name);
	const char *bk = psprintf("`%s`", ((RcColumn *) linitial(t->keys))->name);

	initStringInfo(&pg);
	initStringInfo(&bq);
	list_free(run->ranges);
	run->ranges = NIL;
	foreach(lc, diff)
	{
		RcBucket   *b = lfirst(lc);
		const char *sep = pg.len ? " OR " : "";

		if (b->bucket < 0)
		{
			appendStringInfo(&pg, "%s%s < " INT64_FORMAT, sep, k, lv->min);
			appendStringInfo(&bq, "%s%s < " INT64_FORMAT, sep, bk, lv->min);
			run->ranges = lappend(run->ranges, psprintf("(, " INT64_FORMAT ")", lv->min));
			continue;
		}
		{
			int64		lo = lv->min + b->bucket * lv->width;
			int64		hi = lo + lv->width;

			appendStringInfo(&pg, "%s(%s >= " INT64_FORMAT " AND %s < " INT64_FORMAT ")", sep, k, lo, k, hi);
			appendStringInfo(&bq, "%s(%s >= " INT64_FORMAT " AND %s < " INT64_FORMAT ")", sep, bk, lo, bk, hi);
			if (list_length(run->ranges) < MAX_REPORTED)
				run->ranges = lappend(run->ranges, psprintf("[" INT64_FORMAT ", " INT64_FORMAT ")", lo, hi));
		}
	}
	next->min = lv->min;
	next->width = Max(1, (lv->width + SUB_BUCKETS - 1) / SUB_BUCKETS);
	next->pg_filter = psprintf(" AND (%s)", pg.data);
	next->bq_filter = psprintf(" AND (%s)", bq.data);
}

static void
hash_filters(RcTable *t, RcLevel *lv, List *diff, RcLevel *next, RcRun *run)
{
	StringInfoData in;
	ListCell   *lc;

	initStringInfo(&in);
	list_free(run->ranges);
	run->ranges = NIL;
	foreach(lc, diff)
	{
		RcBucket   *b = lfirst(lc);

		appendStringInfo(&in, "%s" INT64_FORMAT, in.len ? ", " : "", b->bucket);
		if (list_length(run->ranges) < MAX_REPORTED)
			run->ranges = lappend(run->ranges, psprintf("md5(key) prefix %0*llx", lv->hexdigits,
														(unsigned long long) b->bucket));
	}
	next->hexdigits = lv->hexdigits + 2;
	next->pg_filter = psprintf(" AND %s IN (%s)", dfe_rc_pg_bucket_expr(t, lv), in.data);
	next->bq_filter = psprintf(" AND %s IN (%s)", dfe_rc_bq_bucket_expr(t, lv), in.data);
}

static int
int64_cmp(const ListCell *a, const ListCell *b)
{
	int64		x = *(int64 *) lfirst(a);
	int64		y = *(int64 *) lfirst(b);

	return x < y ? -1 : x > y ? 1 : 0;
}

static int
key_cmp(const ListCell *a, const ListCell *b)
{
	return strcmp(((char **) lfirst(a))[0], ((char **) lfirst(b))[0]);
}

/* integer keys in ascending order, as ranges "[lo, hi)"; at most MAX_GEN_RANGES of them */
static char *
key_ranges_text(List *ints)
{
	StringInfoData b;
	int			n = 0;
	int64		lo = 0,
				hi = 0;

	initStringInfo(&b);
	list_sort(ints, int64_cmp);
	for (int i = 0; i <= list_length(ints); i++)
	{
		int64		k = i < list_length(ints) ? *(int64 *) list_nth(ints, i) : 0;

		if (i > 0 && i < list_length(ints) && k == hi)
		{
			hi = k + 1;
			continue;
		}
		if (i > 0 && n++ < MAX_GEN_RANGES)
			appendStringInfo(&b, "%s[" INT64_FORMAT ", " INT64_FORMAT ")", b.len ? ", " : "", lo, hi);
		lo = k;
		hi = k + 1;
	}
	if (n > MAX_GEN_RANGES)
		appendStringInfo(&b, " and %d more range(s)", n - MAX_GEN_RANGES);
	return b.data;
}

/*
 * A key BigQuery holds and the source does not: "old_generation" when its
 * latest version is older than the table's newest generation after a
 * refresh (gmax > 0: a table never refreshed has only generation 0, or NULL
 * from before generations existed) — Airbyte's own sign of a row deleted at
 * the source (src/reconcile_sql.c, GENERATION_COLUMNS); else "extra".
 */
static bool
old_generation(BqResult *res, char **row)
{
	int64		g,
				gmax;

	if (res->nfields < 4 || row[2] == NULL || row[3] == NULL)
		return false;
	g = strtoll(row[2], NULL, 10);
	gmax = strtoll(row[3], NULL, 10);
	return gmax > 0 && g < gmax;
}

typedef struct RcKeyCounts
{
	int64		missing;
	int64		extra;
	int64		changed;
	int64		old_gen;
	int64		gen_max;
	List	   *old_keys;		/* int64 *: old-generation integer keys */
} RcKeyCounts;

/* the kind of difference of one key: c < 0 only at the source, c > 0 only in BigQuery */
static const char *
key_kind(RcTable *t, BqResult *res, int c, char **x, char **y, RcKeyCounts *n)
{
	if (c < 0)
		return n->missing++, "missing";
	if (c > 0 && old_generation(res, y))
	{
		n->old_gen++;
		n->gen_max = strtoll(y[3], NULL, 10);
		if (t->int_key)
		{
			int64	   *k = palloc(sizeof(int64));

			*k = strtoll(show_key(y[0]), NULL, 10);
			n->old_keys = lappend(n->old_keys, k);
		}
		return "old_generation";
	}
	if (c > 0)
		return n->extra++, "extra";
	if (strcmp(x[1] ? x[1] : "", y[1] ? y[1] : "") != 0)
		return n->changed++, "changed";
	return NULL;
}

static void
note_key_counts(RcTable *t, RcRun *run, RcKeyCounts *n)
{
	run->mismatches = n->missing + n->extra + n->changed + n->old_gen;
	dfe_rc_note(run, INT64_FORMAT " key(s) missing in BigQuery, " INT64_FORMAT " extra in BigQuery (deleted at the source), "
		 INT64_FORMAT " with other values", n->missing, n->extra, n->changed);
	if (n->old_gen == 0)
		return;
	dfe_rc_note(run, INT64_FORMAT " key(s) old_generation: live in BigQuery only in a generation older than the table's newest ("
			INT64_FORMAT "), gone from the source: left by an Airbyte refresh that retained records "
			"(query the final table with _airbyte_generation_id = " INT64_FORMAT ")%s%s",
			n->old_gen, n->gen_max, n->gen_max, t->int_key ? ", key ranges " : "",
			t->int_key ? key_ranges_text(n->old_keys) : "");
}

/* both sides' (key, hash) for the differing buckets: the keys that differ */
static bool
diff_keys(RcTable *t, RcRun *run, RcLevel *lv, List *hot)
{
	List	   *pg = NIL;
	List	   *bq = NIL;
	BqResult   *res;
	ListCell   *a;
	ListCell   *b;
	int			n = rc_src(run, "list the source keys", dfe_rc_pg_keys_query(t, run->checksum, lv, hot_filter(t, run, false)), 0, NULL);
	bool		no_generation = false;
	RcKeyCounts counts;

	memset(&counts, 0, sizeof(counts));
	for (int i = 0; i < n; i++)
	{
		char	  **r = palloc(2 * sizeof(char *));

		r[0] = dfe_rc_val(run, i, 1);
		r[1] = dfe_rc_val(run, i, 2);
		pg = lappend(pg, r);
	}
	res = bq_run_or(run, dfe_rc_bq_keys_query(t, run->checksum, lv, hot, true),
					dfe_rc_bq_keys_query(t, run->checksum, lv, hot, false), &no_generation);
	if (res == NULL)
		return false;
	for (int i = 0; i < res->nrows; i++)
		bq = lappend(bq, res->rows[i]);
	list_sort(pg, key_cmp);
	list_sort(bq, key_cmp);
	a = list_head(pg);
	b = list_head(bq);
	while (a != NULL || b != NULL)
	{
		char	  **x = a ? lfirst(a) : NULL;
		char	  **y = b ? lfirst(b) : NULL;
		int			c = x == NULL ? 1 : y == NULL ? -1 : strcmp(x[0], y[0]);
		const char *kind = key_kind(t, res, c, x, y, &counts);

		if (kind && list_length(run->keys) < MAX_REPORTED)
			run->keys = lappend(run->keys, psprintf("%s %s", kind, show_key(c > 0 ? y[0] : x[0])));
		if (c <= 0)
			a = lnext(pg, a);
		if (c >= 0)
			b = lnext(bq, b);
	}
	note_key_counts(t, run, &counts);
	return true;
}

static void
first_level(RcTable *t, RcRun *run, RcLevel *lv)
{
	memset(lv, 0, sizeof(*lv));
	lv->hexdigits = 3;			/* 4096 hash buckets */
	if (!t->int_key)
		return;
	rc_src(run, "read the key range",
		   psprintf("SELECT min(%s)::text, max(%s)::text FROM %s",
					quote_identifier(((RcColumn *) linitial(t->keys))->name),
					quote_identifier(((RcColumn *) linitial(t->keys))->name), t->pg_rel), 0, NULL);
	lv->width = 1;
	if (dfe_rc_val(run, 0, 1) != NULL)
	{
		int64		lo = strtoll(dfe_rc_val(run, 0, 1), NULL, 10);
		int64		hi = strtoll(dfe_rc_val(run, 0, 2), NULL, 10);
		/* in numeric: hi - lo may not fit in int64 */
		double		span = (double) hi - (double) lo + 1.0;

		lv->min = lo;
		lv->width = (int64) Max(1.0, ceil(span / NBUCKETS));
	}
}

static void
sum_rows(List *buckets, int64 *total)
{
	ListCell   *lc;

	*total = 0;
	foreach(lc, buckets)
		*total += ((RcBucket *) lfirst(lc))->n;
}

/* the bucket levels, then the keys */
static void
compare_keyed(RcTable *t, RcRun *run)
{
	List	   *hot;
	RcLevel		lv;

	if (!load_hot_keys(t, run, &hot))
	{
		run->status = "skipped";
		dfe_rc_note(run, "busy: more than %d rows changed since the last successful sync; tried again later", MAX_HOT_KEYS);
		return;
	}
	first_level(t, run, &lv);
	for (int level = 1;; level++)
	{
		List	   *pg = pg_buckets(t, run, &lv);
		BqResult   *res = bq_run(run, dfe_rc_bq_bucket_query(t, run->checksum, &lv, hot));
		List	   *diff;
		int64		rows;
		RcLevel		next;

		if (res == NULL)
			return;
		if (level == 1)
		{
			List	   *bq = bq_buckets(res, run);

			sum_rows(pg, &run->source_rows);
			sum_rows(bq, &run->bq_rows);
			run->bq_rows_known = true;
			diff = differing(run, pg, bq, &rows);
		}
		else
			diff = differing(run, pg, bq_buckets(res, run), &rows);
		if (diff == NIL)
		{
			run->status = level == 1 ? "match" : "mismatch_candidate";
			if (level > 1)
				dfe_rc_note(run, "the differing buckets match on a second look: rows changed while comparing");
			return;
		}
		run->status = "mismatch_candidate";
		run->mismatches = list_length(diff);
		memset(&next, 0, sizeof(next));
		if (t->int_key)
			range_filters(t, &lv, diff, &next, run);
		else
			hash_filters(t, &lv, diff, &next, run);
		if (rows <= KEY_LIMIT || level == MAX_LEVELS || (t->int_key && lv.width == 1))
		{
			if (rows <= KEY_LIMIT)
				(void) diff_keys(t, run, &next, hot);
			else
				dfe_rc_note(run, "%d bucket(s) differ, holding " INT64_FORMAT " rows: key ranges only", list_length(diff), rows);
			return;
		}
		lv = next;
	}
}

static void
compare_count(RcTable *t, RcRun *run)
{
	BqResult   *res;

	rc_src(run, "count the source rows", dfe_rc_pg_count_query(t), 0, NULL);
	run->source_rows = strtoll(dfe_rc_val(run, 0, 1), NULL, 10);
	res = bq_run(run, dfe_rc_bq_count_query(t));
	if (res == NULL)
		return;
	run->bq_rows = res->nrows > 0 && res->rows[0][0] ? strtoll(res->rows[0][0], NULL, 10) : 0;
	run->bq_rows_known = true;
	run->status = run->bq_rows == run->source_rows ? "match" : "mismatch_candidate";
	/* Abs() is gone from PostgreSQL 16's c.h */
	run->mismatches = run->bq_rows > run->source_rows ? run->bq_rows - run->source_rows
		: run->source_rows - run->bq_rows;
	dfe_rc_note(run, "no primary key: compared by count only (Airbyte replicates such tables by full refresh)");
}

RcRun *
dfe_rc_reconcile_table(DfeTarget *src, const char *name, bool checksum, bool dry_run, MemoryContext cxt, bool own_xact)
{
	RcRun	   *run = palloc0(sizeof(RcRun));
	RcTable    *t;

	run->target = dfe_target_name(src);
	run->src = src;
	run->cxt = cxt;
	run->own_xact = own_xact;
	run->table = pstrdup(name);
	run->checksum = checksum;
	run->dry_run = dry_run;
	initStringInfo(&run->detail);
	t = load_table(run, name);
	load_cutoff(run);
	if (t->keys == NIL)
		compare_count(t, run);
	else
		compare_keyed(t, run);
	if (run->toast_rows > 0)
		dfe_rc_note(run, INT64_FORMAT " row(s) hold __debezium_unavailable_value, Debezium's placeholder for an unchanged TOAST value: "
			 "ALTER TABLE %s REPLICA IDENTITY FULL", run->toast_rows, t->pg_rel);
	if (checksum && t->skipped != NIL)
	{
		StringInfoData s;
		ListCell   *lc;

		initStringInfo(&s);
		foreach(lc, t->skipped)
			appendStringInfo(&s, "%s%s", s.len ? ", " : "", (char *) lfirst(lc));
		dfe_rc_note(run, "not compared: %s", s.data);
	}
	return run;
}
